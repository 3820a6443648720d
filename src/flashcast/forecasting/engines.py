"""Forecast engines behind one interface: `point(y, dates, horizon) -> np.ndarray`.

Engines return point forecasts only; bands come from the backtest (conformal calibration, see
`flashcast.forecasting.backtest`), so every engine gets honest, nested bands the same way.

    naive7     seasonal naive (same weekday last week): the floor every engine must beat
    linear     ridge regression on a piecewise-linear trend, weekday and yearly Fourier terms:
               Prophet's structure, fitted in milliseconds by least squares
    ets        statsforecast AutoETS, weekly season
    mstl       statsforecast MSTL, weekly + yearly seasons, AutoETS trend (needs two years)
    theta      statsforecast AutoTheta, weekly season (opt-in)
    arima      statsforecast AutoARIMA, weekly season (slow on long daily series: opt-in)
    prophet    Prophet with country holidays (several countries) and optional regressors
    ensemble   mean of linear, ets and mstl
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

DEFAULT_ENGINES: tuple[str, ...] = ("naive7", "linear", "ets", "mstl", "ensemble")
ALL_ENGINES: tuple[str, ...] = (*DEFAULT_ENGINES, "theta", "arima", "prophet")


class Engine(Protocol):
    @property
    def alias(self) -> str: ...

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        """Point forecasts for the `horizon` days after `dates[-1]`."""
        ...


@dataclass(frozen=True)
class SeasonalNaive:
    alias: str = "naive7"
    season: int = 7

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        last = y[-self.season:]
        return np.asarray(np.resize(last, horizon), dtype=float)


def _linear_design(t: np.ndarray, dates: pd.DatetimeIndex, changepoints: np.ndarray, yearly: int) -> np.ndarray:
    cols = [np.ones_like(t), t]
    cols += [np.maximum(t - c, 0.0) for c in changepoints]
    weekday = dates.dayofweek.to_numpy()
    cols += [(weekday == d).astype(float) for d in range(1, 7)]
    if yearly:
        day = dates.dayofyear.to_numpy() / 365.25
        for k in range(1, yearly + 1):
            cols += [np.sin(2 * np.pi * k * day), np.cos(2 * np.pi * k * day)]
    return np.column_stack(cols)


@dataclass(frozen=True)
class LinearSeasonal:
    """Ridge regression: trend with changepoints (penalized), weekday effects, yearly Fourier."""

    alias: str = "linear"
    n_changepoints: int = 20
    changepoint_range: float = 0.85
    yearly_order: int = 6
    ridge: float = 10.0
    window_days: int = 3 * 365

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        y, dates = y[-self.window_days:], dates[-self.window_days:]
        n = len(y)
        t = np.arange(n, dtype=float) / n
        changepoints = np.linspace(0, self.changepoint_range, self.n_changepoints + 2)[1:-1]
        yearly = self.yearly_order if n >= 365 else 0
        x = _linear_design(t, dates, changepoints, yearly)
        penalty = np.zeros(x.shape[1])
        penalty[2 : 2 + len(changepoints)] = self.ridge  # shrink trend changes, not levels or seasons
        scale = float(np.std(y)) or 1.0
        coef = np.linalg.solve(x.T @ x + np.diag(penalty) * n / 100, x.T @ (y / scale))
        future_dates = pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=horizon)
        t_future = (n + np.arange(horizon, dtype=float)) / n
        return np.asarray(_linear_design(t_future, future_dates, changepoints, yearly) @ coef * scale)


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Silence loggers (Prophet's and Stan's per-fit INFO chatter) for the duration of a block."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, before, strict=True):
            lg.disabled = was


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass(frozen=True)
class StatsForecastEngine:
    """AutoETS / MSTL / AutoARIMA from statsforecast, on the last `window_days` days."""

    alias: str
    window_days: int = 3 * 365
    ets_window_days: int = 400  # ETS models the weekly season only: a year is plenty, and 3x faster

    def _model(self, n: int) -> object:
        from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta

        if self.alias == "ets":
            return AutoETS(season_length=7)
        if self.alias == "theta":
            return AutoTheta(season_length=7)
        if self.alias == "arima":
            return AutoARIMA(season_length=7)
        if self.alias == "mstl":
            seasons = [7, 365] if n >= 2 * 365 + 14 else [7]
            return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
        raise ValueError(f"unknown statsforecast engine {self.alias!r}")

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        window = self.ets_window_days if self.alias in ("ets", "arima", "theta") else self.window_days
        y = np.asarray(y[-window:], dtype=float)
        with _quiet():
            result = self._model(len(y)).forecast(y=y, h=horizon)  # type: ignore[attr-defined]
        return np.asarray(result["mean"], dtype=float)


def holiday_frame(countries: Sequence[str], years: range) -> pd.DataFrame:
    """Prophet's holidays table for several countries, from the `holidays` package."""
    import holidays

    rows = []
    for country in countries:
        for day, name in holidays.country_holidays(country, years=list(years)).items():
            rows.append({"ds": pd.Timestamp(day), "holiday": f"{country}: {name}"})
    frame = pd.DataFrame(rows, columns=["ds", "holiday"])
    return frame.drop_duplicates().reset_index(drop=True)


@dataclass(frozen=True)
class ProphetEngine:
    """Prophet: weekly and yearly seasonality, country holidays, optional extra regressors."""

    alias: str = "prophet"
    countries: tuple[str, ...] = ()
    regressors: pd.DataFrame | None = field(default=None, compare=False)  # ds + columns, history and future

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        model, future = self._fit(y, dates, horizon)
        with _quiet():
            return np.asarray(model.predict(future)["yhat"], dtype=float)

    def _fit(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> tuple[Any, pd.DataFrame]:
        from prophet import Prophet

        years = range(dates[0].year, dates[-1].year + 2)
        holidays_df = holiday_frame(self.countries, years) if self.countries else None
        # Point forecasts only: bands come from the backtest, so skip Prophet's interval sampling.
        model = Prophet(holidays=holidays_df, uncertainty_samples=0)
        history = pd.DataFrame({"ds": dates, "y": y})
        future = pd.DataFrame({"ds": pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=horizon)})
        if self.regressors is not None:
            extra = [c for c in self.regressors.columns if c != "ds"]
            for column in extra:
                model.add_regressor(column)
            history = history.merge(self.regressors, on="ds", how="left").fillna(0.0)
            future = future.merge(self.regressors, on="ds", how="left").fillna(0.0)
        with quiet_loggers("cmdstanpy", "prophet"), _quiet():
            model.fit(history)
        return model, future


@dataclass(frozen=True)
class Ensemble:
    """Mean of member engines' point forecasts (members that cannot run on the series are skipped)."""

    members: tuple[Engine, ...]
    alias: str = "ensemble"

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        return np.asarray(np.mean([m.point(y, dates, horizon) for m in self.members], axis=0))


def make_engine(name: str, *, countries: tuple[str, ...] = (), regressors: pd.DataFrame | None = None) -> Engine:
    if name == "naive7":
        return SeasonalNaive()
    if name == "linear":
        return LinearSeasonal()
    if name in ("ets", "mstl", "arima", "theta"):
        return StatsForecastEngine(name)
    if name == "prophet":
        return ProphetEngine(countries=countries, regressors=regressors)
    if name == "ensemble":
        return Ensemble((LinearSeasonal(), StatsForecastEngine("ets"), StatsForecastEngine("mstl")))
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ALL_ENGINES)}")
