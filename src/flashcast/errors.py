"""Flashcast's error tree. Every error a user can meet is one of these.

    FlashcastError
      ConfigError            the config file or a setting is invalid
        PiiKeyMismatch       the warehouse's history was keyed with another PII key than this run's
      IngestError            export or spend files cannot be read
        ExportNotFound       no export file matches the given path
      PrivacyViolation       personal data would cross the guard (names columns/rules, never values)
      ReconciliationError    row outcomes do not add up to the input rows
      LineageError           the lineage log is broken or cannot be written
        LineageTampered      verification found an edited, deleted or truncated entry
      StoreBusy              a store stayed locked by another process past the timeout
      SegmentationError      there are no (or too few) users to segment
      ForecastError          a series cannot be forecast (gaps, negative values, duplicates)
        HistoryTooShort      too few days for the backtest that selects and calibrates engines
        NegativeValue        a series taken as non-negative goes below zero
        RepeatedDate         a series has two values on one day (rows by the hour, or by order)
      AllocationError        the budget cannot be allocated
        AllocationInfeasible the guardrails cannot all hold for the budget (names the conflicting bounds)
        CurveFitError        a response curve cannot be fitted to a channel's history
      PayloadInvalid         the DSP payload fails its JSON Schema or its own invariants
      ApprovalError          a person's decision on a creative cannot be recorded
        DecisionRefused      it breaks a rule (a red creative approved without an override reason)
        UnknownCreative      no creative with this id in the latest run's library
      DeliveryError          pushing a plan or mailing its summary failed
        PayloadNotFound      no stored payload has this lineage id
        PushHeld             a funded line item has no approved creative: the plan waits for a person
        DeliveryRefused      the push cannot be made as configured (no secret, no endpoint, wrong mode)
        EmailFailed          the SMTP server could not be reached or refused the summary
      ProviderError          an LLM call failed and should not be retried (bad request, auth)
        RetryableProviderError  rate limit, server error or timeout: worth another attempt
        ProviderFailed       every attempt failed or the run's cap was reached: fall back offline
      StageError             a pipeline stage failed; wraps the cause with the stage name

Messages name the field, file and row (or request); they never quote a value from the data.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any


class FlashcastError(Exception):
    """Base class of every error Flashcast raises on purpose."""


class ConfigError(FlashcastError):
    """The configuration file or a setting in it is invalid."""


class PiiKeyMismatch(ConfigError):
    """The warehouse's guarded history was keyed with another PII key than this run's."""


class IngestError(FlashcastError):
    """Export or spend files exist but cannot be read as what they claim to be."""


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


class SegmentationError(FlashcastError):
    """There are no users to segment, or too few for the configured method."""


class ForecastError(FlashcastError):
    """The series cannot be forecast: gaps, negative values or duplicate dates."""


class HistoryTooShort(ForecastError):
    """Too few days for a rolling-origin backtest (engine selection and conformal bands)."""


class NegativeValue(ForecastError):
    """A series forecast as non-negative (revenue, counts) has a value below zero."""


class RepeatedDate(ForecastError):
    """A daily series has two values on one day: the rows are by the hour, or by order, not by day."""


class AllocationError(FlashcastError):
    """The budget cannot be allocated."""


class AllocationInfeasible(AllocationError):
    """The guardrails cannot all hold for this budget. The message names the conflicting bounds."""

    def __init__(self, message: str, *, conflicts: tuple[str, ...] = (), shortfall: float = 0.0) -> None:
        super().__init__(message)
        self.conflicts = conflicts
        self.shortfall = shortfall


class CurveFitError(AllocationError):
    """A response curve cannot be fitted to a channel's spend and outcome history."""


class PayloadInvalid(FlashcastError):
    """The DSP payload fails its JSON Schema or its invariants; the message lists the problems."""


class ApprovalError(FlashcastError):
    """A person's decision on a creative cannot be recorded."""


class DecisionRefused(ApprovalError):
    """The decision breaks a rule (a red creative approved without an override reason)."""


class UnknownCreative(ApprovalError):
    """No creative with this id in the latest run's library."""


class DeliveryError(FlashcastError):
    """Pushing a payload to the ad platforms."""


class PayloadNotFound(DeliveryError):
    """No stored payload with this lineage id (the run made none, or it is unknown)."""


class PushHeld(DeliveryError):
    """A funded line item has no approved creative yet: the plan waits for a person."""


class DeliveryRefused(DeliveryError):
    """The push cannot be made as configured (no signing secret, an endpoint missing)."""


class EmailFailed(DeliveryError):
    """The SMTP server could not be reached or refused the message."""


class ProviderError(FlashcastError):
    """An LLM provider call failed and should not be retried (bad request, auth, refused content)."""


class RetryableProviderError(ProviderError):
    """Rate limit, server error or timeout: worth another attempt, after `retry_after` seconds if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderFailed(ProviderError):
    """Every attempt failed (or the run's call/token cap was reached): the caller falls back offline."""


class StageError(FlashcastError):
    """A pipeline stage failed; the message starts with the stage name. `where` is the folder holding
    the failed run's files, once it is known."""

    def __init__(self, stage: str, cause: BaseException, *, where: Any = None) -> None:
        # One line: DuckDB appends paragraphs of advice (and sometimes the query) to its first line.
        lines = str(cause).strip().splitlines()
        text = lines[0] if lines else ""
        if type(cause).__name__ == "OutOfMemoryException":
            text += "; raise [store] memory_limit or free memory (what fits spills to [store] temp_directory)"
        super().__init__(f"stage {stage}: {type(cause).__name__}: {text}")
        self.stage = stage
        self.cause = cause
        self.where = where

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (the failed run's files: {self.where})" if self.where else text


def describe_validation_error(exc: Any, *, limit: int = 10, model: Any = None) -> str:
    """A pydantic ValidationError as 'field.path: message; ...' (the input values are never quoted).
    With `model` (the class validated), a key it does not have is named with the closest one it has."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {_message(err, model)}"
                     for err in exc.errors()[:limit])


def _message(err: Any, model: Any) -> str:
    if model is not None and err["type"] == "extra_forbidden":
        names = list(getattr(_model_at(model, err["loc"][:-1]), "model_fields", {}))
        if place := _elsewhere(model, str(err["loc"][-1]), tuple(err["loc"][:-1])):
            return f"not a setting here; {err['loc'][-1]} goes {place}"
        if names:
            close = difflib.get_close_matches(str(err["loc"][-1]), names, n=1, cutoff=0.6)
            return (f"not a setting here (did you mean {close[0]!r}?)" if close
                    else f"not a setting here (the settings here: {', '.join(names)})")
    if model is not None and err["type"] == "string_pattern_mismatch":  # a regex says little to a user
        field = getattr(_model_at(model, err["loc"][:-1]), "model_fields", {}).get(err["loc"][-1])
        if field is not None and field.description:
            return f"should be {field.description}"
    return str(err["msg"]).removeprefix("Value error, ")


def _elsewhere(model: Any, key: str, here: tuple[Any, ...]) -> str | None:
    """Where else in `model` (at its top or in one of its sections) a setting named `key` is: a
    setting put in the wrong section (`mode` under [delivery]) is told its place."""
    fields = getattr(model, "model_fields", {})
    places = []
    if here and key in fields and _model_in(fields[key].annotation) is None:
        places.append("at the top of the file, before any [section]")
    for name, field in fields.items():
        section = _model_in(field.annotation)
        if section is not None and key in section.model_fields and here != (name,):
            places.append(f"in [{name}]")
    return " or ".join(places) or None


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic model found at `loc` inside `model` (through lists, dicts and optionals), else None."""
    for step in loc:
        if isinstance(step, int):  # an item of a list: its model is the list's
            continue
        field = getattr(model, "model_fields", {}).get(step)
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (`M`, `M | None`, `list[M]`), else None."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
