"""What the writer accepts: one sample as a :class:`SampleRecord`, or a whole batch already
flattened as a :class:`FlatBatch` (the extraction engine builds the latter directly from one
device-to-host copy per site)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import StoreInputError


@dataclass
class SampleRecord:
    """One sample, numpy in. Attention matrices are ``[layers, heads, query, key]``, valid region
    only."""

    id: str
    node_labels: Sequence[str]
    tokens: Sequence[str]
    special: Sequence[bool] | np.ndarray
    target: Sequence[float] | np.ndarray | float
    predictions: Mapping[str, Sequence[float] | np.ndarray | float]
    attention: Mapping[str, Mapping[str, np.ndarray]]  # model -> site -> [L, H, Q, K]
    split: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    gold: np.ndarray | None = None  # bool [n_nodes, n_tokens] or None


@dataclass
class FlatBatch:
    """A batch of ``b`` samples in the store's flat layout.

    ``attention[model][site]`` is the concatenation over samples of each sample's C-ordered
    ``[layers, heads, query, key]`` block. ``gold`` concatenates ``[n_nodes, n_tokens]`` blocks of
    the samples whose ``gold_present`` is true (absent samples contribute nothing).
    """

    ids: list[str]
    n_nodes: np.ndarray  # int [b]
    n_tokens: np.ndarray  # int [b]
    node_labels: list[str]  # [sum n_nodes]
    tokens: list[str]  # [sum n_tokens]
    special: np.ndarray  # bool [sum n_tokens]
    targets: np.ndarray  # float [b, T]
    predictions: dict[str, np.ndarray]  # model -> float [b, T]
    attention: dict[str, dict[str, np.ndarray]]  # model -> site -> flat
    splits: list[str] = field(default_factory=list)
    meta: dict[str, list[Any]] = field(default_factory=dict)
    gold_present: np.ndarray | None = None  # bool [b]
    gold: np.ndarray | None = None  # bool flat

    def __len__(self) -> int:
        return len(self.ids)


def _as_row(x: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64)).reshape(-1)


def records_to_flat(records: Sequence[SampleRecord]) -> FlatBatch:
    """Concatenate per-sample records into a :class:`FlatBatch`."""
    if not records:
        raise StoreInputError("`records` is empty")
    models = list(records[0].attention)
    meta_cols = list(records[0].meta)
    attention: dict[str, dict[str, list[np.ndarray]]] = {
        m: {s: [] for s in records[0].attention[m]} for m in models
    }
    gold_present = np.zeros(len(records), dtype=bool)
    gold_parts: list[np.ndarray] = []
    for i, r in enumerate(records):
        if list(r.attention) != models:
            raise StoreInputError(
                f"sample {r.id!r}: models {list(r.attention)} differ from {models}"
            )
        for m in models:
            for s, parts in attention[m].items():
                if s not in r.attention[m]:
                    raise StoreInputError(f"sample {r.id!r}: model {m!r} lacks site {s!r}")
                parts.append(np.asarray(r.attention[m][s]).reshape(-1))
        if r.gold is not None:
            gold_present[i] = True
            gold_parts.append(np.asarray(r.gold, dtype=bool).reshape(-1))
    return FlatBatch(
        ids=[r.id for r in records],
        n_nodes=np.array([len(r.node_labels) for r in records], dtype=np.int64),
        n_tokens=np.array([len(r.tokens) for r in records], dtype=np.int64),
        node_labels=[str(x) for r in records for x in r.node_labels],
        tokens=[str(x) for r in records for x in r.tokens],
        special=np.concatenate([np.asarray(r.special, dtype=bool).reshape(-1) for r in records]),
        targets=np.stack([_as_row(r.target) for r in records]),
        predictions={m: np.stack([_as_row(r.predictions[m]) for r in records]) for m in models},
        attention={
            m: {s: np.concatenate(parts) if parts else np.zeros(0) for s, parts in d.items()}
            for m, d in attention.items()
        },
        splits=[r.split for r in records],
        meta={c: [r.meta.get(c) for r in records] for c in meta_cols},
        gold_present=gold_present,
        gold=np.concatenate(gold_parts) if gold_parts else np.zeros(0, dtype=bool),
    )
