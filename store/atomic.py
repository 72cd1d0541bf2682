"""Atomic file outputs and free-space checks, shared by every layer (stdlib only).

An output is written to a temporary name in its final directory and renamed into place only when
complete (after an ``fsync``), so a failed or killed run leaves the previous file whole and never a
half-written file under the final name. Temporary names look like ``.NAME.tmp-PID-XXXXXX.EXT``
(the extension is kept so that writers which infer the format from it, e.g. matplotlib, work);
:func:`clean_leftovers` removes those of processes that no longer run.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "commit_file",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_leftovers",
    "free_bytes",
    "is_disk_full",
    "temp_name",
]

_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{6}(?P<ext>\.[^.]*)?$")


def temp_name(path: str | os.PathLike) -> Path:
    """A fresh temporary path beside ``path`` (same directory, same extension, hidden)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without fsync on read-only fds
        pass
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":
        _fsync_path(path)


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush ``tmp`` to disk and rename it to ``path`` (atomic on POSIX and Windows)."""
    tmp, path = Path(tmp), Path(path)
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path``.

    On any exception (or a kill) the temporary file is removed (or left for
    :func:`clean_leftovers`) and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: nothing was written to the temporary file {tmp}")
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose content appears under ``path`` only once complete."""
    if not mode.startswith("w"):
        raise ValueError(f"`mode` must be a write mode ('w', 'wb'), got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kw) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM), or no way to tell: keep its files
        return True
    return True


def _stale_lock(p: Path) -> bool:
    """A writer's lock file (``.NAME.lock``) whose store is gone and that no process holds.

    Checking closes a descriptor of the lock file, which drops a lock *this* process holds on it
    (POSIX): call :func:`clean_leftovers` before taking a lock in the same directory."""
    if not (p.name.startswith(".") and p.name.endswith(".lock")):
        return False
    if p.with_name(p.name[1 : -len(".lock")]).exists():
        return False
    try:
        import fcntl

        fd = os.open(p, os.O_RDWR)
    except (ImportError, OSError):
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def clean_leftovers(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`temp_name` in ``directory`` whose process is gone
    (left by a killed run), and lock files of stores that no longer exist; returns what was
    removed."""
    d = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.match(p.name)
        if m is None:
            if _stale_lock(p):
                p.unlink(missing_ok=True)
                removed.append(p)
            continue
        if _alive(int(m.group("pid"))):
            continue
        try:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes available to this user on the file system holding ``path`` (a file or directory);
    None when it cannot be told."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``OSError`` meaning the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
