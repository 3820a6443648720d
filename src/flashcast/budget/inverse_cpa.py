"""Inverse CPA: tomorrow's budget across paid channels in proportion to recent conversions per unit of
spend, within the guardrails, to the cent.

1. Weight each channel by conversions per unit of spend over the lookback window (inverse CPA).
2. Target spend = budget x weight share.
3. Fit the targets to all bounds at once (see `bounds`): x = clip(mu x target, lo, hi) for the one
   scale factor mu that makes sum(x) = budget, found exactly from the breakpoints (no iterative
   solver). Free channels keep the inverse-CPA proportions; bound channels sit on their bound.
   Clipping and then renormalising, the common shortcut, breaks bounds; this does not.
4. Round to cents keeping the sum equal to the budget and every bound intact.

Infeasible guardrails raise AllocationInfeasible naming the conflicting bounds and the smallest
change that would make them feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from flashcast.budget.bounds import (
    check_channel_bounds,
    explain_bound,
    feasible_bounds,
    resolve_budget,
    round_to_cents,
)
from flashcast.budget.records import Allocation, AllocationRow, ChannelBounds, ChannelHistory
from flashcast.config import Guardrails


def _solve_monotone(fn: Callable[[float], float], breakpoints: np.ndarray, total: float) -> float:
    """The parameter where the piecewise-linear, non-decreasing `fn` reaches `total`, found exactly."""
    values = np.array([fn(float(b)) for b in breakpoints])
    i = int(np.searchsorted(values, total - 1e-9, side="left"))
    if i == 0:
        return float(breakpoints[0])
    if i >= len(breakpoints):
        return float(breakpoints[-1])
    lo_p, hi_p, lo_v, hi_v = breakpoints[i - 1], breakpoints[i], values[i - 1], values[i]
    # Between two breakpoints the sum is linear in the parameter: interpolate.
    return float(lo_p + (hi_p - lo_p) * (total - lo_v) / (hi_v - lo_v)) if hi_v > lo_v else float(hi_p)


def project_onto_bounds(target: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float) -> np.ndarray:
    """Scale the targets by one factor, clipped to the bounds, so they add up to `total` exactly.

    x = clip(mu * target, lower, upper): free channels keep the targets' proportions (the
    inverse-CPA ratios), bound channels sit on their bound. If every channel with a positive target
    is at its upper bound and money is left, channels with a zero target are filled evenly from
    their lower bounds. Requires sum(lower) <= total <= sum(upper).
    """
    positive = target > 0
    ratios = np.concatenate([[0.0], lower[positive] / target[positive], upper[positive] / target[positive]])
    mu = _solve_monotone(lambda m: float(np.clip(m * target, lower, upper).sum()), np.unique(ratios), total)
    x = np.clip(mu * target, lower, upper)
    left = total - float(x.sum())
    if left > 1e-9 and (~positive).any():
        zero = ~positive
        shifts = np.unique(np.concatenate([[0.0], upper[zero] - lower[zero]]))
        lam = _solve_monotone(lambda s: float(np.clip(lower[zero] + s, lower[zero], upper[zero]).sum()),
                              shifts, float(x[zero].sum()) + left)
        x[zero] = np.clip(lower[zero] + lam, lower[zero], upper[zero])
    return x


def inverse_cpa_weights(histories: Sequence[ChannelHistory]) -> dict[str, float]:
    """Conversions per unit spend; channels with no spend get the mean weight (no evidence either way)."""
    observed = {h.channel: h.lookback_conversions / h.lookback_spend for h in histories if h.lookback_spend > 0}
    neutral = float(np.mean(list(observed.values()))) if observed else 1.0
    return {h.channel: observed.get(h.channel, neutral) for h in histories}


def allocate_inverse_cpa(
    histories: Sequence[ChannelHistory], guardrails: Guardrails, *, budget: float | None = None,
    lookback_days: int | None = None,
) -> Allocation:
    """Tomorrow's spend per channel: inverse-CPA targets projected onto the guardrails, in cents."""
    total = resolve_budget(histories, guardrails, budget)
    weights = inverse_cpa_weights(histories)
    weight_sum = sum(weights.values())
    if weight_sum > 0 and any(h.lookback_conversions > 0 for h in histories):
        target = np.array([total * weights[h.channel] / weight_sum for h in histories])
    else:  # nothing converted anywhere: keep yesterday's split
        yesterday = np.array([h.yesterday_spend for h in histories])
        even = np.full(len(histories), total / len(histories))
        target = total * yesterday / yesterday.sum() if yesterday.sum() > 0 else even
    bounds, notes = feasible_bounds(histories, total, guardrails)
    check_channel_bounds(bounds, total)
    lower = np.array([bounds[h.channel].lower for h in histories])
    upper = np.array([bounds[h.channel].upper for h in histories])
    spends = round_to_cents(project_onto_bounds(target, lower, upper, total), lower, upper, total)
    rows = []
    days = lookback_days or guardrails.lookback_days
    for h, t, spend in zip(histories, target, spends, strict=True):
        b = bounds[h.channel]
        bound = b.lower_rule if math.isclose(spend, b.lower, abs_tol=0.005) and b.lower > 0 else (
            b.upper_rule if math.isclose(spend, b.upper, abs_tol=0.005) else None)
        cpa = h.lookback_spend / h.lookback_conversions if h.lookback_conversions > 0 else None
        rows.append(AllocationRow(
            channel=h.channel, yesterday_spend=round(h.yesterday_spend, 2), lookback_spend=round(h.lookback_spend, 2),
            conversions=h.lookback_conversions, cpa=None if cpa is None else round(cpa, 2),
            raw_weight=round(weights[h.channel], 6), target_spend=round(float(t), 2), spend=spend,
            share=round(spend / total, 6), change=round(spend - h.yesterday_spend, 2),
            lower=b.lower, upper=b.upper, bound=bound, why=_why(h, cpa, float(t), spend, b, bound, days),
        ))
    return Allocation("inverse_cpa", total, tuple(rows), notes=tuple(notes))


def _why(h: ChannelHistory, cpa: float | None, target: float, spend: float, b: ChannelBounds, bound: str | None,
         days: int) -> str:
    if h.lookback_spend <= 0:
        basis = f"no spend in the last {days} days: neutral weight"
    elif cpa is None:
        basis = f"{h.lookback_spend:,.2f} spent, no conversions in {days} days"
    else:
        basis = f"CPA {cpa:,.2f} over {days} days"
    if bound:
        tail = f"; {explain_bound(bound)} ({b.lower:,.2f}..{b.upper:,.2f})"
    elif target > 0 and abs(spend - target) >= 0.01:
        tail = f"; scaled x{spend / target:.2f} with the other unbound channels to fit the budget"
    else:
        tail = ""
    return f"{basis} -> target {target:,.2f}, proposed {spend:,.2f}{tail}"
