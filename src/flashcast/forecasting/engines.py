"""Forecast engines behind one interface, `point(y, dates, horizon) -> np.ndarray`, and their registry.

Engines return point forecasts only; bands come from the backtest (conformal calibration, see
`flashcast.forecasting.backtest`), so every engine gets honest, nested bands the same way. Prophet
can also draw sample paths (`sample_paths`), which band a history too short for a backtest.

    naive7     seasonal naive (same weekday last week): the floor every engine must beat
    linear     dynamic regression: ridge on a piecewise-linear trend, weekday and yearly Fourier
               terms (Prophet's structure, plus optional holidays and regressors) with AR residuals
    ses        statsforecast seasonal exponential smoothing (optimized), weekly season: sub-millisecond
    ets        statsforecast AutoETS, weekly season
    mstl       statsforecast MSTL, weekly + yearly seasons, AutoETS trend (needs two years)
    theta      the standard Theta method: SES with drift on the seasonally adjusted series
               (statsforecast's `Theta`, from its compiled smoothing core): sub-millisecond
    autotheta  statsforecast AutoTheta (four Theta variants searched), weekly season (opt-in)
    arima      statsforecast AutoARIMA, weekly season (slow on long daily series: opt-in)
    prophet    Prophet with country holidays (several countries) and optional regressors
    croston    Croston's method, SBA (statsforecast's `CrostonSBA`): for intermittent series (opt-in)
    ensemble   mean of linear, ses and theta; of ses, theta and croston on an intermittent series

The default line-up is the fast one (naive7, ses, theta, linear, ensemble); the statsforecast searches
and Prophet are opt-in, because they cost 100-1000x more per fit and rarely win by enough.

Adding an engine: write a class with `alias` and `point`, and add one line to REGISTRY (the
factory gets the run's EngineOptions). The config, the CLI and the conformance test pick it up.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from flashcast.errors import ForecastError
from flashcast.forecasting.series import DAILY, WEEKLY, Cadence


class Engine(Protocol):
    @property
    def alias(self) -> str: ...

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        """Point forecasts for the `horizon` days after `dates[-1]`."""
        ...


@runtime_checkable
class SamplingEngine(Engine, Protocol):
    def sample_paths(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int, n_samples: int,
                     seed: int) -> np.ndarray:
        """A (horizon, n_samples) array of simulated future values."""
        ...


@runtime_checkable
class RollingEngine(Engine, Protocol):
    def backtest_points(self, y: np.ndarray, dates: pd.DatetimeIndex, cuts: Sequence[int], horizon: int
                        ) -> np.ndarray | None:
        """`point(y[:c], dates[:c], horizon)` for every cut c at once (rows), or None when it cannot
        be done at once for this series (the backtest then fits origin by origin)."""
        ...


@dataclass(frozen=True)
class EngineOptions:
    """What a run can tell every engine: holiday countries, extra regressors (ds + columns, covering
    the history and the future) and the series' cadence (a weekly series gets each engine's weekly
    form: its seasons, windows and lags in weeks)."""

    countries: tuple[str, ...] = ()
    regressors: pd.DataFrame | None = field(default=None, compare=False)
    cadence: Cadence = DAILY


@dataclass(frozen=True)
class SeasonalNaive:
    alias: str = "naive7"
    season: int = 7

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        last = y[-self.season:]
        return np.asarray(np.resize(last, horizon), dtype=float)

    def backtest_points(self, y: np.ndarray, dates: pd.DatetimeIndex, cuts: Sequence[int], horizon: int
                        ) -> np.ndarray | None:
        if min(cuts) < self.season:
            return None
        steps = np.asarray(cuts)[:, None] - self.season + np.arange(horizon)[None, :] % self.season
        return np.asarray(y, dtype=float)[steps]


def _linear_design(t: np.ndarray, days: np.ndarray, changepoints: np.ndarray, yearly: int, *,
                   weekdays: bool = True) -> np.ndarray:
    """Columns: intercept, trend, a hinge per changepoint, weekdays 1-6 (unless not `weekdays`: a
    weekly series' rows share one weekday), then sin and cos of each yearly Fourier order, for
    calendar `days` (datetime64[D]). Filled in place, from numpy dates: built column by column from
    pandas dates it was most of a backtest's time."""
    n, n_hinges = len(t), len(changepoints)
    n_weekdays = 6 if weekdays else 0
    x = np.empty((n, 2 + n_hinges + n_weekdays + 2 * yearly))
    x[:, 0] = 1.0
    x[:, 1] = t
    np.maximum(t[:, None] - changepoints[None, :], 0.0, out=x[:, 2 : 2 + n_hinges])
    first = 2 + n_hinges
    if weekdays:
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
        x[:, first : first + 6] = weekday[:, None] == np.arange(1, 7)[None, :]
    if yearly:
        day_of_year = (days - days.astype("datetime64[Y]")).astype(np.int64) + 1
        x[:, first + n_weekdays :] = _yearly_terms(yearly)[day_of_year]
    return x


def _calendar_days(dates: pd.DatetimeIndex) -> np.ndarray:
    """The dates as numpy calendar days (datetime64[D]), in their own time zone's wall time."""
    return (dates.tz_localize(None) if dates.tz is not None else dates).to_numpy().astype("datetime64[D]")


@functools.cache
def _yearly_terms(order: int) -> np.ndarray:
    """Sin and cos of each yearly Fourier order (interleaved) for day of year 0-366, looked up by day."""
    angle = (2 * np.pi * np.arange(367) / 365.25)[:, None] * np.arange(1, order + 1)[None, :]
    terms = np.empty((367, 2 * order))
    terms[:, 0::2], terms[:, 1::2] = np.sin(angle), np.cos(angle)
    terms.flags.writeable = False
    return terms


def _holiday_columns(dates: pd.DatetimeIndex, future: pd.DatetimeIndex, countries: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One indicator per holiday name seen in the history, for the history and the future dates."""
    table = holiday_frame(countries, range(dates[0].year, future[-1].year + 1))
    in_history = dates.get_indexer(table["ds"])
    names = pd.Index(table["holiday"][in_history >= 0].unique())
    code = names.get_indexer(table["holiday"])
    out = []
    for span in (dates, future):
        flags = np.zeros((len(span), len(names)))
        row = span.get_indexer(table["ds"])
        keep = (row >= 0) & (code >= 0)
        flags[row[keep], code[keep]] = 1.0
        out.append(flags)
    return out[0], out[1]


def _regressor_columns(regressors: pd.DataFrame, dates: pd.DatetimeIndex, future: pd.DatetimeIndex
                       ) -> tuple[np.ndarray, np.ndarray]:
    values = regressors.set_index(pd.to_datetime(regressors["ds"])).drop(columns="ds").astype(float)
    return (values.reindex(dates, fill_value=0.0).to_numpy(), values.reindex(future, fill_value=0.0).to_numpy())


def _ar_correction(resid: np.ndarray, order: int, horizon: int) -> np.ndarray:
    """Forecast the regression's residuals with an AR(order) fitted by least squares: the last days'
    departures from trend and seasonality (a level shift, a campaign) carry into the next ones.
    An explosive fit (spectral radius >= 1) is dropped rather than extrapolated."""
    if order == 0 or len(resid) < 4 * order:
        return np.zeros(horizon)
    lagged = np.column_stack([resid[order - k - 1 : len(resid) - k - 1] for k in range(order)])
    phi = np.linalg.lstsq(lagged, resid[order:], rcond=None)[0]
    companion = np.eye(order, k=-1)
    companion[0] = phi
    if float(np.max(np.abs(np.linalg.eigvals(companion)))) >= 1.0:
        return np.zeros(horizon)
    history = list(resid[-order:][::-1])  # most recent first
    out = np.empty(horizon)
    for step in range(horizon):
        out[step] = float(np.dot(phi, history[:order]))
        history.insert(0, out[step])
    return out


YEARLY_MIN_DAYS = 365  # the linear engine fits yearly terms from a year of history,
YEARLY_FULL_DAYS = 730  # all of its Fourier orders from two (Prophet's own rule for yearly seasonality)
# Below two years, a smooth yearly cycle: ten orders fitted to one year mostly fit that year's noise,
# which the next weeks then repeat (30 noisy small-shop series, 1-2 years each: the 14-day total's
# RMS error 33% with ten orders, 23% with three; 30 seasonal ones: 21% and 13%; docs/forecasting.md)
SHORT_YEARLY_ORDER = 3
HOLIDAY_RIDGE = 1.0  # a holiday seen once moves about half-way to its effect
REGRESSOR_RIDGE = 1e-6  # a user's event regressor is taken nearly at face value


@dataclass(frozen=True)
class DynamicRegression:
    """Dynamic regression: ridge on Prophet's structure (piecewise-linear trend with penalized
    changepoints, weekday effects, yearly Fourier terms, optional country holidays and event
    regressors), plus an AR model of its residuals for the short term. Milliseconds per fit."""

    alias: str = "linear"
    n_changepoints: int = 25  # Prophet's defaults: 25 changepoints over the first 80% of the window
    changepoint_range: float = 0.8
    yearly_order: int = 10
    ridge: float = 10.0
    window_days: int = 4 * 365  # recent years describe today's business better than the oldest ones
    ar_order: int = 7
    ar_days: int = 365
    countries: tuple[str, ...] = ()
    regressors: pd.DataFrame | None = field(default=None, compare=False)  # ds + columns, history and future
    cadence: Cadence = DAILY  # weekly: no weekday terms; windows and lags above count rows (weeks)

    @classmethod
    def weekly(cls, options: EngineOptions) -> DynamicRegression:
        """The weekly form: four years of weeks, two weeks of autoregression over the last year's
        residuals; holidays are not modelled (a week holds them or not)."""
        return cls(window_days=4 * 52, ar_order=2, ar_days=52, regressors=options.regressors, cadence=WEEKLY)

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        y, dates = y[-self.window_days:], dates[-self.window_days:]
        n = len(y)
        days = _calendar_days(dates)
        days_ahead = days[-1] + self.cadence.days * np.arange(1, horizon + 1)
        t = np.arange(n, dtype=float) / n
        t_future = (n + np.arange(horizon, dtype=float)) / n
        changepoints = np.linspace(0, self.changepoint_range, self.n_changepoints + 2)[1:-1]
        yearly = self.yearly_order_for(n)
        daily = self.cadence == DAILY
        x = _linear_design(t, days, changepoints, yearly, weekdays=daily)
        x_future = _linear_design(t_future, days_ahead, changepoints, yearly, weekdays=daily)
        penalty = np.zeros(x.shape[1])
        penalty[2 : 2 + len(changepoints)] = self.ridge * n / 100  # shrink trend changes, not levels or seasons
        extras = []
        if self.countries or self.regressors is not None:
            future = pd.date_range(dates[-1] + pd.Timedelta(days=self.cadence.days), periods=horizon,
                                   freq=f"{self.cadence.days}D")
            if self.countries:
                extras.append((*_holiday_columns(dates, future, self.countries), HOLIDAY_RIDGE))
            if self.regressors is not None:
                extras.append((*_regressor_columns(self.regressors, dates, future), REGRESSOR_RIDGE))
        for past, ahead, shrink in extras:
            x, x_future = np.hstack([x, past]), np.hstack([x_future, ahead])
            penalty = np.concatenate([penalty, np.full(past.shape[1], shrink)])
        scale = float(np.std(y)) or 1.0
        coef = np.linalg.solve(x.T @ x + np.diag(penalty), x.T @ (y / scale))
        resid = y / scale - x @ coef
        base = x_future @ coef + _ar_correction(resid[-self.ar_days:], self.ar_order, horizon)
        return np.asarray(base * scale)

    def yearly_order_for(self, n: int) -> int:
        """The yearly Fourier order fitted to `n` rows of history (within the window)."""
        daily = self.cadence == DAILY
        one, two = (YEARLY_MIN_DAYS, YEARLY_FULL_DAYS) if daily else (self.cadence.year, 2 * self.cadence.year)
        if n >= two:
            return self.yearly_order
        return min(self.yearly_order, SHORT_YEARLY_ORDER) if n >= one else 0

    def backtest_points(self, y: np.ndarray, dates: pd.DatetimeIndex, cuts: Sequence[int], horizon: int
                        ) -> np.ndarray | None:
        """Every origin's fit at once from prefix sums (`flashcast.forecasting.rolling`): the same
        numbers as one `point` call per origin, to rounding, in a fraction of the time. (A weekly
        series, a few hundred rows, is fitted origin by origin.)"""
        from flashcast.forecasting.rolling import rolling_points

        if self.cadence != DAILY:
            return None
        return rolling_points(self, y, dates, cuts, horizon)


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
    """Seasonal exponential smoothing / AutoETS / MSTL / Theta / AutoTheta / AutoARIMA from statsforecast.
    On a weekly series (`weekly`): the yearly season (52 weeks) for MSTL, Theta and AutoTheta from two
    years of history; AutoETS has no season that long (statsforecast takes at most 24) and
    AutoARIMA's seasonal search takes seconds a fit on 52 weeks, so both are fitted without one."""

    alias: str
    window_days: int = 3 * 365
    ets_window_days: int = 400  # weekly-season models: a year is plenty, and 3x faster
    cadence: Cadence = DAILY

    @classmethod
    def weekly(cls, alias: str) -> StatsForecastEngine:
        return cls(alias, window_days=3 * 52, ets_window_days=3 * 52, cadence=WEEKLY)

    def _model(self, n: int) -> object:
        if self.cadence != DAILY:
            return self._weekly_model(n)
        from statsforecast.models import (
            MSTL,
            AutoARIMA,
            AutoETS,
            AutoTheta,
            SeasonalExponentialSmoothingOptimized,
            Theta,
        )

        if self.alias == "ses":
            return SeasonalExponentialSmoothingOptimized(season_length=7)
        if self.alias == "ets":
            return AutoETS(season_length=7)
        if self.alias == "theta":
            return Theta(season_length=7)
        if self.alias == "autotheta":
            return AutoTheta(season_length=7)
        if self.alias == "arima":
            return AutoARIMA(season_length=7)
        if self.alias == "mstl":
            seasons = [7, 365] if n >= 2 * 365 + 14 else [7]
            return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
        raise ForecastError(f"unknown statsforecast engine {self.alias!r}")

    def _weekly_model(self, n: int) -> object:
        from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta, SimpleExponentialSmoothingOptimized, Theta

        year = self.cadence.year if n >= 2 * self.cadence.year else 1
        models: dict[str, Callable[[], object]] = {
            "ses": SimpleExponentialSmoothingOptimized, "ets": lambda: AutoETS(season_length=1),
            "theta": lambda: Theta(season_length=year), "autotheta": lambda: AutoTheta(season_length=year),
            "arima": lambda: AutoARIMA(season_length=1),
            "mstl": lambda: (MSTL(season_length=[year], trend_forecaster=AutoETS(model="ZZN")) if year > 1
                             else AutoETS(model="ZZN")),
        }
        if self.alias not in models:
            raise ForecastError(f"unknown statsforecast engine {self.alias!r}")
        return models[self.alias]()

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        window = self.window_days if self.alias == "mstl" else self.ets_window_days
        y = np.asarray(y[-window:], dtype=float)
        with _quiet():
            result = self._model(len(y)).forecast(y=y, h=horizon)  # type: ignore[attr-defined]
        return np.asarray(result["mean"], dtype=float)


@dataclass(frozen=True)
class SeasonalSES:
    """statsforecast's SeasonalExponentialSmoothingOptimized, weekly season, on the last
    `window_days` days, from its compiled core (`seasonal_ses`; the model class where this
    statsforecast has no such core). On a weekly series (season 1, the last three years' weeks):
    simple exponential smoothing."""

    alias: str = "ses"
    window_days: int = 400
    season: int = 7

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        core = _ses_core()
        if core is None:
            fallback = (StatsForecastEngine("ses", ets_window_days=self.window_days) if self.season == 7
                        else StatsForecastEngine.weekly("ses"))
            return fallback.point(y, dates, horizon)
        return seasonal_ses(core, np.asarray(y[-self.window_days:], dtype=float), horizon, self.season)

    def backtest_points(self, y: np.ndarray, dates: pd.DatetimeIndex, cuts: Sequence[int], horizon: int
                        ) -> np.ndarray | None:
        """`point` at every cut without slicing the dates it does not read (a tenth of its backtest)."""
        core = _ses_core()
        if core is None:
            return None
        y = np.asarray(y, dtype=float)
        return np.array([seasonal_ses(core, y[max(0, c - self.window_days) : c], horizon, self.season) for c in cuts])


@functools.cache
def _ses_core() -> Any:
    """statsforecast's compiled exponential smoothing (None where this statsforecast has no such
    module). Why not its model class: importing statsforecast.models loads statsmodels, about 2 s of
    every process that forecasts, against 0.5 s for the compiled core."""
    try:
        from statsforecast._lib import ses
    except ImportError:
        return None
    return ses if all(hasattr(ses, f) for f in ("golden_section_ses", "ses_forecast")) else None


def seasonal_ses(core: Any, y: np.ndarray, horizon: int, season_length: int = 7) -> np.ndarray:
    """statsforecast's SeasonalExponentialSmoothingOptimized forecast from its compiled core, step
    for step as the model class computes it: each weekday's own series gets the alpha (in
    0.01-0.99) of least squared one-step error, and its smoothed level is that weekday's forecast.
    A test holds it equal to the class."""
    n = y.size
    if n < season_length:
        return np.full(horizon, np.nan)
    levels = np.empty(season_length)
    for i in range(season_length):
        x = y[i + n % season_length :: season_length]
        levels[i] = core.ses_forecast(x, core.golden_section_ses(x, 0.01, 0.99))[0]
    return np.tile(levels, -(-horizon // season_length))[:horizon]


SEASONAL_TEST_Z = 1.6448536269514722  # one-sided 95% normal quantile, as statsforecast's Theta uses


def seasonal_indices(values: np.ndarray, lengths: np.ndarray, season_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Classical decomposition's seasonal component of each row of `values` (its first `lengths[i]`
    values are history, the rest padding), one value per position `t % season_length`, as
    statsmodels' `seasonal_decompose` computes it: the series over (or minus) its centred moving
    average (of m values for an odd season length m, of m + 1 with half weights at the ends for an
    even one: a weekly series' 52 weeks), averaged per position and normalized to mean 1 (or 0).
    Returns the multiplicative and the additive indices (rows x season_length); a row with zeros
    has no meaningful multiplicative one, a row shorter than its moving average none at all."""
    m = season_length
    k = values.shape[0]
    sums = np.concatenate([np.zeros((k, 1)), np.cumsum(values, axis=1)], axis=1)
    # a centred moving average where the whole span is history
    if m % 2:
        trend, last = (sums[:, m:] - sums[:, :-m]) / m, lengths - m
    else:
        trend = (sums[:, m + 1 :] - sums[:, : -(m + 1)] - 0.5 * (values[:, :-m] + values[:, m:])) / m
        last = lengths - m - 1
    inside = np.arange(trend.shape[1])[None, :] <= last[:, None]
    middle = values[:, m // 2 : m // 2 + trend.shape[1]]
    position = (np.arange(trend.shape[1]) + m // 2) % m
    one_hot = (position[:, None] == np.arange(m)[None, :]).astype(float)
    counts = np.maximum(inside @ one_hot, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(inside, middle / trend, 0.0) @ one_hot / counts
        difference = np.where(inside, middle - trend, 0.0) @ one_hot / counts
        return ratio / ratio.mean(axis=1, keepdims=True), difference - difference.mean(axis=1, keepdims=True)


THETA_ALPHA = (0.01, 0.99)  # the smoothing's bounds (see theta_method)


def theta_method(core: Any, windows: np.ndarray, lengths: np.ndarray, horizon: int, season_length: int = 7
                 ) -> np.ndarray:
    """The standard Theta method (Assimakopoulos & Nikolopoulos 2000) in Hyndman & Billah's form,
    as R's `forecast::thetaf` computes it, on each row of `windows` (origins x days; row i's history
    is its first `lengths[i]` values, the rest padding, so a backtest prepares all its origins in
    array operations): simple exponential smoothing plus half the slope of a straight line through
    the history, on the series seasonally adjusted by classical decomposition when the
    autocorrelation at the season lag is significant (multiplicative for a positive series, else
    additive), re-seasonalized. Alpha in 0.01-0.99 (statsforecast's bounds for simple exponential
    smoothing; R's `ses` allows 0.0001-0.9999) from statsforecast's compiled smoothing core, searched
    row by row. statsforecast's `Theta` is the same model with the initial level also optimized and
    alpha held at 0.1 or more; a test holds the two close where the best alpha is above 0.1. Below
    it (a noisy level, a small shop's orders) 0.1 smoothed over about 19 days and read their noise
    as the level: `theta`'s 14-day total of simulated small-shop revenue erred by 24.5% RMS (81.8%
    on intermittent sales), 18.4% (42.3%) with the wider bounds (docs/forecasting.md)."""
    width = windows.shape[1]
    m = season_length
    n = np.asarray(lengths, dtype=np.int64)
    valid = np.arange(width)[None, :] < n[:, None]
    values = np.where(valid, windows, 0.0)
    centred = np.where(valid, values - (values.sum(axis=1) / n)[:, None], 0.0)
    denominator = np.einsum("ij,ij->i", centred, centred)
    safe = np.where(denominator > 0, denominator, 1.0)
    lagged = [np.einsum("ij,ij->i", centred[:, :-j], centred[:, j:]) for j in range(1, m + 1)]  # padding adds 0
    r = np.stack(lagged, axis=1) / safe[:, None]
    seasonal = (n >= 2 * m) & (denominator > 0) & (
        np.abs(r[:, -1]) / np.sqrt((1 + 2 * np.sum(r[:, :-1] ** 2, axis=1)) / n) > SEASONAL_TEST_Z)
    ratio, difference = seasonal_indices(values, n, m)
    positive = np.where(valid, windows, np.inf).min(axis=1) > 0
    multiplicative = seasonal & positive & ~(ratio.min(axis=1) < 0.01)  # a tiny index: additive instead
    season = np.where(multiplicative[:, None], ratio, np.where(seasonal[:, None], difference, 0.0))
    past = season[:, np.arange(width) % m]
    divisor = np.where(multiplicative[:, None] & valid, past, 1.0)
    x = np.where(valid, np.where(multiplicative[:, None], values / divisor, values - past), 0.0)
    t = np.where(valid, np.arange(width)[None, :] - ((n - 1) / 2)[:, None], 0.0)
    slope = np.einsum("ij,ij->i", t, x - (x.sum(axis=1) / n)[:, None]) / np.einsum("ij,ij->i", t, t)
    alpha = np.array([core.golden_section_ses(row[:size], *THETA_ALPHA) for row, size in zip(x, n, strict=True)])
    level = np.array([core.ses_forecast(row[:size], a)[0] for row, size, a in zip(x, n, alpha, strict=True)])
    drift = np.arange(horizon)[None, :] + ((1 - (1 - alpha) ** n) / alpha)[:, None]
    out = level[:, None] + (slope / 2)[:, None] * drift
    ahead = np.take_along_axis(season, (n[:, None] + np.arange(horizon)[None, :]) % m, axis=1)
    return np.where(multiplicative[:, None], out * ahead, out + ahead)


@dataclass(frozen=True)
class ThetaMethod:
    """The standard Theta method (`theta_method`) on the last `window_days` days; on a weekly series
    the last three years' weeks, with the yearly season (52 weeks)."""

    alias: str = "theta"
    window_days: int = 400  # as the weekly-season statsforecast engines: a year describes the level
    season: int = 7

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        y = np.asarray(y[-self.window_days:], dtype=float)
        core = _ses_core()
        if core is None:  # a statsforecast without the compiled core: its model class
            fallback = StatsForecastEngine("theta") if self.season == 7 else StatsForecastEngine.weekly("theta")
            return fallback.point(y, dates, horizon)
        return theta_method(core, y[None, :], np.array([y.size]), horizon, self.season)[0]

    def backtest_points(self, y: np.ndarray, dates: pd.DatetimeIndex, cuts: Sequence[int], horizon: int
                        ) -> np.ndarray | None:
        """`point` at every cut, all origins prepared together (the seasonal test, decomposition
        and drift of all of them in array operations); only the smoothing's alpha is searched
        origin by origin. The padding past each cut changes nothing (tested)."""
        core = _ses_core()
        if core is None:
            return None
        y = np.asarray(y, dtype=float)
        cut = np.asarray(cuts, dtype=np.int64)
        start = np.maximum(cut - self.window_days, 0)
        lengths = cut - start
        rows = np.minimum(start[:, None] + np.arange(int(lengths.max()))[None, :], len(y) - 1)
        return theta_method(core, y[rows], lengths, horizon, self.season)  # left-aligned windows, padded past each cut


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
    """Prophet: weekly and yearly seasonality, country holidays, optional extra regressors. On a
    weekly series: yearly seasonality and regressors only (a week has no weekday; it holds a
    holiday or not)."""

    alias: str = "prophet"
    countries: tuple[str, ...] = ()
    regressors: pd.DataFrame | None = field(default=None, compare=False)  # ds + columns, history and future
    cadence: Cadence = DAILY

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        # Point forecasts only: bands come from the backtest, so skip Prophet's interval sampling.
        model, future = self._fit(y, dates, horizon, samples=0)
        with _quiet():
            return np.asarray(model.predict(future)["yhat"], dtype=float)

    def sample_paths(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int, n_samples: int,
                     seed: int) -> np.ndarray:
        model, future = self._fit(y, dates, horizon, samples=n_samples)
        np.random.seed(seed)  # Prophet samples with numpy's global generator
        with _quiet():
            return np.asarray(model.predictive_samples(future)["yhat"], dtype=float)

    def _fit(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int, *, samples: int
             ) -> tuple[Any, pd.DataFrame]:
        from prophet import Prophet

        years = range(dates[0].year, dates[-1].year + 2)
        daily = self.cadence == DAILY
        holidays_df = holiday_frame(self.countries, years) if self.countries and daily else None
        model = Prophet(holidays=holidays_df, uncertainty_samples=samples,
                        weekly_seasonality="auto" if daily else False, daily_seasonality="auto" if daily else False)
        history = pd.DataFrame({"ds": dates, "y": y})
        step = self.cadence.days
        future = pd.DataFrame({"ds": pd.date_range(dates[-1] + pd.Timedelta(days=step), periods=horizon,
                                                   freq=f"{step}D")})
        if self.regressors is not None:
            extra = [c for c in self.regressors.columns if c != "ds"]
            for column in extra:
                model.add_regressor(column)
            history = history.merge(self.regressors, on="ds", how="left").fillna(0.0)
            future = future.merge(self.regressors, on="ds", how="left").fillna(0.0)
        with quiet_loggers("cmdstanpy", "prophet"), _quiet():
            model.fit(history)
        return model, future


INTERMITTENT_SHARE = 0.5  # days without a value, of the last year's, from which a series is intermittent


def is_intermittent(y: np.ndarray, year: int = 365) -> bool:
    """Whether most of the last year's days (the last `year` rows: 52 of a weekly series) have no
    value (a sale every few days)."""
    recent = np.asarray(y[-year:], dtype=float)
    return bool(len(recent)) and float(np.mean(recent == 0)) >= INTERMITTENT_SHARE


def croston_sba(core: Any, y: np.ndarray) -> float:
    """Croston's method with Syntetos and Boylan's correction, as statsforecast's `CrostonSBA`
    computes it: the smoothed size of the days with a value (alpha 0.1) over the smoothed interval
    between them (alpha 0.1), times 0.95; the last value for a series that never had one. The
    correction (1 - alpha / 2) offsets the bias of dividing by a smoothed interval; a series with a
    value every day has no interval to smooth (each is 1) and gets none (statsforecast's would
    forecast a constant series 5% under itself)."""
    demand = y[y > 0]
    if not demand.size:
        return float(y[-1])
    intervals = np.diff(np.flatnonzero(y != 0) + 1, prepend=0).astype(float)
    size, interval = core.ses_forecast(demand, 0.1)[0], core.ses_forecast(intervals, 0.1)[0]
    correction = 1.0 if np.all(intervals == 1) else 0.95
    return float(correction * (size / interval if interval != 0 else size))


@dataclass(frozen=True)
class CrostonSBA:
    """Croston's method (SBA) on the last `window_days` days: a flat expected value per day for an
    intermittent series, from the sizes of its sales and the intervals between them."""

    alias: str = "croston"
    window_days: int = 400

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        y = np.asarray(y[-self.window_days:], dtype=float)
        core = _ses_core()
        if core is None:  # a statsforecast without the compiled core: its model class
            from statsforecast.models import CrostonSBA as Model

            with _quiet():
                return np.asarray(Model().forecast(y=y, h=horizon)["mean"])
        return np.full(horizon, croston_sba(core, y))


@dataclass(frozen=True)
class Ensemble:
    """Mean of member engines' point forecasts; on an intermittent series (`is_intermittent`) the
    mean of `intermittent_members` instead, when given."""

    members: tuple[Engine, ...]
    alias: str = "ensemble"
    intermittent_members: tuple[Engine, ...] = ()
    year: int = 365  # rows in a year (52 of a weekly series): the span `is_intermittent` reads

    def members_for(self, y: np.ndarray) -> tuple[Engine, ...]:
        """The members whose mean forecasts the series `y` (its history up to the forecast)."""
        intermittent = self.intermittent_members and is_intermittent(y, self.year)
        return self.intermittent_members if intermittent else self.members

    def point(self, y: np.ndarray, dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
        return np.asarray(np.mean([m.point(y, dates, horizon) for m in self.members_for(y)], axis=0))


EngineFactory = Callable[[EngineOptions], Engine]

def _naive7(options: EngineOptions) -> Engine:
    if options.cadence != DAILY:
        raise ForecastError("naive7 repeats last week's days: it forecasts daily series (a weekly one's floor is "
                            "naive, the last week's value)")
    return SeasonalNaive()


def _statsforecast(alias: str) -> EngineFactory:
    return lambda options: (StatsForecastEngine(alias) if options.cadence == DAILY
                            else StatsForecastEngine.weekly(alias))


WEEKLY_WINDOW = 3 * 52  # the weeks the smoothing engines read on a weekly series (the yearly season twice over)

# The one list of engines. A new engine is a class above plus one line here; its factory builds the
# weekly form when `options.cadence` is weekly.
REGISTRY: dict[str, EngineFactory] = {
    "naive": lambda options: SeasonalNaive(alias="naive", season=1),
    "naive7": _naive7,
    "linear": lambda options: (DynamicRegression(countries=options.countries, regressors=options.regressors)
                               if options.cadence == DAILY else DynamicRegression.weekly(options)),
    "ses": lambda options: SeasonalSES() if options.cadence == DAILY else SeasonalSES(window_days=WEEKLY_WINDOW,
                                                                                        season=1),
    "ets": _statsforecast("ets"),
    "mstl": _statsforecast("mstl"),
    "theta": lambda options: (ThetaMethod() if options.cadence == DAILY
                              else ThetaMethod(window_days=WEEKLY_WINDOW, season=options.cadence.year)),
    "autotheta": _statsforecast("autotheta"),
    "arima": _statsforecast("arima"),
    "prophet": lambda options: ProphetEngine(countries=options.countries, regressors=options.regressors,
                                             cadence=options.cadence),
    "croston": lambda options: CrostonSBA() if options.cadence == DAILY else CrostonSBA(window_days=WEEKLY_WINDOW),
    "ensemble": lambda options: Ensemble(tuple(REGISTRY[m](options) for m in ENSEMBLE_MEMBERS),
                                         intermittent_members=tuple(REGISTRY[m](options)
                                                                    for m in INTERMITTENT_ENSEMBLE_MEMBERS),
                                         year=options.cadence.year),
}
ENSEMBLE_MEMBERS: tuple[str, ...] = ("linear", "ses", "theta")
# On an intermittent series the regression's calendar terms fit a year of scattered sales (its
# 14-day total erred by 61% RMS on simulated ones, against 23-24% for ses and Croston):
# Croston takes its place (docs/forecasting.md).
INTERMITTENT_ENSEMBLE_MEMBERS: tuple[str, ...] = ("ses", "theta", "croston")
DEFAULT_ENGINES: tuple[str, ...] = ("naive7", "ses", "theta", "linear", "ensemble")
# A weekly series' line-up, and the daily one read for it: naive7 becomes naive, the same floor.
WEEKLY_FOR_DAILY: dict[str, str] = {"naive7": "naive"}
# What a fit typically costs, in units of 0.1 ms (a 400-day daily series on 2 cores, measured once).
# The selection weighs these, never the run's own timing: the same data pick the same engine on any
# machine and under any load. An engine not listed counts as RELATIVE_COST_UNKNOWN.
RELATIVE_COST: dict[str, float] = {"naive": 0.1, "naive7": 0.1, "ses": 1, "croston": 1, "linear": 13, "ensemble": 17,
                                   "mstl": 320, "theta": 3, "autotheta": 390, "prophet": 930, "ets": 2400,
                                   "arima": 5000}
RELATIVE_COST_UNKNOWN = 100.0


def relative_cost(name: str) -> float:
    return RELATIVE_COST.get(name, RELATIVE_COST_UNKNOWN)


def make_engine(name: str, options: EngineOptions | None = None) -> Engine:
    """The registered engine `name`, built with the run's options."""
    factory = REGISTRY.get(name)
    if factory is None:
        raise ForecastError(f"unknown engine {name!r}; choose from {', '.join(REGISTRY)}")
    return factory(options or EngineOptions())


def make_engines(names: Sequence[str] | None, options: EngineOptions | None = None) -> list[Engine]:
    """The named line-up (the default one when `names` is empty)."""
    cadence = (options or EngineOptions()).cadence
    return [make_engine(n, options) for n in line_up_for(names or DEFAULT_ENGINES, cadence)]


def line_up_for(names: Sequence[str], cadence: Cadence) -> tuple[str, ...]:
    """The line-up `names` for a series of `cadence`: on a weekly series the daily line-up's
    `naive7` is `naive` (`WEEKLY_FOR_DAILY`)."""
    if cadence == DAILY:
        return tuple(names)
    return tuple(dict.fromkeys(WEEKLY_FOR_DAILY.get(n, n) for n in names))
