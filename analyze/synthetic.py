"""Synthetic attention stores for tests, simulations, benchmarks and examples (numpy + store only).

Each model's attention rows are ``softmax(sharpness * z)`` with ``z ~ N(0, 1)`` i.i.d. per cell, so
a model with a larger ``sharpness`` is more concentrated (lower entropy, higher max weight, higher
Gini). Two models with the same sharpness draw from the same distribution (a null comparison).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from attncmp.store import ModelSpec, SampleRecord, SiteSpec, StoreSpec, StoreWriter
from attncmp.store.synthetic import softmax_rows

__all__ = ["write_synthetic_store", "DEFAULT_SITES"]

DEFAULT_SITES = (
    SiteSpec("atom_to_text", "nodes", "tokens", n_layers=1, n_heads=4, description="fine-grained"),
)


def write_synthetic_store(
    path: str | os.PathLike,
    *,
    n_samples: int = 64,
    models: Sequence[str] = ("full", "no_middle"),
    sharpness: Mapping[str, float] | None = None,
    sites: Sequence[SiteSpec] = DEFAULT_SITES,
    nodes: tuple[int, int] = (1, 12),
    tokens: tuple[int, int] = (1, 20),
    n_special: int = 2,
    gold: bool = False,
    identical_rows: Sequence[str] = (),
    seed: int = 0,
    dtype: str = "float32",
    compression: str = "gzip",
    batch: int = 128,
    noise: Mapping[str, float] | None = None,
    shared_base: float = 0.0,
) -> Path:
    """Write a store of ``n_samples`` random samples and return its path.

    Parameters
    ----------
    sharpness : per-model logit scale (default 1.0 each); larger = more concentrated.
    nodes, tokens : inclusive ranges of node / token counts per sample (uniform).
    n_special : special tokens per sample ([CLS] first, [SEP] last) when it has enough tokens.
    gold : also write gold masks (about one gold token for half of the nodes).
    identical_rows : models whose rows are all equal within a sample (broadcast attention).
    noise : per-model prediction noise sd (default 0.3); predictions = target + noise.
    shared_base : weight of a per-sample logit pattern shared by all models (0 = independent).
    """
    rng = np.random.default_rng(seed)
    sharp = {m: 1.0 for m in models}
    sharp.update(sharpness or {})
    nz = {m: 0.3 for m in models}
    nz.update(noise or {})
    ids = tuple(f"s{i:06d}" for i in range(n_samples))
    spec = StoreSpec(
        models=tuple(ModelSpec(m, {"synthetic": True, "sharpness": sharp[m]}) for m in models),
        sites=tuple(sites),
        selection_ids=ids,
        targets=("target",),
        meta_columns=(("group", "str"), ("weight", "float")),
        config={"synthetic": True, "seed": seed},
        selection_seed=seed,
        split="test",
        dtype=dtype,
        compression=compression,
        has_gold=gold,
    )
    path = Path(path)
    with StoreWriter.create(path, spec, overwrite=True) as w:
        recs: list[SampleRecord] = []
        for i, sid in enumerate(ids):
            nn = int(rng.integers(nodes[0], nodes[1] + 1))
            nt = int(rng.integers(tokens[0], tokens[1] + 1))
            special = np.zeros(nt, dtype=bool)
            if n_special >= 1 and nt >= 3:
                special[0] = True
            if n_special >= 2 and nt >= 3:
                special[-1] = True
            target = float(rng.normal())
            att: dict[str, dict[str, np.ndarray]] = {m: {} for m in models}
            for s in sites:
                q = {"nodes": nn, "tokens": nt, "single": 1}[s.query_axis]
                k = {"nodes": nn, "tokens": nt, "single": 1}[s.key_axis]
                base = rng.standard_normal((1, 1, q, k)) * shared_base
                for m in models:
                    shape = (s.n_layers, s.n_heads, 1 if m in identical_rows else q, k)
                    z = rng.standard_normal(shape) + base[:, :, : shape[2]]
                    a = softmax_rows(z * sharp[m])
                    att[m][s.name] = np.broadcast_to(a, (s.n_layers, s.n_heads, q, k)).copy()
            g = None
            if gold:
                g = np.zeros((nn, nt), dtype=bool)
                has = rng.random(nn) < 0.5
                g[np.flatnonzero(has), rng.integers(0, nt, size=int(has.sum()))] = True
            recs.append(
                SampleRecord(
                    id=sid,
                    node_labels=[["C", "N", "O", "Cl"][j % 4] for j in range(nn)],
                    tokens=[f"t{j}" for j in range(nt)],
                    special=special,
                    target=target,
                    predictions={m: target + float(rng.normal()) * nz[m] for m in models},
                    attention=att,
                    split="test",
                    meta={"group": "ab"[i % 2], "weight": float(rng.random())},
                    gold=g,
                )
            )
            if len(recs) >= batch:
                w.append(recs)
                recs = []
        if recs:
            w.append(recs)
    return path
