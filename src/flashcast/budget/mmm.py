"""A joint media-mix model: one pooled outcome explained by a baseline, controls and every channel
at once, each channel through adstock and a Hill saturation with a non-negative effect.

    y_t = intercept + trend * t + seasonality_t + controls_t . gamma
          + sum_c beta_c * hill(adstock(spend_c, decay_c)_t; k_c, s_c) + noise,     beta_c >= 0

Fitted the way Robyn and PyMC-Marketing frame it, by penalized least squares rather than MCMC: for
fixed curve shapes (decay, half-saturation k, slope s per channel) the model is linear, so the
baseline, control and channel coefficients come from bounded linear least squares (`lsq_linear`,
beta >= 0); the shapes are searched with L-BFGS-B from several starts. Weak priors keep the search
honest where the data cannot decide: log(s) towards 0 (slope 1, concave) so an S-shape must be
earned, log(k) towards the channel's median active adstock so a half-saturation runs to its
bound only when the data insist, and the channels' effects towards 0 with the baseline free, so the
level an always-on channel shares with the intercept goes to the intercept. A channel whose spend
follows demand must also earn an S-shape on the held-out periods (see `_fit_earning_s_shapes`).

Uncertainty: a residual moving-block bootstrap refits the shapes (one search, from the fit's own)
and then the coefficients on each resample, so the curves' shapes are as uncertain as the data
leave them (holding them fixed gave 80% intervals of channel returns that held the truth for 32%
of the benchmark's channels: docs/allocation.md). The diagnostics are meant to stop or cap an
allocation, not decorate it: out-of-sample R^2 on the last fifth of the periods (shapes and
coefficients refitted on the first four fifths), each channel's share of the fitted outcome, and
which curves are `unsaturated`: still nearly straight (elasticity of at least 0.8) at the largest
spend in the data, so the data show no diminishing returns and the curve must not be extrapolated.

Two forms of channel effect (`form`): `additive`, as above, and `proportional`, where each
channel's term is multiplied by the baseline's level m_t (1 plus the additive fit's baseline and
controls as a departure from their mean, relative to the mean outcome): the same ad buys more when
demand is high (a season, a promotion), as in multiplicative media-mix models. When spend also
follows demand, the additive form credits the channel with the season and mis-shapes its curve.
`auto` (the default) fits both and keeps the proportional one only when it predicts the
held-out periods clearly better (FORM_MARGIN). A proportional curve is read at the recent level of
m (the last four weeks), the level tomorrow's budget meets.

Each channel's curve is a `ResponseCurve` (the same steady-state definition as the per-channel fit),
so the exact optimizer and the what-if sweep take the model as they take per-channel fits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import lsq_linear, minimize

from flashcast.budget.curves import (
    Array,
    CurveFit,
    FitDiagnostics,
    ResponseCurve,
    adstock,
    block_resamples,
    saturation,
)
from flashcast.errors import CurveFitError

DECAY_MAX = 0.9
K_RANGE = (0.05, 5.0)  # half-saturation as a multiple of the channel's median active adstock
SLOPE_RANGE = (0.5, 3.0)
# Prior standard deviations, on log scales: log(slope) ~ N(0, 0.35) (slope 1; 2.0 is two sd away),
# log(k / median active adstock) ~ N(0, 1.5); and a weak one on the carry-over. The slope's prior is
# the tighter one because a false S-shape costs most: a concave curve with a sharp knee (a logistic)
# read as an S-shape gets nothing at small budgets. 0.35 against 0.5 (and 0.25) on two benchmarks
# of different generators: fewer plans below their baseline and better worst cases (docs/allocation.md).
SLOPE_PRIOR_SD = 0.35
K_PRIOR_SD = 1.5
DECAY_PRIOR_SD = 1.0  # on the logit of decay / DECAY_MAX: centred on 0.45, 95% within 0.1..0.8
# A channel's effect (its curve's maximum) ~ N(0, (EFFECT_PRIOR_SD x the outcome's standard deviation)^2),
# truncated at 0; the baseline's coefficients are free. So where the data cannot tell a channel's
# level from the baseline's (a channel always on: only its variation is seen), the level goes to the
# baseline rather than into a curve that would promise too much at spends below the data. 4 was chosen
# among 0.5, 1, 2.5, 4 and 8 on 40 logistic worlds (docs/allocation.md); tighter ones shrink real effects.
EFFECT_PRIOR_SD = 4.0
HOLDOUT_SHARE = 0.2
UNSATURATED_ELASTICITY = 0.8
MIN_PERIODS = 26
FORMS = ("additive", "proportional")
FORM_CHOICES = (*FORMS, "auto")  # what `fit_mix(form=...)` and `flashcast allocate --effects` take
FORM_MARGIN = 0.02  # `auto` keeps the additive form unless the proportional one cuts held-out error by 2%
# A channel whose spend correlates this much with the fitted baseline and controls must earn an
# S-shape on the held-out periods (see _fit_earning_s_shapes). In the benchmark's pooled worlds (a
# linear regression's baseline) the independently flighted channels stay under 0.23 in nine cases
# of ten (largest 0.45); the one whose spend follows demand reaches 0.55. The one value tried.
DEMAND_LED_CORRELATION = 0.5
S_SHAPED_SLOPE = 1.05  # a Hill slope above this is an S-shape (not a rounding hair over 1)
TWIN_CORRELATION = 0.98  # a spend column this correlated with another column is refused (refuse_twins)
# A resample's search stops when the objective moves by less than this share: the draws' spread
# dwarfs what the last iterations refine (L-BFGS-B's default, 2.2e-9, took a median of 22
# iterations a draw, this 15, and moved the channels' 80% intervals by under 2%; 1e-5 took 11 and
# moved one end by 5%).
BOOTSTRAP_FTOL = 1e-6
PRIOR_DRAW_STREAM = 1  # the random stream of the draws' prior centres, apart from the resamples' (seed)
MIN_LEVEL = 0.1  # the proportional form's m_t floor: a baseline near or below zero must not flip an effect


@dataclass(frozen=True)
class MixData:
    """A dated series of one outcome, spend per channel and optional controls (oldest first)."""

    periods_per_year: float  # 365.25 for daily data, 52.18 for weekly
    outcome: Array
    spend: dict[str, Array]
    controls: dict[str, Array] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.outcome)


@dataclass(frozen=True)
class ChannelEffect:
    channel: str
    curve: ResponseCurve
    share: float  # of the fitted outcome over the data
    unsaturated: bool  # still nearly straight at the largest spend seen: no diminishing returns in the data
    draws: tuple[ResponseCurve, ...]
    # 80% interval of the channel's total contribution over the data (bootstrap or posterior); None
    # without draws
    contribution_interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class MixModel:
    """The fitted model: per-channel effects, the decomposition over the data and its diagnostics."""

    channels: tuple[str, ...]
    effects: dict[str, ChannelEffect]
    r2: float
    r2_holdout: float | None
    baseline_share: float
    decomposition: dict[str, Array]  # "baseline", "controls", each channel, "fitted", "actual"
    notes: tuple[str, ...]
    form: str = "additive"  # how channel effects enter: see FORMS
    # On the held-out periods: 1 - the model's squared error over that of the same baseline and
    # controls without the channels (refitted alike); what the channels add out of sample.
    channel_skill: float | None = None

    def curve_fits(self) -> dict[str, CurveFit]:
        """Each channel's curve as the allocator takes it (bootstrap draws included)."""
        fits = {}
        for c in self.channels:
            effect = self.effects[c]
            notes = []
            if effect.unsaturated:
                notes.append(f"{c}: no diminishing returns in the data (the curve is still nearly straight at the "
                             "largest spend): capped at its largest spend")
            if effect.curve.slope > S_SHAPED_SLOPE:
                notes.append(f"{c}: S-shaped (Hill slope {effect.curve.slope:.2f} > 1): optimized on its concave "
                             "envelope")
            diagnostics = FitDiagnostics(self.r2, 0.0, 0.0, 0, len(self.decomposition["actual"]))
            fits[c] = CurveFit(c, effect.curve, effect.draws, diagnostics, warnings=tuple(notes))
        return fits


def _baseline_design(n: int, periods_per_year: float, controls: dict[str, Array]) -> tuple[Array, list[str]]:
    """Intercept, trend, weekly (daily data) and yearly (over a year of data) Fourier terms, controls."""
    t = np.arange(n, dtype=float)
    columns, names = [np.ones(n), t / max(n - 1, 1)], ["intercept", "trend"]
    if periods_per_year > 300:  # daily: day of week
        for h in (1, 2, 3):
            columns += [np.sin(2 * np.pi * h * t / 7), np.cos(2 * np.pi * h * t / 7)]
            names += [f"week_sin{h}", f"week_cos{h}"]
    if n >= 1.5 * periods_per_year:
        for h in (1, 2):
            columns += [np.sin(2 * np.pi * h * t / periods_per_year), np.cos(2 * np.pi * h * t / periods_per_year)]
            names += [f"year_sin{h}", f"year_cos{h}"]
    for name, values in controls.items():
        v = np.asarray(values, dtype=float)
        sd = v.std()
        columns.append((v - v.mean()) / sd if sd > 0 else np.zeros(n))
        names.append(f"control:{name}")
    return np.column_stack(columns), names


@dataclass(frozen=True)
class _Shapes:
    decay: Array
    k: Array  # in spend units (of adstock)
    slope: Array


@dataclass(frozen=True)
class _PriorCentres:
    """Where a bootstrap draw centres the priors: the shape search's parameters (as `_pack` gives
    them; 0 at the fit) and each channel's effect (0 at the fit)."""

    shapes: Array
    effects: Array


def _pack(shapes: _Shapes, scale: Array) -> Array:
    """The search's parameters of `shapes` (the inverse of `_unpack`)."""
    decay = np.clip(shapes.decay / DECAY_MAX, 1e-9, 1 - 1e-9)
    return np.r_[np.log(decay / (1 - decay)), np.log(shapes.k / scale), np.log(shapes.slope)]


def _unpack(theta: Array, scale: Array) -> _Shapes:
    c = len(scale)
    decay = DECAY_MAX / (1 + np.exp(-theta[:c]))
    k = np.exp(theta[c:2 * c]) * scale
    slope = np.exp(theta[2 * c:])
    return _Shapes(decay, k, slope)


def _media(spend: Array, shapes: _Shapes, level: Array | None = None) -> Array:
    """Each channel's saturated adstock, times the baseline's level m_t in the proportional form."""
    media = np.column_stack([saturation(adstock(spend[:, i], shapes.decay[i]), True, shapes.k[i], shapes.slope[i])
                             for i in range(spend.shape[1])])
    return media if level is None else media * level[:, None]


def _solve_linear(base: Array, media: Array, y: Array, ridge: float, centre: Array | None = None) -> Array:
    """Baseline and channel coefficients by least squares, channel effects >= 0 and penalized by
    `ridge` x their squared distance from `centre` (the effect prior, centred on 0 unless a bootstrap
    draw moved it; as rows of a stacked design)."""
    c = media.shape[1]
    # Fast path (the shape search solves this thousands of times): the normal equations, whose answer
    # is the bounded one whenever no channel's effect comes out negative; bounded least squares
    # otherwise, or when the design is near singular (a control constant over these rows).
    design = np.hstack([base, media])
    gram = design.T @ design
    gram[-c:, -c:] += ridge * np.eye(c)
    target = np.zeros(c) if centre is None else centre
    rhs = design.T @ y
    rhs[-c:] += ridge * target
    try:
        diagonal = np.diag(np.linalg.cholesky(gram))  # fails unless positive definite
        coef = np.linalg.solve(gram, rhs) if diagonal.min() > 1e-6 * diagonal.max() else None
    except np.linalg.LinAlgError:
        coef = None
    if coef is not None and np.all(np.isfinite(coef)) and np.all(coef[-c:] >= 0):
        return np.asarray(coef)
    prior_rows = np.hstack([np.zeros((c, base.shape[1])), np.sqrt(ridge) * np.eye(c)])
    lower = np.r_[np.full(base.shape[1], -np.inf), np.zeros(c)]
    return np.asarray(lsq_linear(np.vstack([design, prior_rows]), np.r_[y, np.sqrt(ridge) * target],
                                 bounds=(lower, np.inf), method="bvls").x)


def _effect_ridge(base: Array, spend: Array, y: Array) -> float:
    """The effect prior's weight in a posterior mode: the noise variance (of a linear regression of
    the outcome on the baseline, controls and raw spend) over the prior's variance."""
    design = np.hstack([base, spend])
    noise = float(np.var(y - design @ np.linalg.lstsq(design, y, rcond=None)[0]))
    return noise / _effect_prior_sd(y) ** 2


def _effect_prior_sd(y: Array) -> float:
    """The effect prior's standard deviation, in the outcome's units."""
    return max(EFFECT_PRIOR_SD * float(np.std(y)), 1e-9)


def _theta_bounds(c: int, concave: frozenset[int] = frozenset()) -> list[tuple[float, float]]:
    """The search's bounds; the channels in `concave` keep a slope of at most 1."""
    slope = (float(np.log(SLOPE_RANGE[0])), float(np.log(SLOPE_RANGE[1])))
    return ([(-6.0, 6.0)] * c + [(float(np.log(K_RANGE[0])), float(np.log(K_RANGE[1])))] * c
            + [(slope[0], 0.0) if i in concave else slope for i in range(c)])


def _fit_shapes(base: Array, spend: Array, y: Array, scale: Array, *, starts: int, seed: int, ridge: float,
                level: Array | None = None, concave: frozenset[int] = frozenset(), start: Array | None = None,
                ftol: float = 2.2e-9, centres: _PriorCentres | None = None) -> _Shapes:
    """The shapes at the posterior mode, searched from `starts` points: `start` (or no carry-over,
    half-saturation at the median, slope 1) and random ones. `ftol`: L-BFGS-B's (its default).
    `centres`: the priors' centres, when a bootstrap draw moves them (see `_bootstrap`)."""
    c, n = spend.shape[1], len(y)
    y_scale = max(float(np.std(y)), 1e-9)
    shape_centre = np.zeros(3 * c) if centres is None else centres.shapes
    effect_centre = np.zeros(c) if centres is None else centres.effects

    def mse(theta: Array) -> float:
        shapes = _unpack(theta, scale)
        media = _media(spend, shapes, level)
        coef = _solve_linear(base, media, y, ridge, effect_centre)
        penalty = ridge * float(np.sum((coef[base.shape[1]:] - effect_centre) ** 2))
        return (float(np.sum((np.hstack([base, media]) @ coef - y) ** 2)) + penalty) / (n * y_scale ** 2)

    # A Gaussian likelihood with the noise variance of the plain start (slope 1, k at the median, no
    # carry-over) plus the priors: the penalty weighs as much as it would in a posterior mode.
    noise = max(mse(np.zeros(3 * c)), 1e-6)

    def objective(theta: Array) -> float:
        off = theta - shape_centre
        prior = (np.sum((off[2 * c:] / SLOPE_PRIOR_SD) ** 2) + np.sum((off[c:2 * c] / K_PRIOR_SD) ** 2)
                 + np.sum((off[:c] / DECAY_PRIOR_SD) ** 2))
        return mse(theta) + noise * prior / n

    rng = np.random.default_rng(seed)
    bounds = _theta_bounds(c, concave)
    best: tuple[float, Array] | None = None
    first = np.zeros(3 * c) if start is None else np.clip(start, [lo for lo, _ in bounds], [hi for _, hi in bounds])
    for i in range(starts):
        x0 = first if i == 0 else np.array([rng.uniform(lo, hi) for lo, hi in bounds]) * 0.7
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = minimize(objective, x0, method="L-BFGS-B", bounds=bounds, options={"maxiter": 200, "ftol": ftol})
        if best is None or result.fun < best[0]:
            best = (float(result.fun), np.asarray(result.x))
    assert best is not None
    return _unpack(best[1], scale)


def fit_mix(data: MixData, *, starts: int = 4, n_boot: int = 40, seed: int = 0, block: int | None = None,
            form: str = "auto") -> MixModel:
    """Fit the joint model; raises CurveFitError when the data cannot support one. `form`: one of
    FORMS, or `auto`: the proportional form where it cuts the held-out error by FORM_MARGIN."""
    if form not in FORM_CHOICES:
        raise ValueError(f"form must be one of {FORM_CHOICES}")
    channels = tuple(data.spend)
    if not channels:
        raise CurveFitError("no spend columns: nothing to allocate")
    if data.n < MIN_PERIODS:
        raise CurveFitError(f"{data.n} periods of data; a media-mix model needs at least {MIN_PERIODS}")
    y = np.asarray(data.outcome, dtype=float)
    spend = np.column_stack([np.asarray(data.spend[c], dtype=float) for c in channels])
    idle = [c for i, c in enumerate(channels) if not (spend[:, i] > 0).any()]
    if idle:
        raise CurveFitError(f"no spend at all in {idle}: their effect cannot be estimated; leave them out")
    refuse_twins(data)
    scale = np.array([float(np.median(spend[spend[:, i] > 0, i])) for i in range(len(channels))])
    base, base_names = _baseline_design(data.n, data.periods_per_year, data.controls)
    ridge = _effect_ridge(base, spend, y)
    # the proportional form's level comes from the additive fit: always fitted
    fits, shape_notes = {}, {}
    fits["additive"], shape_notes["additive"] = _fit_earning_s_shapes(
        "additive", base, spend, y, scale, channels, starts=starts, seed=seed, ridge=ridge)
    if form != "additive":
        fits["proportional"], shape_notes["proportional"] = _fit_earning_s_shapes(
            "proportional", base, spend, y, scale, channels, starts=starts, seed=seed, ridge=ridge,
            additive=fits["additive"])
    chosen = form
    if form == "auto":  # the proportional form must predict the held-out periods clearly better, not by noise
        clearly_better = fits["proportional"].holdout_error < (1 - FORM_MARGIN) * fits["additive"].holdout_error
        chosen = "proportional" if clearly_better else "additive"
    fit = fits[chosen]
    coef, fitted, level, media = fit.coef, fit.fitted, fit.level, fit.media
    r2 = r_squared(y, fitted)
    betas = coef[base.shape[1]:]
    contributions = media * betas
    split = len(base_names) - len(data.controls)  # baseline columns, then the controls'
    baseline = base[:, :split] @ coef[:split]
    control_part = base[:, split:] @ coef[split:base.shape[1]]
    total = max(float(fitted.sum()), 1e-9)
    draws = _bootstrap(base, spend, y, fit, scale, n_boot=n_boot, seed=seed, block=block or _block(data), ridge=ridge)
    # A proportional curve is read at the level the next periods meet: the last four weeks'.
    at = 1.0 if level is None else float(np.mean(level[-recent_periods(data.periods_per_year):]))
    effects, shapes = {}, fit.shapes
    for i, c in enumerate(channels):
        curve = ResponseCurve("hill", float(betas[i]) * at, float(shapes.k[i]), float(shapes.slope[i]),
                              float(shapes.decay[i]), 0.0)
        top = float(np.max(adstock(spend[:, i], shapes.decay[i])))
        effects[c] = ChannelEffect(
            c, curve, float(contributions[:, i].sum() / total), is_unsaturated(curve, top),
            tuple(ResponseCurve("hill", float(d.betas[i]) * at, float(d.shapes.k[i]), float(d.shapes.slope[i]),
                                float(d.shapes.decay[i]), 0.0) for d in draws)
            or (curve,),  # no bootstrap: the point curve is the one draw
            interval_80([float(d.betas[i]) * float(d.media[:, i].sum()) for d in draws]))
    notes = [*shape_notes[chosen], *no_effect_notes(effects)]
    if form == "auto":
        notes.append(_form_note(chosen, {f: x.r2_holdout for f, x in fits.items()}))
    decomposition = {"baseline": baseline, "controls": control_part,
                     **{c: contributions[:, i] for i, c in enumerate(channels)}, "fitted": fitted, "actual": y}
    if fit.r2_holdout is not None and fit.r2_holdout < 0 and fit.channel_skill is not None:
        notes.append(f"held-out periods: the model predicts them worse than their mean (R^2 {fit.r2_holdout:.2f}), "
                     f"the channels cut the error of the baseline and controls alone by {fit.channel_skill:.0%}")
    elif fit.channel_skill is not None and fit.channel_skill <= 0:
        notes.append(f"held-out periods: the channels do not predict them better than the baseline and controls "
                     f"alone (channel skill {fit.channel_skill:.2f}): their curves rest on the fitted periods only")
    return MixModel(channels, effects, round(r2, 4), None if fit.r2_holdout is None else round(fit.r2_holdout, 4),
                    float((baseline + control_part).sum() / total), decomposition, tuple(notes), chosen,
                    None if fit.channel_skill is None else round(fit.channel_skill, 4))


def refuse_twins(data: MixData) -> None:
    """A spend column that moves in step with another column (|r| >= TWIN_CORRELATION): the model
    cannot tell their effects apart, and would split the credit between them at random."""
    columns = {**{f"spend column {c!r}": np.asarray(v, dtype=float) for c, v in data.spend.items()},
               **{f"control {c!r}": np.asarray(v, dtype=float) for c, v in data.controls.items()}}
    names = list(columns)
    for i, first in enumerate(names[:len(data.spend)]):
        for second in names[i + 1:]:
            r = _correlation(columns[first], columns[second])
            if r is not None and abs(r) >= TWIN_CORRELATION:
                fix = "sum the two channels into one" if second.startswith("spend") else "leave one of them out"
                raise CurveFitError(f"{first} and {second} move together (r = {r:.3f}): the model cannot tell "
                                    f"their effects apart; {fix}")


def _correlation(a: Array, b: Array) -> float | None:
    """Pearson's r of two series; None when either is flat (r is undefined)."""
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else None


def _fit_earning_s_shapes(form: str, base: Array, spend: Array, y: Array, scale: Array, channels: tuple[str, ...],
                          *, starts: int, seed: int, ridge: float, additive: _FormFit | None = None
                          ) -> tuple[_FormFit, list[str]]:
    """`_fit_form`, where a channel whose spend moves with demand must earn an S-shape out of sample.

    When spend follows demand (budgets raised in the season), the days of high spend are days of
    high demand, and the part of demand the baseline and controls miss reads as a return that rises
    faster at high spend: an S-shape. So a channel whose spend correlates with the fitted baseline
    and controls (|r| >= DEMAND_LED_CORRELATION) keeps its S-shape only where it predicts the held-out
    periods better than the same model with that channel's curve concave; otherwise the concave fit
    is used. (On the pooled-outcome benchmark worlds an S-shape so read gave a channel nothing at one
    budget and two thirds of twice that budget.) Returns the fit and notes saying which was kept."""
    fit = _fit_form(form, base, spend, y, scale, starts=starts, seed=seed, ridge=ridge, additive=additive)
    baseline = base @ fit.coef[:base.shape[1]]
    led = {}
    for i, slope in enumerate(fit.shapes.slope):
        r = _correlation(spend[:, i], baseline) if slope > S_SHAPED_SLOPE else None
        if r is not None and abs(r) >= DEMAND_LED_CORRELATION:
            led[i] = r
    if not led:
        return fit, []
    concave = _fit_form(form, base, spend, y, scale, starts=starts, seed=seed, ridge=ridge, additive=additive,
                        concave=frozenset(led))
    earned = fit.r2_holdout is not None and fit.holdout_error < concave.holdout_error
    names = ", ".join(f"{channels[i]} (r = {r:.2f})" for i, r in led.items())
    if earned:
        return fit, [f"{names}: spend moves with the baseline and controls, and the S-shaped curve predicts the "
                     "held-out periods better than a concave one: kept"]
    return concave, [f"{names}: spend moves with the baseline and controls, so an S-shape may be demand read as "
                     "returns; a concave curve predicts the held-out periods as well: used instead"]


@dataclass(frozen=True)
class _FormFit:
    shapes: _Shapes
    level: Array | None  # m_t of the proportional form
    media: Array  # each channel's saturated adstock (times m_t in the proportional form)
    coef: Array
    fitted: Array
    r2_holdout: float | None
    holdout_error: float  # mean squared error on the held-out periods (in-sample when there are none)
    holdout_coef: Array | None  # the coefficients fitted without the held-out periods
    channel_skill: float | None = None  # see MixModel.channel_skill
    concave: frozenset[int] = frozenset()  # channels held to a slope of at most 1


def _fit_form(form: str, base: Array, spend: Array, y: Array, scale: Array, *, starts: int, seed: int, ridge: float,
              additive: _FormFit | None = None, concave: frozenset[int] = frozenset()) -> _FormFit:
    """One form fitted on all periods, and again on all but the held-out ones to score it. The
    proportional form takes its level from the `additive` fit (on the same periods). The channels
    in `concave` keep a slope of at most 1."""
    level = held_level = None
    if form == "proportional":
        assert additive is not None
        level = _level(base, y, additive.coef)
        if additive.holdout_coef is not None:
            held_level = _level(base, y, additive.holdout_coef, rows=_holdout_cut(len(y)))
    shapes = _fit_shapes(base, spend, y, scale, starts=starts, seed=seed, ridge=ridge, level=level, concave=concave)
    media = _media(spend, shapes, level)
    coef = _solve_linear(base, media, y, ridge)
    fitted = np.hstack([base, media]) @ coef
    held = None if form == "proportional" and held_level is None else _holdout(
        base, spend, y, scale, seed=seed, ridge=ridge, level=held_level, concave=concave)
    if held is None:
        return _FormFit(shapes, level, media, coef, fitted, None, float(np.mean((y - fitted) ** 2)), None,
                        concave=concave)
    return _FormFit(shapes, level, media, coef, fitted, *held, concave=concave)


def _level(base: Array, y: Array, coef: Array, *, rows: int | None = None) -> Array:
    """m_t: 1 plus the additive fit's baseline-and-controls departure from its mean, relative to the
    mean outcome (`coef` fitted on the first `rows` periods; m_t given over all), floored at
    MIN_LEVEL. Relative to the outcome, not to the baseline: where the channels carry most of the
    outcome, the baseline's own mean is small and ill-determined."""
    cut = slice(None, rows)
    level = base @ coef[:base.shape[1]]
    mean_y = float(np.mean(y[cut]))
    if not mean_y > 0:
        return np.ones(len(level))
    return np.maximum(1 + (level - float(np.mean(level[cut]))) / mean_y, MIN_LEVEL)


def recent_periods(periods_per_year: float) -> int:
    """The rows of the last four weeks: what 'recent' means for the plan (4 weekly rows, 28 daily)."""
    return 4 if periods_per_year < 300 else 28


def _form_note(chosen: str, r2_holdout: dict[str, float | None]) -> str:
    scores = ", ".join(f"{f} {r:.2f}" for f, r in r2_holdout.items() if r is not None) or "no held-out periods"
    what = ("channel effects proportional to the baseline's level (they buy more when demand is high)"
            if chosen == "proportional" else "channel effects added to the baseline")
    return f"model form: {what}; held-out R^2 {scores}"


def is_unsaturated(curve: ResponseCurve, top_adstock: float) -> bool:
    """Whether a Hill curve is still nearly straight at the largest adstock seen. Its elasticity
    there is 1 for a straight line and 0.5 for slope 1 at the half-saturation; at
    UNSATURATED_ELASTICITY or more the data show no diminishing returns."""
    sat_top = float(saturation(np.array([top_adstock]), True, curve.k, curve.slope)[0])
    return bool(curve.slope * (1 - sat_top) >= UNSATURATED_ELASTICITY)


def no_effect_notes(effects: dict[str, ChannelEffect]) -> list[str]:
    zero = [c for c, effect in effects.items() if effect.curve.beta <= 1e-12]
    return [f"no measurable effect for {zero}: the model gives them nothing beyond their lower bounds"] if zero else []


def interval_80(draws: Sequence[float] | Array) -> tuple[float, float] | None:
    """The 10th and 90th percentiles of draws (None without any)."""
    if len(draws) == 0:
        return None
    low, high = np.quantile(np.asarray(draws, dtype=float), [0.1, 0.9])
    return float(low), float(high)


def r_squared(y: Array, fitted: Array) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1 - float(((y - fitted) ** 2).sum()) / ss if ss > 0 else 0.0


def _holdout_cut(n: int) -> int:
    return round(n * (1 - HOLDOUT_SHARE))


def _holdout(base: Array, spend: Array, y: Array, scale: Array, *, seed: int, ridge: float,
             level: Array | None = None, concave: frozenset[int] = frozenset()
             ) -> tuple[float, float, Array, float | None] | None:
    """R^2, mean squared error and coefficients of a model fitted on all but the last HOLDOUT_SHARE
    of the periods, scored on those (the trend keeps its slope: the design is the full series'
    design, cut), and its channel skill: 1 - that error over the error of the baseline and controls
    alone, fitted on the same periods. `level`: the proportional form's m_t, from a fit on the same
    periods."""
    n = len(y)
    cut = _holdout_cut(n)
    if cut < MIN_PERIODS or n - cut < 4:
        return None
    # A control that never varies before the cut (an event, a promotion first run in the held-out
    # periods) is the intercept there: its coefficient is anyone's guess, and the held-out periods
    # would be scored on that guess. It is left out of this fit (column 0 is the intercept).
    idle = np.flatnonzero(np.ptp(base[:cut], axis=0) == 0)
    if len(idle[idle > 0]):
        base = base.copy()
        base[:, idle[idle > 0]] = 0.0
    shapes = _fit_shapes(base[:cut], spend[:cut], y[:cut], scale, starts=2, seed=seed, ridge=ridge,
                         level=None if level is None else level[:cut], concave=concave)
    media = _media(spend, shapes, level)  # adstock runs over the whole series: the holdout's carry-over is real
    coef = _solve_linear(base[:cut], media[:cut], y[:cut], ridge)
    predicted = np.hstack([base, media])[cut:] @ coef
    held = y[cut:]
    ss = float(((held - held.mean()) ** 2).sum())
    if not ss > 0:
        return None
    error = float(((held - predicted) ** 2).sum())
    alone = base[cut:] @ np.linalg.lstsq(base[:cut], y[:cut], rcond=None)[0]
    baseline_error = float(((held - alone) ** 2).sum())
    skill = 1 - error / baseline_error if baseline_error > 0 else None
    return 1 - error / ss, error / len(held), coef, skill


def _block(data: MixData) -> int:
    return 7 if data.periods_per_year > 300 else 4


@dataclass(frozen=True)
class _Draw:
    shapes: _Shapes
    betas: Array
    media: Array


def _bootstrap(base: Array, spend: Array, y: Array, fit: _FormFit, scale: Array, *, n_boot: int, seed: int,
               block: int, ridge: float) -> list[_Draw]:
    """On fitted + resampled residual blocks: the shapes searched again from the fit's own (one start:
    a resample's mode lies near the data's), then the coefficients. The proportional form keeps its
    level; channels held concave stay so.
    Each draw also moves the priors' centres by a draw from the priors themselves (randomize-then-
    optimize, or randomized maximum likelihood: for a linear Gaussian model, the mode of a problem
    with noise-perturbed data and prior-perturbed centres is an exact posterior draw). Resampling the
    residuals alone shows how the fit moves with the noise, not how far the priors hold it: the 80%
    intervals then held the truth for 61 of 120 plans on the benchmark's logistic worlds, 80 with
    the centres drawn (docs/allocation.md)."""
    theta = _pack(fit.shapes, scale)
    c = spend.shape[1]
    rng = np.random.default_rng([seed, PRIOR_DRAW_STREAM])
    spreads = np.r_[np.full(c, DECAY_PRIOR_SD), np.full(c, K_PRIOR_SD), np.full(c, SLOPE_PRIOR_SD)]
    effect_spread = _effect_prior_sd(y)
    draws = []
    for sample in block_resamples(y - fit.fitted, n_boot=n_boot, seed=seed, block=block):
        resampled = fit.fitted + sample
        centres = _PriorCentres(np.asarray(rng.normal(0.0, spreads)), np.asarray(rng.normal(0.0, effect_spread, c)))
        shapes = _fit_shapes(base, spend, resampled, scale, starts=1, seed=seed, ridge=ridge, level=fit.level,
                             concave=fit.concave, start=theta, ftol=BOOTSTRAP_FTOL, centres=centres)
        media = _media(spend, shapes, fit.level)
        coef = _solve_linear(base, media, resampled, ridge, centres.effects)
        draws.append(_Draw(shapes, coef[base.shape[1]:], media))
    return draws
