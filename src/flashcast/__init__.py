"""Flashcast: a governed forecast & optimize pipeline for marketing teams."""

from flashcast.config import Settings, load_settings
from flashcast.errors import (
    ConfigError,
    ExportNotFound,
    FlashcastError,
    IngestError,
    LineageError,
    LineageTampered,
    PrivacyViolation,
    ReconciliationError,
    StageError,
    StoreBusy,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ExportNotFound",
    "FlashcastError",
    "IngestError",
    "LineageError",
    "LineageTampered",
    "PrivacyViolation",
    "ReconciliationError",
    "Settings",
    "StageError",
    "StoreBusy",
    "__version__",
    "load_settings",
]
