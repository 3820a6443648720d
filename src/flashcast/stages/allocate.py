"""Stage 6: tomorrow's budget across paid channels by inverse CPA, within guardrails, to the cent.

1. Weight each channel by conversions per unit of spend over the lookback window (inverse CPA).
2. Target spend = budget x weight share.
3. Bounds per channel: min/max share of the budget, an absolute cap, and the largest move allowed
   versus yesterday (max_daily_change x yesterday's spend, but never less than
   min_daily_move_share x budget, so a paused channel can restart).
4. Fit the targets to all bounds at once: x = clip(mu x target, lo, hi) for the one scale factor
   mu that makes sum(x) = budget, found exactly from the breakpoints (no iterative solver). Free
   channels keep the inverse-CPA proportions; bound channels sit on their bound. Clipping and then
   renormalising, the common shortcut, breaks bounds; this does not.
5. Round to cents keeping the sum equal to the budget and every bound intact.

Infeasible guardrails raise AllocationInfeasible naming the conflicting bounds and the smallest
change that would make them feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from flashcast.config import Guardrails
from flashcast.errors import AllocationInfeasible


@dataclass(frozen=True)
class ChannelHistory:
    channel: str
    yesterday_spend: float
    lookback_spend: float
    lookback_conversions: float


@dataclass(frozen=True)
class ChannelBounds:
    lower: float
    upper: float
    lower_rule: str
    upper_rule: str


@dataclass(frozen=True)
class AllocationRow:
    channel: str
    yesterday_spend: float
    lookback_spend: float
    conversions: float
    cpa: float | None
    raw_weight: float
    target_spend: float
    spend: float
    share: float
    change: float
    lower: float
    upper: float
    bound: str | None  # the guardrail that holds this channel, if any
    why: str
    marginal_cpa: float | None = None  # cost of one more conversion at the proposed spend (curves)
    expected_conversions: float | None = None  # at the proposed spend, per day (curves)
    expected_low: float | None = None  # 80% interval from the curve's bootstrap draws
    expected_high: float | None = None


@dataclass(frozen=True)
class Allocation:
    method: str
    budget: float
    rows: tuple[AllocationRow, ...]
    expected_conversions: float | None = None
    expected_interval: tuple[float, float] | None = None
    gain_vs_yesterday: float | None = None  # expected conversions over keeping yesterday's split
    gain_vs_inverse_cpa: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def spends(self) -> dict[str, float]:
        return {r.channel: r.spend for r in self.rows}


def _cents(value: float) -> int:
    return round(value * 100)


def channel_bounds(
    histories: Sequence[ChannelHistory], budget: float, guardrails: Guardrails
) -> dict[str, ChannelBounds]:
    """Each channel's [lower, upper] spend in cents-aligned currency and the rule behind each side."""
    out = {}
    for h in histories:
        move = max(guardrails.max_daily_change * h.yesterday_spend, guardrails.min_daily_move_share * budget)
        lowers = [(0.0, "zero"), (guardrails.min_share.get(h.channel, 0.0) * budget, "min_share"),
                  (h.yesterday_spend - move, "max_daily_change")]
        uppers = [(guardrails.max_share.get(h.channel, 1.0) * budget, "max_share"),
                  (h.yesterday_spend + move, "max_daily_change")]
        if h.channel in guardrails.hold:
            lowers.append((h.yesterday_spend, "held"))
            uppers.append((h.yesterday_spend, "held"))
        if h.channel in guardrails.caps:
            uppers.append((guardrails.caps[h.channel], "cap"))
        lo, lo_rule = max(lowers, key=lambda x: x[0])
        hi, hi_rule = min(uppers, key=lambda x: x[0])
        out[h.channel] = ChannelBounds(math.ceil(round(lo * 100, 6)) / 100, math.floor(round(hi * 100, 6)) / 100,
                                       lo_rule, hi_rule)
    return out


def check_feasible(bounds: dict[str, ChannelBounds], budget: float) -> None:
    """Raise AllocationInfeasible naming the bounds that cannot all hold for `budget`."""
    crossed = [f"{c}: lower {b.lower:,.2f} ({b.lower_rule}) > upper {b.upper:,.2f} ({b.upper_rule}); "
               f"move one of them by {b.lower - b.upper:,.2f}"
               for c, b in bounds.items() if b.lower > b.upper + 1e-9]
    if crossed:
        raise AllocationInfeasible("guardrails cross for " + "; ".join(crossed), conflicts=tuple(crossed))
    low = sum(b.lower for b in bounds.values())
    high = sum(b.upper for b in bounds.values())
    if low > budget + 1e-9:
        parts = tuple(f"{c} {b.lower:,.2f} ({b.lower_rule})" for c, b in bounds.items() if b.lower > 0)
        raise AllocationInfeasible(
            f"lower bounds add to {low:,.2f}, more than the budget {budget:,.2f}: " + ", ".join(parts)
            + f"; raise the budget or lower these bounds by {low - budget:,.2f} in total",
            conflicts=parts, shortfall=round(low - budget, 2))
    if high < budget - 1e-9:
        parts = tuple(f"{c} {b.upper:,.2f} ({b.upper_rule})" for c, b in bounds.items())
        raise AllocationInfeasible(
            f"upper bounds add to {high:,.2f}, less than the budget {budget:,.2f}: " + ", ".join(parts)
            + f"; lower the budget or raise these bounds by {budget - high:,.2f} in total",
            conflicts=parts, shortfall=round(budget - high, 2))


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


def round_to_cents(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float) -> list[float]:
    """Round to cents, keep every bound, and make the cents add up to `total` exactly."""
    cents = np.floor(np.round(x * 100, 6)).astype(np.int64)
    lo_c, hi_c = np.round(lower * 100).astype(np.int64), np.round(upper * 100).astype(np.int64)
    cents = np.clip(cents, lo_c, hi_c)
    remainder = _cents(total) - int(cents.sum())
    order = np.argsort(-(x * 100 - np.floor(np.round(x * 100, 6))), kind="stable")
    while remainder != 0:
        step = 1 if remainder > 0 else -1
        moved = False
        for i in order if step > 0 else order[::-1]:
            if (step > 0 and cents[i] < hi_c[i]) or (step < 0 and cents[i] > lo_c[i]):
                cents[i] += step
                remainder -= step
                moved = True
                if remainder == 0:
                    break
        if not moved:
            raise AllocationInfeasible(f"cannot place {abs(remainder)} cent(s) within the bounds")
    return [int(c) / 100 for c in cents]


def inverse_cpa_weights(histories: Sequence[ChannelHistory]) -> dict[str, float]:
    """Conversions per unit spend; channels with no spend get the mean weight (no evidence either way)."""
    observed = {h.channel: h.lookback_conversions / h.lookback_spend for h in histories if h.lookback_spend > 0}
    neutral = float(np.mean(list(observed.values()))) if observed else 1.0
    return {h.channel: observed.get(h.channel, neutral) for h in histories}


def resolve_budget(histories: Sequence[ChannelHistory], guardrails: Guardrails, budget: float | None) -> float:
    """The day's budget: given, else `guardrails.total_budget`, else yesterday's total spend."""
    if not histories:
        raise AllocationInfeasible("no paid channels to allocate")
    total = budget if budget is not None else guardrails.total_budget
    if total is None:
        total = sum(h.yesterday_spend for h in histories)
        if total <= 0:
            raise AllocationInfeasible(
                "no budget: yesterday's spend is zero or missing (no spend file?); pass --spend with daily "
                "spend per channel or set [guardrails] total_budget")
    total = round(total, 2)
    if total <= 0:
        raise AllocationInfeasible(f"budget must be positive (got {total:,.2f})")
    return total


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
    bounds = channel_bounds(histories, total, guardrails)
    check_feasible(bounds, total)
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
    return Allocation("inverse_cpa", total, tuple(rows))


def _why(h: ChannelHistory, cpa: float | None, target: float, spend: float, b: ChannelBounds, bound: str | None,
         days: int) -> str:
    if h.lookback_spend <= 0:
        basis = f"no spend in the last {days} days: neutral weight"
    elif cpa is None:
        basis = f"{h.lookback_spend:,.2f} spent, no conversions in {days} days"
    else:
        basis = f"CPA {cpa:,.2f} over {days} days"
    held = {
        "min_share": "held up by its minimum share", "max_share": "held down by its maximum share",
        "max_daily_change": "limited by the maximum daily change", "cap": "held down by its cap",
        "zero": "at zero", "held": "held at yesterday's spend",
        "extrapolation": "held at 1.5x the most it ever spent (the curve is unproven beyond)",
    }
    if bound:
        tail = f"; {held[bound]} ({b.lower:,.2f}..{b.upper:,.2f})"
    elif target > 0 and abs(spend - target) >= 0.01:
        tail = f"; scaled x{spend / target:.2f} with the other unbound channels to fit the budget"
    else:
        tail = ""
    return f"{basis} -> target {target:,.2f}, proposed {spend:,.2f}{tail}"
