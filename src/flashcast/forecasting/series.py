"""The one series validator: sort, check and gap-fill a daily or weekly (ds, y) series."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import numpy as np
import pandas as pd

from flashcast.errors import ForecastError, NegativeValue, RepeatedDate

MIN_HISTORY_DAYS = 28  # below this not even a weekly pattern can be seen


WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
CLOSED_SHARE = 0.9  # a weekday missing this often (of at least MIN_CLOSED_WEEKS) is a closed day
MIN_CLOSED_WEEKS = 4
PARTIAL_SHARE = 0.5  # a last day under this share of its weekday's recent median looks partly filled


@dataclass(frozen=True)
class Cadence:
    """How far apart a series' rows are, and the lags the forecasters read it by."""

    name: str  # "daily" or "weekly"
    days: int  # days between rows
    unit: str  # one row, in words
    season: int  # rows of the short season: the lag of MASE's naive scale and of the conformal spread
    year: int  # rows in a year


DAILY = Cadence("daily", 1, "day", 7, 365)
# A weekly series has no season shorter than the year: its scale is the last week's value (the M4
# competition's MASE for weekly series), and its yearly cycle is 52 rows.
WEEKLY = Cadence("weekly", 7, "week", 1, 52)


class PreparedSeries(NamedTuple):
    y: np.ndarray
    dates: pd.DatetimeIndex
    filled_days: int  # missing days filled by interpolation
    dropped_days: int  # days before the last long gap, left out
    closed_weekdays: tuple[int, ...] = ()  # 0 = Monday: days the business is closed, held at 0
    partial_last_day: str | None = None  # why the last day was left out, when it was
    blank_last_days: int = 0  # rows at the end without a value, left out
    spike_days: tuple[date, ...] = ()  # isolated spikes replaced by their weekday's level (`_isolated_spikes`)
    cadence: Cadence = DAILY


def prepare_series(frame: pd.DataFrame, *, series_id: str, nonnegative: bool = True, max_gap_share: float = 0.1,
                   max_fill_days: int = 7, min_days: int = 1, keep_last_day: bool = False) -> PreparedSeries:
    """Sort, check and gap-fill a (ds, y) frame of daily or weekly values (`Cadence`, read from the
    dates: rows typically 7 days apart are weekly). Rules: runs of up to `max_fill_days` missing
    dates (of a weekly series, up to WEEKLY_MAX_FILL missing weeks) are inserted and filled by
    linear interpolation (their count is returned and reported); a longer run (the data did not
    exist or was broken) is not bridged: the history starts after the last one and the days before
    it are left out (counted too). A weekday missing at least CLOSED_SHARE of the time (a shop
    closed on Sundays) is a closed day: held at 0, not counted as missing. More than `max_gap_share`
    missing in what remains is an error. A last day (or week) far below its weekday's recent level
    (under PARTIAL_SHARE of the median of the four before it) is taken as partly filled and left
    out, unless `keep_last_day` or the series may be negative. A row without a value (a blank cell,
    NaN) is a missing day like an absent row; blank rows at the end are left out and counted. An
    isolated spike (a day far above its weekday's level, see `_isolated_spikes`) is replaced by that
    level, its date returned. Duplicate dates, a weekly row off its series' weekday and (when
    `nonnegative`) negative values are errors, and so is a series of fewer than `min_days` rows."""
    if frame.empty:
        raise ForecastError(f"{series_id}: no data")
    # numpy from here: the daily forecast call runs this on every series, and pandas' per-operation
    # overhead made it most of that call's time
    stamps = pd.to_datetime(frame["ds"]).to_numpy()
    try:
        given = frame["y"].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise ForecastError(f"{series_id}: y is not a number on every row") from None
    order = np.argsort(stamps, kind="stable")
    ds, y = pd.DatetimeIndex(stamps[order]), given[order]
    same = np.flatnonzero(ds[1:] == ds[:-1])
    if len(same):
        raise RepeatedDate(f"{series_id}: duplicate date {ds[same[0] + 1].date()}")
    cadence = _cadence(ds, series_id)
    valued = np.flatnonzero(~np.isnan(y))
    if not len(valued):
        raise ForecastError(f"{series_id}: no values (every row's value is blank)")
    if len(valued) < min_days:
        what = f"{cadence.unit}s of history" if len(valued) == len(y) else f"{cadence.unit}s with a value"
        raise ForecastError(f"{series_id}: {len(valued)} {what}; at least {min_days} needed")
    blank_last = len(y) - 1 - int(valued[-1])
    if len(valued) < len(y):  # a blank value is a missing day, as a missing row is
        ds, y = ds[valued], y[valued]
    if nonnegative and (y < 0).any():
        raise NegativeValue(f"{series_id}: negative value on {ds[(y < 0).argmax()].date()}")
    max_fill = max_fill_days if cadence is DAILY else WEEKLY_MAX_FILL
    long_gaps = np.flatnonzero(np.diff(ds.to_numpy()) // np.timedelta64(cadence.days, "D") > max_fill + 1)
    dropped = 0
    if len(long_gaps):
        start = long_gaps[-1] + 1
        dropped = int((ds[start] - ds[0]).days)
        ds, y = ds[start:], y[start:]
    full = pd.date_range(ds[0], ds[-1], freq=f"{cadence.days}D")
    at = full.get_indexer(ds)  # -1: a time of day off the daily grid, left out as a reindex would
    if cadence is WEEKLY and (at < 0).any():
        raise ForecastError(f"{series_id}: {ds[(at < 0).argmax()].date()} is not a whole number of weeks after "
                            f"{ds[0].date()}: the rows of a weekly series fall on one weekday")
    values = np.full(len(full), np.nan)
    values[at[at >= 0]] = y[at >= 0]
    weekday = full.dayofweek.to_numpy()
    absent = np.isnan(values)
    closed = _closed_weekdays(weekday, absent) if cadence is DAILY else ()
    values[np.isin(weekday, closed) & absent] = 0.0
    gaps = np.isnan(values)  # absent on a day the business was open
    missing = int(gaps.sum())
    if missing > max_gap_share * len(full):
        raise ForecastError(f"{series_id}: {missing} of {len(full)} {cadence.unit}s missing "
                            f"(more than {max_gap_share:.0%})")
    if missing:
        values[gaps] = np.interp(np.flatnonzero(gaps), np.flatnonzero(~gaps), values[~gaps])
    # Below a share of the recent level says nothing where values may be negative (a profit, a change)
    partial = None if keep_last_day or not nonnegative else _partial_last_day(values, full, closed, cadence)
    if partial is not None:
        values, full = values[:-1], full[:-1]
    spikes, level = _isolated_spikes(values, open_days=~np.isin(full.dayofweek.to_numpy(), closed),
                                     lag=7 // cadence.days)
    if len(spikes):
        values = values.copy()
        values[spikes] = level[spikes]
    return PreparedSeries(values, full, missing, dropped, closed, partial, blank_last,
                          tuple(d.date() for d in full[spikes]), cadence)


WEEKLY_MAX_FILL = 2  # missing weeks in a row filled by interpolation; a longer gap restarts the history


# An isolated day at SPIKE_RATIO times its weekday's level or more, and SPIKE_SIGMAS robust standard
# deviations above it, is a glitch (a test order of a million, a bot's burst), not demand: one such
# day moves every engine's level and widens the calibrated bands many times over. Promotions and
# holidays (2-5x) stay; so does a level that stays up (the days beside it are up too).
SPIKE_RATIO = 10.0
SPIKE_SIGMAS = 10.0
SPIKE_QUANTILE, SPIKE_OVER_USUAL = 0.98, 3.0  # and 3x the 98th percentile of the days' ratios to their level
SPIKE_MAX_ZERO_SHARE = 0.05  # an intermittent series (a day in 20 without a sale) has no level to stand above
SPIKE_NEIGHBOUR_RATIO = 3.0  # a day beside a spike above this many times the spike's level: a shift
_SPIKE_WEEKS = 3  # the level: median of the same weekday up to this many weeks before and after


def _isolated_spikes(values: np.ndarray, *, open_days: np.ndarray | None = None, lag: int = 7
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the isolated spikes in a daily series (`lag` 7) or a weekly one (`lag` 1), and each
    row's level (the median of the same weekday in the weeks around it, the row itself left out).
    `open_days`: False on closed weekdays."""
    n = len(values)
    opened = values if open_days is None else values[open_days]
    if n < 4 * 7 or not len(opened) or np.mean(opened == 0) > SPIKE_MAX_ZERO_SHARE:
        return np.array([], dtype=int), values
    shifts = [lag * w * sign for w in range(1, _SPIKE_WEEKS + 1) for sign in (-1, 1)]
    around = np.full((len(shifts), n), np.nan)
    for row, shift in enumerate(shifts):
        if shift < 0:
            around[row, -shift:] = values[:shift]
        else:
            around[row, :-shift] = values[shift:]
    level = np.nanmedian(around, axis=0)
    residual = values - level
    sigma = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    if sigma <= 0:
        return np.array([], dtype=int), level
    ratio = np.where(level > 0, values / np.where(level > 0, level, 1.0), 0.0)
    # Lumpy series (a few large orders a day) have days at 10x their level as part of their spread:
    # a spike must also stand far above the series' own high days.
    usual_high = float(np.quantile(ratio[level > 0], SPIKE_QUANTILE)) if (level > 0).any() else 0.0
    high = ((level > 0) & (ratio >= max(SPIKE_RATIO, SPIKE_OVER_USUAL * usual_high))
            & (residual >= SPIKE_SIGMAS * sigma))
    # A day beside it well above the spike's own level: the level has moved (near the series' end
    # the weeks after are missing, and the level is the weeks before alone), not one day.
    bar = SPIKE_NEIGHBOUR_RATIO * np.maximum(level, 0)
    beside = np.zeros(n, dtype=bool)
    beside[1:] |= values[:-1] > bar[1:]
    beside[:-1] |= values[1:] > bar[:-1]
    return np.flatnonzero(high & ~beside), level


def _closed_weekdays(weekday: np.ndarray, absent: np.ndarray) -> tuple[int, ...]:
    """Weekdays absent at least CLOSED_SHARE of the time over at least MIN_CLOSED_WEEKS weeks."""
    days = np.bincount(weekday, minlength=7)
    missing = np.bincount(weekday, weights=absent, minlength=7)
    return tuple(d for d in range(7) if days[d] >= MIN_CLOSED_WEEKS and missing[d] / days[d] >= CLOSED_SHARE)


def _partial_last_day(values: np.ndarray, dates: pd.DatetimeIndex, closed: tuple[int, ...],
                      cadence: Cadence = DAILY) -> str | None:
    """Why the last day (or week) looks partly filled (far below the same weekday's recent median),
    or None."""
    last = dates[-1]
    if last.dayofweek in closed or len(values) < 5 * 7:
        return None
    level = float(np.median(values[dates.dayofweek == last.dayofweek][-5:-1]))
    if level <= 0 or float(values[-1]) >= PARTIAL_SHARE * level:
        return None
    before = WEEKDAYS[last.dayofweek] if cadence is DAILY else "weeks"
    return (f"the last {cadence.unit} ({last.date()}) is at {float(values[-1]) / level:.0%} of the median of the "
            f"four {before} before it: left out as partly filled (keep it with --keep-last-day, or keep_last_day=True)")


def validate_history(history: pd.DataFrame, *, series_id: str, nonnegative: bool = True,
                     keep_last_day: bool = False) -> PreparedSeries:
    """`prepare_series` for a series that must hold at least MIN_HISTORY_DAYS days."""
    return prepare_series(history, series_id=series_id, nonnegative=nonnegative, min_days=MIN_HISTORY_DAYS,
                          keep_last_day=keep_last_day)


def cadence_of(frame: pd.DataFrame, series_id: str) -> Cadence:
    """The cadence of a (ds, y) frame's dates (see `prepare_series`)."""
    return _cadence(pd.DatetimeIndex(np.sort(pd.to_datetime(frame["ds"]).to_numpy())), series_id)


def _cadence(ds: pd.DatetimeIndex, series_id: str) -> Cadence:
    """Daily or weekly, from the typical distance between the dates. Dates a week apart are weekly
    data, not a daily series with gaps or closed days (read as daily they would be forecast as
    closed six days of seven); dates further apart (monthly data) are refused."""
    if len(ds) < 3:
        return DAILY
    gap = int(np.median(np.diff(ds.to_numpy()).astype("timedelta64[D]").astype(int)))
    if gap == 7:
        return WEEKLY
    if gap > 7:
        cadence = "monthly" if 28 <= gap <= 31 else f"one value every {gap} days"
        raise ForecastError(f"{series_id}: the dates are typically {gap} days apart ({cadence} data); the "
                            "forecaster takes daily or weekly series")
    return DAILY
