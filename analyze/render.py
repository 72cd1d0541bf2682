"""Render independent figures in worker processes.

A figure job is a module-level plotting function (from :mod:`analyze.figures` or
:mod:`analyze.heatmap`) with its arguments; every such function takes ``stem=`` and ``formats=``,
writes ``stem.<fmt>`` and returns the written paths. The figures of an analysis do not depend on
each other, so :class:`FigureRenderer` draws them in ``workers`` processes while the caller goes on
(e.g. computing the statistics the next figures need), and collects the results in submission
order. Each file is drawn by exactly the same code whichever process draws it, so the output does
not depend on ``workers`` (tested byte for byte).

Workers are started by :mod:`analyze.processes` (a ``forkserver`` that imports the plotting modules
once; they never fork the caller, nor re-run its main script). Starting them takes about a second
(the forkserver imports matplotlib before it forks a worker), so jobs are handed to the pool by one
background thread: :meth:`FigureRenderer.submit` returns at once and the caller computes while the
workers come up. ``workers=1`` draws every figure in the calling process, in order, when it is
collected (no processes at all).

Given ``reuse`` (a re-plot), a job whose file already holds what it would draw is not drawn again:
each job's key (:func:`analyze.fingerprint.figure_key`: drawing code, library versions, the
content of its arguments) is asked of ``reuse(key, file name)``, which returns the existing file
when it was recorded with that key and is unchanged; only the missing formats are drawn, and the
worker processes start only when something is to be drawn.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .processes import caller_identity, context, main_hidden, watch_caller

__all__ = [
    "FigureJob",
    "FigureRenderer",
    "RenderResult",
    "Reuse",
    "available_cores",
    "figure_workers",
    "job_key",
    "prestart_workers",
]

# what a worker imports before its first job (in the forkserver: once for all workers)
_PRELOAD = [
    "attncmp.analyze.figures",
    "attncmp.analyze.heatmap",
    "attncmp.analyze.textview",
    "attncmp.analyze.groups",  # imported by the heatmap on first use
    "numpy.random",  # the jitter of the paired panels
    "attncmp.analyze.figure_warmup",  # draws one figure in the server: workers inherit the caches
]


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class FigureJob:
    """One figure: ``fn(*args, stem=stem, formats=formats, **kwargs)`` -> written paths (or None
    when the function decides there is nothing to draw); ``stem_arg`` names the stem's keyword
    (``path`` for :func:`analyze.heatmap.plot_heatmap`). ``fn`` may be named as
    ``"module:function"``, so that only the process that draws imports it (and matplotlib)."""

    name: str
    fn: Callable[..., Any] | str
    stem: Path
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    stem_arg: str = "stem"


@dataclass
class RenderResult:
    """What one job produced: the paths of its files (drawn now or ``reused``), or the one-line
    reason it failed; ``key``: its fingerprint (None when its arguments cannot be hashed)."""

    name: str
    paths: list[Path] | None
    error: str | None = None
    key: str | None = None
    reused: list[Path] = field(default_factory=list)


# reuse(key, file name) -> the existing file holding exactly that figure, or None
Reuse = Callable[[str, str], "Path | None"]


def job_key(job: FigureJob) -> str | None:
    """:func:`analyze.fingerprint.figure_key` of ``job`` (None: an argument cannot be hashed)."""
    from .fingerprint import figure_key

    try:
        return figure_key(job.fn, job.stem, job.args, job.kwargs)
    except Exception:  # noqa: BLE001 - no key (e.g. an argument of another type, a TypeError)
        return None  # only means that the figure is drawn, never kept


def _run_job(job: FigureJob, formats: tuple[str, ...]) -> RenderResult:
    """Draw one job; an exception becomes ``RenderResult.error`` (a figure that fails must not
    stop the others, nor the report)."""
    try:
        fn = job.fn
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        kw = {**job.kwargs, job.stem_arg: job.stem, "formats": formats}
        paths = fn(*job.args, **kw)
    except Exception as e:  # noqa: BLE001 - reported as "figure X skipped: ..." by the caller
        return RenderResult(job.name, None, f"{type(e).__name__}: {' '.join(str(e).split())}")
    return RenderResult(job.name, [Path(p) for p in paths] if paths else None)


def figure_workers(workers: int | None) -> int:
    """Processes drawing figures for ``workers``: ``None`` or 0 -> the available cores (as the
    engine's ``--jobs``), else at least 1."""
    return available_cores() if not workers else max(1, int(workers))


def prestart_workers(workers: int | None = None) -> None:
    """Start the figure workers' forkserver now, in the background (it returns at once): by the
    time the caller has read its inputs and computed what the first figures need, the server
    has imported matplotlib and forks ready workers. Nothing happens for one worker, where
    there is no forkserver, or when one already runs (it keeps its preloads)."""
    if figure_workers(workers) <= 1:
        return
    if context(_PRELOAD).get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _warm() -> None:
    for m in _PRELOAD:
        importlib.import_module(m)


def _init_worker(caller: tuple[int, str | None]) -> None:
    """A figure worker's initializer: exit with the caller (processes.watch_caller)."""
    watch_caller(*caller)
    _warm()


@dataclass
class _Pending:
    job: FigureJob
    formats: tuple[str, ...]  # those to draw (the others are reused)
    future: Future | None
    key: str | None
    reused: list[Path]

    def outcome(self) -> RenderResult:
        """The job's result (``future``: the feeder thread's future of the pool's future)."""
        fut = self.future.result()
        return fut.result()


class FigureRenderer:
    """Submit figure jobs as their inputs become ready; :meth:`results` waits for all of them.

    Use as a context manager (the worker processes end with it)::

        with FigureRenderer(formats=("png",), workers=2) as r:
            r.submit(FigureJob("strata", plot_strata, d / "strata", (frame,)))
            ...
            for res in r.results(): ...
    """

    def __init__(
        self,
        *,
        formats: Sequence[str],
        workers: int | None = None,
        keys: bool = True,
        reuse: Reuse | None = None,
    ) -> None:
        self.formats = tuple(formats)
        self.workers = figure_workers(workers)
        self.keys = keys or reuse is not None
        self.reuse = reuse
        self._pool: ProcessPoolExecutor | None = None
        # hands jobs to the pool in submission order without making the caller wait for workers
        self._feeder: ThreadPoolExecutor | None = None
        self._pending: list[_Pending] = []

    def __enter__(self) -> FigureRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context(_PRELOAD),
                initializer=_init_worker,
                initargs=(caller_identity(),),
            )
        return self._pool

    def _feed(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the feeder thread (one thread: submissions keep their order)."""
        if self._feeder is None:
            self._feeder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attncmp-figures")
        return self._feeder.submit(fn, *args)

    def _warm_pool(self) -> None:
        pool = self._executor()
        with main_hidden():
            for _ in range(self.workers):  # one no-op each, so every worker comes up now
                pool.submit(_warm)

    def _to_pool(self, job: FigureJob, formats: tuple[str, ...]) -> Future:
        with main_hidden():  # a submit may start a worker (processes module)
            return self._executor().submit(_run_job, job, formats)

    def start(self) -> None:
        """Start the worker processes now, in the background (they import matplotlib while the
        caller works); with ``reuse`` they start on the first job that is to be drawn."""
        if self.workers > 1 and self.reuse is None:
            self._feed(self._warm_pool)

    def submit(self, job: FigureJob) -> None:
        key = job_key(job) if self.keys else None
        fmts, reused = self.formats, []
        if key is not None and self.reuse is not None:
            have = {f: self.reuse(key, f"{job.stem.name}.{f}") for f in self.formats}
            reused = [p for p in have.values() if p is not None]
            fmts = tuple(f for f, p in have.items() if p is None)
        fut = None
        if fmts and self.workers > 1:
            fut = self._feed(self._to_pool, job, fmts)
        self._pending.append(_Pending(job, fmts, fut, key, reused))

    def results(self) -> list[RenderResult]:
        """Every submitted job's result, in submission order (drawn here when ``workers=1``)."""
        out = []
        for p in self._pending:
            if not p.formats:
                res = RenderResult(p.job.name, None)
            elif p.future is None:
                res = _run_job(p.job, p.formats)
            else:
                try:
                    res = p.outcome()
                except Exception as e:  # noqa: BLE001 - a worker died (e.g. out of memory)
                    res = RenderResult(p.job.name, None, f"{type(e).__name__}: {e}")
            res.key, res.reused = p.key, list(p.reused)
            if p.reused and not res.error:
                order = {f: i for i, f in enumerate(self.formats)}
                both = [*p.reused, *(res.paths or [])]
                res.paths = sorted(both, key=lambda q: order.get(q.suffix.lstrip("."), 99))
            out.append(res)
        self._pending = []
        return out

    def close(self) -> None:
        if self._feeder is not None:  # every job handed over (or cancelled) before the pool ends
            self._feeder.shutdown(wait=True, cancel_futures=True)
            self._feeder = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
