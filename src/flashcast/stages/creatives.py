"""Stage 4: the creative library (two variants per segment and channel, from templates or an LLM)
and the compliance checker.

The checker returns a traffic light with reasons:
  red    PII (email, phone number), a banned word, or text over the channel's hard length limit
  amber  an unprovable claim ("guaranteed", "best", "#1", ...), a missing required disclaimer,
         excessive capitals, or repeated punctuation ("!!")
  green  none of the above
Red creatives are rejected and never enter a payload; amber ones wait for a human (pending);
green ones are approved when `brand.auto_approve_green` is on. LLM copy that the checker marks red
is re-asked up to `llm.regenerate_red` times; a variant still red is kept, rejected, with its reasons.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import asdict, dataclass, replace
from functools import cache
from importlib import resources
from typing import cast

import duckdb
import pandas as pd

from flashcast.config import BrandRules, Settings
from flashcast.errors import ProviderFailed
from flashcast.llm.client import StructuredClient
from flashcast.llm.tasks import ask_copy
from flashcast.privacy import EMAIL_RE, PHONE_RE
from flashcast.records import (
    SEGMENTS,
    Creative,
    CreativeLibrary,
    Light,
    Reason,
    RunContext,
    Segmentation,
    SegmentProfile,
    Status,
    Table,
)

_ORDER: dict[Light, int] = {"green": 0, "amber": 1, "red": 2}
_CAPS_WORD = re.compile(r"\b[A-Z]{4,}\b")
_REPEATED_PUNCT = re.compile(r"[!?]{2,}|\.{4,}")
ACRONYMS = frozenset({"CTV", "USA", "FAQ", "NYC", "HTTP"})  # allowed in capitals


@dataclass(frozen=True)
class ComplianceResult:
    light: Light
    reasons: tuple[Reason, ...] = ()

    @property
    def passes(self) -> bool:
        return self.light != "red"


def check_copy(headline: str, body: str, *, channel: str, brand: BrandRules) -> ComplianceResult:
    """Score one headline/body pair for `channel` against the brand rules."""
    reasons: list[Reason] = []
    for name, text in (("headline", headline), ("body", body)):
        reasons += _pii(name, text) + _banned(name, text, brand) + _claims(name, text, brand) + _style(name, text)
    limits = brand.limits.get(channel)
    if limits is not None:
        for name, text, limit in (("headline", headline, limits.headline), ("body", body, limits.body)):
            if len(text) > limit:
                reasons.append(Reason("too_long", name, "red", f"{len(text)} characters, {channel} allows {limit}"))
    if brand.disclaimer and brand.disclaimer.lower() not in body.lower():
        reasons.append(Reason("no_disclaimer", "body", "amber", f"required disclaimer {brand.disclaimer!r} missing"))
    light: Light = max((r.light for r in reasons), key=_ORDER.__getitem__, default="green")
    return ComplianceResult(light, tuple(reasons))


def _pii(name: str, text: str) -> list[Reason]:
    out = []
    if EMAIL_RE.search(text):
        out.append(Reason("pii_email", name, "red", "contains an email address"))
    if PHONE_RE.search(text):
        out.append(Reason("pii_phone", name, "red", "contains a phone number"))
    return out


def _word_pattern(word: str) -> re.Pattern[str]:
    # Word boundaries only where the word starts/ends with a word character ("#1" has none before '#').
    start = r"\b" if word[:1].isalnum() else ""
    end = r"\b" if word[-1:].isalnum() else ""
    return re.compile(start + re.escape(word) + end, re.IGNORECASE)


def _banned(name: str, text: str, brand: BrandRules) -> list[Reason]:
    return [Reason("banned_word", name, "red", f"banned word {w!r}") for w in brand.banned_words
            if _word_pattern(w).search(text)]


def _claims(name: str, text: str, brand: BrandRules) -> list[Reason]:
    return [Reason("risky_claim", name, "amber", f"unprovable claim {w!r}") for w in brand.risky_claims
            if _word_pattern(w).search(text)]


def _style(name: str, text: str) -> list[Reason]:
    out = []
    letters = [c for c in text if c.isalpha()]
    caps_words = [w for w in _CAPS_WORD.findall(text) if w not in ACRONYMS]
    if caps_words or (len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.5):
        out.append(Reason("caps", name, "amber", "excessive capitals"))
    if _REPEATED_PUNCT.search(text):
        out.append(Reason("punctuation", name, "amber", "repeated punctuation"))
    return out


def run(con: duckdb.DuckDBPyConnection, *, segments: Segmentation, settings: Settings, context: RunContext,
        llm: StructuredClient | None) -> CreativeLibrary:
    """The creatives stage: copy from the LLM when one is configured (templates if it fails, saying
    why), else templates; every variant scored; the library in table `creatives`."""
    brand, channels = settings.brand, settings.channels.paid_channels
    # Copy for a segment without users would wait for a person's approval and never run (the
    # payload buys no empty audience); k-means names its clusters after some of the segments only.
    profiles = tuple(p for p in segments.profiles if p.users > 0)
    fallback = None
    library = None
    if llm is not None:
        try:
            library = CreativeLibrary(tuple(llm_creatives(
                llm, brand, profiles, channels, regenerate_red=settings.llm.regenerate_red,
                auto_approve_green=brand.auto_approve_green)), generator=f"{llm.provider.name}:{llm.provider.model}")
        except ProviderFailed as exc:
            fallback = f"LLM copy failed, used the templates: {exc}"
    if library is None:
        populated = {p.segment for p in profiles}
        templates = template_creatives(tuple(s for s in SEGMENTS if s in populated), channels, brand=brand,
                                       auto_approve_green=brand.auto_approve_green)
        library = CreativeLibrary(tuple(templates), fallback=fallback)
    if context.creative_decisions:  # a person's decision on the same copy outranks the default status
        library = replace(library, creatives=tuple(
            replace(c, status=cast(Status, context.creative_decisions.get(c.creative_id, c.status)))
            for c in library.creatives))
    con.register("_creatives_df", creatives_frame(library, context.lineage_id))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {Table.CREATIVES} AS SELECT * FROM _creatives_df")
    con.unregister("_creatives_df")
    return library


def creatives_frame(library: CreativeLibrary, lineage_id: str) -> pd.DataFrame:
    """One row per creative, its reasons joined into one column."""
    return pd.DataFrame([
        {"lineage_id": lineage_id, **{k: v for k, v in asdict(c).items() if k != "reasons"},
         "reasons": "; ".join(f"{r.light}: {r.field}: {r.message}" for r in c.reasons)}
        for c in library.creatives
    ])


# ------------------------------------------------------------------ template generator

@cache
def copy_templates() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """The template copy (`templates/ad_copy.toml`): segment -> channel (or `any`) -> (headline, body)."""
    text = resources.files("flashcast.templates").joinpath("ad_copy.toml").read_text(encoding="utf-8")
    return {segment: {channel: [(h, b) for h, b in pairs] for channel, pairs in by_channel.items()}
            for segment, by_channel in tomllib.loads(text).items()}


def _fill(template: str, brand: BrandRules) -> str:
    return template.format(brand=brand.brand_name, tone=brand.tone_words[0] if brand.tone_words else "friendly")


def _with_disclaimer(body: str, brand: BrandRules) -> str:
    return f"{body} {brand.disclaimer}".strip() if brand.disclaimer else body


def template_creatives(
    segments: tuple[str, ...], channels: tuple[str, ...], *, brand: BrandRules, auto_approve_green: bool = False
) -> list[Creative]:
    """Two variants per segment and channel from the templates, each scored by `check_copy`."""
    library = []
    for segment in segments:
        for channel in channels:
            picked = _fitting_pairs(segment, channel, brand)
            for variant, (headline, body) in zip("AB", picked, strict=False):
                library.append(make_creative(segment, channel, variant, headline, body, brand=brand,
                                             auto_approve_green=auto_approve_green))
    return library


def _fitting_pairs(segment: str, channel: str, brand: BrandRules) -> list[tuple[str, str]]:
    limits = brand.limits.get(channel)
    by_channel = copy_templates()[segment]
    pairs = by_channel.get(channel, by_channel["Display"]) + by_channel["any"]
    candidates = [(_fill(h, brand), _with_disclaimer(_fill(b, brand), brand)) for h, b in pairs]
    fitting = [c for c in candidates if limits is None or (len(c[0]) <= limits.headline and len(c[1]) <= limits.body)]
    # If nothing fits (a very long disclaimer, say), keep the shortest two: the checker marks them red.
    return (fitting or sorted(candidates, key=lambda c: len(c[0]) + len(c[1])))[:2]


def make_creative(
    segment: str, channel: str, variant: str, headline: str, body: str, *, brand: BrandRules,
    auto_approve_green: bool = False,
) -> Creative:
    result = check_copy(headline, body, channel=channel, brand=brand)
    status: Status = "rejected" if result.light == "red" else (
        "approved" if result.light == "green" and auto_approve_green else "pending")
    digest = hashlib.sha256(f"{segment}|{channel}|{variant}|{headline}|{body}".encode()).hexdigest()[:12]
    return Creative(f"cr-{digest}", segment, channel, variant, headline, body, result.light, status, result.reasons)


# ------------------------------------------------------------------ LLM copy


def llm_creatives(client: StructuredClient, brand: BrandRules, profiles: tuple[SegmentProfile, ...],
                  channels: tuple[str, ...], *, regenerate_red: int, auto_approve_green: bool) -> list[Creative]:
    """Two scored variants per segment and channel; red ones are re-asked, then kept out with reasons."""
    library = []
    for profile in profiles:
        for channel in channels:
            answer = ask_copy(client, brand, profile, channel)
            for variant_name, variant in zip("AB", answer.variants, strict=True):
                creative = make_creative(profile.segment, channel, variant_name, variant.headline, variant.body,
                                         brand=brand, auto_approve_green=auto_approve_green)
                for _attempt in range(regenerate_red):
                    if creative.light != "red":
                        break
                    reasons = "; ".join(f"{r.field}: {r.message}" for r in creative.reasons if r.light == "red")
                    retry = ask_copy(client, brand, profile, channel, rejected=reasons)
                    creative = make_creative(profile.segment, channel, variant_name, retry.variants[0].headline,
                                             retry.variants[0].body, brand=brand,
                                             auto_approve_green=auto_approve_green)
                library.append(creative)
    return library
