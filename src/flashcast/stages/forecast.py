"""Stage 5: daily revenue forecast with a fan chart.

The default engine is Prophet. Its bands for different widths are normally computed separately;
here every band comes from one set of predictive samples (quantiles of the same draws), so the
50% band sits inside the 80% band, which sits inside the 95% band, by construction. Revenue
cannot be negative, so samples are floored at zero before taking quantiles.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from flashcast.errors import ForecastError
from flashcast.forecasting.backtest import AutoForecast, prepare_series
from flashcast.forecasting.engines import quiet_loggers

LEVELS: tuple[int, ...] = (50, 80, 95)
MIN_HISTORY_DAYS = 28


@dataclass(frozen=True)
class Band:
    level: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]


@dataclass(frozen=True)
class Forecast:
    """A fan chart's data: point forecast plus nested bands, one value per future day."""

    series_id: str
    engine: str
    dates: tuple[date, ...]
    point: tuple[float, ...]
    bands: tuple[Band, ...]
    history_dates: tuple[date, ...]
    history: tuple[float, ...]
    leaderboard: tuple[dict[str, object], ...] = ()  # backtest scores per engine (auto selection)
    notes: tuple[str, ...] = ()

    def band(self, level: int) -> Band:
        return next(b for b in self.bands if b.level == level)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({"series_id": self.series_id, "date": self.dates, "point": self.point})
        for b in self.bands:
            frame[f"lo_{b.level}"] = b.lower
            frame[f"hi_{b.level}"] = b.upper
        frame["engine"] = self.engine
        return frame


class Forecaster(Protocol):
    @property
    def alias(self) -> str: ...

    def sample_paths(self, history: pd.DataFrame, horizon: int, n_samples: int, seed: int) -> np.ndarray:
        """Return an (horizon, n_samples) array of simulated future values."""
        ...


def validate_history(history: pd.DataFrame, *, series_id: str, nonnegative: bool = True) -> pd.DataFrame:
    """Check a daily (ds, y) series: enough days, then the forecasting input rules (sorted, no
    duplicate dates, no NaN, no negatives; missing days filled by `prepare_series`'s rule)."""
    if history.empty or len(history) < MIN_HISTORY_DAYS:
        raise ForecastError(f"{series_id}: {len(history)} days of history; at least {MIN_HISTORY_DAYS} needed")
    prepared = prepare_series(history, series_id=series_id, nonnegative=nonnegative)
    return pd.DataFrame({"ds": prepared.dates, "y": prepared.y})


@dataclass(frozen=True)
class ProphetForecaster:
    """Prophet with weekly seasonality, and yearly seasonality once a year of history exists."""

    alias: str = "prophet"
    yearly_fourier_order: int = 6
    changepoint_prior_scale: float = 0.05
    countries: tuple[str, ...] = ()  # holidays from the `holidays` package, several countries allowed

    def sample_paths(self, history: pd.DataFrame, horizon: int, n_samples: int, seed: int) -> np.ndarray:
        from prophet import Prophet

        span_days = (history["ds"].iloc[-1] - history["ds"].iloc[0]).days
        holidays_df = None
        if self.countries:
            from flashcast.forecasting.engines import holiday_frame

            first, last = history["ds"].iloc[0].year, history["ds"].iloc[-1].year
            holidays_df = holiday_frame(self.countries, range(first, last + 2))
        model = Prophet(
            holidays=holidays_df,
            weekly_seasonality=True,
            yearly_seasonality=self.yearly_fourier_order if span_days >= 365 else False,
            daily_seasonality=False,
            changepoint_prior_scale=self.changepoint_prior_scale,
            uncertainty_samples=n_samples,
        )
        with quiet_loggers("cmdstanpy", "prophet"):  # per-fit INFO chatter would drown the run's progress
            model.fit(history)
        future = pd.DataFrame({"ds": pd.date_range(history["ds"].iloc[-1] + timedelta(days=1), periods=horizon)})
        np.random.seed(seed)  # Prophet samples with numpy's global generator
        samples = model.predictive_samples(future)["yhat"]
        return np.asarray(samples, dtype=float)


def forecast_series(
    history: pd.DataFrame,
    *,
    series_id: str,
    engine: Forecaster | None = None,
    horizon: int = 14,
    levels: tuple[int, ...] = LEVELS,
    n_samples: int = 1000,
    seed: int = 0,
    nonnegative: bool = True,
) -> Forecast:
    """Fit `engine` (Prophet by default) and summarise one set of sample paths into nested bands."""
    model: Forecaster = engine if engine is not None else ProphetForecaster()
    clean = validate_history(history, series_id=series_id, nonnegative=nonnegative)
    samples = model.sample_paths(clean, horizon, n_samples, seed)
    if nonnegative:
        samples = np.maximum(samples, 0.0)
    bands = []
    for level in sorted(levels):
        tail = (100 - level) / 200
        lower, upper = np.quantile(samples, [tail, 1 - tail], axis=1)
        bands.append(Band(level, tuple(round(float(x), 2) for x in lower), tuple(round(float(x), 2) for x in upper)))
    point = np.median(samples, axis=1)
    start = clean["ds"].iloc[-1].date() + timedelta(days=1)
    return Forecast(
        series_id=series_id,
        engine=model.alias,
        dates=tuple(start + timedelta(days=i) for i in range(horizon)),
        point=tuple(round(float(x), 2) for x in point),
        bands=tuple(bands),
        history_dates=tuple(d.date() for d in clean["ds"]),
        history=tuple(float(y) for y in clean["y"]),
    )


def from_auto(auto: AutoForecast, history: pd.DataFrame) -> Forecast:
    """A selected-and-calibrated forecast as the stage's Forecast record."""
    clean = validate_history(history, series_id=auto.series_id)
    bands = tuple(Band(level, tuple(round(float(x), 2) for x in lo), tuple(round(float(x), 2) for x in hi))
                  for level, (lo, hi) in sorted(auto.bands.items()))
    board = tuple(s.row() for s in auto.selection.leaderboard)
    notes = (auto.selection.reason,) + ((f"{auto.filled_days} missing days filled by interpolation",)
                                        if auto.filled_days else ()) + (
        (f"{auto.dropped_days} days before the last gap of more than a week left out",) if auto.dropped_days else ())
    return Forecast(
        series_id=auto.series_id, engine=auto.engine, dates=tuple(d.date() for d in auto.dates),
        point=tuple(round(float(x), 2) for x in auto.point), bands=bands,
        history_dates=tuple(d.date() for d in clean["ds"]), history=tuple(float(v) for v in clean["y"]),
        leaderboard=board, notes=notes,
    )


def bands_are_nested(forecast: Forecast) -> bool:
    """True when every narrower band lies inside every wider one and the point inside the narrowest."""
    ordered = sorted(forecast.bands, key=lambda b: b.level)
    for inner, outer in itertools.pairwise(ordered):
        if any(o_lo > i_lo + 1e-9 or i_hi > o_hi + 1e-9 for i_lo, i_hi, o_lo, o_hi
               in zip(inner.lower, inner.upper, outer.lower, outer.upper, strict=True)):
            return False
    narrow = ordered[0]
    triples = zip(forecast.point, narrow.lower, narrow.upper, strict=True)
    return all(lo - 1e-9 <= p <= hi + 1e-9 for p, lo, hi in triples)


def plot_fan_chart(forecast: Forecast, path: Path, *, history_days: int = 120, title: str | None = None,
                   ylabel: str = "revenue") -> Path:
    """Write a PNG: recent history, the point forecast and the bands (darker = narrower)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    hist_dates: Any = list(forecast.history_dates[-history_days:])
    dates: Any = list(forecast.dates)
    ax.plot(hist_dates, forecast.history[-history_days:], color="#444444", linewidth=1.0, label="history")
    ordered = sorted(forecast.bands, key=lambda b: -b.level)
    for index, band in enumerate(ordered):
        alpha = 0.18 + 0.18 * index
        ax.fill_between(dates, band.lower, band.upper, color="#1f77b4", alpha=alpha, linewidth=0,
                        label=f"{band.level}% band")
    ax.plot(dates, forecast.point, color="#1f77b4", linewidth=1.8, label="forecast")
    ax.axvline(dates[0], color="#999999", linestyle=":", linewidth=1)
    ax.set_title(title or f"{forecast.series_id}: {len(forecast.dates)}-day forecast ({forecast.engine})")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def summarize(forecast: Forecast) -> dict[str, object]:
    """Totals over the horizon for the report and the payload."""
    total = sum(forecast.point)
    summary: dict[str, object] = {
        "series_id": forecast.series_id, "engine": forecast.engine, "horizon_days": len(forecast.dates),
        "start": forecast.dates[0].isoformat(), "end": forecast.dates[-1].isoformat(),
        "total_point": round(total, 2),
        "last_28_days_actual": round(sum(forecast.history[-28:]), 2),
    }
    for band in forecast.bands:
        summary[f"daily_mean_lo_{band.level}"] = round(sum(band.lower) / len(band.lower), 2)
        summary[f"daily_mean_hi_{band.level}"] = round(sum(band.upper) / len(band.upper), 2)
    if not math.isfinite(total):
        raise ForecastError(f"{forecast.series_id}: the forecast is not finite")
    return summary
