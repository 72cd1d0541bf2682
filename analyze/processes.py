"""How the analysis starts its worker processes (metric chunks, figures).

Workers come from a ``forkserver`` (``spawn`` where there is none): they never fork the caller,
whose polars thread pool and open HDF5 files would not survive a fork. Such a worker normally
re-runs the caller's main script before its first task (multiprocessing's "safe importing of the
main module" rule), so a plain script that calls :func:`analyze.pipeline.run_analysis` at top
level, as the README's example does, would start the analysis again in every worker and fail.
Our workers run only functions of this package and need nothing from ``__main__``:
:func:`main_hidden` hides the main module's file and spec while workers start, so they do not
import it; scripts need no ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import sys
from collections.abc import Iterator, Sequence

__all__ = ["context", "main_hidden"]

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
