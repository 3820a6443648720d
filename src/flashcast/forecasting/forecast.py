"""The forecast record and the ways to make one.

* `auto_forecast`: backtest a line-up of engines, pick the best, refit it on all history and band
  it conformally (the default path; see `backtest`).
* `sampled_forecast`: one engine's own sample paths, summarized into quantile bands (for a history
  too short for a backtest: `short_history_forecast`, Prophet's).
* `forecast_each` / `forecast_many`: `auto_forecast` over every series of a long frame, in parallel.
* `refit_forecast`: the daily call. A full selection leaves a `Calibration` (the engine chosen,
  its conformal scores relative to the series' spread, the forecast it made); while that is fresh
  (young enough, and the days since fall inside its 80% band often enough), a forecast is one refit
  of the chosen engine, banded with the stored scores at today's spread.

Every band at every level comes from one sample (of errors or of paths), so the 50% band lies
inside the 80% band inside the 95% band.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from flashcast.errors import ForecastError, HistoryTooShort, NegativeValue, RepeatedDate
from flashcast.forecasting.backtest import (
    LEVELS,
    BacktestSpec,
    EngineScore,
    Selection,
    for_cadence,
    nested_bands,
    normalized_offsets,
    run_backtest,
    score_engines,
    select_engine,
    selection_metric,
    spread_terms,
)
from flashcast.forecasting.engines import (
    INTERMITTENT_SHARE,
    EngineOptions,
    Ensemble,
    ProphetEngine,
    SamplingEngine,
    line_up_for,
    make_engine,
    make_engines,
)
from flashcast.forecasting.series import (
    DAILY,
    SPIKE_RATIO,
    WEEKDAYS,
    Cadence,
    PreparedSeries,
    cadence_of,
    prepare_series,
    validate_history,
)


class Band(NamedTuple):
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class Forecast:
    """A fan chart's data: point forecast plus nested bands, one value per future day (or week, for a
    weekly series), the history it was made from and, for a selected engine, the backtest
    leaderboard."""

    series_id: str
    engine: str
    dates: tuple[date, ...]
    point: np.ndarray
    bands: dict[int, Band]
    history_dates: tuple[date, ...]
    history: np.ndarray
    selection: Selection | None = None
    notes: tuple[str, ...] = ()
    filled_days: int = 0  # missing days filled by interpolation
    dropped_days: int = 0  # days before the last long gap, left out
    fit_seconds: float = 0.0
    # Bands for the horizon's total (not the sum of daily bounds, which overstates its range):
    # conformal on the backtest's errors of whole-horizon totals, or quantiles of summed sample paths.
    total_bands: dict[int, tuple[float, float]] = field(default_factory=dict)
    calibration: Calibration | None = None  # what a later `refit_forecast` reuses
    blank_last_days: int = 0  # rows at the end without a value, left out
    closed_weekdays: tuple[int, ...] = ()  # 0 = Monday: days the business is closed, forecast as 0
    partial_last_day: str | None = None  # why the history's last day was left out, when it was
    spike_days: tuple[date, ...] = ()  # isolated spikes replaced by their weekday's level before fitting
    cadence: Cadence = DAILY

    @property
    def history_warnings(self) -> tuple[str, ...]:
        """The notes a person should see beside the table: closed days, a partly filled last day,
        spikes taken out, a series with a value on few days."""
        sparse = intermittent_note(self.history_dates, self.history, self.closed_weekdays, len(self.dates),
                                   total=self.total, total_80=self.total_bands.get(80), cadence=self.cadence)
        return (((closed_note(self.closed_weekdays),) if self.closed_weekdays else ())
                + ((self.partial_last_day,) if self.partial_last_day else ())
                + ((spike_note(self.spike_days, self.cadence),) if self.spike_days else ())
                + ((sparse,) if sparse else ()))

    @property
    def total(self) -> float:
        return sum(float(x) for x in self.point)

    def band(self, level: int) -> Band:
        return self.bands[level]

    @property
    def leaderboard(self) -> tuple[dict[str, object], ...]:
        return tuple(s.row() for s in self.selection.leaderboard) if self.selection else ()

    def rounded(self, ndigits: int = 2) -> Forecast:
        """The same forecast with values rounded (to cents, for money)."""
        def r(values: np.ndarray) -> np.ndarray:
            return np.array([round(float(x), ndigits) for x in values])

        return replace(self, point=r(self.point),
                       bands={level: Band(r(b.lower), r(b.upper)) for level, b in self.bands.items()},
                       total_bands={level: (round(lo, ndigits), round(hi, ndigits))
                                    for level, (lo, hi) in self.total_bands.items()})

    def to_frame(self) -> pd.DataFrame:
        """One row per day: series_id, date, point, lo/hi per level, engine."""
        frame = pd.DataFrame({"series_id": self.series_id, "date": self.dates, "point": self.point})
        for level in sorted(self.bands):
            frame[f"lo_{level}"], frame[f"hi_{level}"] = self.bands[level]
        frame["engine"] = self.engine
        return frame

    def summary(self) -> dict[str, object]:
        """Totals over the horizon, for the lineage log."""
        total = sum(float(x) for x in self.point)
        if not math.isfinite(total):
            raise ForecastError(f"{self.series_id}: the forecast is not finite")
        summary: dict[str, object] = {
            "series_id": self.series_id, "engine": self.engine, "horizon_days": len(self.dates),
            "start": self.dates[0].isoformat(), "end": self.dates[-1].isoformat(),
            "total_point": round(total, 2),
            "last_28_days_actual": round(sum(float(x) for x in self.history[-28:]), 2),
        }
        for level in sorted(self.bands):
            lower, upper = self.bands[level]
            summary[f"daily_mean_lo_{level}"] = round(sum(float(x) for x in lower) / len(lower), 2)
            summary[f"daily_mean_hi_{level}"] = round(sum(float(x) for x in upper) / len(upper), 2)
        for level, (lo, hi) in sorted(self.total_bands.items()):
            summary[f"total_lo_{level}"], summary[f"total_hi_{level}"] = round(lo, 2), round(hi, 2)
        return summary


def bands_are_nested(forecast: Forecast) -> bool:
    """True when every narrower band lies inside every wider one and the point inside the narrowest."""
    ordered = sorted(forecast.bands)
    for inner, outer in itertools.pairwise(ordered):
        (i_lo, i_hi), (o_lo, o_hi) = forecast.bands[inner], forecast.bands[outer]
        if np.any(o_lo > i_lo + 1e-9) or np.any(i_hi > o_hi + 1e-9):
            return False
    lo, hi = forecast.bands[ordered[0]]
    return bool(np.all((lo - 1e-9 <= forecast.point) & (forecast.point <= hi + 1e-9)))


def _future(last: pd.Timestamp, horizon: int, cadence: Cadence = DAILY) -> tuple[date, ...]:
    step = cadence.days
    return tuple(d.date() for d in pd.date_range(last + pd.Timedelta(days=step), periods=horizon, freq=f"{step}D"))


def closed_days(weekdays: tuple[int, ...]) -> str:
    return f"closed on {', '.join(WEEKDAYS[d] for d in weekdays)}"


def closed_note(weekdays: tuple[int, ...]) -> str:
    return f"{closed_days(weekdays)}: no value on those days, forecast as 0"


def spike_note(days: tuple[date, ...], cadence: Cadence = DAILY) -> str:
    listed = ", ".join(d.isoformat() for d in days[:3]) + (f" and {len(days) - 3:,} more" if len(days) > 3 else "")
    level = "the same weekday's level" if cadence == DAILY else "the level"
    return (f"{len(days):,} isolated spike(s) ({listed}), {SPIKE_RATIO:g}x or more {level} in the "
            "weeks around, replaced by that level before fitting: a glitch (a test order, a bot), not demand")


def intermittent_note(dates: tuple[date, ...], history: np.ndarray, closed: tuple[int, ...], horizon: int, *,
                      total: float, total_80: tuple[float, float] | None, cadence: Cadence = DAILY) -> str | None:
    """What to read in a forecast of a series with no value on most open days of its last year (a
    sale every few days): each day's forecast is the expected value, which few days look like; the
    horizon's `total` (with its 80% interval, when calibrated) is the figure to plan with."""
    recent = slice(-cadence.year, None)
    open_days = np.array([d.weekday() not in closed for d in dates[recent]], dtype=bool)
    values = np.asarray(history[recent], dtype=float)[open_days]
    if not len(values):
        return None
    share = float(np.mean(values == 0))
    if share < INTERMITTENT_SHARE:
        return None
    interval = f", 80% interval {total_80[0]:,.2f} to {total_80[1]:,.2f}" if total_80 else ""
    unit = cadence.unit
    opened = "open days" if cadence == DAILY else "weeks"
    return (f"{share:.0%} of the last {len(values):,} {opened} had no value: each {unit}'s forecast is the expected "
            f"value (most such {unit}s will be 0, a few far above it); plan with the {horizon}-{unit} total "
            f"({total:,.2f}{interval})")


def _long_gap(cadence: Cadence) -> str:
    """The shortest gap `prepare_series` does not fill, in words."""
    return "a week" if cadence == DAILY else "two weeks"


def _history_notes(series: PreparedSeries) -> tuple[str, ...]:
    unit = series.cadence.unit
    return (((f"{series.filled_days} missing {unit}s filled by interpolation",) if series.filled_days else ())
            + ((f"{series.dropped_days} days before the last gap of more than {_long_gap(series.cadence)} left out",)
               if series.dropped_days else ())
            + ((closed_note(series.closed_weekdays),) if series.closed_weekdays else ())
            + ((series.partial_last_day,) if series.partial_last_day else ())
            + ((f"{series.blank_last_days} {unit}(s) at the end without a value left out",)
               if series.blank_last_days else ())
            + ((spike_note(series.spike_days, series.cadence),) if series.spike_days else ()))


def _history_fields(series: PreparedSeries) -> dict[str, Any]:
    """What a forecast carries about the history it was made from (its notes say the same in words)."""
    return {"filled_days": series.filled_days, "dropped_days": series.dropped_days,
            "blank_last_days": series.blank_last_days, "closed_weekdays": series.closed_weekdays,
            "partial_last_day": series.partial_last_day, "spike_days": series.spike_days, "cadence": series.cadence}


def _closed_to_zero(dates: tuple[date, ...], point: np.ndarray, bands: dict[int, Band],
                    closed: tuple[int, ...]) -> tuple[np.ndarray, dict[int, Band]]:
    """A closed day sells nothing: its point and every band are 0."""
    if not closed:
        return point, bands
    shut = np.isin([d.weekday() for d in dates], closed)
    return (np.where(shut, 0.0, point),
            {level: Band(np.where(shut, 0.0, b.lower), np.where(shut, 0.0, b.upper)) for level, b in bands.items()})


DRIFT_MIN_DAYS = 5  # observed days since a selection before its band coverage is judged
DRIFT_COVERAGE = 0.5  # under this share of those days inside the 80% band, the selection is stale


@dataclass(frozen=True)
class Calibration:
    """What a full selection learned about a series, to forecast it again without the backtest:
    the chosen engine and the leaderboard (as `Selection`), the conformal offsets divided by the
    series' spread at the time (per level, per horizon step; and for the horizon's total), and the
    forecast it made (for the drift test)."""

    series_id: str
    line_up: tuple[str, ...]
    horizon: int
    through: date  # the last day of history the selection saw
    selection: Selection
    unit_offsets: dict[int, tuple[tuple[float, ...], tuple[float, ...]]]
    unit_totals: dict[int, tuple[float, float]]
    check_dates: tuple[date, ...]
    check_lo80: tuple[float, ...]
    check_hi80: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        board = [{**asdict(score), "coverage": {str(k): v for k, v in score.coverage.items()},
                  "width": {str(k): v for k, v in score.width.items()}} for score in self.selection.leaderboard]
        return {"series_id": self.series_id, "line_up": list(self.line_up), "horizon": self.horizon,
                "through": self.through.isoformat(), "winner": self.selection.winner, "reason": self.selection.reason,
                "leaderboard": board,
                "unit_offsets": {str(k): [list(lo), list(hi)] for k, (lo, hi) in self.unit_offsets.items()},
                "unit_totals": {str(k): list(v) for k, v in self.unit_totals.items()},
                "check_dates": [d.isoformat() for d in self.check_dates], "check_lo80": list(self.check_lo80),
                "check_hi80": list(self.check_hi80)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        board = tuple(EngineScore(**{**row, "coverage": {int(k): v for k, v in row["coverage"].items()},
                                     "width": {int(k): v for k, v in row["width"].items()},
                                     "per_origin_mase": tuple(row.get("per_origin_mase", ())),
                                     "rmsse": float(row.get("rmsse", math.nan)),  # (stored before it was scored)
                                     "per_origin_rmsse": tuple(row.get("per_origin_rmsse", ()))})
                      for row in data["leaderboard"])
        return cls(data["series_id"], tuple(data["line_up"]), int(data["horizon"]),
                   date.fromisoformat(data["through"]), Selection(data["winner"], board, data["reason"]),
                   {int(k): (tuple(lo), tuple(hi)) for k, (lo, hi) in data["unit_offsets"].items()},
                   {int(k): (float(lo), float(hi)) for k, (lo, hi) in data["unit_totals"].items()},
                   tuple(date.fromisoformat(d) for d in data["check_dates"]), tuple(data["check_lo80"]),
                   tuple(data["check_hi80"]))


def _scale(y: np.ndarray, spec: BacktestSpec) -> float:
    """The spread conformal offsets are measured in (as `normalized_offsets` takes it)."""
    return max(*spread_terms(y, spec), 1e-12)


def auto_forecast(
    frame: pd.DataFrame, *, series_id: str, engines: Sequence[str] | None = None, spec: BacktestSpec | None = None,
    nonnegative: bool = True, options: EngineOptions | None = None, keep_last_day: bool = False,
) -> Forecast:
    """Backtest the engines, pick the best, refit it on all history and band it conformally.
    Raises HistoryTooShort when the history gives too few backtest origins. A weekly series gets the
    engines' weekly forms and `spec` read in weeks (`for_cadence`: its horizon is in weeks)."""
    series = prepare_series(frame, series_id=series_id, nonnegative=nonnegative, keep_last_day=keep_last_day)
    spec = for_cadence(spec or BacktestSpec(), series.cadence)
    options = replace(options or EngineOptions(), cadence=series.cadence)
    y, dates = series.y, series.dates
    line_up = make_engines(engines, options)
    try:
        bt = run_backtest(y, dates, line_up, spec)
    except ForecastError as exc:
        gap = (f" (the history restarts on {dates[0].date()}, after a gap of more than {_long_gap(series.cadence)}; "
               f"{series.dropped_days} days before it were left out)") if series.dropped_days else ""
        raise type(exc)(f"{series_id}: {exc}{gap}") from exc
    combination = next((e.alias for e in line_up if isinstance(e, Ensemble)), None)
    selection = select_engine(score_engines(bt, spec, nonnegative=nonnegative), combination=combination,
                              metric=selection_metric(y, series.cadence.year))
    engine = next(e for e in line_up if e.alias == selection.winner)
    start = time.perf_counter()
    point = engine.point(y, dates, spec.horizon)
    fit_seconds = time.perf_counter() - start
    errors = bt.actual - bt.points[selection.winner]
    # The last backtest origin's horizon ends where the history ends: all origins are observed.
    _, alphas = bt.bands(selection.winner, spec)
    recent = slice(-spec.calibration, None)
    offsets = normalized_offsets(errors[recent], np.maximum(bt.spread[recent], bt.floor[recent]),
                                 spread_terms(y, spec), spec, alphas)
    point, banded = nested_bands(point, offsets, nonnegative=nonnegative)
    bands = {level: Band(lo, hi) for level, (lo, hi) in banded.items()}
    # The horizon's total: the same conformal recipe on each origin's error of the whole total.
    nominal = {level: (100 - level) / 100 for level in LEVELS}
    total_offsets = normalized_offsets(errors[recent].sum(axis=1, keepdims=True),
                                       np.maximum(bt.spread[recent], bt.floor[recent]), spread_terms(y, spec), spec,
                                       nominal)
    _, totals = nested_bands(np.array([point.sum()]), total_offsets, nonnegative=nonnegative)
    future = _future(dates[-1], spec.horizon, series.cadence)
    point, bands = _closed_to_zero(future, point, bands, series.closed_weekdays)
    scale = _scale(y, spec)
    calibration = Calibration(
        series_id, tuple(e.alias for e in line_up), spec.horizon, dates[-1].date(), selection,
        {level: (tuple(float(v) for v in lo / scale), tuple(float(v) for v in hi / scale))
         for level, (lo, hi) in offsets.items()},
        {level: (float(lo[0]) / scale, float(hi[0]) / scale) for level, (lo, hi) in total_offsets.items()},
        future, tuple(float(v) for v in bands[80].lower), tuple(float(v) for v in bands[80].upper))
    return Forecast(series_id, selection.winner, future, point, bands,
                    tuple(dates.date), y, selection, (selection.reason, *_history_notes(series)),
                    fit_seconds=fit_seconds,
                    total_bands={level: (float(lo[0]), float(hi[0])) for level, (lo, hi) in totals.items()},
                    calibration=calibration, **_history_fields(series))


def stale_reason(calibration: Calibration, history: PreparedSeries, *, line_up: Sequence[str], horizon: int,
                 max_age_days: int) -> str | None:
    """Why `calibration` may not be reused for this history (None: it may)."""
    if tuple(line_up) != calibration.line_up or horizon != calibration.horizon:
        return "the engine line-up or horizon changed"
    last = history.dates[-1].date()
    age = (last - calibration.through).days
    if age < 0:
        return "the history now ends before the day it was selected on"
    if age > max_age_days:
        return f"selected {age} days of history ago (more than {max_age_days})"
    at = history.dates.get_indexer(pd.DatetimeIndex(calibration.check_dates))  # -1: not in the history
    checks = [(history.y[i], lo, hi) for i, lo, hi in zip(at, calibration.check_lo80, calibration.check_hi80,
                                                          strict=True) if i >= 0]
    if len(checks) >= DRIFT_MIN_DAYS:
        inside = sum(lo <= y <= hi for y, lo, hi in checks) / len(checks)
        if inside < DRIFT_COVERAGE:
            return f"drift: {inside:.0%} of the {len(checks)} days since fell inside its 80% band"
    return None


def refit_forecast(
    frame: pd.DataFrame, calibration: Calibration, *, spec: BacktestSpec | None = None, nonnegative: bool = True,
    options: EngineOptions | None = None, keep_last_day: bool = False, max_age_days: int = 7,
    line_up: Sequence[str] | None = None,
) -> Forecast | str:
    """The daily call: refit the engine `calibration` chose on today's history and band it with the
    stored conformal scores at today's spread. Returns why not (a string) when the calibration is
    stale (see `stale_reason`; `line_up`: today's, when it may differ from the stored one); then call
    `auto_forecast` for a full selection."""
    series = prepare_series(frame, series_id=calibration.series_id, nonnegative=nonnegative,
                            keep_last_day=keep_last_day)
    spec = for_cadence(spec or BacktestSpec(), series.cadence)
    options = replace(options or EngineOptions(), cadence=series.cadence)
    today = line_up_for(line_up, series.cadence) if line_up else calibration.line_up
    why = stale_reason(calibration, series, line_up=today, horizon=spec.horizon, max_age_days=max_age_days)
    if why is not None:
        return why
    y, dates = series.y, series.dates
    engine = make_engine(calibration.selection.winner, options)
    start = time.perf_counter()
    point = engine.point(y, dates, spec.horizon)
    fit_seconds = time.perf_counter() - start
    scale = _scale(y, spec)
    offsets = {level: (np.array(lo) * scale, np.array(hi) * scale)
               for level, (lo, hi) in calibration.unit_offsets.items()}
    point, banded = nested_bands(point, offsets, nonnegative=nonnegative)
    bands = {level: Band(lo, hi) for level, (lo, hi) in banded.items()}
    total_offsets = {level: (np.array([lo * scale]), np.array([hi * scale]))
                     for level, (lo, hi) in calibration.unit_totals.items()}
    _, totals = nested_bands(np.array([point.sum()]), total_offsets, nonnegative=nonnegative)
    future = _future(dates[-1], spec.horizon, series.cadence)
    point, bands = _closed_to_zero(future, point, bands, series.closed_weekdays)
    note = (f"{calibration.selection.winner}: the selection of {calibration.through} reused "
            f"({calibration.selection.reason}); one refit, bands from its conformal scores at today's spread")
    return Forecast(calibration.series_id, calibration.selection.winner, future, point, bands,
                    tuple(dates.date), y, calibration.selection, (note, *_history_notes(series)),
                    fit_seconds=fit_seconds,
                    total_bands={level: (float(lo[0]), float(hi[0])) for level, (lo, hi) in totals.items()},
                    calibration=calibration, **_history_fields(series))


def sampled_forecast(
    frame: pd.DataFrame, *, series_id: str, engine: SamplingEngine, horizon: int = 14,
    levels: tuple[int, ...] = LEVELS, n_samples: int = 1000, seed: int = 0, nonnegative: bool = True,
    keep_last_day: bool = False,
) -> Forecast:
    """Fit `engine` and summarize one set of its sample paths into nested quantile bands (point: the
    median path). Needs MIN_HISTORY_DAYS of history, not a backtest's worth."""
    series = validate_history(frame, series_id=series_id, nonnegative=nonnegative, keep_last_day=keep_last_day)
    samples = engine.sample_paths(series.y, series.dates, horizon, n_samples, seed)
    if nonnegative:
        samples = np.maximum(samples, 0.0)
    bands, totals = {}, {}
    path_totals = samples.sum(axis=0)
    for level in sorted(levels):
        tail = (100 - level) / 200
        lower, upper = np.quantile(samples, [tail, 1 - tail], axis=1)
        bands[level] = Band(lower, upper)
        total_lo, total_hi = np.quantile(path_totals, [tail, 1 - tail])
        totals[level] = (float(total_lo), float(total_hi))
    return Forecast(series_id, engine.alias, _future(series.dates[-1], horizon, series.cadence),
                    np.median(samples, axis=1), bands,
                    tuple(d.date() for d in series.dates), series.y, notes=_history_notes(series),
                    total_bands=totals, **_history_fields(series))


def short_history_forecast(frame: pd.DataFrame, too_short: HistoryTooShort, *, series_id: str, horizon: int = 14,
                           options: EngineOptions | None = None, nonnegative: bool = True,
                           keep_last_day: bool = False) -> Forecast:
    """A history too short for a backtest (`too_short`, as `auto_forecast` raised it): Prophet's own
    sample paths, without selection or conformal calibration; the first note says so."""
    engine = ProphetEngine(countries=(options or EngineOptions()).countries, cadence=cadence_of(frame, series_id))
    sampled = sampled_forecast(frame, series_id=series_id, horizon=horizon, engine=engine,
                               nonnegative=nonnegative, keep_last_day=keep_last_day)
    return replace(sampled, notes=(f"{too_short}; used Prophet without selection", *sampled.notes))


@dataclass(frozen=True)
class _Task:
    series_id: str
    frame: pd.DataFrame
    engines: tuple[str, ...] | None
    spec: BacktestSpec
    nonnegative: bool
    options: EngineOptions = field(default_factory=EngineOptions)
    keep_last_day: bool = False
    calibration: Calibration | None = None  # the last selection, reused while fresh
    max_age_days: int = 7


@dataclass(frozen=True)
class SkippedSeries:
    """A series `forecast_each` could not forecast, and why."""

    series_id: str
    reason: str
    negative: bool = False  # it went below zero while taken as non-negative (a signed forecast would take it)
    repeated_date: bool = False  # two values on one day (rows by the hour or by order: summing by day would take it)


def _forecast_one(task: _Task) -> Forecast | SkippedSeries:
    try:
        if task.calibration is not None:
            reused = refit_forecast(task.frame, task.calibration, spec=task.spec, nonnegative=task.nonnegative,
                                    options=task.options, keep_last_day=task.keep_last_day,
                                    max_age_days=task.max_age_days, line_up=task.engines)
            if isinstance(reused, Forecast):
                return reused
        try:
            return auto_forecast(task.frame, series_id=task.series_id, engines=task.engines, spec=task.spec,
                                 nonnegative=task.nonnegative, options=task.options, keep_last_day=task.keep_last_day)
        except HistoryTooShort as exc:
            return short_history_forecast(task.frame, exc, series_id=task.series_id, horizon=task.spec.horizon,
                                          options=task.options, nonnegative=task.nonnegative,
                                          keep_last_day=task.keep_last_day)
    except ForecastError as exc:  # one bad series does not sink the others; the caller reports it
        return SkippedSeries(task.series_id, str(exc), negative=isinstance(exc, NegativeValue),
                             repeated_date=isinstance(exc, RepeatedDate))


def _start_worker(parent: int) -> None:
    """A process-pool worker: one banding thread (the pool already fills the cores), and it dies
    with its parent."""
    from flashcast.forecasting import backtest

    backtest.BAND_THREADS = 1
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """A worker ends when the process that started it ends, even by kill -9 (which runs no cleanup):
    otherwise it waits on its task pipe, holding its memory, with nobody to answer."""
    import signal
    import sys

    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def forecast_each(
    frame: pd.DataFrame, *, id_col: str = "series_id", engines: Sequence[str] | None = None,
    spec: BacktestSpec | None = None, nonnegative: bool = True, options: EngineOptions | None = None,
    workers: int | None = None, keep_last_day: bool = False, calibrations: Mapping[str, Calibration] | None = None,
    max_age_days: int = 7,
) -> tuple[list[Forecast], list[SkippedSeries]]:
    """Backtest, select and forecast every series of a long (series_id, ds, y) frame, in parallel
    across cores. A series with a fresh stored selection in `calibrations` is refitted instead
    (`refit_forecast`); one too short to backtest is forecast by Prophet's sample paths
    (`short_history_forecast`). Returns the forecasts and, for series that could not be forecast,
    why (`SkippedSeries`)."""
    from concurrent.futures import ProcessPoolExecutor

    spec = spec or BacktestSpec()
    calibrations = calibrations or {}
    tasks = [_Task(str(sid), group[["ds", "y"]], tuple(engines) if engines else None, spec, nonnegative,
                   options or EngineOptions(), keep_last_day, calibrations.get(str(sid)), max_age_days)
             for sid, group in frame.groupby(id_col, sort=True)]
    # Refits take milliseconds: a pool of processes would cost more than it saves.
    workers = 1 if tasks and all(t.calibration for t in tasks) else (workers or os.cpu_count() or 1)
    if workers == 1 or len(tasks) == 1:
        results = [_forecast_one(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_start_worker, initargs=(os.getpid(),)) as pool:
            results = list(pool.map(_forecast_one, tasks, chunksize=max(1, len(tasks) // (workers * 4))))
    return [r for r in results if isinstance(r, Forecast)], [r for r in results if isinstance(r, SkippedSeries)]


def forecast_many(
    frame: pd.DataFrame, *, id_col: str = "series_id", engines: Sequence[str] | None = None,
    spec: BacktestSpec | None = None, nonnegative: bool = True, workers: int | None = None,
    keep_last_day: bool = False,
) -> pd.DataFrame:
    """Forecast every series in a long (series_id, ds, y) frame in parallel across cores.

    Returns a tidy frame: series_id, ds, engine, point, lo_50 .. hi_95. Series that cannot be
    forecast are left out and named in `frame.attrs["skipped"]`.
    """
    done, skipped = forecast_each(frame, id_col=id_col, engines=engines, spec=spec, nonnegative=nonnegative,
                                  workers=workers, keep_last_day=keep_last_day)
    out = tidy_all(done)
    out.attrs["skipped"] = [s.reason for s in skipped]
    return out


def leaderboards(results: Sequence[Forecast]) -> pd.DataFrame:
    """Every series' backtest leaderboard, one row per (series, engine), the winner flagged with why."""
    rows = []
    for result in results:
        if result.selection is None:
            continue
        for rank, score in enumerate(result.selection.leaderboard, start=1):
            selected = score.engine == result.engine
            rows.append({"series_id": result.series_id, "rank": rank, "selected": selected, **score.row(),
                         "reason": result.selection.reason if selected else ""})
    # Without rows (every series too short to backtest) the file still says what it would hold.
    return pd.DataFrame(rows, columns=["series_id", "rank", "selected", *EngineScore.columns(), "reason"])


def tidy_all(results: Sequence[Forecast]) -> pd.DataFrame:
    """Many forecasts as one tidy frame (empty, with the key columns, when there are none)."""
    if not results:
        return pd.DataFrame(columns=["series_id", "ds", "engine", "point"])
    return pd.concat([tidy(r) for r in results], ignore_index=True)


def tidy(result: Forecast) -> pd.DataFrame:
    out = pd.DataFrame({"series_id": result.series_id, "ds": list(result.dates), "engine": result.engine,
                        "point": result.point})
    for level in sorted(result.bands):
        out[f"lo_{level}"], out[f"hi_{level}"] = result.bands[level]
    return out


def forecast_series(history: pd.DataFrame, horizon: int = 14, *, engines: Sequence[str] | None = None,
                    holiday_countries: Sequence[str] = (), nonnegative: bool = True,
                    keep_last_day: bool = False) -> pd.DataFrame:
    """Forecast one daily or weekly series the way `flashcast forecast` does: backtest the default
    line-up (`[forecast] engines`, or `engines`), keep the best, band it conformally at 50/80/95%
    (`horizon` counts the series' rows: days, or weeks).

    `history`: a DataFrame with columns `ds` (dates) and `y`. Returns a DataFrame with `ds, point,
    lo_50, hi_50, lo_80, hi_80, lo_95, hi_95`; `attrs["engine"]` and `attrs["notes"]` say which engine
    and why, and what was done to the history (filled gaps, closed weekdays, a partial last day).
    Raises ForecastError (HistoryTooShort for a history too short to backtest)."""
    from flashcast.config import ForecastConfig  # the one place the default line-up is named

    missing = {"ds", "y"} - set(history.columns)
    if missing:
        raise ForecastError(f"history needs columns ds and y (missing: {', '.join(sorted(missing))})")
    line_up = tuple(engines) if engines else ForecastConfig().engines
    result = auto_forecast(history[["ds", "y"]], series_id="series", engines=line_up,
                           spec=BacktestSpec(horizon=horizon), nonnegative=nonnegative,
                           options=EngineOptions(countries=tuple(holiday_countries)), keep_last_day=keep_last_day)
    out = tidy(result).drop(columns=["series_id", "engine"])
    out["ds"] = pd.to_datetime(out["ds"])
    out.attrs.update(engine=result.engine, notes=list(result.notes))
    return out
