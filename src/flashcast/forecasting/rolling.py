"""The dynamic regression (`engines.DynamicRegression`) refitted at every backtest origin at once.

A selection refits the regression at ~150 origins of one series; fitted one origin at a time
this was about half of a full selection. Each origin's normal equations are sums over the rows
of its window. The calendar columns (intercept, weekdays, yearly terms, holidays, regressors) are
the same rows at every origin, so their sums are differences of prefix sums; the trend columns are
hinges (u - a)+ of the row index u, so their sums are differences of prefix sums weighted by u, or
closed forms. The ridge systems are then solved in one batched call, and so are the residuals' AR
models. It is the same model as one `point` call per origin, to rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from flashcast.forecasting.engines import DynamicRegression


def rolling_points(model: DynamicRegression, y: np.ndarray, dates: pd.DatetimeIndex, cuts: Sequence[int],
                   horizon: int) -> np.ndarray | None:
    """`model.point(y[:c], dates[:c], horizon)` for every cut c, as rows; None when the dates are
    not consecutive days (then the caller fits origin by origin)."""
    from flashcast.forecasting.engines import _calendar_days

    days = _calendar_days(dates)
    if len(days) < 2 or not bool(np.all(np.diff(days).astype(np.int64) == 1)):
        return None
    cut = np.asarray(cuts, dtype=np.int64)
    y = np.asarray(y, dtype=float)
    total = max(len(y), int(cut.max()) + horizon)
    calendar, calendar_penalty, yearly_columns = _calendar(model, days[0] + np.arange(total), len(y))
    n = np.minimum(cut, model.window_days)
    start = cut - n
    knots_share = np.r_[0.0, np.linspace(0, model.changepoint_range, model.n_changepoints + 2)[1:-1]]
    knots = n[:, None] * knots_share[None, :]  # (origins, 1 + changepoints): the trend is the hinge at 0
    window = np.arange(int(n.max()))[None, :] < n[:, None]  # each origin's rows, left-aligned
    values = y[np.minimum(start[:, None] + np.arange(int(n.max()))[None, :], len(y) - 1)]
    scale = np.std(values, axis=1, where=window)
    scale[scale == 0] = 1.0
    # Columns: the hinges (trend first), then the calendar columns; the solution is `point`'s,
    # whose columns are the same in another order.
    normal, rhs = _normal_equations(y, calendar[: len(y)], knots, start, cut)
    h, q = knots.shape[1], calendar.shape[1]
    penalty = np.zeros((len(cut), h + q))
    penalty[:, 1:h] = (model.ridge * n / 100)[:, None]
    penalty[:, h:] = calendar_penalty
    normal[:, np.arange(h + q), np.arange(h + q)] += penalty
    rhs /= scale[:, None]
    # As `point`: as many yearly orders as the origin's history supports (none before a year of data);
    # the system less the columns of the orders left out (each order a sin and a cos column).
    coef = np.zeros((len(cut), h + q))
    orders = np.array([model.yearly_order_for(int(days_in)) for days_in in n])
    for order in np.unique(orders):
        group = orders == order
        keep = np.setdiff1d(np.arange(h + q), [h + column for column in yearly_columns[2 * int(order):]])
        block = normal[group][:, keep][:, :, keep]
        coef[np.ix_(group, keep)] = np.linalg.solve(block, rhs[group][:, keep, None])[:, :, 0]
    hinge_coef, calendar_coef = coef[:, :h], coef[:, h:]
    # The trend is piecewise linear in t: the sum over knots below t of c_j (t - knot_j).
    slope_sums = np.c_[np.zeros(len(cut)), np.cumsum(hinge_coef, axis=1)]
    offset_sums = np.c_[np.zeros(len(cut)), np.cumsum(hinge_coef * knots_share, axis=1)]
    by_day = calendar @ calendar_coef.T  # (days, origins)
    origin = np.arange(len(cut))[:, None]

    def fitted(rows: np.ndarray) -> np.ndarray:
        """The regression at global rows (origins x k), each origin with its own coefficients."""
        t = (rows - start[:, None]) / n[:, None]  # the origin's own trend time
        below = np.searchsorted(knots_share, t, side="left")
        trend = t * np.take_along_axis(slope_sums, below, axis=1) - np.take_along_axis(offset_sums, below, axis=1)
        return trend + by_day[np.maximum(rows, 0), origin]

    base = fitted(cut[:, None] + np.arange(horizon)[None, :])
    span = np.minimum(n, model.ar_days)  # `point` models the last ar_days residuals
    last = int(span.max())
    rows = cut[:, None] - last + np.arange(last)[None, :]  # right-aligned: each origin's newest row last
    valid = np.arange(last)[None, :] >= (last - span)[:, None]
    resid = np.where(valid, y[np.maximum(rows, 0)] / scale[:, None] - fitted(rows), 0.0)
    base += _ar_corrections(resid, span, model.ar_order, horizon)
    return base * scale[:, None]


def _calendar(model: DynamicRegression, days: np.ndarray, n_history: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The columns that depend on the day only, over history and future: intercept, weekdays 1-6,
    yearly terms, then holidays and regressors; their ridge penalties (only holidays and regressors
    have one); and which columns are the yearly terms. A holiday not yet seen at an origin is an
    all-zero column in its window: its penalized coefficient is exactly 0, as if it were left out,
    which is what `point` does."""
    from flashcast.forecasting.engines import (
        HOLIDAY_RIDGE,
        REGRESSOR_RIDGE,
        _holiday_columns,
        _linear_design,
        _regressor_columns,
    )

    design = _linear_design(np.zeros(len(days)), days, np.empty(0), model.yearly_order)
    columns = [np.delete(design, 1, axis=1)]  # `_linear_design`'s trend column is not a calendar column
    penalties = [np.zeros(columns[0].shape[1])]
    yearly_columns = list(range(7, columns[0].shape[1]))
    if model.countries or model.regressors is not None:
        history = pd.DatetimeIndex(days[:n_history])
        # (a one-day stand-in future when the cuts need no day past the history: cut off below)
        future = pd.DatetimeIndex(days[n_history:] if len(days) > n_history else days[-1:])
        if model.countries:
            past, ahead = _holiday_columns(history, future, model.countries)
            columns.append(np.vstack([past, ahead])[: len(days)])
            penalties.append(np.full(past.shape[1], HOLIDAY_RIDGE))
        if model.regressors is not None:
            past, ahead = _regressor_columns(model.regressors, history, future)
            columns.append(np.vstack([past, ahead])[: len(days)])
            penalties.append(np.full(past.shape[1], REGRESSOR_RIDGE))
    return np.hstack(columns), np.concatenate(penalties), yearly_columns


def _normal_equations(y: np.ndarray, calendar: np.ndarray, knots: np.ndarray, start: np.ndarray, cut: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each origin's X'X and X'y (y unscaled) from prefix sums; columns: the hinges (trend first),
    then the calendar columns."""
    index = np.arange(len(y), dtype=float)
    first, weighted = _prefix(calendar), _prefix(calendar * index[:, None])
    with_y, y_sum, y_weighted = _prefix(calendar * y[:, None]), _prefix(y), _prefix(y * index)
    n = (cut - start).astype(float)[:, None]
    low = np.ceil(knots).astype(np.int64)  # a hinge's first nonzero row (the knot's own row adds zero)
    hinge_hinge = _hinge_products(knots, low, cut - start) / n[:, :, None] ** 2
    rows_from = start[:, None] + low  # (origins, hinges): the global row where each hinge turns on
    offset = start[:, None] + knots
    hinge_calendar = ((weighted[cut][:, None, :] - weighted[rows_from])
                      - offset[:, :, None] * (first[cut][:, None, :] - first[rows_from])) / n[:, :, None]
    hinge_y = ((y_weighted[cut][:, None] - y_weighted[rows_from])
               - offset * (y_sum[cut][:, None] - y_sum[rows_from])) / n
    h, q = knots.shape[1], calendar.shape[1]
    normal = np.empty((len(cut), h + q, h + q))
    normal[:, :h, :h] = hinge_hinge
    normal[:, :h, h:] = hinge_calendar
    normal[:, h:, :h] = hinge_calendar.transpose(0, 2, 1)
    normal[:, h:, h:] = _grams_between(calendar, start, cut)
    return normal, np.hstack([hinge_y, with_y[cut] - with_y[start]])


def _grams_between(x: np.ndarray, start: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """x[s:c].T @ x[s:c] for each (start, cut): one product per stretch between consecutive
    boundaries, then running sums (7x faster than running sums of every row's outer product)."""
    bounds = np.unique(np.r_[0, start, cut])
    stretches = np.zeros((len(bounds), x.shape[1], x.shape[1]))
    for i in range(1, len(bounds)):
        rows = x[bounds[i - 1] : bounds[i]]
        stretches[i] = rows.T @ rows
    running = np.cumsum(stretches, axis=0)
    return running[np.searchsorted(bounds, cut)] - running[np.searchsorted(bounds, start)]


def _prefix(values: np.ndarray) -> np.ndarray:
    """Sums of the first 0, 1, ..., len rows (one more row than `values`)."""
    out = np.zeros((len(values) + 1, *values.shape[1:]))
    np.cumsum(values, axis=0, out=out[1:])
    return out


def _hinge_products(knots: np.ndarray, low: np.ndarray, n: np.ndarray) -> np.ndarray:
    """sum over rows u in [max(low_i, low_j), n) of (u - knot_i)(u - knot_j), per origin, in closed
    form: shifted to v = u - L (L the later start) so that no large terms cancel."""
    start = np.maximum(low[:, :, None], low[:, None, :])
    count = np.maximum(n[:, None, None] - start, 0).astype(float)
    d_i = start - knots[:, :, None]  # >= 0: from each knot to the later start
    d_j = start - knots[:, None, :]
    m = count - 1
    sum_v = m * count / 2
    sum_v2 = m * count * (2 * m + 1) / 6
    return sum_v2 + (d_i + d_j) * sum_v + count * d_i * d_j


def _ar_corrections(resid: np.ndarray, span: np.ndarray, order: int, horizon: int) -> np.ndarray:
    """`engines._ar_correction` for every origin: resid is right-aligned (origins x rows, each
    origin's last span rows valid)."""
    from flashcast.forecasting.engines import _ar_correction

    out = np.zeros((len(resid), horizon))
    fit = span >= 4 * order
    if order == 0 or not fit.any():
        return out
    windows = np.lib.stride_tricks.sliding_window_view(resid, order + 1, axis=1)  # (k, rows - order, order + 1)
    lagged, target = windows[:, :, order - 1 :: -1], windows[:, :, order]  # lag 1 first, as `_ar_correction`
    usable = (np.arange(windows.shape[1])[None, :] >= (resid.shape[1] - span)[:, None]).astype(float)
    weighted = lagged * usable[:, :, None]
    gram = weighted.transpose(0, 2, 1) @ lagged
    rhs = np.einsum("kip,ki->kp", weighted, target)
    try:
        phi = np.linalg.solve(gram[fit], rhs[fit][:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # a degenerate residual series: least squares origin by origin
        for k in np.flatnonzero(fit):
            out[k] = _ar_correction(resid[k, resid.shape[1] - span[k] :], order, horizon)
        return out
    companion = np.zeros((len(phi), order, order))
    companion[:, 0] = phi
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    stable = np.max(np.abs(np.linalg.eigvals(companion)), axis=1) < 1.0
    recent = resid[fit][:, : -order - 1 : -1].copy()  # most recent first
    ahead = np.empty((len(phi), horizon))
    for step in range(horizon):
        ahead[:, step] = np.einsum("kp,kp->k", phi, recent)
        recent = np.c_[ahead[:, step], recent[:, :-1]]
    out[np.flatnonzero(fit)] = np.where(stable[:, None], ahead, 0.0)
    return out
