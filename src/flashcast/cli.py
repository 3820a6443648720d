"""The `flashcast` command: thin adapters over `flashcast.pipeline` and friends.

Every command loads Settings, calls one library function and prints. Every failure is one line on
stderr: a FlashcastError or an OS error exits 1 with `ClassName: message`; anything else is a bug,
exit 2 with its type and FLASHCAST_DEBUG=1 to see the traceback. Nothing printed is read as markup.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from flashcast.config import Settings, load_settings
from flashcast.errors import ConfigError, FlashcastError, ForecastError, LineageError, describe_validation_error
from flashcast.inplace import make_folder
from flashcast.keys import load_pii_key
from flashcast.llm.tasks import check_provider
from flashcast.privacy import redact_message
from flashcast.records import RunInputs, Skipped, StagedExport
from flashcast.report import format_figure, format_money, format_share

if TYPE_CHECKING:
    from flashcast.forecasting.forecast import SkippedSeries
    from flashcast.mixfile import ChannelReturn
    from flashcast.pipeline import RunResult
    from flashcast.simulate import SimulationSpec
    from flashcast.store import OpsStore

app = typer.Typer(help="Flashcast: governed forecast & optimize for marketing teams.", no_args_is_help=True,
                  rich_markup_mode=None,
                  pretty_exceptions_enable=False)
lineage_app = typer.Typer(help="Inspect and verify the tamper-evident lineage log.", no_args_is_help=True)
privacy_app = typer.Typer(help="Privacy checks.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys: the PII hashing key and the API's keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(lineage_app, name="lineage")
app.add_typer(privacy_app, name="privacy")
console = Console()
err_console = Console(stderr=True)
_top_config: list[Path | None] = [None]  # `flashcast -c FILE <command>`: the command's default config

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="flashcast.toml to use.")]
RebuildOption = Annotated[str | None, typer.Option(
    "--rebuild", metavar="FROM[:TO]",
    help="Read these days' export files again even if unchanged (YYYY-MM-DD, inclusive); their rows are replaced.")]
LlmOption = Annotated[str | None, typer.Option(
    "--llm", help="LLM for segment labels and copy: offline, openai:MODEL or anthropic:MODEL (overrides [llm]).")]


def _version(value: bool) -> None:
    if value:
        from flashcast import __version__

        console.print(f"flashcast {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _top(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    config: ConfigOption = None,
) -> None:
    """Flashcast: governed forecast & optimize for marketing teams. -c/--config here applies to the
    command that follows (a command's own -c wins)."""
    _top_config[0] = config


def _settings(config: Path | None, llm: str | None = None) -> Settings:
    settings = load_settings(config or _top_config[0])
    if llm:
        provider, _, model = llm.partition(":")
        data = settings.model_dump()
        data["llm"] = {**data["llm"], "provider": provider, "model": model or data["llm"]["model"]}
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"--llm {llm}: {describe_validation_error(exc)}") from exc
    return settings


def _days(value: str | None) -> tuple[date, date] | None:
    """FROM[:TO] as two dates (a ConfigError naming the option when it is not one)."""
    if value is None:
        return None
    first, _, last = value.partition(":")
    try:
        days = date.fromisoformat(first.strip()), date.fromisoformat((last or first).strip())
    except ValueError:
        raise ConfigError("--rebuild: expected FROM[:TO] as YYYY-MM-DD dates") from None
    if days[1] < days[0]:
        raise ConfigError("--rebuild: TO is before FROM")
    return days


def _reasons(staged: StagedExport) -> str:
    return ", ".join(f"{n:,} {reason}" for reason, n in staged.read_counts.items()) or "none"


def _minute(timestamp: str | None) -> str:
    """An ISO timestamp to the minute, for tables ('' for none)."""
    return (timestamp or "")[:16].replace("T", " ")


def _took(started: str | None, finished: str | None) -> str:
    """How long a run took, for tables ('' while it runs)."""
    if not started or not finished:
        return ""
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _fail(kind: str, message: str, code: int) -> typer.Exit:
    err_console.print(f"[red]{escape(kind)}[/red]: {escape(redact_message(message))}", highlight=False,
                      soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise  # an exit code chosen on purpose
    except FlashcastError as exc:
        raise _fail(type(exc).__name__, str(exc), 1) from exc
    except OSError as exc:
        raise _fail(type(exc).__name__, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1) from exc
    except KeyboardInterrupt as exc:
        raise _fail("Interrupted", "stopped; the output folder still holds the last finished run", 130) from exc
    except Exception as exc:
        if os.environ.get("FLASHCAST_DEBUG"):
            raise
        raise _fail("InternalError", f"{type(exc).__name__}: {str(exc)[:300]} (a bug in Flashcast; "
                    "FLASHCAST_DEBUG=1 shows the traceback)", 2) from exc


@contextmanager
def _ops_store(settings: Settings) -> Iterator[OpsStore]:
    """The ops store for one command, its connections closed however the command ends."""
    from flashcast.store import OpsStore

    ops = OpsStore(settings.store.ops_database_url)
    try:
        yield ops
    finally:
        ops.dispose()


def _output_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (it is created if missing)")
    existing = next((a for a in out.resolve().parents if a.exists()), None)
    if existing is not None and not existing.is_dir():  # checked before reading: the run could not publish
        raise ConfigError(f"--out {out}: {existing} is a file, not a folder")
    return out


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write ndjson/, parquet/, spend.csv, truth.json.")],
    days: Annotated[int, typer.Option(help="Days of data, ending at --end-date.")] = 450,
    users: Annotated[int, typer.Option(help="Distinct visitors.")] = 20000,
    sessions_per_day: Annotated[float | None, typer.Option(help="Average sessions a day (default: 3 per user).")]
    = None,
    seed: Annotated[int, typer.Option(help="Random seed: same arguments, byte-identical files.")] = 7,
    end_date: Annotated[str, typer.Option(help="Last (partial, intraday) export day, YYYY-MM-DD.")] = "2026-11-23",
    timezone: Annotated[str, typer.Option(help="The GA4 property's time zone.")] = "America/New_York",
    fmt: Annotated[str, typer.Option("--format", help="ndjson, ndjson.gz, parquet or both (ndjson and parquet).")
                   ] = "both",
) -> None:
    """Write simulated GA4 export files with known ground truth.

    Example: flashcast simulate --days 450 --users 20000 --seed 7 --end-date 2026-11-23 --out data/sim
    """
    from flashcast.simulate import simulate as run_simulation

    formats = ("ndjson", "parquet") if fmt == "both" else (fmt,)
    with _errors():
        try:
            spec = _simulation_spec(days=days, users=users, seed=seed, end_date=date.fromisoformat(end_date),
                                    timezone=timezone, formats=formats, sessions_per_day=sessions_per_day)
        except ValueError as exc:  # the end date
            raise ConfigError(f"simulate: {exc}") from exc
        with console.status("simulating") as status:
            result = run_simulation(spec, out, progress=lambda message: status.update(escape(message)))
    for name, count in result.rows_by_format.items():
        console.print(f"wrote {count:,} {name} rows to {result.export_dirs[name]}")
    console.print(f"spend: {result.spend_file}\ntruth: {result.truth_file}")


def _simulation_spec(**fields: Any) -> SimulationSpec:
    """The spec, or a one-line error naming the option that cannot be simulated."""
    from flashcast.simulate import SimulationSpec

    try:
        return SimulationSpec(**fields)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc


ExportOption = Annotated[Path | None, typer.Option(
    help="GA4 export: one events_* file or a folder of them (default: [source] export).")]
SpendOption = Annotated[Path | None, typer.Option(help="Daily spend CSV (date, channel, spend; default: [source] "
                                                       "spend).")]
OutOption = Annotated[Path | None, typer.Option(help="Output folder (default: [source] out, \"out\").")]


def _sources(settings: Settings, export: Path | None, spend: Path | None, out: Path | None, rebuild: str | None
             ) -> tuple[RunInputs, Path]:
    """The command's inputs and output folder: its options, else the config's [source] (what
    `flashcast serve` and `rebalance` read), so a configured project runs without repeating them.
    The configured spend file goes only with the configured export, never with another one."""
    if export is None:
        export, spend = settings.source.export, spend or settings.source.spend
    if export is None:
        raise ConfigError("no export to read: give --export, or set [source] export in flashcast.toml")
    return RunInputs(export, spend, _days(rebuild)), _output_folder(out or settings.source.out)


@app.command()
def run(
    export: ExportOption = None,
    spend: SpendOption = None,
    out: OutOption = None,
    config: ConfigOption = None,
    llm: LlmOption = None,
    rebuild: RebuildOption = None,
) -> None:
    """Run the pipeline on a GA4 export and write the outputs. Export files the warehouse already
    holds unchanged are not read again (except the latest days; see [ingest] in flashcast.toml).

    Example: flashcast run --export data/sim/ndjson --spend data/sim/spend.csv --out out
    """
    from flashcast.pipeline import run_pipeline  # seconds of imports: only for the commands that run it

    with _errors():
        settings = _settings(config, llm)
        check_provider(settings.llm)
        inputs, out = _sources(settings, export, spend, out, rebuild)
        key = load_pii_key(settings.policy, settings.pii_key_file)
        result = _run_with_progress(inputs, lambda inputs, progress: run_pipeline(
            settings, inputs, out, key=key, progress=progress))
    _print_summary(result, settings)


@app.command()
def ingest(
    export: ExportOption = None,
    spend: SpendOption = None,
    out: OutOption = None,
    config: ConfigOption = None,
    rebuild: RebuildOption = None,
) -> None:
    """Run only the governed data path (ingest, guard, daily KPIs) into the warehouse; print rows,
    rows per second and peak memory. `flashcast run` runs the same path, then the plan. With
    --rebuild, the files of those days are read again (a backfill).

    Example: flashcast ingest --export data/sim/ndjson --spend data/sim/spend.csv --out out
    """
    import resource
    import time

    from flashcast.pipeline import GOVERNED_DATA, run_pipeline

    with _errors():
        settings = _settings(config)
        inputs, out = _sources(settings, export, spend, out, rebuild)
        key = load_pii_key(settings.policy, settings.pii_key_file)
        start = time.perf_counter()
        result = _run_with_progress(inputs, lambda inputs, progress: run_pipeline(
            settings, inputs, out, key=key, progress=progress, through=GOVERNED_DATA, job="ingest"))
        seconds = time.perf_counter() - start
    totals, k, staged = result.guard.totals, result.kpis, result.ingest
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"ingested run {result.lineage_id}: read {staged.input_rows:,} rows from {len(staged.files):,} "
                  f"file(s) ({_reasons(staged)}) in {seconds:.1f} s = "
                  f"{staged.input_rows / max(seconds, 1e-9):,.0f} rows/s, peak memory {peak:,.0f} MiB", highlight=False,
                  soft_wrap=True)
    console.print(f"history: {totals['input_rows']:,} rows ({len(staged.reused_files):,} file(s) reused from the "
                  f"warehouse): {totals['accepted']:,} accepted, {totals['dropped_consent']:,} dropped for consent, "
                  f"{totals['quarantined']:,} quarantined, {totals['duplicate']:,} duplicates; days {k.first_day} to "
                  f"{k.last_day}", highlight=False, soft_wrap=True)
    for item in result.attention():
        console.print(f"[yellow]attention[/yellow] {escape(item)}", highlight=False)
    for name, path in sorted(result.outputs.items()):
        console.print(f"  {name:<17} {escape(str(path))}", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out"),
    days: Annotated[int, typer.Option(help="Days to simulate (400+ gives real yearly seasonality).")] = 430,
    users: Annotated[int, typer.Option(help="Visitors to simulate.")] = 20000,
    sessions_per_day: Annotated[float, typer.Option(help="Average sessions a day.")] = 150.0,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
    config: ConfigOption = None,
) -> None:
    """Simulate a GA4 export, then run the whole pipeline on it (what `make demo` does)."""
    from flashcast.pipeline import run_pipeline
    from flashcast.simulate import simulate_into

    with _errors():
        settings = _settings(config)
        out = _output_folder(out)
        make_folder(settings.store.home, "[store] home")  # the demo's export, key and stores go there
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            key = load_pii_key(settings.policy, settings.pii_key_file, create_if_missing=True)
        for warning in caught:
            console.print(f"[yellow]warning[/yellow]: {escape(str(warning.message))}", highlight=False)
        sim_dir = settings.store.home / "demo-export"
        spec = _simulation_spec(days=days, users=users, seed=seed, end_date=date.today(), formats=("ndjson",),
                                sessions_per_day=sessions_per_day,
                                timezone=settings.property_timezone if settings.property_timezone != "UTC"
                                else "America/New_York")
        with console.status("simulating GA4 export...") as status:
            sim, reused = simulate_into(spec, sim_dir, progress=lambda message: status.update(escape(message)))
        console.print(f"{'reused the' if reused else 'simulated'} {sim.rows_by_format['ndjson']:,} GA4 events over "
                      f"{days} days in {escape(str(sim.out_dir))}", highlight=False)
        result = _run_with_progress(RunInputs(sim.export_dirs["ndjson"], sim.spend_file),
                                    lambda inputs, progress: run_pipeline(settings, inputs, out, key=key,
                                                                          progress=progress))
    _print_summary(result, settings)


def _run_with_progress(inputs: RunInputs, call: Callable[[RunInputs, Callable[[str], None]], RunResult]
                       ) -> RunResult:
    """Run with a live line: the files about to be read, then each stage and what the last one did."""
    from flashcast.stages.ingest import discover_exports

    found = discover_exports(inputs.export)
    size = sum(f.path.stat().st_size for f in found)
    console.print(f"export: {len(found):,} file(s), {size / 2**20:,.1f} MB (files the warehouse holds unchanged "
                  "are not read again)", highlight=False)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def progress(message: str) -> None:
            bar.update(task, description=escape(message))

        return call(inputs, progress)


def _print_summary(result: RunResult, settings: Settings) -> None:
    """The plan in a screenful; what needs attention last, where it is seen."""
    totals, k, currency = result.guard.totals, result.kpis, settings.currency

    def money(value: float) -> str:
        return format_money(value, currency)

    console.print(f"\n[bold]Flashcast plan[/bold]  run {result.lineage_id}", highlight=False)
    console.print(
        f"Data {k.first_day} to {k.last_day}{' (last day partial)' if k.partial_last_day else ''}: "
        f"{totals['input_rows']:,} rows in, {totals['accepted']:,} accepted, {totals['dropped_consent']:,} dropped "
        f"for consent, {totals['quarantined']:,} quarantined, {totals['duplicate']:,} duplicates.", highlight=False)
    staged = result.ingest
    console.print(f"Read this run: {staged.input_rows:,} rows from {len(staged.files):,} file(s) "
                  f"({_reasons(staged)}); {len(staged.reused_files):,} file(s) reused from the warehouse.",
                  highlight=False)
    console.print("Customers: " + ", ".join(
        f"{p.segment} {p.users:,} ({format_share(p.share)})" for p in result.segments.profiles), highlight=False)
    f = result.forecast.forecast
    if f is not None:
        band = (f" (80% interval for the total {money(f.total_bands[80][0])} to {money(f.total_bands[80][1])})"
                if 80 in f.total_bands else "")
        console.print(f"Revenue, next {len(f.dates)} days: {money(f.total)} expected{band}, {f.engine}.",
                      highlight=False)
    lights, library = result.creatives.lights, result.creatives.creatives
    console.print(f"Creatives: {len(library)} ({lights['green']} green, {lights['amber']} amber, {lights['red']} red; "
                  f"{sum(c.status == 'approved' for c in library)} approved; red never ships).", highlight=False)
    allocation = result.allocation.allocation
    if allocation is not None:
        table = Table(title=f"Tomorrow's budget: {money(allocation.budget)} ({allocation.method})")
        for column in ("channel", "yesterday", "proposed", "change", "CPA", "held by"):
            table.add_column(column, justify="left" if column in ("channel", "held by") else "right")
        for r in allocation.rows:
            table.add_row(r.channel, money(r.yesterday_spend), money(r.spend), f"{r.change:+,.2f}",
                          "-" if r.cpa is None else money(r.cpa), r.bound or "")
        console.print(table)
    console.print(f"Lineage head: entry {result.head.seq} {result.head.entry_hash[:16]}...")
    console.print(f"Read [bold]{escape(str(result.outputs['report']))}[/bold] first; all files:")
    for name, path in sorted(result.outputs.items()):
        console.print(f"  {name:<17} {escape(str(path))}", highlight=False)
    for item in result.attention():
        console.print(f"[yellow]attention[/yellow] {escape(item)}", highlight=False)
    if not isinstance(result.payload, Skipped):
        safely = "" if settings.mode == "sandbox" else "; mode = \"sandbox\" tries it safely"
        console.print("Next: review the copy (flashcast creatives list / approve, or the dashboard of flashcast "
                      f"serve at http://127.0.0.1:8000/), then flashcast push{safely}.", highlight=False, markup=False)
    if result.problems:
        console.print("[red]failed[/red] " + escape("; ".join(result.problems)) + "; everything else was written",
                      highlight=False)
        raise typer.Exit(1)


@app.command()
def forecast(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file of daily or weekly values, one or many series.")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/forecast"),
    date_col: Annotated[str | None, typer.Option(
        help="Date column (default: ds, or the one column called date, day or week, or the one named with "
             "'date', or the first of two).")] = None,
    value_col: Annotated[str | None, typer.Option(
        help="Value column (default: y, or the one column left besides the dates and series ids).")] = None,
    series_col: Annotated[str | None, typer.Option(help="Series id column, for a file of many series.")] = None,
    horizon: Annotated[int | None, typer.Option(
        help="Periods ahead: days of a daily series, weeks of a weekly one (default: [forecast] horizon).")] = None,
    engines: Annotated[str | None, typer.Option(help="Comma-separated line-up (default: [forecast] engines).")]
    = None,
    signed: Annotated[bool, typer.Option(help="Values may be negative (no clipping of bands at zero).")] = False,
    date_format: Annotated[str | None, typer.Option(
        help="strptime format of the dates, e.g. %d/%m/%Y (default: read ISO and other common forms).")] = None,
    keep_last_day: Annotated[bool, typer.Option(
        help="Keep a last day (or week) far below its recent level (default: left out as partly filled).")] = False,
    sum_by_date: Annotated[bool, typer.Option(
        help="Add up a series' rows of one day (rows by the hour, or one per order) into its daily value.")] = False,
    charts: Annotated[int, typer.Option(help="Fan charts for at most this many series.")] = 12,
    config: ConfigOption = None,
) -> None:
    """Forecast any daily or weekly series file: backtest the line-up per series, pick the best, band it.

    Example: flashcast forecast sales.csv --date-col date --value-col revenue --series-col store
    """
    from flashcast.config import ForecastConfig
    from flashcast.forecasting.backtest import BacktestSpec
    from flashcast.forecasting.engines import EngineOptions
    from flashcast.forecasting.files import read_series_file, write_forecast_outputs
    from flashcast.forecasting.forecast import closed_days, forecast_each
    from flashcast.inplace import files_in_place, moved

    with _errors():
        settings = _settings(config)
        out = _output_folder(out)
        try:
            options = ForecastConfig.model_validate({
                **settings.forecast.model_dump(), **({"horizon": horizon} if horizon is not None else {}),
                **({"engines": tuple(e.strip() for e in engines.split(","))} if engines else {})})
        except ValidationError as exc:
            raise ConfigError(f"forecast options: {describe_validation_error(exc)}") from exc
        frame = read_series_file(data, date_col=date_col, value_col=value_col, series_col=series_col,
                                 date_format=date_format, sum_by_date=sum_by_date)
        if (date_col, value_col) != (frame.attrs["date_col"], frame.attrs["value_col"]):
            console.print(f"dates from column {frame.attrs['date_col']!r}, values from {frame.attrs['value_col']!r}",
                          highlight=False, markup=False)
        value_col = frame.attrs["value_col"]
        with console.status(f"backtesting {frame['series_id'].nunique():,} series..."):
            done, skipped = forecast_each(frame, engines=options.engines, spec=BacktestSpec(horizon=options.horizon),
                                          nonnegative=not signed, keep_last_day=keep_last_day,
                                          options=EngineOptions(countries=options.holiday_countries))
        if not done:  # nothing to write: the folder keeps its previous forecast
            more = f" (and {len(skipped) - 1:,} more series skipped)" if len(skipped) > 1 else ""
            raise ForecastError(f"nothing forecast: {_skip_reason(skipped[0])}{more}")
        with files_in_place(out) as staging:
            files = moved(write_forecast_outputs(done, staging, charts=charts, ylabel=value_col), out)
    units = {result.cadence.unit for result in done}
    table = Table(title=f"{options.horizon}-{units.pop() if len(units) == 1 else 'period'} forecasts "
                        f"({len(done):,} series)")
    for column in ("series", "engine", "MASE", "80% cov.", "95% cov.", "forecast total", "history"):
        table.add_column(column, justify="left" if column in ("series", "engine", "history") else "right")
    for result in done[:20]:
        best = result.selection.winner_score if result.selection is not None else None
        notes = [] if best else ["too short to backtest (see below)"]
        notes += [f"{result.filled_days} {result.cadence.unit}s filled"] if result.filled_days else []
        notes += [f"{result.dropped_days} days before a long gap left out"] if result.dropped_days else []
        notes += [closed_days(result.closed_weekdays)] if result.closed_weekdays else []
        notes += [f"partly filled last {result.cadence.unit} left out"] if result.partial_last_day else []
        notes += [f"{result.blank_last_days} blank last days left out"] if result.blank_last_days else []
        notes += [f"{len(result.spike_days)} spike day(s) replaced"] if result.spike_days else []
        scores = (f"{best.mase:.3f}", f"{best.coverage[80]:.0%}", f"{best.coverage[95]:.0%}") if best else ("-",) * 3
        table.add_row(result.series_id, result.engine, *scores, f"{float(result.point.sum()):,.2f}", "; ".join(notes))
    console.print(table)
    if len(done) > 20:
        console.print(f"... and {len(done) - 20:,} more in {files['forecast']}")
    for skip in skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(_skip_reason(skip))}", highlight=False)
    console.print(f"wrote {files['forecast']}, {files['forecast_backtest']} and "
                  f"{sum(k.startswith('fan_chart') for k in files)} fan chart(s) in {out}")
    short = [r for r in done if r.selection is None]  # each first note says why (naming the series) and what was done
    for result in short[:10]:
        console.print(f"[yellow]note[/yellow] {escape(result.notes[0])}", highlight=False)
    if len(short) > 10:
        console.print(f"[yellow]note[/yellow] and {len(short) - 10:,} more series too short for a backtest, "
                      "forecast by Prophet without selection", highlight=False)
    for result in done:
        for note in result.history_warnings:
            console.print(f"[yellow]note[/yellow] {escape(result.series_id)}: {escape(note)}", highlight=False)


def _skip_reason(skip: SkippedSeries) -> str:
    """Why a series was not forecast, with the option that takes it."""
    hint = (" (--signed takes series that may go below zero)" if skip.negative else
            " (several rows a day: --sum-by-date adds them up)" if skip.repeated_date else "")
    return f"{skip.reason}{hint}"


def _pairs(option: str, values: list[str] | None) -> dict[str, float]:
    """CHANNEL=NUMBER options as a dict; a malformed one is a ConfigError naming the option."""
    pairs = {}
    for value in values or []:
        name, _, number = value.partition("=")
        try:
            pairs[name.strip()] = float(number)
        except ValueError:
            raise ConfigError(f"{option} takes CHANNEL=NUMBER, e.g. tv=0.5") from None
        if not name.strip():
            raise ConfigError(f"{option} takes CHANNEL=NUMBER, e.g. tv=0.5")
    return pairs


@app.command()
def allocate(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file: one row per day or week.")],
    date_col: Annotated[str, typer.Option(help="Date column.")] = "date",
    outcome_col: Annotated[str, typer.Option(help="Outcome column (sales, revenue, conversions).")] = "outcome",
    spend_cols: Annotated[str, typer.Option(help="Comma-separated spend columns, one per channel.")] = "",
    control_cols: Annotated[str, typer.Option(help="Comma-separated control columns (prices, promotions, "
                                                   "competitor activity...).")] = "",
    budget: Annotated[float | None, typer.Option(help="Budget to split, per period of the file (day or week).")]
    = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/allocate"),
    cadence: Annotated[str | None, typer.Option(help="daily or weekly (default: from the dates).")] = None,
    date_format: Annotated[str | None, typer.Option(help="strptime format of the dates, e.g. %d/%m/%Y.")] = None,
    sum_by_date: Annotated[bool, typer.Option(help="A panel (rows per geo or product and date): sum the outcome "
                                                   "and spend of each date's rows, average the controls.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the model's random starts and bootstrap.")] = 0,
    engine: Annotated[str, typer.Option(help="joint (the default fit) or bayes (PyMC-Marketing, needs "
                                             "flashcast[bayes]; minutes, not seconds).")] = "joint",
    draws: Annotated[int, typer.Option(help="bayes: posterior draws (and as many tuning steps) per chain.")] = 500,
    effects: Annotated[str, typer.Option(help="joint: how channel effects enter, additive, proportional (they "
                                              "scale with the baseline's level) or auto (proportional only when it "
                                              "predicts held-out periods clearly better).")] = "auto",
    min_share: Annotated[list[str] | None, typer.Option(help="A channel's least share, e.g. tv=0.1 (repeatable).")]
    = None,
    max_share: Annotated[list[str] | None, typer.Option(help="A channel's largest share, e.g. tv=0.5.")] = None,
    cap: Annotated[list[str] | None, typer.Option(help="A channel's largest spend per period, e.g. tv=20000.")]
    = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="flashcast.toml whose [guardrails] and [allocation] apply (default: none).")] = None,
) -> None:
    """Allocate a budget from a media-mix file: a joint model of the outcome (baseline, seasonality,
    controls, each channel's adstock and saturation), then the exact optimizer. Guardrails apply
    only when given (options, or [guardrails] of -c CONFIG).

    Example: flashcast allocate mmm.csv --date-col week --outcome-col sales --spend-cols tv,search,social
    --control-cols price --budget 50000 --max-share tv=0.5 --out out/allocate
    """
    from flashcast.budget.mmm import FORM_CHOICES
    from flashcast.config import load_allocation_settings
    from flashcast.inplace import files_in_place, moved
    from flashcast.mixfile import allocate_mix, read_mix_file, write_mix_outputs

    with _errors():
        if cadence not in (None, "daily", "weekly"):
            raise ConfigError("--cadence must be daily or weekly")
        if budget is None:
            raise ConfigError("give the budget to split: --budget B (per day or week, as the file's rows)")
        if not (budget > 0 and math.isfinite(budget)):
            raise ConfigError(f"--budget must be a positive number (got {budget:g})")
        if engine not in ("joint", "bayes"):
            raise ConfigError("--engine must be joint or bayes")
        if effects not in FORM_CHOICES:
            raise ConfigError("--effects must be auto, additive or proportional")
        if draws < 50:
            raise ConfigError("--draws must be at least 50")
        guardrails, allocation_config, currency = load_allocation_settings(
            config, min_share=_pairs("--min-share", min_share), max_share=_pairs("--max-share", max_share),
            caps=_pairs("--cap", cap))
        out = _output_folder(out)
        mix = read_mix_file(data, date_col=date_col, outcome_col=outcome_col,
                            spend_cols=[c.strip() for c in spend_cols.split(",") if c.strip()],
                            control_cols=[c.strip() for c in control_cols.split(",") if c.strip()],
                            cadence=cadence, date_format=date_format, sum_by_date=sum_by_date)  # type: ignore[arg-type]
        unknown = sorted({*guardrails.min_share, *guardrails.max_share, *guardrails.caps} - set(mix.data.spend))
        if unknown:
            raise ConfigError(f"guardrails name channels that are not spend columns: {unknown}")
        room = sum(guardrails.max_share.get(c, 1.0) for c in mix.data.spend)
        if room < 1.0 - 1e-9:  # as [guardrails] are checked for a run's paid channels
            raise ConfigError(f"max_share of the spend columns adds to {room:.0%}: they cannot hold the whole budget")
        with console.status(f"fitting the media-mix model on {mix.data.n:,} {mix.cadence} rows..."):
            model = None
            if engine == "bayes":
                from flashcast.budget.bayes import fit_mix_bayes

                model = fit_mix_bayes(mix.data, mix.dates, draws=draws, tune=draws, seed=seed,
                                      curve_draws=allocation_config.bootstrap_draws)
            result = allocate_mix(mix, budget, guardrails=guardrails, config=allocation_config, seed=seed,
                                  model=model, form=effects, outcome=outcome_col)
        with files_in_place(out) as staging:
            files = moved(write_mix_outputs(result, mix, staging, currency=currency, outcome=outcome_col), out)
    model, allocation = result.model, result.plan.allocation
    unit = mix.period
    table = Table(title=f"Allocation of {budget:,.2f} per {unit} (model R^2 {model.r2:.2f}, held-out "
                        f"{'-' if model.r2_holdout is None else f'{model.r2_holdout:.2f}'})")
    for column in ("channel", "spend", "share", f"last {unit}", "expected", "share of outcome", "bound"):
        table.add_column(column, justify="left" if column in ("channel", "bound") else "right")
    for row in allocation.rows:
        table.add_row(row.channel, f"{row.spend:,.2f}", f"{row.share:.1%}", f"{row.yesterday_spend:,.2f}",
                      f"{row.expected_conversions:,.1f}", f"{model.effects[row.channel].share:.1%}", row.bound or "")
    console.print(table)
    console.print(_returns_table(result.returns))
    band = allocation.expected_interval
    console.print(f"expected outcome from the channels: {allocation.expected_conversions:,.1f} per {unit}"
                  + (f" (80%: {band[0]:,.1f}..{band[1]:,.1f})" if band else "")
                  + f"; baseline and controls: {model.baseline_share:.0%} of the outcome")
    for note in (*model.notes, *allocation.notes):
        console.print(f"[yellow]note[/yellow] {escape(note)}", highlight=False)
    console.print(f"wrote {', '.join(p.name for p in files.values())} in {out}")


AS_COST_BELOW = 0.2  # revenue per unit spent is rarely this low; conversions per unit spent nearly always


def _returns_table(returns: Sequence[ChannelReturn]) -> Table:
    """Each channel over the file's periods: spend, fitted outcome and its return with the 80%
    interval, and what the next unit of spend buys at its recent level. The return reads as outcome
    per unit spent (ROI, ROAS), or as cost per unit of outcome (CPA) where most channels' outcome per
    unit spent is under AS_COST_BELOW, as it is where the outcome counts conversions."""
    known = sorted(r.per_spend for r in returns if r.per_spend is not None)
    as_cost = bool(known) and known[len(known) // 2] < AS_COST_BELOW
    table = Table(title="Each channel over the file's periods")
    for column in ("channel", "spend", "outcome", "cost per outcome (80%)" if as_cost else "per unit spent (80%)",
                   "next unit costs" if as_cost else "next unit buys"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for r in returns:
        value, band, marginal = r.per_spend, r.per_spend_interval, r.marginal
        if as_cost:  # the interval's ends swap: the highest return is the lowest cost
            value = r.cost_per_outcome
            band = None if band is None or band[1] <= 0 else (1 / band[1], 1 / band[0] if band[0] > 0 else math.inf)
            marginal = 1 / marginal if marginal > 0 else math.inf
        shown = "-" if value is None else format_figure(value)
        if band:  # a draw in which the channel brought nothing: no upper cost
            shown += f" ({format_figure(band[0])}-{'inf' if math.isinf(band[1]) else format_figure(band[1])})"
        table.add_row(r.channel, f"{r.spend:,.0f}", f"{r.outcome:,.0f}", shown,
                      "-" if math.isinf(marginal) else format_figure(marginal))
    return table


@app.command()
def prune(
    keep_days: Annotated[int, typer.Option(min=0, help="Keep guarded rows of this many days before the newest.")],
    config: ConfigOption = None,
) -> None:
    """Remove guarded rows (events, quarantine, consent drops, duplicates, sessions) dated more than
    KEEP_DAYS before the warehouse's newest day; the lineage log records what was removed. Decisions
    (segments, creatives, allocations) are kept. `[store] retention_days` does the same after each run.

    Example: flashcast prune --keep-days 400
    """
    from flashcast.history import prune as prune_warehouse
    from flashcast.lineage import LineageLog, new_lineage_id
    from flashcast.store import transform_connection

    with _errors():
        settings = _settings(config)
        if not settings.store.warehouse_path.exists():
            raise ConfigError(f"no warehouse at {settings.store.warehouse_path}: nothing to prune")
        con = transform_connection()
        try:
            with _ops_store(settings) as ops:
                pruned = prune_warehouse(con, settings.store.warehouse_path, keep_days=keep_days,
                                         timeout_s=settings.store.lock_timeout_s, log=LineageLog(ops),
                                         lineage_id=new_lineage_id())
        finally:
            con.close()
    console.print(f"pruned {sum(pruned.values()):,} row(s) dated more than {keep_days:,} day(s) before the newest: "
                  + (", ".join(f"{table} {n:,}" for table, n in pruned.items()) or "nothing stored"), highlight=False)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many of the latest runs.")] = 20,
    config: ConfigOption = None,
) -> None:
    """List the latest runs and their state (running, completed, partial, failed, abandoned).

    A run left 'running' by a process that is gone (killed, crashed) is marked 'abandoned' here.
    Example: flashcast runs --limit 5
    """

    with _errors(), _ops_store(_settings(config)) as ops:
        rows = ops.latest_runs(limit)
    # An id is copied into other commands: never folded. Errors go under the table, so it fits 80 columns.
    table = Table(title=f"Latest {len(rows)} run(s)")
    table.add_column("run", no_wrap=True, min_width=36)
    table.add_column("status", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("took", no_wrap=True, justify="right")
    for row in rows:
        took = "" if row["status"] == "abandoned" else _took(row["started_at"], row["finished_at"])  # ended unseen
        table.add_row(row["lineage_id"], row["status"], _minute(row["started_at"])[5:], took)
    console.print(table)
    for row in rows:
        if row["error"]:
            console.print(f"[red]{row['status']}[/red] {row['lineage_id']}: {escape(row['error'][:300])}",
                          highlight=False)


@keys_app.command("pii")
def keys_pii(config: ConfigOption = None) -> None:
    """Create the PII hashing key (a local file, private to you) if there is none; print its key id.

    $FLASHCAST_PII_KEY wins over the file when set. Keep the key: identifiers hashed with another key
    do not match earlier runs'. Example: flashcast keys pii
    """
    from flashcast.keys import create_pii_key

    with _errors():
        settings = _settings(config)
        key, where, created = create_pii_key(settings.policy, settings.pii_key_file)
    console.print(f"{'created' if created else 'using'} the PII key in {escape(where)}: key id {key.key_id}",
                  highlight=False)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer, approver, operator or admin.")],
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it, once: only its hash is stored.

    Roles: viewer reads; approver also decides on creatives; operator also runs and pushes; admin
    does everything and manages keys. Example: flashcast keys create --role viewer
    """
    from flashcast.access import create_key

    with _errors(), _ops_store(_settings(config)) as ops:
        key, secret = create_key(ops, role, by="cli")
    console.print(f"created {key.role} key {key.key_id}; it is shown this once:", highlight=False)
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List API keys: id, role, created, revoked (never a key)."""
    from flashcast.access import list_keys

    with _errors(), _ops_store(_settings(config)) as ops:
        keys = list_keys(ops)
    table = Table(title=f"{len(keys)} API key(s)")
    for column in ("key id", "role", "created", "revoked"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(key.key_id, key.role, _minute(key.created_at), _minute(key.revoked_at))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (from `flashcast keys list`).")],
                config: ConfigOption = None) -> None:
    """Revoke an API key; the lineage log records it."""
    from flashcast.access import revoke_key

    with _errors():
        with _ops_store(_settings(config)) as ops:
            done = revoke_key(ops, key_id, by="cli")
        if not done:
            raise ConfigError(f"no live API key {key_id}")
    console.print(f"revoked {key_id}", highlight=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs). Create a key first: flashcast keys create --role viewer.

    Example: flashcast serve --host 127.0.0.1 --port 8000
    """
    import uvicorn

    from flashcast.api import create_app

    with _errors():
        settings = _settings(config)
        _check_listen(host, port)
        application = create_app(settings)
    uvicorn.run(application, host=host, port=port, log_level="info")


def _check_listen(host: str, port: int) -> None:
    """One line, before the server starts, when it could not listen on host:port (uvicorn says so in
    its log, after announcing a startup)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        why = "in use (by another server?)" if exc.errno == errno.EADDRINUSE else exc.strerror or "unusable"
        raise ConfigError(f"cannot listen on {host}:{port}: {why}; choose another with --port") from None


@lineage_app.command("verify")
def lineage_verify(
    head: Annotated[list[Path] | None, typer.Option(help="Head file(s) written by runs (out/lineage_head.json).")]
    = None,
    config: ConfigOption = None,
) -> None:
    """Verify the hash chain, plus anchors: head files and the heads recorded with finished runs."""
    from flashcast.lineage import LineageLog, read_head_file, run_anchors

    with _errors():
        settings = _settings(config)
        with _ops_store(settings) as ops:
            anchors = [read_head_file(p) for p in head or []] + run_anchors(ops)
            report = LineageLog(ops).verify(anchors)
    console.print(f"[green]ok[/green]: {report.entries} entries, head {report.head.seq} "
                  f"{report.head.entry_hash[:16]}..., {report.anchors_checked} anchors checked")


@lineage_app.command("show")
def lineage_show(
    lineage_id: Annotated[str | None, typer.Option(help="Only entries of this run.")] = None,
    config: ConfigOption = None,
) -> None:
    """Print lineage log entries as JSON lines."""
    from flashcast.lineage import LineageLog

    with _errors():
        with _ops_store(_settings(config)) as ops:
            entries = LineageLog(ops).entries(lineage_id)
        if not entries:
            raise LineageError(f"no lineage entries for run {lineage_id}" if lineage_id else "the lineage log is empty")
        for entry in entries:
            sys.stdout.write(json.dumps(entry, sort_keys=True) + "\n")


@privacy_app.command("scan")
def privacy_scan(
    out: Annotated[list[Path] | None, typer.Option(help="Output folder(s) to scan (default: out).")] = None,
    truth: Annotated[Path | None, typer.Option(
        help="truth.json from `flashcast simulate`: also look for the exact planted values.")] = None,
    config: ConfigOption = None,
) -> None:
    """Scan the warehouse, the ops store and output folders for personal data. Exit 1 on any finding.

    Without --truth it looks for what PII looks like: email addresses, phone numbers written with
    separators, GA4 client ids, personal URL query values (email=, phone=, name=...), and identifier
    columns holding anything but an HMAC. Findings say where and what, never the value.
    Example: flashcast privacy scan --out out
    """
    import time

    from flashcast.privacy import PiiNeedles, scan_run

    with _errors():
        settings = _settings(config)
        needles = None
        if truth is not None:
            try:
                needles = PiiNeedles.from_truth(json.loads(truth.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
                raise ConfigError(f"--truth {truth}: not a truth.json written by `flashcast simulate`") from exc
        start = time.perf_counter()
        report = scan_run(warehouse=settings.store.warehouse_path, ops_url=settings.store.ops_database_url,
                          folders=out or [Path("out")], needles=needles, lock_timeout_s=settings.store.lock_timeout_s)
    for finding in report.findings:
        console.print(f"[red]{escape(finding.kind)}[/red] x{finding.count} in {escape(finding.where)}", highlight=False)
    console.print(f"scanned {report.values_scanned:,} values in {report.columns_scanned} columns and "
                  f"{report.files_scanned} files in {time.perf_counter() - start:.1f} s: "
                  + ("[green]clean[/green]" if report.clean else "[red]PII found[/red]"), highlight=False)
    if not report.clean:
        raise typer.Exit(1)


creatives_app = typer.Typer(help="The latest run's creatives and people's decisions on them.", no_args_is_help=True)
app.add_typer(creatives_app, name="creatives")


@creatives_app.command("list")
def creatives_list(config: ConfigOption = None) -> None:
    """The latest run's creatives: id, segment, channel, traffic light, status. Example: flashcast creatives list"""
    from flashcast.approvals import latest_creatives

    with _errors():
        settings = _settings(config)
        with _ops_store(settings) as ops:
            rows = latest_creatives(settings.store.warehouse_path, ops, timeout_s=settings.store.lock_timeout_s)
    # One section per segment (its name a row of its own), so the headline has room in 80 columns.
    table = Table("channel", "v", "light", "status", "headline")
    table.columns.insert(0, Column("creative_id", no_wrap=True, min_width=15))  # whole: it is typed back
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for r in rows:  # in the library's order
        by_segment.setdefault(str(r["segment"]), []).append(r)
    for segment, group in by_segment.items():
        if table.row_count:
            table.add_section()
        table.add_row(f"[bold]{escape(str(segment))}[/bold]", "", "", "", "", "")
        for r in group:
            table.add_row(*(escape(str(r[k])) for k in ("creative_id", "channel", "variant", "light", "status",
                                                         "headline")))
    console.print(table if rows else "no creatives yet: run the pipeline first", highlight=False)


def _decide(creative_ids: list[str], decision: str, comment: str, override_reason: str | None,
            config: Path | None, *, all_green: bool = False) -> None:
    from flashcast.approvals import decide, latest_creatives
    from flashcast.errors import UnknownCreative

    with _errors():
        if not creative_ids and not all_green:
            raise ConfigError("creatives: give creative ids (flashcast creatives list) or --all-green")
        settings = _settings(config)
        with _ops_store(settings) as ops:
            library = {c["creative_id"]: c for c in latest_creatives(settings.store.warehouse_path, ops,
                                                                      timeout_s=settings.store.lock_timeout_s)}
            unknown = [i for i in creative_ids if i not in library]
            if unknown:
                raise UnknownCreative(f"not in the latest run's library: {', '.join(unknown)}")
            if all_green:  # amber and red copy is left for a person to read one by one
                creative_ids = [*creative_ids, *(i for i, c in library.items() if c["light"] == "green"
                                                 and c["status"] == "pending" and i not in creative_ids)]
            for creative_id in creative_ids:
                decide(ops, library[creative_id], decision, comment=comment,  # type: ignore[arg-type]
                       override_reason=override_reason, by="cli")
    console.print(f"{decision} {len(creative_ids)} creative(s)", highlight=False)


CommentOption = Annotated[str, typer.Option(help="Why (kept with the decision; emails and phone numbers redacted).")]


@creatives_app.command("approve")
def creatives_approve(
    creative_ids: Annotated[list[str] | None, typer.Argument(help="Creative ids (flashcast creatives list).")] = None,
    all_green: Annotated[bool, typer.Option(
        "--all-green", help="Also every green creative of the latest run still pending (not amber or red ones).")
    ] = False,
    comment: CommentOption = "",
    override_reason: Annotated[str | None, typer.Option(help="Required to approve a red creative.")] = None,
    config: ConfigOption = None,
) -> None:
    """Approve creatives (recorded in the lineage log, by 'cli', one entry each). Examples: flashcast
    creatives approve cr-1a2b3c; flashcast creatives approve --all-green --comment "read them all"
    """
    _decide(creative_ids or [], "approved", comment, override_reason, config, all_green=all_green)


@creatives_app.command("reject")
def creatives_reject(
    creative_ids: Annotated[list[str], typer.Argument(help="Creative ids (flashcast creatives list).")],
    comment: CommentOption = "",
    config: ConfigOption = None,
) -> None:
    """Reject creatives: they leave the next payloads and pushes. Example: flashcast creatives reject cr-1a2b3c"""
    _decide(creative_ids, "rejected", comment, None, config)


EXIT_HELD = 3  # `push`/`rebalance`: the plan waits for a person's approval
EXIT_UNDELIVERED = 4  # an order is still pending (will be retried) or a platform refused it


@app.command()
def push(
    lineage_id: Annotated[str | None, typer.Argument(help="The run to push (default: the latest).")] = None,
    config: ConfigOption = None,
) -> None:
    """Push a run's approved plan to the ad platforms ([delivery] in flashcast.toml), exactly once.

    Each platform's order is committed to the outbox, then POSTed with an Idempotency-Key and a
    signature (secret from FLASHCAST_DSP_SECRET). Orders left pending by an earlier push are sent too.
    Exit 0: every order delivered; 3: held, a funded line item has no approved creative; 4: an order is
    still pending (retried next time) or a platform refused it. Example: flashcast push
    """
    from flashcast.delivery import latest_payload_id
    from flashcast.delivery import push as push_payload
    from flashcast.errors import PayloadNotFound, PushHeld
    from flashcast.lineage import utc_now

    with _errors():
        settings = _settings(config)
        with _ops_store(settings) as ops:
            lineage_id = lineage_id or latest_payload_id(ops)
            if lineage_id is None:
                raise PayloadNotFound("no payload yet: no run has made one (a run whose forecast or allocation "
                                      "failed makes none; `flashcast runs` lists them)")
            started = utc_now()
            try:
                orders = push_payload(ops, settings, lineage_id, by="cli")
            except PushHeld as exc:
                hint = "(flashcast creatives approve ID... or --all-green, or the API; then push again)"
                raise _fail("PushHeld", f"{exc} {hint}", EXIT_HELD) from exc
    if orders and not any(a.started_at >= started for o in orders for a in o.attempts):  # UTC ISO: ordered as text
        console.print("nothing sent: every order of this plan was delivered before (each is sent once)",
                      highlight=False)
    elif settings.mode == "sandbox":
        console.print("[SANDBOX] sent to the built-in stand-in platform; nothing reached a real one",
                      highlight=False, markup=False)
    _print_deliveries(orders)
    if any(o.state != "delivered" for o in orders):
        raise typer.Exit(EXIT_UNDELIVERED)


@app.command()
def rebalance(config: ConfigOption = None) -> None:
    """The daily loop, once (for cron or a systemd timer): read what is new in [source] export, plan
    again, push when [delivery] auto_push allows (or hold for approval), email the lead ([email]).

    Exit 0: pushed; 3: held for approval; 4: an order is still pending or was refused; 5: no plan
    (the run made no payload); 1: the run failed or another rebalance is running.
    Example (crontab, 06:30 daily): 30 6 * * * cd /srv/flashcast && .venv/bin/flashcast rebalance
    """
    from flashcast.rebalance import rebalance as run_rebalance

    with _errors():
        settings = _settings(config)
        key = load_pii_key(settings.policy, settings.pii_key_file)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as bar:
            task = bar.add_task("starting", total=None)
            result = run_rebalance(settings, key=key, by="cli",
                                   progress=lambda message: bar.update(task, description=escape(message)))
    sandbox = "[SANDBOX] " if settings.mode == "sandbox" else ""
    console.print(f"{sandbox}rebalance {result.lineage_id}: {result.outcome}: {result.detail}", highlight=False,
                  markup=False)
    for item in result.attention:  # a cron log shows what the report asks a person to look at
        console.print(f"[yellow]attention[/yellow] {escape(item)}", highlight=False)
    if result.orders:  # held or no plan: the line above says why there are none
        _print_deliveries(list(result.orders))
    console.print(f"summary email: {result.email}", highlight=False, markup=False)
    raise typer.Exit(result.exit_code)


@app.command()
def deliveries(
    lineage_id: Annotated[str | None, typer.Argument(help="Only this run's orders.")] = None,
    config: ConfigOption = None,
) -> None:
    """Every pushed order and its delivery attempts. Example: flashcast deliveries"""
    from flashcast.delivery import deliveries as list_deliveries

    with _errors(), _ops_store(_settings(config)) as ops:
        orders = list_deliveries(ops, lineage_id)
    _print_deliveries(orders)


def _print_deliveries(orders: list[Any]) -> None:
    if not orders:
        console.print("no orders pushed yet", highlight=False)
    for lineage_id in dict.fromkeys(o.lineage_id for o in orders):
        table = Table("platform", "version", "state", "attempts", "last answer", "finished", title=f"run {lineage_id}")
        for o in (o for o in orders if o.lineage_id == lineage_id):
            last = o.attempts[-1].detail if o.attempts else ""
            table.add_row(o.platform, str(o.version), o.state, str(len(o.attempts)), last or "", _minute(o.finished_at))
        console.print(table, highlight=False)


@app.command("dsp-standin")
def dsp_standin(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 9100,
    db: Annotated[Path, typer.Option(help="SQLite file where it records what it received.")] = Path(
        ".flashcast/standin_dsp.sqlite"),
    secret_env: Annotated[str, typer.Option(help="Environment variable holding the signing secret.")] =
        "FLASHCAST_DSP_SECRET",
) -> None:
    """Serve a stand-in ad platform on loopback: verifies signatures, applies each Idempotency-Key once.

    For trying `flashcast push` end to end without a real platform. Example: flashcast dsp-standin
    """
    import time

    from flashcast.standin import StandInDsp, serve_standin

    with _errors():
        secret = os.environ.get(secret_env)
        if not secret:
            raise ConfigError(f"set {secret_env} to the signing secret")
        _check_listen("127.0.0.1", port)
        dsp = StandInDsp(db, secret.encode())
        with serve_standin(dsp, port=port) as url:
            console.print(f"stand-in platform at {url}/<platform>/orders, recording to {db}; Ctrl-C stops",
                          highlight=False)
            while True:
                time.sleep(3600)


def main(argv: list[str] | None = None) -> Any:
    return app(argv)
