"""Daily KPIs: zero-filled spine, channel mapping, spend join, partial last day."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from conftest import TEST_KEY, ga4_row, write_lines
from flashcast.config import ChannelMapping, ChannelRule, PrivacyPolicy
from flashcast.errors import IngestError
from flashcast.keys import PiiKey
from flashcast.records import RunContext
from flashcast.simulate import SimulationResult
from flashcast.stages.guard import guard_export, install_privacy_functions
from flashcast.stages.ingest import stage_export
from flashcast.stages.kpis import daily_channel_kpis, load_spend

KEY = PiiKey(TEST_KEY.encode())
RUN = RunContext("01900000-0000-7000-8000-000000000001", datetime(2026, 3, 31, tzinfo=UTC), KEY.key_id)


def _guarded(con: duckdb.DuckDBPyConnection, source: Path) -> None:
    install_privacy_functions(con, KEY, PrivacyPolicy())
    guard_export(con, stage_export(con, source), policy=PrivacyPolicy(), run=RUN)


def _session_row(day: str, ts: int, session: int, medium: str, name: str = "session_start", **extra: object) -> str:
    params = [{"key": "ga_session_id", "value": {"int_value": str(session)}},
              {"key": "medium", "value": {"string_value": medium}},
              {"key": "source", "value": {"string_value": "src"}}]
    return json.dumps(ga4_row(event_date=day, event_timestamp=str(ts), event_name=name, event_params=params,
                              user_pseudo_id=f"u{session}", **extra))


def test_spine_is_zero_filled_and_channels_follow_the_rules(tmp_path: Path) -> None:
    base = 1772370000000000  # 2026-03-01 13:00 UTC
    day = 86_400_000_000
    lines = [
        _session_row("20260301", base, 1, "cpc"),
        _session_row("20260301", base + 1, 1, "cpc", name="purchase",
                     ecommerce={"purchase_revenue": 40.0, "transaction_id": "T1"}),
        _session_row("20260303", base + 2 * day, 2, "newsletter"),
        _session_row("20260303", base + 2 * day + 5, 3, "organic"),
    ]
    con = duckdb.connect()
    _guarded(con, write_lines(tmp_path / "events_march.json", lines))  # three days in one file: no date in its name
    kpis = daily_channel_kpis(con, spend=None, mapping=ChannelMapping(), timezone="UTC")
    rows = con.execute("SELECT event_date::VARCHAR, channel, sessions, purchases, revenue FROM daily_kpis").fetchall()
    assert len(rows) == 3 * 5  # 3 days (one with no data) x 5 channels
    by_key = {(r[0], r[1]): r[2:] for r in rows}
    assert by_key[("2026-03-01", "PPC")] == (1, 1, 40.0)
    assert by_key[("2026-03-02", "PPC")] == (0, 0, 0.0)
    assert by_key[("2026-03-03", "Email")] == (1, 0, 0.0)
    assert by_key[("2026-03-03", "Organic")] == (1, 0, 0.0)
    assert kpis.partial_last_day  # latest event 13:00 UTC < 22:00
    custom = ChannelMapping(rules=(ChannelRule(channel="Display", source="^SRC$"),))
    daily_channel_kpis(con, spend=None, mapping=custom, timezone="UTC")
    assert con.execute("SELECT sum(sessions) FROM daily_kpis WHERE channel = 'Display'").fetchall()[0][0] == 3


@pytest.mark.parametrize(("name", "partial"), [("events_20260302.json", False),
                                                ("events_intraday_20260302.json", True),
                                                ("events_march.json", True)])
def test_a_daily_file_s_day_is_complete_however_early_its_last_event(tmp_path: Path, name: str,
                                                                      partial: bool) -> None:
    # A small property's daily table may end at 3 pm; GA4 writes it once the day is over. An intraday
    # table, or an extract without a date in its name, ending then is still filling in.
    base = 1772370000000000  # 2026-03-01 13:00 UTC
    write_lines(tmp_path / "export" / "events_20260301.json", [_session_row("20260301", base, 1, "cpc")])
    write_lines(tmp_path / "export" / name, [_session_row("20260302", base + 86_400_000_000, 2, "cpc")])
    con = duckdb.connect()
    _guarded(con, tmp_path / "export")
    kpis = daily_channel_kpis(con, spend=None, mapping=ChannelMapping(), timezone="UTC")
    assert (kpis.last_day, kpis.partial_last_day) == (date(2026, 3, 2), partial)


def test_simulated_kpis_join_spend_and_flag_the_intraday_day(small_sim: SimulationResult) -> None:
    con = duckdb.connect()
    _guarded(con, small_sim.export_dirs["ndjson"])
    mapping = ChannelMapping()
    load_spend(con, small_sim.spend_file, mapping=mapping)
    kpis = daily_channel_kpis(con, mapping=mapping, timezone="America/New_York")
    assert kpis.partial_last_day
    partial = con.execute("SELECT DISTINCT event_date FROM daily_kpis WHERE is_partial").fetchall()
    assert partial == [(kpis.last_day,)]
    spend_in = con.execute("SELECT round(sum(spend), 2) FROM spend WHERE event_date >= ? AND event_date <= ?",
                           [kpis.first_day, kpis.last_day]).fetchall()[0][0]
    assert con.execute("SELECT round(sum(spend), 2) FROM daily_kpis").fetchall()[0][0] == pytest.approx(spend_in)
    purchases = con.execute("SELECT count(*) FROM guarded_events WHERE event_name = 'purchase'").fetchall()[0][0]
    assert con.execute("SELECT sum(purchases) FROM daily_kpis").fetchall()[0][0] == purchases
    assert con.execute("SELECT count(DISTINCT lineage_id) FROM daily_kpis").fetchall()[0][0] == 1
    assert kpis.spend_through == con.execute("SELECT max(event_date) FROM spend").fetchall()[0][0]
    assert not kpis.spend_ends_early
    assert kpis.unspent == ()  # every paid channel spent


def test_paid_channels_without_spend_in_the_spend_data_are_named(small_sim: SimulationResult, tmp_path: Path) -> None:
    # A team's spend file often holds only the channels it buys from one report; the others' sessions
    # still come in (the default rules map them), and their conversions came without spend.
    from flashcast.records import AllocationPlan, CreativeLibrary, ForecastPlan, Segmentation
    from flashcast.report import attention_items

    con = duckdb.connect()
    _guarded(con, small_sim.export_dirs["ndjson"])
    header, *rows = small_sim.spend_file.read_text().splitlines()
    kept = [row for row in rows if ",PPC," in row or ",Email," in row]
    zeroed = [row.rsplit(",", 1)[0] + ",0" for row in rows if ",Email," in row]  # listed, never spent
    load_spend(con, write_lines(tmp_path / "spend.csv", [header, *(r for r in kept if ",Email," not in r), *zeroed]),
               mapping=ChannelMapping())
    kpis = daily_channel_kpis(con, mapping=ChannelMapping(), timezone="America/New_York")
    assert kpis.unspent == ("Display", "CTV", "Email")
    import pandas as pd

    items = attention_items(segments=Segmentation("user_segments", (), {}, {}), creatives=CreativeLibrary(()),
                            forecast=ForecastPlan(None, pd.DataFrame()), allocate=AllocationPlan(None), kpis=kpis)
    assert items == ["Display, CTV and Email have no spend in the spend data: what their money buys is unknown, so the "
                     "plan gives each only what the guardrails require. Add their spend to the spend file, or take "
                     "them out of [channels] paid_channels if not bought."]
    # without a spend file there is nothing to name (the run says so elsewhere)
    con.execute("DELETE FROM spend")
    assert daily_channel_kpis(con, mapping=ChannelMapping(), timezone="America/New_York").unspent == ()


def test_spend_data_ending_before_the_last_complete_day_is_named(small_sim: SimulationResult, tmp_path: Path) -> None:
    from flashcast.records import AllocationPlan, CreativeLibrary, ForecastPlan, Segmentation
    from flashcast.report import attention_items

    con = duckdb.connect()
    _guarded(con, small_sim.export_dirs["ndjson"])
    header, *rows = small_sim.spend_file.read_text().splitlines()
    days = sorted({row[:10] for row in rows})
    cut = write_lines(tmp_path / "spend.csv", [header, *(row for row in rows if row[:10] < days[-5])])
    load_spend(con, cut, mapping=ChannelMapping())
    kpis = daily_channel_kpis(con, mapping=ChannelMapping(), timezone="America/New_York")
    assert kpis.spend_through is not None and kpis.spend_through < kpis.last_complete_day and kpis.spend_ends_early
    gap = (kpis.last_complete_day - kpis.spend_through).days
    import pandas as pd

    items = attention_items(segments=Segmentation("user_segments", (), {}, {}), creatives=CreativeLibrary(()),
                            forecast=ForecastPlan(None, pd.DataFrame()), allocate=AllocationPlan(None), kpis=kpis)
    assert items == [f"The spend data end on {kpis.spend_through}, {gap} day(s) before the last complete day "
                     f"({kpis.last_complete_day}): the budget starts from the spend of {kpis.spend_through} and "
                     "the curves are fitted up to it. Add the missing days' spend to the spend file."]
    assert kpis.last_spend_day == kpis.spend_through  # the allocation's yesterday and the end of its fit window
    # The allocation starts from the last day with spend data (it read the unknown days as no spend:
    # yesterday's budget zero, no plan), and fits its curves up to it (not on days of zeros).
    from flashcast.config import Settings
    from flashcast.stages.allocate import channel_histories, channel_series

    last = kpis.spend_through.isoformat()
    spent = {row.split(",")[1]: float(row.split(",")[2]) for row in rows if row.startswith(last)}
    histories = channel_histories(con, kpis, Settings())
    assert {h.channel: h.yesterday_spend for h in histories} == pytest.approx(spent)
    series = channel_series(con, kpis, Settings())
    fitted_days = (kpis.spend_through - kpis.first_day).days + 1
    assert {len(s.spend) for s in series} == {fitted_days} and all(s.spend[-1] == spent[s.channel] for s in series)
    # A day whose export rows fell far under its usual (the guard's outage days): its spend was made, what
    # it brought was not recorded; the outcome is interpolated from the days around it, as the forecaster does.
    lost = kpis.first_day + (kpis.spend_through - kpis.first_day) // 2
    con.execute("UPDATE daily_kpis SET purchases = 0, sessions = 0 WHERE event_date = ?", [lost])
    i = (lost - kpis.first_day).days
    broken = {s.channel: s for s in channel_series(con, kpis, Settings())}
    filled = {s.channel: s for s in channel_series(con, kpis, Settings(), missing=(lost.isoformat(),))}
    for channel, s in filled.items():
        assert s.outcome[i] == pytest.approx((s.outcome[i - 1] + s.outcome[i + 1]) / 2)
        assert list(s.spend) == list(broken[channel].spend)  # the spend stands
        assert np.delete(s.outcome, i).tolist() == np.delete(broken[channel].outcome, i).tolist()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2026-03-01,PPC,-3", "line 2: spend: negative"),
        ("2026-03-01,TV,3", "line 2: channel: not a paid channel"),
        ("03/01/2026,PPC,3", "line 2: date: not a YYYY-MM-DD date"),
        ("2026-03-01,PPC,abc", "line 2: spend: not a number$"),
        ('2026-03-01,PPC,"$1,234.50"', r"line 2: spend: not a number \(write plain numbers: no currency sign"),
    ],
)
def test_bad_spend_rows_are_named(tmp_path: Path, row: str, message: str) -> None:
    path = write_lines(tmp_path / "spend.csv", ["date,channel,spend", row])
    with pytest.raises(IngestError, match=message):
        load_spend(duckdb.connect(), path, mapping=ChannelMapping())


def test_weekly_or_monthly_spend_totals_are_refused_not_read_as_one_day_each(tmp_path: Path) -> None:
    """A weekly spend report (every date a Monday) read as daily spend would put each week's money
    on one day: yesterday's spend, the budget, would be 0 six days of seven."""
    weeks = [f"2026-03-{day:02d},{channel},700" for day in (2, 9, 16, 23) for channel in ("PPC", "CTV")]
    with pytest.raises(IngestError, match=r"^spend.csv: date: every date is a Monday, typically 7 days apart: weekly "
                                          "totals, not daily spend"):
        load_spend(duckdb.connect(), write_lines(tmp_path / "spend.csv", ["date,channel,spend", *weeks]),
                   mapping=ChannelMapping())
    months = [f"2026-{month:02d}-01,PPC,3000" for month in (1, 2, 3, 4)]
    with pytest.raises(IngestError, match=r"^months.csv: date: the dates are typically 31 days apart: monthly totals"):
        load_spend(duckdb.connect(), write_lines(tmp_path / "months.csv", ["date,channel,spend", *months]),
                   mapping=ChannelMapping())
    # daily spend with a channel that buys only on some days, and a short file, are read
    flighted = [f"2026-03-{day:02d},PPC,100" for day in range(2, 24)] + ["2026-03-02,CTV,50", "2026-03-09,CTV,50"]
    assert load_spend(duckdb.connect(), write_lines(tmp_path / "daily.csv", ["date,channel,spend", *flighted]),
                      mapping=ChannelMapping()) == 24
    two = ["2026-03-02,PPC,100", "2026-03-09,PPC,100"]
    assert load_spend(duckdb.connect(), write_lines(tmp_path / "two.csv", ["date,channel,spend", *two]),
                      mapping=ChannelMapping()) == 2


def test_spend_file_needs_its_columns(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spend.csv", ["day,channel,cost", "2026-03-01,PPC,3"])
    with pytest.raises(IngestError, match=r"spend.csv: no column 'date' \(columns: day, channel, cost\)"):
        load_spend(duckdb.connect(), path, mapping=ChannelMapping())


def test_spend_file_headers_in_any_case_are_read(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spend.csv", ["Date, Channel ,SPEND", "2026-03-01,PPC,3", "2026-03-01,CTV,4.5"])
    con = duckdb.connect()
    assert load_spend(con, path, mapping=ChannelMapping()) == 2
    assert con.execute("SELECT event_date::VARCHAR, channel, spend FROM spend ORDER BY channel").fetchall() == [
        ("2026-03-01", "CTV", 4.5), ("2026-03-01", "PPC", 3.0)]


def test_a_semicolon_spend_file_with_decimal_commas_is_read_and_a_mixed_one_refused(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spend.csv", ["date;channel;spend", "2026-03-01;PPC;1234,5", "2026-03-01;CTV;4"])
    con = duckdb.connect()
    assert load_spend(con, path, mapping=ChannelMapping()) == 2
    assert con.execute("SELECT channel, spend FROM spend ORDER BY channel").fetchall() == [("CTV", 4.0),
                                                                                        ("PPC", 1234.5)]
    # 1,5 beside 1.5: which mark is decimal is not guessed
    mixed = write_lines(tmp_path / "mixed.csv", ["date;channel;spend", "2026-03-01;PPC;1,5", "2026-03-01;CTV;1.5"])
    with pytest.raises(IngestError, match="line 2: spend: not a number"):
        load_spend(con, mixed, mapping=ChannelMapping())
    # in a comma-separated file a quoted "1,5" is no decimal comma either
    quoted = write_lines(tmp_path / "quoted.csv", ["date,channel,spend", '2026-03-01,PPC,"1,5"'])
    with pytest.raises(IngestError, match="line 2: spend: not a number"):
        load_spend(con, quoted, mapping=ChannelMapping())


def test_a_report_by_campaign_is_summed_per_day_and_channel_and_a_row_given_twice_refused(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spend.csv", ["date,channel,campaign,spend", "2026-03-01,PPC,brand,3",
                                                "2026-03-01,PPC,generic,4.5", "2026-03-01,CTV,launch,2",
                                                "2026-03-02,PPC,brand,3"])
    con = duckdb.connect()
    assert load_spend(con, path, mapping=ChannelMapping()) == 3
    assert con.execute("SELECT event_date::VARCHAR, channel, spend FROM spend ORDER BY ALL").fetchall() == [
        ("2026-03-01", "CTV", 2.0), ("2026-03-01", "PPC", 7.5), ("2026-03-02", "PPC", 3.0)]
    twice = write_lines(tmp_path / "twice.csv", ["date,channel,campaign,spend", "2026-03-01,PPC,brand,3",
                                                 "2026-03-01,PPC,generic,4", "2026-03-01,PPC,brand,3"])
    with pytest.raises(IngestError, match=r"line 2: date, channel: repeated \(the same row twice\); line 4: "):
        load_spend(con, twice, mapping=ChannelMapping())


def test_a_channel_in_other_case_or_with_spaces_is_the_configured_one(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spend.csv", ["date,channel,spend", "2026-03-01,ppc ,3", "2026-03-01,Ctv,4"])
    con = duckdb.connect()
    assert load_spend(con, path, mapping=ChannelMapping()) == 2
    assert con.execute("SELECT channel FROM spend ORDER BY channel").fetchall() == [("CTV",), ("PPC",)]
    twice = write_lines(tmp_path / "twice.csv", ["date,channel,spend", "2026-03-01,PPC,3", "2026-03-01,ppc,4"])
    with pytest.raises(IngestError, match="line 2: date, channel: repeated; line 3: date, channel: repeated"):
        load_spend(con, twice, mapping=ChannelMapping())


def test_a_parquet_spend_file_reads_as_its_csv_twin_and_names_rows(tmp_path: Path) -> None:
    import pandas as pd

    lines = ["date,channel,spend", "2026-03-01,PPC,30.5", "2026-03-01,Display,12", "2026-03-02,ppc,31"]
    csv = write_lines(tmp_path / "spend.csv", lines)
    frame = pd.read_csv(csv).assign(date=lambda f: pd.to_datetime(f["date"]).dt.date)  # typed: DATE, DOUBLE
    frame.to_parquet(tmp_path / "spend.parquet")
    read = {}
    for path in (csv, tmp_path / "spend.parquet"):
        con = duckdb.connect()
        assert load_spend(con, path, mapping=ChannelMapping()) == 3
        read[path.suffix] = con.execute("SELECT * FROM spend ORDER BY ALL").fetchall()
    assert read[".parquet"] == read[".csv"]
    frame.assign(spend=[30.5, -1.0, 31.0]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(IngestError, match=r"^bad.parquet: row 2: spend: negative$"):
        load_spend(duckdb.connect(), tmp_path / "bad.parquet", mapping=ChannelMapping())
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(IngestError, match=r"^broken.parquet: not a readable Parquet file"):
        load_spend(duckdb.connect(), tmp_path / "broken.parquet", mapping=ChannelMapping())


def test_an_empty_spend_file_or_one_of_a_header_only_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "spend.csv"
    empty.write_text("")
    with pytest.raises(IngestError, match=r"^spend.csv: empty; expected columns date, channel, spend"):
        load_spend(duckdb.connect(), empty, mapping=ChannelMapping())
    header = write_lines(tmp_path / "header.csv", ["date,channel,spend"])
    with pytest.raises(IngestError, match=r"^header.csv: no rows under its header"):
        load_spend(duckdb.connect(), header, mapping=ChannelMapping())


def _workbook(path: Path) -> Path:
    """A file shaped as an .xlsx is (a zip of XML parts), whatever its name."""
    import zipfile

    with zipfile.ZipFile(path, "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/worksheets/sheet1.xml", "<worksheet><sheetData/></worksheet>")
    return path


@pytest.mark.parametrize("name", ["spend.xlsx", "spend.csv"])  # by its name, or by its bytes under a CSV's name
def test_a_spreadsheet_workbook_for_a_spend_file_is_named_as_one(tmp_path: Path, name: str) -> None:
    with pytest.raises(IngestError, match=rf"^{name}: a spreadsheet workbook, not a CSV or Parquet file; save the "
                                          r"sheet as CSV \(in Excel: File > Save As > CSV UTF-8\)$"):
        load_spend(duckdb.connect(), _workbook(tmp_path / name), mapping=ChannelMapping())


def test_a_spend_channel_not_in_the_config_names_the_configured_ones(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spend.csv", ["date,channel,spend", "2026-03-01,TikTok,3"])
    with pytest.raises(IngestError) as raised:
        load_spend(duckdb.connect(), path, mapping=ChannelMapping())
    paid = ", ".join(ChannelMapping().paid_channels)
    assert str(raised.value) == ("spend.csv: line 2: channel: not a paid channel in the config (paid channels: "
                                 f"{paid}; a channel of another name needs its entry in [channels] paid_channels and a "
                                 "[[channels.rules]] that finds its sessions, in flashcast.toml)")


def test_a_small_share_of_users_is_not_written_as_none() -> None:
    from flashcast.report import format_share

    assert [format_share(s) for s in (0.0, 0.001, 0.0049, 0.005, 0.26)] == ["0%", "<1%", "<1%", "<1%", "26%"]


def test_the_report_says_which_funded_channels_no_platform_buys() -> None:
    from flashcast.budget.records import AllocationRow
    from flashcast.report import _pushed_lines

    def row(channel: str, spend: float) -> AllocationRow:
        return AllocationRow(channel, 10.0, 280.0, 3.0, 93.3, 0.1, spend, spend, 0.25, spend - 10.0, 0.0, 100.0,
                             None, "")

    rows = (row("Paid Search", 50.0), row("Display", 20.0), row("Meta", 30.0), row("CTV", 0.0))
    assert _pushed_lines(rows, {"Display": "display", "CTV": "ctv"}) == [
        "Pushed by `flashcast push` to: display (Display), ctv (CTV). Paid Search and Meta are in the plan only: "
        "no `[[delivery.platforms]]` entry buys them.", ""]
    assert _pushed_lines(rows, {}) == [
        "Paid Search, Display and Meta are in the plan only: no `[[delivery.platforms]]` entry buys them.", ""]
    assert _pushed_lines(rows, None) == []
