"""Deterministic synthetic stores for tests, benchmarks and examples (numpy only; no torch).

Every sample is generated from its own seed ``(seed, position in the selection)``, so the same
sample has the same content whatever the batching, the shard or the order of appends: a resumed
or sharded run produces exactly the samples of an uninterrupted one.

Attention rows are ``softmax(scale * z)`` with Gaussian ``z`` (a different scale per head and
model), which compresses like real attention much better than uniform noise would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .batch import FlatBatch
from .schema import ModelSpec, SiteSpec, StoreSpec, shard_ids
from .writer import StoreWriter, axis_length

__all__ = ["synthetic_spec", "synthetic_batch", "write_synthetic_store", "softmax_rows"]

_ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "H")
_WORDS = ("meth", "yl", "chloro", "benz", "ene", "ol", "amine", "prop", "an", "one", "fluoro")
KINDS = ("molecule", "crystal")
# crystal texts (robocrystallographer-like, WordPiece pieces): species -> (element, charge piece)
_SPECIES = {"Mg": "##²⁺", "O": "##²⁻", "Mn": "##³⁺", "Si": "##⁴⁺", "K": "##¹⁺", "Fe": "##²⁺"}
_FILLER = (
    "is bonded to",
    "equivalent",
    "atoms to form",
    "octahedra that share corners with",
    "tetrahedra",
    "and",
    "edges with",
    "the corner - sharing octahedral tilt angles are",
    "a",
    "distorted",
    "bent",
    "geometry",
    "There are",
    "inequivalent sites",
    "In the first site",
)


def synthetic_spec(
    n_samples: int = 20,
    *,
    models: Sequence[str] = ("full", "no_middle"),
    sites: Sequence[SiteSpec] = (SiteSpec("fine_grained", n_layers=1, n_heads=2),),
    dtype: str = "float16",
    compression: str = "gzip",
    has_gold: bool = False,
    meta: bool = True,
    targets: Sequence[str] = ("target",),
    shard: tuple[int, int] = (0, 1),
    selection_seed: int = 0,
    config: dict[str, Any] | None = None,
) -> StoreSpec:
    """A :class:`StoreSpec` for ``n_samples`` planned samples ``s0000, s0001, ...``."""
    return StoreSpec(
        models=tuple(
            ModelSpec(m, {"checkpoint": f"{m}.pt", "sha256": f"{i:064x}", "adapter": "synthetic"})
            for i, m in enumerate(models)
        ),
        sites=tuple(sites),
        selection_ids=tuple(f"s{i:04d}" for i in range(n_samples)),
        targets=tuple(targets),
        meta_columns=(("formula", "str"), ("mass", "float"), ("n_rings", "int")) if meta else (),
        config=dict(config or {"num_samples": n_samples, "batch_size": 8}),
        selection_seed=selection_seed,
        split="test",
        dtype=dtype,
        compression=compression,
        has_gold=has_gold,
        shard_index=shard[0],
        shard_count=shard[1],
    )


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in the input's dtype (rows sum to 1 up to its rounding); the
    one softmax of the synthetic-store generators."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _crystal(rng: np.random.Generator, n: int, t: int):
    """A crystal-like sample: element labels with many repeats and singletons (e.g. 60 % O, one
    Si, one Mn), a robocrystallographer-like text of ``t`` WordPiece tokens (``Mg`` + ``##²⁺``,
    numbers like ``2`` + ``##.`` + ``##09``), [CLS]/[SEP], and gold cells linking each atom to the
    element pieces of its species' mentions."""
    order = ["Mg", "O", "Mn", "Si"]
    n_o = max(1, (3 * n) // 5)
    n_si = 1 if n >= 3 else 0
    n_mn = 1 if n >= 4 else 0
    labels = ["O"] * n_o + ["Si"] * n_si + ["Mn"] * n_mn
    labels = ["Mg"] * (n - len(labels)) + labels
    labels = labels[:n]
    toks = ["[CLS]"]
    while len(toks) < t - 1:
        r = rng.random()
        if r < 0.12:
            el = order[int(rng.integers(0, len(order)))]
            toks += [el, _SPECIES[el]]
        elif r < 0.2:
            toks += [str(int(rng.integers(1, 4))), "##.", f"##{int(rng.integers(0, 99)):02d}"]
        else:
            toks += _FILLER[int(rng.integers(0, len(_FILLER)))].split()
    toks = toks[: t - 1] + ["[SEP]"] if t > 1 else ["[CLS]"]
    special = np.array([x in ("[CLS]", "[SEP]") for x in toks])
    lab = np.array(labels, dtype=object)
    tk = np.array(toks, dtype=object)
    gold = (lab[:, None] == tk[None, :]) & ~special[None, :]
    return labels, toks, special, gold


def _sample(
    spec: StoreSpec,
    pos: int,
    seed: int,
    nodes: tuple[int, int],
    tokens: tuple[int, int],
    kind: str = "molecule",
):
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng([seed, pos])
    n = int(rng.integers(nodes[0], nodes[1] + 1))
    t = int(rng.integers(tokens[0], tokens[1] + 1))
    att: dict[str, dict[str, np.ndarray]] = {}
    for mi, m in enumerate(spec.models):
        att[m.name] = {}
        for s in spec.sites:
            q = int(axis_length(s.query_axis, np.array([n]), np.array([t]))[0])
            k = int(axis_length(s.key_axis, np.array([n]), np.array([t]))[0])
            # per-head sharpness; later models a little more concentrated
            scale = (1.0 + 0.5 * np.arange(s.n_heads, dtype=np.float32)) * (1.0 + 0.25 * mi)
            z = rng.standard_normal((s.n_layers, s.n_heads, q, k), dtype=np.float32)
            att[m.name][s.name] = softmax_rows(z * scale[None, :, None, None])
    gold = (rng.random((n, t)) < 0.2) if spec.has_gold and pos % 2 == 0 else None
    special = np.zeros(t, dtype=bool)
    special[0] = True
    if t > 1:
        special[-1] = True
    labels = [_ELEMENTS[j] for j in rng.integers(0, len(_ELEMENTS), n)]
    tokens = ["[CLS]" if j == 0 else _WORDS[(pos + j) % len(_WORDS)] for j in range(t)]
    if kind == "crystal":
        labels, tokens, special, cgold = _crystal(rng, n, t)
        gold = cgold if spec.has_gold else None
    return {
        "n": n,
        "t": t,
        "labels": labels,
        "tokens": tokens,
        "special": special,
        "target": rng.standard_normal(len(spec.targets)),
        "pred": {m.name: rng.standard_normal(len(spec.targets)) for m in spec.models},
        "att": att,
        "gold": gold,
        "meta": {"formula": f"C{n}H{t}", "mass": float(12.0 * n), "n_rings": int(pos % 3)},
    }


def synthetic_batch(
    spec: StoreSpec,
    ids: Sequence[str],
    *,
    seed: int = 0,
    nodes: tuple[int, int] = (1, 6),
    tokens: tuple[int, int] = (1, 9),
    kind: str = "molecule",
) -> FlatBatch:
    """The samples ``ids`` (which must be in ``spec.selection_ids``) as one :class:`FlatBatch`.

    Node and token counts are drawn uniformly from the inclusive ranges ``nodes`` / ``tokens``.
    ``kind="crystal"`` gives crystal-like samples (element labels with repeats and singletons,
    robocrystallographer-like WordPiece texts, gold cells for every sample when the spec has gold).
    """
    pos = {sid: k for k, sid in enumerate(spec.selection_ids)}
    smps = [_sample(spec, pos[i], seed, nodes, tokens, kind) for i in ids]
    meta_names = [name for name, _kind in spec.meta_columns]
    golds = [s["gold"].reshape(-1) for s in smps if s["gold"] is not None]
    return FlatBatch(
        ids=list(ids),
        n_nodes=np.array([s["n"] for s in smps], dtype=np.int64),
        n_tokens=np.array([s["t"] for s in smps], dtype=np.int64),
        node_labels=[x for s in smps for x in s["labels"]],
        tokens=[x for s in smps for x in s["tokens"]],
        special=np.concatenate([s["special"] for s in smps]),
        targets=np.stack([s["target"] for s in smps]),
        predictions={m.name: np.stack([s["pred"][m.name] for s in smps]) for m in spec.models},
        attention={
            m.name: {
                st.name: np.concatenate([s["att"][m.name][st.name].reshape(-1) for s in smps])
                for st in spec.sites
            }
            for m in spec.models
        },
        splits=[spec.split] * len(smps),
        meta={c: [s["meta"][c] for s in smps] for c in meta_names},
        gold_present=np.array([s["gold"] is not None for s in smps]) if spec.has_gold else None,
        gold=np.concatenate(golds) if golds else None,
    )


def write_synthetic_store(
    path: str | os.PathLike,
    spec: StoreSpec,
    *,
    batch_size: int = 8,
    seed: int = 0,
    ids: Sequence[str] | None = None,
    overwrite: bool = False,
    **kw: Any,
) -> Path:
    """Create ``path`` and append ``ids`` (default: the spec's shard block) in batches."""
    if ids is None:
        ids = shard_ids(spec.selection_ids, spec.shard_index, spec.shard_count)
    ids = list(ids)
    with StoreWriter.create(path, spec, overwrite=overwrite) as w:
        for lo in range(0, len(ids), batch_size):
            w.append(synthetic_batch(spec, ids[lo : lo + batch_size], seed=seed, **kw))
    return Path(path)
