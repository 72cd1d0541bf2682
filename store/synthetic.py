r"""Synthetic attention stores for tests, simulations, benchmarks and examples: the one generator
(numpy only; no torch).

One entry point, :func:`write_synthetic_store` (``spec`` from :func:`synthetic_spec`, how the
samples are drawn from :class:`SynthOptions`); :func:`synthetic_batch` gives the same samples as
a :class:`FlatBatch` for code that drives a :class:`StoreWriter` itself (resume, crash and SWMR
tests, write benchmarks).

**Determinism.** Every sample is drawn from its own generator seeded with ``(seed, position in
the selection)``, so a sample has the same content whatever the batching, the shard or the order
of appends: a resumed or sharded run writes exactly the samples of an uninterrupted one.

**Texts** (:mod:`store.synthetic_text`): ``kind="words"`` (random labels, repeating name
fragments), ``"molecule"`` (IUPAC-like names with gold cells linking halogen and nitro fragments
to their atoms) or ``"crystal"`` (robocrystallographer-like WordPiece texts, repeated and
singleton species, gold cells per species).

**Attention.** For each model, site, layer, head and query row, over the row's keys:

.. math::

    a = \mathrm{softmax}\big(s_m\,(1 + \delta h)\,(z + \beta\,b + \eta\,u_{m,h}
        + \alpha\,g + \kappa\,\mathbb{1}_{\text{special}})\big)

with i.i.d. :math:`z \sim N(0, 1)`; :math:`s_m` the model's ``sharpness`` (a larger value is
more concentrated: lower entropy, higher max weight and Gini), :math:`\delta` ``head_spread``
(head ``h`` sharper than head 0), :math:`b \sim N(0, 1)` a per-sample pattern shared by all models
(``shared_base``), :math:`u_{m,h} \sim N(0, 1)` a key preference of each model and head shared by
its rows (``head_bias``), :math:`g` the gold mask (``align``: attention finds the gold tokens) and
:math:`\kappa` ``sink`` (extra logit on special tokens). Models listed in ``identical_rows`` use
their first row for every row (broadcast attention, the original bug 9). Models with equal
options draw from the same distribution: a null comparison. Targets are :math:`N(0, 1)`;
predictions are the target plus :math:`N(0, \sigma_m^2)` noise (``noise``).

:data:`GRADED_HEADS` shapes rows like real attention for benchmarks; :data:`STUDY` and
:func:`study_sites` are the realistic study (molecule names, attention that finds
the gold tokens, an attention sink, three sites of which one is degenerate).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .batch import FlatBatch
from .schema import ModelSpec, SiteSpec, StoreSpec, shard_ids
from .synthetic_text import KINDS, SampleText, default_sizes, sample_text
from .writer import StoreWriter

__all__ = [
    "GRADED_HEADS",
    "KINDS",
    "META_COLUMNS",
    "STUDY",
    "SynthOptions",
    "softmax_rows",
    "study_sites",
    "synthetic_batch",
    "synthetic_spec",
    "write_synthetic_store",
]

#: the metadata columns the generator can fill, with their kinds
META_COLUMNS: dict[str, str] = {"formula": "str", "mass": "float", "n_rings": "int", "group": "str"}


@dataclass(frozen=True)
class SynthOptions:
    """How samples are drawn (see the module docstring for the attention formula). The defaults
    give a null store: every model draws from the same distribution.

    Parameters
    ----------
    kind : ``"words"``, ``"molecule"`` or ``"crystal"`` (:mod:`store.synthetic_text`).
    nodes, tokens : inclusive ranges of node / token counts per sample; ``None``: the kind's
        defaults (words and crystal (1, 6) x (1, 9); molecule (2, 24) x (4, 40)).
    seed : with the sample's position, seeds the sample's generator.
    sharpness : per-model logit scale (default 1.0); larger = more concentrated.
    head_spread : head ``h``'s logits are scaled by ``1 + head_spread * h``.
    shared_base : weight of a per-sample logit pattern shared by all models (0 = independent).
    head_bias : sd of a key preference per model and head, shared by its rows.
    align : logit added on gold cells (0 = attention ignores the gold alignment).
    sink : logit added on special tokens (an attention sink).
    identical_rows : models whose rows are all equal within a sample.
    noise : per-model prediction noise sd (default 0.3).
    n_special : special tokens of ``"words"`` texts of >= 3 tokens ([CLS] first, [SEP] last).
    """

    kind: str = "words"
    nodes: tuple[int, int] | None = None
    tokens: tuple[int, int] | None = None
    seed: int = 0
    sharpness: Mapping[str, float] = field(default_factory=dict)
    head_spread: float = 0.0
    shared_base: float = 0.0
    head_bias: float = 0.0
    align: float = 0.0
    sink: float = 0.0
    identical_rows: Sequence[str] = ()
    noise: Mapping[str, float] = field(default_factory=dict)
    n_special: int = 2

    def __post_init__(self) -> None:
        default_sizes(self.kind)  # validates the kind
        for name in ("nodes", "tokens"):
            r = getattr(self, name)
            if r is not None and not (len(r) == 2 and 0 < r[0] <= r[1]):
                raise ValueError(f"`{name}` must be (low, high) with 0 < low <= high; got {r!r}")

    def sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The ``(nodes, tokens)`` ranges in effect."""
        dn, dt = default_sizes(self.kind)
        return (self.nodes or dn, self.tokens or dt)


#: the realistic study: molecule names, attention that finds the gold tokens (``align``), a mild
#: attention sink on [CLS]/[SEP], heads with their own key preferences; add ``sharpness`` for a
#: planted effect (e.g. ``replace(STUDY, sharpness={"full": 1.6})``)
STUDY = SynthOptions(kind="molecule", align=2.5, sink=1.0, head_bias=1.0)


#: heads graded in sharpness (head ``h`` scaled by ``1 + 0.5 h``) and the variant ``no_middle`` a
#: little sharper: rows that compress like real attention (the store and explorer benchmarks)
GRADED_HEADS = SynthOptions(head_spread=0.5, sharpness={"no_middle": 1.25})


def study_sites(n_layers: int = 2, n_heads: int = 4, *, extra: bool = True) -> tuple[SiteSpec, ...]:
    """``atom_to_text`` (nodes -> tokens, ``n_layers`` x ``n_heads``) and, with ``extra``,
    ``graph_to_text`` (single -> tokens) and ``text_pool`` (nodes -> single: a degenerate
    length-1 key axis, every weight 1.0)."""
    sites = [SiteSpec("atom_to_text", "nodes", "tokens", n_layers, n_heads, "node -> token")]
    if extra:
        sites += [
            SiteSpec("graph_to_text", "single", "tokens", 1, n_heads, "graph vector -> tokens"),
            SiteSpec("text_pool", "nodes", "single", 1, 1, "length-1 key (degenerate)"),
        ]
    return tuple(sites)


def synthetic_spec(
    n_samples: int = 20,
    *,
    models: Sequence[str] = ("full", "no_middle"),
    sites: Sequence[SiteSpec] = (SiteSpec("fine_grained", n_layers=1, n_heads=2),),
    dtype: str = "float16",
    compression: str = "gzip",
    has_gold: bool = False,
    meta: Sequence[str] = ("formula", "mass", "n_rings"),
    targets: Sequence[str] = ("target",),
    shard: tuple[int, int] = (0, 1),
    selection_seed: int = 0,
    config: dict[str, Any] | None = None,
    provenance: Mapping[str, dict[str, Any]] | None = None,
) -> StoreSpec:
    """A :class:`StoreSpec` for ``n_samples`` planned samples ``s0000, s0001, ...``.

    ``meta``: metadata columns, from :data:`META_COLUMNS`. ``provenance``: per-model provenance
    replacing the default (checkpoint ``<model>.pt``, a fake sha256, adapter ``synthetic``).
    """
    unknown = [c for c in meta if c not in META_COLUMNS]
    if unknown:
        raise ValueError(f"`meta` columns must be among {', '.join(META_COLUMNS)}; got {unknown}")
    width = max(4, len(str(max(n_samples - 1, 0))))
    prov = provenance or {}
    return StoreSpec(
        models=tuple(
            ModelSpec(
                m,
                dict(prov.get(m) or {})
                or {"checkpoint": f"{m}.pt", "sha256": f"{i:064x}", "adapter": "synthetic"},
            )
            for i, m in enumerate(models)
        ),
        sites=tuple(sites),
        selection_ids=tuple(f"s{i:0{width}d}" for i in range(n_samples)),
        targets=tuple(targets),
        meta_columns=tuple((c, META_COLUMNS[c]) for c in meta),
        config=dict(config or {"num_samples": n_samples, "batch_size": 8, "synthetic": True}),
        selection_seed=selection_seed,
        split="test",
        dtype=dtype,
        compression=compression,
        has_gold=has_gold,
        shard_index=shard[0],
        shard_count=shard[1],
    )


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place and in the input's dtype (rows sum to 1 up to its
    rounding)."""
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


def _site_attention(
    rng: np.random.Generator,
    spec: StoreSpec,
    site: SiteSpec,
    text: SampleText,
    opt: SynthOptions,
) -> dict[str, np.ndarray]:
    """``{model: [layers, heads, query, key] float32}`` of one sample at one site."""
    size = {"nodes": text.n_nodes, "tokens": text.n_tokens, "single": 1}
    q, k = size[site.query_axis], size[site.key_axis]
    # what every row's logits share: the gold cells (node -> token sites only) and the sink
    fixed = np.zeros((q, k), dtype=np.float32)
    if opt.align and (site.query_axis, site.key_axis) == ("nodes", "tokens"):
        fixed += np.float32(opt.align) * text.gold
    if opt.sink and site.key_axis == "tokens":
        fixed[:, text.special] += np.float32(opt.sink)
    if opt.shared_base:
        fixed += np.float32(opt.shared_base) * rng.standard_normal((q, k), dtype=np.float32)
    heads = 1.0 + opt.head_spread * np.arange(site.n_heads, dtype=np.float32)
    out = {}
    for m in spec.models:
        rows = 1 if m.name in opt.identical_rows else q
        z = rng.standard_normal((site.n_layers, site.n_heads, rows, k), dtype=np.float32)
        z += fixed[:rows]
        if opt.head_bias:
            z += np.float32(opt.head_bias) * rng.standard_normal((site.n_heads, 1, k), np.float32)
        z *= (np.float32(opt.sharpness.get(m.name, 1.0)) * heads)[:, None, None]
        a = softmax_rows(z)
        out[m.name] = a if rows == q else np.broadcast_to(a, (*a.shape[:2], q, k))
    return out


def _sample(spec: StoreSpec, pos: int, opt: SynthOptions) -> dict[str, Any]:
    rng = np.random.default_rng([opt.seed, pos])
    nodes, tokens = opt.sizes()
    text = sample_text(opt.kind, rng, nodes, tokens, n_special=opt.n_special)
    att = {m.name: {} for m in spec.models}
    for s in spec.sites:
        for m, a in _site_attention(rng, spec, s, text, opt).items():
            att[m][s.name] = a
    target = rng.standard_normal(len(spec.targets))
    pred = {
        m.name: target + opt.noise.get(m.name, 0.3) * rng.standard_normal(len(spec.targets))
        for m in spec.models
    }
    # "words" samples at odd positions carry no gold mask (exercises absent gold)
    with_gold = spec.has_gold and (opt.kind != "words" or pos % 2 == 0)
    counts = {el: text.labels.count(el) for el in set(text.labels)}
    hill = sorted(counts, key=lambda el: (el != "C", el != "H", el))  # Hill order: C, H, A-Z
    meta = {
        "formula": "".join(f"{el}{counts[el] if counts[el] > 1 else ''}" for el in hill),
        "mass": 12.0 * text.n_nodes,
        "n_rings": pos % 3,
        "group": "ab"[pos % 2],
    }
    return {"text": text, "target": target, "pred": pred, "att": att,
            "gold": text.gold if with_gold else None, "meta": meta}  # fmt: skip


def synthetic_batch(
    spec: StoreSpec,
    ids: Sequence[str],
    options: SynthOptions | None = None,
    **overrides: Any,
) -> FlatBatch:
    """The samples ``ids`` (which must be in ``spec.selection_ids``) as one :class:`FlatBatch`,
    drawn with ``options`` (default :class:`SynthOptions`) updated by ``overrides``."""
    opt = replace(options or SynthOptions(), **overrides)
    names = {m.name for m in spec.models}
    for what in ("sharpness", "noise", "identical_rows"):
        unknown = sorted(set(getattr(opt, what)) - names)
        if unknown:
            raise ValueError(f"`{what}` names models {unknown} that the spec does not have")
    pos = {sid: k for k, sid in enumerate(spec.selection_ids)}
    smps = [_sample(spec, pos[i], opt) for i in ids]
    golds = [s["gold"].reshape(-1) for s in smps if s["gold"] is not None]
    return FlatBatch(
        ids=list(ids),
        n_nodes=np.array([s["text"].n_nodes for s in smps], dtype=np.int64),
        n_tokens=np.array([s["text"].n_tokens for s in smps], dtype=np.int64),
        node_labels=[x for s in smps for x in s["text"].labels],
        tokens=[x for s in smps for x in s["text"].tokens],
        special=np.concatenate([s["text"].special for s in smps]),
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
        meta={c: [s["meta"][c] for s in smps] for c, _kind in spec.meta_columns},
        gold_present=np.array([s["gold"] is not None for s in smps]) if spec.has_gold else None,
        gold=np.concatenate(golds) if golds else None,
    )


def write_synthetic_store(
    path: str | os.PathLike,
    spec: StoreSpec,
    options: SynthOptions | None = None,
    *,
    batch_size: int = 8,
    ids: Sequence[str] | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Create ``path`` and append ``ids`` (default: the spec's shard block) in batches of
    ``batch_size``, drawn with ``options`` updated by ``overrides`` (see :class:`SynthOptions`).

    Examples
    --------
    A null store, a planted effect, the realistic study::

        write_synthetic_store("null.h5", synthetic_spec(40))
        write_synthetic_store("fx.h5", synthetic_spec(40), sharpness={"full": 1.6})
        spec = synthetic_spec(30, sites=study_sites(), has_gold=True)
        write_synthetic_store("study.h5", spec, STUDY, sharpness={"full": 1.6})
    """
    opt = replace(options or SynthOptions(), **overrides)
    if ids is None:
        ids = shard_ids(spec.selection_ids, spec.shard_index, spec.shard_count)
    ids = list(ids)
    with StoreWriter.create(path, spec, overwrite=overwrite) as w:
        for lo in range(0, len(ids), batch_size):
            w.append(synthetic_batch(spec, ids[lo : lo + batch_size], opt))
    return Path(path)
