"""Response curves: geometric adstock plus a saturating curve, fitted per channel (or line) with scipy.

A curve maps a constant daily spend x to the expected daily conversions once the adstock has
settled: r(x) = intercept + beta * sat(x / (1 - decay)). Two saturating forms:

    hill         sat(a) = a^s / (a^s + k^s)     concave when s <= 1, S-shaped when s > 1
    exponential  sat(a) = 1 - exp(-a / k)

An S-shaped Hill curve is not concave, and an optimizer that assumes concavity would stall at its
flat foot. Flashcast fits s freely (the data decide) and optimizes on the curve's *concave
envelope*: the straight line from the origin to the tangent point, then the curve itself. The
envelope equals the curve above the tangent point, which is where an optimum of an S-curve lies
whenever the channel gets spend at all; the fit's warnings say which curves needed it.

Fitting grid-searches the decay (adstock is what makes the problem non-convex) and solves the rest
by bounded least squares at each decay; uncertainty comes from a residual moving-block bootstrap.

The maths of both forms is written once (`saturation`, `marginal_response`) and shared by a single
curve (`ResponseCurve`) and many curves as arrays (`CurveSet`, what the optimizer takes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq, least_squares

from flashcast.errors import CurveFitError

Form = Literal["hill", "exponential"]
Array = NDArray[np.float64]
DECAY_GRID = tuple(np.round(np.arange(0.0, 0.86, 0.05), 2))
MIN_SPEND_CV = 0.15  # below this, spend barely varied: the curve's shape cannot be learned
MIN_ACTIVE_DAYS = 14
MIN_BASELINE_DAYS = 7  # days without spend that tell a fallback curve what came without it
NO_RESPONSE = 1e-9  # the height of a curve that expects nothing (a zero height would divide by zero)
SLOPE_PRIOR_WEIGHT = 0.5
# A weak prior for the half-saturation (Hill) or scale (exponential) at the 90th percentile of the
# channel's adstocked spend, as media-mix models centre theirs on the observed spend: where the data
# cannot tell a nearly straight curve from one that bends just past them, it is read as bending
# there, not as returns that keep growing far beyond anything yet spent.
K_PRIOR_WEIGHT = 0.1


def demand_index(baseline: Array, period: int = 7) -> Array:
    """A daily demand multiplier (mean 1) from a baseline series such as organic sessions:
    centred rolling mean for the level, times a day-of-week factor, so paid response can be
    fitted per unit of demand instead of absorbing seasonality and trend into the curve."""
    b = np.asarray(baseline, dtype=float)
    if len(b) < 2 * period or b.mean() <= 0:
        return np.ones_like(b)
    kernel = np.ones(period) / period
    padded = np.pad(b, period // 2, mode="edge")
    level = np.convolve(padded, kernel, mode="valid")[: len(b)]
    ratio = np.divide(b, level, out=np.ones_like(b), where=level > 0)
    weekday = np.array([ratio[i::period].mean() for i in range(period)])
    index = level * weekday[np.arange(len(b)) % period]
    index = np.maximum(index, 1e-9)
    return np.asarray(index / index.mean())


def adstock(spend: Array, decay: float) -> Array:
    """Geometric adstock a_t = x_t + decay * a_{t-1}, via a linear filter (fast for long series)."""
    from scipy.signal import lfilter

    return np.asarray(lfilter([1.0], [1.0, -decay], np.asarray(spend, dtype=float)))


def saturation(a: Array, is_hill: bool | NDArray[np.bool_], k: Array | float, slope: Array | float) -> Array:
    """sat(a) for a >= 0: Hill a^s / (a^s + k^s) or exponential 1 - exp(-a / k). `is_hill` is one
    flag for one curve (only that form is computed) or an array of flags for many curves."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        hill = None if is_hill is False else np.where(a > 0, a**slope / (a**slope + k**slope), 0.0)
        expo = None if is_hill is True else 1.0 - np.exp(-a / k)
    if hill is None or expo is None:
        return np.asarray(expo if hill is None else hill)
    return np.asarray(np.where(is_hill, hill, expo))


def marginal_response(x: Array, is_hill: bool | NDArray[np.bool_], beta: Array | float, k: Array | float,
                      slope: Array | float, scale: Array | float) -> Array:
    """d/dx of beta * sat(x / scale) (scale = 1 - decay): the curve's own marginal return."""
    a = np.maximum(x / scale, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_s, k_s = a**slope, k**slope  # two powers, not four: this runs thousands of times per solve
        hill = beta * slope * k_s * (a_s / a) / ((a_s + k_s) ** 2 * scale)
        expo = beta / (k * scale) * np.exp(-a / k)
    return np.asarray(np.where(is_hill, hill, expo))


def _finite(d: Array) -> Array:
    """NaN (an overflowed Hill power) as 0 and +inf as 1e300: np.nan_to_num's result, at a fraction
    of its cost on the few-element arrays the optimizer evaluates tens of thousands of times."""
    d = np.minimum(d, 1e300)
    return np.asarray(np.where(d == d, d, 0.0))


@dataclass(frozen=True)
class ResponseCurve:
    """One fitted (or assumed) curve. `response(x)` is daily conversions at a constant daily spend x."""

    form: Form
    beta: float
    k: float
    slope: float = 1.0  # Hill only
    decay: float = 0.0
    intercept: float = 0.0

    def saturation(self, a: Array) -> Array:
        return saturation(np.maximum(np.asarray(a, dtype=float), 0.0), self.form == "hill", self.k, self.slope)

    def response(self, x: Array | float) -> Array:
        """Steady-state daily conversions from the paid channel (the intercept is not bought by spend)."""
        return np.asarray(self.beta * self.saturation(np.asarray(x, dtype=float) / (1.0 - self.decay)))

    def fitted(self, spend: Array) -> Array:
        """In-sample prediction for a spend history (adstock carries over day to day)."""
        return np.asarray(self.intercept + self.beta * self.saturation(adstock(spend, self.decay)))

    @property
    def is_concave(self) -> bool:
        return self.form == "exponential" or self.slope <= 1.0

    def tangent_spend(self) -> float:
        """Where the line from the origin touches an S-curve (0 for concave curves)."""
        if self.is_concave:
            return 0.0
        # For Hill, r(x)/x = r'(x) at a^s = k^s (s - 1): closed form.
        a_star = self.k * (self.slope - 1.0) ** (1.0 / self.slope)
        return float(a_star * (1.0 - self.decay))

    def marginal(self, x: Array | float) -> Array:
        """d response / d spend on the concave envelope (what the optimizer equalizes)."""
        x = np.asarray(x, dtype=float)
        return CurveSet.from_curves(("curve",), [self]).marginal(x.reshape(-1)).reshape(x.shape)

    def envelope_response(self, x: Array | float) -> Array:
        """Response on the concave envelope (equal to `response` where the curve is concave)."""
        x = np.asarray(x, dtype=float)
        x_t = self.tangent_spend()
        if x_t <= 0:
            return self.response(x)
        return np.asarray(np.where(x < x_t, x * float(self.response(x_t)) / x_t, self.response(x)))


@dataclass(frozen=True)
class FitDiagnostics:
    r2: float
    residual_lag1: float  # autocorrelation of residuals at lag 1: far from 0 means structure left
    spend_cv: float
    active_days: int
    n_days: int


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve with its bootstrap draws, diagnostics and warnings."""

    name: str
    curve: ResponseCurve
    draws: tuple[ResponseCurve, ...]
    diagnostics: FitDiagnostics
    fallback: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def response_interval(self, x: float, level: float = 0.8) -> tuple[float, float]:
        values = np.array([float(d.response(x)) for d in self.draws]) if self.draws else np.array([0.0])
        tail = (1 - level) / 2
        return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


@dataclass(frozen=True)
class _CurveProblem:
    """Least squares for one curve form at one decay, on scaled parameters: for Hill (beta, k, slope,
    intercept), for exponential (beta, k, intercept), beta and the intercept over the largest
    outcome, k over the adstock's 90th percentile."""

    a: Array
    y: Array
    decay: float
    form: Form
    scale_a: float
    scale_y: float

    def curve(self, p: Array) -> ResponseCurve:
        if self.form == "hill":
            return ResponseCurve("hill", p[0] * self.scale_y, p[1] * self.scale_a, p[2], self.decay,
                                 p[3] * self.scale_y)
        return ResponseCurve("exponential", p[0] * self.scale_y, p[1] * self.scale_a, 1.0, self.decay,
                             p[2] * self.scale_y)

    def params(self, c: ResponseCurve) -> Array:
        """The inverse of `curve`: a curve's parameters on this problem's scales."""
        head = [c.beta / self.scale_y, c.k / self.scale_a]
        tail = [c.slope, c.intercept / self.scale_y] if self.form == "hill" else [c.intercept / self.scale_y]
        return np.array(head + tail)

    def residuals(self, p: Array) -> Array:
        c = self.curve(p)
        fit = (c.intercept + c.beta * c.saturation(self.a) - self.y) / self.scale_y
        if self.form == "hill":
            # Weak priors for slope 1 and k near the data: they only decide when the data cannot
            # (noisy, flat likelihood), and keep an S-shape from appearing out of noise.
            return np.append(fit, [SLOPE_PRIOR_WEIGHT * np.log(p[2]), K_PRIOR_WEIGHT * np.log(p[1])])
        return np.append(fit, K_PRIOR_WEIGHT * np.log(p[1]))

    def jacobian(self, p: Array) -> Array:
        """The residuals' derivatives in closed form: finite differences cost a residual evaluation
        per parameter per step (most of a channel's fitting time)."""
        a, c = self.a, self.curve(p)
        sat = c.saturation(a)
        if self.form == "hill":
            shape = sat * (1.0 - sat)  # d sat / d ln(a / k), over the slope
            log_ratio = np.log(np.maximum(a, 1e-300) / c.k) * (a > 0)
            rows = np.column_stack([sat, -p[0] * p[2] / p[1] * shape, p[0] * shape * log_ratio, np.ones_like(a)])
            return np.vstack([rows, [0.0, 0.0, SLOPE_PRIOR_WEIGHT / p[2], 0.0], [0.0, K_PRIOR_WEIGHT / p[1], 0.0, 0.0]])
        ratio = a / c.k
        rows = np.column_stack([sat, -p[0] / p[1] * ratio * np.exp(-ratio), np.ones_like(a)])
        return np.vstack([rows, [0.0, K_PRIOR_WEIGHT / p[1], 0.0]])


def _curve_problem(spend: Array, y: Array, decay: float, form: Form) -> _CurveProblem:
    a = adstock(spend, decay)
    scale_a = max(float(np.percentile(a[a > 0], 90)) if (a > 0).any() else 1.0, 1e-9)
    return _CurveProblem(a, np.asarray(y, dtype=float), decay, form, scale_a, max(float(np.max(y)), 1e-9))


def _fit_at_decay(spend: Array, y: Array, decay: float, form: Form, start: ResponseCurve | None = None) -> tuple[
        ResponseCurve, float] | None:
    """Least squares at one decay, from `start` when given (the fit at the neighbouring decay, or the
    point fit for a bootstrap draw: the optimum is usually close, and far fewer steps reach it)."""
    problem = _curve_problem(spend, y, decay, form)
    if form == "hill":
        x0, lo, hi = [1.5, 1.0, 1.0, 0.05], [0.0, 0.02, 0.3, 0.0], [50.0, 20.0, 3.0, 1.0]
    else:
        x0, lo, hi = [1.5, 1.0, 0.05], [0.0, 0.02, 0.0], [50.0, 20.0, 1.0]
    if start is not None and start.form == form:
        x0 = list(np.clip(problem.params(start), np.array(lo) + 1e-6, np.array(hi) - 1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = least_squares(problem.residuals, x0, jac=problem.jacobian, bounds=(lo, hi), method="trf",
                               max_nfev=400)
    if not np.all(np.isfinite(result.x)):
        return None
    # the prior counts in the comparison
    return problem.curve(result.x), float(np.sum(result.fun**2) * problem.scale_y**2)


def fit_curve_fixed_decay(spend: Array, y: Array, decay: float, forms: tuple[Form, ...],
                          start: ResponseCurve | None = None) -> ResponseCurve:
    best: tuple[ResponseCurve, float] | None = None
    for form in forms:
        fitted = _fit_at_decay(spend, y, decay, form, start)
        if fitted and (best is None or fitted[1] < best[1]):
            best = fitted
    if best is None:
        raise CurveFitError("curve fit failed")
    return best[0]


def spend_cv(spend: Array) -> float:
    """How much spend varied: its coefficient of variation (0 for a channel that never spent).
    Under MIN_SPEND_CV a curve's shape cannot be learned from it."""
    return float(spend.std() / spend.mean()) if spend.mean() > 0 else 0.0


def fit_response_curve(
    spend: Array,
    conversions: Array,
    *,
    name: str = "channel",
    forms: tuple[Form, ...] = ("hill", "exponential"),
    n_boot: int = 40,
    seed: int = 0,
    block: int = 7,
) -> CurveFit:
    """Fit adstock + saturation to one daily series; fall back to a conservative curve when the
    spend did not vary enough to show a shape."""
    x = np.asarray(spend, dtype=float)
    y = np.asarray(conversions, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise CurveFitError(f"{name}: spend and conversions must be 1-D series of the same length")
    if (x < 0).any() or (y < 0).any():
        raise CurveFitError(f"{name}: spend and conversions must be non-negative")
    active = int((x > 0).sum())
    cv = spend_cv(x)
    if active == 0:  # no spend at all: nothing shows what money buys there (see `unspent_curve`)
        curve = unspent_curve()
        return CurveFit(name, curve, (curve,), _diagnostics(curve, x, y, cv, active), fallback=True,
                        warnings=(f"{name}: no spend in the {len(x)} days fitted; what its money buys is unknown, "
                                  "so the plan gives it only what its guardrails require",))
    problems = []
    if active < MIN_ACTIVE_DAYS:
        problems.append(f"{name}: only {active} days with spend (need {MIN_ACTIVE_DAYS})")
    if cv < MIN_SPEND_CV:
        problems.append(f"{name}: spend barely varied (coefficient of variation {cv:.2f} < {MIN_SPEND_CV})")
    if problems:
        curve = conservative_curve(x, y)
        diagnostics = _diagnostics(curve, x, y, cv, active)
        return CurveFit(name, curve, (curve,), diagnostics, fallback=True,
                        warnings=(*problems, f"{name}: using a conservative curve (saturating at today's spend)"))
    best: tuple[ResponseCurve, float] | None = None
    neighbour: dict[str, ResponseCurve] = {}
    for decay in DECAY_GRID:
        for form in forms:
            fitted = _fit_at_decay(x, y, float(decay), form, neighbour.get(form))
            if fitted:
                neighbour[form] = fitted[0]
            if fitted and (best is None or fitted[1] < best[1]):
                best = fitted
    if best is None:
        raise CurveFitError(f"{name}: curve fit failed")
    curve = best[0]
    draws = _bootstrap(curve, x, y, n_boot=n_boot, seed=seed, block=block)
    diagnostics = _diagnostics(curve, x, y, cv, active)
    notes = []
    if diagnostics.r2 < 0.2:
        notes.append(f"{name}: weak fit (R^2 {diagnostics.r2:.2f}): spend explains little of the conversions")
    if not curve.is_concave:
        notes.append(f"{name}: S-shaped (Hill slope {curve.slope:.2f} > 1): optimized on its concave envelope")
    return CurveFit(name, curve, draws, diagnostics, warnings=tuple(notes))


def unspent_curve() -> ResponseCurve:
    """The curve of a channel that never spent in the data: no return from money. A curve through
    its conversions at a nominal spend (they came without spend: a channel's organic visits, or spend
    missing from the spend file) would promise those conversions for almost nothing."""
    return ResponseCurve("exponential", NO_RESPONSE, 1.0, 1.0, 0.0, 0.0)


def conservative_curve(spend: Array, conversions: Array) -> ResponseCurve:
    """Exponential curve through today's average point, already past its knee (marginal return
    at the average spend is e^-1 of the average), so the optimizer will not pour money into it.
    With at least MIN_BASELINE_DAYS days without spend, the point is the lift of the days with
    spend over those (the intercept): what came without spend is not bought by it. A channel that
    spent on 10 days of a year otherwise had its year's average, organic visits mostly, read as
    the return on its average spend."""
    active = spend > 0
    x_bar = float(spend[active].mean()) if active.any() else 1.0
    if active.any() and int((~active).sum()) >= MIN_BASELINE_DAYS:
        base = float(conversions[~active].mean())
        y_bar = max(float(conversions[active].mean()) - base, 0.0)
    else:  # always on: what came without spend cannot be told apart
        base, y_bar = 0.0, float(conversions.mean())
    k = x_bar  # with decay 0: a = x
    beta = y_bar / (1 - math.exp(-1.0)) if y_bar > 0 else NO_RESPONSE
    return ResponseCurve("exponential", beta, k, 1.0, 0.0, base)


def _diagnostics(curve: ResponseCurve, x: Array, y: Array, cv: float, active: int) -> FitDiagnostics:
    resid = y - curve.fitted(x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 0.0
    lag1 = float(np.corrcoef(resid[:-1], resid[1:])[0, 1]) if len(resid) > 2 and resid.std() > 0 else 0.0
    return FitDiagnostics(round(r2, 4), round(lag1, 4), round(cv, 4), active, len(x))


def _bootstrap(curve: ResponseCurve, x: Array, y: Array, *, n_boot: int, seed: int, block: int) -> tuple[
        ResponseCurve, ...]:
    """Residual moving-block bootstrap: refit on fitted + resampled residual blocks (decay held)."""
    if n_boot <= 0:
        return (curve,)
    fitted = curve.fitted(x)
    # No clipping at zero: clipping inflates low counts and would bias every draw's intercept up.
    return tuple(fit_curve_fixed_decay(x, fitted + sample, curve.decay, (curve.form,), curve)
                 for sample in block_resamples(y - fitted, n_boot=n_boot, seed=seed, block=block))


def block_resamples(resid: Array, *, n_boot: int, seed: int, block: int) -> Iterator[Array]:
    """`n_boot` moving-block resamples of a residual series (blocks keep its autocorrelation)."""
    rng = np.random.default_rng(seed)
    n = len(resid)
    for _ in range(n_boot):
        starts = rng.integers(0, max(n - block, 1), size=n // block + 1)
        yield np.concatenate([resid[s : s + block] for s in starts])[:n]


# ------------------------------------------------------------------ many curves at once

SMALL_PROBLEM_LINES = 128  # up to here bisect_spend evaluates many points per call (break-even ~250)
NEWTON_STEPS = 60  # an upper bound: from the right a step never overshoots; the bench needs 6-12


def bisect_spend(marginal: Callable[[Array], Array], lam: float, lower: Array, upper: Array,
                 iterations: int = 60) -> Array:
    """Spend in [lower, upper] where `marginal` (non-increasing) meets `lam`, line by line, for
    curves without a solution in closed form (averaged bootstrap draws).

    Bisects on w in [0, 1] with spend = lower + (upper - lower) * w**4, which is as fine near the
    lower bound as a log scale: curves with a steep marginal near zero (Hill slope < 1) often
    settle at tiny spends that a plain bisection cannot resolve. A few lines are cut in 16 at a time
    (15 points in one call, four bisection steps at once): their cost is numpy's per-call overhead,
    and the solve makes thousands of these calls.
    """
    span = upper.astype(float) - lower
    at_lower = marginal(lower.astype(float)) <= lam
    at_upper = marginal(upper.astype(float)) >= lam
    sections = 16 if len(span) <= SMALL_PROBLEM_LINES else 2
    points = np.arange(1, sections)[:, None]
    lo_w, width = np.zeros_like(span), 1.0
    for _ in range(-(-iterations // (sections.bit_length() - 1))):
        width /= sections
        w = lo_w + width * points
        # marginal is non-increasing in w: the points above lam are the first ones
        lo_w = lo_w + width * (marginal(lower + span * w**4) > lam).sum(axis=0)
    x = np.where(at_lower, lower, lower + span * (lo_w + 0.5 * width) ** 4)
    return np.asarray(np.where(at_upper & ~at_lower, upper, x))


@dataclass(frozen=True)
class CurveSet:
    """Curves for many lines as arrays, for vectorized marginal returns and their inverse."""

    names: tuple[str, ...]
    is_hill: NDArray[np.bool_]
    beta: Array
    k: Array
    slope: Array
    scale: Array  # 1 - decay
    tangent: Array
    chord: Array

    @classmethod
    def from_curves(cls, names: list[str] | tuple[str, ...], curves: list[ResponseCurve]) -> CurveSet:
        tangent = np.array([c.tangent_spend() for c in curves])
        chord = np.array([float(c.response(t)) / t if t > 0 else 0.0 for c, t in zip(curves, tangent, strict=True)])
        return cls(
            names=tuple(names),
            is_hill=np.array([c.form == "hill" for c in curves]),
            beta=np.array([c.beta for c in curves]), k=np.array([c.k for c in curves]),
            slope=np.array([c.slope for c in curves]), scale=np.array([1.0 - c.decay for c in curves]),
            tangent=tangent, chord=chord,
        )

    def subset(self, idx: np.ndarray) -> CurveSet:
        names = tuple(self.names[i] for i in idx) if self.names else ()
        return CurveSet(names, self.is_hill[idx], self.beta[idx], self.k[idx],
                        self.slope[idx], self.scale[idx], self.tangent[idx], self.chord[idx])

    @property
    def draw_count(self) -> int:
        return 1

    def within(self, upper: Array) -> CurveSet:
        """The concave envelopes of the curves cut at `upper`: an S-curve whose tangent point lies above
        its line's bound is all foot there, and its envelope is the chord to the bound (the chord to
        the tangent point would promise returns the line cannot reach)."""
        over = self.tangent > upper
        if not over.any():
            return self
        tangent = np.where(over, upper, self.tangent)
        with np.errstate(divide="ignore", invalid="ignore"):
            chord = np.where(over, np.where(tangent > 0, self.curve_response(tangent) / tangent, 0.0), self.chord)
        return replace(self, tangent=tangent, chord=chord)

    def curve_response(self, x: Array) -> Array:
        """Steady-state daily conversions on the curves themselves (what spend really buys)."""
        return np.asarray(self.beta * saturation(np.maximum(x, 0.0) / self.scale, self.is_hill, self.k, self.slope))

    def response(self, x: Array) -> Array:
        """Steady-state daily conversions on the concave envelope (below an S-curve's tangent point the
        chord from the origin): what the multiplier search works on."""
        return np.asarray(np.where(x < self.tangent, x * self.chord, self.curve_response(x)))

    def curve_marginal(self, x: Array) -> Array:
        """d curve_response / d spend (the curve's own slope, below the tangent point too)."""
        return _finite(marginal_response(x, self.is_hill, self.beta, self.k, self.slope, self.scale))

    def marginal(self, x: Array) -> Array:
        d = marginal_response(x, self.is_hill, self.beta, self.k, self.slope, self.scale)
        return _finite(np.where(x < self.tangent, self.chord, d))

    def spend_at(self, lam: float, lower: Array, upper: Array) -> Array:
        """Spend in [lower, upper] where the envelope's marginal return meets `lam`, line by line:
        in closed form for exponential curves; for Hill curves by Newton's method on
        g(t) = log marginal - log lam with t = log(a / k), which is concave and falls wherever the
        envelope follows the curve, so started at the upper bound its steps approach the root
        from the right without overshooting. An S-curve's envelope is its chord below the tangent
        point: a multiplier at or above the chord buys nothing there."""
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        at_lower = self.marginal(lower) <= lam
        at_upper = self.marginal(upper) >= lam
        inside = ~(at_lower | at_upper)
        x = np.where(at_lower, lower, upper)
        if not inside.any():
            return x
        idx = np.where(inside)[0]
        k, c = self.k[idx], self.scale[idx]
        hill = np.where(self.is_hill[idx])[0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            level = np.log(self.beta[idx] / (k * c * lam))
            root = k * c * level  # exponential: beta / (k c) * exp(-a / k) = lam
            if len(hill):  # Newton on the Hill lines only
                s, kc = self.slope[idx][hill], (k * c)[hill]
                offset = level[hill] + np.log(s)
                t = np.log(upper[idx][hill] / kc)
                for _ in range(NEWTON_STEPS):
                    g = offset + (s - 1) * t - 2 * np.logaddexp(0.0, s * t)
                    step = g / ((s - 1) - 2 * s / (1 + np.exp(-s * t)))
                    t = t - step
                    if not np.any(np.abs(step) > 1e-13 * np.maximum(np.abs(t), 1.0)):
                        break
                root[hill] = kc * np.exp(t)
            # On an S-curve's foot the envelope's marginal is the chord: at or above it, nothing
            footed = self.tangent[idx] > 0
            root = np.where(footed & (lam >= self.chord[idx]), 0.0, np.maximum(root, self.tangent[idx]))
        x[idx] = np.clip(root, lower[idx], upper[idx])
        lost = idx[~np.isfinite(x[idx])]
        if len(lost):  # an overflow the closed form cannot survive: the bisection always can
            x[lost] = bisect_spend(self.subset(lost).marginal, lam, lower[lost], upper[lost])
        return x


@dataclass(frozen=True)
class MeanCurves:
    """The average of several curve sets (bootstrap draws): still concave, so still solved exactly."""

    draws: tuple[CurveSet, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.draws[0].names

    @property
    def tangent(self) -> Array:
        return np.asarray(np.max([d.tangent for d in self.draws], axis=0))

    def subset(self, idx: np.ndarray) -> MeanCurves:
        return MeanCurves(tuple(d.subset(idx) for d in self.draws))

    @property
    def draw_count(self) -> int:
        return len(self.draws)

    def within(self, upper: Array) -> MeanCurves:
        return MeanCurves(tuple(d.within(upper) for d in self.draws))

    def curve_response(self, x: Array) -> Array:
        return np.asarray(np.mean([d.curve_response(x) for d in self.draws], axis=0))

    def curve_marginal(self, x: Array) -> Array:
        return np.asarray(np.mean([d.curve_marginal(x) for d in self.draws], axis=0))

    def response(self, x: Array) -> Array:
        return np.asarray(np.mean([d.response(x) for d in self.draws], axis=0))

    def marginal(self, x: Array) -> Array:
        return np.asarray(np.mean([d.marginal(x) for d in self.draws], axis=0))

    def spend_at(self, lam: float, lower: Array, upper: Array) -> Array:
        return bisect_spend(self.marginal, lam, lower, upper)


def solve_tangent_numeric(curve: ResponseCurve) -> float:
    """Numeric tangent point of an S-curve: where the chord from the origin meets the raw derivative."""
    if curve.is_concave:
        return 0.0
    c = 1.0 - curve.decay

    def gap(x: float) -> float:
        derivative = marginal_response(np.asarray(x), True, curve.beta, curve.k, curve.slope, c)
        return float(curve.response(x)) / x - float(derivative)

    upper = curve.k * 50 * c
    return float(brentq(gap, upper * 1e-4, upper))
