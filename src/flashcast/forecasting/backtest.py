"""Rolling-origin backtests, conformal bands and engine selection.

For each engine, origins are cut every `step` rows (days, or weeks for a weekly series) at the end
of the history; at each origin the engine forecasts `horizon` rows from the data before it. Bands
are conformal: at a scored origin, the errors of the `calibration` most recent earlier origins
*whose whole horizon was already observed* give quantiles per horizon step (pooled over neighbouring
steps), added to the point forecast. The origins used to calibrate are always strictly before the
origin scored, and a recent window (not all history) lets the bands widen after a level shift.
Errors are normalized by the series' recent spread (normalized conformal), and the miscoverage rates
adapt online (adaptive conformal inference). All levels come from the same error sample, so the 50%
band lies inside the 80% band inside the 95% band by construction.

Scores follow utilsforecast's metrics: MASE (MAE over the in-sample MAE of the weekly seasonal naive
forecast; of the naive one for a weekly series), sMAPE, scaled CRPS over the band quantiles, and
each band's coverage and width. The engine with the lowest mean MASE wins, except that a combination
in the line-up holds unless a single engine clearly beats it, and a 10x cheaper engine tied within a
standard error takes the winner's place; the leaderboard says why.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from flashcast.errors import ForecastError, HistoryTooShort
from flashcast.forecasting.engines import Engine, Ensemble, RollingEngine, is_intermittent, relative_cost
from flashcast.forecasting.series import DAILY, Cadence

LEVELS: tuple[int, ...] = (50, 80, 95)
# Conformal pools are sorted in single precision: a band's offsets are quantiles of a few hundred
# errors over the series' spread, resolved far more coarsely than 7 digits, and the sort (half of
# a selection's banding time) runs 2.5x faster.
POOL_DTYPE = np.float32
# Threads that band the line-up's engines: numpy's sorts, most of a selection's banding, release
# the GIL (a selection on a 600-day series took 0.18 s on one thread, 0.145 s on two). The workers
# of `forecast_each`'s process pool, which already keep every core busy, use one.
BAND_THREADS = min(2, os.cpu_count() or 1)
MIN_CALIBRATION = 8
SPREAD_RATIO = 8.0


@dataclass(frozen=True)
class BacktestSpec:
    horizon: int = 14
    step: int = 3
    origins: int = 90  # scored origins; the earliest `calibration` more only calibrate
    calibration: int = 60
    step_pool: int = 3  # pool errors of steps j-3..j+3 for step j's quantiles
    adapt_rate: float = 0.05  # adaptive conformal step (0: plain split conformal)
    spread_days: int = 28  # conformal scores are errors over the recent spread (0: raw errors)
    min_train: int = 60  # rows every backtest fit sees
    # the rows' cadence: its season is the lag of MASE's naive scale and of the spread's differences,
    # its year the span of the spread's floor
    cadence: Cadence = DAILY


WEEKLY_SPREAD_ROWS = 13  # a weekly series' recent spread: its last quarter's week-on-week differences
WEEKLY_MIN_TRAIN = 26


def for_cadence(spec: BacktestSpec, cadence: Cadence) -> BacktestSpec:
    """`spec` (written for daily series) for a series of `cadence`: for a weekly one an origin every
    week, the lags of a weekly series, its horizon counted in weeks."""
    if cadence == DAILY:
        return spec
    return replace(spec, step=1, cadence=cadence, min_train=WEEKLY_MIN_TRAIN,
                   spread_days=WEEKLY_SPREAD_ROWS if spec.spread_days else 0)


@dataclass(frozen=True)
class EngineScore:
    engine: str
    mase: float
    smape: float
    crps: float
    coverage: dict[int, float]
    width: dict[int, float]
    scored_origins: int
    seconds_per_fit: float
    per_origin_mase: tuple[float, ...] = ()
    rmsse: float = math.nan  # root mean squared scaled error: what an intermittent series is selected by
    per_origin_rmsse: tuple[float, ...] = ()

    def row(self) -> dict[str, object]:
        """One leaderboard row: the scores, each band's coverage and width, the cost."""
        return {"engine": self.engine, "mase": self.mase, "rmsse": self.rmsse, "smape": self.smape, "crps": self.crps,
                **{f"coverage_{k}": round(v, 4) for k, v in self.coverage.items()},
                **{f"width_{k}": round(v, 4) for k, v in self.width.items()},
                "scored_origins": self.scored_origins, "seconds_per_fit": self.seconds_per_fit}

    @staticmethod
    def columns() -> tuple[str, ...]:
        """The keys of `row`, in its order (a leaderboard with no rows still has its header)."""
        return ("engine", "mase", "rmsse", "smape", "crps", *(f"coverage_{k}" for k in LEVELS),
                *(f"width_{k}" for k in LEVELS), "scored_origins", "seconds_per_fit")


# Per banded origin, each level's (lower, upper) offsets; and the adapted rates after the last origin.
OriginBands = tuple[dict[int, dict[int, tuple[np.ndarray, np.ndarray]]], dict[int, float]]


@dataclass
class Backtest:
    """Per-engine origin forecasts and errors (rows: origins, columns: horizon steps)."""

    origins: list[pd.Timestamp]
    actual: np.ndarray
    scale: np.ndarray  # seasonal-naive in-sample MAE at each origin (the MASE denominator)
    rms_scale: np.ndarray  # its root mean square error (RMSSE's denominator)
    spread: np.ndarray  # recent spread at each origin (see `spread_terms`)
    floor: np.ndarray  # the spread's floor known at each origin
    points: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    _bands: dict[tuple[str, BacktestSpec], OriginBands] = field(default_factory=dict, repr=False, compare=False)

    def bands(self, engine: str, spec: BacktestSpec) -> OriginBands:
        """`origin_bands` of the engine's backtest errors, computed once: scoring every engine and
        banding the winner's forecast both need them (a fifth of a full selection's time)."""
        key = (engine, spec)
        if key not in self._bands:
            self._bands[key] = origin_bands(self.actual - self.points[engine], self.spread, self.floor, spec)
        return self._bands[key]


def _origin_indices(n: int, spec: BacktestSpec) -> list[int]:
    """Cut positions (exclusive end of the training data), oldest first."""
    total = spec.origins + spec.calibration
    last = n - spec.horizon
    cuts = [last - k * spec.step for k in range(total)]
    cuts = [c for c in cuts if c >= spec.min_train]  # every fit sees two months of days (half a year of weeks)
    return sorted(cuts)


_WARMED: set[str] = set()  # engines that have fitted once in this process


def run_backtest(y: np.ndarray, dates: pd.DatetimeIndex, engines: Sequence[Engine], spec: BacktestSpec) -> Backtest:
    # Hundreds of small least-squares fits: OpenBLAS's threads cost more than they save on matrices
    # this size (a full selection took 2-3x longer with them, on two busy cores).
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _run_backtest(y, dates, engines, spec)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries, found once: `threadpool_limits` scans every loaded library on
    each call (milliseconds in a process that has loaded Prophet and DuckDB)."""
    return ThreadpoolController()


def _run_backtest(y: np.ndarray, dates: pd.DatetimeIndex, engines: Sequence[Engine], spec: BacktestSpec) -> Backtest:
    cuts = _origin_indices(len(y), spec)
    # The first origin with a calibrated band (see `_calibration_rows`) must exist, or nothing is scored.
    needed = MIN_CALIBRATION + -(-spec.horizon // spec.step)
    if len(cuts) < needed:
        raise HistoryTooShort(f"history too short for a backtest: {len(y)} {spec.cadence.unit}s give {len(cuts)} "
                              f"origins ({needed} needed)")
    actual = np.array([y[c : c + spec.horizon] for c in cuts])
    scale, rms_scale = _seasonal_naive_errors(y, cuts, spec.cadence.season)
    spread, floor = spread_terms_at(y, cuts, spec)
    result = Backtest([dates[c - 1] for c in cuts], actual, scale, rms_scale, spread, floor)
    for engine in sorted(engines, key=lambda e: isinstance(e, Ensemble)):  # members before ensembles
        if isinstance(engine, Ensemble):
            result.points[engine.alias], result.seconds[engine.alias] = _ensemble_points(result, engine, y, dates,
                                                                                         cuts, spec)
            continue
        if isinstance(engine, RollingEngine):
            if engine.alias not in _WARMED:  # a process's first fit pays imports and compilation: not timed
                engine.point(y[: cuts[0]], dates[: cuts[0]], spec.horizon)
                _WARMED.add(engine.alias)
            start = time.perf_counter()
            every = engine.backtest_points(y, dates, cuts, spec.horizon)
            if every is not None:
                result.points[engine.alias] = every
                result.seconds[engine.alias] = (time.perf_counter() - start) / len(cuts)
                continue
        # The first fit pays any one-off compilation (statsforecast's numba): time the others.
        first = engine.point(y[: cuts[0]], dates[: cuts[0]], spec.horizon)
        start = time.perf_counter()
        rest = [engine.point(y[:c], dates[:c], spec.horizon) for c in cuts[1:]]
        result.points[engine.alias] = np.array([first, *rest])
        result.seconds[engine.alias] = (time.perf_counter() - start) / max(len(cuts) - 1, 1)
    return result


def _ensemble_points(result: Backtest, ensemble: Ensemble, y: np.ndarray, dates: pd.DatetimeIndex,
                     cuts: list[int], spec: BacktestSpec) -> tuple[np.ndarray, float]:
    """The ensemble at every origin: the mean of the forecasts of the members it takes there
    (`Ensemble.members_for` the history to the cut), those of the line-up as stored, any other
    (an intermittent origin's own member, or a member not in the line-up) fitted at the origins
    that need it. Returns the points and the seconds per fit (the members' sum)."""
    chosen = [ensemble.members_for(y[:c]) for c in cuts]
    points: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for member in {m.alias: m for members in chosen for m in members}.values():
        if member.alias in result.points:
            points[member.alias], seconds[member.alias] = result.points[member.alias], result.seconds[member.alias]
            continue
        rows = [i for i, members in enumerate(chosen) if member.alias in {m.alias for m in members}]
        start = time.perf_counter()
        every = (member.backtest_points(y, dates, [cuts[i] for i in rows], spec.horizon)
                 if isinstance(member, RollingEngine) else None)
        if every is None:
            every = np.array([member.point(y[: cuts[i]], dates[: cuts[i]], spec.horizon) for i in rows])
        seconds[member.alias] = (time.perf_counter() - start) / len(rows)
        points[member.alias] = np.full((len(cuts), spec.horizon), np.nan)
        points[member.alias][rows] = every
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, members in enumerate(chosen):
        groups.setdefault(tuple(m.alias for m in members), []).append(i)
    mean = np.empty((len(cuts), spec.horizon))
    for aliases, rows in groups.items():
        mean[rows] = np.mean([points[alias][rows] for alias in aliases], axis=0)
    return mean, sum(seconds.values())


def spread_terms(y: np.ndarray, spec: BacktestSpec) -> tuple[float, float]:
    """The series' recent spread and its floor, from the data before an origin.

    Recent spread: mean absolute week-on-week difference (the cadence's season apart) over the last
    `spec.spread_days` rows, each difference capped at 5x the last year's mean, so one spike does
    not blow up the bands. Floor: a tenth of the last year's mean difference, so a flat stretch (a
    channel that was off) cannot make the conformal scores explode. (1.0, 0.0) when normalization
    is off."""
    spread, floor = spread_terms_at(y, [len(y)], spec)
    return float(spread[0]), float(floor[0])


def spread_terms_at(y: np.ndarray, cuts: Sequence[int], spec: BacktestSpec) -> tuple[np.ndarray, np.ndarray]:
    """`spread_terms(y[:c])` for every cut c at once (from running sums of the differences)."""
    cut = np.asarray(cuts, dtype=np.int64)
    if not spec.spread_days:
        return np.ones(len(cut)), np.zeros(len(cut))
    lag = spec.cadence.season
    diffs = np.append(np.abs(y[lag:] - y[:-lag]), 0.0)  # diffs[i] = |y[i + lag] - y[i]|; one pad for short series
    running = np.r_[0.0, np.cumsum(diffs)]
    end = np.maximum(cut - lag, 0)  # the differences known at c are diffs[:end]
    first = np.maximum(end - spec.cadence.year, 0)
    year_mean = np.divide(running[end] - running[first], end - first, out=np.zeros(len(cut)), where=end > first)
    at = end[:, None] - spec.spread_days + np.arange(spec.spread_days)[None, :]
    recent = at >= 0
    capped = np.where(recent, np.minimum(diffs[np.maximum(at, 0)], 5 * year_mean[:, None]), 0.0)
    count = recent.sum(axis=1)
    spread = np.divide(capped.sum(axis=1), count, out=np.zeros(len(cut)), where=count > 0)
    return spread, 0.1 * year_mean


def _seasonal_naive_errors(y: np.ndarray, cuts: Sequence[int], lag: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The in-sample mean absolute and root mean squared errors of the seasonal naive forecast
    (`lag` rows back: 7 for daily series, 1 for weekly) on y[:c] for every cut c: MASE's scale, and
    RMSSE's (as the M5 competition scaled its intermittent series)."""
    end = np.maximum(np.asarray(cuts, dtype=np.int64) - lag, 0)
    difference = y[lag:] - y[:-lag]

    def mean_to_cut(values: np.ndarray) -> np.ndarray:
        running = np.r_[0.0, np.cumsum(values)]
        return np.divide(running[end], end, out=np.zeros(len(end)), where=end > 0)

    return (np.maximum(mean_to_cut(np.abs(difference)), 1e-9),
            np.maximum(np.sqrt(mean_to_cut(np.square(difference))), 1e-9))


def _calibration_rows(k: int, spec: BacktestSpec) -> slice | None:
    """Rows of origins whose horizon ended before origin k (steps of `spec.step` days apart)."""
    lag = -(-spec.horizon // spec.step)  # origins until a horizon is fully observed
    end = k - lag + 1
    if end < MIN_CALIBRATION:
        return None
    return slice(max(0, end - spec.calibration), end)


def adaptive_offsets(sample: np.ndarray, spec: BacktestSpec, alphas: dict[int, float]
                     ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Conformal offsets from a calibration sample of errors (origins x steps) at the adapted
    miscoverage rates `alphas`; then nested (a wider level never gets a narrower band)."""
    levels = sorted(alphas)  # narrow to wide
    return _by_level(levels, *_offsets(sample, spec, np.array([alphas[level] for level in levels])))


def _by_level(levels: list[int], lo: np.ndarray, hi: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(levels x steps) lower and upper offsets as {level: (lower, upper)}."""
    return {level: (lo[i], hi[i]) for i, level in enumerate(levels)}


def _offsets(sample: np.ndarray, spec: BacktestSpec, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`adaptive_offsets` as (levels x steps) arrays of lower and upper offsets, for rates `alphas`
    ordered narrow to wide."""
    m, h = sample.shape
    gather, last = _pool_layout(m, h, spec.step_pool)
    pooled = np.sort(np.append(sample.ravel(), np.nan).astype(POOL_DTYPE)[gather], axis=1)  # NaN pads sort last
    lo, hi = _pick(pooled[None], last[None], alphas[None])
    return lo[0], hi[0]


@functools.cache
def _pool_layout(m: int, h: int, pool: int) -> tuple[np.ndarray, np.ndarray]:
    """Where step j's pool (the errors of steps j-pool..j+pool, fewer at the ends) sits in a sample
    of m origins x h steps, flattened, as row j of an index array padded with index m*h; and the
    last index of each pool's own values once sorted. Every origin of a backtest asks for the same."""
    window = np.arange(-pool, pool + 1)
    step = np.arange(h)[:, None] + window[None, :]  # (h, 2 * pool + 1)
    flat = np.arange(m)[None, :, None] * h + step[:, None, :]  # (h, m, 2 * pool + 1)
    gather = np.where(((step >= 0) & (step < h))[:, None, :], flat, m * h).reshape(h, -1)
    last = m * (np.minimum(np.arange(h) + pool, h - 1) - np.maximum(np.arange(h) - pool, 0) + 1) - 1
    return gather, last


def origin_bands(errors: np.ndarray, spread: np.ndarray, floor: np.ndarray, spec: BacktestSpec) -> OriginBands:
    """Offsets for every backtest origin that has enough calibration history, adapting the
    miscoverage rates as each earlier horizon becomes observed (adaptive conformal inference, Gibbs
    & Candes 2021: each level's rate is nudged towards its target by the miss rate just seen); also
    returns the rates after the last horizon is observed (what the real future is banded with).

    Normalized conformal: at origin k the calibration errors are divided by their origins' (floored)
    spreads, bounded to within SPREAD_RATIO of k's, and the quantiles multiplied back by k's spread."""
    levels = sorted(LEVELS)  # narrow to wide
    targets = np.array([(100 - level) / 100 for level in levels])
    alphas = targets.copy()
    lag = -(-spec.horizon // spec.step)  # origins until a horizon is fully observed
    n, h = errors.shape
    first = next((k for k in range(n) if _calibration_rows(k, spec) is not None), n)  # banded: first..n-1
    banded = list(range(first, n))
    # Every origin's sorted pools at once; only picking the quantiles waits for the adapted rates.
    pools, last, scales = _sorted_pools(errors, spread, floor, spec, banded)
    lows = np.empty((len(banded), len(levels), h))
    highs = np.empty_like(lows)
    # Origin k's rates take the misses of origins up to k - lag, so `lag` origins at a time can be
    # banded together: their rates are the running sum (in order, as one at a time) of the updates
    # from origins already banded.
    for block in range(0, n + lag, lag):
        ks = np.arange(block, min(block + lag, n + lag))
        seen = ks - lag
        updates = np.zeros((len(ks), len(levels)))
        observed = (seen >= first) & (seen < n) if spec.adapt_rate > 0 else np.zeros(len(ks), dtype=bool)
        if observed.any():  # origins are consecutive: slices, not copies
            rows = slice(seen[observed][0] - first, seen[observed][-1] - first + 1)
            actual = errors[seen[observed][0] : seen[observed][-1] + 1, None, :]
            missed = ((actual < lows[rows]) | (actual > highs[rows])).mean(axis=2)
            updates[observed] = spec.adapt_rate * (targets - missed)
        rates = np.add.accumulate(np.vstack([alphas, updates]), axis=0)[1:]
        alphas = rates[-1]
        inside = (ks >= first) & (ks < n)
        if inside.any():
            rows = slice(ks[inside][0] - first, ks[inside][-1] - first + 1)
            lo, hi = _pick(pools[rows], last[rows], rates[inside])
            lows[rows], highs[rows] = lo * scales[rows, None, None], hi * scales[rows, None, None]
    return ({k: _by_level(levels, lows[i], highs[i]) for i, k in enumerate(banded)},
            {level: float(alphas[i]) for i, level in enumerate(levels)})


def _sorted_pools(errors: np.ndarray, spread: np.ndarray, floor: np.ndarray, spec: BacktestSpec, origins: list[int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each origin, the pooled calibration sample `_normalized` would sort, sorted (origins x
    steps x pool, NaN-padded at the end), the last valid index of each (origins x steps) and the
    origin's scale. One sort call for all origins."""
    m, h = spec.calibration, errors.shape[1]
    ends = np.array([_calibration_rows(k, spec).stop for k in origins], dtype=np.int64)  # type: ignore[union-attr]
    rows = ends[:, None] - m + np.arange(m)[None, :]  # right-aligned; rows before the first origin are absent
    valid = rows >= 0
    at = np.maximum(rows, 0)
    scale = np.maximum(np.maximum(spread[origins], floor[origins]), 1e-12)
    normalized = _over_spreads(errors[at], np.maximum(spread[at], floor[at]), scale[:, None])
    sample = np.where(valid[:, :, None], normalized, np.nan)
    gather, _ = _pool_layout(m, h, spec.step_pool)
    padded = np.concatenate([sample.reshape(len(origins), -1), np.full((len(origins), 1), np.nan)], axis=1,
                            dtype=POOL_DTYPE)
    pools = padded[:, gather]
    pools.sort(axis=2)  # in place: the pools are a fresh gather
    width = np.minimum(np.arange(h) + spec.step_pool, h - 1) - np.maximum(np.arange(h) - spec.step_pool, 0) + 1
    last = valid.sum(axis=1)[:, None] * width[None, :] - 1
    return pools, last, scale


def _pick(pools: np.ndarray, last: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The quantiles at rates `alphas` (origins x levels, narrow to wide) from sorted pools (origins
    x steps x values; `last`: origins x steps, each pool's last valid index): numpy's "lower" and
    "higher" quantile methods, conservative on both sides; then nested (a wider level never gets a
    narrower band). Returns origins x levels x steps lower and upper offsets."""
    tails = np.clip(alphas / 2, 1e-4, 0.4999)[:, :, None]
    origin = np.arange(len(pools))[:, None, None]
    step = np.arange(pools.shape[1])[None, None, :]
    lo = pools[origin, step, np.floor(tails * last[:, None, :]).astype(int)].astype(np.float64)
    hi = pools[origin, step, np.ceil((1 - tails) * last[:, None, :]).astype(int)].astype(np.float64)
    return np.minimum.accumulate(lo, axis=1), np.maximum.accumulate(hi, axis=1)


def normalized_offsets(errors: np.ndarray, spreads: np.ndarray, now: tuple[float, float], spec: BacktestSpec,
                       alphas: dict[int, float]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Conformal offsets in the series' units from calibration errors (origins x steps), their
    origins' (floored) spreads and today's (spread, floor)."""
    levels = sorted(alphas)  # narrow to wide
    return _by_level(levels, *_normalized(errors, spreads, now, spec, np.array([alphas[level] for level in levels])))


def _normalized(errors: np.ndarray, spreads: np.ndarray, now: tuple[float, float], spec: BacktestSpec,
                alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spread_now, floor_now = now
    scale = max(spread_now, floor_now, 1e-12)
    lo, hi = _offsets(_over_spreads(errors, spreads, scale), spec, alphas)
    return lo * scale, hi * scale


def _over_spreads(errors: np.ndarray, spreads: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """Calibration errors (..., origins, steps) over their origins' spreads (..., origins), at an
    origin whose own scale is `scale` (broadcast over the leading axes). An origin whose history
    was flat (spread 0) says nothing about scale: its errors count as they are. Any other origin's
    spread counts within a factor SPREAD_RATIO of `scale`."""
    spreads = np.where(spreads > 0, spreads, scale)
    return errors / np.clip(spreads, scale / SPREAD_RATIO, scale * SPREAD_RATIO)[..., None]


def nested_bands(point: np.ndarray, offsets: dict[int, tuple[np.ndarray, np.ndarray]], *, nonnegative: bool
                 ) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """The point and its bands (point + offsets), as delivered: for a series that cannot go below
    zero everything is clipped at zero, and then the narrowest band is widened to hold the point and
    every wider band to hold the narrower ones, so clipping never breaks the nesting."""
    floor = 0.0 if nonnegative else -np.inf
    clipped = np.maximum(point, floor)
    bands = {}
    inner_lo, inner_hi = clipped, clipped
    for level in sorted(offsets):  # narrow to wide
        lo_off, hi_off = offsets[level]
        inner_lo = np.minimum(np.maximum(point + lo_off, floor), inner_lo)
        inner_hi = np.maximum(np.maximum(point + hi_off, floor), inner_hi)
        bands[level] = (inner_lo, inner_hi)
    return clipped, bands


def score_engines(bt: Backtest, spec: BacktestSpec, *, nonnegative: bool) -> list[EngineScore]:
    """Conformal bands at each scored origin, then the metrics for all engines at once."""
    n = len(bt.origins)
    engines = list(bt.points)
    if BAND_THREADS > 1 and len(engines) > 1:
        with ThreadPoolExecutor(max_workers=BAND_THREADS) as pool:
            banded = dict(zip(engines, (b[0] for b in pool.map(lambda e: bt.bands(e, spec), engines)), strict=True))
    else:
        banded = {engine: bt.bands(engine, spec)[0] for engine in engines}
    # Every engine shares the origins, so the origins with a calibrated band are the same for all.
    rows = sorted(set(range(n - spec.origins, n)).intersection(*(b.keys() for b in banded.values())))
    if not rows:
        return []
    delivered = {}
    for engine in engines:
        offsets = {level: (np.array([banded[engine][k][level][0] for k in rows]),
                           np.array([banded[engine][k][level][1] for k in rows])) for level in LEVELS}
        # scored as delivered: clipped, with its bands
        delivered[engine] = nested_bands(bt.points[engine][rows], offsets, nonnegative=nonnegative)
    scores = [forecast_metrics(bt.actual[rows], point, bands, bt.scale[rows], bt.rms_scale[rows])
              for point, bands in delivered.values()]
    return sorted((EngineScore(engine, round(m.mase, 4), round(m.smape, 4), round(m.crps, 4), m.coverage, m.width,
                               len(rows), round(bt.seconds[engine], 4), m.per_origin_mase, round(m.rmsse, 4),
                               m.per_origin_rmsse)
                   for engine, m in zip(engines, scores, strict=True)), key=lambda s: s.mase)


@dataclass(frozen=True)
class Metrics:
    mase: float
    smape: float
    crps: float
    coverage: dict[int, float]
    width: dict[int, float]
    per_origin_mase: tuple[float, ...]
    rmsse: float = math.nan
    per_origin_rmsse: tuple[float, ...] = ()


def forecast_metrics(actual: np.ndarray, point: np.ndarray, bands: dict[int, tuple[np.ndarray, np.ndarray]],
                     scale: np.ndarray, rms_scale: np.ndarray | None = None) -> Metrics:
    """utilsforecast's definitions with one id per origin (rows: origins, columns: horizon steps),
    averaged over origins: MASE (each origin's MAE over its `scale`), sMAPE, scaled CRPS over the
    band quantiles, and each band's coverage and mean width; with `rms_scale`, RMSSE too (each
    origin's root mean squared error over it). In numpy because the selection scores
    every engine at every origin on each call: through utilsforecast's data frames this took half
    of a full selection (tested equal to utilsforecast's)."""
    error = actual - point
    per_origin = np.abs(error).mean(axis=1) / scale
    rmsse = () if rms_scale is None else tuple(float(v) for v in np.sqrt(np.square(error).mean(axis=1)) / rms_scale)
    denominator = np.abs(point) + np.abs(actual)
    smape = np.divide(np.abs(error), denominator, out=np.zeros_like(error), where=denominator != 0)
    quantiles = [(point, 0.5)]
    for level, (lo, hi) in bands.items():
        quantiles += [(lo, (100 - level) / 200), (hi, 1 - (100 - level) / 200)]
    pinball = np.mean([np.maximum(q * (actual - pred), (q - 1) * (actual - pred)) for pred, q in quantiles], axis=0)
    crps = 2 * pinball.sum(axis=1) / (np.abs(actual).sum(axis=1) + np.finfo(np.float64).eps)
    return Metrics(
        float(per_origin.mean()), float(smape.mean()), float(crps.mean()),
        {level: float(((actual >= lo) & (actual <= hi)).mean()) for level, (lo, hi) in bands.items()},
        {level: float((hi - lo).mean()) for level, (lo, hi) in bands.items()},
        tuple(float(v) for v in per_origin), float(np.mean(rmsse)) if rmsse else math.nan, rmsse)


@dataclass(frozen=True)
class Selection:
    winner: str
    leaderboard: tuple[EngineScore, ...]
    reason: str

    @property
    def winner_score(self) -> EngineScore:
        return next(s for s in self.leaderboard if s.engine == self.winner)


# A single engine replaces the combination only when it beats it by this share of the combination's
# MASE and by two standard errors. On the project's five benchmark series, replaying the choice at
# each origin from the origins before it, switching at 0-3 standard errors or at 5% did worse on the
# next origins than this margin, and every margin did worse than never switching.
COMBINATION_MARGIN = 0.10


Metric = Literal["mase", "rmsse"]
_METRIC_NAME = {"mase": "MASE", "rmsse": "RMSSE"}


def _score(s: EngineScore, metric: Metric) -> float:
    return s.mase if metric == "mase" else s.rmsse


def _per_origin(s: EngineScore, metric: Metric) -> tuple[float, ...]:
    return s.per_origin_mase if metric == "mase" else s.per_origin_rmsse


def _paired(a: EngineScore, b: EngineScore, metric: Metric = "mase") -> tuple[float, float] | None:
    """Mean and standard error of a's per-origin score minus b's (None when not paired)."""
    first, second = _per_origin(a, metric), _per_origin(b, metric)
    if not first or len(first) != len(second):
        return None
    diff = np.array(first) - np.array(second)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return float(diff.mean()), se


def _still_ahead(single: EngineScore, combined: EngineScore, metric: Metric = "mase") -> bool:
    """Whether `single` also beats the combination by COMBINATION_MARGIN over the most recent half
    of the scored origins. A lead earned in an earlier regime does not decide today: on the
    pedestrian counts, engines that had been far better through the 2020 lockdown kept the choice
    for months after the combination was better again (replayed MASE 1.430 on its 90 origins; 1.364
    with this check, 1.345 never switching)."""
    half = len(_per_origin(single, metric)) // 2  # paired with the combination's (checked before)
    if half < 2:
        return True
    recent_single = float(np.mean(_per_origin(single, metric)[-half:]))
    recent_combined = float(np.mean(_per_origin(combined, metric)[-half:]))
    return recent_single < (1 - COMBINATION_MARGIN) * recent_combined


def select_engine(scores: Sequence[EngineScore], *, combination: str | None = None,
                  metric: Metric = "mase") -> Selection:
    """Lowest mean MASE wins (or RMSSE, `metric`: see `selection_metric`), with two exceptions that
    make the choice robust to backtest noise.

    `combination` (an ensemble's alias in the line-up) is the default: a single engine replaces it
    only when it is better by COMBINATION_MARGIN and two standard errors of the paired per-origin
    differences, and by the margin over the recent half of the origins too (`_still_ahead`).
    Picking the backtest's winner by less did worse out of sample than combining.

    Otherwise a much cheaper engine (a tenth of the typical cost per fit or less,
    `engines.RELATIVE_COST`) takes the winner's place when its MASE is within one standard error of
    the winner's: backtest noise cannot tell them apart, and the cheaper one scales to many series.
    Costs are declared, not timed, so the choice is the same under any load."""
    if not scores:
        raise ForecastError("no engine produced a scored backtest")
    name = _METRIC_NAME[metric]
    board = tuple(sorted(scores, key=lambda s: _score(s, metric)))
    combined = next((s for s in board if s.engine == combination), None)
    if combined is not None:
        single = next((s for s in board if s.engine != combination), None)
        paired = _paired(single, combined, metric) if single is not None else None
        if (single is None or paired is None
                or paired[0] >= -max(2 * paired[1], COMBINATION_MARGIN * _score(combined, metric))
                or not _still_ahead(single, combined, metric)):
            reason = (f"{combined.engine}: the combination ({name} {_score(combined, metric):.3f} over "
                      f"{combined.scored_origins} origins) holds unless a single engine beats it by "
                      f"{COMBINATION_MARGIN:.0%} and two standard errors, and by the margin over the recent half too")
            if single is not None:
                reason += f" (best single: {single.engine} {_score(single, metric):.3f})"
            return Selection(combined.engine, board, reason)
        winner, reason = _cheaper_or_best(tuple(s for s in board if s.engine != combination), metric)
        return Selection(winner, board, f"{reason}; it beats the combination {combined.engine} "
                                        f"({_score(combined, metric):.3f}) by {-paired[0]:.3f} +/- {paired[1]:.3f} "
                                        "per origin")
    winner, reason = _cheaper_or_best(board, metric)
    return Selection(winner, board, reason)


def selection_metric(y: np.ndarray, year: int = 365) -> Metric:
    """What a series' engines are compared by: MASE, or RMSSE for an intermittent series
    (`engines.is_intermittent`). On days mostly without a value the absolute error rewards
    forecasts near zero, which no 14-day total is made of: a seasonal naive forecast repeating
    last week's one sale beat the forecasts of the expected value there (squared errors, as the M5
    competition scored such series, do not)."""
    return "rmsse" if is_intermittent(y, year) else "mase"


def _cheaper_or_best(board: tuple[EngineScore, ...], metric: Metric = "mase") -> tuple[str, str]:
    """The lowest score in `board` (sorted), or a 10x cheaper engine within one standard error of it."""
    name = _METRIC_NAME[metric]
    best = board[0]
    reason = f"{best.engine}: lowest mean {name} {_score(best, metric):.3f} over {best.scored_origins} origins"
    if len(board) > 1:
        reason += f" (next: {board[1].engine} {_score(board[1], metric):.3f})"
    cheaper = []
    for s in board[1:]:
        paired = _paired(s, best, metric)
        if relative_cost(s.engine) * 10 > relative_cost(best.engine) or paired is None:
            continue
        if paired[0] <= paired[1]:
            cheaper.append((s, *paired))
    if cheaper:
        s, mean_diff, se = min(cheaper, key=lambda c: (relative_cost(c[0].engine), c[0].engine))
        reason = (f"{s.engine}: {name} {_score(s, metric):.3f} is within one standard error of the best "
                  f"({best.engine} {_score(best, metric):.3f}; difference {mean_diff:+.3f} +/- {se:.3f}) and it "
                  f"typically fits {relative_cost(best.engine) / relative_cost(s.engine):.0f}x faster")
        return s.engine, reason
    return best.engine, reason
