"""OpenAI (and any OpenAI-compatible server) and Anthropic providers through their official SDKs.

Each SDK client is built with its own retries off (`max_retries=0`) and explicit connect/read
timeouts, so Flashcast's RetryPolicy is the only one and a hung server cannot stall a run. SDK
errors are translated once, here: 429, 5xx, timeouts and connection errors are retryable (with
the server's Retry-After when it sends one); everything else is final.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from flashcast.errors import ProviderError, RetryableProviderError
from flashcast.llm.base import Completion


def _timeout(connect_s: float, read_s: float) -> httpx.Timeout:
    return httpx.Timeout(read_s, connect=connect_s)


def _retry_after(response: Any) -> float | None:
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@contextmanager
def _mapped(sdk: Any, name: str) -> Iterator[None]:
    """Translate an SDK's exceptions (openai and anthropic share their shapes) into ours."""
    try:
        yield
    except sdk.APITimeoutError as exc:
        raise RetryableProviderError(f"{name}: timed out") from exc
    except sdk.APIConnectionError as exc:
        raise RetryableProviderError(f"{name}: connection failed") from exc
    except sdk.RateLimitError as exc:
        raise RetryableProviderError(f"{name}: rate limited (429)", retry_after=_retry_after(exc.response)) from exc
    except sdk.APIStatusError as exc:
        if exc.status_code >= 500:
            raise RetryableProviderError(f"{name}: server error {exc.status_code}",
                                         retry_after=_retry_after(exc.response)) from exc
        raise ProviderError(f"{name}: request refused ({exc.status_code})") from exc


@dataclass
class OpenAIProvider:
    """Chat completions with a JSON schema response format. `base_url` points it at vLLM, Ollama,
    LM Studio or any OpenAI-compatible server."""

    model: str
    base_url: str | None = None
    api_key: str | None = None  # default: $OPENAI_API_KEY (a placeholder for keyless local servers)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    name: str = "openai"
    _client: Any = field(default=None, repr=False)

    def _sdk_client(self) -> Any:
        if self._client is None:
            import os

            import openai

            key = self.api_key or os.environ.get("OPENAI_API_KEY") or ("local" if self.base_url else None)
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                         timeout=_timeout(self.connect_timeout_s, self.read_timeout_s))
        return self._client

    def complete(self, *, system: str, prompt: str, schema_name: str, schema: dict[str, Any]) -> Completion:
        import openai

        with _mapped(openai, self.name):
            response = self._sdk_client().chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                response_format={"type": "json_schema",
                                 "json_schema": {"name": schema_name, "schema": schema, "strict": False}},
            )
        text = response.choices[0].message.content or ""
        usage = response.usage
        return Completion(text, response.model or self.model, getattr(usage, "prompt_tokens", 0) or 0,
                          getattr(usage, "completion_tokens", 0) or 0)


@dataclass
class AnthropicProvider:
    """Messages API with one forced tool whose input schema is the answer's schema."""

    model: str
    base_url: str | None = None
    api_key: str | None = None  # default: $ANTHROPIC_API_KEY
    max_tokens: int = 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    name: str = "anthropic"
    _client: Any = field(default=None, repr=False)

    def _sdk_client(self) -> Any:
        if self._client is None:
            import anthropic

            self._client = anthropic.Anthropic(api_key=self.api_key, base_url=self.base_url, max_retries=0,
                                               timeout=_timeout(self.connect_timeout_s, self.read_timeout_s))
        return self._client

    def complete(self, *, system: str, prompt: str, schema_name: str, schema: dict[str, Any]) -> Completion:
        import anthropic

        with _mapped(anthropic, self.name):
            response = self._sdk_client().messages.create(
                model=self.model, max_tokens=self.max_tokens, system=system,
                messages=[{"role": "user", "content": prompt}],
                tools=[{"name": schema_name, "description": f"Return the {schema_name} object.",
                        "input_schema": schema}],
                tool_choice={"type": "tool", "name": schema_name},
            )
        blocks = [b for b in response.content if getattr(b, "type", "") == "tool_use"]
        text = json.dumps(blocks[0].input) if blocks else "".join(getattr(b, "text", "") for b in response.content)
        usage = response.usage
        return Completion(text, response.model or self.model, getattr(usage, "input_tokens", 0) or 0,
                          getattr(usage, "output_tokens", 0) or 0)
