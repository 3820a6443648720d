"""What the approval dashboard shows, read from the latest finished run: its reconciliation (ops
store) and the files it wrote (forecasts with their history, the allocation, the what-if sweep,
the engine leaderboard). The page itself (`dashboard_static/`) is served by the API and asks only
the API; every script and style comes from this package or plotly's (no CDN).
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flashcast.store import OpsStore

STATIC = resources.files("flashcast") / "dashboard_static"
HISTORY_DAYS = 120  # of history drawn before the forecast
CHART_FILES = ("response_curves.png", "whatif.png", "fan_chart.png")


def plotly_js() -> Path:
    """plotly.js as shipped inside the plotly package (offline, versioned with it)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def latest_finished_run(ops: OpsStore) -> dict[str, Any] | None:
    """The newest run that finished (completed, or partial: some stage failed softly) with its outputs."""
    runs = ops.runs
    with ops.engine.connect() as conn:
        row = conn.execute(sa.select(runs.c.lineage_id, runs.c.status, runs.c.finished_at, runs.c.summary)
                           .where(runs.c.status.in_(("completed", "partial")))
                           .order_by(runs.c.finished_at.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(value: str | None) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except ValueError:
        return None


BANDS = ("point", "lo_50", "hi_50", "lo_80", "hi_80", "lo_95", "hi_95")


def dashboard_data(ops: OpsStore) -> dict[str, Any]:
    """Everything the dashboard draws for the latest finished run (`run` None before the first)."""
    run = latest_finished_run(ops)
    if run is None:
        return {"run": None}
    lineage_id = run["lineage_id"]
    out = Path((run["summary"] or {}).get("out_dir", ""))
    rec = ops.reconciliation
    with ops.engine.connect() as conn:
        days = [dict(r._mapping) for r in conn.execute(sa.select(rec).where(rec.c.lineage_id == lineage_id)
                                                        .order_by(rec.c.event_date))]
    for d in days:
        d.pop("lineage_id", None)
        d["dropped_share"] = round(d["dropped_consent"] / d["input_rows"], 6) if d["input_rows"] else 0.0
    quarantine = _rows(out / "quarantine.csv")
    reasons: dict[str, int] = {}
    for q in quarantine:
        reasons[q.get("field") or "unknown"] = reasons.get(q.get("field") or "unknown", 0) + 1
    return {
        "run": {"lineage_id": lineage_id, "status": run["status"], "finished_at": run["finished_at"],
                "out_dir": str(out), "files": [name for name in CHART_FILES if (out / name).is_file()],
                "attention": list((run["summary"] or {}).get("attention", []))},
        "reconciliation": days,
        "quarantine_by_field": reasons,
        "forecast": _forecasts(out),
        "leaderboard": [{k: (_number(v) if k not in ("engine",) else v) for k, v in row.items()}
                        for row in _rows(out / "forecast_backtest.csv")],
        "allocation": [{k: (_number(v) if k in _ALLOCATION_NUMBERS else v) for k, v in row.items()
                        if k in _ALLOCATION_FIELDS} for row in _rows(out / "allocation.csv")],
        "whatif": [{k: _number(v) if k != "currency" else v for k, v in row.items()}
                   for row in _rows(out / "whatif.csv")],
    }


_ALLOCATION_NUMBERS = {"yesterday_spend", "spend", "share", "change", "cpa", "marginal_cpa", "expected_conversions",
                       "lower", "upper"}
_ALLOCATION_FIELDS = _ALLOCATION_NUMBERS | {"channel", "method", "bound", "why", "currency"}


def _forecasts(out: Path) -> dict[str, Any]:
    """Per series: its engine, the last HISTORY_DAYS of history (revenue, from the daily KPIs) and the
    forecast days with their bands. History exists for the total and per channel."""
    kpis = _rows(out / "daily_kpis.csv")
    total: dict[str, float] = {}
    by_channel: dict[str, dict[str, float]] = {}
    for row in kpis:
        if row.get("is_partial") == "True":
            continue
        revenue = _number(row.get("revenue")) or 0.0
        total[row["event_date"]] = total.get(row["event_date"], 0.0) + revenue
        by_channel.setdefault(row["channel"], {})[row["event_date"]] = revenue
    histories = {"revenue_total": total, **{f"channel:{c}": v for c, v in by_channel.items()}}
    series: dict[str, Any] = {}
    for row in _rows(out / "forecast.csv") + _rows(out / "forecast_series.csv"):
        sid = row["series_id"]
        entry = series.setdefault(sid, {"engine": row.get("engine"), "days": [], "history": []})
        entry["days"].append({"date": row.get("date") or row.get("ds"), **{k: _number(row.get(k)) for k in BANDS}})
    for sid, entry in series.items():
        history = histories.get(sid, {})
        entry["history"] = [{"date": d, "y": round(history[d], 2)} for d in sorted(history)[-HISTORY_DAYS:]]
    return series
