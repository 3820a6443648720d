"""PyMC-Marketing as an optional engine for the joint media-mix model (`pip install 'flashcast[bayes]'`,
`flashcast allocate FILE --engine bayes`).

The model is PyMC-Marketing's own (`pymc_marketing.mmm.multidimensional.MMM`): an intercept, yearly
Fourier terms (with more than a year and a half of data), the controls (plus day-of-week indicators
for daily data), and per channel a normalized geometric adstock and a logistic saturation, sampled
with NUTS. Its posterior is turned into what the rest of Flashcast takes, a `MixModel`:

- At a steady spend x per period, a normalized adstock equals x, so channel c returns
  `beta_c * target_scale * logistic(lam_c * x / channel_scale_c)` per period. Each channel's curve is
  the posterior mean of that response over a grid up to three times its largest spend, expressed as
  the Hill curve closest to it (the form the exact optimizer takes); each of `curve_draws` posterior
  draws gives one more curve, which carries the posterior's uncertainty into the plan's intervals.
- The decomposition is the posterior mean of each part; R^2 is in sample. There is no held-out
  check: it would take a second sampling run. Sampling problems (R-hat over 1.05, divergences) are
  noted, not hidden.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from flashcast.budget.curves import Array, ResponseCurve, fit_curve_fixed_decay
from flashcast.budget.mmm import (
    ChannelEffect,
    MixData,
    MixModel,
    interval_80,
    is_unsaturated,
    no_effect_notes,
    r_squared,
    refuse_twins,
)
from flashcast.errors import CurveFitError

GRID_POINTS = 120
GRID_REACH = 3.0  # the curve is matched up to this multiple of the channel's largest spend


def _logistic(z: Array) -> Array:
    return np.asarray((1 - np.exp(-z)) / (1 + np.exp(-z)))


def fit_mix_bayes(data: MixData, dates: Sequence[object] | pd.Series, *, draws: int = 500, tune: int = 500,
                  chains: int = 2, seed: int = 0, curve_draws: int = 20) -> MixModel:
    """Sample PyMC-Marketing's model of `data` and summarize it as a MixModel (see the module)."""
    refuse_twins(data)
    try:
        with warnings.catch_warnings():
            # ArviZ 0.23.4 announces its coming refactor with a FutureWarning on import: nothing a
            # Flashcast user can act on (and under warnings-as-errors it stopped the engine)
            warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
            from pymc_marketing.mmm import GeometricAdstock, LogisticSaturation
            from pymc_marketing.mmm.multidimensional import MMM
    except ImportError as exc:
        raise CurveFitError("the bayes engine needs PyMC-Marketing: pip install 'flashcast[bayes]'") from exc
    channels = tuple(data.spend)
    daily = data.periods_per_year > 300
    frame = pd.DataFrame({"date": pd.to_datetime(pd.Series(list(dates))).to_numpy(),
                          **{c: np.asarray(v, dtype=float) for c, v in data.spend.items()}})
    controls = [f"control_{i}" for i in range(len(data.controls))]
    for name, values in zip(controls, data.controls.values(), strict=True):
        frame[name] = np.asarray(values, dtype=float)
    if daily:  # PyMC-Marketing has no weekly season of its own: day-of-week indicators as controls
        for day in range(1, 7):
            frame[f"weekday_{day}"] = (frame["date"].dt.dayofweek == day).astype(float)
            controls.append(f"weekday_{day}")
    y = pd.Series(np.asarray(data.outcome, dtype=float), name="y")
    model = MMM(date_column="date", channel_columns=list(channels), control_columns=controls or None,
                adstock=GeometricAdstock(l_max=14 if daily else 8), saturation=LogisticSaturation(),
                yearly_seasonality=2 if data.n >= 1.5 * data.periods_per_year else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(frame, y, chains=chains, draws=draws, tune=tune, random_seed=seed, progressbar=False,
                  cores=min(chains, 2))
    idata = model.idata
    if idata is None:
        raise CurveFitError("PyMC-Marketing returned no posterior")
    posterior = idata["posterior"]
    target_scale = float(model.scalers["_target"])
    channel_scale = np.asarray(model.scalers["_channel"].sel(channel=list(channels)), dtype=float)

    def stacked(name: str) -> np.ndarray:
        # (samples, ...) with chains and draws flattened
        values = posterior[name].stack(sample=("chain", "draw")).transpose("sample", ...)
        return np.asarray(values, dtype=float)

    lam = stacked("saturation_lam").reshape(-1, len(channels))
    beta = stacked("saturation_beta").reshape(-1, len(channels))

    def mean_of(name: str) -> Array:
        """Posterior mean of a contribution over dates (summed over its other axis), original units."""
        if name not in posterior:
            return np.zeros(data.n)
        values = stacked(name).mean(axis=0)
        return np.asarray((values.sum(axis=1) if values.ndim == 2 else values) * target_scale, dtype=float)

    contributions = stacked("channel_contribution") * target_scale  # (sample, date, channel)
    contribution = contributions.mean(axis=0)
    totals = contributions.sum(axis=1)  # (sample, channel): each draw's total over the data
    control_part = mean_of("control_contribution")
    baseline = mean_of("intercept_contribution") + mean_of("yearly_seasonality_contribution")
    fitted = baseline + control_part + contribution.sum(axis=1)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(lam), size=min(curve_draws, len(lam)), replace=False)
    effects = {}
    total = max(float(fitted.sum()), 1e-9)
    for i, c in enumerate(channels):
        top = float(np.max(data.spend[c]))  # the curves carry no adstock: steady spend is the adstock
        grid = np.linspace(0.0, GRID_REACH * top, GRID_POINTS)
        per_draw = beta[:, i, None] * target_scale * _logistic(lam[:, i, None] * grid[None, :] / channel_scale[i])
        curve = _as_hill(grid, per_draw.mean(axis=0))
        effects[c] = ChannelEffect(c, curve, float(contribution[:, i].sum() / total), is_unsaturated(curve, top),
                                   tuple(_as_hill(grid, per_draw[j]) for j in picks) or (curve,),
                                   interval_80(totals[:, i]))
    decomposition = {"baseline": baseline, "controls": control_part,
                     **{c: contribution[:, i] for i, c in enumerate(channels)}, "fitted": fitted,
                     "actual": np.asarray(data.outcome, dtype=float)}
    notes = ["PyMC-Marketing (NUTS, "
             f"{chains} chains x {draws} draws): no held-out check (it would take a second sampling run)"]
    notes += _sampling_notes(idata) + no_effect_notes(effects)
    r2 = r_squared(np.asarray(data.outcome, dtype=float), fitted)
    return MixModel(channels, effects, round(r2, 4), None, float((baseline + control_part).sum() / total),
                    decomposition, tuple(notes))


def _as_hill(grid: Array, response: Array) -> ResponseCurve:
    """The Hill curve (no carry-over: the grid is steady-state spend) closest to a response curve."""
    if float(np.max(response)) <= 1e-12:
        return ResponseCurve("hill", 0.0, float(grid[-1]) or 1.0, 1.0, 0.0, 0.0)
    return fit_curve_fixed_decay(grid, response, 0.0, ("hill",))


def _sampling_notes(idata: object) -> list[str]:
    import arviz as az

    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # R-hat of a constant draw divides by zero: NaN, skipped
        rhat = az.rhat(idata)
    worst = max(float(np.nanmax(np.asarray(rhat[v]))) for v in ("adstock_alpha", "saturation_lam", "saturation_beta"))
    if worst > 1.05:
        notes.append(f"sampling did not settle (R-hat up to {worst:.2f}): more draws (--draws) may be needed")
    divergent = int(np.asarray(idata.sample_stats["diverging"]).sum())  # type: ignore[attr-defined]
    if divergent:
        notes.append(f"{divergent} divergent transitions in sampling: read the curves with care")
    return notes
