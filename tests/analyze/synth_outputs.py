"""Realistic synthetic stores for the output-side tests (heatmaps, figures, report, CLI).

Molecule-like samples: node labels are element symbols, texts are tokenised IUPAC-like names with
the model's own pieces ("[CLS]", "2", "-", "chloro", "eth", ..., "[SEP]"), gold masks link halogen
fragments to their atoms. The baseline ("full") attends more sharply than the variant
("no_middle"), so the hypothesis is supported on these stores; ``effect=0`` makes them identical in
distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from attncmp.store import ModelSpec, SampleRecord, SiteSpec, StoreSpec, StoreWriter
from attncmp.store.synthetic import softmax_rows

__all__ = ["make_molecules", "make_store", "one_model_store", "plain_h5"]

_HALO = {"chloro": "Cl", "fluoro": "F", "bromo": "Br", "iodo": "I"}
_STEMS = {"meth": 1, "eth": 2, "prop": 3, "but": 4, "pent": 5, "hex": 6, "benz": 6, "hept": 7}
_SUFFIX = {
    "an": [],
    "ane": [],
    "ol": ["O"],
    "al": ["O"],
    "one": ["O"],
    "oic": ["O", "O"],
    "amine": ["N"],
    "ene": [],
    "nitrile": ["N"],
}
_MULT = {1: [], 2: ["di"], 3: ["tri"]}


def make_molecules(n: int, rng: np.random.Generator, max_nodes: int = 24, max_tokens: int = 40):
    """``n`` (node_labels, tokens, special, gold) tuples, sizes capped as given."""
    out = []
    while len(out) < n:
        tokens = ["[CLS]"]
        atoms: list[str] = []
        halo_cols: list[tuple[int, str]] = []
        for _ in range(int(rng.integers(0, 4))):  # substituents
            frag = str(rng.choice(list(_HALO)))
            k = int(rng.integers(1, 4))
            locs = sorted(rng.choice(np.arange(1, 9), size=k, replace=False).tolist())
            for j, loc in enumerate(locs):
                if j:
                    tokens.append(",")
                tokens.append(str(loc))
            tokens.append("-")
            tokens += _MULT[k]
            halo_cols.append((len(tokens), _HALO[frag]))
            tokens.append(frag)
            atoms += [_HALO[frag]] * k
        if rng.random() < 0.3:
            tokens += ["4", "-", "nitro"]
            atoms += ["N", "O", "O"]
        for _ in range(int(rng.integers(1, 3))):
            stem = str(rng.choice(list(_STEMS)))
            tokens.append(stem)
            atoms = ["C"] * _STEMS[stem] + atoms
            if rng.random() < 0.3:
                tokens.append("yl")
        suf = str(rng.choice(list(_SUFFIX)))
        tokens.append(suf)
        atoms += _SUFFIX[suf]
        tokens.append("[SEP]")
        if not (2 <= len(atoms) <= max_nodes and len(tokens) <= max_tokens):
            continue
        perm = rng.permutation(len(atoms))
        atoms = [atoms[i] for i in perm]
        special = np.array([t.startswith("[") for t in tokens])
        gold = np.zeros((len(atoms), len(tokens)), dtype=bool)
        for col, el in halo_cols:
            gold[[i for i, a in enumerate(atoms) if a == el], col] = True
        nitro = [i for i, t in enumerate(tokens) if t == "nitro"]
        if nitro:
            gold[[i for i, a in enumerate(atoms) if a in ("N", "O")][:3], nitro[0]] = True
        out.append((atoms, tokens, special, gold))
    return out


def _attention(rng, gold, special, n_layers, n_heads, sharp, identical=False):
    q, k = gold.shape
    pref = rng.normal(0, 1, size=(n_heads, 1, k))
    logits = rng.normal(0, 1, size=(n_layers, n_heads, q, k)) + pref
    logits = logits + 2.5 * gold[None, None]
    logits[..., special] += 1.0  # a mild attention sink
    if identical:
        logits = np.broadcast_to(logits[:, :, :1], logits.shape).copy()
    return softmax_rows(sharp * logits)


def make_store(
    path: str | Path,
    n: int = 30,
    *,
    seed: int = 0,
    n_heads: int = 4,
    n_layers: int = 2,
    models: tuple[str, ...] = ("full", "no_middle"),
    effect: float = 0.6,
    gold: bool = True,
    n_planned: int | None = None,
    extra_sites: bool = True,
    identical_variant: bool = False,
    max_nodes: int = 24,
    max_tokens: int = 40,
    batch: int = 16,
    keep_open: bool = False,
    provenance: dict | None = None,
    config: dict | None = None,
):
    """Write a store of ``n`` committed samples (of ``n_planned`` selected) and return its path.

    Sites: ``atom_to_text`` (nodes -> tokens, ``n_layers`` x ``n_heads``) and, with
    ``extra_sites``, ``graph_to_text`` (single -> tokens) and ``text_pool`` (nodes -> single, a
    degenerate length-1 key axis). With ``keep_open`` the writer is returned too (partial stores).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_planned = n if n_planned is None else n_planned
    mols = make_molecules(n_planned, rng, max_nodes=max_nodes, max_tokens=max_tokens)
    ids = [f"FS{i:04d}" for i in range(n_planned)]
    sites = [SiteSpec("atom_to_text", "nodes", "tokens", n_layers, n_heads, "node -> token")]
    if extra_sites:
        sites += [
            SiteSpec("graph_to_text", "single", "tokens", 1, n_heads, "graph vector -> tokens"),
            SiteSpec("text_pool", "nodes", "single", 1, 1, "length-1 key (degenerate)"),
        ]
    prov = provenance or {}
    spec = StoreSpec(
        models=tuple(
            ModelSpec(
                m,
                prov.get(m)
                or {"checkpoint": f"/ckpt/{m}.pt", "sha256": f"{i:064x}", "adapter": "synthetic"},
            )
            for i, m in enumerate(models)
        ),
        sites=tuple(sites),
        selection_ids=tuple(ids),
        meta_columns=(("smiles", "str"), ("n_rings", "int")),
        config=config or {"num_samples": n_planned, "batch_size": batch, "synthetic": True},
        selection_seed=seed,
        split="test",
        has_gold=gold,
    )
    w = StoreWriter.create(path, spec)
    recs = []
    for i in range(n):
        atoms, tokens, special, g = mols[i]
        target = float(rng.normal(-3.0, 3.0))
        att, pred = {}, {}
        for j, m in enumerate(models):
            sharp = 1.0 + effect if j == 0 else 1.0
            ident = identical_variant and j > 0
            a = {"atom_to_text": _attention(rng, g, special, n_layers, n_heads, sharp, ident)}
            if extra_sites:
                a["graph_to_text"] = _attention(
                    rng, np.zeros((1, len(tokens)), bool), special, 1, n_heads, sharp
                )
                a["text_pool"] = np.ones((1, 1, len(atoms), 1))
            att[m] = a
            pred[m] = target + rng.normal(0, 0.8 if j == 0 else 1.0)
        recs.append(
            SampleRecord(
                id=ids[i],
                node_labels=atoms,
                tokens=tokens,
                special=special,
                target=target,
                predictions=pred,
                attention=att,
                split="test",
                meta={"smiles": "C" * len(atoms), "n_rings": int(rng.integers(0, 3))},
                gold=g if gold else None,
            )
        )
        if len(recs) == batch:
            w.append(recs)
            recs = []
    if recs:
        w.append(recs)
    if keep_open:
        return path, w
    w.close()
    return path


def one_model_store(path: str | Path) -> Path:
    return make_store(path, n=4, models=("full",), extra_sites=False)


def plain_h5(path: str | Path) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    return Path(path)
