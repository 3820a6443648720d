"""The one series validator: sort, check and gap-fill a daily (ds, y) series."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from flashcast.errors import ForecastError

MIN_HISTORY_DAYS = 28  # below this not even a weekly pattern can be seen


class PreparedSeries(NamedTuple):
    y: np.ndarray
    dates: pd.DatetimeIndex
    filled_days: int  # missing days filled by interpolation
    dropped_days: int  # days before the last long gap, left out


def prepare_series(frame: pd.DataFrame, *, series_id: str, nonnegative: bool = True, max_gap_share: float = 0.1,
                   max_fill_days: int = 7, min_days: int = 1) -> PreparedSeries:
    """Sort, check and gap-fill a (ds, y) frame. Rules: runs of up to `max_fill_days` missing dates are
    inserted and filled by linear interpolation (their count is returned and reported); a longer run
    (the data did not exist or was broken) is not bridged: the history starts after the last one and
    the days before it are left out (counted too). More than `max_gap_share` missing in what remains
    is an error. Duplicate dates, NaN values and (when `nonnegative`) negative values are errors, and
    so is a series of fewer than `min_days` rows."""
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
    missing = int(filled.isna().sum())
    if missing > max_gap_share * len(full):
        raise ForecastError(f"{series_id}: {missing} of {len(full)} days missing (more than {max_gap_share:.0%})")
    filled = filled.interpolate(method="linear")
    return PreparedSeries(filled.to_numpy(dtype=float), pd.DatetimeIndex(full), missing, dropped)


def validate_history(history: pd.DataFrame, *, series_id: str, nonnegative: bool = True) -> PreparedSeries:
    """`prepare_series` for a series that must hold at least MIN_HISTORY_DAYS days."""
    return prepare_series(history, series_id=series_id, nonnegative=nonnegative, min_days=MIN_HISTORY_DAYS)
