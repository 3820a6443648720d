"""Allocator benchmark: inverse CPA vs the curve optimizer (fitted and true curves) vs the oracle.

For each seed the simulator's own world model draws channel curves (one channel per seed has a
`log` curve, a form the fitter does not know), flighted daily spend over a year, and Poisson
conversions. Allocations are scored on the *true* curves at steady state; the oracle is the best
split found by an exhaustive simplex grid refined with SLSQP. Also: optimizer speed on 1,000 and
100,000 lines, and a fit on the external weekly MMM datasets in ../shared/data/mmm/.
"""

from __future__ import annotations

import itertools
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize

from flashcast.budget.curves import (
    CurveSet,
    ResponseCurve,
    demand_index,
    fit_curve_fixed_decay,
    fit_response_curve,
)
from flashcast.budget.inverse_cpa import allocate_inverse_cpa
from flashcast.budget.optimizer import Problem, optimize
from flashcast.budget.plan import ChannelSeries, allocate_by_curves, fit_channel_curves
from flashcast.budget.records import ChannelHistory
from flashcast.config import AllocationConfig, Guardrails
from flashcast.simulate.generator import _channel_truths, _demand, _flighted_spend
from flashcast.simulate.response import ChannelTruth, saturation

if TYPE_CHECKING:
    import pandas as pd

    from flashcast.budget.mmm import MixData, MixModel

DAYS = 365
LOOSE = Guardrails(min_share={}, max_share={}, max_daily_change=100.0, min_daily_move_share=1.0)
SHARED_MMM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mmm"


def true_response(truth: ChannelTruth, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=float) / (1 - truth.adstock_decay)
    return np.asarray(truth.beta_sessions * truth.conversion_rate * saturation(a, truth.form, truth.params))


def world(seed: int) -> tuple[list[ChannelTruth], dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """True curves, daily spend, Poisson conversions, and organic sessions (the demand proxy)."""
    rng = np.random.default_rng(seed)
    dates = [date(2025, 1, 1) + timedelta(days=i) for i in range(DAYS)]
    demand, _ = _demand(rng, dates)
    truths = _channel_truths(rng, 400.0, spend_scale=0.4)
    spend = {t.channel: _flighted_spend(rng, t, DAYS) for t in truths}
    conversions = {t.channel: rng.poisson(t.expected_sessions(spend[t.channel], demand) * t.conversion_rate)
                   .astype(float) for t in truths}
    organic = rng.poisson(400.0 * 0.37 * demand).astype(float)
    return truths, spend, conversions, organic


def oracle(truths: list[ChannelTruth], budget: float, caps: np.ndarray | None = None) -> float:
    """Best total true response for `budget` (grid over the simplex at 1%, then SLSQP from the best),
    each channel's spend within `caps` when given."""
    n = len(truths)
    upper = np.full(n, budget) if caps is None else np.minimum(caps, budget)
    steps = 100
    grid = np.array([c for c in itertools.product(range(steps + 1), repeat=n - 1) if sum(c) <= steps])
    shares = np.column_stack([grid, steps - grid.sum(axis=1)]) / steps
    shares = shares[(shares * budget <= upper + 1e-9).all(axis=1)]
    totals = sum(true_response(t, shares[:, i] * budget) for i, t in enumerate(truths))
    best = shares[int(np.argmax(totals))] * budget

    def negative(x: np.ndarray) -> float:
        return -float(sum(true_response(t, np.array([max(v, 0.0)]))[0] for t, v in zip(truths, x, strict=True)))

    result = minimize(negative, best, method="SLSQP", bounds=[(0, u) for u in upper],
                      constraints=[{"type": "eq", "fun": lambda x: x.sum() - budget}], options={"ftol": 1e-12})
    return max(float(totals.max()), -float(result.fun))


def score(truths: list[ChannelTruth], spends: dict[str, float]) -> float:
    return float(sum(true_response(t, np.array([spends[t.channel]]))[0] for t in truths))


def allocation_benchmark(seeds: range = range(1, 31), budgets: tuple[float, ...] = (0.5, 1.0, 2.0)) -> None:
    """Per-channel worlds (each channel's own conversions): every case printed, then the summary."""
    print(f"{'seed':>4} {'budget':>8} {'forms (Display,CTV,PPC,Email)':<38} {'invCPA':>7} {'fitted':>7} {'true':>7}"
          f" {'fit/inv':>8}")
    config = AllocationConfig(bootstrap_draws=0)
    ratios_inv, ratios_fit, ratios_true, ratios_capped, gains = [], [], [], [], []
    families: set[tuple[str, str]] = set()
    fit_seconds = 0.0
    for seed in seeds:
        truths, spend, conversions, organic = world(seed)
        families |= {(t.channel, t.form) for t in truths}
        demand = demand_index(organic)
        tail = slice(-28, None)
        histories = [ChannelHistory(t.channel, float(spend[t.channel][-1]), float(spend[t.channel][tail].sum()),
                                    float(conversions[t.channel][tail].sum())) for t in truths]
        series = [ChannelSeries(t.channel, spend[t.channel], conversions[t.channel], demand) for t in truths]
        t0 = time.perf_counter()
        fits = fit_channel_curves(series, config)
        fit_seconds += time.perf_counter() - t0
        base = sum(t.base_daily_spend for t in truths)
        # The plan trusts a curve up to max_extrapolation x the largest spend it was fitted on.
        caps = np.array([config.max_extrapolation * float(spend[t.channel].max()) for t in truths])
        forms = ",".join(t.form if t.form != "hill" else f"hill{t.params['slope']:.1f}" for t in truths)
        for mult in budgets:
            budget = round(base * mult, 2)
            best = oracle(truths, budget)
            inverse = allocate_inverse_cpa(histories, LOOSE, budget=budget).spends
            fitted = allocate_by_curves(histories, series, LOOSE, config, budget=budget, fits=fits).allocation.spends
            true_curves = _true_as_fitted(truths)
            on_truth = _optimize_true(truths, true_curves, budget)
            r_inv, r_fit, r_true = (score(truths, s) / best for s in (inverse, fitted, on_truth))
            ratios_inv.append(r_inv)
            ratios_fit.append(r_fit)
            ratios_true.append(r_true)
            ratios_capped.append(score(truths, fitted) / oracle(truths, budget, caps))
            gains.append(r_fit / r_inv - 1)
            print(f"{seed:>4} {budget:>8,.0f} {forms:<38} {r_inv:>7.1%} {r_fit:>7.1%} {r_true:>7.1%} "
                  f"{r_fit / r_inv - 1:>+8.1%}")
    print(f"per-channel worlds ({len(seeds)} seeds x budgets {budgets}; {len(families)} channel/curve-family pairs):")
    print(f"  fitted curves + optimizer: mean {np.mean(ratios_fit):.1%} of the oracle, 10th percentile "
          f"{np.quantile(ratios_fit, 0.1):.1%}, worst {np.min(ratios_fit):.1%} (targets 99%, 97%, 95%); inverse CPA "
          f"mean {np.mean(ratios_inv):.1%}")
    print(f"  vs inverse CPA: mean {np.mean(gains):+.1%}, worst {np.min(gains):+.1%}, below it in "
          f"{sum(g < 0 for g in gains)} of {len(gains)} (target: never)")
    print(f"  against an oracle held to the plan's extrapolation limits ({config.max_extrapolation}x each channel's "
          f"largest spend): mean {np.mean(ratios_capped):.1%}, 10th percentile {np.quantile(ratios_capped, 0.1):.1%}, "
          f"worst {np.min(ratios_capped):.1%}")
    print(f"  optimizer on the true curves: mean {np.mean(ratios_true):.2%}, worst {np.min(ratios_true):.2%} "
          f"(target >= 99.9%); fitting 4 curves takes {fit_seconds / len(seeds):.2f} s per seed")


def _true_as_fitted(truths: list[ChannelTruth]) -> list[ResponseCurve | None]:
    """The true curves in the optimizer's own families where they fit one (log curves do not)."""
    out: list[ResponseCurve | None] = []
    for t in truths:
        beta = t.beta_sessions * t.conversion_rate
        if t.form == "hill":
            out.append(ResponseCurve("hill", beta, t.params["half_saturation"], t.params["slope"], t.adstock_decay))
        elif t.form == "exponential":
            out.append(ResponseCurve("exponential", beta, t.params["scale"], 1.0, t.adstock_decay))
        else:
            out.append(None)
    return out


def _optimize_true(truths: list[ChannelTruth], curves: list[ResponseCurve | None], budget: float) -> dict[str, float]:
    """The curve optimizer on the true curves. A log curve is handed over as its best hill
    approximation over every spend the budget allows (a narrower range misleads it at large budgets)."""
    fitted = []
    for t, c in zip(truths, curves, strict=True):
        if c is None:
            xs = np.linspace(0, budget, 400)  # as a spend series without carry-over (decay 0): x -> response
            c = fit_curve_fixed_decay(xs, true_response(t, xs), 0.0, ("hill",))
        fitted.append(c)
    n = len(truths)
    problem = Problem(CurveSet.from_curves([t.channel for t in truths], fitted), np.arange(n), np.zeros(n),
                      np.full(n, budget), tuple(t.channel for t in truths), np.zeros(n), np.full(n, budget))
    solution = optimize(problem, budget)
    return {t.channel: float(x) for t, x in zip(truths, solution.channel_spend, strict=True)}


def speed_benchmark() -> None:
    rng = np.random.default_rng(0)
    for n in (1_000, 100_000):
        hill = rng.random(n) < 0.5
        curves = CurveSet(
            names=tuple(f"line{i}" for i in range(n)) if n <= 1000 else tuple(), is_hill=hill,
            beta=rng.uniform(5, 50, n), k=rng.uniform(100, 2000, n),
            slope=np.where(hill, rng.uniform(0.4, 1.0, n), 1.0),
            scale=1 - rng.uniform(0, 0.6, n), tangent=np.zeros(n), chord=np.zeros(n))
        channel = rng.integers(0, 4, n)
        problem = Problem(curves, channel, np.zeros(n), np.full(n, 5000.0), ("Display", "CTV", "PPC", "Email"),
                          np.zeros(4), np.full(4, 1e12))
        t0 = time.perf_counter()
        optimize(problem, 300.0 * n)
        print(f"optimize {n:>7,} lines in 4 channels: {time.perf_counter() - t0:.3f} s")
    # A channel plan as stage 6 meets it: four lines, two of them S-shaped (every on/off state of
    # those is solved, then polished), at four budgets.
    s_curves = CurveSet.from_curves(list("abcd"), [
        ResponseCurve("hill", 10, 500, 1.5, 0.3), ResponseCurve("exponential", 5, 300, 1, 0.2),
        ResponseCurve("hill", 8, 900, 0.9, 0.4), ResponseCurve("hill", 3, 200, 2.0, 0.1)])
    seconds = []
    for budget in (500.0, 1000.0, 2000.0, 4000.0) * 3:
        problem = Problem(s_curves, np.arange(4), np.zeros(4), np.full(4, budget), tuple("abcd"), np.zeros(4),
                          np.full(4, budget))
        t0 = time.perf_counter()
        optimize(problem, budget)
        seconds.append(time.perf_counter() - t0)
    print(f"optimize 4 lines, 2 of them S-shaped: median {np.median(seconds):.3f} s, slowest {max(seconds):.3f} s "
          f"(12 calls at 4 budgets)")


def mmm_benchmark() -> None:
    """Fit curves on the Robyn simulated weekly data (spend per channel vs revenue share)."""
    import pandas as pd

    path = SHARED_MMM / "robyn_dt_simulated_weekly.csv"
    if not path.exists():
        print(f"(skipped: {path} not found)")
        return
    frame = pd.read_csv(path)
    channels = [c for c in frame.columns if c.endswith("_S")]
    revenue = frame["revenue"].to_numpy(float)
    spend_total = frame[channels].sum(axis=1).to_numpy(float)
    print(f"Robyn weekly ({len(frame)} weeks): revenue attributed to each channel by its share of weekly spend, "
          "then one curve per channel")
    for c in channels:
        x = frame[c].to_numpy(float)
        y = revenue * np.divide(x, spend_total, out=np.zeros_like(x), where=spend_total > 0)
        fit = fit_response_curve(x, y, name=c, n_boot=0)
        cur = fit.curve
        print(f"  {c:<12} {cur.form:<12} decay {cur.decay:.2f} slope {cur.slope:.2f} R^2 {fit.diagnostics.r2:.2f}"
              f" warnings {len(fit.warnings)}")


def pooled_world(seed: int) -> tuple[list[ChannelTruth], dict[str, np.ndarray], np.ndarray, np.ndarray,
                                      dict[str, np.ndarray]]:
    """One pooled outcome (total conversions: organic plus every channel's) as media-mix data gives
    it, with a confounder: the first channel's spend follows demand. Also an organic-sessions series
    (a noisy demand measure, the control) and each channel's own conversions (for inverse CPA)."""
    rng = np.random.default_rng(10_000 + seed)
    dates = [date(2025, 1, 1) + timedelta(days=i) for i in range(DAYS)]
    demand, _ = _demand(rng, dates)
    truths = _channel_truths(rng, 400.0, spend_scale=0.4)
    spend = {t.channel: _flighted_spend(rng, t, DAYS) for t in truths}
    spend[truths[0].channel] = spend[truths[0].channel] * demand / demand.mean()
    own = {t.channel: rng.poisson(t.expected_sessions(spend[t.channel], demand) * t.conversion_rate).astype(float)
           for t in truths}
    organic = rng.poisson(400.0 * 0.37 * demand).astype(float)
    pooled = rng.poisson(400.0 * 0.37 * 0.02 * demand).astype(float) + sum(own.values())
    return truths, spend, pooled, organic, own


def pooled_benchmark(seeds: range = range(30), budgets: tuple[float, ...] = (0.5, 1.0, 2.0)) -> None:
    """The joint media-mix model (`flashcast allocate FILE`'s path) on pooled-outcome worlds: share of
    the oracle on the true curves, and against inverse CPA given each channel's own conversions
    (which media-mix data do not have: a generous baseline)."""
    import pandas as pd

    from flashcast.budget.mmm import MixData, fit_mix
    from flashcast.errors import CurveFitError
    from flashcast.mixfile import MixFile, allocate_mix

    config = AllocationConfig(bootstrap_draws=0)
    shares, uplifts, true_shares, refused, fit_seconds = [], [], [], 0, 0.0
    returns: list[tuple[float, bool]] = []
    families: set[tuple[str, str]] = set()
    for seed in seeds:
        truths, spend, pooled, organic, own = pooled_world(seed)
        families |= {(t.channel, t.form) for t in truths}
        mix = MixFile(pd.Series(pd.date_range("2025-01-01", periods=DAYS)), "daily",
                      MixData(365.25, pooled, spend, {"organic_sessions": organic}))
        tail = slice(-28, None)
        histories = [ChannelHistory(t.channel, float(spend[t.channel][-1]), float(spend[t.channel][tail].sum()),
                                    float(own[t.channel][tail].sum())) for t in truths]
        base = sum(t.base_daily_spend for t in truths)
        t0 = time.perf_counter()
        model = fit_mix(mix.data, seed=seed)
        fit_seconds += time.perf_counter() - t0
        returns += return_errors(model, mix.data, {c: float(v.sum()) for c, v in own.items()})
        for mult in budgets:
            budget = round(base * mult, 2)
            best = oracle(truths, budget)
            try:
                plan = allocate_mix(mix, budget, config=config, seed=seed, model=model)
            except CurveFitError:
                refused += 1
                continue
            fitted = score(truths, plan.plan.allocation.spends) / best
            inverse = score(truths, allocate_inverse_cpa(histories, LOOSE, budget=budget).spends) / best
            on_truth = score(truths, _optimize_true(truths, _true_as_fitted(truths), budget)) / best
            shares.append(fitted)
            uplifts.append(fitted / inverse - 1)
            true_shares.append(on_truth)
    runs = len(seeds) * len(budgets)
    print(f"pooled-outcome worlds ({len(seeds)} seeds x budgets {budgets}, {DAYS} days, first channel's spend "
          f"follows demand, organic sessions as the control; {len(families)} channel/curve-family pairs):")
    print(f"  joint model + optimizer: mean {np.mean(shares):.1%} of the oracle, 10th percentile "
          f"{np.quantile(shares, 0.1):.1%}, worst {np.min(shares):.1%}; vs inverse CPA mean {np.mean(uplifts):+.1%}, "
          f"worst {np.min(uplifts):+.1%}, below it in {sum(u < 0 for u in uplifts)} of {len(uplifts)}; refused "
          f"(held-out R^2 < 0) {refused} of {runs}; {fit_seconds / len(seeds):.1f} s per model fit (bootstrap "
          "included)")
    print(_returns_line(returns, "each channel's own conversions"))
    print(f"  optimizer on the true curves: mean {np.mean(true_shares):.2%}, worst {np.min(true_shares):.2%}")


LOGISTIC_WEEKS = 179  # as in PyMC-Marketing's example file


def logistic_world(seed: int) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray],
                                        list[dict[str, float]]]:
    """Weekly data generated the way PyMC-Marketing's example data were (`mmm_example.csv`), not by
    Flashcast's simulator: 2-4 channels, each a normalized geometric adstock (8 weeks) then a
    logistic saturation of the max-scaled spend, added to an intercept, a concave trend, yearly
    seasonality, two one-week events (given as controls) and Gaussian noise. The truth per channel
    (alpha, lam, beta, the largest spend) is drawn per seed. Returns dates, spend, outcome, controls
    and the truths."""
    import pandas as pd

    rng = np.random.default_rng(20_000 + seed)
    weeks = LOGISTIC_WEEKS
    dates = pd.date_range("2018-04-02", periods=weeks, freq="W-MON")
    t = np.arange(weeks)
    outcome = (2.0 + (np.linspace(0, 50, weeks) + 10) ** 0.25 - 1
               + 0.5 * (np.cos(2 * np.pi * dates.dayofyear.values / 365.5)
                        + np.sin(4 * np.pi * dates.dayofyear.values / 365.5)))
    controls = {}
    for name, lift in (("event_1", 1.5), ("event_2", 2.5)):
        controls[name] = (t == rng.integers(10, weeks - 10)).astype(float)
        outcome = outcome + lift * controls[name]
    spend, truths = {}, []
    for c in range(int(rng.integers(2, 5))):
        x = rng.uniform(0, 1, weeks)
        pattern = int(rng.integers(0, 3))  # the example's two patterns, and flights
        if pattern == 0:
            x = np.where(x > 0.9, x, x / 2)
        elif pattern == 1:
            x = np.where(x > 0.8, x, 0.0)
        else:
            x = 0.3 + 0.7 * x * (np.sin(2 * np.pi * t / rng.uniform(20, 60)) > -0.2)
        spend[f"x{c + 1}"] = x * rng.uniform(500, 5000)
        truth = {"alpha": rng.uniform(0.1, 0.7), "lam": rng.uniform(1.0, 6.0), "beta": rng.uniform(1.0, 4.0),
                 "largest": float(spend[f"x{c + 1}"].max())}
        weights = truth["alpha"] ** np.arange(8)
        adstocked = np.convolve(spend[f"x{c + 1}"], weights / weights.sum())[:weeks]
        outcome = outcome + truth["beta"] * _logistic(adstocked / truth["largest"], truth["lam"])
        truths.append(truth)
    outcome = 1000.0 * (outcome + rng.normal(0, 0.25, weeks))
    return dates, spend, outcome, controls, truths


def _logistic(x: np.ndarray, lam: float) -> np.ndarray:
    return np.asarray((1 - np.exp(-lam * x)) / (1 + np.exp(-lam * x)))


def _logistic_total(truths: list[dict[str, float]], spends: np.ndarray) -> float:
    """Weekly outcome bought at steady spends (a normalized adstock of a steady spend is the spend)."""
    return float(sum(1000.0 * t["beta"] * _logistic(np.array(x) / t["largest"], t["lam"])
                     for t, x in zip(truths, spends, strict=True)))


def _logistic_oracle(truths: list[dict[str, float]], budget: float) -> float:
    n = len(truths)
    starts = [np.full(n, budget / n), *(np.eye(n)[i] * budget * 0.9 + budget * 0.1 / n for i in range(n))]
    return max(-float(minimize(lambda x: -_logistic_total(truths, x), x0, method="SLSQP", bounds=[(0, budget)] * n,
                               constraints=[{"type": "eq", "fun": lambda x: x.sum() - budget}]).fun)
               for x0 in starts)


def logistic_benchmark(seeds: range = range(40), budgets: tuple[float, ...] = (0.5, 1.0, 2.0)) -> None:
    """The joint model (`flashcast allocate FILE`'s path) on data from another generator than its own
    (see `logistic_world`): share of the oracle on the true curves, against keeping the historical
    mix (each channel's share of the mean spend) at the same budget."""
    import pandas as pd

    from flashcast.budget.mmm import MixData, fit_mix
    from flashcast.errors import CurveFitError
    from flashcast.mixfile import MixFile, allocate_mix

    config = AllocationConfig(bootstrap_draws=0)
    shares, mixes, refused = [], [], 0
    returns: list[tuple[float, bool]] = []
    plan_errors: list[tuple[float, bool]] = []  # the plan's expected outcome against the truth at its spends
    for seed in seeds:
        dates, spend, outcome, controls, truths = logistic_world(seed)
        mix = MixFile(pd.Series(dates), "weekly", MixData(52.18, outcome, spend, controls))
        model = fit_mix(mix.data, seed=seed)
        returns += return_errors(model, mix.data, _logistic_contributions(spend, truths))
        mean_total = sum(float(s.mean()) for s in spend.values())
        historical = np.array([float(s.mean()) for s in spend.values()]) / mean_total
        for mult in budgets:
            budget = round(mean_total * mult, 2)
            best = _logistic_oracle(truths, budget)
            try:
                plan = allocate_mix(mix, budget, config=config, seed=seed, model=model)
            except CurveFitError:
                refused += 1
                continue
            spends = plan.plan.allocation.spends
            true_outcome = _logistic_total(truths, np.array([spends[c] for c in spend]))
            shares.append(true_outcome / best)
            mixes.append(_logistic_total(truths, historical * budget) / best)
            allocation = plan.plan.allocation
            assert allocation.expected_interval is not None  # the model's bootstrap draws give one
            low, high = allocation.expected_interval
            plan_errors.append((allocation.expected_conversions / true_outcome - 1, low <= true_outcome <= high))
    below = sum(s < m for s, m in zip(shares, mixes, strict=True))
    print(f"logistic worlds, generated as PyMC-Marketing's example data ({len(seeds)} seeds x budgets {budgets}, "
          f"{LOGISTIC_WEEKS} weeks, 2-4 channels):")
    print(f"  joint model + optimizer: mean {np.mean(shares):.1%} of the oracle, 10th percentile "
          f"{np.quantile(shares, 0.1):.1%}, worst {np.min(shares):.1%}; the historical mix at the same budget: "
          f"mean {np.mean(mixes):.1%}, plan below it in {below} of {len(shares)}; refused (held-out R^2 < 0) "
          f"{refused} of {len(seeds) * len(budgets)}")
    print(_returns_line(returns, "the generator's own contributions"))
    off = np.abs([e for e, _ in plan_errors])
    print(f"  the plans' expected outcome against the truth at their spends: median error {np.median(off):.1%}, "
          f"90th percentile {np.quantile(off, 0.9):.1%}; the 80% interval holds the truth for "
          f"{sum(c for _, c in plan_errors)} of {len(plan_errors)} plans")


def _logistic_contributions(spend: dict[str, np.ndarray], truths: list[dict[str, float]]) -> dict[str, float]:
    """Each channel's true contribution over the data, as `logistic_world` adds it to the outcome."""
    totals = {}
    for (c, x), t in zip(spend.items(), truths, strict=True):
        weights = t["alpha"] ** np.arange(8)
        adstocked = np.convolve(x, weights / weights.sum())[:len(x)]
        totals[c] = float(1000.0 * t["beta"] * _logistic(adstocked / t["largest"], t["lam"]).sum())
    return totals


def return_errors(model: MixModel, data: MixData, true_totals: dict[str, float]) -> list[tuple[float, bool]]:
    """Per channel: the relative error of its outcome per unit spent over the data (what
    `channels.csv` reports) against the truth, and whether its 80% interval holds the truth."""
    from flashcast.mixfile import channel_returns

    errors = []
    for r in channel_returns(model, data):
        truth = true_totals[r.channel] / r.spend
        band = r.per_spend_interval
        errors.append(((r.per_spend or 0.0) / truth - 1, band is not None and band[0] <= truth <= band[1]))
    return errors


def _returns_line(errors: list[tuple[float, bool]], truth: str) -> str:
    """One line summing up `return_errors` over a benchmark's worlds."""
    off = np.abs([e for e, _ in errors])
    return (f"  channel returns (outcome per unit spent over the data, channels.csv) against {truth}: median error "
            f"{np.median(off):.1%}, 90th percentile {np.quantile(off, 0.9):.1%}; within 20% for "
            f"{int((off <= 0.2).sum())} of {len(off)} channels; the 80% interval holds the truth for "
            f"{sum(c for _, c in errors)} of {len(errors)}")


def bayes_parity(seeds: range = range(5), budgets: tuple[float, ...] = (0.5, 1.0, 2.0), draws: int = 200) -> None:
    """`--engine bayes` (PyMC-Marketing) beside the default joint fit on the first pooled worlds: the
    share of the oracle each plan reaches, and the time of one fit."""
    import importlib.util

    import pandas as pd

    if importlib.util.find_spec("pymc_marketing") is None:
        print("bayes parity: skipped (PyMC-Marketing is not installed: pip install 'flashcast[bayes]')")
        return
    from flashcast.budget.bayes import fit_mix_bayes
    from flashcast.budget.mmm import MixData, fit_mix
    from flashcast.mixfile import MixFile, allocate_mix

    config = AllocationConfig(bootstrap_draws=0)
    shares: dict[str, list[float]] = {"joint": [], "bayes": []}
    seconds: dict[str, float] = {"joint": 0.0, "bayes": 0.0}
    for seed in seeds:
        truths, spend, pooled, organic, _ = pooled_world(seed)
        dates = pd.Series(pd.date_range("2025-01-01", periods=DAYS))
        data = MixData(365.25, pooled, spend, {"organic_sessions": organic})
        mix = MixFile(dates, "daily", data)
        base = sum(t.base_daily_spend for t in truths)
        t0 = time.perf_counter()
        models = {"joint": fit_mix(data, n_boot=0, seed=seed)}
        seconds["joint"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        models["bayes"] = fit_mix_bayes(data, dates, draws=draws, tune=draws, seed=seed)
        seconds["bayes"] += time.perf_counter() - t0
        for mult in budgets:
            budget = round(base * mult, 2)
            best = oracle(truths, budget)
            for name, model in models.items():
                plan = allocate_mix(mix, budget, config=config, seed=seed, model=model)
                shares[name].append(score(truths, plan.plan.allocation.spends) / best)
    print(f"bayes parity on pooled worlds {list(seeds)} x budgets {budgets} ({draws} draws, 2 chains):")
    for name, values in shares.items():
        print(f"  {name:<6} mean {np.mean(values):.1%} of the oracle, worst {np.min(values):.1%}; "
              f"{seconds[name] / len(seeds):.1f} s per fit")


def main() -> None:
    allocation_benchmark()
    pooled_benchmark()
    logistic_benchmark()
    bayes_parity()
    speed_benchmark()
    mmm_benchmark()
