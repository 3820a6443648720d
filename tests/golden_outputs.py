"""Normalize a run's output folder for comparison with the committed golden copy.

What legitimately differs between two runs on the same export and key is removed: the run's
lineage id, timestamps, the lineage log's position and hashes (they chain over timestamps), the
folder the run happened in and the measured time per fit. Everything else must match byte for
byte; PNGs are compared by their SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
_HEAD = re.compile(r'("seq"|"entry_hash")\s*:\s*("[0-9a-f]{64}"|\d+)')


def normalize_text(name: str, text: str, *, lineage_id: str, roots: list[str]) -> str:
    text = text.replace(lineage_id, "<lineage_id>")
    for root in roots:
        text = text.replace(root, "<root>")
    text = _TIMESTAMP.sub("<timestamp>", text)
    text = _HEAD.sub(r"\1: <head>", text)
    if name.endswith(".csv"):
        text = _blank_column(text, "seconds_per_fit")
    if name == "report.md":
        # the leaderboard's last column (milliseconds per fit) follows its 95% coverage
        text = re.sub(r"(\d+% \| )[\d,]+\.\d+ \|$", r"\1<ms> |", text, flags=re.MULTILINE)
    return text


def _blank_column(text: str, column: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or column not in rows[0]:
        return text
    i = rows[0].index(column)
    for row in rows[1:]:
        row[i] = "<seconds>"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def normalized_outputs(out: Path, *, roots: list[str]) -> dict[str, str]:
    """File name -> normalized text (or `sha256:<hex>` for binary files)."""
    lineage_id = json.loads((out / "run_summary.json").read_text())["lineage_id"]
    result = {}
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".png":
            result[path.name] = "sha256:" + hashlib.sha256(data).hexdigest()
        else:
            result[path.name] = normalize_text(path.name, data.decode("utf-8"), lineage_id=lineage_id, roots=roots)
    return result


def write_golden(outputs: dict[str, str]) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for old in GOLDEN.iterdir():
        old.unlink()
    for name, text in outputs.items():
        target = GOLDEN / (name + ".sha256" if text.startswith("sha256:") else name)
        target.write_text(text, encoding="utf-8")


def read_golden() -> dict[str, str]:
    return {(p.name.removesuffix(".sha256")): p.read_text(encoding="utf-8") for p in sorted(GOLDEN.iterdir())}
