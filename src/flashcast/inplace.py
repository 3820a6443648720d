"""Files and folders written so that a process killed midway leaves the previous ones whole."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from flashcast.errors import ConfigError

_PARTIAL = ".partial-"  # + the writing process's id


@contextmanager
def files_in_place(out: Path) -> Iterator[Path]:
    """A private folder inside `out` for a command (`flashcast forecast`, `flashcast allocate`,
    `flashcast simulate`) to write its files into. When the block ends they replace their namesakes
    in `out`, each by one rename (a folder by an exchange with its namesake), so a command killed
    while writing (charts take a while) leaves the previous files whole, not some new and some old.
    `out` may hold the user's other files: only the command's own are replaced. A folder left by a
    killed command is removed by the next one."""
    from flashcast.store import remove_orphans

    out.mkdir(parents=True, exist_ok=True)
    remove_orphans(out, _PARTIAL)
    staging = out / f"{_PARTIAL}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            _replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # with the folders the new ones took the place of


def _replace(new: Path, target: Path) -> None:
    if not (new.is_dir() and target.is_dir()):
        os.replace(new, target)
    elif not exchange(new, target):  # where the system cannot swap: the old folder steps aside first
        target.rename(new.with_name(new.name + ".old"))
        new.rename(target)


def write_whole(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """`path` holds `data` or what it held before, never part of it: written aside (created with
    `mode`, less the umask, from its first byte), flushed to disk, then renamed over `path`."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def moved(files: Mapping[str, Path], out: Path) -> dict[str, Path]:
    """`files` written in `files_in_place`'s folder, as the paths they have in `out`."""
    return {name: out / path.name for name, path in files.items()}


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return int(renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), rename_exchange)) == 0


def make_folder(path: Path, setting: str) -> None:
    """Create a state folder a setting names, or say in one line which setting to change."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{setting}: {path} cannot be made ({exc.strerror or exc}); give a folder this user "
                          "can write") from exc
