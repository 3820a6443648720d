"""Response curves and the what-if budget sweep as PNGs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from flashcast.budget.plan import CurvePlan, cost_text, unit_of
from flashcast.charts import chart

_ADJECTIVE = {"day": "daily", "week": "weekly"}


def plot_curves(plan: CurvePlan, path: Path, *, currency: str = "USD", period: str = "day") -> Path:
    """One panel per channel: fitted curve with its 80% draw band, the last period's and the proposed
    spend (`period`: "day", or "week" for a weekly media-mix file)."""
    rows = {r.channel: r for r in plan.allocation.rows}
    n, cols = len(rows), 2
    with chart(path, figsize=(10, 3.2 * ((n + 1) // cols)), dpi=100, rows=(n + 1) // cols, cols=cols) as (_, axes):
        for ax, (channel, row) in zip(axes.flat, rows.items(), strict=False):
            fit = plan.fits[channel]
            top = max(row.upper, row.yesterday_spend, row.spend, 1.0) * 2.0
            xs = np.linspace(0, top, 200)
            draws = np.array([d.response(xs) for d in fit.draws])
            ax.fill_between(xs, np.quantile(draws, 0.1, axis=0), np.quantile(draws, 0.9, axis=0), alpha=0.25,
                            color="#1f77b4", linewidth=0, label="80% of bootstrap curves")
            ax.plot(xs, fit.curve.response(xs), color="#1f77b4", label=f"{fit.curve.form} fit")
            last = "yesterday" if period == "day" else f"last {period}"
            for x, style, label in ((row.yesterday_spend, ":", last), (row.spend, "-", "proposed")):
                ax.axvline(x, color="#d62728", linestyle=style, linewidth=1.2, label=f"{label} {x:,.0f}")
            ax.set_title(f"{channel}{' (fallback curve)' if fit.fallback else ''}", fontsize=10)
            ax.set_xlabel(f"{_ADJECTIVE[period]} spend ({currency})")
            ax.set_ylabel(f"expected per {period}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
    return path


def plot_whatif(sweep: list[dict[str, float]], path: Path, *, currency: str = "USD", period: str = "day",
                outcome: str = "conversions") -> Path:
    """Expected outcome with its 80% interval across total budgets, labelled with marginal cost."""
    with chart(path, figsize=(7, 4), dpi=100) as (_, ax):
        budgets = [r["budget"] for r in sweep]
        ax.fill_between(budgets, [r["low"] for r in sweep], [r["high"] for r in sweep], alpha=0.25, color="#2ca02c",
                        linewidth=0, label="80% interval")
        ax.plot(budgets, [r["expected"] for r in sweep], marker="o", color="#2ca02c", label=f"expected per {period}")
        for r in (r for r in sweep if math.isfinite(r["marginal_cpa"])):  # inf: no channel can take more
            cost = r["marginal_cpa"]
            label = f"{cost:,.0f}" if cost >= 10 else cost_text(cost)
            label += "/conv" if outcome == "conversions" else ""
            ax.annotate(label, (r["budget"], r["expected"]), fontsize=7, textcoords="offset points", xytext=(0, 6),
                        ha="center")
        ax.set_xlabel(f"total {_ADJECTIVE[period]} budget ({currency})")
        ax.set_ylabel(f"expected {outcome} per {period}")
        ax.set_title(f"What-if: return on extra budget (labels: marginal cost per {unit_of(outcome)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path
