"""The one config model: the example file loads, and bad settings name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashcast.config import Settings, load_settings
from flashcast.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_config_loads_and_matches_the_defaults() -> None:
    example = load_settings(ROOT / "flashcast.toml")
    defaults = Settings(property_timezone="America/New_York")
    assert example.channels == defaults.channels
    assert example.policy == defaults.policy
    assert example.guardrails == defaults.guardrails
    assert example.allocation == defaults.allocation
    assert example.forecast == defaults.forecast
    assert example.segments == defaults.segments
    assert example.llm == defaults.llm
    assert example.brand == defaults.brand and example.ingest == defaults.ingest
    assert example.lineage == defaults.lineage and example.currency == defaults.currency


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[policy]\nconsent_null_means = "maybe"', "policy.consent_null_means"),
        ('[policy]\nidentifier_fields = ["email"]', "policy.identifier_fields"),
        ('[[channels.rules]]\nchannel = "TV"', "channels"),
        ('[[channels.rules]]\nchannel = "PPC"\nmedium = "(unclosed"', "channels.rules.0.medium"),
        ('property_timezone = "Mars/Olympus"', "property_timezone"),
        ("[guardrails]\nmin_share = { PPC = 1.5 }", "guardrails.min_share"),
        ("[store]\nunknown = 1", "store.unknown"),
        ('[lineage]\ntransport = "http"', "lineage"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "flashcast.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('curency = "USD"', "curency: not a setting here (did you mean 'currency'?)"),
        ("[forecast]\nhorizon_days = 7", "forecast.horizon_days: not a setting here (did you mean 'horizon'?)"),
        ('[[delivery.platforms]]\nname = "display"\nkind = "display"\nchannels = ["Display"]\nendpont = "x"',
         "delivery.platforms.0.endpont: not a setting here (did you mean 'endpoint'?)"),
        ("[store]\nzzz = 1", "store.zzz: not a setting here (the settings here: home, warehouse,"),
        ('[store]\nmemory_limit = "lots"', "store.memory_limit: should be a size such as 4GB"),
        ('currency = "usd"', "currency: should be an ISO 4217 code in capitals"),
        # a setting of another section, or of the top of the file, is told its place
        ('[delivery]\nmode = "sandbox"', "delivery.mode: not a setting here; mode goes at the top of the file, "
                                         "before any [section]"),
        ("[forecast]\nmax_daily_change = 0.1", "forecast.max_daily_change: not a setting here; max_daily_change "
                                               "goes in [guardrails]"),
        ("horizon = 7", "horizon: not a setting here; horizon goes in [forecast]"),
    ],
)
def test_a_mistyped_setting_is_told_what_was_meant(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "flashcast.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert message in str(raised.value)
    assert "pattern" not in str(raised.value)  # a regex says nothing to a user


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_settings(tmp_path)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[email]\nsubject = "Résumé"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text \(byte 21\); save it as UTF-8$"):
        load_settings(latin1)


def test_a_config_saved_by_notepad_with_a_byte_order_mark_and_crlf_is_read(tmp_path: Path) -> None:
    path = tmp_path / "flashcast.toml"
    path.write_bytes(b"\xef\xbb\xbf[forecast]\r\nhorizon = 7\r\n")
    assert load_settings(path).forecast.horizon == 7


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[guardrails]\nmin_share = {PPC = 0.5}\nmax_share = {PPC = 0.4}",
         r"min_share is above max_share for \['PPC'\]"),
        ("[guardrails]\nmin_share = {PPC = 0.5, CTV = 0.6}", "min_share adds to 110%"),
        ("[guardrails]\ntotal_budget = 0", "total_budget: Input should be greater than 0"),
        ("[guardrails]\nmax_share = {PPC = 0.2, CTV = 0.2, Display = 0.2, Email = 0.2}", "adds to 80%"),
        ("[guardrails]\ncaps = {Facebook = 100}", r"not paid channels: \['Facebook'\]"),
    ],
)
def test_guardrail_mistakes_are_refused_when_the_config_is_read(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "flashcast.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


RENAMED = """[channels]
paid_channels = ["Google Ads", "Meta", "CTV"]
[[channels.rules]]
channel = "Google Ads"
medium = "^cpc$"
"""


def test_renamed_paid_channels_get_the_default_guardrails_and_platforms_of_their_own(tmp_path: Path) -> None:
    # Until 2026-11-29 this config was refused for naming PPC: in the default shares and platforms.
    path = tmp_path / "flashcast.toml"
    path.write_text(RENAMED)
    settings = load_settings(path)
    assert settings.guardrails.min_share == {"Google Ads": 0.02, "Meta": 0.02, "CTV": 0.02}
    assert settings.guardrails.max_share == {"Google Ads": 0.6, "Meta": 0.6, "CTV": 0.6}
    assert [(p.name, p.channels) for p in settings.delivery.platforms] == [("ctv", ("CTV",))]
    # given shares and platforms are the user's own, checked as ever
    path.write_text(RENAMED + "[guardrails]\nmax_share = { Meta = 0.5 }\n")
    assert load_settings(path).guardrails.max_share == {"Meta": 0.5}
    path.write_text(RENAMED + "[guardrails]\ncaps = { PPC = 100 }\n")
    with pytest.raises(ConfigError, match=r"not paid channels: \['PPC'\]"):
        load_settings(path)
    path.write_text(RENAMED + '[[delivery.platforms]]\nname = "search"\nkind = "search"\nchannels = ["PPC"]\n')
    with pytest.raises(ConfigError, match=r"delivery.platforms buy channels that are not paid channels: \['PPC'\]"):
        load_settings(path)
    # renamed channels without rules of their own: the default rules cannot find their sessions
    path.write_text('[channels]\npaid_channels = ["Google Ads"]\n')
    with pytest.raises(ConfigError, match=r"\(the default rules, as none are given: write \[\[channels.rules\]\]"):
        load_settings(path)
    # one paid channel takes the whole budget; with sixty no channel has a floor
    path.write_text('[channels]\npaid_channels = ["Search"]\nrules = []\n')
    assert load_settings(path).guardrails.max_share == {"Search": 1.0}
    many = [f"C{i}" for i in range(60)]
    path.write_text(f"[channels]\npaid_channels = {many}\nrules = []\n")
    assert set(load_settings(path).guardrails.min_share.values()) == {0.0}


def _field_paths(model: type, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    paths = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths |= _field_paths(kind, f"{prefix}{name}.")
        else:
            paths.add(prefix + name)
    return paths


def test_the_annotated_example_names_every_setting() -> None:
    import re

    section, named = "", set()
    for line in (ROOT / "flashcast.toml").read_text().splitlines():
        header = re.match(r"^#?\s*\[\[?([a-z_.]+)\]\]?", line)
        if header:
            named.add(header.group(1))  # [[channels.rules]] shows channels.rules
            section = header.group(1) + "."
            continue
        key = re.match(r"^#?\s*([a-z_]+)\s*=", line)
        if key:
            named.add(section + key.group(1) if section else key.group(1))
    missing = _field_paths(Settings) - named
    assert not missing, f"flashcast.toml does not show {sorted(missing)}"
