"""Node groups: a sample's nodes aggregated by their label (the element by default).

A crystal of 96 atoms has 60 near-identical O rows and one Si row; looking at them one by one
hides the Si and repeats the O. Grouping by the node label the adapter stored (the element symbol
for the reference model and the synthetic crystals; any label an adapter provides, e.g. a Wyckoff
site or a symmetry-equivalence class) gives one row per kind of node, with the group size in its
label (``O (n=60)``). A group is never dropped for being small: a singleton is a group.

Per-group metrics reuse the row metrics of :mod:`analyze.metrics` (:func:`row_metrics`,
:func:`jensen_shannon`): every node row is measured as in the per-sample table, and a group's value
is the mean over its member rows (the same aggregation the sample level uses over all rows). Two
quantities are added per group: ``gold_mass`` (mean over the members with gold cells) and
``label_mass``, the attention mass on the tokens that name the group's label (``O`` -> the pieces
of ``O²⁻`` words; see :func:`label_token_mask`), so "do O atoms attend to ``O²⁻`` tokens more in the
full model" is a lookup in :func:`group_metrics_table`.

Typical use::

    from attncmp.analyze.groups import group_metrics_table
    with open_store("store.h5") as st:
        frame = group_metrics_table(st)             # one row per sample x model x group
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from .errors import AnalysisInputError
from .metrics import jensen_shannon, row_metrics
from .registry import ROW_SUMMARY_METRICS
from .textview import merge_pieces

__all__ = [
    "GROUP_METRICS",
    "NodeGroup",
    "group_label",
    "group_metrics_table",
    "group_rows",
    "label_token_mask",
    "node_groups",
    "sample_group_metrics",
]

GROUP_METRICS = (*ROW_SUMMARY_METRICS, "gold_mass", "label_mass")


@dataclass(frozen=True)
class NodeGroup:
    """The nodes of one sample that share a label (``members``: ascending node indices)."""

    label: str
    members: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def display(self) -> str:
        """``"O (n=60)"``: the label with the group size."""
        return group_label(self.label, self.size)


def group_label(label: str, size: int) -> str:
    """The label of a group of ``size`` nodes, e.g. ``"Si (n=1)"``."""
    return f"{label} (n={size})"


def node_groups(labels: Sequence[str]) -> list[NodeGroup]:
    """Groups of equal labels, in order of each label's first node (never dropped when small)."""
    members: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        members.setdefault(str(lab), []).append(i)
    return [NodeGroup(lab, tuple(idx)) for lab, idx in members.items()]


def group_rows(matrix: np.ndarray, groups: Sequence[NodeGroup]) -> np.ndarray:
    """``[n_groups, n_key]``: the mean row of each group's members (rows of ``matrix``)."""
    m = np.asarray(matrix, dtype=np.float64)
    out = np.empty((len(groups), m.shape[1]))
    for g, grp in enumerate(groups):
        out[g] = m[list(grp.members)].mean(axis=0)
    return out


_ELEMENT_WORD = re.compile(r"^([A-Z][a-z]?)(?![a-z])")


def label_token_mask(label: str, tokens: Sequence[str]) -> np.ndarray:
    """bool ``[n_tokens]``: the tokens (all pieces) of words that name ``label``.

    A word names ``label`` when it equals it or starts with it followed by something that is not a
    lower-case letter (``O`` names ``O²⁻``, ``O2``, ``O-O``; not ``Os`` or ``of``). Words are the
    merged subword pieces (:func:`analyze.textview.merge_pieces`).
    """
    mask = np.zeros(len(tokens), dtype=bool)
    if not label:
        return mask
    for word in merge_pieces(tokens):
        text = word.text
        if text == label or (
            text.startswith(label) and not text[len(label) : len(label) + 1].islower()
        ):
            mask[list(word.pieces)] = True
    return mask


def _row_measures(
    matrix: np.ndarray,
    special: np.ndarray | None,
    gold: np.ndarray | None,
    threshold: float,
    exclude_special: bool,
):
    """:func:`analyze.metrics.row_metrics` of every row of one ``[n_nodes, n_tokens]`` matrix,
    and the row offsets."""
    m = np.asarray(matrix, dtype=np.float64)
    nq, nk = m.shape
    off = np.arange(nq + 1, dtype=np.int64) * nk
    sp = None if special is None else np.tile(np.asarray(special, bool), nq)
    gd = None if gold is None else np.asarray(gold, bool).reshape(-1)
    rm = row_metrics(
        m.reshape(-1),
        off,
        special=sp,
        gold=gd,
        threshold=threshold,
        exclude_special=exclude_special,
    )
    return rm, off


def _group_rows(
    rm, n_keys: int, groups: Sequence[NodeGroup], masks: Sequence[np.ndarray], jsd
) -> list[dict]:
    """Each group's mean of the row measures ``rm`` (see :func:`sample_group_metrics`)."""
    p = rm.p.reshape(-1, n_keys)
    out = []
    for grp, lm in zip(groups, masks, strict=True):
        idx = np.array(grp.members)
        row = {"group": grp.label, "group_size": grp.size}
        for name in ROW_SUMMARY_METRICS:
            row[name] = float(np.nanmean(getattr(rm, name)[idx]))
        gm = rm.gold_mass[idx] if rm.gold_mass is not None else np.array([np.nan])
        row["gold_mass"] = float(np.nanmean(gm)) if np.isfinite(gm).any() else float("nan")
        row["label_mass"] = float(p[np.ix_(idx, lm)].sum(axis=1).mean()) if lm.any() else np.nan
        row["label_tokens"] = int(lm.sum())
        if jsd is not None:
            row["jsd"] = float(np.nanmean(jsd[idx]))
        out.append(row)
    return out


def sample_group_metrics(
    matrix: np.ndarray,
    labels: Sequence[str],
    tokens: Sequence[str],
    *,
    special: np.ndarray | None = None,
    gold: np.ndarray | None = None,
    threshold: float = 0.1,
    exclude_special: bool = True,
    other: np.ndarray | None = None,
) -> list[dict]:
    """Per-group metrics of one ``[n_nodes, n_tokens]`` attention matrix.

    Each node row is measured by :func:`analyze.metrics.row_metrics` (same conventions as the
    per-sample table: special keys dropped and rows renormalised when ``exclude_special``); a
    group's value is the mean over its members. ``gold_mass`` averages the members that have gold
    cells (NaN when none has); ``label_mass`` is the renormalised row's mass on
    :func:`label_token_mask` tokens, averaged over the members (NaN when no token names the label).
    With ``other`` (the other model's matrix) ``jsd`` is the mean row JSD between the two.
    """
    groups = node_groups(labels)
    masks = [label_token_mask(g.label, tokens) for g in groups]
    rm, off = _row_measures(matrix, special, gold, threshold, exclude_special)
    jsd = None
    if other is not None:
        q, _ = _row_measures(other, special, None, threshold, exclude_special)
        jsd = jensen_shannon(rm.p, q.p, off)
    return _group_rows(rm, np.asarray(matrix).shape[1], groups, masks, jsd)


def group_metrics_table(
    store,
    *,
    site: str | None = None,
    layer: int | None = None,
    models: Sequence[str] | None = None,
    threshold: float = 0.1,
    exclude_special: bool = True,
    chunk_samples: int = 64,
) -> pl.DataFrame:
    """One row per sample x model x node group of a nodes -> tokens ``site`` (head-mean of
    ``layer``, default the last): ``sample_id, model, site, layer, group, group_size`` and
    :data:`GROUP_METRICS` (plus ``jsd`` to the baseline for the other models)."""
    from .heatmap import default_site

    site = site or default_site(store)
    info = store.sites()[site]
    if (info.query_axis, info.key_axis) != ("nodes", "tokens"):
        raise AnalysisInputError(
            f"`site` {site!r} is {info.query_axis} -> {info.key_axis}; node groups "
            "need a nodes -> tokens site"
        )
    lay = info.n_layers - 1 if layer is None else int(layer) % info.n_layers
    models = list(models or store.models)
    base = store.baseline if store.baseline in models else models[0]
    rows: list[dict] = []
    for chunk in store.iter_chunks(site, models, chunk_samples):
        for i, sid in enumerate(chunk.ids):
            smp = store.sample(sid, with_attention=False)
            # groups, label masks and each model's row measures once per sample (the baseline's
            # rows serve every variant's JSD)
            groups = node_groups(smp.node_labels)
            masks = [label_token_mask(g.label, smp.tokens) for g in groups]
            measures = {
                m: _row_measures(
                    chunk.matrix(m, i)[lay].mean(axis=0),
                    smp.special,
                    smp.gold,
                    threshold,
                    exclude_special,
                )
                for m in models
            }
            n_keys = int(chunk.n_key[i])
            for m in models:
                rm, off = measures[m]
                jsd = None if m == base else jensen_shannon(rm.p, measures[base][0].p, off)
                for r in _group_rows(rm, n_keys, groups, masks, jsd):
                    rows.append({"sample_id": sid, "model": m, "site": site, "layer": lay, **r})
    cols = ["sample_id", "model", "site", "layer", "group", "group_size", *GROUP_METRICS]
    cols += ["label_tokens", "jsd"]
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    for c in cols:
        if c not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
    return frame.select(cols)
