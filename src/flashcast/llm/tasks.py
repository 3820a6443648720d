"""What Flashcast asks an LLM for: cluster labels for segments, and ad copy per segment and channel.

Prompts hold only aggregates (cluster centroids, segment sizes) and the brand rules; no run id,
timestamp or other per-run noise, so the cache makes a re-run free. Answers are gated by pydantic
schemas. What to do with an answer (score copy, re-ask for red variants, fall back) is the stages'
business, not this module's.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from flashcast.config import BrandRules, LLMConfig
from flashcast.errors import ConfigError, ProviderFailed
from flashcast.llm.base import Provider
from flashcast.llm.client import PromptCache, Recorder, StructuredClient
from flashcast.records import SEGMENTS, SegmentName, SegmentProfile


class ClusterLabel(BaseModel):
    cluster: int
    segment: SegmentName
    reason: str = Field(min_length=3, max_length=300)


class ClusterLabels(BaseModel):
    labels: list[ClusterLabel]


class CopyVariant(BaseModel):
    headline: str = Field(min_length=1)
    body: str = Field(min_length=1)


class CopyVariants(BaseModel):
    variants: list[CopyVariant] = Field(min_length=2, max_length=2)


SDKS = {"openai": ("openai", "OPENAI_API_KEY"), "anthropic": ("anthropic", "ANTHROPIC_API_KEY")}


def check_provider(config: LLMConfig) -> None:
    """Refuse, before any data is read, a provider that cannot work here: its SDK (an optional extra)
    not installed, or no API key (an OpenAI-compatible server at `base_url` may need none)."""
    if config.provider == "offline":
        return
    module, key_env = SDKS[config.provider]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"LLM provider {config.provider!r} needs its SDK: pip install 'flashcast[{module}]'")
    if not os.environ.get(key_env) and not (config.provider == "openai" and config.base_url):
        raise ConfigError(f"LLM provider {config.provider!r} needs an API key: set ${key_env}")


def make_provider(config: LLMConfig) -> Provider | None:
    """The configured provider, or None for the offline rules and templates."""
    check_provider(config)
    from flashcast.llm.providers import AnthropicProvider, OpenAIProvider

    if config.provider == "openai":
        return OpenAIProvider(model=config.model, base_url=config.base_url,
                              connect_timeout_s=config.connect_timeout_s, read_timeout_s=config.read_timeout_s)
    if config.provider == "anthropic":
        return AnthropicProvider(model=config.model, base_url=config.base_url,
                                 connect_timeout_s=config.connect_timeout_s, read_timeout_s=config.read_timeout_s)
    return None


def label_clusters(client: StructuredClient, profiles: dict[int, dict[str, float]]) -> ClusterLabels:
    """One call for all clusters: which segment does each centroid profile describe, and why."""
    system = ("You are a marketing analyst. Name each customer cluster with exactly one of the segments "
              f"{', '.join(SEGMENTS)} and give a one-sentence reason based on its numbers.")
    prompt = "Cluster centroids (averages per user):\n" + json.dumps(
        {str(k): {name: round(v, 2) for name, v in sorted(p.items())} for k, p in sorted(profiles.items())},
        sort_keys=True)
    answer = client.ask(system=system, prompt=prompt, schema=ClusterLabels, purpose="segments")
    missing = set(profiles) - {label.cluster for label in answer.labels}
    if missing:
        raise ProviderFailed(f"segments: no label for cluster(s) {sorted(missing)}")
    return answer


def copy_prompt(brand: BrandRules, segment: SegmentProfile, channel: str) -> tuple[str, str]:
    limits = brand.limits.get(channel)
    system = (f"You write ad copy for {brand.brand_name}. Tone: {', '.join(brand.tone_words)}. "
              f"Never use these words: {', '.join(brand.banned_words)}. Avoid unprovable claims such as "
              f"{', '.join(brand.risky_claims)}. Every body must end with the disclaimer {brand.disclaimer!r}.")
    limit_text = (f"headline at most {limits.headline} characters, body at most {limits.body} characters "
                  "including the disclaimer") if limits else "keep it short"
    prompt = (f"Write two different headline/body variants for the segment {segment.segment!r} "
              f"(average {segment.sessions:.1f} sessions, {segment.orders:.2f} orders, "
              f"{segment.pages_per_session:.1f} pages per session) on the {channel} channel: {limit_text}.")
    return system, prompt


def ask_copy(client: StructuredClient, brand: BrandRules, segment: SegmentProfile, channel: str, *,
             rejected: str | None = None) -> CopyVariants:
    """Two headline/body variants for `segment` on `channel`; `rejected` says why an earlier variant
    was refused, so the model can fix it."""
    system, prompt = copy_prompt(brand, segment, channel)
    if rejected:
        prompt = f"{prompt}\nA variant was rejected ({rejected}); write two new variants that fix it."
    return client.ask(system=system, prompt=prompt, schema=CopyVariants, purpose="creatives")


def build_client(config: LLMConfig, cache_path: Path, record: Recorder,
                 provider: Provider | None = None) -> StructuredClient | None:
    """A client for the configured provider (or the one given, e.g. a test stand-in); None offline."""
    provider = provider or make_provider(config)
    if provider is None:
        return None
    return StructuredClient(provider, PromptCache(cache_path), record=record, max_calls=config.max_calls,
                            max_tokens=config.max_tokens)
