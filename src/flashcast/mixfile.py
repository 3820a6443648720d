"""`flashcast allocate FILE`: allocate a budget from any file of dated spend per channel and one
outcome (plus optional controls), as media-mix data comes: a joint model (`flashcast.budget.mmm`),
then the exact optimizer within the guardrails given. The edges live here: reading the file (a bad
row is named by row and column, never by value) and writing the allocation, curves, what-if and
decomposition with their charts."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from flashcast.budget.curves import MIN_SPEND_CV, CurveFit, spend_cv
from flashcast.budget.mmm import HOLDOUT_SHARE, MixData, MixModel, fit_mix, recent_periods
from flashcast.budget.plan import ChannelSeries, CurvePlan, allocate_by_curves
from flashcast.budget.records import ChannelHistory
from flashcast.config import OPEN_GUARDRAILS, AllocationConfig, Guardrails
from flashcast.errors import AllocationInfeasible, CurveFitError, IngestError
from flashcast.forecasting.files import DateProblem, parse_dates
from flashcast.sql import identifier, literal
from flashcast.tablefile import open_table_file

Cadence = Literal["daily", "weekly"]
PERIODS_PER_YEAR = {"daily": 365.25, "weekly": 365.25 / 7}
UNIT = {"daily": "day", "weekly": "week"}
# A held-out R^2 below this: the model explains the later periods no better than their mean, and
# its curves must not decide a budget, unless the channels at least halve the held-out error of the
# baseline and controls alone (MIN_CHANNEL_SKILL): then what fails out of sample is the baseline's
# extrapolation (a trend or season carried forward), not the channels' effects. (The weekly worlds
# it was measured on owed their negative R^2 to an event in the held-out periods, a control now left
# out of the held-out fit: docs/allocation.md.) Where a jump in the last periods that nothing in the
# file explains sinks R^2, the channels add nothing (skill -0.02 to -0.06) and it still stops.
MIN_HOLDOUT_R2 = 0.0
MIN_CHANNEL_SKILL = 0.5


@dataclass(frozen=True)
class MixFile:
    """The file's rows, oldest first: dates, cadence and the model's data."""

    dates: pd.Series
    cadence: Cadence
    data: MixData

    @property
    def period(self) -> str:
        """One row's period in words: "day" or "week"."""
        return "week" if self.cadence == "weekly" else "day"


_YES, _NO = ("yes", "y", "true", "t"), ("no", "n", "false", "f")


def _flag_sql(con: duckdb.DuckDBPyConnection, column: str) -> str | None:
    """SQL reading a control written as yes/no (or true/false, y/n: a promotion running, a holiday)
    as 1/0, when every value of the column is one of those words; None otherwise."""
    c = f"lower(trim({identifier(column)}::VARCHAR))"
    words = {r[0] for r in con.execute(f"SELECT DISTINCT {c} FROM source WHERE {c} <> ''").fetchall()}
    if not words or not words <= {*_YES, *_NO}:
        return None
    yes, no = (", ".join(literal(w) for w in group) for group in (_YES, _NO))
    return f"CASE WHEN {c} IN ({yes}) THEN 1.0 WHEN {c} IN ({no}) THEN 0.0 END"


# A control written as words (an event's name, a season: Robyn's `events` column) is one 0/1 control
# per word; these say "nothing" (0 on every one), and more words than this is not a category.
_NONE_WORDS = ("", "na", "n/a", "nan", "none", "null", "-")
MAX_CATEGORIES = 20


def _categories(con: duckdb.DuckDBPyConnection, column: str, number: str) -> list[str] | None:
    """The words of a control written as categories (no value a number, at most MAX_CATEGORIES words
    besides those of `_NONE_WORDS`), in order; None for any other column."""
    c = f"trim({identifier(column)}::VARCHAR)"
    nones = ", ".join(literal(w) for w in _NONE_WORDS)
    numeric, words = con.execute(f"""SELECT count(*) FILTER (WHERE {number} IS NOT NULL),
          list(DISTINCT {c} ORDER BY {c}) FILTER (WHERE {c} IS NOT NULL AND lower({c}) NOT IN ({nones}))
        FROM source""").fetchall()[0]
    if numeric or not words or len(words) > MAX_CATEGORIES:
        return None
    return [str(w) for w in words]


def read_mix_file(path: Path, *, date_col: str, outcome_col: str, spend_cols: Sequence[str],
                  control_cols: Sequence[str] = (), cadence: Cadence | None = None,
                  date_format: str | None = None, sum_by_date: bool = False) -> MixFile:
    """Read and check a CSV or Parquet file. Rows (1-based, header not counted) are named in errors.
    `sum_by_date`: the file is a panel (a row per geo or product and date, as Meridian's geo files
    are); each date's rows become one, see `_sum_by_date`."""
    if not spend_cols:
        raise IngestError("give the spend columns: --spend-cols A,B,...")
    con = duckdb.connect()
    try:
        table = open_table_file(con, path, IngestError)
        wanted = [date_col, outcome_col, *spend_cols, *control_cols]
        table.require(wanted)
        repeated = sorted({c for c in wanted if wanted.count(c) > 1})
        if repeated:
            raise IngestError(f"{path}: column {repeated[0]!r} is given twice")
        numbers = {column: table.number_sql(con, column) for column in [outcome_col, *spend_cols, *control_cols]}
        flags = {column: flag for column in control_cols if (flag := _flag_sql(con, column))}
        numbers |= flags
        categorical = {column: words for column in control_cols
                       if column not in flags and (words := _categories(con, column, numbers[column])) is not None}
        for column in categorical:
            del numbers[column]
        # each word a 0/1 control of its own: "events=launch"
        dummies = {column: {f"{column}={word}": f"CASE WHEN trim({identifier(column)}::VARCHAR) = {literal(word)} "
                                                "THEN 1.0 ELSE 0.0 END" for word in words}
                   for column, words in categorical.items()}
        controls = [name for column in control_cols for name in dummies.get(column, [column])]

        def first_row(condition: str) -> int | None:
            row = con.execute(f"SELECT min(_row) FROM source WHERE {condition}").fetchall()[0][0]
            return None if row is None else int(row)

        for column, number in numbers.items():
            c = identifier(column)
            if (bad := first_row(f"{c} IS NULL OR trim({c}::VARCHAR) = ''")) is not None:
                raise IngestError(f"{path}: row {bad}: {column} is empty")
            if (bad := first_row(f"{number} IS NULL OR NOT isfinite({number})")) is not None:
                raise IngestError(f"{path}: row {bad}: {column} {table.not_a_number(con, column, bad)}")
            if column in spend_cols and (bad := first_row(f"{number} < 0")) is not None:
                raise IngestError(f"{path}: row {bad}: {column} is negative")
        columns = numbers | {name: sql for words in dummies.values() for name, sql in words.items()}
        values = ", ".join(f"{number} AS {identifier(c)}" for c, number in columns.items())
        frame = con.execute(f"SELECT {identifier(date_col)}::VARCHAR AS _date, {values} FROM source ORDER BY _row").df()
    finally:
        con.close()
    try:
        dates = parse_dates(frame["_date"], date_format=date_format)
    except DateProblem as exc:
        raise IngestError(f"{path}: row {exc.row + 1}: {date_col} {exc.problem}") from None
    rows = np.arange(1, len(frame) + 1)  # each row's row in the file
    if sum_by_date:
        dates, frame, rows = _sum_by_date(dates, frame, [outcome_col, *spend_cols], controls, path=path,
                                          date_col=date_col)
    order = np.argsort(dates.to_numpy(), kind="stable")
    sorted_dates = dates.iloc[order].reset_index(drop=True)
    repeats = np.flatnonzero(sorted_dates.duplicated().to_numpy())
    if len(repeats):
        raise IngestError(f"{path}: row {int(rows[order[repeats[0]]])}: {date_col} repeats an earlier row's date (one "
                          "row a period; a panel of geos or products: --sum-by-date adds up each date's rows)")
    frame = frame.iloc[order].reset_index(drop=True)
    gaps = sorted_dates.diff().dt.days  # days since the row before, NaN for the first
    cadence = cadence or _cadence(gaps, path)
    # Adstock carries spend over from one row to the next: rows must be consecutive periods.
    step = {"daily": 1, "weekly": 7}[cadence]
    jumps = np.flatnonzero(gaps.fillna(step).to_numpy() != step)
    if len(jumps):
        first = int(jumps[0])
        days = int(gaps[first])
        raise IngestError(f"{path}: row {int(rows[order[first]])}: {date_col} is {days} days after the row before it; "
                          f"{cadence} rows must be consecutive {UNIT[cadence]}s (add the missing ones, with their "
                          "spend and outcome)")
    return MixFile(sorted_dates, cadence, MixData(
        PERIODS_PER_YEAR[cadence], frame[outcome_col].to_numpy(float),
        {c: frame[c].to_numpy(float) for c in spend_cols}, {c: frame[c].to_numpy(float) for c in controls}))


def _sum_by_date(dates: pd.Series, frame: pd.DataFrame, summed: Sequence[str], averaged: Sequence[str], *,
                 path: Path, date_col: str) -> tuple[pd.Series, pd.DataFrame, np.ndarray]:
    """A panel's rows as one row a date: outcome and spend summed, controls averaged (a price, a
    score or an event flag across geos; standardized in the model, a sum would be the same). Every
    date must have as many rows as most dates: a geo missing on some dates would read as a drop in
    outcome and spend. Returns the dates, their rows and each date's first row in the file."""
    counts = dates.value_counts()
    expected = int(counts.mode().max())
    uneven = dates[dates.map(counts) != expected]
    if len(uneven):
        row = int(uneven.index[0]) + 1
        raise IngestError(f"{path}: row {row}: {date_col} has {int(counts[uneven.iloc[0]])} rows where most dates "
                          f"have {expected}; a panel summed by date needs the same rows (geos, products) on every date")
    grouped = frame.drop(columns="_date").assign(_key=dates.to_numpy(), _row=np.arange(1, len(frame) + 1)
                                                 ).groupby("_key", sort=True)
    merged = pd.concat([grouped[list(summed)].sum(), grouped[list(averaged)].mean(), grouped["_row"].min()],
                       axis=1).reset_index()
    return (pd.Series(pd.to_datetime(merged["_key"])), merged.drop(columns=["_key", "_row"]),
            merged["_row"].to_numpy())


def _cadence(gaps: pd.Series, path: Path) -> Cadence:
    """Daily or weekly, from the typical gap between the sorted dates (`gaps`, in days)."""
    known = gaps.dropna()
    if known.empty:
        raise IngestError(f"{path}: one row: nothing to model")
    typical = float(known.median())
    if typical == 1:
        return "daily"
    if typical == 7:
        return "weekly"
    raise IngestError(f"{path}: dates are {typical:g} days apart; give daily or weekly rows (or --cadence)")


@dataclass(frozen=True)
class ChannelReturn:
    """What one channel brought over the file's periods, as media-mix models report it (Robyn's ROI
    or CPA, Meridian's ROI and marginal ROI): its spend and fitted contribution in total, and what
    the next unit of spend buys at its recent level."""

    channel: str
    spend: float  # total over the file
    outcome: float  # the channel's fitted contribution, total over the file
    outcome_interval: tuple[float, float] | None  # 80%, from the bootstrap (or posterior) draws
    share_of_outcome: float
    recent_spend: float  # mean spend per period over the recent periods
    marginal: float  # outcome per unit of spend for the next unit at recent_spend (the curve's own slope)

    @property
    def per_spend(self) -> float | None:
        """Outcome per unit of spend (ROI, or ROAS when the outcome is revenue)."""
        return self.outcome / self.spend if self.spend > 0 else None

    @property
    def per_spend_interval(self) -> tuple[float, float] | None:
        if self.outcome_interval is None or not self.spend > 0:
            return None
        return self.outcome_interval[0] / self.spend, self.outcome_interval[1] / self.spend

    @property
    def cost_per_outcome(self) -> float | None:
        """Spend per unit of outcome (CPA when the outcome is conversions); None when it brought nothing."""
        return self.spend / self.outcome if self.outcome > 1e-9 * max(self.spend, 1.0) else None


def channel_returns(model: MixModel, data: MixData) -> list[ChannelReturn]:
    """Each channel's spend, contribution and returns over the data (see ChannelReturn)."""
    tail = slice(-recent_periods(data.periods_per_year), None)
    returns = []
    for c in model.channels:
        effect = model.effects[c]
        recent = float(np.mean(data.spend[c][tail]))
        # the curve's own slope (not its concave envelope's): what the next unit buys where spend is now
        step = max(0.01 * recent, 1e-6 * max(float(np.max(data.spend[c])), 1.0))
        low = max(recent - step, 0.0)
        marginal = float(effect.curve.response(recent + step) - effect.curve.response(low)) / (recent + step - low)
        returns.append(ChannelReturn(c, float(np.sum(data.spend[c])), float(np.sum(model.decomposition[c])),
                                     effect.contribution_interval, effect.share, recent, marginal))
    return returns


@dataclass(frozen=True)
class MixPlan:
    model: MixModel
    plan: CurvePlan
    capped: tuple[str, ...]
    returns: tuple[ChannelReturn, ...]  # each channel over the file (channel_returns)


def allocate_mix(mix: MixFile, budget: float, *, guardrails: Guardrails | None = None,
                 config: AllocationConfig | None = None, seed: int = 0, model: MixModel | None = None,
                 form: str = "auto", outcome: str | None = None) -> MixPlan:
    """Fit the joint model (unless given; `form`: see `flashcast.budget.mmm.FORMS`) and allocate
    `budget` (per period of the file's cadence). `outcome`: the outcome column's name, which the
    plan's explanations give its costs in ("next unit of sales costs ...").
    The model stops the allocation when it predicts held-out periods no better than their mean (and
    its channels do not carry the prediction, see MIN_CHANNEL_SKILL), and caps a channel whose curve
    shows no diminishing returns at its largest spend in the data."""
    if not budget > 0 or not math.isfinite(budget):
        raise AllocationInfeasible("the budget must be a positive number")
    config = config or AllocationConfig()
    model = model or fit_mix(mix.data, n_boot=config.bootstrap_draws, seed=seed, form=form)
    skill = model.channel_skill
    if model.r2_holdout is not None and model.r2_holdout < MIN_HOLDOUT_R2 and not (
            skill is not None and skill >= MIN_CHANNEL_SKILL):
        carried = "" if skill is None else f", and its channels cut the error of the baseline alone by {skill:.0%}"
        raise CurveFitError(
            f"the model explains the last {round(mix.data.n * HOLDOUT_SHARE)} {UNIT[mix.cadence]}s worse than their "
            f"mean (held-out R^2 {model.r2_holdout:.2f}){carried}: no allocation from it. More history, "
            "more variation in spend, or controls for what else moves the outcome may help")
    capped = tuple(c for c in model.channels if model.effects[c].unsaturated)
    fits: dict[str, CurveFit] = model.curve_fits()
    for c in model.channels:  # a channel whose spend never moved cannot be told from the baseline
        if (cv := spend_cv(mix.data.spend[c])) < MIN_SPEND_CV:
            fits[c] = replace(fits[c], warnings=(
                f"{c}: spend barely varied (coefficient of variation {cv:.2f} < {MIN_SPEND_CV}): its effect cannot be "
                "told from the baseline, so its curve and share of the outcome are the model's priors, not measured "
                "(periods of other spend would show them)", *fits[c].warnings))
    histories, series = [], []
    tail = slice(-recent_periods(mix.data.periods_per_year), None)
    for c in model.channels:
        spend = mix.data.spend[c]
        contribution = model.decomposition[c]
        histories.append(ChannelHistory(c, float(spend[-1]), float(spend[tail].sum()), float(contribution[tail].sum())))
        series.append(ChannelSeries(c, spend, contribution))
    rails = guardrails or Guardrails.model_validate(OPEN_GUARDRAILS)
    # A channel without diminishing returns in the data is not trusted past its largest spend.
    if capped:
        largest = {c: float(np.max(mix.data.spend[c])) for c in capped}
        rails = rails.model_copy(update={"caps": {**rails.caps, **{c: min(rails.caps.get(c, math.inf), largest[c])
                                                                   for c in capped}}})
    plan = allocate_by_curves(histories, series, rails, config, budget=budget, fits=fits, outcome=outcome)
    return MixPlan(model, plan, capped, tuple(channel_returns(model, mix.data)))


def write_mix_outputs(result: MixPlan, mix: MixFile, out: Path, *, currency: str = "USD", outcome: str = "outcome"
                      ) -> dict[str, Path]:
    """allocation.csv, channels.csv, curves.csv, whatif.csv, decomposition.csv, model.json and charts
    in `out`."""
    from flashcast.budget.charts import plot_curves, plot_whatif

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    allocation = result.plan.allocation
    files["allocation"] = _write_csv(out / "allocation.csv", [
        {"channel": r.channel, "spend": r.spend, "share": r.share, "last_period_spend": r.yesterday_spend,
         "expected_outcome": r.expected_conversions, "expected_low": r.expected_low, "expected_high": r.expected_high,
         "marginal_cost": r.marginal_cpa, "bound": r.bound or "", "why": r.why} for r in allocation.rows])
    files["channels"] = _write_csv(out / "channels.csv", [_return_row(r) for r in result.returns])
    grid_rows = []
    for c in result.model.channels:
        curve = result.model.effects[c].curve
        top = max(float(np.max(mix.data.spend[c])) * 1.5, 1.0)
        for x in np.linspace(0, top, 41):
            grid_rows.append({"channel": c, "spend": round(float(x), 2),
                              "response": round(float(curve.response(x)), 4)})
    files["curves"] = _write_csv(out / "curves.csv", grid_rows)
    files["whatif"] = _write_csv(out / "whatif.csv", result.plan.whatif)
    decomposition = result.model.decomposition
    files["decomposition"] = _write_csv(out / "decomposition.csv", [
        {"date": d.date().isoformat(), **{k: round(float(v[i]), 4) for k, v in decomposition.items()}}
        for i, d in enumerate(mix.dates)])
    model = result.model
    files["model"] = out / "model.json"
    files["model"].write_text(json.dumps({
        "cadence": mix.cadence, "periods": mix.data.n, "effects": model.form, "r2": model.r2,
        "r2_holdout": model.r2_holdout, "channel_skill_holdout": model.channel_skill,
        "baseline_share": round(model.baseline_share, 4), "budget": allocation.budget,
        "expected_outcome": allocation.expected_conversions, "expected_interval_80": allocation.expected_interval,
        "gain_vs_last_period_split": allocation.gain_vs_yesterday,
        "gain_vs_inverse_cost": allocation.gain_vs_inverse_cpa,
        "capped_at_largest_spend": list(result.capped), "notes": [*model.notes, *allocation.notes],
        "channels": {c: {"beta": e.curve.beta, "half_saturation": e.curve.k, "slope": e.curve.slope,
                         "decay": e.curve.decay, "unsaturated": e.unsaturated,
                         **{k: v for k, v in _return_row(r).items() if k != "channel"}}
                     for (c, e), r in zip(model.effects.items(), result.returns, strict=True)},
    }, indent=2) + "\n")
    files["curves_chart"] = plot_curves(result.plan, out / "curves.png", currency=currency, period=mix.period)
    files["whatif_chart"] = plot_whatif(result.plan.whatif, out / "whatif.png", currency=currency,
                                        period=mix.period, outcome=outcome)
    files["decomposition_chart"] = _plot_decomposition(mix, model, out / "decomposition.png")
    return files


def _return_row(r: ChannelReturn) -> dict[str, object]:
    def rounded(x: float | None, digits: int = 6) -> float | None:  # significant: returns may be 0.0019
        return None if x is None else float(f"{x:.{digits}g}")

    band, per_band = r.outcome_interval or (None, None), r.per_spend_interval or (None, None)
    return {"channel": r.channel, "spend_total": round(r.spend, 2), "outcome_total": round(r.outcome, 2),
            "outcome_total_low": rounded(band[0]), "outcome_total_high": rounded(band[1]),
            "share_of_outcome": round(r.share_of_outcome, 4), "outcome_per_spend": rounded(r.per_spend),
            "outcome_per_spend_low": rounded(per_band[0]), "outcome_per_spend_high": rounded(per_band[1]),
            "cost_per_outcome": rounded(r.cost_per_outcome), "recent_spend_per_period": round(r.recent_spend, 2),
            "marginal_outcome_per_spend": rounded(r.marginal)}


def _write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def _plot_decomposition(mix: MixFile, model: MixModel, path: Path) -> Path:
    """Stacked contributions (baseline and controls, then each channel) under the actual outcome."""
    from flashcast.charts import chart

    with chart(path, figsize=(10, 4.5), dpi=100) as (_, ax):
        parts = {"baseline + controls": model.decomposition["baseline"] + model.decomposition["controls"],
                 **{c: model.decomposition[c] for c in model.channels}}
        ax.stackplot(mix.dates, *parts.values(), labels=list(parts), alpha=0.7)
        ax.plot(mix.dates, model.decomposition["actual"], color="black", linewidth=1, label="actual")
        ax.set_title(f"Decomposition (R^2 {model.r2:.2f}"
                     + (f", held-out {model.r2_holdout:.2f})" if model.r2_holdout is not None else ")"))
        ax.legend(loc="upper left", fontsize=8, ncol=3)
    return path
