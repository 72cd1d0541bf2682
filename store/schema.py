"""Schema constants and the small typed descriptions shared by writer, reader and validator.

The normative description of the layout is ``store_schema.md`` at the repository root; this module
is its executable counterpart. Nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from . import encodings as E
from .errors import StoreInputError

SCHEMA_NAME = "attncmp-store"
SCHEMA_VERSION = "1.0"  # "MAJOR.MINOR"; readers refuse a newer MAJOR
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])

# encoding-type / encoding-version of every stamped element (the registry is store/encodings.py)
ENC_ROOT = E.ROOT
ENC_STRING_ARRAY = E.STRING_ARRAY
ENC_SAMPLES = E.SAMPLES
ENC_ITEMS = E.ITEMS
ENC_MODEL = E.MODEL
ENC_ATTENTION = E.ATTENTION
ENC_GOLD = E.GOLD

AXES = ("nodes", "tokens", "single")  # "single": a length-1 axis (e.g. a pooled graph vector)
ATTENTION_DTYPES = ("float16", "float32")
META_KINDS = ("float", "int", "str")
COMPRESSIONS = ("gzip", "lzf", "none")

# chunk sizes in elements (chosen so chunks fall between 10 KiB and 1 MiB)
FLAT_CHUNK = 1 << 16  # 64 Ki elements: 128 KiB float16, 256 KiB float32
BYTES_CHUNK = 1 << 16
SAMPLE_CHUNK = 1 << 12

# How far an attention row's sum may be from 1, by the dtype the weights passed through: the one
# table for the engine's check, the writer's record and validate. 16-bit floats have 11 (float16)
# or 8 (bfloat16) significant bits, and rounding errors accumulate over up to a few hundred keys;
# 32/64-bit softmax rows are exact to ~1e-6, the rest is room for adapters that average or
# renormalise. A row computed in one dtype and stored in another gets the looser of the two
# (row_sum_tolerance), recorded per model and site in the store.
ROW_SUM_TOL = {"float64": 1e-3, "float32": 1e-3, "float16": 2e-2, "bfloat16": 2e-2}


def row_sum_tolerance(store_dtype: str, source_dtype: str | None = None) -> float:
    """The row-sum tolerance of weights computed in ``source_dtype`` (None: not known, only the
    storage counts) and stored as ``store_dtype``: the looser of their :data:`ROW_SUM_TOL` entries.
    A dtype missing from the table counts as 16-bit (the loosest)."""
    loosest = max(ROW_SUM_TOL.values())
    dtypes = [store_dtype] if source_dtype is None else [store_dtype, source_dtype]
    return max(ROW_SUM_TOL.get(str(d).removeprefix("torch."), loosest) for d in dtypes)


@dataclass(frozen=True)
class SiteSpec:
    """An attention site: which axis attends (query) over which (key), and its layers/heads.

    A site's per-sample matrix has shape ``(n_layers, n_heads, n_query, n_key)`` where the query and
    key lengths are the sample's length on ``query_axis`` / ``key_axis`` (``single`` has length 1).
    """

    name: str
    query_axis: str = "nodes"
    key_axis: str = "tokens"
    n_layers: int = 1
    n_heads: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise StoreInputError(f"site name {self.name!r} must be non-empty and contain no '/'")
        for axis in (self.query_axis, self.key_axis):
            if axis not in AXES:
                raise StoreInputError(f"site {self.name!r}: axis {axis!r} is not one of {AXES}")
        if self.n_layers < 1 or self.n_heads < 1:
            raise StoreInputError(f"site {self.name!r}: n_layers and n_heads must be >= 1")


@dataclass(frozen=True)
class ModelSpec:
    """A model variant and its provenance (checkpoint path + sha256, config, adapter, versions)."""

    name: str
    provenance: dict[str, Any] = field(default_factory=dict)
    # the dtype the model computes attention in ("float32", "bfloat16", ...; None: not known);
    # with the store's dtype it sets each site's recorded row-sum tolerance (row_sum_tolerance)
    source_dtype: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise StoreInputError(f"model name {self.name!r} must be non-empty and contain no '/'")


@dataclass(frozen=True)
class StoreSpec:
    """Everything fixed when a store is created (all datasets exist before SWMR starts)."""

    models: tuple[ModelSpec, ...]
    sites: tuple[SiteSpec, ...]
    selection_ids: tuple[str, ...]  # the ordered planned sample list (whole run, all shards)
    targets: tuple[str, ...] = ("target",)
    meta_columns: tuple[tuple[str, str], ...] = ()  # (name, kind) with kind in META_KINDS
    config: dict[str, Any] = field(
        default_factory=dict
    )  # extraction configuration (compared on append)
    selection_seed: int | None = None
    split: str = ""
    baseline: str | None = None
    dtype: str = "float16"
    compression: str = "gzip"
    has_gold: bool = False
    shard_index: int = 0
    shard_count: int = 1

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(names) < 1 or len(set(names)) != len(names):
            raise StoreInputError(f"model names must be unique and non-empty, got {names}")
        snames = [s.name for s in self.sites]
        if len(set(snames)) != len(snames):
            raise StoreInputError(f"site names must be unique, got {snames}")
        if self.dtype not in ATTENTION_DTYPES:
            raise StoreInputError(f"`dtype` must be one of {ATTENTION_DTYPES}, got {self.dtype!r}")
        if self.compression not in COMPRESSIONS:
            raise StoreInputError(
                f"`compression` must be one of {COMPRESSIONS}, got {self.compression!r}"
            )
        for name, kind in self.meta_columns:
            if kind not in META_KINDS:
                raise StoreInputError(
                    f"metadata column {name!r}: kind {kind!r} not in {META_KINDS}"
                )
        if len(set(self.selection_ids)) != len(self.selection_ids):
            raise StoreInputError("`selection_ids` contains duplicate sample ids")
        if self.baseline is not None and self.baseline not in names:
            raise StoreInputError(f"baseline {self.baseline!r} is not one of the models {names}")
        if not (0 <= self.shard_index < self.shard_count):
            raise StoreInputError(f"shard {self.shard_index}/{self.shard_count} is out of range")

    @property
    def baseline_name(self) -> str:
        return self.baseline if self.baseline is not None else self.models[0].name

    def fingerprint(self) -> dict[str, Any]:
        """The settings that must match for a writer to append to an existing store."""
        return {
            "models": [m.name for m in self.models],
            "sites": [asdict(s) for s in self.sites],
            "targets": list(self.targets),
            "meta_columns": [list(c) for c in self.meta_columns],
            "selection_seed": self.selection_seed,
            "split": self.split,
            "baseline": self.baseline_name,
            "dtype": self.dtype,
            "has_gold": self.has_gold,
            "shard": f"{self.shard_index}/{self.shard_count}",
            "n_selected": len(self.selection_ids),
            "config": self.config,
        }


def tool_version() -> str:
    """The installed attncmp version (``0.0.0+unknown`` when run from an uninstalled tree): the
    one lookup behind ``--version``, the store's ``tool_version`` and summary.json."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("attncmp")
    except PackageNotFoundError:  # pragma: no cover - not installed
        return "0.0.0+unknown"


def dumps(obj: Any) -> str:
    """Canonical JSON used for every JSON-valued attribute (sorted keys, no NaN)."""
    return json.dumps(obj, sort_keys=True, default=str, allow_nan=False)


def parse_version(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def shard_ids(selection_ids: tuple[str, ...] | list[str], index: int, count: int) -> list[str]:
    """The contiguous block of the ordered selection that shard ``index`` of ``count`` owns.

    Blocks are as equal as possible (sizes differ by at most one, larger blocks first, as
    ``numpy.array_split``); concatenating the shards in index order gives the selection order.
    """
    if not (0 <= index < count):
        raise StoreInputError(f"shard {index}/{count} is out of range")
    n = len(selection_ids)
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    stop = start + base + (1 if index < extra else 0)
    return list(selection_ids[start:stop])
