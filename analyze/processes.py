"""How the analysis starts its worker processes (metric chunks, figures).

Workers come from a ``forkserver`` (``spawn`` where there is none): they never fork the caller,
whose polars thread pool and open HDF5 files would not survive a fork. Such a worker normally
re-runs the caller's main script before its first task (multiprocessing's "safe importing of the
main module" rule), so a plain script that calls :func:`analyze.pipeline.run_analysis` at top
level, as the README's example does, would start the analysis again in every worker and fail.
Our workers run only functions of this package and need nothing from ``__main__``:
:func:`main_hidden` hides the main module's file and spec while workers start, so they do not
import it; scripts need no ``if __name__ == "__main__":`` guard.

A caller killed outright (SIGKILL, the out-of-memory killer) cannot shut its pool down, and a
``ProcessPoolExecutor`` worker waits for its next task forever (it holds both ends of its task
queue), keeping the forkserver alive too; the engine's workers would even compute every chunk
already queued. So every worker runs :func:`watch_caller` from its initializer: it exits within
about half a second once the calling process is gone, and the forkserver follows.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence

__all__ = [
    "caller_alive",
    "caller_identity",
    "context",
    "main_hidden",
    "process_start",
    "watch_caller",
]

_STOP_REGISTERED = False


def _stop_forkserver() -> None:
    """End the forkserver at exit and wait for it, so it does not outlive this process (and its
    CPU time, with that of the workers it reaped, is accounted to this process)."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:
        with contextlib.suppress(OSError):
            stop()


def context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """The ``forkserver`` context (preloading ``preload`` once for all workers), else ``spawn``."""
    global _STOP_REGISTERED
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    if not _STOP_REGISTERED:
        atexit.register(_stop_forkserver)
        _STOP_REGISTERED = True
    return ctx


@contextlib.contextmanager
def main_hidden() -> Iterator[None]:
    """While worker processes start (``ProcessPoolExecutor.submit`` starts them), the main
    module shows neither ``__file__`` nor ``__spec__``: multiprocessing then sends no main module
    to import, and a worker does not re-run the caller's script."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    attrs = vars(main)
    saved = {k: attrs[k] for k in ("__file__", "__spec__") if k in attrs}
    attrs.pop("__file__", None)
    attrs["__spec__"] = None
    try:
        yield
    finally:
        for k in ("__file__", "__spec__"):
            attrs.pop(k, None)
        attrs.update(saved)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after ``pid (comm)`` (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()  # comm may hold spaces and parentheses


def _start_field(fields: list[str] | None) -> str | None:
    return fields[19] if fields is not None and len(fields) > 19 else None  # field 22 of stat


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of ``/proc/PID/stat``, clock ticks since
    boot): with the pid it names one process for good, even after the pid is reused. None where
    there is no ``/proc`` or the process is gone."""
    return _start_field(_stat_fields(pid))


def caller_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` still runs: it exists, is not a zombie (killed, not yet reaped)
    and, given its ``start`` (:func:`process_start`), is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return not os.path.isdir("/proc")  # no /proc (macOS): existence is all we can tell
    if fields and fields[0] in ("Z", "X"):
        return False
    return start is None or _start_field(fields) == start


def caller_identity() -> tuple[int, str | None]:
    """``(pid, start)`` of this process, for :func:`watch_caller` in its workers."""
    pid = os.getpid()
    return pid, process_start(pid)


def watch_caller(pid: int, start: str | None = None, interval: float = 0.5) -> threading.Thread:
    """In a worker process: a daemon thread that ends this process (``os._exit``) as soon as
    the calling process ``pid`` (started at ``start``) is gone. Called by the pools'
    initializers with :func:`caller_identity` of the caller."""

    def run() -> None:
        while True:
            time.sleep(interval)
            if not caller_alive(pid, start):
                os._exit(1)  # nothing of ours to flush: results go only to the dead caller

    t = threading.Thread(target=run, name="attncmp-watch-caller", daemon=True)
    t.start()
    return t
