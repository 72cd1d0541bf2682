"""Append-only, crash-safe writer of an attention store (h5py + numpy; no torch).

Commit protocol (normative text in ``store_schema.md``): every appendable dataset is created up
front, SWMR write mode is switched on, and each batch is appended by resizing and writing every
dataset, flushing, and only then writing the new committed-sample count into ``/commit`` and
flushing again. Readers trust ``/commit`` alone. Reopening a store truncates everything beyond the
commit marker (copying the committed part into a fresh file when the crashed writer left HDF5's
"open for writing" flag set), so a restarted writer continues exactly where the marker says.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import encodings as E
from . import schema as S
from .batch import FlatBatch, SampleRecord, records_to_flat
from .errors import StoreConfigMismatch, StoreError, StoreInputError

__all__ = ["StoreWriter", "axis_length", "sample_block_sizes"]


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
        self, path: Path, f: h5py.File, spec: S.StoreSpec, lock: int | None = None
    ) -> None:
        self.path = Path(path)
        self._f = f
        self._lock = lock  # fd holding the "a writer has this store open" lock (see _lock_store)
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
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(
                f"{path}: already exists; use StoreWriter.open to continue it or remove it"
            )
        if not path.parent.exists():
            raise StoreError(f"{path}: directory {path.parent} does not exist; create it first")
        f = h5py.File(path, "w", libver="latest")
        lock = None
        try:
            cls._layout(f, spec)
            f.flush()
            f.swmr_mode = True
            lock = _lock_store(path)
        except BaseException:
            f.close()
            _unlock_store(lock)
            path.unlink(missing_ok=True)
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
        # recovering by copy would replace the file under that writer and lose its samples)
        _unlock_store(_lock_store(path))
        try:
            f = h5py.File(path, "r+", libver="latest")
        except OSError:
            # a killed writer leaves HDF5's "open for SWMR write" flag set: copy the committed part
            _recover_by_copy(path, spec)
            f = h5py.File(path, "r+", libver="latest")
        lock = None
        try:
            _check_compatible(path, f, spec)
            _truncate_to_commit(f, spec)
            f.flush()
            f.swmr_mode = True
            lock = _lock_store(path)
        except BaseException:
            f.close()
            _unlock_store(lock)
            raise
        return cls(path, f, spec, lock)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, spec: S.StoreSpec) -> StoreWriter:
        return cls.open(path, spec) if Path(path).exists() else cls.create(path, spec)

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
        return n

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
        if self._f.id.valid:
            self._f.close()
        _unlock_store(self._lock)
        self._lock = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A writer holds an exclusive POSIX record lock on one byte far beyond any data of its store
# file. HDF5 leaves a file open for SWMR writing unlocked, and its "open for writing" flag looks the
# same for a live writer as for a killed one; this lock tells them apart (the kernel drops it when
# the process dies). It is advisory and does not touch HDF5's own flock(), so SWMR readers are
# unaffected. Where the file system cannot lock, writing proceeds unguarded.
_LOCK_AT = 1 << 62


def _lock_store(path: Path) -> int | None:
    """Lock ``path`` for this process; return the fd (None if locking is unsupported here).
    Raises :class:`StoreError` when another process holds the lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _LOCK_AT)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EACCES, errno.EAGAIN):
            raise StoreError(
                f"{path}: another process is writing this store right now; wait for it to "
                "finish (or stop it) before continuing, or write to another file"
            ) from None
        return None
    return fd


def _unlock_store(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


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
    writing because the previous writer was killed). The original is replaced atomically."""
    from .reader import open_store  # local import: reader imports writer helpers

    tmp = path.with_name(path.name + ".recover.tmp")
    try:
        with open_store(path) as st:
            _check_compatible(path, st, spec)
            with StoreWriter.create(tmp, spec, overwrite=True) as w:
                for batch in st.iter_flat_batches(512):
                    w.append(batch)
    except StoreError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"{path}: cannot be reopened or recovered ({e}); move it aside and re-run"
        ) from None
    os.replace(tmp, path)
