"""The curve optimizer: exact (KKT), equal to SLSQP on concave problems, guardrails kept, errors named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from flashcast.budget.curves import CurveSet, ResponseCurve, bisect_spend
from flashcast.budget.inverse_cpa import allocate_inverse_cpa
from flashcast.budget.optimizer import Problem, budget_for_target_cpa, kkt_violations, optimize, round_solution
from flashcast.budget.plan import ChannelSeries, allocate_by_curves
from flashcast.budget.records import ChannelHistory
from flashcast.config import AllocationConfig, Guardrails
from flashcast.errors import AllocationInfeasible

CHANNELS = ("Display", "CTV", "PPC", "Email")


def _curve(draw: st.DrawFn) -> ResponseCurve:
    decay = draw(st.floats(0.0, 0.7))
    if draw(st.booleans()):
        return ResponseCurve("exponential", draw(st.floats(1, 60)), draw(st.floats(50, 3000)), 1.0, decay)
    return ResponseCurve("hill", draw(st.floats(1, 60)), draw(st.floats(50, 3000)), draw(st.floats(0.3, 1.0)), decay)


@st.composite
def problems(draw: st.DrawFn) -> tuple[Problem, float]:
    n_lines = draw(st.integers(2, 7))
    n_ch = draw(st.integers(1, min(3, n_lines)))
    curves = [_curve(draw) for _ in range(n_lines)]
    channel = np.array([i % n_ch for i in range(n_lines)])
    line_hi = np.array([draw(st.floats(200, 4000)) for _ in range(n_lines)])
    ch_hi = np.array([draw(st.floats(300, 8000)) for _ in range(n_ch)])
    ch_lo = np.array([draw(st.floats(0, 150)) for _ in range(n_ch)])
    problem = Problem(CurveSet.from_curves([f"l{i}" for i in range(n_lines)], curves), channel, np.zeros(n_lines),
                      line_hi, tuple(f"c{i}" for i in range(n_ch)), ch_lo, ch_hi)
    lo, hi = problem.effective_channel_bounds()
    budget = draw(st.floats(float(lo.sum()) + 1, max(float(hi.sum()), float(lo.sum()) + 2)))
    return problem, min(budget, float(hi.sum()))


def _slsqp(problem: Problem, budget: float, *starts: np.ndarray) -> float:
    n = len(problem.line_lower)
    constraints = [{"type": "eq", "fun": lambda x: x.sum() - budget}]
    for c in range(problem.n_channels):
        idx = problem.line_channel == c
        constraints.append({"type": "ineq", "fun": lambda x, idx=idx, c=c: problem.channel_upper[c] - x[idx].sum()})
        constraints.append({"type": "ineq", "fun": lambda x, idx=idx, c=c: x[idx].sum() - problem.channel_lower[c]})
    best = -np.inf
    for start in (np.full(n, budget / n), np.clip(problem.line_upper * budget / problem.line_upper.sum(), 0, None),
                  *starts):
        result = minimize(lambda x: -problem.curves.response(np.maximum(x, 0)).sum(), start, method="SLSQP",
                          bounds=list(zip(problem.line_lower, problem.line_upper, strict=True)),
                          constraints=constraints, options={"ftol": 1e-12, "maxiter": 1000})
        if result.success:
            best = max(best, -float(result.fun))
    return best


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems())
def test_optimum_satisfies_kkt_and_matches_slsqp(case: tuple[Problem, float]) -> None:
    problem, budget = case
    solution = optimize(problem, budget)
    assert solution.line_spend.sum() == pytest.approx(budget, abs=1e-6)
    assert np.all(solution.line_spend >= problem.line_lower - 1e-7)
    assert np.all(solution.line_spend <= problem.line_upper + 1e-7)
    lo, hi = problem.effective_channel_bounds()
    assert np.all(solution.channel_spend >= lo - 1e-6) and np.all(solution.channel_spend <= hi + 1e-6)
    assert kkt_violations(problem, solution) == []
    # SLSQP from cold starts and from our answer finds nothing better, and agrees to tolerance.
    reference = _slsqp(problem, budget, solution.line_spend)
    assert solution.expected >= reference - 1e-7 * max(1.0, abs(reference))
    assert solution.expected == pytest.approx(reference, rel=1e-4)


def test_rounded_solution_is_exact_in_cents() -> None:
    curves = [ResponseCurve("hill", 20, 500, 0.8, 0.3), ResponseCurve("exponential", 15, 300, 1.0, 0.1),
              ResponseCurve("hill", 8, 200, 0.6, 0.0)]
    problem = Problem(CurveSet.from_curves(["a", "b", "c"], curves), np.array([0, 0, 1]), np.zeros(3),
                      np.full(3, 5000.0), ("x", "y"), np.array([0.0, 50.0]), np.array([1e9, 1e9]))
    solution = round_solution(problem, optimize(problem, 1234.56), 1234.56)
    cents = np.round(solution.line_spend * 100)
    assert np.allclose(cents, solution.line_spend * 100) and cents.sum() == 123456
    assert solution.channel_spend[1] >= 50.0


def test_infeasible_bounds_name_the_smallest_fix() -> None:
    curves = [ResponseCurve("exponential", 10, 100, 1.0, 0.0)] * 2
    problem = Problem(CurveSet.from_curves(["a", "b"], curves), np.array([0, 1]), np.zeros(2), np.full(2, 1e6),
                      ("PPC", "CTV"), np.array([600.0, 500.0]), np.full(2, 1e6))
    with pytest.raises(AllocationInfeasible, match=r"lower bounds add to 1,100.00.*by 100.00") as info:
        optimize(problem, 1000.0)
    assert info.value.shortfall == 100.0


def _histories_and_series(seed: int = 0) -> tuple[list[ChannelHistory], list[ChannelSeries]]:
    rng = np.random.default_rng(seed)
    truths = [ResponseCurve("hill", 30, 800, 0.8, 0.3), ResponseCurve("exponential", 6, 900, 1.0, 0.4),
              ResponseCurve("hill", 40, 500, 0.9, 0.2), ResponseCurve("exponential", 12, 150, 1.0, 0.1)]
    histories, series = [], []
    for name, truth, base in zip(CHANNELS, truths, (300.0, 400.0, 500.0, 80.0), strict=True):
        spend = np.repeat(rng.choice([0.2, 0.6, 1.0, 1.5, 2.2], 40), 10) * base * rng.normal(1, 0.05, 400)
        conversions = rng.poisson(truth.fitted(spend)).astype(float)
        histories.append(ChannelHistory(name, base, base * 28, float(conversions[-28:].sum())))
        series.append(ChannelSeries(name, spend, conversions))
    return histories, series


def test_curve_allocation_respects_guardrails_and_explains_itself() -> None:
    histories, series = _histories_and_series()
    rails = Guardrails(hold=("Email",))
    plan = allocate_by_curves(histories, series, rails, AllocationConfig(bootstrap_draws=10))
    a = plan.allocation
    spends = a.spends
    assert round(sum(spends.values()), 2) == a.budget == 1280.0
    assert spends["Email"] == 80.0
    for row in a.rows:
        assert row.lower - 1e-9 <= row.spend <= row.upper + 1e-9
        assert abs(row.spend - row.yesterday_spend) <= max(0.25 * row.yesterday_spend, 0.05 * a.budget) + 0.01
        assert row.marginal_cpa is not None and row.expected_low is not None and "next conversion costs" in row.why
    assert a.gain_vs_yesterday is not None and a.gain_vs_yesterday >= -1e-6
    assert a.gain_vs_inverse_cpa is not None and a.gain_vs_inverse_cpa >= -1e-6
    assert a.expected_interval is not None and a.expected_interval[0] <= a.expected_interval[1]
    assert [r["multiplier"] for r in plan.whatif][:3] == [0.5, 0.75, 1.0]
    expected = [r["expected"] for r in plan.whatif]
    assert expected == sorted(expected), "more budget never buys fewer expected conversions"
    marginal = [r["marginal_cpa"] for r in plan.whatif]
    assert marginal == sorted(marginal), "diminishing returns: the marginal CPA rises with budget"
    today = next(r for r in plan.whatif if r["multiplier"] == 1.0)  # the plan itself, one figure for one budget
    assert today["budget"] == a.budget and today["expected"] == a.expected_conversions
    assert (today["low"], today["high"]) == a.expected_interval
    assert {c: today[f"spend_{c}"] for c in spends} == spends


def test_a_daily_plan_below_an_always_on_channel_s_smallest_spend_says_so() -> None:
    histories, series = _histories_and_series()  # every channel always on: its least spend is above 0
    least = {s.channel: float(s.spend.min()) for s in series}
    for budget, expect_some in ((150.0, True), (1280.0, False)):
        a = allocate_by_curves(histories, series, Guardrails(), AllocationConfig(bootstrap_draws=0),
                               budget=budget).allocation
        noted = {n.split(":")[0] for n in a.notes if "below the least it spent in the data" in n}
        assert noted == {r.channel for r in a.rows if r.spend < 0.9 * least[r.channel]}
        assert bool(noted) == expect_some


def test_a_channel_that_never_converted_gets_no_cost_per_conversion() -> None:
    # PPC never spent and never converted: its fallback curve expects ~0 conversions, and a cost per
    # conversion in the billions is no figure to show
    histories, series = _histories_and_series()
    histories[2] = ChannelHistory("PPC", 0.0, 0.0, 0.0)
    series[2] = ChannelSeries("PPC", np.zeros(400), np.zeros(400))
    a = allocate_by_curves(histories, series, Guardrails(), AllocationConfig(bootstrap_draws=0)).allocation
    ppc = next(r for r in a.rows if r.channel == "PPC")
    assert ppc.spend > 0 and ppc.bound == "min_share"  # the guardrails still give it its floor
    assert ppc.expected_conversions == 0 and ppc.cpa is None and ppc.marginal_cpa is None
    assert "next conversion costs - at" in ppc.why and "average" not in ppc.why
    assert all(r.cpa is not None and r.marginal_cpa is not None for r in a.rows if r.channel != "PPC")


def test_a_channel_that_converted_without_ever_spending_is_promised_nothing_for_money() -> None:
    # Its conversions came without spend (organic visits, or spend missing from the spend file): a curve
    # through them at a nominal spend read them as conversions for a few dollars, and the plan moved
    # money into the channel as fast as the daily change allowed, expecting them.
    histories, series = _histories_and_series()
    histories[2] = ChannelHistory("PPC", 0.0, 0.0, 90.0)
    series[2] = ChannelSeries("PPC", np.zeros(400), np.random.default_rng(5).poisson(3.0, 400).astype(float))
    a = allocate_by_curves(histories, series, Guardrails(), AllocationConfig(bootstrap_draws=10)).allocation
    ppc = next(r for r in a.rows if r.channel == "PPC")
    assert ppc.bound == "min_share" and ppc.spend == ppc.lower  # its floor, no more
    assert ppc.expected_conversions == 0 and ppc.cpa is None and ppc.marginal_cpa is None
    assert ppc.why.startswith("fallback curve (no spend in the 400 days fitted; what its money buys is unknown")
    assert "R^2" not in ppc.why  # no curve was fitted to its conversions
    # the other channels' bootstrap draws still make the interval (the fallback joins each draw)
    low, high = a.expected_interval
    assert low < a.expected_conversions < high


def test_a_channel_without_a_floor_that_never_spent_says_why_it_gets_nothing() -> None:
    histories, series = _histories_and_series()
    histories[2] = ChannelHistory("PPC", 0.0, 0.0, 0.0)
    series[2] = ChannelSeries("PPC", np.zeros(400), np.zeros(400))
    a = allocate_by_curves(histories, series, Guardrails(min_share={}), AllocationConfig(bootstrap_draws=0)).allocation
    ppc = next(r for r in a.rows if r.channel == "PPC")
    assert ppc.spend == 0 and ppc.bound is None
    # not "marginal cost equalized": there is no marginal cost to equalize
    assert ppc.why.startswith("fallback curve (no spend in the 400 days fitted") and ppc.why.endswith(
        "; its curve expects no conversion from more spend"), ppc.why
    assert all("marginal cost equalized" in r.why for r in a.rows if r.channel != "PPC" and r.bound is None)


@pytest.mark.slow
def test_mean_and_quantile_objectives_run_on_the_draws() -> None:
    histories, series = _histories_and_series(1)
    loose = Guardrails(min_share={}, max_share={}, max_daily_change=10.0)
    point = allocate_by_curves(histories, series, loose, AllocationConfig(bootstrap_draws=15)).allocation
    mean = allocate_by_curves(histories, series, loose, AllocationConfig(bootstrap_draws=15, objective="mean"))
    pessimistic = allocate_by_curves(histories, series, loose,
                                     AllocationConfig(bootstrap_draws=15, objective="quantile", risk_quantile=0.1))
    for plan in (mean.allocation, pessimistic.allocation):
        assert round(sum(plan.spends.values()), 2) == point.budget
    assert mean.allocation.method == "curves/mean" and pessimistic.allocation.method == "curves/quantile"


def test_target_cpa_spends_less_when_the_budget_would_overshoot_it() -> None:
    curves = [ResponseCurve("exponential", 10, 200, 1.0, 0.0), ResponseCurve("exponential", 5, 300, 1.0, 0.0)]
    problem = Problem(CurveSet.from_curves(["a", "b"], curves), np.array([0, 1]), np.zeros(2), np.full(2, 1e5),
                      ("a", "b"), np.zeros(2), np.full(2, 1e5))
    full = optimize(problem, 5000.0)
    target = 0.5 * 5000.0 / full.expected
    spend, solution = budget_for_target_cpa(problem, 5000.0, target)
    assert spend < 5000.0
    assert spend / solution.expected <= target * 1.001
    with pytest.raises(AllocationInfeasible, match=r"target CPA 0\.00 cannot be met: .* per conversion"):
        budget_for_target_cpa(problem, 5000.0, 1e-6)
    # The same target given as a ROAS (kpi = "revenue", target_roas) is refused in its own terms.
    with pytest.raises(AllocationInfeasible, match=r"target ROAS 1,000,000\.00 cannot be met: .* returns [0-9.]+ per "
                                                   r"unit of spend; lower the target"):
        budget_for_target_cpa(problem, 5000.0, 1e-6, as_roas=True)


def test_many_lines_report_per_channel() -> None:
    rng = np.random.default_rng(2)
    n = 300
    curves = [ResponseCurve("hill", float(rng.uniform(1, 20)), float(rng.uniform(50, 500)), float(rng.uniform(0.5, 1)))
              for _ in range(n)]
    channel = rng.integers(0, 4, n)
    problem = Problem(CurveSet.from_curves([f"l{i}" for i in range(n)], curves), channel, np.zeros(n),
                      np.full(n, 400.0), CHANNELS, np.zeros(4), np.array([1e9, 2000.0, 1e9, 1e9]))
    solution = optimize(problem, 30_000.0)
    assert solution.channel_spend[1] == pytest.approx(2000.0)
    assert solution.channel_bound[1] == "upper"
    assert solution.channel_multiplier[1] > solution.multiplier  # the capped channel would still pay more
    assert kkt_violations(problem, solution) == []
    for c in range(4):
        assert solution.channel_spend[c] == pytest.approx(solution.line_spend[channel == c].sum())


@st.composite
def s_curve_problems(draw: st.DrawFn) -> tuple[Problem, float]:
    """Two or three lines mixing S-curves (Hill slope up to 3), concave curves, tangent points above
    the budget and tight caps: small enough to solve by brute force."""
    n = draw(st.integers(2, 3))
    budget = draw(st.floats(50, 3000))
    curves = []
    for _ in range(n):
        decay = draw(st.floats(0.0, 0.6))
        k = draw(st.floats(20, 4000))
        if draw(st.integers(0, 3)) == 0:
            curves.append(ResponseCurve("exponential", draw(st.floats(1, 60)), k, 1.0, decay))
        else:
            curves.append(ResponseCurve("hill", draw(st.floats(1, 60)), k, draw(st.floats(0.5, 3.0)), decay))
    upper = np.array([draw(st.floats(0.1, 1.0)) * budget if draw(st.booleans()) else budget for _ in range(n)])
    assume(upper.sum() >= budget)
    problem = Problem(CurveSet.from_curves([f"l{i}" for i in range(n)], curves), np.arange(n), np.zeros(n), upper,
                      tuple(f"c{i}" for i in range(n)), np.zeros(n), upper)
    return problem, budget


def _brute_force(problem: Problem, budget: float, steps: int) -> float:
    """The best true response over a grid of splits of the budget."""
    upper = problem.line_upper
    grids = [np.linspace(0.0, min(budget, u), steps) for u in upper[:-1]]
    mesh = np.meshgrid(*grids, indexing="ij")
    head = np.stack([m.ravel() for m in mesh], axis=1)
    last = budget - head.sum(axis=1)
    ok = (last >= -1e-9) & (last <= upper[-1] + 1e-9)
    x = np.column_stack([head[ok], np.clip(last[ok], 0, upper[-1])])
    values = problem.curves.curve_response(x).sum(axis=1)  # rows of splits, broadcast over lines
    return float(values.max())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(s_curve_problems())
def test_s_curves_are_solved_as_well_as_brute_force(case: tuple[Problem, float]) -> None:
    problem, budget = case
    solution = optimize(problem, budget)
    assert solution.line_spend.sum() == pytest.approx(budget, rel=1e-9, abs=1e-6)
    assert np.all(solution.line_spend <= problem.line_upper + 1e-7) and np.all(solution.line_spend >= -1e-9)
    true = float(problem.curves.curve_response(solution.line_spend).sum())
    assert solution.expected == pytest.approx(true)
    best = _brute_force(problem, budget, 2001 if len(problem.line_lower) == 2 else 201)
    assert true >= best * (1 - 1e-3) - 1e-9


def test_an_s_curve_whose_tangent_is_above_the_budget_no_longer_takes_the_leftover() -> None:
    """The bug the issue describes: the envelope's flat part made the multiplier search dump the
    budget on an S-shaped line that buys almost nothing below its tangent point."""
    s_curve = ResponseCurve("hill", beta=40.0, k=5000.0, slope=2.5)  # tangent far above the budget
    concave = ResponseCurve("exponential", beta=10.0, k=300.0)
    problem = Problem(CurveSet.from_curves(["s", "c"], [s_curve, concave]), np.arange(2), np.zeros(2),
                      np.array([1000.0, 1000.0]), ("s", "c"), np.zeros(2), np.array([1000.0, 1000.0]))
    solution = optimize(problem, 1000.0)
    assert solution.line_spend[1] == pytest.approx(1000.0)
    assert solution.expected == pytest.approx(_brute_force(problem, 1000.0, 4001), rel=1e-6)


def test_extrapolation_limits_never_hold_a_channel_below_inverse_cpas_split() -> None:
    """At three times past spend inverse CPA gives the efficient small channel far more than 1.5x
    its largest day; the plan's limit gives way to that split, so the plan, optimal on its curves
    within its bounds, never expects less than inverse CPA on the same curves."""
    histories, series = _histories_and_series()
    loose = Guardrails(min_share={}, max_share={}, max_daily_change=100.0, min_daily_move_share=1.0)
    budget = 3 * sum(h.yesterday_spend for h in histories)
    inverse = allocate_inverse_cpa(histories, loose, budget=budget).spends
    largest = {s.channel: float(s.spend.max()) for s in series}
    beyond = [c for c in inverse if inverse[c] > 1.5 * largest[c]]
    assert beyond, "the case must put inverse CPA beyond a curve's limit"
    plan = allocate_by_curves(histories, series, loose, AllocationConfig(bootstrap_draws=0), budget=budget).allocation
    for row in plan.rows:
        assert row.upper >= min(inverse[row.channel], budget) - 0.01
    assert plan.gain_vs_inverse_cpa is not None and plan.gain_vs_inverse_cpa >= -1e-6


def test_a_budget_past_every_curves_limit_is_placed_and_the_notes_say_how_far_past_the_data() -> None:
    """Far more money than the channels ever spent: the limits give way (the budget is placed, as
    asked) and a note says so, with how many times their largest spend the channels may take."""
    histories, series = _histories_and_series()
    loose = Guardrails(min_share={}, max_share={}, max_daily_change=1e9, min_daily_move_share=1.0)
    largest = sum(float(s.spend.max()) for s in series)
    plan = allocate_by_curves(histories, series, loose, AllocationConfig(bootstrap_draws=0), budget=10 * largest)
    assert sum(r.spend for r in plan.allocation.rows) == pytest.approx(10 * largest, abs=0.05)
    [note] = [n for n in plan.allocation.notes if n.startswith("the budget is more than the curves' limits hold")]
    assert "may take up to 10.0x" in note
    within = allocate_by_curves(histories, series, loose, AllocationConfig(bootstrap_draws=0), budget=largest)
    assert not [n for n in within.allocation.notes if "limits hold" in n]


def test_the_what_ifs_next_conversion_cost_is_defined_when_every_channel_is_held() -> None:
    """The what-if's marginal CPA is what the next conversion would cost at the plan: the best
    marginal return among channels with room left. When a guardrail holds every channel the
    optimizer's multiplier is undetermined (it used to print figures like 7.8e33)."""
    from flashcast.budget.plan import _next_conversion_cost

    curves = [ResponseCurve("exponential", 10, 100, 1.0, 0.0), ResponseCurve("exponential", 20, 50, 1.0, 0.0)]

    def problem(lower: list[float], upper: list[float]) -> Problem:
        return Problem(CurveSet.from_curves(["a", "b"], curves), np.array([0, 1]), np.zeros(2), np.full(2, 1e6),
                       ("A", "B"), np.array(lower), np.array(upper))

    held = problem([60.0, 10.0], [1e6, 10.0])  # B capped at 10, A held at 60 from below: 70 is all theirs
    solution = optimize(held, 70.0)
    assert np.allclose(solution.channel_spend, [60.0, 10.0])
    marginal_a = 10 / 100 * np.exp(-60 / 100)  # only A can take more money
    assert _next_conversion_cost(held, solution) == pytest.approx(1 / marginal_a, abs=0.01)
    full = problem([0.0, 0.0], [30.0, 40.0])
    assert _next_conversion_cost(full, optimize(full, 70.0)) == float("inf")  # no channel has room
    free = problem([0.0, 0.0], [1e6, 1e6])  # unbound: the equalized marginal, the optimizer's multiplier
    solution = optimize(free, 70.0)
    assert _next_conversion_cost(free, solution) == pytest.approx(1 / solution.multiplier, abs=0.01)


def test_the_what_ifs_next_conversion_cost_is_none_where_the_channels_with_room_buy_nothing() -> None:
    """Where the only channel with room has no measurable effect (a curve of height ~0, held at its
    floor), the next conversion has no price: infinite, shown as "no channel can buy more", not a
    figure like 4.3e30."""
    from flashcast.budget.plan import _next_conversion_cost

    capped = ResponseCurve("exponential", 10, 100, 1.0, 0.0)
    nil = Problem(CurveSet.from_curves(["a", "b"], [capped, ResponseCurve("exponential", 1e-30, 100, 1.0, 0.0)]),
                  np.array([0, 1]), np.zeros(2), np.full(2, 1e6), ("A", "B"), np.array([0.0, 0.0]),
                  np.array([50.0, 1e6]))
    solution = optimize(nil, 60.0)  # A takes its 50, B the 10 left
    assert np.allclose(solution.channel_spend, [50.0, 10.0])
    assert _next_conversion_cost(nil, solution) == float("inf")


_line = st.one_of(
    st.builds(lambda b, k, s, d: ResponseCurve("hill", b, k, s, d), st.floats(0.5, 80), st.floats(20, 5000),
              st.floats(0.3, 3.0), st.floats(0.0, 0.85)),
    st.builds(lambda b, k, d: ResponseCurve("exponential", b, k, 1.0, d), st.floats(0.5, 80), st.floats(20, 5000),
              st.floats(0.0, 0.85)))


@settings(max_examples=200, deadline=None)
@given(curves=st.lists(_line, min_size=1, max_size=6), lows=st.lists(st.floats(0, 800), min_size=6, max_size=6),
       spans=st.lists(st.floats(0.01, 8000), min_size=6, max_size=6), log_lam=st.floats(-7, 1))
def test_closed_form_spend_equals_bisection_on_every_envelope(curves: list[ResponseCurve], lows: list[float],
                                                             spans: list[float], log_lam: float) -> None:
    """The spend at a multiplier (closed form for exponential curves, Newton for Hill) is where the
    envelope's marginal meets it, the same point the bisection on the marginal finds: concave and
    S-shaped curves, tangent points below, inside and above the bounds, lower bounds above zero."""
    n = len(curves)
    lower, upper = np.array(lows[:n]), np.array(lows[:n]) + np.array(spans[:n])
    curve_set = CurveSet.from_curves([f"l{i}" for i in range(n)], curves).within(upper)
    lam = 10.0**log_lam
    np.testing.assert_allclose(curve_set.spend_at(lam, lower, upper),
                               bisect_spend(curve_set.marginal, lam, lower, upper), rtol=1e-9, atol=1e-9 * upper.max())


def test_a_what_if_budget_no_channel_can_take_more_of_says_so(tmp_path: Path) -> None:
    from flashcast.budget.charts import plot_whatif
    from flashcast.records import AllocationPlan
    from flashcast.report import _budget_lines, format_money

    histories, series = _histories_and_series()
    held = Guardrails(hold=tuple(CHANNELS))  # every channel at yesterday's spend: no line can take a cent more
    plan = allocate_by_curves(histories, series, held, AllocationConfig(bootstrap_draws=0))
    today = next(r for r in plan.whatif if r["multiplier"] == 1.0)
    assert today["marginal_cpa"] == float("inf")
    names = ("allocation", "response_curves", "whatif", "whatif_chart")
    lines = _budget_lines(AllocationPlan(plan.allocation, plan), {n: Path(f"{n}.x") for n in names},
                          lambda v: format_money(v, "USD"))
    row = next(line for line in lines if line.startswith(f"| {format_money(today['budget'], 'USD')} |"))
    assert row.endswith("| no channel can buy more |") and "inf" not in row
    assert plot_whatif(plan.whatif, tmp_path / "whatif.png").stat().st_size > 0
