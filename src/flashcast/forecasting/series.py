"""The one series validator: sort, check and gap-fill a daily (ds, y) series."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from flashcast.errors import ForecastError

MIN_HISTORY_DAYS = 28  # below this not even a weekly pattern can be seen


WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
CLOSED_SHARE = 0.9  # a weekday missing this often (of at least MIN_CLOSED_WEEKS) is a closed day
MIN_CLOSED_WEEKS = 4
PARTIAL_SHARE = 0.5  # a last day under this share of its weekday's recent median looks partly filled


class PreparedSeries(NamedTuple):
    y: np.ndarray
    dates: pd.DatetimeIndex
    filled_days: int  # missing days filled by interpolation
    dropped_days: int  # days before the last long gap, left out
    closed_weekdays: tuple[int, ...] = ()  # 0 = Monday: days the business is closed, held at 0
    partial_last_day: str | None = None  # why the last day was left out, when it was


def prepare_series(frame: pd.DataFrame, *, series_id: str, nonnegative: bool = True, max_gap_share: float = 0.1,
                   max_fill_days: int = 7, min_days: int = 1, keep_last_day: bool = False) -> PreparedSeries:
    """Sort, check and gap-fill a (ds, y) frame. Rules: runs of up to `max_fill_days` missing dates are
    inserted and filled by linear interpolation (their count is returned and reported); a longer run
    (the data did not exist or was broken) is not bridged: the history starts after the last one and
    the days before it are left out (counted too). A weekday missing at least CLOSED_SHARE of the
    time (a shop closed on Sundays) is a closed day: held at 0, not counted as missing. More than
    `max_gap_share` missing in what remains is an error. A last day far below its weekday's recent
    level (under PARTIAL_SHARE of the median of the four before it) is taken as partly filled and
    left out, unless `keep_last_day`. Duplicate dates, NaN values and (when `nonnegative`) negative
    values are errors, and so is a series of fewer than `min_days` rows."""
    if frame.empty:
        raise ForecastError(f"{series_id}: no data")
    if len(frame) < min_days:
        raise ForecastError(f"{series_id}: {len(frame)} days of history; at least {min_days} needed")
    data = frame[["ds", "y"]].copy()
    data["ds"] = pd.to_datetime(data["ds"])
    data = data.sort_values("ds")
    dup = data["ds"][data["ds"].duplicated()]
    if len(dup):
        raise ForecastError(f"{series_id}: duplicate date {dup.iloc[0].date()}")
    if data["y"].isna().any():
        raise ForecastError(f"{series_id}: missing value on {data['ds'][data['y'].isna()].iloc[0].date()}")
    if nonnegative and (data["y"] < 0).any():
        raise ForecastError(f"{series_id}: negative value on {data['ds'][data['y'] < 0].iloc[0].date()}")
    long_gaps = np.flatnonzero(data["ds"].diff().dt.days.to_numpy() > max_fill_days + 1)
    dropped = 0
    if len(long_gaps):
        start = data["ds"].iloc[long_gaps[-1]]
        dropped = int((start - data["ds"].iloc[0]).days)
        data = data[data["ds"] >= start]
    full = pd.date_range(data["ds"].iloc[0], data["ds"].iloc[-1], freq="D")
    filled = data.set_index("ds")["y"].reindex(full)
    closed = _closed_weekdays(filled)
    on_closed = np.isin(full.dayofweek, closed)
    filled[on_closed & filled.isna().to_numpy()] = 0.0
    missing = int(filled.isna().sum())
    if missing > max_gap_share * len(full):
        raise ForecastError(f"{series_id}: {missing} of {len(full)} days missing (more than {max_gap_share:.0%})")
    filled = filled.interpolate(method="linear")
    partial = None if keep_last_day else _partial_last_day(filled, closed)
    if partial is not None:
        filled = filled.iloc[:-1]
    return PreparedSeries(filled.to_numpy(dtype=float), pd.DatetimeIndex(filled.index), missing, dropped, closed,
                          partial)


def _closed_weekdays(values: pd.Series) -> tuple[int, ...]:
    """Weekdays absent at least CLOSED_SHARE of the time over at least MIN_CLOSED_WEEKS weeks."""
    index = pd.DatetimeIndex(values.index)
    absent = values.isna().groupby(index.dayofweek).agg(["mean", "size"])
    return tuple(int(d) for d, row in absent.iterrows()
                 if row["size"] >= MIN_CLOSED_WEEKS and row["mean"] >= CLOSED_SHARE)


def _partial_last_day(values: pd.Series, closed: tuple[int, ...]) -> str | None:
    """Why the last day looks partly filled (far below the same weekday's recent median), or None."""
    index = pd.DatetimeIndex(values.index)
    last = index[-1]
    if last.dayofweek in closed or len(values) < 5 * 7:
        return None
    same = values[index.dayofweek == last.dayofweek].iloc[-5:-1]
    level = float(same.median())
    if level <= 0 or float(values.iloc[-1]) >= PARTIAL_SHARE * level:
        return None
    return (f"the last day ({last.date()}) is at {float(values.iloc[-1]) / level:.0%} of the median of the four "
            f"{WEEKDAYS[last.dayofweek]} before it: left out as partly filled "
            "(keep it with --keep-last-day, or keep_last_day=True)")


def validate_history(history: pd.DataFrame, *, series_id: str, nonnegative: bool = True,
                     keep_last_day: bool = False) -> PreparedSeries:
    """`prepare_series` for a series that must hold at least MIN_HISTORY_DAYS days."""
    return prepare_series(history, series_id=series_id, nonnegative=nonnegative, min_days=MIN_HISTORY_DAYS,
                          keep_last_day=keep_last_day)
