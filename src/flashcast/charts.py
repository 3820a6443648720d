"""One way to make a chart file: a matplotlib Figure drawn by the Agg canvas without pyplot (so the
caller's backend, say a notebook's inline one, is left alone and no global figure is kept), no
timestamp in the PNG (the same data gives the same bytes).

Names in any script: matplotlib falls back glyph by glyph along `font.family`, so text is drawn in
DejaVu Sans as before and a Chinese, Japanese or Korean character comes from an installed CJK font
(Debian's fonts-noto-cjk, say). Without one, such characters come out as boxes and the chart's
warning says what to install."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Families that cover CJK names, preferred first.
CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Source Han Sans", "Source Han Sans SC", "WenQuanYi Zen Hei",
                "WenQuanYi Micro Hei", "IPAexGothic", "IPAGothic", "NanumGothic", "Droid Sans Fallback")
_CJK_FILE = re.compile(r"cjk|wqy|wenquanyi|ipaex|ipag|nanum|sourcehansans|droidsansfallback", re.IGNORECASE)


@functools.cache
def fallback_families() -> tuple[str, ...]:
    """The installed CJK families, found once per process. Fonts installed after matplotlib built its
    font cache are not in it: those whose file names say CJK are registered from the system's folders."""
    from matplotlib import font_manager

    def known() -> set[str]:
        return {font.name for font in font_manager.fontManager.ttflist}

    if not known().intersection(CJK_FAMILIES):
        for path in font_manager.findSystemFonts():
            if _CJK_FILE.search(Path(path).name):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file matplotlib cannot read is skipped
                    continue
    installed = known()
    return tuple(family for family in CJK_FAMILIES if family in installed)


@contextmanager
def chart(path: Path, *, figsize: tuple[float, float], dpi: int, rows: int = 1, cols: int = 1) -> Iterator[Any]:
    """Yield a (figure, axes) pair; on exit lay it out and save it to `path` as PNG. Axes are a grid
    (rows x cols) when either is above one, else a single Axes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families = ["DejaVu Sans", *fallback_families()]
    with matplotlib.rc_context({"font.family": families}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = rows > 1 or cols > 1
        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=not grid)
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})
    missing = [w for w in caught if "missing from font" in str(w.message)]
    for other in caught:
        if other not in missing:
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if missing:
        warnings.warn(f"{path.name}: no installed font covers some of its characters (drawn as boxes); install a "
                      "CJK font such as Debian's fonts-noto-cjk", UserWarning, stacklevel=3)
