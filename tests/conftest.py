"""Shared fixtures: a small simulated export (both formats), settings in a temp store, a test key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pytest

from flashcast.config import Settings, StoreConfig
from flashcast.keys import PiiKey
from flashcast.simulate import SimulationResult, SimulationSpec, simulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_GA4 = SHARED / "data" / "ga4" / "ga4_obfuscated_sample_ecommerce_jan2021.ndjson"
TEST_KEY = "flashcast-test-key-0123456789abcdef"
SMALL_SPEC = SimulationSpec(days=45, users=600, seed=11, end_date=date(2026, 3, 31))


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return simulate(SMALL_SPEC, tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="session")
def small_truth(small_sim: SimulationResult) -> dict:
    return json.loads(small_sim.truth_file.read_text())


@pytest.fixture
def pii_key(monkeypatch: pytest.MonkeyPatch) -> PiiKey:
    monkeypatch.setenv("FLASHCAST_PII_KEY", TEST_KEY)
    return PiiKey(TEST_KEY.encode())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(property_timezone="America/New_York", store=StoreConfig(home=tmp_path / "home"))


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def ga4_row(**overrides: object) -> dict:
    """A minimal valid GA4 export row (INT64 as strings, as BigQuery writes them)."""
    row: dict = {
        "event_date": "20260301",
        "event_timestamp": "1772370000000000",
        "event_name": "page_view",
        "event_params": [
            {"key": "ga_session_id", "value": {"string_value": None, "int_value": "1772370000",
                                               "float_value": None, "double_value": None}},
            {"key": "page_location", "value": {"string_value": "https://shop.example.com/", "int_value": None,
                                               "float_value": None, "double_value": None}},
        ],
        "user_pseudo_id": "123.456",
        "stream_id": "1",
        "privacy_info": {"analytics_storage": "Yes", "ads_storage": "Yes"},
        "ecommerce": None,
    }
    row.update(overrides)
    return row
