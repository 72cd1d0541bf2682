"""Read one store file, or several shard files as one store (h5py + numpy; no torch).

Readers trust only the commit marker (``/commit``): samples beyond it are invisible. Files are
opened in HDF5 SWMR read mode, so a store can be analysed while a writer is still appending;
:meth:`Store.refresh` picks up newly committed samples. Iteration is by chunks of samples, so
memory is bounded by the chunk size, not by the store size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import encodings as E
from . import schema as S
from .batch import FlatBatch
from .errors import StoreError, StoreReadError, StoreVersionError

__all__ = ["Store", "open_store", "SiteInfo", "SiteChunk", "FlatBlocks", "Sample"]


@dataclass(frozen=True)
class SiteInfo:
    """An attention site as recorded for one model."""

    name: str
    query_axis: str
    key_axis: str
    n_layers: int
    n_heads: int
    description: str = ""
    row_sum_tolerance: float = 0.0  # rows sum to 1 within this (section 7.2)
    source_dtype: str | None = None  # the dtype the model computed the attention in, if recorded


@dataclass
class FlatBlocks:
    """Concatenated per-sample ``[layers, heads, query, key]`` blocks of one model and site."""

    data: np.ndarray  # float32 [sum of block sizes]
    offsets: np.ndarray  # int64 [c + 1], offsets[0] == 0
    n_layers: int
    n_heads: int

    def block(self, i: int, n_query: int, n_key: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]].reshape(
            self.n_layers, self.n_heads, n_query, n_key
        )


@dataclass
class SiteChunk:
    """A chunk of samples' attention at one site, for every requested model.

    ``key_special`` concatenates each sample's key-axis special flags (all False unless the key
    axis is ``tokens``), with ``key_offsets``. ``gold`` (or None) concatenates each sample's
    ``[n_query, n_key]`` gold mask when the site is nodes->tokens and the store has gold masks;
    samples without a gold mask contribute nothing and have ``gold_present`` False.
    """

    site: str
    ids: list[str]
    index: np.ndarray  # int64 [c] positions in store order
    n_query: np.ndarray  # int64 [c]
    n_key: np.ndarray  # int64 [c]
    blocks: dict[str, FlatBlocks]
    key_special: np.ndarray  # bool [sum n_key]
    key_offsets: np.ndarray  # int64 [c + 1]
    gold: np.ndarray | None = None  # bool flat
    gold_offsets: np.ndarray | None = None  # int64 [c + 1]
    gold_present: np.ndarray | None = None  # bool [c]

    def __len__(self) -> int:
        return len(self.ids)

    def matrix(self, model: str, i: int) -> np.ndarray:
        """Sample ``i`` of the chunk as ``[layers, heads, query, key]``."""
        return self.blocks[model].block(i, int(self.n_query[i]), int(self.n_key[i]))


@dataclass
class Sample:
    """Everything the store holds about one sample."""

    id: str
    index: int
    split: str
    n_nodes: int
    n_tokens: int
    node_labels: list[str]
    tokens: list[str]
    special: np.ndarray  # bool [n_tokens]
    target: np.ndarray  # float64 [T]
    predictions: dict[str, np.ndarray]  # model -> float64 [T]
    meta: dict[str, Any]
    attention: dict[str, dict[str, np.ndarray]] = field(
        default_factory=dict
    )  # model->site->[L,H,Q,K]
    gold: np.ndarray | None = None  # bool [n_nodes, n_tokens]


def _segments(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices of the concatenated ranges ``[starts[i], starts[i] + sizes[i])`` (vectorised)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    csum = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return np.repeat(np.asarray(starts, dtype=np.int64) - csum, sizes) + np.arange(total)


def _read_failure(ds: h5py.Dataset, e: BaseException, what: str = "") -> StoreReadError:
    """The one-line error for a failed read of ``ds`` (``what``: which model/site/samples)."""
    file = ds.file.filename
    text = " ".join(str(e).split()) or type(e).__name__
    low = text.lower()
    if any(w in low for w in ("filter", "checksum", "fletcher", "inflate", "decompress")):
        why = "a chunk fails its Fletcher-32 checksum or cannot be decompressed"
    else:
        why = f"HDF5 says: {text}"
    return StoreReadError(
        f"{file}: cannot read {ds.name}{what}: {why}; the file is damaged: run "
        f"`attncmp store validate {file}` to list what is affected, then restore a copy or "
        "re-extract"
    )


def _read(ds: h5py.Dataset, sel: Any = slice(None), what: str = "") -> np.ndarray:
    """``ds[sel]``; a failed read (checksum, decompression, damaged file) raises
    :class:`StoreReadError` naming the file and dataset instead of a bare h5py ``OSError``."""
    try:
        return ds[sel]
    except (OSError, RuntimeError) as e:
        raise _read_failure(ds, e, what) from None


def _id_range(ids: Sequence[str], local: np.ndarray) -> str:
    if len(local) == 0:
        return "no samples"
    first, last = ids[int(local[0])], ids[int(local[-1])]
    if len(local) == 1:
        return f"sample {first!r}"
    return f"{len(local)} samples {first!r} .. {last!r}"


def _ragged_failure(
    ds: h5py.Dataset,
    e: BaseException,
    starts: np.ndarray,
    ends: np.ndarray,
    local: np.ndarray,
    ids: Sequence[str] | None,
    what: str,
) -> StoreReadError:
    """Name the samples whose blocks cannot be read (each is re-read alone to find them)."""
    bad = []
    for k in range(len(local)):
        if ends[k] <= starts[k]:
            continue
        try:
            ds[int(starts[k]) : int(ends[k])]
        except (OSError, RuntimeError):
            bad.append(int(local[k]))
    if ids is None:
        return _read_failure(ds, e, what)
    where = f"{what}, reading {_id_range(ids, local)}"
    if bad:
        names = ", ".join(repr(ids[b]) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        where += f"; damaged: {names} ({len(bad)} sample{'s' if len(bad) > 1 else ''})"
    return _read_failure(ds, e, f" ({where.lstrip(', ')})")


def _read_rows(
    ds: h5py.Dataset,
    offsets: np.ndarray,
    local: np.ndarray,
    ids: Sequence[str] | None = None,
    what: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Read the flat blocks of samples ``local`` (offsets indexed by local sample) in that order.

    Returns (data, sizes). One contiguous read of the covering span, then a vectorised gather
    unless the samples are already contiguous and ascending. A failed read raises
    :class:`StoreReadError` naming ``what`` (model, site) and the samples (``ids`` by local index)
    whose blocks are damaged.
    """
    local = np.asarray(local, dtype=np.int64)
    starts, ends = offsets[local], offsets[local + 1]
    sizes = ends - starts
    if len(local) == 0:
        return np.zeros(0, dtype=ds.dtype), sizes
    lo, hi = int(starts.min()), int(ends.max())
    try:
        span = ds[lo:hi]
    except (OSError, RuntimeError) as e:
        raise _ragged_failure(ds, e, starts, ends, local, ids, what) from None
    if np.all(np.diff(local) == 1):
        return span, sizes
    return span[_segments(starts - lo, sizes)], sizes


def _decode(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    base = int(offsets[0])
    return [
        raw[int(a) - base : int(b) - base].decode("utf-8")
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]


def _strings(g: h5py.Group, lo: int, hi: int) -> list[str]:
    off = _read(g["offsets"], slice(lo, hi + 1))
    if hi <= lo:
        return []
    return _decode(_read(g["data"], slice(int(off[0]), int(off[-1]))), off)


def _damaged(path: str | os.PathLike, e: BaseException) -> StoreError:
    """h5py's error on damaged metadata (a ``KeyError``/``OSError`` for a bad checksum) as one
    line naming the file."""
    text = " ".join(str(e).split())
    return StoreError(
        f"{path}: damaged or incomplete store ({text}); "
        f"run `attncmp store validate {path}` for details"
    )


class _Shard:
    """One open store file and its cached per-sample index arrays (committed part only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = _open_h5(path)
        try:
            _check_header(path, self.f)
            self.attrs = dict(self.f.attrs)
            self.models: list[str] = json.loads(self.f.attrs["models"])
            _check_stamps(path, self.f, self.models)
            self.load()
        except StoreError:
            self.f.close()
            raise
        except (KeyError, ValueError, OSError) as e:
            self.f.close()
            raise _damaged(path, e) from None
        except BaseException:
            self.f.close()
            raise

    def load(self) -> None:
        f = self.f
        n = int(_read(f["commit"], 0))
        self.n = n
        smp = f["samples"]
        self.ids = _strings(smp["id"], 0, n)
        self.n_nodes = _read(smp["n_nodes"], slice(n)).astype(np.int64)
        self.n_tokens = _read(smp["n_tokens"], slice(n)).astype(np.int64)
        self.node_off = _read(f["nodes/offsets"], slice(n + 1))
        self.token_off = _read(f["tokens/offsets"], slice(n + 1))
        self.site_off: dict[tuple[str, str], np.ndarray] = {}
        for m in self.models:
            for s in f["models"][m]["attention"]:
                off = f["models"][m]["attention"][s]["offsets"]
                self.site_off[(m, s)] = _read(off, slice(n + 1))
        self.has_gold = "gold" in f
        if self.has_gold:
            self.gold_off = _read(f["gold/offsets"], slice(n + 1))
            self.gold_present = _read(f["gold/present"], slice(n)).astype(bool)

    def refresh(self) -> bool:
        if not self.f.swmr_mode:  # opened without a writer present: nothing new can appear
            return False
        c = self.f["commit"]
        c.refresh()
        if int(c[0]) == self.n:
            return False
        self.f.visititems(
            lambda _name, obj: obj.refresh() if isinstance(obj, h5py.Dataset) else None
        )
        self.load()
        return True


@dataclass(frozen=True)
class Superblock:
    """What an HDF5 file's version 2/3 superblock (at offset 0) says, read without HDF5."""

    version: int
    flags: int  # file-consistency flags: bit 0 open for writing, bit 2 open for SWMR writing
    eof: int  # end-of-file address recorded by the library (absolute)
    size: int  # the file's actual size

    @property
    def writing(self) -> bool:
        """A writer has the file open, or was killed before closing it."""
        return bool(self.flags & 0b101)

    @property
    def truncated(self) -> bool:
        return self.size < self.eof


def superblock_info(path: str | os.PathLike) -> Superblock | None:
    """Parse a version 2/3 superblock at offset 0 (what ``libver="latest"`` writes).

    Returns None for other superblock versions, a user block, or a file that is not HDF5. Used to
    refuse truncated files *before* opening them in SWMR mode, where HDF5 would retry reads past
    the end of file for a long time instead of failing.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(48)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return None
    if len(head) < 12 or head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3):
        return None
    o = head[9]  # size of offsets
    if o not in (2, 4, 8) or len(head) < 12 + 3 * o:
        return None
    base = int.from_bytes(head[12 : 12 + o], "little")
    eof = int.from_bytes(head[12 + 2 * o : 12 + 3 * o], "little")
    return Superblock(version=head[8], flags=head[11], eof=base + eof, size=size)


def _open_h5(path: Path) -> h5py.File:
    """Open read-only: in SWMR mode when a writer has the file open (so :meth:`Store.refresh`
    sees new commits), plainly otherwise."""
    if not path.exists():
        raise StoreError(f"{path}: no such file; pass the path of an attncmp store (.h5)")
    if path.is_dir():
        raise StoreError(f"{path}: is a directory; pass the path of an attncmp store (.h5)")
    sb = superblock_info(path)
    if sb is not None and sb.truncated:
        raise StoreError(
            f"{path}: the file is truncated ({sb.size} of {sb.eof} bytes; an interrupted copy or "
            "a full disk?); copy it again or re-run the extraction"
        )
    if sb is not None and sb.writing:
        try:
            return h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            pass
    try:
        return h5py.File(path, "r")
    except OSError as e:
        text = str(e)
        if "signature" in text:
            why = "not an HDF5 file"
        elif "truncated" in text:
            why = "the file is truncated"
        else:
            inner = text.partition("(")[2]
            why = inner[:-1] if inner.endswith(")") else (inner or text or "unreadable")
        raise StoreError(
            f"{path}: cannot be opened as HDF5 ({why}); pass an attncmp store (.h5)"
        ) from None


def _check_header(path: Path, f: h5py.File) -> None:
    if f.attrs.get("schema") != S.SCHEMA_NAME:
        raise StoreError(
            f"{path}: not an attncmp store (no root attribute schema='{S.SCHEMA_NAME}'); "
            "pass a file written by `attncmp extract`"
        )
    try:
        major, minor = S.parse_version(f.attrs["schema_version"])
    except (KeyError, ValueError):
        raise StoreError(f"{path}: missing or malformed schema_version attribute") from None
    if major > S.SCHEMA_MAJOR:
        raise StoreVersionError(
            f"{path}: store schema version {major}.{minor} is newer than this attncmp reads "
            f"({S.SCHEMA_VERSION}); upgrade attncmp (pip install -U attncmp)"
        )
    for name in ("commit", "samples", "nodes", "tokens", "models", "selection"):
        if name not in f:
            raise StoreError(f"{path}: required element /{name} is missing; the store is damaged")
    E.check(f, E.ROOT, path)


def _check_stamps(path: Path, f: h5py.File, models: list[str]) -> None:
    """Check the encoding stamp of every element this reader reads (store_schema.md 1.3): an
    element of a newer major version is refused ("upgrade attncmp"), never misread."""

    def check(name: str, enc: E.Encoding | None) -> h5py.Group:
        g = f.get(name)
        if not isinstance(g, h5py.Group):
            raise StoreError(
                f"{path}: required group /{name} is missing or damaged; "
                f"run `attncmp store validate {path}` for details"
            )
        if enc is not None:
            E.check(g, enc, path)
        return g

    check("selection/ids", E.STRING_ARRAY)
    check("samples", E.SAMPLES)
    check("samples/id", E.STRING_ARRAY)
    check("samples/split", E.STRING_ARRAY)
    meta = check("samples/meta", None)
    for name in meta:
        if isinstance(meta.get(name), h5py.Group):  # a str column (numeric ones are datasets)
            check(f"samples/meta/{name}", E.STRING_ARRAY)
    check("nodes", E.ITEMS)
    check("nodes/label", E.STRING_ARRAY)
    check("tokens", E.ITEMS)
    check("tokens/text", E.STRING_ARRAY)
    for m in models:
        check(f"models/{m}", E.MODEL)
        for site in check(f"models/{m}/attention", None):
            check(f"models/{m}/attention/{site}", E.ATTENTION)
    if "gold" in f:
        check("gold", E.GOLD)


class Store:
    """One store, possibly made of several shard files, in the recorded selection order."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        if not paths:
            raise StoreError("no store path given")
        self._shards: list[_Shard] = []
        try:
            for p in paths:
                self._shards.append(_Shard(Path(p)))
            self._check_shards()
            self._index()
        except StoreError:
            self.close()
            raise
        except (KeyError, ValueError, OSError) as e:  # metadata damaged past the header
            self.close()
            raise _damaged(" + ".join(str(p) for p in paths), e) from None
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------------------
    def _check_shards(self) -> None:
        first = self._shards[0]
        fp0 = json.loads(first.attrs["fingerprint"])
        fp0.pop("shard", None)
        self.selection_ids = _strings(
            first.f["selection/ids"], 0, first.f["selection/ids/offsets"].shape[0] - 1
        )
        for sh in self._shards[1:]:
            fp = json.loads(sh.attrs["fingerprint"])
            fp.pop("shard", None)
            if fp != fp0:
                from .writer import _diff

                key, a, b = _diff(fp0, fp)[0]
                raise StoreError(
                    f"{sh.path}: incompatible with {first.path}: {key} is {b!r} vs {a!r}; "
                    "only shards of one extraction run can be read together"
                )
            sel = sh.f["selection/ids"]
            if _strings(sel, 0, sel["offsets"].shape[0] - 1) != self.selection_ids:
                raise StoreError(
                    f"{sh.path}: its recorded sample selection differs from {first.path}'s; "
                    "only shards of one extraction run can be read together"
                )
        seen: dict[str, Path] = {}
        for sh in self._shards:
            for i in sh.ids:
                if i in seen:
                    raise StoreError(
                        f"{sh.path}: sample {i!r} also appears in {seen[i]}; "
                        "shards must not overlap"
                    )
                seen[i] = sh.path

    def _index(self) -> None:
        pos = {sid: k for k, sid in enumerate(self.selection_ids)}
        shard_of, local_of, gpos = [], [], []
        for s, sh in enumerate(self._shards):
            for j, sid in enumerate(sh.ids):
                shard_of.append(s)
                local_of.append(j)
                gpos.append(pos.get(sid, len(pos) + len(gpos)))
        order = np.argsort(np.asarray(gpos, dtype=np.int64), kind="stable")
        self._shard_of = np.asarray(shard_of, dtype=np.int64)[order]
        self._local_of = np.asarray(local_of, dtype=np.int64)[order]
        self.ids: list[str] = [
            self._shards[self._shard_of[k]].ids[self._local_of[k]] for k in range(len(order))
        ]
        self._pos = {sid: k for k, sid in enumerate(self.ids)}
        self.n_nodes = self._gather(lambda sh: sh.n_nodes)
        self.n_tokens = self._gather(lambda sh: sh.n_tokens)
        # gathered once per (re)index, not per chunk: read_site stays O(chunk)
        self._gold_present = (
            self._gather(lambda sh: sh.gold_present.astype(np.int64)).astype(bool)
            if all(sh.has_gold for sh in self._shards)
            else None
        )

    def _gather(self, get) -> np.ndarray:
        out = np.zeros(len(self.ids), dtype=np.int64)
        for s, sh in enumerate(self._shards):
            sel = self._shard_of == s
            out[sel] = get(sh)[self._local_of[sel]]
        return out

    # -- metadata -------------------------------------------------------------------------------
    @property
    def paths(self) -> list[Path]:
        return [sh.path for sh in self._shards]

    @property
    def attrs(self) -> dict[str, Any]:
        return self._shards[0].attrs

    @property
    def schema_version(self) -> str:
        return str(self.attrs["schema_version"])

    @property
    def models(self) -> list[str]:
        return list(self._shards[0].models)

    @property
    def baseline(self) -> str:
        return str(self.attrs["baseline"])

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.attrs["config"])

    @property
    def targets(self) -> list[str]:
        return json.loads(self.attrs["targets"])

    @property
    def attention_dtype(self) -> str:
        return str(self.attrs["attention_dtype"])

    @property
    def has_gold(self) -> bool:
        return bool(self.attrs.get("has_gold", False))

    @property
    def n_samples(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_planned(self) -> int:
        """Samples the run planned (the whole selection across all shards)."""
        return len(self.selection_ids)

    @property
    def is_partial(self) -> bool:
        """True when fewer samples are committed than the run selected (writer still running,
        crashed, or not all shards given)."""
        return self.n_samples < self.n_planned

    @property
    def selection_seed(self) -> int | None:
        v = int(self.attrs.get("selection_seed", -1))
        return None if v < 0 else v

    @property
    def split(self) -> str:
        return str(self.attrs.get("split", ""))

    def sites(self, model: str | None = None) -> dict[str, SiteInfo]:
        """Sites recorded for ``model`` (default: the baseline)."""
        m = model or self.baseline
        self._check_model(m)
        out = {}
        for name, g in self._shards[0].f["models"][m]["attention"].items():
            a = g.attrs
            out[name] = SiteInfo(
                name=name,
                query_axis=str(a["query_axis"]),
                key_axis=str(a["key_axis"]),
                n_layers=int(a["n_layers"]),
                n_heads=int(a["n_heads"]),
                description=str(a.get("description", "")),
                row_sum_tolerance=float(
                    a.get("row_sum_tolerance", S.row_sum_tolerance(self.attention_dtype))
                ),
                source_dtype=None if a.get("source_dtype") is None else str(a["source_dtype"]),
            )
        return out

    def provenance(self, model: str) -> dict[str, Any]:
        self._check_model(model)
        return json.loads(self._shards[0].f["models"][model].attrs["provenance"])

    def _check_model(self, model: str) -> None:
        if model not in self.models:
            raise StoreError(
                f"{self._shards[0].path}: no model {model!r}; the store has {self.models}"
            )

    def _check_site(self, site: str, model: str | None = None) -> SiteInfo:
        sites = self.sites(model)
        if site not in sites:
            raise StoreError(
                f"{self._shards[0].path}: no attention site {site!r}; the store has {sorted(sites)}"
            )
        return sites[site]

    def index_of(self, sample_id: str) -> int:
        try:
            return self._pos[sample_id]
        except KeyError:
            raise StoreError(
                f"{self._shards[0].path}: no committed sample with id {sample_id!r}"
            ) from None

    # -- per-sample columns ---------------------------------------------------------------------
    def _sample_column(self, path: str, tail: tuple[int, ...] = ()) -> np.ndarray:
        parts = []
        for sh in self._shards:
            parts.append(_read(sh.f[path], slice(sh.n)))
        data = np.concatenate(parts) if parts else np.zeros((0, *tail))
        flat_index = self._flat_index()
        return data[flat_index]

    def _flat_index(self) -> np.ndarray:
        base = np.cumsum([0] + [sh.n for sh in self._shards])[:-1]
        return base[self._shard_of] + self._local_of

    def _string_column(self, path: str) -> list[str]:
        vals: list[str] = []
        for sh in self._shards:
            vals += _strings(sh.f[path], 0, sh.n)
        fi = self._flat_index()
        return [vals[i] for i in fi]

    def target_array(self) -> np.ndarray:
        """Targets ``[n_samples, n_targets]`` in store order."""
        return self._sample_column("samples/target").astype(np.float64)

    def prediction_array(self, model: str) -> np.ndarray:
        """Predictions of ``model`` ``[n_samples, n_targets]`` in store order."""
        self._check_model(model)
        return self._sample_column(f"models/{model}/prediction").astype(np.float64)

    def split_column(self) -> list[str]:
        return self._string_column("samples/split")

    def meta_columns(self) -> dict[str, str]:
        g = self._shards[0].f["samples/meta"]
        return {k: str(g[k].attrs["kind"]) for k in g}

    def meta_column(self, name: str) -> list[Any] | np.ndarray:
        kinds = self.meta_columns()
        if name not in kinds:
            raise StoreError(
                f"{self._shards[0].path}: no metadata column {name!r}; "
                f"the store has {sorted(kinds)}"
            )
        if kinds[name] == "str":
            return self._string_column(f"samples/meta/{name}")
        return self._sample_column(f"samples/meta/{name}")

    def samples_frame(self):
        """A polars DataFrame: one row per committed sample (id, position, split, n_nodes,
        n_tokens, target columns, metadata columns, prediction_<model> columns)."""
        import polars as pl

        cols: dict[str, Any] = {
            "sample_id": self.ids,
            "position": np.arange(self.n_samples),
            "split": self.split_column(),
            "n_nodes": self.n_nodes,
            "n_tokens": self.n_tokens,
        }
        tgt = self.target_array()
        for j, name in enumerate(self.targets):
            cols[name] = tgt[:, j] if len(tgt) else np.zeros(0)
        for name in self.meta_columns():
            cols[f"meta_{name}"] = self.meta_column(name)
        for m in self.models:
            pred = self.prediction_array(m)
            for j, name in enumerate(self.targets):
                suffix = "" if len(self.targets) == 1 else f"_{name}"
                cols[f"prediction_{m}{suffix}"] = pred[:, j] if len(pred) else np.zeros(0)
        return pl.DataFrame(cols)

    # -- attention ------------------------------------------------------------------------------
    def _locate(self, positions: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Group store positions by shard: [(shard, positions-in-request, local indices)]."""
        out = []
        sh_of = self._shard_of[positions]
        for s in np.unique(sh_of):
            which = np.nonzero(sh_of == s)[0]
            out.append((int(s), which, self._local_of[positions[which]]))
        return out

    def _read_ragged(
        self, positions: np.ndarray, dataset: str, offsets_of, what: str = ""
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blocks of ``dataset`` for ``positions`` (in that order): (flat data, offsets [c+1]).

        ``what`` (e.g. "model 'full', site 'fine_grained'") goes into a read error's message."""
        parts = self._locate(positions)
        sizes = np.zeros(len(positions), dtype=np.int64)
        if len(parts) == 1:
            s, _which, local = parts[0]
            sh = self._shards[s]
            data, sz = _read_rows(sh.f[dataset], offsets_of(sh), local, sh.ids, what)
            sizes[:] = sz
            return data, np.concatenate(([0], np.cumsum(sizes)))
        datas, starts = [], np.zeros(len(positions), dtype=np.int64)
        base = 0
        for s, which, local in parts:
            sh = self._shards[s]
            data, sz = _read_rows(sh.f[dataset], offsets_of(sh), local, sh.ids, what)
            sizes[which] = sz
            starts[which] = base + np.concatenate(([0], np.cumsum(sz)[:-1]))
            base += len(data)
            datas.append(data)
        data = np.concatenate(datas)[_segments(starts, sizes)]
        return data, np.concatenate(([0], np.cumsum(sizes)))

    def _axis_len(self, axis: str, positions: np.ndarray) -> np.ndarray:
        if axis == "nodes":
            return self.n_nodes[positions]
        if axis == "tokens":
            return self.n_tokens[positions]
        return np.ones(len(positions), dtype=np.int64)

    def read_site(
        self, site: str, positions: Sequence[int] | np.ndarray, models: Sequence[str] | None = None
    ) -> SiteChunk:
        """Attention of ``site`` for the samples at store ``positions`` (in that order)."""
        positions = np.asarray(positions, dtype=np.int64)
        models = list(models) if models is not None else self.models
        for m in models:
            self._check_model(m)
        info = self._check_site(site)
        nq = self._axis_len(info.query_axis, positions)
        nk = self._axis_len(info.key_axis, positions)
        blocks = {}
        for m in models:
            mi = self._check_site(site, m)
            data, off = self._read_ragged(
                positions,
                f"models/{m}/attention/{site}/data",
                lambda sh, m=m: sh.site_off[(m, site)],
                f"model {m!r}, site {site!r}",
            )
            blocks[m] = FlatBlocks(
                data.astype(np.float32, copy=False), off, mi.n_layers, mi.n_heads
            )
        if info.key_axis == "tokens":
            special, koff = self._read_ragged(
                positions, "tokens/special", lambda sh: sh.token_off, "special-token flags"
            )
            special = special.astype(bool)
        else:
            special = np.zeros(int(nk.sum()), dtype=bool)
            koff = np.concatenate(([0], np.cumsum(nk)))
        chunk = SiteChunk(
            site=site,
            ids=[self.ids[p] for p in positions],
            index=positions,
            n_query=nq,
            n_key=nk,
            blocks=blocks,
            key_special=special,
            key_offsets=koff,
        )
        if self.has_gold and info.query_axis == "nodes" and info.key_axis == "tokens":
            gold, goff = self._read_ragged(
                positions, "gold/data", lambda sh: sh.gold_off, "gold masks"
            )
            chunk.gold = gold.astype(bool)
            chunk.gold_offsets = goff
            chunk.gold_present = self._gold_present[positions]
        return chunk

    def iter_chunks(
        self,
        site: str,
        models: Sequence[str] | None = None,
        chunk_samples: int = 256,
    ) -> Iterator[SiteChunk]:
        """Iterate ``site`` over committed samples in store order, ``chunk_samples`` at a time."""
        if chunk_samples < 1:
            raise ValueError("`chunk_samples` must be >= 1")
        self._check_site(site)
        n = self.n_samples
        for lo in range(0, n, chunk_samples):
            yield self.read_site(site, np.arange(lo, min(n, lo + chunk_samples)), models)

    def attention(self, model: str, site: str, sample: str | int) -> np.ndarray:
        """One sample's matrix ``[layers, heads, query, key]`` as float32."""
        k = self.index_of(sample) if isinstance(sample, str) else int(sample)
        ch = self.read_site(site, [k], [model])
        return ch.matrix(model, 0)

    def gold(self, sample: str | int) -> np.ndarray | None:
        """Gold alignment ``[n_nodes, n_tokens]`` (bool) or None."""
        if not self.has_gold:
            return None
        k = self.index_of(sample) if isinstance(sample, str) else int(sample)
        s, local = int(self._shard_of[k]), int(self._local_of[k])
        sh = self._shards[s]
        if not sh.gold_present[local]:
            return None
        a, b = int(sh.gold_off[local]), int(sh.gold_off[local + 1])
        return (
            _read(sh.f["gold/data"], slice(a, b), f" (gold mask of {self.ids[k]!r})")
            .astype(bool)
            .reshape(int(sh.n_nodes[local]), int(sh.n_tokens[local]))
        )

    def sample(self, sample: str | int, *, with_attention: bool = True) -> Sample:
        """Random access to one sample by id (or position)."""
        k = self.index_of(sample) if isinstance(sample, str) else int(sample)
        if not 0 <= k < self.n_samples:
            raise StoreError(f"{self._shards[0].path}: sample position {k} out of range")
        s, j = int(self._shard_of[k]), int(self._local_of[k])
        sh = self._shards[s]
        f = sh.f
        n0, n1 = int(sh.node_off[j]), int(sh.node_off[j + 1])
        t0, t1 = int(sh.token_off[j]), int(sh.token_off[j + 1])
        meta: dict[str, Any] = {}
        for name, kind in self.meta_columns().items():
            g = f["samples/meta"][name]
            meta[name] = _strings(g, j, j + 1)[0] if kind == "str" else _read(g, j).item()
        out = Sample(
            id=self.ids[k],
            index=k,
            split=_strings(f["samples/split"], j, j + 1)[0],
            n_nodes=n1 - n0,
            n_tokens=t1 - t0,
            node_labels=_strings(f["nodes/label"], n0, n1),
            tokens=_strings(f["tokens/text"], t0, t1),
            special=_read(f["tokens/special"], slice(t0, t1)).astype(bool),
            target=_read(f["samples/target"], j).astype(np.float64),
            predictions={
                m: _read(f[f"models/{m}/prediction"], j).astype(np.float64) for m in self.models
            },
            meta=meta,
            gold=self.gold(k),
        )
        if with_attention:
            for m in self.models:
                out.attention[m] = {
                    site: self.read_site(site, [k], [m]).matrix(m, 0) for site in self.sites(m)
                }
        return out

    def node_labels(self, sample: str | int) -> list[str]:
        return self.sample(sample, with_attention=False).node_labels

    def tokens(self, sample: str | int) -> tuple[list[str], np.ndarray]:
        smp = self.sample(sample, with_attention=False)
        return smp.tokens, smp.special

    # -- flat batches (used by merge and crash recovery) ---------------------------------------
    def iter_flat_batches(self, batch_samples: int = 256) -> Iterator[FlatBatch]:
        """Re-emit the committed samples, in store order, as writer-ready :class:`FlatBatch` es.

        Attention is returned in the stored dtype (no float32 round trip). Every column is read
        with one contiguous read per shard and batch, so this runs at I/O speed (used by merge
        and crash recovery).
        """
        if batch_samples < 1:
            raise ValueError("`batch_samples` must be >= 1")
        meta_kinds = self.meta_columns()
        sites = list(self.sites())
        for lo in range(0, self.n_samples, batch_samples):
            pos = np.arange(lo, min(self.n_samples, lo + batch_samples))
            cols = self._bulk_columns(pos, meta_kinds)
            attention: dict[str, dict[str, np.ndarray]] = {m: {} for m in self.models}
            for site in sites:
                for m in self.models:
                    data, _off = self._read_ragged(
                        pos,
                        f"models/{m}/attention/{site}/data",
                        lambda sh, m=m, site=site: sh.site_off[(m, site)],
                        f"model {m!r}, site {site!r}",
                    )
                    attention[m][site] = data
            gold_present = gold = None
            if self.has_gold:
                gold_present = self._gold_present[pos]
                gold, _off = self._read_ragged(
                    pos, "gold/data", lambda sh: sh.gold_off, "gold masks"
                )
                gold = gold.astype(bool)
            yield FlatBatch(
                ids=[self.ids[p] for p in pos],
                n_nodes=self.n_nodes[pos].copy(),
                n_tokens=self.n_tokens[pos].copy(),
                node_labels=cols["node_labels"],
                tokens=cols["tokens"],
                special=cols["special"],
                targets=cols["targets"],
                predictions=cols["predictions"],
                attention=attention,
                splits=cols["splits"],
                meta=cols["meta"],
                gold_present=gold_present,
                gold=gold,
            )

    def _bulk_columns(self, positions: np.ndarray, meta_kinds: dict[str, str]) -> dict[str, Any]:
        """Non-attention columns of ``positions`` (in that order), one span read per shard."""
        c = len(positions)
        splits: list[str] = [""] * c
        labels: list[list[str]] = [[] for _ in range(c)]
        tokens: list[list[str]] = [[] for _ in range(c)]
        special: list[np.ndarray] = [np.zeros(0, bool)] * c
        targets = np.zeros((c, len(self.targets)), dtype=np.float64)
        preds = {m: np.zeros((c, len(self.targets)), dtype=np.float64) for m in self.models}
        meta: dict[str, list[Any]] = {name: [None] * c for name in meta_kinds}
        for s, which, local in self._locate(positions):
            sh = self._shards[s]
            f = sh.f
            lo, hi = int(local.min()), int(local.max()) + 1
            rel = local - lo
            split_span = _strings(f["samples/split"], lo, hi)
            n0, n1 = int(sh.node_off[lo]), int(sh.node_off[hi])
            t0, t1 = int(sh.token_off[lo]), int(sh.token_off[hi])
            label_span = _strings(f["nodes/label"], n0, n1)
            token_span = _strings(f["tokens/text"], t0, t1)
            special_span = _read(f["tokens/special"], slice(t0, t1)).astype(bool)
            targets[which] = _read(f["samples/target"], slice(lo, hi))[rel]
            for m in self.models:
                preds[m][which] = _read(f[f"models/{m}/prediction"], slice(lo, hi))[rel]
            for name, kind in meta_kinds.items():
                g = f["samples/meta"][name]
                span = _strings(g, lo, hi) if kind == "str" else _read(g, slice(lo, hi)).tolist()
                for k, r in zip(which, rel, strict=True):
                    meta[name][k] = span[r]
            for k, j in zip(which, local, strict=True):
                splits[k] = split_span[j - lo]
                a, b = int(sh.node_off[j]) - n0, int(sh.node_off[j + 1]) - n0
                labels[k] = label_span[a:b]
                a, b = int(sh.token_off[j]) - t0, int(sh.token_off[j + 1]) - t0
                tokens[k] = token_span[a:b]
                special[k] = special_span[a:b]
        return {
            "splits": splits,
            "node_labels": [x for ls in labels for x in ls],
            "tokens": [x for ts in tokens for x in ts],
            "special": np.concatenate(special) if c else np.zeros(0, bool),
            "targets": targets,
            "predictions": preds,
            "meta": meta,
        }

    # -- lifecycle ------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Pick up samples committed since opening (SWMR); returns the new sample count."""
        changed = False
        for sh in self._shards:
            changed |= sh.refresh()
        if changed:
            self._index()
        return self.n_samples

    def close(self) -> None:
        for sh in self._shards:
            if sh.f.id.valid:
                sh.f.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        paths = ", ".join(str(p) for p in self.paths)
        return f"Store({paths}: {self.n_samples}/{self.n_planned} samples, models={self.models})"


def open_store(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Store:
    """Open one store file or several shard files of one run as a single :class:`Store`."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return Store(list(paths))
