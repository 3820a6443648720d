"""The run's human-readable report (Markdown), linking every file it produced."""

from __future__ import annotations

from pathlib import Path

from flashcast.records import AllocationPlan, CreativeLibrary, ForecastPlan, GuardReport, KpiSummary, Segmentation


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _forecast_lines(plan: ForecastPlan, files: dict[str, Path]) -> list[str]:
    f = plan.forecast
    lines = [f"- {n}" for n in f.notes]
    if f.leaderboard:
        lines += [
            "",
            "Engines compared on a rolling-origin backtest (bands calibrated on earlier origins only):",
            "",
            "| engine | MASE | sMAPE | 80% coverage | 95% coverage | seconds per fit |",
            "|---|---:|---:|---:|---:|---:|",
            *[f"| {r['engine']} | {r['mase']:.3f} | {r['smape']:.3f} | {r['coverage_80']:.0%} | "
              f"{r['coverage_95']:.0%} | {r['seconds_per_fit']:.3f} |" for r in f.leaderboard],
            "",
            f"Full table: [forecast_backtest.csv]({files['forecast_backtest'].name}).",
        ]
    if len(plan.breakdown):
        totals = plan.breakdown.groupby("series_id")["point"].sum()
        lines += ["", f"Per channel and per segment ({len(totals)} series forecast in one parallel call, "
                  f"[forecast_series.csv]({files['forecast_series'].name})): "
                  + ", ".join(f"{sid} {_money(v)}" for sid, v in totals.items())]
    return [*lines, ""] if lines else []


def _budget_lines(allocation: AllocationPlan, files: dict[str, Path]) -> list[str]:
    a = allocation.allocation
    if a is None:
        return ["## Tomorrow's budget: not allocated", "",
                f"**The allocation failed**: {allocation.failure}", "",
                "Everything else in this folder stands; no DSP payload was written. Fix the guardrails (or the "
                "budget) and run again.", ""]
    return [
        f"## Tomorrow's budget ({_money(a.budget)}, {a.method})",
        "",
        "| channel | yesterday | proposed | change | CPA | why |",
        "|---|---:|---:|---:|---:|---|",
        *[f"| {r.channel} | {_money(r.yesterday_spend)} | {_money(r.spend)} | {r.change:+,.2f} | "
          f"{'-' if r.cpa is None else _money(r.cpa)} | {r.why} |" for r in a.rows],
        "",
        f"Details: [allocation.csv]({files['allocation'].name}).",
        "",
        *_curve_lines(allocation, files),
    ]


def _curve_lines(allocation: AllocationPlan, files: dict[str, Path]) -> list[str]:
    a, plan = allocation.allocation, allocation.curves
    if a is None or plan is None or a.expected_conversions is None:
        return []
    lo, hi = a.expected_interval or (a.expected_conversions, a.expected_conversions)
    lines = [
        f"Expected from paid channels tomorrow: {a.expected_conversions:,.2f} conversions (80% interval "
        f"{lo:,.2f} to {hi:,.2f}); {a.gain_vs_yesterday:+,.2f} versus keeping yesterday's split and "
        f"{a.gain_vs_inverse_cpa:+,.2f} versus inverse CPA, on the fitted curves.",
        "",
        f"![response curves]({files['response_curves'].name})",
        "",
        "What if the budget changed (share guardrails only; where extra money stops paying):",
        "",
        "| budget | expected conversions | 80% interval | marginal cost per conversion |",
        "|---:|---:|---:|---:|",
        *[f"| {_money(r['budget'])} | {r['expected']:,.2f} | {r['low']:,.2f} to {r['high']:,.2f} | "
          f"{_money(r['marginal_cpa'])} |" for r in plan.whatif],
        "",
        f"![what-if]({files['whatif_chart'].name}) Data: [whatif.csv]({files['whatif'].name}).",
        "",
    ]
    if a.notes:
        lines += ["Notes from the curve fits:", "", *[f"- {n}" for n in a.notes], ""]
    return lines


def write_report(
    path: Path, *, lineage_id: str, guard: GuardReport, kpis: KpiSummary, segments: Segmentation,
    creatives: CreativeLibrary, forecast: ForecastPlan, allocate: AllocationPlan, files: dict[str, Path]
) -> Path:
    """report.md: the plan in plain words, linking every other file."""
    t = guard.totals
    f, seg = forecast.forecast, segments
    lines = [
        "# Flashcast plan",
        "",
        f"Run `{lineage_id}`, data {kpis.first_day} to {kpis.last_day}"
        + (" (last day partial, left out of the forecast and the allocation)." if kpis.partial_last_day else "."),
        "",
        "## Data accounted for",
        "",
        f"{t['input_rows']:,} GA4 rows in: {t['accepted']:,} accepted, {t['dropped_consent']:,} dropped for consent, "
        f"{t['quarantined']:,} quarantined, {t['duplicate']:,} duplicates. Per day: "
        f"[reconciliation.csv]({files['reconciliation'].name}); quarantined rows with reasons: "
        f"[quarantine.csv]({files['quarantine'].name}).",
        "",
        "## Who the customers are",
        "",
        "| segment | users | share | sessions | orders | revenue/user | pages/session |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {p.segment} | {p.users:,} | {p.share:.0%} | {p.sessions:.1f} | {p.orders:.2f} | {_money(p.monetary)} "
          f"| {p.pages_per_session:.1f} |" for p in seg.profiles],
        "",
        ("k-means clusters (silhouette {:.2f}): ".format(seg.thresholds["silhouette"])
         if "silhouette" in seg.thresholds else "Rules that fired: ")
        + ", ".join(f"{k} {v:,}" for k, v in seg.rule_counts.items())
        + f". Per user: [segments.csv]({files['segments'].name}).",
        "",
        "## What to say",
        "",
        f"{len(creatives.creatives)} creatives (two per segment and channel): "
        + ", ".join(f"{n} {light}" for light, n in creatives.lights.items() if n)
        + f". Red copy never enters the payload. Library: [creatives.csv]({files['creatives'].name}).",
        "",
        "## Revenue to expect",
        "",
        f"Next {len(f.dates)} days ({f.dates[0]} to {f.dates[-1]}), {f.engine}: {_money(sum(f.point))} expected "
        f"(point forecast), {_money(sum(f.band(80).lower))} to {_money(sum(f.band(80).upper))} summing the daily "
        f"80% bounds. Last 28 complete days: {_money(sum(f.history[-28:]))}.",
        "",
        f"![fan chart]({files['fan_chart'].name})",
        "",
        f"Daily values and 50/80/95% bands: [forecast.csv]({files['forecast'].name}).",
        "",
        *_forecast_lines(forecast, files),
        *_budget_lines(allocate, files),
        "## Audit",
        "",
        (f"- DSP payload, validated against its JSON Schema: [payload.json]({files['payload'].name})"
         if "payload" in files else "- No DSP payload: the budget was not allocated"),
        f"- Daily KPIs per channel: [daily_kpis.csv]({files['daily_kpis'].name})",
        "- Lineage head: [lineage_head.json](lineage_head.json); verify with "
        "`flashcast lineage verify --head out/lineage_head.json`",
        "- OpenLineage events: [openlineage.jsonl](openlineage.jsonl)",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
