"""Curve allocation: fit a response curve per channel, then optimize tomorrow's split on them.

Guardrails are the same as for inverse CPA (min/max share, caps, max daily change, held
channels). Each row explains itself: spend vs yesterday, the marginal CPA at the new spend (what
the next conversion would cost), the average CPA, the binding guardrail, and the plan's expected
gain over keeping yesterday's split and over inverse CPA, all evaluated on the fitted curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from flashcast.budget.bounds import (
    check_channel_bounds,
    feasible_bounds,
    limit_extrapolation,
    resolve_budget,
)
from flashcast.budget.curves import Array, CurveFit, CurveSet, MeanCurves, ResponseCurve, fit_response_curve
from flashcast.budget.inverse_cpa import allocate_inverse_cpa
from flashcast.budget.optimizer import Problem, Solution, budget_for_target_cpa, optimize, round_solution
from flashcast.budget.records import Allocation, AllocationRow, ChannelBounds, ChannelHistory
from flashcast.config import AllocationConfig, Guardrails
from flashcast.errors import AllocationInfeasible


@dataclass(frozen=True)
class ChannelSeries:
    """A channel's daily history for curve fitting (oldest first)."""

    channel: str
    spend: Array
    outcome: Array  # conversions or revenue per day
    demand: Array | None = None  # demand multiplier per day (mean 1), e.g. from `demand_index(organic)`


@dataclass(frozen=True)
class CurvePlan:
    allocation: Allocation
    fits: dict[str, CurveFit]
    whatif: list[dict[str, float]]


def fit_channel_curves(series: Sequence[ChannelSeries], config: AllocationConfig, *, seed: int = 0) -> dict[
        str, CurveFit]:
    """One curve per channel, fitted per unit of demand when the series carries a demand index."""
    return {s.channel: fit_response_curve(s.spend, s.outcome if s.demand is None else s.outcome / s.demand,
                                          name=s.channel, n_boot=config.bootstrap_draws, seed=seed + i)
            for i, s in enumerate(series)}


def _problem(channels: list[str], curves: CurveSet | MeanCurves, bounds: dict[str, ChannelBounds]) -> Problem:
    n = len(channels)
    lower = np.array([bounds[c].lower for c in channels])
    upper = np.array([bounds[c].upper for c in channels])
    return Problem(curves, np.arange(n), lower, upper, tuple(channels), lower, upper,
                   tuple(bounds[c].lower_rule for c in channels), tuple(bounds[c].upper_rule for c in channels))


def _curves_for(fits: dict[str, CurveFit], channels: list[str], config: AllocationConfig) -> CurveSet | MeanCurves:
    point = CurveSet.from_curves(channels, [fits[c].curve for c in channels])
    n_draws = paired_draws([fits[c] for c in channels])
    if config.objective == "point" or n_draws < 2:
        return point
    draws = [CurveSet.from_curves(channels, [_draw(fits[c], d) for c in channels]) for d in range(n_draws)]
    if config.objective == "mean":
        return MeanCurves(tuple(draws))
    # Pessimistic: for each channel the draw whose response at yesterday's level sits at the quantile.
    chosen = []
    for c in channels:
        at = [float(d.response(max(fits[c].curve.k, 1.0))) for d in fits[c].draws]
        order = np.argsort(at)
        chosen.append(fits[c].draws[int(order[int(config.risk_quantile * (len(order) - 1))])])
    return CurveSet.from_curves(channels, chosen)


def paired_draws(fits: Sequence[CurveFit]) -> int:
    """How many joint draws the channels' bootstrap draws make, paired by index. A fallback curve has
    one draw, itself, which joins every draw: pairing by the fewest draws would have left one draw in
    all, and an interval of one draw (the point outside its own 80% interval)."""
    counts = [len(f.draws) for f in fits if len(f.draws) > 1]
    return min(counts) if counts else 1


def _draw(fit: CurveFit, d: int) -> ResponseCurve:
    return fit.draws[d] if len(fit.draws) > 1 else fit.draws[0]


def draws_total(fits: dict[str, CurveFit], spends: dict[str, float]) -> Array:
    """Total expected outcome under each joint draw (see `paired_draws`)."""
    n = paired_draws([fits[c] for c in spends])
    return np.array([sum(float(_draw(fits[c], d).response(x)) for c, x in spends.items()) for d in range(n)])


def allocate_by_curves(
    histories: Sequence[ChannelHistory],
    series: Sequence[ChannelSeries],
    guardrails: Guardrails,
    config: AllocationConfig,
    *,
    budget: float | None = None,
    fits: dict[str, CurveFit] | None = None,
    outcome: str | None = None,
) -> CurvePlan:
    """Fit (unless given) and optimize; the result carries per-channel explanations and a what-if sweep.
    `outcome`: what the curves predict, as the explanations name it (default: the config's KPI)."""
    channels = [h.channel for h in histories]
    total = resolve_budget(histories, guardrails, budget)
    fits = fits or fit_channel_curves(series, config)
    largest = {s.channel: float(np.max(s.spend)) for s in series if len(s.spend)}
    bounds, path_notes = _bounds(histories, largest, guardrails, config, total)
    problem = _problem(channels, _curves_for(fits, channels, config), bounds)
    target = config.target_cpa if config.target_cpa is not None else (
        1.0 / config.target_roas if config.target_roas is not None else None)
    spend_total = total
    notes = [*path_notes, *(w for c in channels for w in fits[c].warnings)]
    if target is not None:
        spend_total, solution = budget_for_target_cpa(problem, total, target, as_roas=config.target_cpa is None)
        if spend_total < total:
            notes.append(f"spending {spend_total:,.2f} of {total:,.2f} to meet the target "
                         f"{'CPA' if config.target_cpa else 'ROAS'}")
    solution = round_solution(problem, optimize(problem, spend_total), spend_total)
    point = CurveSet.from_curves(channels, [fits[c].curve for c in channels])
    expected, interval = _expected(fits, point, channels, solution)
    yesterday = np.array([h.yesterday_spend for h in histories])
    scaled_yesterday = yesterday * (spend_total / yesterday.sum()) if yesterday.sum() > 0 else yesterday
    inverse = allocate_inverse_cpa(histories, guardrails, budget=total)
    inverse_spend = np.array([inverse.spends[c] for c in channels])
    rows = _rows(histories, fits, bounds, solution, point, config, outcome)
    smallest = {s.channel: float(np.min(s.spend)) for s in series if len(s.spend)}
    notes += below_the_data({r.channel: r.spend for r in rows}, smallest)
    allocation = Allocation(
        method=f"curves/{config.objective}", budget=spend_total, rows=tuple(rows),
        expected_conversions=expected, expected_interval=interval,
        gain_vs_yesterday=round(expected - float(point.curve_response(scaled_yesterday).sum()), 3),
        gain_vs_inverse_cpa=round(expected - float(point.curve_response(inverse_spend).sum()), 3),
        notes=tuple(notes),
    )
    return CurvePlan(allocation, fits, whatif_sweep(histories, fits, largest, guardrails, config, total))


# A plan this far under a channel's smallest spend in the data is read off the curve below the data.
BELOW_SMALLEST = 0.9


def below_the_data(spends: dict[str, float], smallest: dict[str, float]) -> list[str]:
    """Notes naming the channels the plan puts well below the least they spent in the data (the
    curves' history), when that least is above zero (a channel always on). The data then show how
    the outcome moves with the channel's spend only over the range it ran in: what it brings below
    that, and the part of its effect that never varied, are the fitted curve's shape carried toward
    zero, not measured (a constant part cannot be told from the baseline or the intercept;
    docs/allocation.md has an example where the fitted curve stood 4-7 times above the truth there)."""
    notes = []
    for channel, spend in spends.items():
        least = smallest.get(channel, 0.0)
        if least > 0 and spend < BELOW_SMALLEST * least:
            notes.append(f"{channel}: the plan's {spend:,.2f} is below the least it spent in the data ({least:,.2f}); "
                         "what it brings there is the curve carried below the data, not measured (a test period at a "
                         "lower spend would show it)")
    return notes


def _bounds(histories: Sequence[ChannelHistory], largest: dict[str, float], guardrails: Guardrails,
            config: AllocationConfig, budget: float) -> tuple[dict[str, ChannelBounds], list[str]]:
    """The guardrails' bounds at `budget` (shares already broken as paths), curves' extrapolation
    limits; an extrapolation limit never keeps a channel below what inverse CPA would give it, so
    the plan can always reach the split it is measured against."""
    bounds, notes = feasible_bounds(histories, budget, guardrails)
    bounds = limit_extrapolation(bounds, largest, config.max_extrapolation, budget)
    stretched = {c: b.upper / largest[c] for c, b in bounds.items() if b.upper_rule == "extrapolation"
                 and b.upper > largest[c] * config.max_extrapolation + 0.01}
    if stretched:  # the limits gave way to hold the budget: say how far past the data the curves are read
        notes.append(f"the budget is more than the curves' limits hold ({config.max_extrapolation:g}x each channel's "
                     f"largest spend in the data): {', '.join(stretched)} may take up to "
                     f"{max(stretched.values()):,.1f}x {'its' if len(stretched) == 1 else 'their'} largest spend, "
                     "where a curve is extrapolated, not measured; the what-if shows where more money stops paying")
    if any(b.upper_rule == "extrapolation" for b in bounds.values()):
        inverse = allocate_inverse_cpa(histories, guardrails, budget=budget).spends
        bounds = {c: replace(b, upper=max(b.upper, inverse[c])) if b.upper_rule == "extrapolation" else b
                  for c, b in bounds.items()}
    check_channel_bounds(bounds, budget)
    return bounds, notes


def _expected(fits: dict[str, CurveFit], point: CurveSet, channels: list[str], solution: Solution
              ) -> tuple[float, tuple[float, float]]:
    """Expected outcome on the fitted curves at the (rounded) spends, and its 80% interval over the
    bootstrap draws: one way for the plan and every what-if row."""
    spends = dict(zip(channels, (float(x) for x in solution.channel_spend), strict=True))
    totals = draws_total(fits, spends)
    return (round(float(point.curve_response(solution.channel_spend).sum()), 3),
            (round(float(np.quantile(totals, 0.1)), 3), round(float(np.quantile(totals, 0.9)), 3)))


NO_CONVERSIONS = 0.0005  # expected conversions shown as 0.000
NO_RETURN = 1e-9  # conversions per unit of money: one per billion


def _rows(histories: Sequence[ChannelHistory], fits: dict[str, CurveFit], bounds: dict[str, ChannelBounds],
          solution: Solution, point: CurveSet, config: AllocationConfig, outcome: str | None = None
          ) -> list[AllocationRow]:
    rows = []
    marginal = point.curve_marginal(solution.channel_spend)
    response = point.curve_response(solution.channel_spend)
    unit = unit_of(outcome or config.kpi)
    for i, h in enumerate(histories):
        x = float(solution.channel_spend[i])
        b = bounds[h.channel]
        bound = solution.channel_bound[i]
        if bound is None and math.isclose(x, b.upper, abs_tol=0.005) and b.upper_rule != "zero":
            bound = b.upper_rule
        elif bound is None and math.isclose(x, b.lower, abs_tol=0.005) and b.lower > 0:
            bound = b.lower_rule
        # No cost per conversion where the curve expects none (a channel without a conversion in its
        # history gets a curve of height ~0): a cost in the billions would be read as a figure.
        mcpa = 1.0 / float(marginal[i]) if marginal[i] > NO_RETURN else None
        avg = x / float(response[i]) if response[i] >= NO_CONVERSIONS else None
        lo, hi = fits[h.channel].response_interval(x)
        fit = fits[h.channel]
        # A fallback curve says why it was needed (its first warning, less the channel's name).
        curve = (f"fallback curve ({fit.warnings[0].removeprefix(f'{h.channel}: ')})" if fit.fallback and fit.warnings
                 else "fallback curve" if fit.fallback else f"{fit.curve.form} curve")
        # no R^2 for a channel that never spent: no curve was fitted to its conversions
        fit_r2 = f" (R^2 {fit.diagnostics.r2:.2f})" if fit.diagnostics.active_days else ""
        why = (f"{curve}{fit_r2}; "
               f"next {unit} costs {'-' if mcpa is None else cost_text(mcpa)} at {x:,.2f}"
               + (f", average {cost_text(avg)}" if avg else "")
               + (f"; held by {bound} ({b.lower:,.2f}..{b.upper:,.2f})" if bound else
                  f"; its curve expects no {unit} from more spend" if mcpa is None else
                  "; marginal cost equalized with the other unbound channels"))
        rows.append(AllocationRow(
            channel=h.channel, yesterday_spend=round(h.yesterday_spend, 2), lookback_spend=round(h.lookback_spend, 2),
            conversions=h.lookback_conversions, cpa=None if avg is None else rounded_cost(avg),
            raw_weight=round(float(marginal[i]), 8), target_spend=round(x, 2), spend=round(x, 2),
            share=round(x / max(float(solution.channel_spend.sum()), 1e-9), 6),
            change=round(x - h.yesterday_spend, 2), lower=b.lower, upper=b.upper, bound=bound, why=why,
            marginal_cpa=None if mcpa is None else rounded_cost(mcpa),
            expected_conversions=round(float(response[i]), 3),
            expected_low=round(lo, 3), expected_high=round(hi, 3),
        ))
    return rows


def _next_conversion_cost(problem: Problem, sol: Solution) -> float:
    """What one more conversion would cost at this plan: the best marginal return among the lines
    that can still take money (below their own and their channel's upper limit), on the curves
    themselves, as each channel's row gives it (on an S-curve's rise it falls as the budget grows).
    Not the optimizer's multiplier, which is undetermined when every channel is held by a guardrail.
    Infinite when no line can take more, or none that can buys anything. Spends are rounded to
    cents: less than a cent of room is none."""
    _, channel_upper = problem.effective_channel_bounds()
    channel_room = sol.channel_spend < channel_upper - 0.01
    room = (sol.line_spend < problem.line_upper - 0.01) & channel_room[problem.line_channel]
    if not room.any():
        return math.inf
    best = float(np.max(problem.curves.curve_marginal(sol.line_spend)[room]))
    # Lines with room that return nothing (a channel with no measurable effect, held at its floor)
    # buy nothing: the next conversion has no price (it printed 4.3e30).
    return rounded_cost(1.0 / best) if best > NO_RETURN else math.inf


def rounded_cost(cost: float) -> float:
    """A cost per conversion to the cent, or to two significant digits under 0.10: spend in scaled
    units (a media-mix file's thousands, or 0-1) buys a unit of outcome for a fraction of a cent,
    which cents would show as a free 0.00."""
    return round(cost, 2) if cost >= 0.1 else float(f"{cost:.2g}")


def unit_of(outcome: str) -> str:
    """One unit of an outcome (the KPI, or a media-mix file's outcome column), as costs are given per it."""
    return "conversion" if outcome == "conversions" else f"unit of {outcome}"


def cost_text(cost: float) -> str:
    """A cost per conversion in words, rounded as `rounded_cost`."""
    return f"{cost:,.2f}" if cost >= 0.1 else f"{cost:.2g}"


def whatif_sweep(histories: Sequence[ChannelHistory], fits: dict[str, CurveFit], largest: dict[str, float],
                 guardrails: Guardrails, config: AllocationConfig, budget: float) -> list[dict[str, float]]:
    """Expected outcome (with an 80% interval) at several total budgets, each allocated as the plan
    is (every guardrail, yesterday's split scaled to that budget): where does extra money stop
    paying? At 1x the row is the plan itself (unless a target CPA/ROAS spends less)."""
    channels = [h.channel for h in histories]
    point = CurveSet.from_curves(channels, [fits[c].curve for c in channels])
    out = []
    for mult in config.whatif_multipliers:
        b = round(budget * mult, 2)
        try:
            bounds, _ = _bounds(histories, largest, guardrails, config, b)
        except AllocationInfeasible:
            continue  # this budget cannot be placed within the guardrails: no row
        problem = _problem(channels, _curves_for(fits, channels, config), bounds)
        sol = round_solution(problem, optimize(problem, b), b)
        expected, (low, high) = _expected(fits, point, channels, sol)
        out.append({"budget": b, "multiplier": mult, "expected": expected, "low": low, "high": high,
                    "marginal_cpa": _next_conversion_cost(problem, sol),
                    **{f"spend_{c}": round(float(x), 2) for c, x in zip(channels, sol.channel_spend, strict=True)}})
    return out
