"""The pipeline with an LLM provider: contained prompts, recorded calls, cache, and offline fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flashcast.config import LLMConfig, Settings, StoreConfig
from flashcast.errors import RetryableProviderError
from flashcast.keys import PiiKey
from flashcast.lineage import LineageLog
from flashcast.llm.base import Completion
from flashcast.pipeline import run_pipeline
from flashcast.privacy import PiiNeedles
from flashcast.records import SEGMENTS, RunInputs
from flashcast.simulate import SimulationResult
from flashcast.store import OpsStore

SEGMENT_CYCLE = ["Brand Loyalist", "Value Shopper", "Speed Seeker"]


class CapturingProvider:
    """An in-process provider that answers well and keeps every prompt it was sent."""

    name = "capture"
    model = "stand-in"

    def __init__(self, fail: bool = False) -> None:
        self.prompts: list[str] = []
        self.fail = fail

    def complete(self, *, system: str, prompt: str, schema_name: str, schema: dict[str, Any]) -> Completion:
        self.prompts.append(system + "\n" + prompt)
        if self.fail:
            raise RetryableProviderError("capture: server error 500")
        if schema_name == "ClusterLabels":
            clusters = json.loads(prompt.split("\n", 1)[1])
            labels = [{"cluster": int(c), "segment": SEGMENT_CYCLE[i % 3], "reason": f"profile {c} fits"}
                      for i, c in enumerate(sorted(clusters, key=int))]
            text = json.dumps({"labels": labels})
        else:
            text = json.dumps({"variants": [{"headline": "Hello there", "body": "Fresh picks. Terms apply."},
                                            {"headline": "New in", "body": "See what is new. Terms apply."}]})
        return Completion(text, self.model, 100, 40)


def _settings(tmp_path: Path) -> Settings:
    return Settings(property_timezone="America/New_York", store=StoreConfig(home=tmp_path / "home"),
                    llm=LLMConfig(provider="openai", model="stand-in"))


@pytest.mark.slow
def test_llm_run_sends_no_pii_records_every_call_and_reuses_its_cache(
    tmp_path: Path, small_sim: SimulationResult, small_truth: dict, pii_key: PiiKey
) -> None:
    settings = _settings(tmp_path)
    provider = CapturingProvider()
    inputs = RunInputs(small_sim.export_dirs["ndjson"], small_sim.spend_file)
    first = run_pipeline(settings, inputs, tmp_path / "out1", key=pii_key, llm_provider=provider)
    assert provider.prompts, "the provider was used"
    needles = PiiNeedles.from_truth(small_truth).strings()
    for prompt in provider.prompts:
        lowered = prompt.lower()
        assert not any(n in lowered for n in needles)
        assert "http" not in lowered and first.lineage_id not in prompt
    cluster_calls = [p for p in provider.prompts if "Cluster centroids" in p]
    assert len(cluster_calls) == 1, "segments are labelled in one call, never one per user"
    assert {c.headline for c in first.creatives.creatives} == {"Hello there", "New in"}
    log = LineageLog(OpsStore(settings.store.ops_database_url))
    calls = [e for e in log.entries(first.lineage_id) if e["kind"] == "llm_call"]
    assert len(calls) == len(provider.prompts)
    assert all(c["body"]["outcome"] == "ok" and len(c["body"]["prompt_hash"]) == 64 for c in calls)
    stages = {e["body"]["stage"]: e["body"] for e in log.entries(first.lineage_id) if e["kind"] == "stage_completed"}
    assert stages["segments"]["method"] == "llm-kmeans" and stages["creatives"]["generator"] == "capture:stand-in"
    sent = len(provider.prompts)
    second = run_pipeline(settings, inputs, tmp_path / "out2", key=pii_key, llm_provider=provider)
    assert len(provider.prompts) == sent, "an identical re-run makes zero calls"
    hits = [e for e in log.entries(second.lineage_id) if e["kind"] == "llm_call"]
    assert hits and all(e["body"]["outcome"] == "cache_hit" for e in hits)


@pytest.mark.slow
def test_a_failing_provider_falls_back_offline_and_says_so(
    tmp_path: Path, small_sim: SimulationResult, pii_key: PiiKey
) -> None:
    settings = _settings(tmp_path)
    result = run_pipeline(settings, RunInputs(small_sim.export_dirs["ndjson"], small_sim.spend_file),
                          tmp_path / "out", key=pii_key, llm_provider=CapturingProvider(fail=True))
    log = LineageLog(OpsStore(settings.store.ops_database_url))
    stages = {e["body"]["stage"]: e["body"] for e in log.entries(result.lineage_id) if e["kind"] == "stage_completed"}
    assert "LLM segment labels failed" in stages["segments"]["fallback"]
    assert stages["segments"]["method"] == "rules"
    assert "LLM copy failed, used the templates" in stages["creatives"]["fallback"]
    assert stages["creatives"]["generator"] == "templates"
    assert len(result.creatives.creatives) == len(SEGMENTS) * 4 * 2
    attention = (tmp_path / "out" / "report.md").read_text().split("## Needs attention")[1].split("##")[0]
    assert "LLM segment labels failed" in attention and "LLM copy failed, used the templates" in attention


@pytest.mark.slow
def test_the_real_sdk_against_a_failing_server_falls_back(
    tmp_path: Path, small_sim: SimulationResult, pii_key: PiiKey, stand_in: Any
) -> None:
    from flashcast.llm.providers import OpenAIProvider

    url, state = stand_in  # scripted with nothing: every request gets a 500
    provider = OpenAIProvider(model="stand-in", base_url=f"{url}/v1", api_key="test")
    settings = _settings(tmp_path)
    result = run_pipeline(settings, RunInputs(small_sim.export_dirs["ndjson"], small_sim.spend_file),
                          tmp_path / "out", key=pii_key, llm_provider=provider)
    log = LineageLog(OpsStore(settings.store.ops_database_url))
    entries = log.entries(result.lineage_id)
    calls = [e["body"] for e in entries if e["kind"] == "llm_call"]
    assert len(state.requests) == len(calls) == 8  # 4 attempts for segments, 4 for copy; no SDK retries
    assert {c["outcome"] for c in calls} == {"retryable_error"} and all("500" in c["detail"] for c in calls)
    stages = {e["body"]["stage"]: e["body"] for e in entries if e["kind"] == "stage_completed"}
    assert stages["creatives"]["generator"] == "templates" and "4 attempts failed" in stages["creatives"]["fallback"]


class RedThenGreen(CapturingProvider):
    def __init__(self, red_answers: int) -> None:
        super().__init__()
        self.red_answers = red_answers

    def complete(self, *, system: str, prompt: str, schema_name: str, schema: dict[str, Any]) -> Completion:
        self.prompts.append(prompt)
        if len(self.prompts) <= self.red_answers:
            bad = {"headline": "Cheap stuff", "body": "Cheap. Terms apply."}
            return Completion(json.dumps({"variants": [bad, bad]}), self.model, 10, 10)
        good = {"headline": "Hello there", "body": "Fresh picks. Terms apply."}
        return Completion(json.dumps({"variants": [good, good]}), self.model, 10, 10)


def test_red_copy_is_regenerated_then_kept_out_with_reasons() -> None:
    from flashcast.config import BrandRules
    from flashcast.llm.client import PromptCache, StructuredClient
    from flashcast.records import SegmentProfile
    from flashcast.stages.creatives import llm_creatives

    profile = (SegmentProfile("Value Shopper", 10, 1.0, 5.0, 2.0, 0.1, 5.0, 2.0, 30.0),)
    fixed = RedThenGreen(red_answers=1)
    library = llm_creatives(StructuredClient(fixed, PromptCache(None)), BrandRules(), profile, ("PPC",),
                            regenerate_red=2, auto_approve_green=True)
    assert [c.light for c in library] == ["green", "green"]
    assert "was rejected" in fixed.prompts[1] and "banned word" in fixed.prompts[1]
    stubborn = RedThenGreen(red_answers=100)
    library = llm_creatives(StructuredClient(stubborn, PromptCache(None)), BrandRules(), profile, ("PPC",),
                            regenerate_red=2, auto_approve_green=True)
    assert all(c.light == "red" and c.status == "rejected" for c in library)
    assert all(any(r.code == "banned_word" for r in c.reasons) for c in library)
