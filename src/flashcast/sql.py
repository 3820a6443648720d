"""Quoting for the few SQL texts that cannot take bound parameters (file paths in table functions,
JSON structures, identifiers). Everything else is passed as a parameter."""

from __future__ import annotations

from pathlib import Path


def literal(value: str | Path) -> str:
    """A SQL string literal: 'it''s'."""
    return "'" + str(value).replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier, inner double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
