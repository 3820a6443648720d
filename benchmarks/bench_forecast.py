"""Forecast benchmark: Prophet defaults vs Flashcast's selected engine, on the same origins.

Series: the real daily series in ../shared/data/forecast/ and simulated GA4 revenue. For each,
Flashcast runs its rolling-origin backtest over its line-up (scores, conformal bands, selection);
Prophet with default settings is refitted at the same scored origins with its own 80% and 95%
intervals. Reported per series: MASE, coverage of the 80% and 95% bands, and fit+predict seconds
per origin (mean over the backtest's origins); the selection backtest's cost and statsforecast's
one-off numba compilation are reported separately. Then the scaling run: many simulated series in
one call across the machine's cores.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flashcast.errors import ForecastError
from flashcast.forecasting.backtest import (
    Backtest,
    BacktestSpec,
    EngineScore,
    nested_bands,
    run_backtest,
    score_engines,
    select_engine,
)
from flashcast.forecasting.engines import DEFAULT_ENGINES, Ensemble, make_engine, make_engines
from flashcast.forecasting.forecast import forecast_many
from flashcast.forecasting.series import prepare_series

SHARED_FORECASTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "forecast"
DATA = Path(os.environ.get("FLASHCAST_FORECAST_DATA", SHARED_FORECASTS))


def load_series(folder: Path = DATA) -> dict[str, pd.DataFrame]:
    """Every CSV in `folder` (FLASHCAST_FORECAST_DATA overrides it) as one (ds, y) series: the date
    column is `ds`/`date`/`day` or the first column; the value is `y` or the first numeric column
    after it. Then simulated GA4 revenue."""
    out = {}
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path)
        names = {c.lower(): c for c in frame.columns}
        ds = next((names[n] for n in ("ds", "date", "day") if n in names), frame.columns[0])
        numeric = [c for c in frame.columns if c != ds and pd.api.types.is_numeric_dtype(frame[c])]
        y = names.get("y", numeric[0] if numeric else None)
        if y is None:
            print(f"skipped {path.name}: no numeric column")
            continue
        out[path.stem] = frame[[ds, y]].rename(columns={ds: "ds", y: "y"})
    out["simulated_ga4_revenue"] = simulated_revenue()
    return out


def simulated_revenue() -> pd.DataFrame:
    from flashcast.simulate import SimulationSpec, simulate

    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate(SimulationSpec(days=730, users=40_000, seed=21, end_date=date(2026, 6, 30),
                                      formats=("parquet",), sessions_per_day=150), Path(tmp))
        rows = duckdb.sql(
            f"""SELECT strptime(event_date, '%Y%m%d')::DATE AS ds, sum(ecommerce.purchase_revenue) AS y
            FROM read_parquet('{sim.export_dirs["parquet"]}/events_2*.parquet')
            WHERE event_name = 'purchase' AND ecommerce.purchase_revenue >= 0
              AND try_strptime(event_date, '%Y%m%d') IS NOT NULL
            GROUP BY ALL ORDER BY ds""").df()
    return rows.iloc[:-1]  # the last day is partial


def prophet_at_origins(y: np.ndarray, dates: pd.DatetimeIndex, cuts: list[int], horizon: int,
                       scale: np.ndarray) -> dict[str, float]:
    """Prophet with default settings at each origin: point, and its own 80% and 95% intervals.
    Timed: one fit and one predict (default 80% interval); the 95% predict is extra and untimed."""
    from prophet import Prophet

    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).disabled = True
    maes: list[float] = []
    covered: dict[int, list[float]] = {80: [], 95: []}
    winkler: dict[int, list[float]] = {80: [], 95: []}
    seconds = 0.0
    for c, s in zip(cuts, scale, strict=True):
        future = pd.DataFrame({"ds": dates[c : c + horizon]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            model = Prophet()
            model.fit(pd.DataFrame({"ds": dates[:c], "y": y[:c]}))
            frame = model.predict(future)
            seconds += time.perf_counter() - start
            bands = {80: (frame["yhat_lower"].to_numpy(), frame["yhat_upper"].to_numpy())}
            model.interval_width = 0.95
            wide = model.predict(future)
            bands[95] = (wide["yhat_lower"].to_numpy(), wide["yhat_upper"].to_numpy())
        actual = y[c : c + horizon]
        maes.append(float(np.mean(np.abs(actual - frame["yhat"].to_numpy()))) / s)
        for level, (lo, hi) in bands.items():
            covered[level].append(float(np.mean((actual >= lo) & (actual <= hi))))
            winkler[level].append(interval_score(actual, lo, hi, level) / s)
    return {"mase": float(np.mean(maes)), "cov80": float(np.mean(covered[80])), "cov95": float(np.mean(covered[95])),
            "is80": float(np.mean(winkler[80])), "is95": float(np.mean(winkler[95])), "seconds": seconds / len(cuts)}


def interval_score(actual: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: int) -> float:
    """Mean Winkler (interval) score over a horizon: the width, plus 2/alpha times each miss."""
    alpha = 1 - level / 100
    return float(np.mean((hi - lo) + 2 / alpha * (np.maximum(lo - actual, 0) + np.maximum(actual - hi, 0))))


def replayed(bt: Backtest, spec: BacktestSpec, *, nonnegative: bool, combination: str | None) -> dict[str, np.ndarray]:
    """The default path as a user meets it, replayed at each scored origin: the engine chosen by
    `select_engine` from the origins before it whose horizon was already observed (up to
    `spec.origins` of them), its forecast at that origin and its conformal bands (calibrated on earlier
    origins only). Per scored origin (`origin`: its backtest index; on a short history only those
    with calibrated bands): MASE, each band's coverage and scaled interval score."""
    n = len(bt.origins)
    lag = -(-spec.horizon // spec.step)
    per_origin = {e: np.mean(np.abs(bt.actual - p), axis=1) / bt.scale for e, p in bt.points.items()}
    banded = {e: bt.bands(e, spec)[0] for e in bt.points}
    out: dict[str, list[float]] = {"origin": [], "mase": [], "cov80": [], "cov95": [], "is80": [], "is95": []}
    for k in range(max(n - spec.origins, 0), n):
        if not all(k in bands for bands in banded.values()):
            continue
        out["origin"].append(k)
        seen = range(max(0, k - lag + 1 - spec.origins), k - lag + 1)
        scores = [EngineScore(e, float(np.mean(v[seen])), 0.0, 0.0, {}, {}, len(seen), 0.0, tuple(v[seen]))
                  for e, v in per_origin.items()]
        engine = select_engine(scores, combination=combination).winner
        offsets = {level: (lo[None, :], hi[None, :]) for level, (lo, hi) in banded[engine][k].items()}
        point, bands = nested_bands(bt.points[engine][k][None, :], offsets, nonnegative=nonnegative)
        actual = bt.actual[k]
        out["mase"].append(float(np.mean(np.abs(actual - point[0]))) / bt.scale[k])
        for level in (80, 95):
            lo, hi = bands[level][0][0], bands[level][1][0]
            out[f"cov{level}"].append(float(np.mean((actual >= lo) & (actual <= hi))))
            out[f"is{level}"].append(interval_score(actual, lo, hi, level) / bt.scale[k])
    return {key: np.array(values) for key, values in out.items()}


def compile_once() -> float:
    """statsforecast compiles its models with numba on first use: a one-off cost per process."""
    start = time.perf_counter()
    y = 100 + 10 * np.resize([1.0, 0.9, 1.1, 1.0, 1.2, 0.8, 1.0], 120)
    dates = pd.date_range("2024-01-01", periods=120)
    for engine in make_engines([*DEFAULT_ENGINES, *BASELINES.values()]):
        engine.point(y, dates, 14)
    return time.perf_counter() - start


# statsforecast's engines printed beside Flashcast, by the names Flashcast's registry gives them
BASELINES = {"SeasonalNaive": "naive7", "AutoETS": "ets", "MSTL": "mstl", "AutoARIMA": "arima"}
BASELINE_EVERY = 3  # the baselines and Prophet refit at every 3rd scored origin (AutoARIMA takes seconds a fit)


def main() -> None:
    spec = BacktestSpec()
    line_up = make_engines(None)
    combination = next((e.alias for e in line_up if isinstance(e, Ensemble)), None)
    print(f"horizon {spec.horizon}, origins every {spec.step} days, {spec.origins} scored origins per series "
          f"(bands calibrated only on earlier origins); line-up {', '.join(e.alias for e in line_up)}")
    print(f"one-off numba compilation of the statsforecast models: {compile_once():.1f} s (not in the figures below)")
    print("Flashcast: the default path replayed at each scored origin (the engine chosen from the origins before it, "
          "its forecast, its bands).\nMASE: every engine on the same "
          f"{-(-spec.origins // BASELINE_EVERY)} origins (every {BASELINE_EVERY}rd scored one); Flashcast's coverage "
          "on all scored origins.")
    header = (f"{'series':<22} {'days':>5} | {'Flashcast':>9} {'cov80':>6} {'cov95':>6} | {'Prophet':>7} {'cov80':>6} "
              f"{'cov95':>6} | " + " ".join(f"{name:>13}" for name in BASELINES) + " | selection s")
    print(header)
    table: dict[str, list[float]] = {"Flashcast": [], "Prophet": [], **{name: [] for name in BASELINES}}
    bands_outside, n_series = 0, 0
    scores_ours: dict[int, list[float]] = {80: [], 95: []}
    scores_prophet: dict[int, list[float]] = {80: [], 95: []}
    for name, frame in load_series().items():
        nonnegative = bool((frame["y"].dropna() >= 0).all())  # bands clipped at zero only for such series
        try:
            y, dates, filled, dropped, *_ = prepare_series(frame, series_id=name, nonnegative=nonnegative,
                                                             keep_last_day=True)
        except ForecastError as exc:
            print(f"{name}: skipped: {exc}")
            continue
        n_series += 1
        start = time.perf_counter()
        bt = run_backtest(y, dates, line_up, spec)
        selection = select_engine(score_engines(bt, spec, nonnegative=nonnegative), combination=combination)
        backtest_seconds = time.perf_counter() - start
        ours = replayed(bt, spec, nonnegative=nonnegative, combination=combination)
        origins = ours["origin"].astype(int)
        picked = np.arange(len(origins) - 1, -1, -BASELINE_EVERY)[::-1]  # every 3rd, ending at the last
        scored = origins[picked].tolist()
        cuts = [int(np.searchsorted(dates, bt.origins[k])) + 1 for k in scored]
        table["Flashcast"].append(float(ours["mase"][picked].mean()))
        prophet = prophet_at_origins(y, dates, cuts, spec.horizon, bt.scale[scored])
        table["Prophet"].append(prophet["mase"])
        for column, alias in BASELINES.items():
            engine = make_engine(alias)
            maes = [float(np.mean(np.abs(y[c : c + spec.horizon] - engine.point(y[:c], dates[:c], spec.horizon))))
                    / bt.scale[k] for c, k in zip(cuts, scored, strict=True)]
            table[column].append(float(np.mean(maes)))
        coverage = {level: float(ours[f"cov{level}"].mean()) for level in (80, 95)}
        bands_outside += not (0.75 <= coverage[80] <= 0.85 and 0.90 <= coverage[95] <= 0.98)
        for level in (80, 95):
            scores_ours[level].append(float(ours[f"is{level}"].mean()))
            scores_prophet[level].append(prophet[f"is{level}"])
        print(f"{name:<22} {len(y):>5} | {table['Flashcast'][-1]:>9.3f} {coverage[80]:>6.1%} {coverage[95]:>6.1%} | "
              f"{prophet['mase']:>7.3f} {prophet['cov80']:>6.1%} {prophet['cov95']:>6.1%} | "
              + " ".join(f"{table[c][-1]:>13.3f}" for c in BASELINES) + f" | {backtest_seconds:.1f}"
              + (f"  ({filled} gap days filled)" if filled else "")
              + (f"  ({dropped} days before a long gap left out)" if dropped else ""))
        print("    today's selection: " + selection.reason)
    means = {column: float(np.mean(values)) for column, values in table.items()}
    print("mean MASE: " + ", ".join(f"{column} {value:.3f}" for column, value in means.items()))
    best = min(BASELINES, key=lambda c: means[c])
    print(f"Flashcast vs the best single statsforecast engine ({best}): {means['Flashcast'] / means[best] - 1:+.1%} "
          "(target: -5% or better)")
    print(f"bands: {bands_outside} of {n_series} series outside 75-85% (80% band) or 90-98% (95% band); mean "
          f"interval score over the MASE scale, 80% / 95%: Flashcast {np.mean(scores_ours[80]):.2f} / "
          f"{np.mean(scores_ours[95]):.2f}, Prophet {np.mean(scores_prophet[80]):.2f} / "
          f"{np.mean(scores_prophet[95]):.2f} (lower is better)")
    daily_call()
    scaling()


TIMED_CALLS = 3  # each figure of the daily-call table is the median of this many whole calls


def median_seconds(call: Callable[..., object], *args: object, **kwargs: object) -> float:
    """The median of TIMED_CALLS timings of `call(*args, **kwargs)`, each a whole call as a user
    makes it (one timing alone swings 2-3x on a busy machine)."""
    seconds = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        call(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def prophet_call(frame: pd.DataFrame, horizon: int) -> None:
    """One Prophet fit + predict with its default intervals (what a user's daily call costs)."""
    import logging

    from prophet import Prophet

    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    model = Prophet()
    model.fit(frame[["ds", "y"]])
    model.predict(model.make_future_dataframe(periods=horizon, include_history=False))


def daily_call(horizon: int = 14) -> None:
    """The two costs a user meets, beside Prophet's fit + predict on the same history: the daily call
    (`refit_forecast`: the stored selection refitted, bands from its stored scores) and a full
    re-selection (`auto_forecast`: the default line-up backtested, the winner refitted and banded).
    The selection is made on the history less its last day, then reused on the whole history."""
    from flashcast.config import ForecastConfig
    from flashcast.forecasting.forecast import auto_forecast, refit_forecast

    line_up = ForecastConfig().engines
    spec = BacktestSpec(horizon=horizon)
    print(f"\ndaily call vs full re-selection vs Prophet fit+predict (horizon {horizon}, line-up {', '.join(line_up)}; "
          f"each the median of {TIMED_CALLS} whole calls)")
    print(f"{'series':<22} {'Prophet s':>9} {'selection s':>11} {'daily s':>8} {'daily vs Prophet':>16} "
          f"{'selection vs Prophet':>20}")
    ratios_daily, ratios_full = [], []
    for name, frame in load_series().items():
        data = frame.dropna().reset_index(drop=True)
        nonnegative = bool((data["y"] >= 0).all())

        selection = {"frame": data.iloc[:-1], "series_id": name, "engines": line_up, "spec": spec,
                     "nonnegative": nonnegative, "keep_last_day": True}
        try:
            selected = auto_forecast(**selection)  # type: ignore[arg-type]
            assert selected.calibration is not None
            reuse = {"frame": data, "calibration": selected.calibration, "spec": spec, "nonnegative": nonnegative,
                     "keep_last_day": True}
            reused = refit_forecast(**reuse)  # type: ignore[arg-type]
            if isinstance(reused, str):
                print(f"{name}: the selection was stale at once ({reused})")
                continue
            full = median_seconds(auto_forecast, **selection)
            daily = median_seconds(refit_forecast, **reuse)
        except ForecastError as exc:
            print(f"{name}: skipped: {exc}")
            continue
        prophet = median_seconds(prophet_call, data, horizon)
        ratios_daily.append(prophet / daily)
        ratios_full.append(prophet / full)
        print(f"{name:<22} {prophet:>9.3f} {full:>11.3f} {daily:>8.4f} {prophet / daily:>15.0f}x "
              f"{prophet / full:>19.2f}x")
    if ratios_daily:
        print(f"median: the daily call is {np.median(ratios_daily):.0f}x faster than Prophet's fit+predict "
              f"(target >= 10x, worst {min(ratios_daily):.1f}x); a full re-selection runs at "
              f"{np.median(ratios_full):.2f}x Prophet's speed (target >= 1x, worst {min(ratios_full):.2f}x)")


def scaling(n_series: int = 1000) -> None:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n_series):
        n = 400
        level = rng.uniform(50, 500)
        weekly = np.resize(1 + 0.2 * rng.normal(size=7), n)
        y = np.maximum(level * weekly + np.cumsum(rng.normal(0, level * 0.01, n)) + rng.normal(0, level * 0.1, n), 0)
        frames.append(pd.DataFrame({"series_id": f"s{i:04d}", "ds": pd.date_range("2025-01-01", periods=n), "y": y}))
    data = pd.concat(frames)
    spec = BacktestSpec(step=7, origins=26, calibration=26)
    start = time.perf_counter()
    out = forecast_many(data, spec=spec)
    wall = time.perf_counter() - start
    print(f"scaling: {n_series} series x 400 days, default line-up, {spec.origins} scored origins each: "
          f"{wall:.1f} s wall on this machine's cores ({len(out):,} forecast rows)")
