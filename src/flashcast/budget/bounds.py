"""The day's budget, each channel's bounds from the guardrails, one feasibility check, cent rounding.

Bounds per channel: min/max share of the budget, an absolute cap, the largest move allowed versus
yesterday (max_daily_change x yesterday's spend, but never less than min_daily_move_share x budget,
so a paused channel can restart), held channels, and, for fitted curves, how far beyond the largest
spend ever seen a curve is trusted (`extrapolation`).

When the budget differs from yesterday's total, the daily moves are measured from yesterday's split
scaled to today's budget, so a bigger or smaller budget never makes the daily-change guardrail
infeasible. A share guardrail that yesterday's split already breaks is a path to move along, not a
wall: the channel moves toward it as fast as the other guardrails allow, and the plan says so.
Curves' extrapolation limits give way too before the budget would become unplaceable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from flashcast.budget.records import ChannelBounds, ChannelHistory
from flashcast.config import Guardrails
from flashcast.errors import AllocationInfeasible


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
    if round(total, 2) <= 0:  # spends are placed to the cent
        raise AllocationInfeasible(f"budget must be positive (got {total:,.2f})" if total <= 0 else
                                   f"budget must be at least one cent (got {total:g})")
    total = round(total, 2)
    return total


def reference_spend(histories: Sequence[ChannelHistory], budget: float, held: Sequence[str] = ()
                    ) -> dict[str, float]:
    """Yesterday's split scaled to today's budget (held channels keep yesterday's spend, the others
    share the rest): what the daily moves are measured from."""
    fixed = sum(h.yesterday_spend for h in histories if h.channel in held)
    total = sum(h.yesterday_spend for h in histories) - fixed
    scale = (budget - fixed) / total if total > 0 and abs(budget - fixed - total) >= 0.005 else 1.0  # cents
    return {h.channel: h.yesterday_spend * (1.0 if h.channel in held else max(scale, 0.0)) for h in histories}


def channel_bounds(
    histories: Sequence[ChannelHistory], budget: float, guardrails: Guardrails
) -> dict[str, ChannelBounds]:
    """Each channel's [lower, upper] spend, in cents, and the rule behind each side, exactly as the
    guardrails say (see `feasible_bounds` for the bounds the allocators use)."""
    reference = reference_spend(histories, budget, guardrails.hold)
    out = {}
    for h in histories:
        ref = reference[h.channel]
        move = max(guardrails.max_daily_change * ref, guardrails.min_daily_move_share * budget)
        lowers = [(0.0, "zero"), (guardrails.min_share.get(h.channel, 0.0) * budget, "min_share")]
        # without a maximum share of its own, a channel's ceiling is the budget itself
        uppers = [(guardrails.max_share[h.channel] * budget, "max_share") if h.channel in guardrails.max_share
                  else (budget, "budget")]
        if h.channel in guardrails.hold:  # exactly yesterday's spend: no move to pace
            lowers.append((h.yesterday_spend, "held"))
            uppers.append((h.yesterday_spend, "held"))
        else:
            lowers.append((ref - move, "max_daily_change"))
            uppers.append((ref + move, "max_daily_change"))
        if h.channel in guardrails.caps:
            uppers.append((guardrails.caps[h.channel], "cap"))
        lo, lo_rule = max(lowers, key=lambda x: x[0])
        hi, hi_rule = min(uppers, key=lambda x: x[0])
        if lo_rule == "max_daily_change" and lo > hi and hi_rule in ("cap", "held"):
            lo, lo_rule = hi, hi_rule  # an absolute limit wins over the pace of a move
        out[h.channel] = ChannelBounds(_up_to_cent(lo), _down_to_cent(hi), lo_rule, hi_rule)
    return out


def _up_to_cent(x: float) -> float:
    return math.ceil(round(x * 100, 6)) / 100


def _down_to_cent(x: float) -> float:
    return math.floor(round(x * 100, 6)) / 100


def feasible_bounds(histories: Sequence[ChannelHistory], budget: float, guardrails: Guardrails
                    ) -> tuple[dict[str, ChannelBounds], list[str]]:
    """`channel_bounds`, with share guardrails that yesterday's split already breaks turned into a
    path: such a channel moves toward its share as fast as its daily change allows, and further
    only as far as the budget needs. Returns the bounds and a note per relaxed guardrail."""
    bounds = channel_bounds(histories, budget, guardrails)
    reference = reference_spend(histories, budget, guardrails.hold)
    broken_max = {c for c, b in bounds.items() if b.upper_rule == "max_share" and reference[c] > b.upper + 0.005}
    broken_min = {c for c, b in bounds.items() if b.lower_rule == "min_share" and reference[c] < b.lower - 0.005}
    out = dict(bounds)
    for c in broken_max:  # never force a faster move than the daily change allows (caps still hold)
        out[c] = replace(out[c], upper=min(max(out[c].upper, out[c].lower), guardrails.caps.get(c, math.inf)))
    for c in broken_min:
        out[c] = replace(out[c], lower=min(out[c].lower, out[c].upper))
    out = _spread_upper(out, {c: min(reference[c], guardrails.caps.get(c, math.inf)) for c in broken_max}, budget)
    excess = sum(b.lower for b in out.values()) - budget
    room = {c: max(out[c].lower - reference[c], 0.0) for c in broken_min}
    if excess > 1e-9 and sum(room.values()) > 0:
        share = min(excess / sum(room.values()), 1.0)
        for c, r in room.items():
            out[c] = replace(out[c], lower=_down_to_cent(out[c].lower - r * share))
    notes = []
    for c in sorted(broken_max | broken_min):
        b, ref_share = out[c], reference[c] / budget
        if c in broken_max and b.upper > bounds[c].upper:
            notes.append(f"{c} spent {ref_share:.1%} of the budget yesterday, above its maximum share "
                         f"{guardrails.max_share[c]:.0%}: allowed up to {b.upper / budget:.1%} today, moving toward it")
        if c in broken_min and b.lower < bounds[c].lower:
            notes.append(f"{c} spent {ref_share:.1%} of the budget yesterday, below its minimum share "
                         f"{guardrails.min_share[c]:.0%}: at least {b.lower / budget:.1%} today, moving toward it")
    return out, notes


def _spread_upper(bounds: dict[str, ChannelBounds], ceilings: dict[str, float], budget: float
                  ) -> dict[str, ChannelBounds]:
    """Raise the uppers of `ceilings`' channels toward those ceilings, in proportion to their room,
    just enough for the uppers to hold the budget (no more)."""
    shortfall = budget - sum(b.upper for b in bounds.values())
    room = {c: max(ceilings[c] - bounds[c].upper, 0.0) for c in ceilings}
    total_room = sum(room.values())
    if shortfall <= 1e-9 or total_room <= 0:
        return bounds
    share = min(shortfall / total_room, 1.0)
    out = dict(bounds)
    for c, r in room.items():
        out[c] = replace(out[c], upper=min(_up_to_cent(out[c].upper + r * share), _down_to_cent(ceilings[c])))
    return out


def limit_extrapolation(bounds: dict[str, ChannelBounds], largest_spend: dict[str, float],
                        max_extrapolation: float, budget: float) -> dict[str, ChannelBounds]:
    """Cap each channel at `max_extrapolation` x the largest daily spend its curve was fitted on
    (bound 'extrapolation'), where that is tighter than its other bounds and still feasible. Where
    the caps leave less room than the budget needs, they give way evenly: every capped channel to
    the same larger multiple of its largest spend (up to its other bounds), just enough to hold the
    budget, so that no curve is extrapolated further than the others."""
    out = dict(bounds)
    for channel, seen in largest_spend.items():
        b = bounds.get(channel)
        limit = math.floor(seen * max_extrapolation * 100) / 100
        if b is not None and seen > 0 and limit < b.upper and limit >= b.lower:
            out[channel] = ChannelBounds(b.lower, limit, b.lower_rule, "extrapolation")
    limited = [c for c, b in out.items() if b.upper_rule == "extrapolation"]
    shortfall = budget - sum(b.upper for b in out.values())
    if shortfall <= 1e-9 or not limited:
        return out
    others = sum(b.upper for c, b in out.items() if c not in limited)

    def room(multiple: float) -> float:
        return others + sum(min(bounds[c].upper, multiple * largest_spend[c]) for c in limited)

    low, high = max_extrapolation, max(bounds[c].upper / largest_spend[c] for c in limited)
    if room(high) < budget:  # even the other bounds cannot hold it: they decide (and report) that
        low = high
    for _ in range(100):  # bisection on the common multiple: room() is increasing in it
        if high - low <= 1e-12 * high:
            break
        middle = (low + high) / 2
        low, high = (middle, high) if room(middle) < budget else (low, middle)
    for c in limited:
        out[c] = replace(out[c], upper=min(_up_to_cent(high * largest_spend[c]), _down_to_cent(bounds[c].upper)))
    return out


def check_feasible(names: Sequence[str], lower: np.ndarray, upper: np.ndarray, budget: float, *,
                   lower_rules: Sequence[str] = (), upper_rules: Sequence[str] = ()) -> None:
    """Raise AllocationInfeasible naming the bounds that cannot all hold for `budget`, and the
    smallest change that would make them hold."""
    def rule(rules: Sequence[str], i: int) -> str:
        return f" ({rules[i]})" if rules else ""

    crossed = [f"{names[i]}: lower {lower[i]:,.2f}{rule(lower_rules, i)} > upper {upper[i]:,.2f}"
               f"{rule(upper_rules, i)}; move one of them by {lower[i] - upper[i]:,.2f}"
               for i in range(len(names)) if lower[i] > upper[i] + 1e-9]
    if crossed:
        raise AllocationInfeasible("guardrails cross for " + "; ".join(crossed), conflicts=tuple(crossed))
    low, high = float(np.sum(lower)), float(np.sum(upper))
    if low > budget + 1e-9:
        parts = tuple(f"{names[i]} {lower[i]:,.2f}{rule(lower_rules, i)}" for i in range(len(names)) if lower[i] > 0)
        raise AllocationInfeasible(
            f"lower bounds add to {low:,.2f}, more than the budget {budget:,.2f}: " + ", ".join(parts)
            + f"; raise the budget or lower these bounds by {low - budget:,.2f} in total",
            conflicts=parts, shortfall=round(low - budget, 2))
    if high < budget - 1e-9:
        parts = tuple(f"{names[i]} {upper[i]:,.2f}{rule(upper_rules, i)}" for i in range(len(names)))
        raise AllocationInfeasible(
            f"upper bounds add to {high:,.2f}, less than the budget {budget:,.2f}: " + ", ".join(parts)
            + f"; lower the budget or raise these bounds by {budget - high:,.2f} in total",
            conflicts=parts, shortfall=round(budget - high, 2))


def check_channel_bounds(bounds: dict[str, ChannelBounds], budget: float) -> None:
    """`check_feasible` on per-channel bounds, naming the rule behind each."""
    names = list(bounds)
    check_feasible(names, np.array([bounds[c].lower for c in names]), np.array([bounds[c].upper for c in names]),
                   budget, lower_rules=[bounds[c].lower_rule for c in names],
                   upper_rules=[bounds[c].upper_rule for c in names])


def round_to_cents(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float) -> list[float]:
    """Round to cents, keep every bound, and make the cents add up to `total` exactly."""
    cents = np.floor(np.round(x * 100, 6)).astype(np.int64)
    lo_c, hi_c = np.round(lower * 100).astype(np.int64), np.round(upper * 100).astype(np.int64)
    cents = np.clip(cents, lo_c, hi_c)
    remainder = round(total * 100) - int(cents.sum())
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


def explain_bound(rule: str, *, max_extrapolation: float | None = None) -> str:
    """What holding a channel at `rule` means, in words."""
    beyond = f"{max_extrapolation:g}x " if max_extrapolation else "the allowed multiple of "
    return {
        "min_share": "held up by its minimum share", "max_share": "held down by its maximum share",
        "budget": "takes the whole budget",
        "max_daily_change": "limited by the maximum daily change", "cap": "held down by its cap",
        "zero": "at zero", "held": "held at yesterday's spend",
        "extrapolation": f"held at {beyond}the most it ever spent (the curve is unproven beyond)",
    }.get(rule, f"held by {rule}")
