"""Every CLI command has help text and appears in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flashcast.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS = [["simulate"], ["run"], ["ingest"], ["prune"], ["demo"], ["runs"], ["forecast"], ["keys", "pii"],
            ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["serve"], ["push"], ["deliveries"],
            ["rebalance"], ["dsp-standin"], ["creatives", "list"], ["creatives", "approve"], ["creatives", "reject"],
            ["lineage", "verify"], ["lineage", "show"], ["privacy", "scan"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_command_has_help_and_is_documented(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output) > 100
    assert ("make demo" if command == ["demo"] else f"flashcast {' '.join(command)}") in README


def test_the_readme_names_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
