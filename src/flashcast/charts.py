"""One way to make a chart file: matplotlib without a display, no timestamp in the PNG (so the same
data gives the same bytes), the figure closed even when drawing fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def chart(path: Path, *, figsize: tuple[float, float], dpi: int, rows: int = 1, cols: int = 1) -> Iterator[Any]:
    """Yield a (figure, axes) pair; on exit lay it out and save it to `path` as PNG. Axes are a grid
    (rows x cols) when either is above one, else a single Axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = rows > 1 or cols > 1
    fig, axes = plt.subplots(rows, cols, figsize=figsize, dpi=dpi, squeeze=not grid)
    try:
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})
    finally:
        plt.close(fig)
