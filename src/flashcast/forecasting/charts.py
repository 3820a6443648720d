"""Fan charts: recent history, the point forecast and its nested bands (darker = narrower)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flashcast.charts import chart
from flashcast.forecasting.forecast import Forecast


def plot_fan_chart(forecast: Forecast, path: Path, *, history_days: int = 120, title: str | None = None,
                   ylabel: str = "revenue") -> Path:
    """Write a PNG fan chart of `forecast` to `path`, with the last `history_days` rows of history
    (days, or weeks of a weekly series)."""
    with chart(path, figsize=(10, 4.5), dpi=110) as (fig, ax):
        hist_dates: Any = list(forecast.history_dates[-history_days:])
        dates: Any = list(forecast.dates)
        ax.plot(hist_dates, tuple(float(v) for v in forecast.history[-history_days:]), color="#444444",
                linewidth=1.0, label="history")
        for index, level in enumerate(sorted(forecast.bands, reverse=True)):
            band = forecast.bands[level]
            ax.fill_between(dates, band.lower, band.upper, color="#1f77b4", alpha=0.18 + 0.18 * index, linewidth=0,
                            label=f"{level}% band")
        ax.plot(dates, forecast.point, color="#1f77b4", linewidth=1.8, label="forecast")
        ax.axvline(dates[0], color="#999999", linestyle=":", linewidth=1)
        unit = forecast.cadence.unit
        ax.set_title(title or f"{forecast.series_id}: {len(forecast.dates)}-{unit} forecast ({forecast.engine})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        fig.autofmt_xdate()
    return path
