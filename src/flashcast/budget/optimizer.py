"""The budget optimizer: maximize expected conversions over response curves, exactly.

For separable concave curves the optimum equalizes marginal returns (KKT): every line strictly
inside its bounds has r_i'(x_i) = lambda; a line at its lower bound has r_i' <= lambda, at its
upper bound r_i' >= lambda. Channel guardrails bound sums of lines, which adds one multiplier per
channel: a channel held at a bound equalizes its own lines at lambda_c instead of lambda.

The solver finds lambda by a monotone root search on the total spend, each line's spend at a given
multiplier where its (non-increasing) marginal return meets it (in closed form or by Newton steps,
vectorized; averaged bootstrap draws by bisection), and the multiplier of each bound channel by the
same search on that channel alone. No general-purpose solver is involved, so it cannot stall or
return an even split on failure; `kkt_violations` checks the result. 100,000 lines solve in
seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from scipy.optimize import brentq

from flashcast.budget.bounds import check_feasible, round_to_cents
from flashcast.budget.curves import Array
from flashcast.errors import AllocationInfeasible

Marginal = Callable[[Array], Array]


class Curves(Protocol):
    """What the optimizer needs from a set of line curves (CurveSet, MeanCurves)."""

    @property
    def tangent(self) -> Array: ...

    def within(self, upper: Array) -> Curves: ...

    @property
    def draw_count(self) -> int: ...

    def curve_response(self, x: Array) -> Array: ...

    def curve_marginal(self, x: Array) -> Array: ...

    def response(self, x: Array) -> Array: ...

    def marginal(self, x: Array) -> Array: ...

    def spend_at(self, lam: float, lower: Array, upper: Array) -> Array: ...

    def subset(self, idx: np.ndarray) -> Curves: ...


@dataclass(frozen=True)
class Problem:
    """Lines with curves and bounds, grouped into channels with bounds on their totals."""

    curves: Curves
    line_channel: np.ndarray  # channel index of each line
    line_lower: Array
    line_upper: Array
    channel_names: tuple[str, ...]
    channel_lower: Array
    channel_upper: Array
    channel_lower_rule: tuple[str, ...] = ()
    channel_upper_rule: tuple[str, ...] = ()

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    def effective_channel_bounds(self) -> tuple[Array, Array]:
        lo_lines = np.asarray(np.bincount(self.line_channel, self.line_lower, minlength=self.n_channels), dtype=float)
        hi_lines = np.asarray(np.bincount(self.line_channel, self.line_upper, minlength=self.n_channels), dtype=float)
        return np.maximum(self.channel_lower, lo_lines), np.minimum(self.channel_upper, hi_lines)


@dataclass(frozen=True)
class Solution:
    line_spend: Array
    channel_spend: Array
    multiplier: float  # marginal conversions per unit of spend at the optimum (unbound channels)
    channel_multiplier: Array
    channel_bound: tuple[str | None, ...]
    expected: float  # sum of line responses at the solution


def _lambda_bracket(marginal: Marginal, lower: Array, upper: Array) -> tuple[float, float]:
    top = float(np.max(marginal(lower))) if len(lower) else 1.0
    bottom = float(np.min(marginal(upper))) if len(upper) else 0.0
    return max(bottom, 1e-300) * 0.5, max(top, 1e-300) * 2.0


def _solve_lambda(total_at: Callable[[float], float], target: float, lam_lo: float, lam_hi: float) -> float:
    """Root of total_at(lam) = target; total_at is non-increasing in lam. Searched in log space."""
    if total_at(lam_lo) <= target + 1e-9:
        return lam_lo
    if total_at(lam_hi) >= target - 1e-9:
        return lam_hi
    return float(np.exp(brentq(lambda u: total_at(float(np.exp(u))) - target, np.log(lam_lo), np.log(lam_hi),
                               xtol=1e-13, rtol=1e-13, maxiter=200)))


def check_feasible_problem(problem: Problem, budget: float) -> tuple[Array, Array]:
    """Effective channel bounds, or AllocationInfeasible naming what conflicts and by how much."""
    lo, hi = problem.effective_channel_bounds()
    check_feasible(problem.channel_names, lo, hi, budget, lower_rules=problem.channel_lower_rule,
                   upper_rules=problem.channel_upper_rule)
    return lo, hi


MAX_ENUMERATED = 6  # S-shaped lines whose on/off states are all tried (2^6 = 64 concave solves)
MAX_POLISHED = 40  # problems up to this many lines get a local nonlinear polish on the true curves
POLISH_STARTS = 3  # ... started from this many of the best on/off states


def optimize(problem: Problem, budget: float) -> Solution:
    """Maximize total response for `budget` under line and channel bounds, exactly for concave curves
    and for up to MAX_ENUMERATED S-shaped lines, by local search beyond.

    An S-curve is convex on its foot (below its tangent point) and concave above it, so at an optimum
    each S-shaped line is either at its lower bound ("off"), at its upper bound when that is still on
    the foot, or above its tangent point ("on", where it is concave). The relaxed problem on the
    concave envelope can land on the foot's flat chord, half-spending a line; so every on/off state
    of the S-shaped lines is solved as a concave problem and the state that buys the most on the true
    curves wins."""
    problem = replace(problem, curves=problem.curves.within(problem.line_upper))
    relaxed = _optimize_envelope(problem, budget)
    tangent = np.asarray(problem.curves.tangent, dtype=float)
    footed = np.where(tangent > problem.line_lower + 1e-9)[0]
    if not len(footed):
        return relaxed
    # Averaged draws (objective "mean") cost a draw count per evaluation: their states are searched
    # locally and polished from the best only.
    thorough = problem.curves.draw_count == 1
    states = _best_states(problem, budget, relaxed, footed, tangent,
                          enumerate_up_to=MAX_ENUMERATED if thorough else 0)
    if len(problem.line_lower) > MAX_POLISHED:
        return states[0]
    # With a concave line beside it, the best point can also lie on an S-curve's foot (at most one
    # line there): a local solver on the true curves finds it, started from the best few states
    # (from one alone it can stay at a vertex where the foot's marginal is ~0).
    starts = states[:POLISH_STARTS] if thorough else states[:1]
    if thorough:
        starts += _residual_starts(problem, budget, footed, tangent)[:POLISH_STARTS]
    polished = [_polish(problem, budget, start) for start in starts]
    return max(polished, key=lambda solution: solution.expected)


def _solve_within(problem: Problem, budget: float, lower: Array, upper: Array) -> Solution | None:
    """The envelope solution with the lines held within `lower`..`upper`, valued on the true curves;
    None when those bounds cannot place the budget (or the solve does not spend it exactly, as can
    happen near a jump)."""
    try:
        solution = _optimize_envelope(replace(problem, line_lower=lower, line_upper=upper), budget)
    except AllocationInfeasible:
        return None
    if abs(float(solution.line_spend.sum()) - budget) > 1e-6 * max(1.0, budget):
        return None
    return replace(solution, expected=float(problem.curves.curve_response(solution.line_spend).sum()))


def _residual_starts(problem: Problem, budget: float, footed: np.ndarray, tangent: Array) -> list[Solution]:
    """Starts with one S-shaped line part-way up its foot (the others solved around it), best first:
    an optimum can hold one line there, taking what the concave lines leave, where its rising
    marginal meets theirs; a local solver reaches it only from nearby."""
    starts = []
    for i in footed:
        top = min(float(problem.line_upper[i]), float(tangent[i]))
        best: Solution | None = None
        for share in (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6):
            fixed = problem.line_lower[i] + share * (top - problem.line_lower[i])
            lower, upper = problem.line_lower.copy(), problem.line_upper.copy()
            lower[i] = upper[i] = fixed
            candidate = _solve_within(problem, budget, lower, upper)
            if candidate is not None and (best is None or candidate.expected > best.expected):
                best = candidate
        if best is not None:
            starts.append(best)
    return sorted(starts, key=lambda solution: -solution.expected)


def _best_states(problem: Problem, budget: float, relaxed: Solution, footed: np.ndarray, tangent: Array, *,
                 enumerate_up_to: int = MAX_ENUMERATED) -> list[Solution]:
    """Solutions of the on/off states tried, best first (on the true curves)."""
    best_value = float(problem.curves.curve_response(relaxed.line_spend).sum())
    found = [replace(relaxed, expected=best_value)]

    def solve(state: dict[int, bool]) -> None:
        nonlocal best_value
        lower, upper = problem.line_lower.copy(), problem.line_upper.copy()
        for i, on in state.items():
            if not on:
                upper[i] = lower[i]
            elif tangent[i] < upper[i]:
                lower[i] = max(lower[i], tangent[i])
            else:
                lower[i] = upper[i]  # the whole range is foot: its best "on" is the top of it
        candidate = _solve_within(problem, budget, lower, upper)
        if candidate is not None:
            found.append(candidate)
            best_value = max(best_value, candidate.expected)

    lines = [int(i) for i in footed]
    if len(lines) <= enumerate_up_to:
        for states in itertools.product((False, True), repeat=len(lines)):
            solve(dict(zip(lines, states, strict=True)))
    else:  # local search from the relaxed solution: flip one line at a time while it pays
        state = {i: bool(relaxed.line_spend[i] >= tangent[i] / 2) for i in lines}
        for _ in range(3):
            improved = False
            for i in lines:
                before = best_value
                solve({**state, i: not state[i]})
                if best_value > before:
                    state[i], improved = not state[i], True
            if not improved:
                break
    return sorted(found, key=lambda solution: -solution.expected)


def _polish(problem: Problem, budget: float, start: Solution) -> Solution:
    """SLSQP on the true curves from `start`, within every bound; kept only when feasible and better."""
    from scipy.optimize import minimize

    curves, chan, n_ch = problem.curves, problem.line_channel, problem.n_channels
    eff_lo, eff_hi = problem.effective_channel_bounds()
    member = np.array([(chan == c).astype(float) for c in range(n_ch)])
    constraints = [{"type": "eq", "fun": lambda x: np.array([x.sum() - budget]),
                    "jac": lambda x: np.ones((1, len(x)))},
                   {"type": "ineq", "fun": lambda x: np.concatenate([member @ x - eff_lo, eff_hi - member @ x]),
                    "jac": lambda x: np.vstack([member, -member])}]
    scale = max(float(curves.curve_response(start.line_spend).sum()), 1e-12)
    result = minimize(lambda x: -float(curves.curve_response(x).sum()) / scale, start.line_spend,
                      jac=lambda x: -curves.curve_marginal(x) / scale, method="SLSQP",
                      bounds=list(zip(problem.line_lower, problem.line_upper, strict=True)),
                      constraints=constraints, options={"ftol": 1e-12, "maxiter": 200})
    x = np.clip(result.x, problem.line_lower, problem.line_upper)
    totals = member @ x
    feasible = (abs(float(x.sum()) - budget) <= 1e-6 and bool(np.all(totals >= eff_lo - 1e-6))
                and bool(np.all(totals <= eff_hi + 1e-6)))
    value = float(curves.curve_response(x).sum())
    if not feasible or value <= start.expected * (1 + 1e-12) + 1e-15:
        return start
    x[int(np.argmax(np.minimum(x - problem.line_lower, problem.line_upper - x)))] += budget - float(x.sum())
    return replace(start, line_spend=x, channel_spend=member @ x, expected=float(curves.curve_response(x).sum()))


def _optimize_envelope(problem: Problem, budget: float) -> Solution:
    """Maximize total response on the curves' concave envelope (exact: equal marginal returns)."""
    eff_lo, eff_hi = check_feasible_problem(problem, budget)
    curves, m = problem.curves, problem.curves.marginal
    lines_lo, lines_hi, chan = problem.line_lower, problem.line_upper, problem.line_channel
    n_ch = problem.n_channels

    def channel_sums(lam: float) -> Array:
        return np.asarray(np.bincount(chan, curves.spend_at(lam, lines_lo, lines_hi), minlength=n_ch), dtype=float)

    def total_at(lam: float) -> float:
        return float(np.clip(channel_sums(lam), eff_lo, eff_hi).sum())

    lam_lo, lam_hi = _lambda_bracket(m, lines_lo, lines_hi)
    lam = _solve_lambda(total_at, budget, lam_lo, lam_hi)
    sums = channel_sums(lam)
    x = np.empty(len(lines_lo))
    channel_lam = np.full(n_ch, lam)
    bound: list[str | None] = [None] * n_ch
    for c in range(n_ch):
        idx = np.where(chan == c)[0]
        if not len(idx):
            continue
        lo_c, hi_c = lines_lo[idx], lines_hi[idx]
        curves_c = problem.curves.subset(idx)
        if eff_lo[c] - 1e-9 <= sums[c] <= eff_hi[c] + 1e-9:
            x[idx] = curves_c.spend_at(lam, lo_c, hi_c)
            continue
        # A channel held at a bound equalizes its own lines at its own multiplier.
        goal = float(eff_lo[c] if sums[c] < eff_lo[c] else eff_hi[c])
        x[idx], channel_lam[c] = _solve_channel(curves_c, goal, lo_c, hi_c)
        if sums[c] < eff_lo[c]:
            bound[c] = problem.channel_lower_rule[c] if problem.channel_lower_rule else "lower"
        else:
            bound[c] = problem.channel_upper_rule[c] if problem.channel_upper_rule else "upper"
    unbound = np.array([bound[c] is None for c in chan])
    # On an S-curve's flat chord any spend is as good as any other, so the total jumps across the
    # multiplier: the lines on the flat part at this multiplier take what is left, up to their room.
    residue = budget - float(x.sum())
    if abs(residue) > 1e-7:
        tangent = problem.curves.tangent
        on_chord = (tangent > lines_lo) & (x <= tangent * (1 + 1e-12))  # the top of a foot is on it too
        chord = m(np.minimum(x, tangent * (1 - 1e-9)))
        flat = np.where(unbound & on_chord & (np.abs(chord - lam) <= 1e-6 * max(lam, 1e-12)))[0]
        room = (lines_hi - x)[flat] if residue > 0 else (x - lines_lo)[flat]
        if len(flat) and room.sum() > 0:
            x[flat] += np.sign(residue) * room * min(abs(residue) / float(room.sum()), 1.0)
            residue = budget - float(x.sum())
    # The multiplier is found to floating precision: put the last residue on one interior line of an
    # unbound channel (a shift of ~1e-9 that changes no marginal measurably).
    movable = np.where((x > lines_lo) & (x < lines_hi) & unbound)[0]
    if residue != 0 and len(movable):
        # The line deepest inside its bounds: a tiny shift there changes its marginal least.
        depth = np.minimum(x - lines_lo, lines_hi - x)[movable]
        j = movable[int(np.argmax(depth))]
        x[j] = float(np.clip(x[j] + residue, lines_lo[j], lines_hi[j]))
    expected = float(problem.curves.curve_response(x).sum())
    totals = np.asarray(np.bincount(chan, x, minlength=n_ch), dtype=float)
    return Solution(x, totals, lam, channel_lam, tuple(bound), expected)


def _solve_channel(curves: Curves, goal: float, lower: Array, upper: Array) -> tuple[Array, float]:
    """Lines of one channel whose total is fixed at `goal`: equalize them at their own multiplier."""
    c_lo, c_hi = _lambda_bracket(curves.marginal, lower, upper)
    lam = _solve_lambda(lambda g: float(curves.spend_at(g, lower, upper).sum()), goal, c_lo, c_hi)
    x = curves.spend_at(lam, lower, upper)
    return x + _spread(goal - float(x.sum()), x, lower, upper), lam  # absorb float residue in interior lines


def _spread(amount: float, x: Array, lower: Array, upper: Array) -> Array:
    """Move `amount` (a float residue) onto interior lines, in proportion to their room, so that
    lines sitting exactly on a bound stay there (the KKT classification relies on it)."""
    interior = (x > lower) & (x < upper)
    room = np.where(interior, (upper - x) if amount > 0 else (x - lower), 0.0)
    total = float(room.sum())
    if total <= 0 or amount == 0:
        return np.zeros_like(x)
    return np.asarray(np.sign(amount) * room * min(abs(amount) / total, 1.0))


def round_solution(problem: Problem, solution: Solution, budget: float) -> Solution:
    """Cents: channel totals first (summing to the budget), then lines within each channel."""
    eff_lo, eff_hi = problem.effective_channel_bounds()
    lo_c = np.ceil(np.round(eff_lo * 100, 6)) / 100
    hi_c = np.floor(np.round(eff_hi * 100, 6)) / 100
    channels = np.array(round_to_cents(solution.channel_spend, lo_c, hi_c, budget))
    lines = solution.line_spend.copy()
    for c in range(problem.n_channels):
        idx = np.where(problem.line_channel == c)[0]
        if len(idx):
            lo_l = np.ceil(np.round(problem.line_lower[idx] * 100, 6)) / 100
            hi_l = np.floor(np.round(problem.line_upper[idx] * 100, 6)) / 100
            lines[idx] = round_to_cents(solution.line_spend[idx], lo_l, hi_l, float(channels[c]))
    expected = float(problem.curves.curve_response(lines).sum())
    return Solution(lines, channels, solution.multiplier, solution.channel_multiplier, solution.channel_bound,
                    expected)


def kkt_violations(problem: Problem, solution: Solution, *, rtol: float = 1e-4) -> list[str]:
    """Empty when every line satisfies the KKT conditions at its channel's multiplier. An S-shaped
    line off, on its foot or at its tangent point is left out: its state was chosen by comparing
    solutions, which is the optimality condition there (the problem is not concave)."""
    problems = []
    d = problem.curves.marginal(solution.line_spend)
    # An interior line is right when its marginal crosses the multiplier within a nano-unit of
    # spend: a Hill curve with slope < 1 has an infinite marginal at zero, so its optimum can sit at
    # 1e-11 where the marginal moves by percent per 1e-11.
    step = 1e-9 * np.maximum(1.0, np.where(np.isfinite(problem.line_upper), problem.line_upper, solution.line_spend))
    d_right = problem.curves.marginal(np.minimum(solution.line_spend + step, problem.line_upper))
    d_left = problem.curves.marginal(np.maximum(solution.line_spend - step, problem.line_lower))
    tangent = problem.curves.tangent
    for i, (x, lo, hi) in enumerate(zip(solution.line_spend, problem.line_lower, problem.line_upper, strict=True)):
        if tangent[i] > lo + 1e-9 and x <= tangent[i] * (1 + 1e-9) + 1e-9:
            continue
        lam = solution.channel_multiplier[problem.line_channel[i]]
        tol = rtol * max(lam, 1e-12) + 1e-12
        # The solver puts bound lines exactly on their bound; anything else is interior (a line with
        # a steep marginal near zero may sit at a tiny positive spend).
        if x <= lo + 1e-12:
            if d[i] > lam + tol:
                problems.append(f"line {i} at its lower bound but its marginal {d[i]:.6g} > {lam:.6g}")
        elif x >= hi - 1e-12:
            if d[i] < lam - tol:
                problems.append(f"line {i} at its upper bound but its marginal {d[i]:.6g} < {lam:.6g}")
        elif (d_right[i] > lam + tol or d_left[i] < lam - tol) and not (x < problem.curves.tangent[i]):
            problems.append(f"line {i} interior but its marginal {d[i]:.6g} != {lam:.6g}")
    return problems


def budget_for_target_cpa(problem: Problem, budget: float, target_cpa: float, *,
                          as_roas: bool = False) -> tuple[float, Solution]:
    """The largest spend up to `budget` whose average CPA meets `target_cpa` (and its solution).
    `as_roas`: the target is a ROAS (revenue over spend, 1 / `target_cpa`), and its error says so.

    With concave curves, average CPA rises with spend, so this is a root search on the budget.
    """
    full = optimize(problem, budget)
    if full.expected > 0 and budget / full.expected <= target_cpa:
        return budget, full
    eff_lo, _ = problem.effective_channel_bounds()
    floor = float(eff_lo.sum())
    low = optimize(problem, max(floor, 0.01))
    if low.expected <= 0 or max(floor, 0.01) / low.expected > target_cpa:
        best = max(floor, 0.01) / low.expected if low.expected > 0 else float("inf")
        if as_roas:
            raise AllocationInfeasible(
                f"target ROAS {1 / target_cpa:,.2f} cannot be met: even the minimum spend {floor:,.2f} returns "
                f"{1 / best:,.2f} per unit of spend; lower the target or the channel minimums")
        raise AllocationInfeasible(
            f"target CPA {target_cpa:,.2f} cannot be met: even the minimum spend {floor:,.2f} costs {best:,.2f} "
            "per conversion; raise the target or lower the channel minimums")
    spend = brentq(lambda b: b / optimize(problem, b).expected - target_cpa, max(floor, 0.01), budget, xtol=0.005)
    spend = float(np.floor(spend * 100) / 100)
    return spend, optimize(problem, spend)
