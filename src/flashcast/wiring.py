"""Calling a function with values chosen by its parameter names (as Hamilton wires its nodes).

A stage declares what it needs by naming it: `def run(con, *, kpis, settings)` gets the run's
connection, the `kpis` stage's record and the settings. The pipeline checks the wiring of every
stage when it is imported, so a misspelt or missing input fails at once, not mid-run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any


def parameters(fn: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def missing_inputs(fn: Callable[..., Any], available: Collection[str]) -> list[str]:
    """The parameters of `fn` that no available value would fill."""
    return [name for name in parameters(fn) if name not in available]


def call(fn: Callable[..., Any], values: Mapping[str, Any]) -> Any:
    """`fn` called with the values its parameters name."""
    return fn(**{name: values[name] for name in parameters(fn)})
