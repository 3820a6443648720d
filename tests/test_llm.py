"""LLM providers through the real SDKs against a local stand-in speaking their wire formats."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import StandIn
from flashcast.errors import PrivacyViolation, ProviderFailed
from flashcast.llm.client import PromptCache, RetryPolicy, StructuredClient
from flashcast.llm.providers import AnthropicProvider, OpenAIProvider


class Copy(BaseModel):
    headline: str
    body: str


GOOD = {"headline": "Spring picks", "body": "Fresh picks. Terms apply."}


def _client(provider: Any, records: list[dict[str, Any]], **kwargs: Any) -> StructuredClient:
    sleeps: list[float] = []
    client = StructuredClient(provider, PromptCache(None), record=records.append, sleep=sleeps.append, **kwargs)
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


def _openai(url: str, **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(model="stand-in", base_url=f"{url}/v1", api_key="test", **kwargs)


def test_openai_good_answer_is_validated_and_recorded(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.openai_ok(json.dumps(GOOD))]
    records: list[dict[str, Any]] = []
    answer = _client(_openai(url), records).ask(system="You write ad copy.", prompt="Segment: Value Shopper",
                                                schema=Copy, purpose="creatives")
    assert answer == Copy(**GOOD)
    path, body = state.requests[0]
    assert path == "/v1/chat/completions"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["headline", "body"]
    (record,) = records
    assert record["outcome"] == "ok" and record["provider"] == "openai" and record["model"] == "stand-in"
    assert record["input_tokens"] == 11 and record["output_tokens"] == 7 and len(record["prompt_hash"]) == 64


def test_malformed_then_schema_violating_answers_are_repaired(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.openai_ok('{"headline": "Spring'), state.openai_ok(json.dumps({"headline": "x"})),
                    state.openai_ok(json.dumps(GOOD))]
    records: list[dict[str, Any]] = []
    answer = _client(_openai(url), records).ask(system="s", prompt="p", schema=Copy, purpose="creatives")
    assert answer.headline == "Spring picks"
    assert [r["outcome"] for r in records] == ["ok", "invalid_output", "ok", "invalid_output", "ok"]
    assert "previous answer was rejected" in state.requests[2][1]["messages"][1]["content"]
    assert "body: Field required" in state.requests[2][1]["messages"][1]["content"]


def test_answers_that_never_pass_the_schema_fail_for_fallback(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.openai_ok("not json")] * 3
    with pytest.raises(ProviderFailed, match="failed the schema after 3 answers"):
        _client(_openai(url), []).ask(system="s", prompt="p", schema=Copy, purpose="creatives")
    assert len(state.requests) == 3


def test_429_with_retry_after_and_500_are_retried_by_flashcast_alone(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.error(429, {"retry-after": "0.25"}), state.error(500), state.openai_ok(json.dumps(GOOD))]
    records: list[dict[str, Any]] = []
    client = _client(_openai(url), records)
    assert client.ask(system="s", prompt="p", schema=Copy, purpose="creatives") == Copy(**GOOD)
    assert len(state.requests) == 3  # the SDK did not retry on its own (max_retries=0)
    assert client.sleeps[0] == 0.25  # type: ignore[attr-defined]  # Retry-After honoured
    assert [r["outcome"] for r in records] == ["retryable_error", "retryable_error", "ok"]
    assert "429" in records[0]["detail"] and "500" in records[1]["detail"]


def test_a_hung_server_times_out_quickly(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [(200, {}, {}, 1.5), (200, {}, {}, 1.5)]
    client = _client(_openai(url, read_timeout_s=0.2), [], policy=RetryPolicy(attempts=2))
    start = time.perf_counter()
    with pytest.raises(ProviderFailed, match="2 attempts failed; last: openai: timed out"):
        client.ask(system="s", prompt="p", schema=Copy, purpose="creatives")
    assert time.perf_counter() - start < 1.2


def test_a_second_identical_ask_makes_no_call(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.openai_ok(json.dumps(GOOD))]
    records: list[dict[str, Any]] = []
    client = _client(_openai(url), records)
    first = client.ask(system="s", prompt="p", schema=Copy, purpose="creatives")
    second = client.ask(system="s", prompt="p", schema=Copy, purpose="creatives")
    assert first == second and len(state.requests) == 1
    assert records[-1]["outcome"] == "cache_hit"


def test_the_call_cap_stops_a_run(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.error(500)] * 5
    with pytest.raises(ProviderFailed, match="cap of 2 calls"):
        _client(_openai(url), [], max_calls=2).ask(system="s", prompt="p", schema=Copy, purpose="creatives")
    assert len(state.requests) == 2


@pytest.mark.parametrize("leak", ["jane.doe@example.com", "call 555-123-4567",
                                  "https://shop.example.com/p?email=x"])
def test_prompts_with_personal_data_never_leave(stand_in: tuple[str, StandIn], leak: str) -> None:
    url, state = stand_in
    with pytest.raises(PrivacyViolation, match="prompt contains"):
        _client(_openai(url), []).ask(system="s", prompt=f"profile: {leak}", schema=Copy, purpose="segments")
    assert state.requests == []


def test_anthropic_tool_use_answer_and_rate_limit(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.script = [state.error(429, {"retry-after": "0"}), state.anthropic_ok(GOOD)]
    records: list[dict[str, Any]] = []
    provider = AnthropicProvider(model="stand-in", base_url=url, api_key="test")
    answer = _client(provider, records).ask(system="You write ad copy.", prompt="p", schema=Copy, purpose="creatives")
    assert answer == Copy(**GOOD)
    path, body = state.requests[-1]
    assert path == "/v1/messages"
    assert body["tool_choice"] == {"type": "tool", "name": "Copy"}
    assert body["tools"][0]["input_schema"]["required"] == ["headline", "body"]
    assert [r["outcome"] for r in records] == ["retryable_error", "ok"]
    assert records[-1]["provider"] == "anthropic" and records[-1]["output_tokens"] == 8
