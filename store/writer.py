"""Append-only, crash-safe writer of an attention store (h5py + numpy; no torch).

Commit protocol (normative text in ``store_schema.md``): every appendable dataset is created up
front, SWMR write mode is switched on, and each batch is appended by resizing and writing every
dataset, flushing, and only then writing the new committed-sample count into ``/commit`` and
flushing again. Readers trust ``/commit`` alone. Reopening a store truncates everything beyond the
commit marker (copying the committed part into a fresh file when the crashed writer left HDF5's
"open for writing" flag set), so a restarted writer continues exactly where the marker says.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import atomic
from . import encodings as E
from . import schema as S
from .batch import FlatBatch, SampleRecord, records_to_flat
from .errors import StoreConfigMismatch, StoreDiskFullError, StoreError, StoreInputError

__all__ = [
    "StoreWriter",
    "axis_length",
    "dataset_storage",
    "repack_if_grown",
    "sample_block_sizes",
]


def axis_length(axis: str, n_nodes: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """Per-sample length of ``axis`` (``nodes``, ``tokens`` or ``single`` = 1)."""
    if axis == "nodes":
        return np.asarray(n_nodes, dtype=np.int64)
    if axis == "tokens":
        return np.asarray(n_tokens, dtype=np.int64)
    return np.ones(len(n_nodes), dtype=np.int64)


def sample_block_sizes(site: S.SiteSpec, n_nodes: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """Number of stored weights per sample: ``n_layers * n_heads * n_query * n_key``."""
    q = axis_length(site.query_axis, n_nodes, n_tokens)
    k = axis_length(site.key_axis, n_nodes, n_tokens)
    return site.n_layers * site.n_heads * q * k


def _filters(compression: str, fletcher32: bool = True) -> dict[str, Any]:
    kw: dict[str, Any] = {"fletcher32": fletcher32}
    if compression == "gzip":
        kw.update(compression="gzip", compression_opts=1, shuffle=True)
    elif compression == "lzf":
        kw.update(compression="lzf", shuffle=True)
    return kw


def _resizable(g: h5py.Group, name: str, dtype: Any, compression: str, shape_tail=(), chunk=None):
    chunk = chunk or (S.FLAT_CHUNK if not shape_tail else S.SAMPLE_CHUNK)
    return g.create_dataset(
        name,
        shape=(0, *shape_tail),
        maxshape=(None, *shape_tail),
        dtype=dtype,
        chunks=(chunk, *shape_tail),
        **_filters(compression),
    )


def _make_offsets(g: h5py.Group, name: str = "offsets") -> h5py.Dataset:
    ds = g.create_dataset(
        name,
        data=np.zeros(1, dtype=np.int64),
        maxshape=(None,),
        chunks=(S.SAMPLE_CHUNK,),
        **_filters("gzip"),
    )
    return ds


def _make_string_array(parent: h5py.Group, name: str, compression: str) -> h5py.Group:
    g = E.create_group(parent, name, E.STRING_ARRAY)
    _resizable(g, "data", np.uint8, compression, chunk=S.BYTES_CHUNK)
    _make_offsets(g)
    return g


def _write_string_array_static(parent: h5py.Group, name: str, values: Sequence[str]) -> None:
    g = E.create_group(parent, name, E.STRING_ARRAY)
    data, offsets = encode_strings(values)
    g.create_dataset(
        "data",
        data=data,
        dtype=np.uint8,
        chunks=True if len(data) else None,
        **(_filters("gzip") if len(data) else {}),
    )
    g.create_dataset("offsets", data=offsets)


def encode_strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 encode ``values`` into (bytes uint8 [total], offsets int64 [n+1], offsets[0] = 0)."""
    enc = [str(v).encode("utf-8") for v in values]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    if enc:
        np.cumsum([len(b) for b in enc], out=offsets[1:])
    data = np.frombuffer(b"".join(enc), dtype=np.uint8) if enc else np.zeros(0, np.uint8)
    return data, offsets


def _truncate_string_array(g: h5py.Group, n: int) -> None:
    g["offsets"].resize(n + 1, axis=0)
    g["data"].resize(int(g["offsets"][n]), axis=0)


class StoreWriter:
    """Appends committed batches of samples to one store file.

    Use :meth:`create` for a new store, :meth:`open` to continue one (after a crash or to add more
    samples with the same configuration), or :meth:`open_or_create`.
    """

    def __init__(
        self, path: Path, f: h5py.File, spec: S.StoreSpec, lock: _Lock | None = None
    ) -> None:
        self.path = Path(path)
        self._f = f
        self._lock = lock  # the "a writer has this store open" lock (see _Lock)
        # an fd of the store used to reserve disk space ahead of HDF5 (see _reserve)
        self._space_fd: int | None = _open_rdwr(self.path)
        self._projected = False
        self.repacked = False  # set by close(): the file was rewritten compactly
        self._closed = False
        self.spec = spec
        self._sites = {s.name: s for s in spec.sites}
        self._selection = set(spec.selection_ids)
        self._commit = f["commit"]
        # handles, lengths and last offsets of the appendable datasets, cached so that an append
        # costs one resize + one write per dataset (no lookups, no reads)
        self._dsets: dict[str, h5py.Dataset] = {}
        self._len: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._broken = False
        n = self.n_committed
        self._ids = set(_read_string_array(f["samples/id"], n))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, spec: S.StoreSpec, *, overwrite: bool = False):
        """Create a new store (with ``overwrite``, replace an existing file).

        The empty store is laid out under a temporary name and renamed into place once complete,
        so a process killed while creating it leaves no file that the same command would refuse.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(
                f"{path}: already exists; use StoreWriter.open to continue it or remove it"
            )
        if not path.parent.exists():
            raise StoreError(f"{path}: directory {path.parent} does not exist; create it first")
        if len(os.fsencode(path.name)) > _MAX_NAME:
            raise StoreError(
                f"{path.name[:40]}...: file name too long ({len(os.fsencode(path.name))} bytes; "
                f"use at most {_MAX_NAME})"
            )
        try:
            read_only = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        if read_only or not os.access(path.parent, os.W_OK):
            why = "Read-only file system" if read_only else "Permission denied"
            raise StoreError(f"{path}: cannot be created ({why}); choose another directory")
        with _writer_lock(path) as lock:
            _check_free(path, _LAYOUT_BYTES, 0, "creating")
            tmp = atomic.temp_name(path)
            try:
                f = _h5_create(path, tmp)
                with _closed_on_failure(f):
                    cls._layout(f, spec)
                    _start_swmr(f)
                    atomic.commit_file(tmp, path)  # the open file follows the rename
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return cls(path, f, spec, lock)

    @classmethod
    def open(cls, path: str | os.PathLike, spec: S.StoreSpec) -> StoreWriter:
        """Continue an existing store made with the same configuration.

        Anything beyond the commit marker (a batch interrupted by a crash) is discarded.
        """
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such store")
        # refuse a store another live process is writing (its flag looks like a killed writer's:
        # recovering by copy would replace the file under that writer and lose its samples); the
        # lock is held from here on, so of two resumes started together exactly one continues
        with _writer_lock(path) as lock:
            _check_free(path, _LAYOUT_BYTES, 0, "reopening")
            try:
                f = h5py.File(path, "r+", libver="latest")
            except OSError:
                # a killed writer leaves HDF5's "open for SWMR write" flag set: copy the
                # committed part
                _recover_by_copy(path, spec)
                f = h5py.File(path, "r+", libver="latest")
            with _closed_on_failure(f):
                _check_compatible(path, f, spec)
                _truncate_to_commit(f, spec)
                _start_swmr(f)
        return cls(path, f, spec, lock)

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike, spec: S.StoreSpec, *, overwrite: bool = False
    ) -> StoreWriter:
        """Continue ``path`` if it exists, else create it.

        ``overwrite`` replaces an existing file. A store without any committed sample (its first
        batch failed) made with another configuration is replaced too: nothing is lost.
        """
        path = Path(path)
        if overwrite or not path.exists():
            return cls.create(path, spec, overwrite=True)
        try:
            return cls.open(path, spec)
        except StoreConfigMismatch:
            if _committed_count(path) != 0:
                raise
            return cls.create(path, spec, overwrite=True)

    @staticmethod
    def _layout(f: h5py.File, spec: S.StoreSpec) -> None:
        comp = spec.compression
        E.stamp(f, E.ROOT)
        a = f.attrs
        a["schema"] = S.SCHEMA_NAME
        a["schema_version"] = S.SCHEMA_VERSION
        a["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        a["tool_version"] = S.tool_version()
        a["config"] = S.dumps(spec.config)
        a["fingerprint"] = S.dumps(spec.fingerprint())
        a["models"] = S.dumps([m.name for m in spec.models])
        a["baseline"] = spec.baseline_name
        a["targets"] = S.dumps(list(spec.targets))
        a["selection_seed"] = -1 if spec.selection_seed is None else int(spec.selection_seed)
        a["split"] = spec.split
        a["attention_dtype"] = spec.dtype
        a["compression"] = comp
        a["has_gold"] = bool(spec.has_gold)
        a["shard_index"] = int(spec.shard_index)
        a["shard_count"] = int(spec.shard_count)

        f.create_dataset("commit", data=np.zeros(1, dtype=np.int64), maxshape=(1,), chunks=(1,))
        sel = f.create_group("selection")
        sel.attrs["seed"] = a["selection_seed"]
        sel.attrs["split"] = spec.split
        _write_string_array_static(sel, "ids", spec.selection_ids)

        smp = E.create_group(f, "samples", E.SAMPLES)
        _make_string_array(smp, "id", comp)
        _make_string_array(smp, "split", comp)
        _resizable(smp, "n_nodes", np.int32, comp, chunk=S.SAMPLE_CHUNK)
        _resizable(smp, "n_tokens", np.int32, comp, chunk=S.SAMPLE_CHUNK)
        tgt = _resizable(smp, "target", np.float64, comp, shape_tail=(len(spec.targets),))
        tgt.attrs["names"] = S.dumps(list(spec.targets))
        meta = smp.create_group("meta")
        for name, kind in spec.meta_columns:
            if kind == "str":
                _make_string_array(meta, name, comp)
            else:
                dt = np.float64 if kind == "float" else np.int64
                _resizable(meta, name, dt, comp, chunk=S.SAMPLE_CHUNK)
            meta[name].attrs["kind"] = kind

        nodes = E.create_group(f, "nodes", E.ITEMS)
        _make_offsets(nodes)
        _make_string_array(nodes, "label", comp)
        toks = E.create_group(f, "tokens", E.ITEMS)
        _make_offsets(toks)
        _make_string_array(toks, "text", comp)
        _resizable(toks, "special", np.uint8, comp, chunk=S.BYTES_CHUNK)

        models = f.create_group("models")
        for m in spec.models:
            g = E.create_group(models, m.name, E.MODEL)
            g.attrs["provenance"] = S.dumps(m.provenance)
            pred = _resizable(g, "prediction", np.float64, comp, shape_tail=(len(spec.targets),))
            pred.attrs["names"] = S.dumps(list(spec.targets))
            att = g.create_group("attention")
            for s in spec.sites:
                sg = E.create_group(att, s.name, E.ATTENTION)
                sg.attrs["query_axis"] = s.query_axis
                sg.attrs["key_axis"] = s.key_axis
                sg.attrs["n_layers"] = s.n_layers
                sg.attrs["n_heads"] = s.n_heads
                sg.attrs["description"] = s.description
                sg.attrs["layout"] = "layer,head,query,key"
                sg.attrs["row_sum_tolerance"] = S.row_sum_tolerance(spec.dtype, m.source_dtype)
                if m.source_dtype is not None:
                    sg.attrs["source_dtype"] = m.source_dtype
                _resizable(sg, "data", np.dtype(spec.dtype), comp)
                _make_offsets(sg)
        if spec.has_gold:
            gold = E.create_group(f, "gold", E.GOLD)
            gold.attrs["query_axis"] = "nodes"
            gold.attrs["key_axis"] = "tokens"
            _resizable(gold, "data", np.uint8, comp, chunk=S.BYTES_CHUNK)
            _resizable(gold, "present", np.uint8, comp, chunk=S.SAMPLE_CHUNK)
            _make_offsets(gold)

    # -- state ----------------------------------------------------------------------------------
    @property
    def n_committed(self) -> int:
        return int(self._commit[0])

    @property
    def committed_ids(self) -> set[str]:
        return set(self._ids)

    def remaining_ids(self) -> list[str]:
        """This shard's planned ids (in selection order) not yet committed; other shards' ids are
        never this writer's to append."""
        mine = S.shard_ids(self.spec.selection_ids, self.spec.shard_index, self.spec.shard_count)
        return [i for i in mine if i not in self._ids]

    # -- appending ------------------------------------------------------------------------------
    def append(self, batch: FlatBatch | Sequence[SampleRecord]) -> int:
        """Append and commit one batch; returns the new committed-sample count.

        Everything is converted and checked before the first write, so bad input raises
        :class:`StoreInputError` with the store untouched. If writing fails part-way (e.g. a full
        disk), the partial batch is rolled back to the commit marker before the error propagates.
        """
        if not isinstance(batch, FlatBatch):
            batch = records_to_flat(list(batch))
        if len(batch) == 0:
            return self.n_committed
        if self._broken:
            raise StoreError(
                f"{self.path}: an earlier append failed and could not be rolled back; "
                "reopen the store with StoreWriter.open (committed samples are safe)"
            )
        self._check(batch)
        columns = self._columns(batch)
        n = self.n_committed + len(batch)
        eoa = self._eoa()
        self._reserve(eoa, self._bound(columns))
        try:
            for path, values, is_offsets in columns:
                if is_offsets:
                    self._put_offsets(path, values)
                else:
                    self._put(path, values)
            self._f.flush()  # data first ...
            self._commit[0] = n  # ... then the commit marker
            self._f.flush()
        except BaseException:
            self._rollback()
            raise
        self._ids.update(batch.ids)
        if not self._projected:
            self._projected = True
            self._project(len(batch), self._eoa() - eoa)
        return n

    # -- disk space -----------------------------------------------------------------------------
    # HDF5 cannot survive a full disk: a failed write leaves its caches and object ids in a state
    # that crashes the process when the file is closed (or at interpreter exit). So HDF5 must
    # never meet ENOSPC: before each batch the writer reserves (posix_fallocate) an upper bound
    # of the bytes the batch can take, beyond HDF5's end of allocation, plus a slack for closing.
    # A failed reservation stops cleanly with the store untouched; the unused reserved tail is cut
    # off when the writer closes.
    def _eoa(self) -> int:
        """HDF5's end of allocated space (the bytes of the file it uses)."""
        return int(self._f.id.get_filesize())

    def _bound(self, columns: list[tuple[str, np.ndarray, bool]]) -> int:
        """Upper bound of the bytes one batch adds: every chunk it touches, uncompressed, plus
        chunk-index and metadata overhead."""
        total = 0
        for path, values, _is_offsets in columns:
            n_new = len(values)
            if n_new == 0:
                continue
            ds = self._dataset(path)
            rows = ds.chunks[0] if ds.chunks else max(1, n_new)
            row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
            start = self._len[path]
            touched = (start + n_new - 1) // rows - start // rows + 1
            total += touched * (rows * row_bytes + 512)
        return total + _SLACK

    def _reserve(self, eoa: int, nbytes: int) -> None:
        fd = self._space_fd
        if fd is None:
            _check_free(self.path, nbytes, self.n_committed, "writing")
            return
        try:
            size = os.fstat(fd).st_size
            if size < eoa + nbytes:
                _fallocate(fd, size, eoa + nbytes - size)
        except OSError as e:
            if atomic.is_disk_full(e):
                raise _disk_full(self.path, self.n_committed, "writing", nbytes) from None
            # no preallocation on this file system: check the free space instead
            _check_free(self.path, nbytes, self.n_committed, "writing")

    def _project(self, n_batch: int, grew: int) -> None:
        """After the first batch: refuse early when the rest of this shard's samples will not
        fit (projected from that batch's growth), instead of failing hours later."""
        planned = len(S.shard_ids(self.spec.selection_ids, *self._shard))
        left = planned - self.n_committed
        free = atomic.free_bytes(self.path)
        if left <= 0 or n_batch <= 0 or grew <= 0 or free is None:
            return
        size = os.path.getsize(self.path)
        reserved = max(0, size - self._eoa())
        need = int(grew / n_batch * left)
        if need > free + reserved:
            raise StoreDiskFullError(
                f"{self.path}: the remaining {left} samples need about {_mib(need)} "
                f"(projected from the first batch) but only {_mib(free)} are free on its disk; "
                f"{self.n_committed} samples are committed and safe: free space and re-run the "
                "same command to continue"
            )

    @property
    def _shard(self) -> tuple[int, int]:
        return self.spec.shard_index, self.spec.shard_count

    def _columns(self, batch: FlatBatch) -> list[tuple[str, np.ndarray, bool]]:
        """Every (dataset path, values to append, values-are-sizes-for-offsets) of one batch."""
        spec, nb = self.spec, len(batch)
        cols: list[tuple[str, np.ndarray, bool]] = []

        def strings(path: str, values: Sequence[str]) -> None:
            data, offsets = encode_strings(values)
            cols.append((f"{path}/data", data, False))
            cols.append((f"{path}/offsets", np.diff(offsets), True))

        strings("samples/id", batch.ids)
        # a sample without its own split gets the run's
        splits = [s or spec.split for s in batch.splits] if batch.splits else []
        strings("samples/split", splits or [spec.split] * nb)
        cols.append(("samples/n_nodes", np.asarray(batch.n_nodes).astype(np.int32), False))
        cols.append(("samples/n_tokens", np.asarray(batch.n_tokens).astype(np.int32), False))
        cols.append(("samples/target", np.asarray(batch.targets, dtype=np.float64), False))
        for name, kind in spec.meta_columns:
            vals = batch.meta.get(name, [None] * nb)
            path = f"samples/meta/{name}"
            try:
                if len(vals) != nb:
                    raise StoreInputError(f"{len(vals)} values for {nb} samples")
                if kind == "str":
                    strings(path, ["" if v is None else str(v) for v in vals])
                elif kind == "float":
                    arr = np.array([np.nan if v is None else float(v) for v in vals], np.float64)
                    cols.append((path, arr, False))
                else:
                    cols.append((path, np.array([int(v) for v in vals], dtype=np.int64), False))
            except (TypeError, ValueError) as e:
                raise StoreInputError(
                    f"{self.path}: metadata column {name!r} ({kind}): {e}"
                ) from None
        cols.append(("nodes/offsets", np.asarray(batch.n_nodes), True))
        strings("nodes/label", batch.node_labels)
        cols.append(("tokens/offsets", np.asarray(batch.n_tokens), True))
        strings("tokens/text", batch.tokens)
        cols.append(("tokens/special", np.asarray(batch.special, dtype=np.uint8), False))
        for m in spec.models:
            base = f"models/{m.name}"
            pred = np.asarray(batch.predictions[m.name], dtype=np.float64)
            cols.append((f"{base}/prediction", pred, False))
            for s in spec.sites:
                sizes = sample_block_sizes(s, batch.n_nodes, batch.n_tokens)
                data = np.asarray(batch.attention[m.name][s.name]).reshape(-1)
                data = data.astype(spec.dtype, copy=False)  # no copy when already converted
                cols.append((f"{base}/attention/{s.name}/data", data, False))
                cols.append((f"{base}/attention/{s.name}/offsets", sizes, True))
        if spec.has_gold:
            present = _gold_present(batch)
            sizes = np.where(present, np.asarray(batch.n_nodes) * np.asarray(batch.n_tokens), 0)
            gold = batch.gold if batch.gold is not None else np.zeros(0, dtype=bool)
            cols.append(("gold/data", np.asarray(gold, dtype=np.uint8).reshape(-1), False))
            cols.append(("gold/present", present.astype(np.uint8), False))
            cols.append(("gold/offsets", sizes, True))
        return cols

    def _dataset(self, path: str) -> h5py.Dataset:
        ds = self._dsets.get(path)
        if ds is None:
            ds = self._dsets[path] = self._f[path]
            self._len[path] = ds.shape[0]
        return ds

    def _put(self, path: str, values: np.ndarray) -> None:
        ds = self._dataset(path)
        if len(values) == 0:
            return
        n = self._len[path]
        ds.resize(n + len(values), axis=0)
        ds[n:] = values
        self._len[path] = n + len(values)

    def _put_offsets(self, path: str, sizes: np.ndarray) -> None:
        ds = self._dataset(path)
        last = self._last.get(path)
        if last is None:
            last = int(ds[self._len[path] - 1])
        new = last + np.cumsum(np.asarray(sizes, dtype=np.int64))
        self._put(path, new)
        if len(new):
            self._last[path] = int(new[-1])
        else:
            self._last[path] = last

    def _rollback(self) -> None:
        """Discard a partially written batch (cut every dataset back to the commit marker)."""
        self._dsets.clear()
        self._len.clear()
        self._last.clear()
        try:
            _truncate_to_commit(self._f, self.spec)
            self._f.flush()
            self._ids = set(_read_string_array(self._f["samples/id"], self.n_committed))
        except Exception:  # noqa: BLE001 - the original error is what the caller needs to see
            self._broken = True

    def _check(self, b: FlatBatch) -> None:
        where = f"{self.path}"
        nb = len(b)
        ids = list(b.ids)
        if len(set(ids)) != nb:
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise StoreInputError(f"{where}: duplicate sample ids in batch: {dup[:5]}")
        again = [i for i in ids if i in self._ids]
        if again:
            raise StoreInputError(
                f"{where}: sample {again[0]!r} is already committed in this store"
            )
        unknown = [i for i in ids if i not in self._selection]
        if unknown:
            raise StoreInputError(
                f"{where}: sample {unknown[0]!r} is not in the store's recorded selection"
            )
        n_nodes = np.asarray(b.n_nodes)
        n_tokens = np.asarray(b.n_tokens)
        if n_nodes.shape != (nb,) or n_tokens.shape != (nb,):
            raise StoreInputError(
                f"{where}: n_nodes/n_tokens must have one entry per sample ({nb})"
            )
        if (n_nodes < 1).any() or (n_tokens < 1).any():
            bad = ids[int(np.argmax((n_nodes < 1) | (n_tokens < 1)))]
            raise StoreInputError(f"{where}: sample {bad!r} has no nodes or no tokens")
        if len(b.node_labels) != int(n_nodes.sum()):
            raise StoreInputError(
                f"{where}: {len(b.node_labels)} node labels for {int(n_nodes.sum())} nodes in batch"
            )
        if len(b.tokens) != int(n_tokens.sum()) or len(b.special) != int(n_tokens.sum()):
            raise StoreInputError(
                f"{where}: {len(b.tokens)} token strings / {len(b.special)} special flags for "
                f"{int(n_tokens.sum())} tokens in batch"
            )
        t = len(self.spec.targets)
        if np.asarray(b.targets).shape != (nb, t):
            raise StoreInputError(
                f"{where}: targets shape {np.asarray(b.targets).shape}, expected {(nb, t)}"
            )
        if b.splits and len(b.splits) != nb:
            raise StoreInputError(f"{where}: {len(b.splits)} splits for {nb} samples")
        for m in self.spec.models:
            if m.name not in b.predictions or m.name not in b.attention:
                raise StoreInputError(
                    f"{where}: batch lacks predictions/attention of model {m.name!r}"
                )
            if np.asarray(b.predictions[m.name]).shape != (nb, t):
                raise StoreInputError(
                    f"{where}: model {m.name!r} predictions shape "
                    f"{np.asarray(b.predictions[m.name]).shape}, expected {(nb, t)}"
                )
            for s in self.spec.sites:
                if s.name not in b.attention[m.name]:
                    raise StoreInputError(f"{where}: model {m.name!r} lacks site {s.name!r}")
                want = int(sample_block_sizes(s, n_nodes, n_tokens).sum())
                got = int(np.asarray(b.attention[m.name][s.name]).size)
                if got != want:
                    raise StoreInputError(
                        f"{where}: model {m.name!r} site {s.name!r}: {got} weights in batch, "
                        f"expected {want} (= sum of layers*heads*query*key)"
                    )
        if self.spec.has_gold:
            present = _gold_present(b)
            want = int((n_nodes * n_tokens)[present].sum())
            got = 0 if b.gold is None else int(np.asarray(b.gold).size)
            if got != want:
                raise StoreInputError(f"{where}: {got} gold mask cells in batch, expected {want}")
        elif b.gold is not None and np.asarray(b.gold).size:
            raise StoreInputError(f"{where}: batch has gold masks but the store was made without")

    def close(self) -> None:
        """Close the file, cut off the unused reserved space, repack the file if it has grown
        (:func:`repack_if_grown`) and release the lock. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._f.id.valid:
            self._f.close()
        if self._space_fd is not None:
            _trim_reserved(self.path, self._space_fd)
            os.close(self._space_fd)
            self._space_fd = None
        self.repacked = repack_if_grown(self.path)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A writer holds an exclusive POSIX record lock on a hidden lock file beside its store
# (``.NAME.lock``), from before it opens the store until it has closed it. HDF5 leaves a file open
# for SWMR writing unlocked, and its "open for writing" flag looks the same for a live writer as for
# a killed one; this lock tells them apart (the kernel drops it when the process dies). It lives in
# its own file because POSIX drops every record lock a process holds on a file when the process
# closes *any* descriptor of that file, which HDF5 and readers do. The lock file is removed on
# close (and ignored when a killed writer left it). Where the file system cannot lock, writing
# proceeds unguarded.
@contextlib.contextmanager
def _writer_lock(path: Path) -> Iterator[_Lock | None]:
    """This process's writer lock on ``path`` for the block; released if the block fails (a
    writer made in it keeps the lock). Leftovers are cleaned first: checking a lock file closes a
    descriptor of it, which would drop a lock this process holds on it (POSIX)."""
    atomic.clean_leftovers(path.parent)
    lock = _Lock.acquire(path)
    try:
        yield lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise


@contextlib.contextmanager
def _closed_on_failure(f: h5py.File) -> Iterator[h5py.File]:
    """``f`` stays open for the writer unless the block fails."""
    try:
        yield f
    except BaseException:
        f.close()
        raise


def _start_swmr(f: h5py.File) -> None:
    """Everything is laid out: flush it and let readers in (SWMR: no new datasets from here)."""
    f.flush()
    f.swmr_mode = True


class _Lock:
    def __init__(self, lock_path: Path, fd: int) -> None:
        self.path = lock_path
        self.fd = fd

    @classmethod
    def acquire(cls, path: Path) -> _Lock | None:
        """Lock ``path`` for this process (None where locking is unsupported). Raises
        :class:`StoreError` when another live process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return None
        lock_path = path.with_name(f".{path.name}.lock")
        for _ in range(10):
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    raise StoreError(
                        f"{path}: another process is writing this store right now; wait for it "
                        "to finish (or stop it) before continuing, or write to another file"
                    ) from None
                return None
            try:  # the lock file may have been removed and recreated meanwhile: retry
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except OSError:
                same = False
            if same:
                return cls(lock_path, fd)
            os.close(fd)
        return None  # pragma: no cover - lock file churning

    def release(self) -> None:
        try:
            self.path.unlink()  # still locked: no one else can be holding this inode
        except OSError:
            pass
        os.close(self.fd)


# longest store file name: the temporary and lock names beside it add up to 25 bytes (255 max)
_MAX_NAME = 230

# bytes reserved beyond each batch's bound (closing the file writes a little metadata) and free
# space needed to create or reopen a store
_SLACK = 1 << 20
_LAYOUT_BYTES = 2 << 20


def _fallocate(fd: int, offset: int, length: int) -> None:
    """Reserve ``length`` bytes of disk at ``offset`` (tests replace it to simulate a full disk)."""
    os.posix_fallocate(fd, offset, length)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _disk_full(path: Path, n_committed: int, doing: str, need: int) -> StoreDiskFullError:
    return StoreDiskFullError(
        f"disk full while {doing} {path}: {n_committed} samples are committed and safe; free "
        f"space (the next step needs about {_mib(need)}) and re-run the same command to continue"
    )


def _check_free(path: Path, need: int, n_committed: int, doing: str) -> None:
    free = atomic.free_bytes(path)
    if free is not None and free < need:
        raise _disk_full(path, n_committed, doing, need)


def _open_rdwr(path: Path) -> int | None:
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - not POSIX
        return None
    try:
        return os.open(path, os.O_RDWR)
    except OSError:
        return None


def _trim_reserved(path: Path, fd: int) -> None:
    """Cut the unused reserved tail off a closed store (HDF5 uses nothing past its EOF)."""
    from .reader import superblock_info

    try:
        sb = superblock_info(path)
        if sb is not None and not sb.writing and sb.size > sb.eof > 0:
            os.ftruncate(fd, sb.eof)
    except OSError:
        pass


# A file is repacked on close when it exceeds its datasets' storage by more than this factor (plus
# a small allowance for the fixed metadata of an almost empty store).
REPACK_RATIO = 1.1
_REPACK_ALLOWANCE = 64 << 10


def dataset_storage(path: str | os.PathLike) -> int:
    """Bytes the datasets of an HDF5 file occupy (compressed chunks; no metadata, no free space)."""
    total = 0
    with h5py.File(path, "r") as f:

        def visit(_name: str, obj: Any) -> None:
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += obj.id.get_storage_size()

        f.visititems(visit)
    return total


def repack_if_grown(path: str | os.PathLike) -> bool:
    """Rewrite a closed store compactly when it has grown beyond ``REPACK_RATIO`` x its datasets.

    In HDF5 SWMR write mode freed file space is never reused (a concurrent reader may still be
    reading it), so every commit leaves the previous version of each dataset's last, partial chunk
    behind: committed after every small batch, a store can grow to many times its data. Copying
    every element into a fresh file (chunks are copied as they are, not recompressed) removes
    that. The copy replaces the file atomically; it is skipped (the file kept as is) when the
    disk lacks the space or anything fails. Returns True when the file was replaced.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        storage = dataset_storage(path)
    except (OSError, RuntimeError):
        return False
    if size <= REPACK_RATIO * storage + _REPACK_ALLOWANCE:
        return False
    free = atomic.free_bytes(path)
    if free is not None and free < storage + _LAYOUT_BYTES:
        return False
    tmp = atomic.temp_name(path)
    try:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for name in src:
                src.copy(src[name], dst, name=name)
        if tmp.stat().st_size >= size:
            tmp.unlink()
            return False
        atomic.commit_file(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, Exception):
            return False
        raise
    return True


def _h5_create(path: Path, tmp: Path) -> h5py.File:
    try:
        return h5py.File(tmp, "w", libver="latest")
    except OSError as e:
        if atomic.is_disk_full(e):
            raise _disk_full(path, 0, "creating", _LAYOUT_BYTES) from None
        raise StoreError(f"{path}: cannot be created ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _committed_count(path: Path) -> int | None:
    """Committed samples of the store at ``path`` (None if it cannot be read as a store)."""
    from .reader import open_store

    try:
        with open_store(path) as st:
            return st.n_samples
    except StoreError:
        return None


def _gold_present(b: FlatBatch) -> np.ndarray:
    if b.gold_present is None:
        return np.zeros(len(b), dtype=bool)
    return np.asarray(b.gold_present, dtype=bool)


def _read_string_array(g: h5py.Group, n: int) -> list[str]:
    off = g["offsets"][: n + 1]
    if n == 0:
        return []
    raw = g["data"][int(off[0]) : int(off[-1])].tobytes()
    return [raw[off[i] - off[0] : off[i + 1] - off[0]].decode("utf-8") for i in range(n)]


def _check_compatible(path: Path, f: Any, spec: S.StoreSpec) -> None:
    """Raise :class:`StoreConfigMismatch` naming the first setting that differs."""
    if f.attrs.get("schema") != S.SCHEMA_NAME:
        raise StoreError(f"{path}: not an attncmp store (no schema='{S.SCHEMA_NAME}' attribute)")
    have = json.loads(f.attrs["fingerprint"])
    want = json.loads(S.dumps(spec.fingerprint()))
    diffs = _diff(have, want)
    if diffs:
        key, old, new = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise StoreConfigMismatch(
            f"{path}: was made with a different configuration: {key} is {old!r} in the store but "
            f"{new!r} now{more}; use a new output file or the original settings"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [(prefix, a, b)]


def _truncate_to_commit(f: h5py.File, spec: S.StoreSpec) -> None:
    """Drop everything written after the commit marker."""
    n = int(f["commit"][0])
    smp = f["samples"]
    _truncate_string_array(smp["id"], n)
    _truncate_string_array(smp["split"], n)
    for name in ("n_nodes", "n_tokens", "target"):
        smp[name].resize(n, axis=0)
    for name, kind in spec.meta_columns:
        if kind == "str":
            _truncate_string_array(smp["meta"][name], n)
        else:
            smp["meta"][name].resize(n, axis=0)
    for group, strings in (("nodes", "label"), ("tokens", "text")):
        off = f[group]["offsets"]
        off.resize(n + 1, axis=0)
        total = int(off[n])
        _truncate_string_array(f[group][strings], total)
    f["tokens/special"].resize(int(f["tokens/offsets"][n]), axis=0)
    for m in spec.models:
        g = f["models"][m.name]
        g["prediction"].resize(n, axis=0)
        for s in spec.sites:
            sg = g["attention"][s.name]
            sg["offsets"].resize(n + 1, axis=0)
            sg["data"].resize(int(sg["offsets"][n]), axis=0)
    if spec.has_gold:
        f["gold/offsets"].resize(n + 1, axis=0)
        f["gold/present"].resize(n, axis=0)
        f["gold/data"].resize(int(f["gold/offsets"][n]), axis=0)


def _recover_by_copy(path: Path, spec: S.StoreSpec) -> None:
    """Rebuild ``path`` from its committed samples (used when HDF5 refuses to reopen it for
    writing because the previous writer was killed). The original is replaced atomically; the
    caller holds the store's lock."""
    from .reader import open_store  # local import: reader imports writer helpers

    tmp = atomic.temp_name(path)
    try:
        _check_free(path, os.path.getsize(path) + _LAYOUT_BYTES, 0, "recovering")
        with open_store(path) as st:
            _check_compatible(path, st, spec)
            n = st.n_samples
            try:
                with StoreWriter.create(tmp, spec, overwrite=True) as w:
                    for batch in st.iter_flat_batches(512):
                        w.append(batch)
            except StoreDiskFullError:
                raise _disk_full(path, n, "recovering", os.path.getsize(path)) from None
    except StoreError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"{path}: cannot be reopened or recovered ({e}); move it aside and re-run"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic.commit_file(tmp, path)
