"""Response curves: fitting recovers known parameters; S-curves get a concave envelope."""

from __future__ import annotations

import numpy as np
import pytest

from flashcast.budget.curves import (
    ResponseCurve,
    adstock,
    demand_index,
    fit_response_curve,
    solve_tangent_numeric,
)
from flashcast.errors import CurveFitError


def _flighted(rng: np.random.Generator, n: int, base: float) -> np.ndarray:
    levels = np.array([0.0, 0.3, 0.6, 1.0, 1.4, 1.9, 2.5])
    flights = np.repeat(levels[rng.integers(0, len(levels), n // 10 + 1)], 10)[:n]
    return flights * base * rng.normal(1, 0.08, n).clip(0.7, 1.3)


@pytest.mark.parametrize(
    "truth",
    [
        ResponseCurve("hill", beta=40.0, k=600.0, slope=0.8, decay=0.4),
        ResponseCurve("hill", beta=30.0, k=500.0, slope=1.6, decay=0.2),
        ResponseCurve("exponential", beta=25.0, k=400.0, decay=0.3),
    ],
)
def test_fit_recovers_known_curves(truth: ResponseCurve) -> None:
    rng = np.random.default_rng(7)
    spend = _flighted(rng, 730, 250.0)
    conversions = rng.poisson(truth.fitted(spend)).astype(float)
    fit = fit_response_curve(spend, conversions, n_boot=20)
    assert not fit.fallback
    assert abs(fit.curve.decay - truth.decay) <= 0.15
    for x in (100.0, 250.0, 500.0):
        assert float(fit.curve.response(x)) == pytest.approx(float(truth.response(x)), rel=0.12), x
    lo, hi = fit.response_interval(250.0, level=0.95)
    assert lo <= float(truth.response(250.0)) * 1.05 and hi >= float(truth.response(250.0)) * 0.95
    assert fit.diagnostics.r2 > 0.5
    if truth.slope > 1:
        assert fit.curve.slope > 1.2 and not fit.curve.is_concave


def test_no_spend_at_all_gives_a_curve_that_expects_nothing() -> None:
    conversions = np.random.default_rng(2).poisson(4, 120).astype(float)  # they came without spend
    fit = fit_response_curve(np.zeros(120), conversions, name="Display")
    assert fit.fallback and fit.draws == (fit.curve,)
    assert fit.warnings == ("Display: no spend in the 120 days fitted; what its money buys is unknown, so the plan "
                            "gives it only what its guardrails require",)
    assert float(fit.curve.response(1e6)) < 1e-6 and float(fit.curve.marginal(0.0)) < 1e-6


def test_flat_spend_falls_back_to_a_conservative_curve() -> None:
    rng = np.random.default_rng(1)
    spend = np.full(200, 300.0) * rng.normal(1, 0.02, 200)
    fit = fit_response_curve(spend, rng.poisson(5, 200).astype(float), name="CTV")
    assert fit.fallback
    assert any("barely varied" in w for w in fit.warnings)
    # Saturating at today's level: the marginal return there is well below the average return.
    x = float(spend.mean())
    assert float(fit.curve.marginal(x)) < 0.6 * float(fit.curve.response(x)) / x


def test_s_curve_envelope_is_concave_and_touches_at_the_tangent() -> None:
    curve = ResponseCurve("hill", beta=10.0, k=300.0, slope=2.2, decay=0.3)
    x_t = curve.tangent_spend()
    assert x_t == pytest.approx(solve_tangent_numeric(curve), rel=1e-6)
    xs = np.linspace(1, 3000, 500)
    marginal = curve.marginal(xs)
    assert np.all(np.diff(marginal) <= 1e-12), "envelope marginal must be non-increasing"
    envelope = curve.envelope_response(xs)
    assert np.all(envelope >= curve.response(xs) - 1e-9)
    assert float(curve.envelope_response(x_t)) == pytest.approx(float(curve.response(x_t)))
    assert float(curve.envelope_response(x_t * 2)) == pytest.approx(float(curve.response(x_t * 2)))


def test_adstock_matches_its_recursion() -> None:
    x = np.array([100.0, 0.0, 50.0, 0.0])
    assert adstock(x, 0.5).tolist() == [100.0, 50.0, 75.0, 37.5]


def test_demand_index_recovers_a_weekly_pattern() -> None:
    rng = np.random.default_rng(3)
    weekly = np.tile([1.0, 0.9, 0.9, 1.0, 1.1, 1.3, 1.2], 60)
    organic = rng.poisson(2000 * weekly).astype(float)
    index = demand_index(organic)
    assert index.mean() == pytest.approx(1.0)
    assert np.corrcoef(index, weekly)[0, 1] > 0.95


@pytest.mark.parametrize(
    ("spend", "conversions", "message"),
    [(np.ones(5), np.ones(4), "same length"), (-np.ones(5), np.ones(5), "non-negative")],
)
def test_bad_series_are_refused(spend: np.ndarray, conversions: np.ndarray, message: str) -> None:
    with pytest.raises(CurveFitError, match=message):
        fit_response_curve(spend, conversions, name="PPC")


@pytest.mark.parametrize(("form", "params"), [("hill", [1.2, 0.8, 1.7, 0.1]), ("hill", [0.5, 3.0, 0.4, 0.3]),
                                              ("exponential", [1.1, 0.7, 0.2])])
def test_the_curve_fits_jacobian_equals_finite_differences(form: str, params: list[float]) -> None:
    """The fit's least squares gets its derivatives in closed form: they must be the residuals'."""
    from scipy.optimize._numdiff import approx_derivative

    from flashcast.budget.curves import _curve_problem

    rng = np.random.default_rng(11)
    spend = rng.gamma(2.0, 300.0, 300) * (rng.random(300) > 0.1)  # some days without spend
    y = 50 + 200 * spend / (spend + 500) + rng.normal(0, 5, 300)
    problem = _curve_problem(spend, y, 0.3, form)
    p = np.array(params)
    np.testing.assert_allclose(problem.jacobian(p), approx_derivative(problem.residuals, p, method="3-point"),
                               atol=1e-8)


def test_a_curve_is_not_extrapolated_as_ever_growing_when_the_data_stop_before_its_bend(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A small S-shaped channel whose half-saturation lies near its largest days: the data barely show
    the bend, and without the prior on k some fits read them as nearly straight and promise ~3x the
    true return at three times the largest spend. The prior keeps those extrapolations near the truth,
    and leaves the fit inside the data as it was."""
    import flashcast.budget.curves as curves

    truth = ResponseCurve("hill", beta=10.0, k=500.0, slope=1.6, decay=0.2)

    def ratios() -> tuple[np.ndarray, np.ndarray]:
        beyond, inside = [], []
        for seed in range(6):
            rng = np.random.default_rng(seed)
            spend = rng.gamma(0.8, 100.0, 365)  # mostly small days, a few large ones
            fit = fit_response_curve(spend, rng.poisson(truth.fitted(spend)).astype(float), n_boot=0)
            far, typical = 3 * float(spend.max()), float(np.quantile(spend, 0.9))
            beyond.append(float(fit.curve.response(far)) / float(truth.response(far)))
            inside.append(float(fit.curve.response(typical)) / float(truth.response(typical)))
        return np.array(beyond), np.array(inside)

    beyond, inside = ratios()
    monkeypatch.setattr(curves, "K_PRIOR_WEIGHT", 0.0)
    beyond_flat, inside_flat = ratios()
    assert np.abs(np.log(beyond)).mean() < 0.8 * np.abs(np.log(beyond_flat)).mean()
    assert beyond.max() < 2.5 < beyond_flat.max()
    np.testing.assert_allclose(inside, inside_flat, rtol=0.1)
    assert np.all(np.abs(inside - 1) < 0.25)


@pytest.mark.parametrize("form", ["hill", "exponential"])
def test_a_fit_started_from_a_neighbouring_fit_reaches_the_same_curve(form: str) -> None:
    """Fits across the decay grid and bootstrap draws start from a nearby fit instead of a fixed
    guess (far fewer least-squares steps); they must land where the fixed guess lands."""
    from flashcast.budget.curves import _curve_problem, _fit_at_decay

    rng = np.random.default_rng(5)
    truth = ResponseCurve(form, beta=30.0, k=500.0, slope=1.4 if form == "hill" else 1.0, decay=0.3)
    spend = _flighted(rng, 365, 250.0)
    y = rng.poisson(truth.fitted(spend)).astype(float)
    problem = _curve_problem(spend, y, 0.3, form)
    p = np.array([1.2, 0.8, 1.7, 0.1] if form == "hill" else [1.2, 0.8, 0.1])
    np.testing.assert_allclose(problem.params(problem.curve(p)), p)
    cold = _fit_at_decay(spend, y, 0.3, form)
    neighbour = _fit_at_decay(spend, y, 0.35, form)
    assert cold is not None and neighbour is not None
    warm = _fit_at_decay(spend, y, 0.3, form, start=neighbour[0])
    assert warm is not None
    assert warm[1] == pytest.approx(cold[1], rel=1e-6)
    xs = np.array([50.0, 250.0, 600.0])
    np.testing.assert_allclose(warm[0].response(xs), cold[0].response(xs), rtol=1e-4)


def test_a_fallback_curve_reads_only_the_lift_of_the_days_with_spend() -> None:
    # Spend on 10 days of 200: the channel's visits bring ~4 conversions a day without spend (its
    # organic ones) and ~1 more on a spend day. The curve at the average spend expects the 1, not the
    # year's average of ~4 (which made ten dollars look like four conversions).
    rng = np.random.default_rng(3)
    spend = np.zeros(200)
    spend[rng.choice(200, 10, replace=False)] = rng.uniform(80, 120, 10)
    conversions = rng.poisson(4.0 + (spend > 0)).astype(float)
    fit = fit_response_curve(spend, conversions, name="Display")
    assert fit.fallback and any("only 10 days with spend" in w for w in fit.warnings)
    x = float(spend[spend > 0].mean())
    lift = float(conversions[spend > 0].mean() - conversions[spend == 0].mean())
    assert float(fit.curve.response(x)) == pytest.approx(max(lift, 0.0), abs=1e-9)
    assert fit.curve.intercept == pytest.approx(float(conversions[spend == 0].mean()))
    assert float(fit.curve.response(x)) < 2.5  # not the ~4 a day that came without spend
