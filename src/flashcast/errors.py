"""Flashcast's error tree. Every error a user can meet is one of these.

    FlashcastError
      ConfigError            the config file or a setting is invalid
      IngestError            export files cannot be read at all
        ExportNotFound       no export file matches the given path
      PrivacyViolation       personal data would cross the guard (names columns/rules, never values)
      ReconciliationError    row outcomes do not add up to the input rows
      LineageError           the lineage log is broken or cannot be written
        LineageTampered      verification found an edited, deleted or truncated entry
      StoreBusy              a store stayed locked by another process past the timeout
      ForecastError          a series cannot be forecast (too short, gaps, negative values, duplicates)
      AllocationInfeasible   the guardrails cannot all hold for the budget (names the conflicting bounds)
      PayloadInvalid         the DSP payload fails its JSON Schema or its own invariants
      StageError             a pipeline stage failed; wraps the cause with the stage name

Messages name the field, file and row (or request); they never quote a value from the data.
"""

from __future__ import annotations


class FlashcastError(Exception):
    """Base class of every error Flashcast raises on purpose."""


class ConfigError(FlashcastError):
    """The configuration file or a setting in it is invalid."""


class IngestError(FlashcastError):
    """Export files exist but cannot be read as GA4 exports."""


class ExportNotFound(IngestError):
    """No GA4 export file matches the given path."""


class PrivacyViolation(FlashcastError):
    """Personal data would leave the guard. Carries column names and the rule, never values."""

    def __init__(self, message: str, *, columns: tuple[str, ...] = (), rule: str = "") -> None:
        super().__init__(message)
        self.columns = columns
        self.rule = rule


class ReconciliationError(FlashcastError):
    """Accepted + dropped_consent + quarantined + duplicate differs from the input rows."""


class LineageError(FlashcastError):
    """The lineage log cannot be written or read."""


class LineageTampered(LineageError):
    """The lineage log fails verification: an entry was edited, deleted or the tail truncated."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("lineage log failed verification: " + "; ".join(problems))
        self.problems = problems


class StoreBusy(FlashcastError):
    """Another process held a store's lock for longer than the timeout."""


class ForecastError(FlashcastError):
    """The series cannot be forecast: too short, gaps, negative values or duplicate dates."""


class AllocationInfeasible(FlashcastError):
    """The guardrails cannot all hold for this budget. The message names the conflicting bounds."""

    def __init__(self, message: str, *, conflicts: tuple[str, ...] = (), shortfall: float = 0.0) -> None:
        super().__init__(message)
        self.conflicts = conflicts
        self.shortfall = shortfall


class PayloadInvalid(FlashcastError):
    """The DSP payload fails its JSON Schema or its invariants; the message lists the problems."""


class StageError(FlashcastError):
    """A pipeline stage failed; the message starts with the stage name."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause
