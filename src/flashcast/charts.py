"""One way to make a chart file: a matplotlib Figure drawn by the Agg canvas without pyplot (so the
caller's backend, say a notebook's inline one, is left alone and no global figure is kept), no
timestamp in the PNG (the same data gives the same bytes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def chart(path: Path, *, figsize: tuple[float, float], dpi: int, rows: int = 1, cols: int = 1) -> Iterator[Any]:
    """Yield a (figure, axes) pair; on exit lay it out and save it to `path` as PNG. Axes are a grid
    (rows x cols) when either is above one, else a single Axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = rows > 1 or cols > 1
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=not grid)
    yield fig, axes
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
