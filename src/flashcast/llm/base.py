"""The provider protocol and what one call returns. (The errors providers raise live in
`flashcast.errors`: ProviderError, RetryableProviderError, ProviderFailed.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


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
