"""The extraction engine: run >= 2 model variants over identical batches and write a store.

``run_extraction(ExtractConfig(...))`` is what ``attncmp extract`` calls; ``attncmp demo`` and
``attncmp compare`` call it the same way::

    from attncmp.extract.engine import ExtractConfig, run_extraction
    result = run_extraction(ExtractConfig(models=[("full", "a.pt"), ("no_middle", "b.pt")],
                                          adapter="reference", out="attention_store.h5"))
    print(result.summary())

Per batch: the adapter builds one batch (moved to the device once), every variant runs its forward
pass on it under ``torch.inference_mode()``; each site's valid region ``[:n_query, :n_key]`` of
every sample is gathered on the device into one flat buffer (a mask select on CPU, a computed index
gather on accelerators, so nothing waits for the device), sanity statistics are reduced on the
device, and one non-blocking device-to-host copy per site (into pinned memory on CUDA) hands the
result to a background thread that checks it, compresses and commits it to the HDF5 store while the
next batch runs. A bounded queue (``queue_size`` batches) limits memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attncmp.store import (
    FlatBatch,
    ModelSpec,
    SiteSpec,
    StoreError,
    StoreSpec,
    StoreWriter,
    shard_ids,
)
from attncmp.store.errors import one_line
from attncmp.store.schema import ATTENTION_DTYPES, row_sum_tolerance, tool_version

from .adapter import (
    ForwardOutput,
    SampleInfo,
    adapter_source,
    parse_adapter_options,
    resolve_adapter,
)
from .checkpoint import (
    load_failure_reason,
    sha256_file,
    trust_hint,
    weights_only_refusal,
)
from .config import ExtractConfig
from .errors import (
    AdapterError,
    AttentionShapeError,
    CheckpointLoadError,
    ExtractError,
    InvalidAttentionError,
    LengthMismatchError,
    SelectionError,
    StoreWriteError,
)

__all__ = [
    "INVALID_META_COLUMN",
    "ExtractConfig",
    "ExtractionResult",
    "gather_valid",
    "parse_shard",
    "run_extraction",
    "select_samples",
    "shard_path",
]

INVALID_META_COLUMN = "invalid_attention"  # per-sample problems recorded with on_invalid="warn"
ON_INVALID = ("fail", "warn")
COMMIT_MAX_BYTES = 256 << 20  # commit early when this much attention is pending
MAX_WARNINGS = 10  # invalid-attention warnings printed (all are recorded in the store)
_TORCH_DTYPE = {"float16": torch.float16, "float32": torch.float32}


# ---------------------------------------------------------------------------------------------
# result (the configuration, ExtractConfig, is in extract/config.py: no torch)
# ---------------------------------------------------------------------------------------------
@dataclass
class ExtractionResult:
    """What :func:`run_extraction` did."""

    path: Path  # this shard's store file
    models: list[str]
    sites: list[str]
    n_selected: int  # whole run, all shards
    n_planned: int  # this shard
    n_committed: int  # committed in the file now
    n_written: int  # committed by this call
    resumed_from: int  # committed before this call
    seconds: float
    store_bytes: int
    shard: tuple[int, int] = (0, 1)
    device: str = "cpu"
    skipped_sites: dict[str, list[str]] = field(default_factory=dict)  # model -> sites not common
    invalid: dict[str, list[str]] = field(default_factory=dict)  # sample id -> problems (warn mode)
    timings: dict[str, float] = field(default_factory=dict)  # load_models, setup, batches (s)

    @property
    def complete(self) -> bool:
        return self.n_committed >= self.n_planned

    def summary(self) -> str:
        rate = self.n_written / self.seconds if self.seconds > 0 else float("nan")
        shard = f" shard {self.shard[0]}/{self.shard[1]}" if self.shard[1] > 1 else ""
        resumed = f", resumed at {self.resumed_from}" if self.resumed_from else ""
        invalid = f", {len(self.invalid)} with invalid attention" if self.invalid else ""
        state = "" if self.complete else f" (INCOMPLETE: {self.n_committed}/{self.n_planned})"
        return (
            f"extracted {self.n_written} samples{shard} ({self.n_committed}/{self.n_planned} "
            f"committed{resumed}{invalid}) x {len(self.models)} models "
            f"({', '.join(self.models)}) x {len(self.sites)} site{'s' * (len(self.sites) != 1)} "
            f"({', '.join(self.sites)}) "
            f"in {self.seconds:.1f} s ({rate:.1f} samples/s) on {self.device} -> {self.path} "
            f"({_human_bytes(self.store_bytes)}){state}"
        )


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# small pure helpers (tested directly)
# ---------------------------------------------------------------------------------------------
def parse_shard(shard: tuple[int, int] | str | None, env: dict[str, str] | None = None):
    """``"i/n"`` / ``(i, n)`` / ``None`` (then torchrun's RANK/WORLD_SIZE, else ``(0, 1)``)."""
    env = os.environ if env is None else env
    if shard is None:
        ws = env.get("WORLD_SIZE")
        if ws and int(ws) > 1:
            return int(env.get("RANK", "0")), int(ws)
        return 0, 1
    if isinstance(shard, str):
        i, sep, n = shard.partition("/")
        try:
            if not sep:
                raise ValueError
            shard = (int(i), int(n))
        except ValueError:
            raise ExtractError(f"--shard {shard!r}: expected i/n, e.g. 0/4") from None
    i, n = int(shard[0]), int(shard[1])
    if n < 1 or not 0 <= i < n:
        raise ExtractError(f"--shard {i}/{n}: need 0 <= i < n, e.g. 0/{max(n, 2)}")
    return i, n


def shard_path(out: str | os.PathLike, index: int, count: int) -> Path:
    """``attention_store.h5`` -> ``attention_store.shard-00-of-02.h5`` when ``count > 1``."""
    out = Path(out)
    if count <= 1:
        return out
    width = max(2, len(str(count - 1)))
    suffix = out.suffix or ".h5"
    return out.with_name(f"{out.stem}.shard-{index:0{width}d}-of-{count:0{width}d}{suffix}")


def select_samples(ids: Sequence[str], num_samples: int | None, seed: int, split: str) -> list[str]:
    """The ordered selection: all ``ids`` or a seeded subset of ``num_samples`` of them.

    The subset keeps the split's order (``numpy.random.default_rng(seed)`` picks which).
    """
    ids = list(ids)
    if num_samples is None:
        return ids
    if num_samples < 1:
        raise SelectionError(f"--num-samples must be >= 1, got {num_samples}")
    if num_samples > len(ids):
        raise SelectionError(
            f"--num-samples {num_samples} but split {split!r} has only {len(ids)} samples; "
            "use --all or a smaller number"
        )
    pick = np.random.default_rng(seed).choice(len(ids), size=num_samples, replace=False)
    return [ids[i] for i in np.sort(pick)]


def gather_valid(
    att: torch.Tensor,
    n_query: np.ndarray,
    n_key: np.ndarray,
    *,
    method: str = "auto",
    lengths_dev: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Concatenate each sample's C-order ``att[b, :, :, :n_query[b], :n_key[b]]`` into one flat
    tensor, on ``att``'s device.

    ``att`` is ``[batch, layers, heads, query, key]`` (padded). ``method="mask"`` uses
    ``torch.masked_select`` (needs the output size from the device: a synchronisation on
    accelerators); ``"index"`` computes the source index from host-known sizes, so no
    synchronisation happens; ``"slices"`` (CPU only) copies each sample's block out of a
    numpy view of ``att``, one slice per sample (about 10x faster than the mask on CPU for the
    small batches of small models, where torch's per-operation cost dominates).
    ``"auto"``: slices on CPU, index elsewhere.
    """
    B, L, H, Qp, Kp = att.shape  # [batch, layers, heads, query, key]
    dev = att.device
    if method == "auto":
        method = "slices" if dev.type == "cpu" else "index"
    if method == "slices":
        if dev.type != "cpu":
            raise ValueError("`method='slices'` needs a CPU tensor")
        qs = np.asarray(n_query, dtype=np.int64).tolist()
        ks = np.asarray(n_key, dtype=np.int64).tolist()
        blocks = list(enumerate(zip(qs, ks, strict=True)))
        a = att.detach()
        if a.dtype not in _NUMPY_DTYPES:  # e.g. bfloat16: no numpy view; the same slices in torch
            return torch.cat([a[b, :, :, :q, :k].reshape(-1) for b, (q, k) in blocks])
        v = a.numpy()
        return torch.from_numpy(
            np.concatenate([v[b, :, :, :q, :k].ravel() for b, (q, k) in blocks])
        )
    if lengths_dev is None:
        lengths_dev = _lengths_to(dev, n_query, n_key)
    nq, nk = lengths_dev  # [B] int64 on the device
    if method == "mask":
        q_ok = torch.arange(Qp, device=dev)[None, :] < nq[:, None]  # [B, Qp]
        k_ok = torch.arange(Kp, device=dev)[None, :] < nk[:, None]  # [B, Kp]
        mask = q_ok[:, None, None, :, None] & k_ok[:, None, None, None, :]  # [B, 1, 1, Qp, Kp]
        return torch.masked_select(att, mask)
    if method != "index":
        raise ValueError(f"`method` must be 'auto', 'mask' or 'index', got {method!r}")
    sizes = L * H * np.asarray(n_query, dtype=np.int64) * np.asarray(n_key, dtype=np.int64)
    total = int(sizes.sum())
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    starts_dev = _host_to(dev, starts)
    j = torch.arange(total, device=dev, dtype=torch.int64)  # [total] output position
    b = torch.searchsorted(starts_dev, j, right=True) - 1  # sample of each output element
    r = j - starts_dev[b]  # offset inside the sample's block
    nk_b = nk[b]
    nq_b = nq[b]
    k = r % nk_b
    t = r // nk_b
    q = t % nq_b
    lh = t // nq_b  # layer * H + head
    src = ((b * (L * H) + lh) * Qp + q) * Kp + k  # flat index into att
    return att.reshape(-1).take(src)


def _host_to(dev: torch.device, arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def _lengths_to(dev: torch.device, n_query, n_key) -> tuple[torch.Tensor, torch.Tensor]:
    both = _host_to(dev, np.stack([np.asarray(n_query, np.int64), np.asarray(n_key, np.int64)]))
    return both[0], both[1]


def _model_dtype(handle: Any) -> str | None:
    """The floating dtype of the model's parameters ("float32", "bfloat16", ...): the dtype its
    attention is computed in. None when the handle holds no ``nn.Module`` with float parameters."""
    for m in (handle, getattr(handle, "model", None)):
        if isinstance(m, torch.nn.Module):
            for p in m.parameters():
                if p.is_floating_point():
                    return str(p.dtype).removeprefix("torch.")
    return None


_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def flat_attention_stats(
    flat: np.ndarray, n_blocks: int, n_query: np.ndarray, n_key: np.ndarray
) -> np.ndarray:
    """:func:`_attention_stats` of a gathered batch, on the host: ``flat`` is what
    :func:`gather_valid` returns (each sample's ``[n_blocks, n_query[b], n_key[b]]`` block in C
    order, ``n_blocks`` = layers x heads), in the store dtype. Returns ``[B, 3]`` float32 of
    (any non-finite row sum, max |row sum - 1| over the finite ones, min weight with NaN as 0
    and -inf as -1), the sums in float32 as on the device (the order of the additions differs,
    so the maximum deviation may differ in its last bits)."""
    nq = np.asarray(n_query, dtype=np.int64)
    nk = np.asarray(n_key, dtype=np.int64)
    rows = n_blocks * nq  # rows per sample, each nk[b] long

    def starts(sizes: np.ndarray) -> np.ndarray:  # first index of each segment (sizes >= 1)
        return np.cumsum(sizes) - sizes

    f32 = np.asarray(flat, dtype=np.float32)
    dev = np.abs(np.add.reduceat(f32, starts(np.repeat(nk, rows))) - np.float32(1.0))
    bad = ~np.isfinite(dev)
    nonfinite = np.logical_or.reduceat(bad, starts(rows))
    maxdev = np.maximum.reduceat(np.where(bad, np.float32(0.0), dev), starts(rows))
    clean = np.nan_to_num(f32, nan=0.0, neginf=-1.0, posinf=np.inf)
    minval = np.minimum.reduceat(clean, starts(rows * nk))
    return np.stack([nonfinite.astype(np.float32), maxdev, minval], axis=1)


def _attention_stats(att: torch.Tensor, nq: torch.Tensor, nk: torch.Tensor) -> torch.Tensor:
    """Per-sample sanity statistics over the valid region, on the device: ``[B, 3]`` float32 of
    (any non-finite, max |row sum - 1|, min weight)."""
    B, L, H, Qp, Kp = att.shape
    dev = att.device
    a = att if att.dtype in (torch.float32, torch.float64) else att.float()  # upcast 16-bit
    q_ok = torch.arange(Qp, device=dev)[None, :] < nq[:, None]  # [B, Qp]
    k_ok = torch.arange(Kp, device=dev)[None, :] < nk[:, None]  # [B, Kp]
    m = q_ok[:, None, None, :, None] & k_ok[:, None, None, None, :]  # [B, 1, 1, Qp, Kp]
    aw = torch.where(m, a, 0.0)  # [B, L, H, Qp, Kp] padding -> 0
    dev_row = torch.where(q_ok[:, None, None, :], (aw.sum(-1) - 1.0).abs(), 0.0)  # [B, L, H, Qp]
    flat = dev_row.reshape(B, -1)
    nonfinite = (~torch.isfinite(flat)).any(1)  # NaN/Inf anywhere in a valid row
    maxdev = torch.nan_to_num(flat, nan=0.0, posinf=0.0).amax(1)
    minval = torch.nan_to_num(aw.reshape(B, -1), nan=0.0, neginf=-1.0).amin(1)
    return torch.stack([nonfinite.float(), maxdev.float(), minval.float()], dim=1)  # [B, 3]


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Move a batch to ``device``: tensors, objects with ``.to(device)``, dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [move_to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        moved = [move_to_device(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else tuple(moved)
    to = getattr(obj, "to", None)
    if callable(to) and not isinstance(obj, (str, bytes, np.ndarray)):
        return to(device)
    return obj


def resolve_device(device: str) -> torch.device:
    text = (device or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device(f"cuda:{local % torch.cuda.device_count()}")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise ExtractError(f"--device {device!r}: expected auto, cpu, cuda or cuda:k") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ExtractError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}); "
                "use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ExtractError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ExtractError(f"--device {device}: MPS is not available here; use --device cpu")
    return dev


def _versions() -> dict[str, str]:
    import h5py

    return {
        "attncmp": tool_version(),
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _meta_kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return "str"


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr: committed samples, samples/s, ETA."""

    def __init__(self, total: int, done: int, stream: Any, quiet: bool) -> None:
        self.total, self.start_done, self.done = total, done, done
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.printed = False

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        final = self.done >= self.total
        if self.quiet or (not final and now - self.last < (0.2 if self.tty else 10.0)):
            return
        self.last = now
        el = now - self.t0
        rate = (self.done - self.start_done) / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        eta_s = "--:--" if math.isnan(eta) else time.strftime("%M:%S", time.gmtime(eta))
        if eta >= 3600 and not math.isnan(eta):
            eta_s = f"{eta / 3600:.1f}h"
        line = (
            f"extract [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} samples "
            f"{rate:6.1f} samples/s ETA {eta_s}"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()
        self.printed = True

    def close(self) -> None:
        if self.printed and self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class _ModelOut:
    # host float32: forward lengths [B, 2], then per-site stats [B, 3 * n_sites] unless
    # ``host_stats`` (CPU: the writer thread computes them from ``attention``)
    stats: torch.Tensor
    attention: dict[str, torch.Tensor]  # site -> host flat (store dtype)
    predictions: torch.Tensor  # host [B] or [B, T]
    host_stats: bool = False


@dataclass
class _Job:
    ids: list[str]
    infos: list[SampleInfo]
    n_nodes: np.ndarray
    n_tokens: np.ndarray
    outputs: dict[str, _ModelOut]
    event: Any = None  # torch.cuda.Event recorded after the copies


class _WriterThread:
    """Checks and converts batches on a background thread and commits them in groups.

    ``accept(job)`` validates one batch and keeps it pending; ``flush()`` appends everything
    pending to the store as one committed group. A group is flushed once ``every`` seconds have
    passed since the last commit (also while waiting for the next batch), at the end, and before
    an error is handed to the main thread, so every valid batch is committed.
    """

    def __init__(
        self,
        accept: Callable[[_Job], None],
        flush: Callable[[], None],
        pending: Callable[[], bool],
        size: int,
        every: float,
    ) -> None:
        self._accept, self._flush, self._pending = accept, flush, pending
        self._every = max(0.0, float(every))
        self._q: queue.Queue = queue.Queue(maxsize=max(1, size))
        self.error: BaseException | None = None
        self._stop = False
        self._last = time.perf_counter()
        self._t = threading.Thread(target=self._run, name="attncmp-store-writer", daemon=True)
        self._t.start()

    def _commit(self) -> None:
        try:
            self._flush()
        except BaseException as exc:
            if self.error is None:
                self.error = exc
        self._last = time.perf_counter()

    def _run(self) -> None:
        while True:
            timeout = None
            if self._pending() and self.error is None:
                timeout = max(0.0, self._last + self._every - time.perf_counter())
            try:
                job = self._q.get(timeout=timeout)
            except queue.Empty:
                self._commit()
                continue
            if job is None:
                if self.error is None:
                    self._commit()
                return
            if self.error is not None or self._stop:
                continue
            try:
                self._accept(job)
            except BaseException as exc:  # commit the valid batches, then hand over
                self._commit()
                if self.error is None:
                    self.error = exc
                continue
            if time.perf_counter() - self._last >= self._every:
                self._commit()

    def put(self, job: _Job) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(job, timeout=0.05)
                return
            except queue.Full:
                continue

    def close(self, *, drain: bool = True) -> None:
        """Commit queued batches (``drain``) or skip them, then stop the thread."""
        if not drain:
            self._stop = True
        while True:
            try:
                self._q.put(None, timeout=0.05)
                break
            except queue.Full:
                if not self._t.is_alive():
                    break
        self._t.join()


class _Prefetcher:
    """Builds upcoming batches (``make_batch`` + ``describe``) on a background thread while the
    current batch runs on the device; errors surface in order, at the batch that caused them.
    ``depth=0`` builds each batch on the calling thread instead."""

    def __init__(self, chunks: list[list[str]], produce: Callable[[list[str]], Any], depth: int):
        self._chunks, self._produce, self._depth = chunks, produce, depth
        self._stop = threading.Event()
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._t: threading.Thread | None = None
        if depth > 0:
            self._t = threading.Thread(target=self._run, name="attncmp-batches", daemon=True)
            self._t.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        for ids in self._chunks:
            if self._stop.is_set():
                return
            try:
                item = ("ok", self._produce(ids))
            except BaseException as exc:  # re-raised on the main thread
                self._put(("err", exc))
                return
            if not self._put(item):
                return
        self._put(("end", None))

    def __iter__(self):
        if self._t is None:
            for ids in self._chunks:
                yield self._produce(ids)
            return
        while True:
            kind, value = self._q.get()
            if kind == "end":
                return
            if kind == "err":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        if self._t is not None:
            while self._t.is_alive():
                try:
                    self._q.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._t.join()


def _concat_flat(parts: list[FlatBatch]) -> FlatBatch:
    """One :class:`FlatBatch` from several (same models, sites, metadata columns)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    has_gold = first.gold_present is not None
    return FlatBatch(
        ids=[i for p in parts for i in p.ids],
        n_nodes=np.concatenate([p.n_nodes for p in parts]),
        n_tokens=np.concatenate([p.n_tokens for p in parts]),
        node_labels=[x for p in parts for x in p.node_labels],
        tokens=[x for p in parts for x in p.tokens],
        special=np.concatenate([p.special for p in parts]),
        targets=np.concatenate([p.targets for p in parts]),
        predictions={
            m: np.concatenate([p.predictions[m] for p in parts]) for m in first.predictions
        },
        attention={
            m: {s: np.concatenate([p.attention[m][s] for p in parts]) for s in sites}
            for m, sites in first.attention.items()
        },
        splits=[x for p in parts for x in p.splits],
        meta={k: [x for p in parts for x in p.meta[k]] for k in first.meta},
        gold_present=np.concatenate([p.gold_present for p in parts]) if has_gold else None,
        gold=np.concatenate([p.gold for p in parts]) if has_gold else None,
    )


class _Run:
    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.t0 = time.perf_counter()
        self._validate()
        self.shard = parse_shard(cfg.shard)
        self.path = shard_path(cfg.out, *self.shard)
        self.device = resolve_device(cfg.device)
        self.adapter_options = parse_adapter_options(cfg.adapter_options)
        self.adapter, self.adapter_label = resolve_adapter(cfg.adapter, self.adapter_options)
        self.adapter_src = adapter_source(self.adapter)
        self.names = [n for n, _ in cfg.models]
        self.baseline = cfg.baseline or self.names[0]
        self.invalid: dict[str, list[str]] = {}
        self._warned = 0
        # (model, site) -> row-sum tolerance of what is stored (store.schema.row_sum_tolerance of
        # the model's dtype and the store dtype; recorded in the store, the same one validate uses)
        self.tols: dict[tuple[str, str], float] = {}

    # -- setup --------------------------------------------------------------------------------
    def _validate(self) -> None:
        c = self.cfg
        names = [str(n) for n, _ in c.models]
        if len(names) < 2:
            raise ExtractError(
                f"need at least 2 model variants to compare, got {len(names)}; pass --model "
                "NAME=PATH twice or more"
            )
        for n in names:
            if not n or "/" in n or "=" in n:
                raise ExtractError(f"model name {n!r}: must be non-empty without '/' or '='")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ExtractError(f"model name(s) {dup} given more than once; names must be unique")
        if c.baseline is not None and c.baseline not in names:
            raise ExtractError(f"--baseline {c.baseline!r} is not one of the models {names}")
        if c.batch_size < 1:
            raise ExtractError(f"--batch-size must be >= 1, got {c.batch_size}")
        if c.dtype not in ATTENTION_DTYPES:
            raise ExtractError(f"--dtype {c.dtype!r}: choose one of {list(ATTENTION_DTYPES)}")
        if c.on_invalid not in ON_INVALID:
            raise ExtractError(f"--on-invalid {c.on_invalid!r}: choose one of {list(ON_INVALID)}")
        if c.num_samples is not None and c.num_samples < 1:
            raise SelectionError(f"--num-samples must be >= 1, got {c.num_samples}")

    def _call(self, what: str, fn: Callable, *args: Any, model: str | None = None) -> Any:
        try:
            return fn(*args)
        except ExtractError:
            raise
        except StoreError:
            raise
        except Exception as exc:
            on = f" for model {model!r}" if model else ""
            why = one_line(exc, limit=200, with_type=True)
            raise AdapterError(f"adapter {self.adapter_label!r}: {what}{on} failed: {why}") from exc

    def _load_models(self) -> None:
        self.handles: dict[str, Any] = {}
        self.source_dtypes: dict[str, str | None] = {}
        self.sha: dict[str, str] = {}
        for name, ckpt in self.cfg.models:
            p = Path(ckpt)
            if not p.exists():
                raise CheckpointLoadError(f"model {name!r}: checkpoint {p} does not exist")
            if p.is_file():
                self.sha[name] = sha256_file(p)
            else:
                self.sha[name] = "directory"
            try:
                h = self.adapter.load_model(str(p), self.device, self.cfg.trust_checkpoint)
            except CheckpointLoadError as exc:
                raise CheckpointLoadError(f"model {name!r}: {exc}") from exc
            except ExtractError:
                raise
            except Exception as exc:
                refused = None if self.cfg.trust_checkpoint else weights_only_refusal(exc)
                if refused is not None:
                    raise CheckpointLoadError(
                        f"model {name!r}: checkpoint {p}: {trust_hint(refused)}"
                    ) from exc
                raise CheckpointLoadError(
                    f"model {name!r}: loading checkpoint {p} failed: {load_failure_reason(exc)}"
                ) from exc
            for m in (h, getattr(h, "model", None)):
                if isinstance(m, torch.nn.Module):
                    m.eval()
            self.handles[name] = h
            self.source_dtypes[name] = _model_dtype(h)

    def _sites(self) -> None:
        per_model: dict[str, list[SiteSpec]] = {}
        for name in self.names:
            sites = self._call("sites()", self.adapter.sites, self.handles[name], model=name)
            if not isinstance(sites, (list, tuple)) or not all(
                isinstance(s, SiteSpec) for s in sites
            ):
                raise AdapterError(
                    f"adapter {self.adapter_label!r}: sites() for model {name!r} must return a "
                    "list of store.SiteSpec"
                )
            per_model[name] = list(sites)
        base = per_model[self.names[0]]
        common: list[SiteSpec] = []
        for s in base:
            others = [next((o for o in per_model[n] if o.name == s.name), None) for n in self.names]
            if any(o is None for o in others):
                continue
            for n, o in zip(self.names, others, strict=True):
                if (o.query_axis, o.key_axis, o.n_layers, o.n_heads) != (
                    s.query_axis,
                    s.key_axis,
                    s.n_layers,
                    s.n_heads,
                ):
                    raise AdapterError(
                        f"site {s.name!r} differs between models {self.names[0]!r} "
                        f"({s.query_axis}->{s.key_axis}, {s.n_layers} layers x {s.n_heads} heads)"
                        f" and {n!r} ({o.query_axis}->{o.key_axis}, {o.n_layers} layers x "
                        f"{o.n_heads} heads); a site must have the same shape in every variant"
                    )
            common.append(s)
        if not common:
            raise AdapterError(
                "the model variants share no attention site: "
                + "; ".join(f"{n}: {[s.name for s in per_model[n]]}" for n in self.names)
            )
        cn = {s.name for s in common}
        self.sites = common
        self.skipped = {
            n: [s.name for s in per_model[n] if s.name not in cn]
            for n in self.names
            if any(s.name not in cn for s in per_model[n])
        }

    def _select(self) -> None:
        c = self.cfg
        splits = [x.strip() for x in str(c.split).split(",") if x.strip()]
        if not splits:
            raise SelectionError(f"--split {c.split!r}: name a split, e.g. test or valid,test")
        if len(set(splits)) != len(splits):
            raise SelectionError(f"--split {c.split!r} names a split twice")
        ids: list[str] = []
        self.split_of: dict[str, str] = {}
        for sp in splits:
            part = [
                str(i) for i in self._call("sample_ids()", self.adapter.sample_ids, sp, c.root_dir)
            ]
            if not part:
                raise SelectionError(
                    f"split {sp!r} has no samples (adapter {self.adapter_label!r}, root dir "
                    f"{c.root_dir}); check --split and --root-dir"
                )
            both = next((i for i in part if i in self.split_of), None)
            if both is not None:
                raise SelectionError(
                    f"sample {both!r} is in both split {self.split_of[both]!r} and {sp!r}; "
                    "pooled splits must be disjoint"
                )
            for i in part:
                self.split_of.setdefault(i, sp)
            ids += part
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise AdapterError(
                f"adapter {self.adapter_label!r}: sample_ids() returned duplicate id {dup!r}"
            )
        self.selection = select_samples(ids, c.num_samples, c.seed, c.split)
        self.training_overlap: dict[str, int] = {}
        fn = getattr(self.adapter, "training_ids", None)
        if callable(fn):
            chosen = set(self.selection)
            for name in self.names:
                train = self._call("training_ids()", fn, self.handles[name], model=name)
                if train is None:
                    continue
                train = set(map(str, train))
                used = [i for i in self.selection if i in train]
                if used and not c.allow_training_samples:
                    raise SelectionError(
                        f"{len(used)} of the {len(chosen)} selected samples (e.g. {used[0]!r}) "
                        f"were used to train model {name!r} (the checkpoint's recorded split); "
                        "choose a held-out --split (e.g. test) or pass --allow-training-samples"
                    )
                self.training_overlap[name] = len(used)

    def _probe(self) -> None:
        """Targets / metadata / gold layout: declared by the adapter or read off one sample."""
        ad = self.adapter
        need_probe = (
            getattr(ad, "has_gold", None) is None
            or getattr(ad, "meta_columns", None) is None
            or getattr(ad, "target_names", None) is None
        )
        info = None
        if need_probe:
            b = self._call("make_batch()", ad.make_batch, [self.selection[0]], self.cfg.root_dir)
            infos = self._call("describe()", ad.describe, b)
            if not infos:
                raise AdapterError(f"adapter {self.adapter_label!r}: describe() returned nothing")
            info = infos[0]
        declared_gold = getattr(ad, "has_gold", None)
        self.has_gold = bool(declared_gold) if declared_gold is not None else info.gold is not None
        mc = getattr(ad, "meta_columns", None)
        if callable(mc):
            mc = mc()
        if mc is None:
            mc = [(k, _meta_kind(v)) for k, v in dict(info.meta).items()]
        self.meta_columns = [(str(k), str(v)) for k, v in mc]
        if any(k == INVALID_META_COLUMN for k, _ in self.meta_columns):
            raise AdapterError(f"metadata column name {INVALID_META_COLUMN!r} is reserved")
        tn = getattr(ad, "target_names", None)
        if tn is None:
            n_t = int(np.atleast_1d(np.asarray(info.target, dtype=np.float64)).size)
            tn = ("target",) if n_t == 1 else tuple(f"target_{j}" for j in range(n_t))
        self.target_names = tuple(str(t) for t in tn)

    def _spec(self) -> StoreSpec:
        c = self.cfg
        sel_hash = hashlib.sha256("\n".join(self.selection).encode()).hexdigest()
        config = {
            "adapter": self.adapter_label,
            "adapter_options": self.adapter_options,
            "models": {n: {"sha256": self.sha[n]} for n in self.names},
            "split": c.split,
            "seed": c.seed,
            "num_samples": "all" if c.num_samples is None else c.num_samples,
            "selection_sha256": sel_hash,
            "batch_size": c.batch_size,
            "dtype": c.dtype,
            "on_invalid": c.on_invalid,
            "allow_training_samples": c.allow_training_samples,
            "training_samples_selected": self.training_overlap,
            "trust_checkpoint": c.trust_checkpoint,
            "sites_skipped": self.skipped,
            "invalid_attention_column": f"samples/meta/{INVALID_META_COLUMN}",
        }
        versions = _versions()
        dev = str(self.device)
        if self.device.type == "cuda":
            dev += f" ({torch.cuda.get_device_name(self.device)})"
        models = []
        info_fn = getattr(self.adapter, "model_info", None)
        for name, ckpt in c.models:
            info = (
                self._call("model_info()", info_fn, self.handles[name], model=name)
                if callable(info_fn)
                else {}
            )
            try:
                json.dumps(info, default=str)
            except (TypeError, ValueError) as exc:
                raise AdapterError(
                    f"adapter {self.adapter_label!r}: model_info() for {name!r} is not JSON: {exc}"
                ) from None
            models.append(
                ModelSpec(
                    name=name,
                    provenance={
                        "checkpoint": str(Path(ckpt).resolve()),
                        "checkpoint_sha256": self.sha[name],
                        "config": info,
                        "adapter": self.adapter_label,
                        "adapter_options": self.adapter_options,
                        "adapter_file": self.adapter_src["file"],
                        "adapter_sha256": self.adapter_src["sha256"],
                        "versions": versions,
                        "device": dev,
                        "dtype": c.dtype,
                        "seed": c.seed,
                        "split": c.split,
                        "root_dir": None if c.root_dir is None else str(Path(c.root_dir).resolve()),
                        "trust_checkpoint": c.trust_checkpoint,
                        "num_samples": config["num_samples"],
                        "sites_skipped": self.skipped.get(name, []),
                    },
                    source_dtype=self.source_dtypes.get(name),
                )
            )
            for site in self.sites:
                self.tols[(name, site.name)] = row_sum_tolerance(
                    c.dtype, self.source_dtypes.get(name)
                )
        return StoreSpec(
            models=tuple(models),
            sites=tuple(self.sites),
            selection_ids=tuple(self.selection),
            targets=self.target_names,
            meta_columns=(*[tuple(x) for x in self.meta_columns], (INVALID_META_COLUMN, "str")),
            config=config,
            selection_seed=c.seed,
            split=c.split,
            baseline=self.baseline,
            dtype=c.dtype,
            compression=c.compression,
            has_gold=self.has_gold,
            shard_index=self.shard[0],
            shard_count=self.shard[1],
        )

    # -- per batch ----------------------------------------------------------------------------
    def _describe(
        self, ids: list[str], batch: Any
    ) -> tuple[list[SampleInfo], np.ndarray, np.ndarray]:
        infos = self._call("describe()", self.adapter.describe, batch)
        label = self.adapter_label
        if not isinstance(infos, (list, tuple)) or len(infos) != len(ids):
            raise AdapterError(
                f"adapter {label!r}: describe() returned "
                f"{len(infos) if hasattr(infos, '__len__') else '?'} entries for a batch of "
                f"{len(ids)} samples"
            )
        n_t = len(self.target_names)
        for want, info in zip(ids, infos, strict=True):
            if str(info.id) != want:
                raise AdapterError(
                    f"adapter {label!r}: describe() gave sample {info.id!r} where {want!r} was "
                    "expected; make_batch()/describe() must keep the order of the ids"
                )
            nn_, nt = len(info.node_labels), len(info.tokens)
            if nn_ < 1 or nt < 1:
                raise AdapterError(
                    f"adapter {label!r}: sample {want!r} has {nn_} node labels and {nt} tokens; "
                    "both must be >= 1"
                )
            if info.special is not None and len(info.special) != nt:
                raise AdapterError(
                    f"adapter {label!r}: sample {want!r}: {len(info.special)} special flags for "
                    f"{nt} tokens"
                )
            if np.atleast_1d(np.asarray(info.target, dtype=np.float64)).size != n_t:
                raise AdapterError(
                    f"adapter {label!r}: sample {want!r} has a target of size "
                    f"{np.atleast_1d(np.asarray(info.target)).size}, expected {n_t} "
                    f"({list(self.target_names)})"
                )
            if info.gold is not None:
                if not self.has_gold:
                    raise AdapterError(
                        f"adapter {label!r}: sample {want!r} has a gold mask but the store was "
                        "planned without gold masks; set `has_gold = True` on the adapter"
                    )
                g = np.asarray(info.gold)
                if g.shape != (nn_, nt):
                    raise AdapterError(
                        f"adapter {label!r}: sample {want!r}: gold mask shape {g.shape}, expected "
                        f"({nn_}, {nt}) = (nodes, tokens)"
                    )
        n_nodes = np.array([len(i.node_labels) for i in infos], dtype=np.int64)
        n_tokens = np.array([len(i.tokens) for i in infos], dtype=np.int64)
        return list(infos), n_nodes, n_tokens

    def _axis(self, axis: str, n_nodes: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
        if axis == "nodes":
            return n_nodes
        if axis == "tokens":
            return n_tokens
        return np.ones_like(n_nodes)

    def _lengths_from(self, out: ForwardOutput, which: str, B: int) -> torch.Tensor | None:
        n = getattr(out, f"n_{which}")
        mask = getattr(out, f"{'node' if which == 'nodes' else 'token'}_mask")
        if n is not None:
            t = torch.as_tensor(n, device=self.device).reshape(-1).to(torch.float32)
            if t.numel() != B:
                raise AttentionShapeError(
                    f"ForwardOutput.n_{which} has {t.numel()} entries for a batch of {B}"
                )
            return t
        if mask is not None:
            m = torch.as_tensor(mask, device=self.device).to(torch.bool)
            if m.dim() != 2 or m.shape[0] != B:
                raise AttentionShapeError(
                    f"ForwardOutput mask for {which} has shape {tuple(m.shape)}, expected [{B}, *]"
                )
            n = m.sum(-1)  # [B]
            prefix = torch.arange(m.shape[1], device=m.device)[None, :] < n[:, None]
            ok = (prefix == m).all(-1)
            return torch.where(ok, n, -2).to(torch.float32)  # -2: not a prefix mask
        return None

    def _run_model(
        self, name: str, dev_batch: Any, B: int, lens: dict, host_lens: dict
    ) -> _ModelOut:
        out = self._call(
            "forward()",
            self.adapter.forward,
            self.handles[name],
            dev_batch,
            self.device,
            model=name,
        )
        label = self.adapter_label
        if not isinstance(out, ForwardOutput):
            raise AdapterError(
                f"adapter {label!r}: forward() for model {name!r} returned "
                f"{type(out).__name__}, expected extract.adapter.ForwardOutput"
            )
        cuda = self.device.type == "cuda"
        host_stats = self.device.type == "cpu"  # see flat_attention_stats
        store_dtype = _TORCH_DTYPE[self.cfg.dtype]
        parts: list[torch.Tensor] = []
        for which in ("nodes", "tokens"):
            t = self._lengths_from(out, which, B)
            parts.append(
                t[:, None] if t is not None else torch.full((B, 1), -1.0, device=self.device)
            )
        flats: dict[str, torch.Tensor] = {}
        for site in self.sites:
            if site.name not in out.attention:
                raise AttentionShapeError(
                    f"adapter {label!r}: forward() for model {name!r} returned no attention for "
                    f"site {site.name!r}; it returned {sorted(out.attention)}"
                )
            att = torch.as_tensor(out.attention[site.name])
            if att.device != self.device:
                att = att.to(self.device)
            if att.dim() == 4:
                att = att.unsqueeze(1)  # [B, 1, H, Q, K]
            nq, nk = host_lens[site.name]
            want = (
                f"[B={B}, L={site.n_layers}, H={site.n_heads}, Q>={int(nq.max())}, "
                f"K>={int(nk.max())}]"
            )
            if (
                att.dim() != 5
                or att.shape[0] != B
                or att.shape[1] != site.n_layers
                or att.shape[2] != site.n_heads
                or att.shape[3] < int(nq.max())
                or att.shape[4] < int(nk.max())
            ):
                raise AttentionShapeError(
                    f"adapter {label!r}: model {name!r} site {site.name!r}: attention has shape "
                    f"{list(att.shape)}, expected {want} ([batch, layers, heads, query, key], "
                    f"query={site.query_axis}, key={site.key_axis})"
                )
            if not att.is_floating_point():
                raise AttentionShapeError(
                    f"adapter {label!r}: model {name!r} site {site.name!r}: attention dtype "
                    f"{att.dtype} is not floating point"
                )
            nq_d, nk_d = lens[site.name]
            if host_stats:
                # the store dtype's valid blocks; their sanity statistics are computed from
                # them on the writer thread (flat_attention_stats), off this thread
                flats[site.name] = gather_valid(att.to(store_dtype), nq, nk, method="slices")
                continue
            # sanity of what is stored: the weights as cast to the store dtype
            parts.append(_attention_stats(att.to(store_dtype), nq_d, nk_d))  # [B, 3]
            flats[site.name] = gather_valid(att, nq, nk, lengths_dev=(nq_d, nk_d)).to(store_dtype)
        pred = torch.as_tensor(out.predictions)
        T = len(self.target_names)
        if not (tuple(pred.shape) == (B,) and T == 1) and tuple(pred.shape) != (B, T):
            raise AttentionShapeError(
                f"adapter {label!r}: model {name!r} predictions have shape {list(pred.shape)}, "
                f"expected [{B}]" + (f" or [{B}, {T}]" if T > 1 else "")
            )
        stats = torch.cat(parts, dim=1)  # [B, 2 + 3 * n_sites]
        return _ModelOut(
            stats=_to_host(stats, cuda),
            attention={k: _to_host(v, cuda) for k, v in flats.items()},
            predictions=_to_host(pred.detach(), cuda),
            host_stats=host_stats,
        )

    # -- writer thread ------------------------------------------------------------------------
    def _check_lengths(self, job: _Job) -> None:
        ids = job.ids
        desc = np.stack([job.n_nodes, job.n_tokens], axis=1)  # [B, 2]
        seen = {}
        for n, o in job.outputs.items():
            rep = o.stats[:, :2].numpy().astype(np.int64)  # [B, 2]; -1 not given, -2 bad mask
            if (rep == -2).any():
                j = int(np.nonzero((rep == -2).any(1))[0][0])
                raise LengthMismatchError(
                    f"sample {ids[j]!r}: model {n!r} returned a node/token mask whose valid "
                    "positions do not come first; padding must be at the end"
                )
            seen[n] = np.where(rep == -1, desc, rep)
        first = next(iter(seen.values()))
        differ = np.zeros(len(ids), dtype=bool)
        for r in seen.values():
            differ |= (r != first).any(1)
        if differ.any():
            j = int(np.nonzero(differ)[0][0])
            detail = ", ".join(
                f"{n} has {r[j, 0]} nodes x {r[j, 1]} tokens" for n, r in seen.items()
            )
            raise LengthMismatchError(
                f"sample {ids[j]!r}: query/key lengths differ between variants ({detail}); all "
                "variants must see identical inputs (same featurisation and tokenizer)"
            )
        off = (first != desc).any(1)
        if off.any():
            j = int(np.nonzero(off)[0][0])
            raise LengthMismatchError(
                f"sample {ids[j]!r}: models {', '.join(seen)} report {first[j, 0]} nodes x "
                f"{first[j, 1]} tokens but the adapter's describe() gives {desc[j, 0]} node labels "
                f"x {desc[j, 1]} tokens; describe() must use the model's own tokenisation"
            )

    def _accept(self, job: _Job) -> None:
        """Check one batch (lengths, attention sanity) and queue it for the next commit."""
        if job.event is not None:
            job.event.synchronize()
        ids, B = job.ids, len(job.ids)
        # 1. lengths reported by the models agree with each other and with describe()
        self._check_lengths(job)
        # 2. attention sanity
        problems: dict[str, list[str]] = {}
        for n, o in job.outputs.items():
            for s_i, site in enumerate(self.sites):
                tol = self.tols[(n, site.name)]
                if not o.host_stats:  # computed on the device
                    st = o.stats[:, 2 + 3 * s_i : 5 + 3 * s_i].numpy()  # [B, 3]
                else:  # from the gathered weights, here on the writer thread
                    st = flat_attention_stats(
                        o.attention[site.name].numpy(),
                        site.n_layers * site.n_heads,
                        self._axis(site.query_axis, job.n_nodes, job.n_tokens),
                        self._axis(site.key_axis, job.n_nodes, job.n_tokens),
                    )
                for j in np.nonzero((st[:, 0] > 0) | (st[:, 1] > tol) | (st[:, 2] < 0))[0]:
                    what = []
                    if st[j, 0] > 0:
                        what.append("NaN/Inf weights")
                    if st[j, 2] < 0:
                        what.append(f"negative weights (min {st[j, 2]:.3g})")
                    if st[j, 1] > tol:
                        what.append(f"rows not summing to 1 (max |sum-1| {st[j, 1]:.3g} > {tol:g})")
                    if self.cfg.on_invalid == "fail":
                        raise InvalidAttentionError(
                            f"sample {ids[j]!r}, model {n!r}, site {site.name!r}: "
                            f"{'; '.join(what)}; fix the adapter (mask padded keys?) or pass "
                            "--on-invalid warn to record and continue"
                        )
                    problems.setdefault(ids[j], []).append(f"{n}/{site.name}: {'; '.join(what)}")
        # 3. one FlatBatch, committed
        infos = job.infos
        special = np.concatenate(
            [
                np.zeros(len(i.tokens), dtype=bool)
                if i.special is None
                else np.asarray(i.special, dtype=bool).reshape(-1)
                for i in infos
            ]
        )
        T = len(self.target_names)
        gold_present = np.array([i.gold is not None for i in infos], dtype=bool)
        golds = [np.asarray(i.gold, dtype=bool).reshape(-1) for i in infos if i.gold is not None]
        meta: dict[str, list[Any]] = {
            k: [i.meta.get(k) for i in infos] for k, _ in self.meta_columns
        }
        meta[INVALID_META_COLUMN] = ["; ".join(problems.get(i, [])) for i in ids]
        fb = FlatBatch(
            ids=list(ids),
            n_nodes=job.n_nodes,
            n_tokens=job.n_tokens,
            node_labels=[str(x) for i in infos for x in i.node_labels],
            tokens=[str(x) for i in infos for x in i.tokens],
            special=special,
            targets=np.stack(
                [np.atleast_1d(np.asarray(i.target, np.float64)).reshape(T) for i in infos]
            ),
            predictions={
                n: o.predictions.to(torch.float64).numpy().reshape(B, T)
                for n, o in job.outputs.items()
            },
            attention={
                n: {s: v.numpy() for s, v in o.attention.items()} for n, o in job.outputs.items()
            },
            splits=[
                i.split if i.split is not None else self.split_of.get(i.id, self.cfg.split)
                for i in infos
            ],
            meta=meta,
            gold_present=gold_present if self.has_gold else None,
            gold=(np.concatenate(golds) if golds else np.zeros(0, bool)) if self.has_gold else None,
        )
        self._pending.append(fb)
        self._pending_problems.update(problems)
        self._pending_bytes += sum(a.nbytes for d in fb.attention.values() for a in d.values())
        for sid, what in problems.items():
            self._warned += 1
            if self._warned <= MAX_WARNINGS:
                print(f"warning: sample {sid!r}: {'; '.join(what)}", file=sys.stderr)
            elif self._warned == MAX_WARNINGS + 1:
                print(
                    f"warning: more samples with invalid attention; see the per-sample column "
                    f"samples/meta/{INVALID_META_COLUMN} of {self.path}",
                    file=sys.stderr,
                )
        self.progress.update(B)
        if self._pending_bytes >= COMMIT_MAX_BYTES:  # bound the memory held between commits
            self._flush()

    def _flush(self) -> None:
        """Append everything pending as one committed group."""
        if not self._pending:
            return
        fb = _concat_flat(self._pending)
        problems = self._pending_problems
        self._pending, self._pending_problems, self._pending_bytes = [], {}, 0
        try:
            self.writer.append(fb)
        except OSError as exc:
            raise StoreWriteError(
                f"{self.path}: writing failed ({one_line(exc, limit=200, with_type=True)}"
                + (" - out of disk space?" if "space" not in str(exc).lower() else "")
                + f"); the {self.writer.n_committed} committed samples are preserved: free space "
                "and re-run the same command to continue"
            ) from exc
        self.invalid.update(problems)

    # -- main ---------------------------------------------------------------------------------
    def run(self) -> ExtractionResult:
        # seeded for adapters with randomness, without disturbing the caller's RNG state
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed)
            return self._run()

    def _run(self) -> ExtractionResult:
        t = time.perf_counter()
        self._load_models()
        self.timings = {"load_models": time.perf_counter() - t}
        self._sites()
        self._select()
        self._probe()
        spec = self._spec()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = StoreWriter.open_or_create(self.path, spec, overwrite=self.cfg.overwrite)
        self.timings["setup"] = time.perf_counter() - t - self.timings["load_models"]
        try:
            return self._loop(spec)
        finally:
            self.writer.close()

    def _loop(self, spec: StoreSpec) -> ExtractionResult:
        c = self.cfg
        mine = shard_ids(self.selection, *self.shard)
        done = self.writer.committed_ids
        todo = [i for i in mine if i not in done]
        resumed_from = len(mine) - len(todo)
        self.progress = _Progress(len(mine), resumed_from, c.progress_stream, c.quiet)
        cuda = self.device.type == "cuda"
        self._pending: list[FlatBatch] = []
        self._pending_problems: dict[str, list[str]] = {}
        self._pending_bytes = 0
        wt = _WriterThread(
            self._accept, self._flush, lambda: bool(self._pending), c.queue_size, c.commit_every
        )
        t_loop = time.perf_counter()
        chunks = [todo[lo : lo + c.batch_size] for lo in range(0, len(todo), c.batch_size)]

        def produce(ids: list[str]):
            batch = self._call("make_batch()", self.adapter.make_batch, ids, c.root_dir)
            return (ids, batch, *self._describe(ids, batch))

        depth = c.prefetch if c.prefetch is not None else (0 if self.device.type == "cpu" else 2)
        batches = _Prefetcher(chunks, produce, depth)
        try:
            for ids, batch, infos, n_nodes, n_tokens in batches:
                B = len(ids)
                host_lens = {
                    s.name: (
                        self._axis(s.query_axis, n_nodes, n_tokens),
                        self._axis(s.key_axis, n_nodes, n_tokens),
                    )
                    for s in self.sites
                }
                nodes_d, tokens_d = _lengths_to(self.device, n_nodes, n_tokens)  # one copy
                on_dev = {"nodes": nodes_d, "tokens": tokens_d, "single": torch.ones_like(nodes_d)}
                lens = {s.name: (on_dev[s.query_axis], on_dev[s.key_axis]) for s in self.sites}
                dev_batch = move_to_device(batch, self.device)
                outputs: dict[str, _ModelOut] = {}
                with torch.inference_mode():
                    for name in self.names:
                        outputs[name] = self._run_model(name, dev_batch, B, lens, host_lens)
                event = None
                if cuda:
                    event = torch.cuda.Event()
                    event.record()
                wt.put(_Job(ids, infos, n_nodes, n_tokens, outputs, event))
        finally:
            # commit what is already computed (also on errors: nothing valid is lost), then stop
            batches.close()
            wt.close(drain=True)
            self.progress.close()
        if wt.error is not None:
            raise wt.error
        self.timings["batches"] = time.perf_counter() - t_loop
        n_committed = self.writer.n_committed
        self.writer.close()
        return ExtractionResult(
            path=self.path,
            models=list(self.names),
            sites=[s.name for s in self.sites],
            n_selected=len(self.selection),
            n_planned=len(mine),
            n_committed=n_committed,
            n_written=n_committed - resumed_from,
            resumed_from=resumed_from,
            seconds=time.perf_counter() - self.t0,
            store_bytes=self.path.stat().st_size if self.path.exists() else 0,
            shard=self.shard,
            device=str(self.device),
            skipped_sites=dict(self.skipped),
            invalid=dict(self.invalid),
            timings=dict(self.timings),
        )


def _to_host(t: torch.Tensor, cuda: bool) -> torch.Tensor:
    """One device-to-host copy; non-blocking into pinned memory on CUDA."""
    if not cuda:
        return t.detach().cpu() if t.device.type != "cpu" else t.detach()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t.detach(), non_blocking=True)
    return host


def run_extraction(config: ExtractConfig) -> ExtractionResult:
    """Run one extraction (or continue an interrupted one) and return what was done.

    Raises :class:`extract.errors.ExtractError` subclasses or :class:`store.StoreError` with a
    one-line message on user errors; committed samples are never lost.
    """
    return _Run(config).run()
