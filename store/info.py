"""A human summary of a store: models, sites, samples, sizes on disk and the compression ratio.

The ratio compares the bytes the attention weights take on disk with the layout the original
workflow used: a dense float32 array per model and site, every sample padded to the store's
largest query and key lengths, ``n_samples x layers x heads x max_query x max_key x 4`` bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError
from .reader import Store, open_store

__all__ = ["StoreInfo", "ModelInfo", "SiteSize", "store_info"]

# provenance keys worth showing first, in this order (others follow, scalars only)
_HIGHLIGHTS = (
    "checkpoint",
    "checkpoint_path",
    "sha256",
    "checkpoint_sha256",
    "adapter",
    "device",
    "dtype",
    "seed",
    "torch",
    "torch_version",
)


@dataclass(frozen=True)
class SiteSize:
    """One model's attention at one site: its shape description and sizes in bytes."""

    model: str
    site: str
    query_axis: str
    key_axis: str
    n_layers: int
    n_heads: int
    n_weights: int  # stored weights (valid regions only)
    bytes_on_disk: int  # data + offsets, as allocated in the file(s)
    bytes_float32: int  # the valid regions as raw float32
    bytes_dense_float32: int  # padded to max query x max key over the store

    @property
    def ratio_vs_dense(self) -> float:
        return self.bytes_dense_float32 / self.bytes_on_disk if self.bytes_on_disk else float("nan")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    baseline: bool
    provenance: dict[str, Any]
    bytes_on_disk: int  # predictions + attention of this model


@dataclass(frozen=True)
class StoreInfo:
    paths: list[str]
    schema_version: str
    created: str
    tool_version: str
    n_committed: int
    n_planned: int
    partial: bool
    split: str
    selection_seed: int | None
    targets: list[str]
    attention_dtype: str
    compression: str
    has_gold: bool
    n_gold: int
    shards: list[str]  # "i/n" per file
    n_nodes: tuple[int, int]  # (min, max) over committed samples; (0, 0) when empty
    n_tokens: tuple[int, int]
    models: list[ModelInfo]
    sites: list[SiteSize]
    file_bytes: int
    meta_columns: dict[str, str] = field(default_factory=dict)

    @property
    def attention_bytes(self) -> int:
        return sum(s.bytes_on_disk for s in self.sites)

    @property
    def dense_float32_bytes(self) -> int:
        return sum(s.bytes_dense_float32 for s in self.sites)

    @property
    def ratio_vs_dense(self) -> float:
        """Dense padded float32 bytes / attention bytes on disk (higher is better)."""
        a = self.attention_bytes
        return self.dense_float32_bytes / a if a else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_bytes"] = self.attention_bytes
        d["dense_float32_bytes"] = self.dense_float32_bytes
        d["ratio_vs_dense"] = self.ratio_vs_dense
        for s in d["sites"]:
            s["ratio_vs_dense"] = (
                s["bytes_dense_float32"] / s["bytes_on_disk"] if s["bytes_on_disk"] else None
            )
        return d

    def render(self) -> str:
        """Multi-line text for a terminal."""
        out = []
        files = ", ".join(self.paths)
        out.append(f"store        {files}")
        out.append(
            f"schema       {self.schema_version}   written by attncmp {self.tool_version} "
            f"on {self.created}"
        )
        state = "PARTIAL" if self.partial else "complete"
        out.append(
            f"samples      {self.n_committed} of {self.n_planned} planned committed ({state})"
            + (f"; shards {', '.join(self.shards)}" if len(self.shards) > 1 else "")
        )
        seed = "none" if self.selection_seed is None else str(self.selection_seed)
        out.append(f"selection    split {self.split or '(unspecified)'}, seed {seed}")
        out.append(
            f"sizes        nodes {_rng(self.n_nodes)}, tokens {_rng(self.n_tokens)} per sample"
        )
        out.append(f"targets      {', '.join(self.targets)}")
        if self.meta_columns:
            out.append(
                "metadata     " + ", ".join(f"{k} ({v})" for k, v in self.meta_columns.items())
            )
        gold = f"yes ({self.n_gold} samples with a mask)" if self.has_gold else "no"
        out.append(f"gold masks   {gold}")
        out.append(f"attention    {self.attention_dtype}, compression {self.compression}")
        out.append("")
        out.append("models")
        for m in self.models:
            tag = " (baseline)" if m.baseline else ""
            out.append(f"  {m.name}{tag}  {_bytes(m.bytes_on_disk)} on disk")
            for k, v in _highlights(m.provenance):
                out.append(f"      {k}: {v}")
        out.append("")
        out.append("sites")
        header = (
            f"  {'model':<14} {'site':<16} {'query->key':<16} {'L':>3} {'H':>3} "
            f"{'weights':>12} {'on disk':>10} {'dense f32':>10} {'ratio':>7}"
        )
        out.append(header)
        for s in self.sites:
            out.append(
                f"  {s.model:<14} {s.site:<16} {s.query_axis + '->' + s.key_axis:<16} "
                f"{s.n_layers:>3} {s.n_heads:>3} {s.n_weights:>12,} {_bytes(s.bytes_on_disk):>10} "
                f"{_bytes(s.bytes_dense_float32):>10} {_ratio(s.ratio_vs_dense):>7}"
            )
        out.append("")
        out.append(
            f"total        {_bytes(self.file_bytes)} in {len(self.paths)} file(s); attention "
            f"{_bytes(self.attention_bytes)} vs {_bytes(self.dense_float32_bytes)} as dense "
            f"padded float32: {_ratio(self.ratio_vs_dense)} smaller"
        )
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


def store_info(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> StoreInfo:
    """Summarise one store or the shard files of one run (raises :class:`StoreError` when the
    store cannot be opened; use :func:`store.validate.validate_store` to diagnose)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    with open_store(paths) as st:
        try:
            return _info(st)
        except (KeyError, ValueError, OSError) as e:
            text = " ".join(str(e).split())
            raise StoreError(
                f"{st.paths[0]}: damaged or incomplete store ({text}); run "
                "`attncmp store validate` on it for details"
            ) from None


def _info(st: Store) -> StoreInfo:
    a = st.attrs
    files = [sh.f for sh in st._shards]
    n = st.n_samples
    sites: list[SiteSize] = []
    model_bytes: dict[str, int] = {}
    for m in st.models:
        mb = sum(_storage(f, f"models/{m}/prediction") for f in files)
        for name, si in st.sites(m).items():
            base = f"models/{m}/attention/{name}"
            on_disk = sum(
                _storage(f, f"{base}/data") + _storage(f, f"{base}/offsets") for f in files
            )
            n_weights = sum(int(sh.site_off[(m, name)][sh.n]) for sh in st._shards)
            q = _axis(st, si.query_axis)
            k = _axis(st, si.key_axis)
            max_q = int(q.max()) if n else 0
            max_k = int(k.max()) if n else 0
            dense = n * si.n_layers * si.n_heads * max_q * max_k * 4
            sites.append(
                SiteSize(
                    model=m,
                    site=name,
                    query_axis=si.query_axis,
                    key_axis=si.key_axis,
                    n_layers=si.n_layers,
                    n_heads=si.n_heads,
                    n_weights=n_weights,
                    bytes_on_disk=on_disk,
                    bytes_float32=4 * n_weights,
                    bytes_dense_float32=dense,
                )
            )
            mb += on_disk
        model_bytes[m] = mb
    n_gold = 0
    if st.has_gold:
        n_gold = int(sum(int(sh.gold_present.sum()) for sh in st._shards))
    return StoreInfo(
        paths=[str(p) for p in st.paths],
        schema_version=st.schema_version,
        created=str(a.get("created", "")),
        tool_version=str(a.get("tool_version", "")),
        n_committed=n,
        n_planned=st.n_planned,
        partial=st.is_partial,
        split=st.split,
        selection_seed=st.selection_seed,
        targets=st.targets,
        attention_dtype=st.attention_dtype,
        compression=str(a.get("compression", "")),
        has_gold=st.has_gold,
        n_gold=n_gold,
        shards=[
            f"{int(sh.attrs['shard_index'])}/{int(sh.attrs['shard_count'])}" for sh in st._shards
        ],
        n_nodes=_minmax(st.n_nodes),
        n_tokens=_minmax(st.n_tokens),
        models=[
            ModelInfo(m, m == st.baseline, st.provenance(m), model_bytes[m]) for m in st.models
        ],
        sites=sites,
        file_bytes=sum(Path(p).stat().st_size for p in st.paths),
        meta_columns=st.meta_columns(),
    )


def _storage(f, path: str) -> int:
    ds = f.get(path)
    return int(ds.id.get_storage_size()) if ds is not None else 0


def _axis(st: Store, axis: str) -> np.ndarray:
    if axis == "nodes":
        return st.n_nodes
    if axis == "tokens":
        return st.n_tokens
    return np.ones(st.n_samples, dtype=np.int64)


def _minmax(x: np.ndarray) -> tuple[int, int]:
    return (int(x.min()), int(x.max())) if len(x) else (0, 0)


def _rng(r: tuple[int, int]) -> str:
    return f"{r[0]}" if r[0] == r[1] else f"{r[0]}-{r[1]}"


def _bytes(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"  # pragma: no cover


def _ratio(r: float) -> str:
    return "n/a" if not np.isfinite(r) else f"{r:.1f}x"


def _highlights(prov: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for k in _HIGHLIGHTS:
        if k in prov and prov[k] not in (None, ""):
            out.append((k, _short(k, prov[k])))
    for k, v in sorted(prov.items()):
        if k in _HIGHLIGHTS or isinstance(v, dict | list) or v in (None, ""):
            continue
        out.append((k, _short(k, v)))
    return out[:12]


def _short(key: str, v: Any) -> str:
    s = str(v)
    if "sha" in key and len(s) > 16:
        return s[:16] + "..."
    return s if len(s) <= 80 else s[:77] + "..."
