"""Benchmarks: `make bench` runs them and prints figures (never timed unit tests)."""
