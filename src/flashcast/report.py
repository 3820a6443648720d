"""The run's human-readable report (Markdown): the plan in plain words, linking every file it produced.

What needs a person's attention comes first (a stage that failed softly, an LLM that fell back to
the offline method, inputs that look wrong); then the data, the customers, the copy, the revenue
forecast and tomorrow's budget. Money is shown in the configured currency.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from flashcast.budget.records import AllocationRow
from flashcast.records import (
    AllocationPlan,
    CreativeLibrary,
    ForecastPlan,
    GuardReport,
    KpiSummary,
    Segmentation,
    StagedExport,
)

Money = Callable[[float], str]
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "AUD": "A$", "CAD": "C$"}


def format_money(value: float, currency: str) -> str:
    """1,217.37 with the currency's symbol when it has a well-known one, else its ISO code."""
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{value:,.2f}" if symbol else f"{value:,.2f} {currency}"


def attention_items(*, ingest: StagedExport | None = None, segments: Segmentation | None = None,
                    creatives: CreativeLibrary | None = None, forecast: ForecastPlan | None = None,
                    allocate: AllocationPlan | None = None, kpis: KpiSummary | None = None,
                    guard: GuardReport | None = None, approvals: bool = True) -> list[str]:
    """What a person should look at before trusting the plan, one sentence each, from the stages' records
    there are (`flashcast ingest` stops after the KPIs). `approvals`: with the creatives that wait for
    approval (the summary email and the dashboard show those in a section of their own)."""
    items = []
    if ingest is not None:
        items += list(ingest.warnings)
    if guard is not None:
        items += list(guard.alerts)
    if kpis is not None and kpis.spend_through is not None and kpis.spend_ends_early:
        gap = (kpis.last_complete_day - kpis.spend_through).days
        items.append(f"The spend data end on {kpis.spend_through}, {gap} day(s) before the last complete day "
                     f"({kpis.last_complete_day}): the budget starts from the spend of {kpis.spend_through} and "
                     "the curves are fitted up to it. Add the missing days' spend to the spend file.")
    if kpis is not None and kpis.unspent:
        names = _listed(kpis.unspent)
        one = len(kpis.unspent) == 1
        items.append(f"{names} {'has' if one else 'have'} no spend in the spend data: what {'its' if one else 'their'} "
                     "money buys is unknown, so the plan gives "
                     f"{'it' if one else 'each'} only what the guardrails require. Add "
                     f"{'its' if one else 'their'} spend to the spend file, or take {'it' if one else 'them'} out of "
                     "[channels] paid_channels if not bought.")
    failures = ([f"Revenue could not be forecast: {forecast.failure}."] if forecast and forecast.failure else []) + (
        [f"The budget could not be allocated: {allocate.failure}."] if allocate and allocate.failure else [])
    if failures:  # either one stops the payload: say so once
        failures[-1] += " No DSP payload was written."
    items += failures
    for fallback in (segments.fallback if segments else None, creatives.fallback if creatives else None):
        if fallback:
            items.append(fallback)
    pending = sum(c.status == "pending" for c in creatives.creatives) if creatives else 0
    if pending and approvals:
        items.append(f"{pending} creatives wait for a person's approval before they can be pushed.")
    return items


def _pushed_lines(rows: tuple[AllocationRow, ...], buyers: Mapping[str, str] | None) -> list[str]:
    """Where `flashcast push` sends each channel's spend, and which funded channels stay in the plan
    only (no platform buys them: a renamed channel can be left without one unnoticed)."""
    if buyers is None:
        return []
    pushed = [f"{buyers[r.channel]} ({r.channel})" for r in rows if r.channel in buyers]
    unbought = [r.channel for r in rows if r.channel not in buyers and r.spend > 0]
    line = f"Pushed by `flashcast push` to: {', '.join(pushed)}." if pushed else ""
    if unbought:
        names = _listed(unbought)
        one = len(unbought) == 1
        line += (f" {names} {'is' if one else 'are'} in the plan only: no `[[delivery.platforms]]` entry buys "
                 f"{'it' if one else 'them'}.")
    return [line.strip(), ""] if line else []


def _listed(names: Sequence[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def format_figure(x: float) -> str:
    """Three significant figures, without an exponent from 100 up (4,560, not 4.56e+03)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def format_share(share: float) -> str:
    """A share in whole percent, but a small one not as 0% (78 of 15,000 users)."""
    whole = f"{share:.0%}"
    return "<1%" if share > 0 and whole == "0%" else whole


def _why_no_payload(forecast: ForecastPlan, allocate: AllocationPlan) -> str:
    reasons = (["revenue was not forecast"] if forecast.failure else []) + (
        ["the budget was not allocated"] if allocate.failure or not forecast.failure else [])
    return " and ".join(reasons)


def write_report(
    path: Path, *, lineage_id: str, currency: str, guard: GuardReport, kpis: KpiSummary, segments: Segmentation,
    creatives: CreativeLibrary, forecast: ForecastPlan, allocate: AllocationPlan, files: dict[str, Path],
    head_file: Path, ingest: StagedExport | None = None, buyers: Mapping[str, str] | None = None,
) -> Path:
    """report.md: the plan in plain words, linking every other file. `head_file` is where the run's
    lineage head will be once the folder is published (the command to verify it names that path);
    `buyers`, each paid channel's platform (`[[delivery.platforms]]`), says where the plan is pushed."""
    def money(value: float) -> str:
        return format_money(value, currency)

    attention = attention_items(ingest=ingest, guard=guard, segments=segments, creatives=creatives, forecast=forecast,
                                allocate=allocate, kpis=kpis)
    lines = [
        "# Flashcast plan",
        "",
        f"Run `{lineage_id}`, data {kpis.first_day} to {kpis.last_day}"
        + (" (last day partial, left out of the forecast and the allocation)" if kpis.partial_last_day else "")
        + f". Money in {currency}.",
        "",
        *(["## Needs attention", "", *[f"- {item}" for item in attention], ""] if attention else []),
        *_data_lines(guard, files),
        *_segment_lines(segments, files),
        *_creative_lines(creatives, files),
        *_forecast_lines(forecast, files, money),
        *_budget_lines(allocate, files, money, buyers),
        "## Audit",
        "",
        (f"- DSP payload, validated against its JSON Schema: [payload.json]({files['payload'].name})"
         if "payload" in files else "- No DSP payload: " + _why_no_payload(forecast, allocate)),
        f"- Daily KPIs per channel: [daily_kpis.csv]({files['daily_kpis'].name})",
        "- Lineage head: [lineage_head.json](lineage_head.json); verify with "
        f"`flashcast lineage verify --head {shlex.quote(str(head_file))}`",
        "- OpenLineage events: [openlineage.jsonl](openlineage.jsonl)",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _data_lines(guard: GuardReport, files: dict[str, Path]) -> list[str]:
    t = guard.totals
    return [
        "## Data accounted for",
        "",
        f"{t['input_rows']:,} GA4 rows in: {t['accepted']:,} accepted, {t['dropped_consent']:,} dropped for consent, "
        f"{t['quarantined']:,} quarantined, {t['duplicate']:,} duplicates. Per day: "
        f"[reconciliation.csv]({files['reconciliation'].name}); per file: [files.csv]({files['files'].name}); "
        f"quarantined rows with reasons: [quarantine.csv]({files['quarantine'].name}).",
        "",
    ]


def _segment_lines(seg: Segmentation, files: dict[str, Path]) -> list[str]:
    return [
        "## Who the customers are",
        "",
        "| segment | users | share | sessions | orders | revenue/user | pages/session |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {p.segment} | {p.users:,} | {format_share(p.share)} | {p.sessions:.1f} | {p.orders:.2f} "
          f"| {p.monetary:,.2f} | {p.pages_per_session:.1f} |" for p in seg.profiles],
        "",
        ("k-means clusters (silhouette {:.2f}): ".format(seg.thresholds["silhouette"])
         if "silhouette" in seg.thresholds else "Rules that fired: ")
        + ", ".join(f"{k} {v:,}" for k, v in seg.rule_counts.items())
        + f". Per user, with the rule and why: [segments.csv]({files['segments'].name}).",
        "",
    ]


def _creative_lines(library: CreativeLibrary, files: dict[str, Path]) -> list[str]:
    statuses = {s: sum(c.status == s for c in library.creatives) for s in ("approved", "pending", "rejected")}
    return [
        "## What to say",
        "",
        f"{len(library.creatives)} creatives (two per segment and channel, from {library.generator}): "
        + ", ".join(f"{n} {light}" for light, n in library.lights.items() if n)
        + "; " + ", ".join(f"{n} {status}" for status, n in statuses.items() if n)
        + f". Red copy never enters the payload. Library: [creatives.csv]({files['creatives'].name}).",
        "",
    ]


def _forecast_lines(plan: ForecastPlan, files: dict[str, Path], fmt: Money) -> list[str]:
    f = plan.forecast
    if f is None:
        return ["## Revenue to expect: not forecast", "", f"**The forecast failed**: {plan.failure}", "",
                "Everything else in this folder stands; no DSP payload was written.", ""]
    total = (f"; 80% interval for the {len(f.dates)}-day total {fmt(f.total_bands[80][0])} to "
             f"{fmt(f.total_bands[80][1])}" if 80 in f.total_bands else "")
    lines = [
        "## Revenue to expect",
        "",
        f"Next {len(f.dates)} days ({f.dates[0]} to {f.dates[-1]}), {f.engine}: {fmt(f.total)} expected{total}. "
        f"Last 28 complete days: {fmt(sum(float(x) for x in f.history[-28:]))}.",
        "",
        f"![fan chart]({files['fan_chart'].name})",
        "",
        f"Daily values and nested 50/80/95% bands: [forecast.csv]({files['forecast'].name}).",
        "",
        *[f"- {n}" for n in f.notes],
    ]
    if f.leaderboard:
        lines += [
            "",
            "Engines compared on a rolling-origin backtest (bands calibrated on earlier origins only):",
            "",
            "| engine | MASE | sMAPE | 80% coverage | 95% coverage | ms per fit |",
            "|---|---:|---:|---:|---:|---:|",
            *[f"| {r['engine']} | {r['mase']:.3f} | {r['smape']:.3f} | {r['coverage_80']:.0%} | "
              f"{r['coverage_95']:.0%} | {cast(float, r['seconds_per_fit']) * 1000:,.2f} |" for r in f.leaderboard],
            "",
            f"Full table: [forecast_backtest.csv]({files['forecast_backtest'].name}).",
        ]
    if len(plan.breakdown):
        totals = plan.breakdown.groupby("series_id")["point"].sum()
        lines += ["", f"Per channel and per segment ({len(totals)} series forecast in one parallel call, "
                  f"[forecast_series.csv]({files['forecast_series'].name})): "
                  + ", ".join(f"{sid} {fmt(v)}" for sid, v in totals.items())]
    return [*lines, ""]


def _budget_lines(allocation: AllocationPlan, files: dict[str, Path], fmt: Money,
                  buyers: Mapping[str, str] | None = None) -> list[str]:
    a = allocation.allocation
    if a is None:
        return ["## Tomorrow's budget: not allocated", "",
                f"**The allocation failed**: {allocation.failure}", "",
                "Everything else in this folder stands; no DSP payload was written. Fix the guardrails (or the "
                "budget) and run again.", ""]
    lines = [
        f"## Tomorrow's budget ({fmt(a.budget)}, {a.method})",
        "",
        "| channel | yesterday | proposed | change | CPA | why |",
        "|---|---:|---:|---:|---:|---|",
        *[f"| {r.channel} | {fmt(r.yesterday_spend)} | {fmt(r.spend)} | {r.change:+,.2f} | "
          f"{'-' if r.cpa is None else fmt(r.cpa)} | {r.why} |" for r in a.rows],
        "",
        f"Details: [allocation.csv]({files['allocation'].name}).",
        "",
        *_pushed_lines(a.rows, buyers),
    ]
    plan = allocation.curves
    if plan is not None and a.expected_conversions is not None:
        lo, hi = a.expected_interval or (a.expected_conversions, a.expected_conversions)
        lines += [
            f"Expected from paid channels tomorrow: {a.expected_conversions:,.2f} conversions (80% interval "
            f"{lo:,.2f} to {hi:,.2f}); {a.gain_vs_yesterday:+,.2f} versus keeping yesterday's split and "
            f"{a.gain_vs_inverse_cpa:+,.2f} versus inverse CPA, on the fitted curves.",
            "",
            f"![response curves]({files['response_curves'].name})",
            "",
            "What if the budget changed (each budget allocated like this plan: every guardrail, yesterday's "
            "split scaled to it; the 1x row is the plan above). Where does extra money stop paying?",
            "",
            "| budget | expected conversions | 80% interval | marginal cost per conversion |",
            "|---:|---:|---:|---:|",
            *[f"| {fmt(r['budget'])} | {r['expected']:,.2f} | {r['low']:,.2f} to {r['high']:,.2f} | "
              f"{fmt(r['marginal_cpa']) if math.isfinite(r['marginal_cpa']) else 'no channel can buy more'} |"
              for r in plan.whatif],
            "",
            f"![what-if]({files['whatif_chart'].name}) Data: [whatif.csv]({files['whatif'].name}).",
            "",
        ]
    if a.notes:
        lines += ["Notes on the allocation:", "", *[f"- {n}" for n in a.notes], ""]
    return lines
