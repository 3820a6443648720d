"""Forecast engines, rolling-origin backtests, conformal bands and automatic selection."""
