"""Stage 6: inverse-CPA allocation projected onto all guardrails at once, exact to the cent."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flashcast.budget.bounds import channel_bounds, feasible_bounds, reference_spend
from flashcast.budget.inverse_cpa import allocate_inverse_cpa, project_onto_bounds
from flashcast.budget.records import ChannelHistory
from flashcast.config import Guardrails
from flashcast.errors import AllocationInfeasible

CHANNELS = ("Display", "CTV", "PPC", "Email")
HISTORY = [ChannelHistory("Display", 100, 2800, 40), ChannelHistory("CTV", 150, 4200, 20),
           ChannelHistory("PPC", 200, 5600, 160), ChannelHistory("Email", 30, 840, 60)]
LOOSE = Guardrails(min_share={}, max_share={}, max_daily_change=10.0)


def test_unbound_channels_follow_inverse_cpa() -> None:
    a = allocate_inverse_cpa(HISTORY, LOOSE)
    assert a.budget == 480.0 and round(sum(a.spends.values()), 2) == 480.0
    weights = {h.channel: h.lookback_conversions / h.lookback_spend for h in HISTORY}
    for row in a.rows:
        assert row.spend == pytest.approx(480 * weights[row.channel] / sum(weights.values()), abs=0.01)
        assert row.bound is None
    assert a.spends["Email"] > a.spends["PPC"] > a.spends["Display"] > a.spends["CTV"]


def test_every_row_explains_itself() -> None:
    a = allocate_inverse_cpa(HISTORY, Guardrails())
    for row in a.rows:
        assert row.why.startswith(f"CPA {row.cpa:,.2f} over 28 days")
    email = next(r for r in a.rows if r.channel == "Email")
    assert email.bound == "max_daily_change" and "maximum daily change" in email.why


def test_clip_then_renormalise_would_break_a_bound_this_does_not() -> None:
    target = np.array([700.0, 200.0, 100.0])
    lower, upper = np.array([0.0, 0.0, 150.0]), np.array([500.0, 1000.0, 1000.0])
    naive = np.clip(target, lower, upper)
    naive = naive * 1000 / naive.sum()
    assert naive[0] > upper[0] or naive[2] < lower[2]  # the shortcut leaves the box
    x = project_onto_bounds(target, lower, upper, 1000.0)
    assert x.sum() == pytest.approx(1000.0)
    assert np.all(x >= lower - 1e-9) and np.all(x <= upper + 1e-9)
    free = (x > lower + 1e-9) & (x < upper - 1e-9)
    ratios = x[free] / target[free]
    assert np.allclose(ratios, ratios[0])  # free channels keep the target proportions


def test_no_conversions_anywhere_keeps_yesterdays_split() -> None:
    history = [ChannelHistory(c, y, 0.0, 0.0) for c, y in zip(CHANNELS, (100, 200, 300, 400), strict=True)]
    a = allocate_inverse_cpa(history, LOOSE)
    assert a.spends == {"Display": 100.0, "CTV": 200.0, "PPC": 300.0, "Email": 400.0}


def test_lower_bounds_over_the_budget_are_named() -> None:
    rails = Guardrails(hold=("Display", "CTV", "PPC"), max_daily_change=10.0)
    with pytest.raises(AllocationInfeasible) as info:
        allocate_inverse_cpa(HISTORY, rails, budget=400.0)
    message = str(info.value)
    assert "lower bounds add to 450.00, more than the budget 400.00" in message
    assert "Display 100.00 (held)" in message and "by 50.00" in message
    assert info.value.shortfall == 50.0


def test_crossing_bounds_are_named() -> None:
    rails = Guardrails(hold=("CTV",), caps={"CTV": 100.0}, max_daily_change=10.0)
    expected = r"CTV: lower 150.00 \(held\) > upper 100.00 \(cap\)"
    with pytest.raises(AllocationInfeasible, match=expected):
        allocate_inverse_cpa(HISTORY, rails)


def test_a_share_yesterday_already_broke_is_a_path_not_a_wall() -> None:
    """The README's account: PPC had 77% of yesterday's spend, above the default max share of 60%.
    The others can grow only by their daily change, so holding PPC to 60% today cannot be done."""
    history = [ChannelHistory("Display", 13.94, 400, 4), ChannelHistory("CTV", 8.88, 300, 2),
               ChannelHistory("PPC", 75.62, 2000, 40), ChannelHistory("Email", 0.0, 0, 0)]
    budget = 98.44
    assert sum(b.upper for b in channel_bounds(history, budget, Guardrails()).values()) < budget  # the old wall
    a = allocate_inverse_cpa(history, Guardrails())
    ppc = next(r for r in a.rows if r.channel == "PPC")
    assert round(sum(a.spends.values()), 2) == budget
    assert 0.6 * budget < ppc.spend < 75.8  # above the share, but moving toward it
    assert any("PPC spent 76.8% of the budget yesterday, above its maximum share 60%" in n for n in a.notes)


def test_a_share_broken_far_beyond_one_days_move_descends_at_the_daily_limit() -> None:
    history = [ChannelHistory("PPC", 900, 9000, 90), ChannelHistory("Email", 100, 1000, 50)]
    a = allocate_inverse_cpa(history, Guardrails(max_share={"PPC": 0.5}, min_share={}, min_daily_move_share=0.3))
    ppc = next(r for r in a.rows if r.channel == "PPC")
    assert ppc.spend == 600.0 and ppc.bound == "max_daily_change"  # down 300 (30% of the budget): as fast as allowed


def test_a_bigger_budget_moves_every_channel_from_yesterdays_split_scaled() -> None:
    doubled = allocate_inverse_cpa(HISTORY, Guardrails(min_share={}, max_share={}), budget=960.0)
    assert round(sum(doubled.spends.values()), 2) == 960.0
    for row in doubled.rows:  # within 25% of its scaled yesterday (or the 5%-of-budget minimum move)
        assert abs(row.spend - 2 * row.yesterday_spend) <= max(0.25 * 2 * row.yesterday_spend, 48.0) + 0.01


def test_caps_and_max_share_bind() -> None:
    rails = Guardrails(min_share={}, max_share={"Email": 0.2}, caps={"PPC": 150.0}, max_daily_change=10.0)
    a = allocate_inverse_cpa(HISTORY, rails)
    rows = {r.channel: r for r in a.rows}
    assert rows["Email"].spend == 96.0 and rows["Email"].bound == "max_share"
    assert rows["PPC"].spend == 150.0 and rows["PPC"].bound == "cap"


def test_a_channel_without_a_maximum_share_is_bound_by_the_budget_not_a_share() -> None:
    """Only Email has a maximum share: the others' ceiling is the budget, and a channel that takes
    all of it is not said to be held by a maximum share nobody set."""
    bounds = channel_bounds(HISTORY, 480.0, Guardrails(min_share={}, max_share={"Email": 0.2}, max_daily_change=1e9))
    assert bounds["Email"].upper == 96.0 and bounds["Email"].upper_rule == "max_share"
    for channel in ("Display", "CTV", "PPC"):
        assert bounds[channel].upper == 480.0 and bounds[channel].upper_rule == "budget"
    only = allocate_inverse_cpa([ChannelHistory("PPC", 200, 5600, 160)], Guardrails(min_share={}, max_share={}))
    assert only.rows[0].spend == 200.0 and only.rows[0].bound == "budget" and "whole budget" in only.rows[0].why


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[ChannelHistory], Guardrails, float]:
    n = draw(st.integers(2, 6))
    names = [f"ch{i}" for i in range(n)]
    money = st.floats(0, 5000, allow_nan=False).map(lambda x: round(x, 2))
    histories = [ChannelHistory(c, draw(money), draw(money), draw(st.floats(0, 300).map(round))) for c in names]
    mins = {c: draw(st.floats(0, 0.15)) for c in names if draw(st.booleans())}
    maxs = {c: draw(st.floats(0.15, 1.0)) for c in names if draw(st.booleans())}
    caps = {c: draw(st.floats(1, 8000)) for c in names if draw(st.booleans())}
    rails = Guardrails(min_share=mins, max_share=maxs, caps=caps, max_daily_change=draw(st.floats(0.05, 2.0)),
                       min_daily_move_share=draw(st.floats(0.0, 0.2)))
    budget = draw(st.floats(1, 20000).map(lambda x: round(x, 2)))
    return histories, rails, budget


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_every_bound_holds_and_the_sum_is_exact(problem: tuple[list[ChannelHistory], Guardrails, float]) -> None:
    histories, rails, budget = problem
    bounds, _notes = feasible_bounds(histories, budget, rails)
    reference = reference_spend(histories, budget, rails.hold)
    feasible = all(b.lower <= b.upper for b in bounds.values()) and (
        sum(b.lower for b in bounds.values()) <= budget + 1e-9 <= sum(b.upper for b in bounds.values()) + 2e-9)
    if not feasible:
        with pytest.raises(AllocationInfeasible):
            allocate_inverse_cpa(histories, rails, budget=budget)
        return
    a = allocate_inverse_cpa(histories, rails, budget=budget)
    assert sum(round(r.spend * 100) for r in a.rows) == round(budget * 100)
    for row in a.rows:
        assert round(row.spend * 100) == row.spend * 100 or math.isclose(row.spend * 100, round(row.spend * 100))
        b = bounds[row.channel]
        assert b.lower - 1e-9 <= row.spend <= b.upper + 1e-9, (row, b)
        share_max = rails.max_share.get(row.channel, 1.0) * budget
        # A share is only exceeded when yesterday's split already broke it, and then never grows.
        assert row.spend <= max(share_max, b.lower) + 1e-9 or row.spend <= reference[row.channel] + 0.01
        share_min = rails.min_share.get(row.channel, 0.0) * budget
        assert row.spend >= min(share_min, b.upper) - 0.01 or row.spend >= reference[row.channel] - 0.01
        if row.channel in rails.caps:
            assert row.spend <= rails.caps[row.channel] + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.01, 1000), min_size=2, max_size=8), st.data())
def test_projection_is_exact_and_proportional(targets: list[float], data: st.DataObject) -> None:
    t = np.array(targets)
    lower = np.array([data.draw(st.floats(0, 50)) for _ in targets])
    upper = lower + np.array([data.draw(st.floats(0, 2000)) for _ in targets])
    total = data.draw(st.floats(float(lower.sum()), float(upper.sum())))
    assume(upper.sum() - lower.sum() > 1e-6)
    x = project_onto_bounds(t, lower, upper, total)
    assert x.sum() == pytest.approx(total, abs=1e-6)
    assert np.all(x >= lower - 1e-9) and np.all(x <= upper + 1e-9)
    free = (x > lower + 1e-7) & (x < upper - 1e-7)
    if free.sum() >= 2:
        ratios = x[free] / t[free]
        assert np.allclose(ratios, ratios[0], rtol=1e-6)


def test_no_spend_and_no_budget_says_what_to_do() -> None:
    history = [ChannelHistory(c, 0.0, 0.0, 0.0) for c in CHANNELS]
    with pytest.raises(AllocationInfeasible, match=r"no budget.*--spend.*total_budget"):
        allocate_inverse_cpa(history, Guardrails())
    a = allocate_inverse_cpa(history, Guardrails(total_budget=400.0, min_daily_move_share=1.0))
    assert round(sum(a.spends.values()), 2) == 400.0


def test_extrapolation_caps_give_way_evenly_when_they_cannot_hold_the_budget() -> None:
    """Caps at 1.5x each channel's largest spend hold 1,650 of a 2,000 budget: every capped channel
    rises to the same multiple of its largest spend (not the small channel furthest), within its
    other bounds, and no further than the budget needs."""
    from flashcast.budget.bounds import limit_extrapolation
    from flashcast.budget.records import ChannelBounds

    loose = {c: ChannelBounds(0.0, 2000.0, "none", "budget") for c in ("small", "large")}
    largest = {"small": 100.0, "large": 1000.0}
    held = limit_extrapolation(loose, largest, 1.5, 1500.0)
    assert (held["small"].upper, held["large"].upper) == (150.0, 1500.0)
    assert held["small"].upper_rule == held["large"].upper_rule == "extrapolation"
    raised = limit_extrapolation(loose, largest, 1.5, 2000.0)
    multiple = 2000.0 / 1100.0
    assert raised["small"].upper == pytest.approx(100 * multiple, abs=0.011)
    assert raised["large"].upper == pytest.approx(1000 * multiple, abs=0.011)
    assert 2000.0 <= raised["small"].upper + raised["large"].upper <= 2000.02
    tight = dict(loose, small=ChannelBounds(0.0, 160.0, "none", "cap"))  # the small channel's cap stops it
    capped = limit_extrapolation(tight, largest, 1.5, 2000.0)
    assert capped["small"].upper == 160.0 and capped["large"].upper == pytest.approx(1840.0, abs=0.011)


@pytest.mark.parametrize(("budget", "message"), [(0.0, "budget must be positive (got 0.00)"),
                                                 (-5.0, "budget must be positive (got -5.00)"),
                                                 (0.004, "budget must be at least one cent (got 0.004)")])
def test_a_budget_that_places_no_cent_is_refused_saying_why(budget: float, message: str) -> None:
    from flashcast.budget.bounds import resolve_budget

    with pytest.raises(AllocationInfeasible) as raised:
        resolve_budget(HISTORY, Guardrails(), budget)
    assert str(raised.value) == message
    assert resolve_budget(HISTORY, Guardrails(), 0.006) == 0.01
