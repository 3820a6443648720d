"""StructuredClient: containment, retries, schema gating, cache, caps and lineage around a Provider."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flashcast.errors import (
    PrivacyViolation,
    ProviderError,
    ProviderFailed,
    RetryableProviderError,
    describe_validation_error,
)
from flashcast.llm.base import Completion, Provider
from flashcast.privacy import EMAIL_RE, PHONE_RE, redact_message

Model = TypeVar("Model", bound=BaseModel)
_URL_WITH_QUERY = re.compile(r"https?://\S+\?\S+", re.IGNORECASE)
Recorder = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Flashcast's one retry policy (SDK clients run with their own retries off)."""

    attempts: int = 4  # transport attempts per call (429, 5xx, timeouts)
    repairs: int = 2  # re-asks with the validation error when the answer fails the schema
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0


class PromptCache:
    """Answers keyed by provider, model and prompt, in SQLite: a re-run makes no new calls."""

    def __init__(self, path: Path | None) -> None:
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)")

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, text: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, text))


def check_contained(text: str, *, where: str) -> None:
    """Refuse a prompt that carries an email, a phone number or a URL with a query string."""
    found = [kind for kind, pattern in (("email", EMAIL_RE), ("phone number", PHONE_RE),
                                        ("URL with a query string", _URL_WITH_QUERY)) if pattern.search(text)]
    if found:
        raise PrivacyViolation(f"{where}: prompt contains {', '.join(found)}; only aggregated or hashed "
                               "features may leave the guard", rule="llm-containment")


@dataclass
class StructuredClient:
    provider: Provider
    cache: PromptCache
    record: Recorder = lambda entry: None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_calls: int = 50
    max_tokens: int = 200_000
    sleep: Callable[[float], None] = time.sleep
    calls: int = 0
    tokens: int = 0

    def ask(self, *, system: str, prompt: str, schema: type[Model], purpose: str) -> Model:
        """A validated `schema` instance, from the cache or the provider; ProviderFailed otherwise."""
        check_contained(system + "\n" + prompt, where=purpose)
        json_schema = schema.model_json_schema()
        key = hashlib.sha256(json.dumps([self.provider.name, self.provider.model, system, prompt, json_schema],
                                        sort_keys=True).encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None:
            self._log(purpose, prompt, key, "cache_hit", 0.0, None)
            return schema.model_validate_json(cached)
        ask_prompt = prompt
        for repair in range(self.policy.repairs + 1):
            completion = self._call(system, ask_prompt, schema.__name__, json_schema, purpose, key)
            try:
                answer = schema.model_validate_json(completion.text)
            except ValidationError as exc:
                problems = describe_validation_error(exc, limit=5)
                self._log(purpose, ask_prompt, key, "invalid_output", 0.0, completion, detail=problems)
                ask_prompt = (f"{prompt}\n\nYour previous answer was rejected: {problems}. "
                              "Answer again with JSON that satisfies the schema exactly.")
                if repair == self.policy.repairs:
                    raise ProviderFailed(f"{purpose}: output failed the schema after {repair + 1} answers: "
                                         f"{problems}") from exc
                continue
            self.cache.put(key, completion.text)
            return answer
        raise ProviderFailed(f"{purpose}: no valid answer")  # pragma: no cover - loop always returns/raises

    def _call(self, system: str, prompt: str, name: str, json_schema: dict[str, Any], purpose: str,
              key: str) -> Completion:
        last: ProviderError | None = None
        for attempt in range(self.policy.attempts):
            if self.calls >= self.max_calls or self.tokens >= self.max_tokens:
                raise ProviderFailed(f"{purpose}: the run's cap of {self.max_calls} calls / {self.max_tokens} "
                                     "tokens is reached")
            self.calls += 1
            start = time.perf_counter()
            try:
                completion = self.provider.complete(system=system, prompt=prompt, schema_name=name, schema=json_schema)
            except RetryableProviderError as exc:
                self._log(purpose, prompt, key, "retryable_error", time.perf_counter() - start, None, detail=str(exc))
                last = exc
                delay = exc.retry_after if exc.retry_after is not None else self.policy.base_delay_s * 2**attempt
                if attempt + 1 < self.policy.attempts:
                    self.sleep(min(delay, self.policy.max_delay_s))
                continue
            except ProviderError as exc:
                self._log(purpose, prompt, key, "error", time.perf_counter() - start, None, detail=str(exc))
                raise ProviderFailed(f"{purpose}: {exc}") from exc
            self.tokens += completion.input_tokens + completion.output_tokens
            self._log(purpose, prompt, key, "ok", time.perf_counter() - start, completion)
            return completion
        raise ProviderFailed(f"{purpose}: {self.policy.attempts} attempts failed; last: {last}")

    def _log(self, purpose: str, prompt: str, key: str, outcome: str, seconds: float, completion: Completion | None,
             detail: str | None = None) -> None:
        self.record({
            "purpose": purpose, "provider": self.provider.name, "model": self.provider.model,
            "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest(), "cache_key": key, "outcome": outcome,
            "latency_s": round(seconds, 4),
            "input_tokens": completion.input_tokens if completion else 0,
            "output_tokens": completion.output_tokens if completion else 0,
            "prompt_redacted": redact_message(prompt)[:4000],
            **({"detail": redact_message(detail)[:500]} if detail else {}),
        })
