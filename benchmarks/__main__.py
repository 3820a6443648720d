"""`python -m benchmarks [names...]`: run the benchmarks and print their figures."""

from __future__ import annotations

import sys

from benchmarks import bench_allocator, bench_api, bench_forecast, bench_guard, bench_weekly

BENCHES = {"guard": bench_guard.main, "allocator": bench_allocator.main, "forecast": bench_forecast.main,
           "weekly": bench_weekly.main, "api": bench_api.main}


def main(argv: list[str]) -> None:
    names = argv or list(BENCHES)
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        BENCHES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
