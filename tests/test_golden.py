"""A run's outputs are byte for byte what the committed golden copy says, apart from ids and times.

Any change to what a user sees shows up here. When the change is intended, regenerate the copy with
`FLASHCAST_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and say so in CHANGES.md.
"""

from __future__ import annotations

import difflib
import os

from conftest import FinishedRun
from golden_outputs import normalized_outputs, read_golden, write_golden


def test_outputs_match_the_golden_copy(finished_run: FinishedRun) -> None:
    actual = normalized_outputs(finished_run.out, roots=[str(finished_run.config.parent)])
    if os.environ.get("FLASHCAST_UPDATE_GOLDEN") == "1":
        write_golden(actual)
    expected = read_golden()
    assert sorted(actual) == sorted(expected), "the run writes a different set of files"
    for name in sorted(expected):
        if actual[name] != expected[name]:
            diff = "\n".join(list(difflib.unified_diff(expected[name].splitlines(), actual[name].splitlines(),
                                                       "golden/" + name, "run/" + name, lineterm=""))[:40])
            raise AssertionError(f"{name} differs from the golden copy:\n{diff}")
