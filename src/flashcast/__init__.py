"""Flashcast: a governed forecast & optimize pipeline for marketing teams.

The public API: settings, the pipeline's one function with its inputs and result, and the error
tree. Libraries with their own API: `flashcast.forecasting`, `flashcast.budget`, `flashcast.llm`.
"""

from flashcast.config import Settings, load_settings
from flashcast.errors import (
    AllocationError,
    AllocationInfeasible,
    ApprovalError,
    ConfigError,
    CurveFitError,
    DecisionRefused,
    DeliveryError,
    DeliveryRefused,
    EmailFailed,
    ExportNotFound,
    FlashcastError,
    ForecastError,
    HistoryTooShort,
    IngestError,
    LineageError,
    LineageTampered,
    NegativeValue,
    PayloadInvalid,
    PayloadNotFound,
    PiiKeyMismatch,
    PrivacyViolation,
    ProviderError,
    ProviderFailed,
    PushHeld,
    ReconciliationError,
    RepeatedDate,
    RetryableProviderError,
    SegmentationError,
    StageError,
    StoreBusy,
    UnknownCreative,
)
from flashcast.records import RunInputs

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The pipeline pulls in every stage and library (seconds of imports): load it on first use, so
    # `import flashcast.stages.guard` or the CLI's --help stay quick.
    if name in ("run_pipeline", "RunResult"):
        from flashcast import pipeline

        return getattr(pipeline, name)
    if name == "forecast_series":
        from flashcast.forecasting.forecast import forecast_series

        return forecast_series
    raise AttributeError(f"module 'flashcast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

__all__ = [
    "AllocationError",
    "AllocationInfeasible",
    "ApprovalError",
    "ConfigError",
    "CurveFitError",
    "DecisionRefused",
    "DeliveryError",
    "DeliveryRefused",
    "EmailFailed",
    "ExportNotFound",
    "FlashcastError",
    "ForecastError",
    "HistoryTooShort",
    "IngestError",
    "LineageError",
    "LineageTampered",
    "NegativeValue",
    "PayloadInvalid",
    "PayloadNotFound",
    "PiiKeyMismatch",
    "PrivacyViolation",
    "ProviderError",
    "ProviderFailed",
    "PushHeld",
    "ReconciliationError",
    "RepeatedDate",
    "RetryableProviderError",
    "RunInputs",
    "RunResult",
    "SegmentationError",
    "Settings",
    "StageError",
    "StoreBusy",
    "UnknownCreative",
    "__version__",
    "forecast_series",
    "load_settings",
    "run_pipeline",
]
