"""Provider protocol, call records and the errors providers raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from flashcast.errors import FlashcastError


class ProviderError(FlashcastError):
    """A provider call failed and should not be retried (bad request, auth, refused content)."""


class RetryableProviderError(ProviderError):
    """Rate limit, server error or timeout: worth another attempt, after `retry_after` seconds if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderFailed(ProviderError):
    """Every attempt failed (or the run's call/token cap was reached): the caller falls back offline."""


@dataclass(frozen=True)
class Completion:
    text: str  # the JSON text the model produced
    model: str
    input_tokens: int
    output_tokens: int


class Provider(Protocol):
    """Moves one prompt to a model and returns its raw JSON text; no retries of its own."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    def complete(self, *, system: str, prompt: str, schema_name: str, schema: dict[str, Any]) -> Completion: ...
