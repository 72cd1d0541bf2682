"""Node x token attention heatmaps: baseline and variant side by side, plus their difference.

One figure per sample: the baseline's and the variant's attention of one site (default: the
head-mean of the last layer of the first nodes -> tokens site) drawn with **one shared colour
scale**, and a third panel with the difference ``variant - baseline`` on a symmetric diverging
scale. Only the valid region exists in the store, so only the valid region is drawn. Rows carry the
node label and the node's position in the sample (``Cl3`` = the sample's node 3, counted from 0);
columns carry the model's own token strings as stored at extraction time (special tokens in grey).
Gold alignment cells (where the store has gold masks) are outlined.

Long texts stay readable: cells have a fixed minimum size, token labels are rotated, the three
panels are stacked instead of placed side by side when the text is long, and beyond
``max_tokens`` columns (``max_nodes`` rows) only the most-attended tokens (nodes) are kept, in
their original order, with the omission marked and stated in the figure.

Typical use::

    from attncmp.store import open_store
    from attncmp.analyze.heatmap import heatmap_data, plot_heatmap
    with open_store("attention_store.h5") as st:
        data = heatmap_data(st, "FS0042")            # head-mean, last layer
    fig = plot_heatmap(data)                          # a matplotlib Figure (shows in notebooks)
    plot_heatmap(data, path="FS0042.png")             # or write it
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AnalysisInputError
from .options import resolve_models
from .plotstyle import ensure_parent, new_figure, safe_text, style, write_figures
from .registry import ROW_SUMMARY_METRICS

__all__ = [
    "HeatmapData",
    "default_site",
    "heatmap_data",
    "plot_heatmap",
    "metrics_note",
    "quick_metrics",
    "resolve_layer_head",
    "token_windows",
]

ATTN_CMAP = "viridis"
DIFF_CMAP = "RdBu_r"
GOLD_COLOUR = "#ff2d95"
SPECIAL_LABEL_COLOUR = "#888888"
CELL_IN = 0.21  # minimum cell edge in inches (fits an 7-pt label)
MAX_SIDE_BY_SIDE_COLS = 26  # wider texts: panels stacked vertically


@dataclass
class HeatmapData:
    """Everything one heatmap needs (small; cached by the analysis so re-plots need no store).

    ``matrices`` are ``[n_query, n_key]`` for (baseline, variant). ``head`` is None for the
    head-mean distribution (the original method). ``metrics`` maps model -> metric -> value for the
    title (sample-level means over the sample's rows); ``jsd`` is the mean row JSD between them.
    """

    sample_id: str
    site: str
    query_axis: str
    key_axis: str
    layer: int
    n_layers: int
    head: int | None
    n_heads: int
    models: tuple[str, str]
    matrices: tuple[np.ndarray, np.ndarray]
    row_labels: list[str]
    col_labels: list[str]
    col_special: np.ndarray
    gold: np.ndarray | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    jsd: float | None = None
    note: str = ""
    node_labels: list[str] | None = None  # the raw node labels (row labels add the index)
    text: str | None = None  # the sample's original text when a metadata column holds it

    def node_labels_or_rows(self) -> list[str]:
        """The node labels (element symbols...): stored ones, else the row labels without their
        trailing index (caches written before node labels were kept)."""
        if self.node_labels is not None and len(self.node_labels) == self.matrices[0].shape[0]:
            return list(self.node_labels)
        import re

        return [re.sub(r"\d+$", "", r) or r for r in self.row_labels]

    # -- caching (npz: arrays + one JSON header) -------------------------------------------------
    def save(self, path: str | Path) -> Path:
        head = {
            "sample_id": self.sample_id,
            "site": self.site,
            "query_axis": self.query_axis,
            "key_axis": self.key_axis,
            "layer": self.layer,
            "n_layers": self.n_layers,
            "head": self.head,
            "n_heads": self.n_heads,
            "models": list(self.models),
            "row_labels": self.row_labels,
            "col_labels": self.col_labels,
            "metrics": self.metrics,
            "jsd": self.jsd,
            "note": self.note,
            "node_labels": self.node_labels,
            "text": self.text,
        }
        arrays = {
            "baseline": np.asarray(self.matrices[0], np.float32),
            "variant": np.asarray(self.matrices[1], np.float32),
            "col_special": np.asarray(self.col_special, bool),
            "header": np.frombuffer(json.dumps(head).encode("utf-8"), dtype=np.uint8),
        }
        if self.gold is not None:
            arrays["gold"] = np.asarray(self.gold, bool)
        path = Path(path)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HeatmapData:
        with np.load(path) as z:
            head = json.loads(z["header"].tobytes().decode("utf-8"))
            return cls(
                sample_id=head["sample_id"],
                site=head["site"],
                query_axis=head["query_axis"],
                key_axis=head["key_axis"],
                layer=int(head["layer"]),
                n_layers=int(head["n_layers"]),
                head=head["head"],
                n_heads=int(head["n_heads"]),
                models=tuple(head["models"]),
                matrices=(z["baseline"].astype(np.float64), z["variant"].astype(np.float64)),
                row_labels=list(head["row_labels"]),
                col_labels=list(head["col_labels"]),
                col_special=z["col_special"].astype(bool),
                gold=z["gold"].astype(bool) if "gold" in z.files else None,
                metrics=head.get("metrics") or {},
                jsd=head.get("jsd"),
                note=head.get("note", ""),
                node_labels=head.get("node_labels"),
                text=head.get("text"),
            )


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def default_site(store) -> str:
    """The first nodes -> tokens site (the fine-grained attention), else the first site."""
    sites = store.sites()
    for name, info in sites.items():
        if info.query_axis == "nodes" and info.key_axis == "tokens":
            return name
    return next(iter(sites))


def resolve_layer_head(
    n_layers: int, n_heads: int, layer: int | None, head
) -> tuple[int, int | None]:
    """Validate ``layer`` (None/-1 = last; negative counts from the end) and ``head``
    (None/"mean"/-1 = head-mean; else 0-based index)."""
    lay = n_layers - 1 if layer is None else int(layer)
    if lay < 0:
        lay += n_layers
    if not 0 <= lay < n_layers:
        raise AnalysisInputError(
            f"`layer` {layer} out of range: the site has {n_layers} layer(s) (0..{n_layers - 1})"
        )
    if head is None or (isinstance(head, str) and head.lower() in ("mean", "head-mean")):
        return lay, None
    try:
        h = int(head)
    except (TypeError, ValueError):
        raise AnalysisInputError(
            f"`head` {head!r} is neither a head index (0..{n_heads - 1}) nor 'mean'"
        ) from None
    if h == -1:
        return lay, None
    if not 0 <= h < n_heads:
        raise AnalysisInputError(
            f"`head` {head} out of range: the site has {n_heads} head(s) "
            f"(0..{n_heads - 1}, or 'mean')"
        )
    return lay, h


def _axis_labels(axis: str, node_labels: list[str], tokens: list[str]) -> list[str]:
    if axis == "nodes":
        return [f"{lab}{i}" for i, lab in enumerate(node_labels)]
    if axis == "tokens":
        return list(tokens)
    return ["(pooled)"]


def _select(att: np.ndarray, layer: int, head: int | None) -> np.ndarray:
    block = att[layer]  # [heads, query, key]
    return (block.mean(axis=0) if head is None else block[head]).astype(np.float64)


def heatmap_data(
    store,
    sample_id: str,
    *,
    site: str | None = None,
    baseline: str | None = None,
    variant: str | None = None,
    layer: int | None = None,
    head: int | str | None = None,
    threshold: float = 0.1,
    exclude_special: bool = True,
) -> HeatmapData:
    """Read one sample's attention for a heatmap (``head`` None = head-mean, ``layer`` None = last).

    The title metrics are computed on the drawn distribution with the analysis conventions
    (``threshold``, special tokens dropped and rows renormalised when ``exclude_special``).
    """
    baseline, variants = resolve_models(
        store.models,
        store.baseline,
        baseline,
        None if variant is None else [variant],
        variants_arg="variant",
    )
    variant = variants[0]  # default: the first other model
    site = site or default_site(store)
    sites = store.sites(baseline)
    if site not in sites:
        raise AnalysisInputError(
            f"`site` {site!r} is not in the store; sites: {', '.join(sorted(sites))}"
        )
    info = sites[site]
    lay, hd = resolve_layer_head(info.n_layers, info.n_heads, layer, head)
    smp = store.sample(sample_id, with_attention=False)
    mats = tuple(_select(store.attention(m, site, smp.id), lay, hd) for m in (baseline, variant))
    key_special = smp.special if info.key_axis == "tokens" else np.zeros(mats[0].shape[1], bool)
    gold = smp.gold if (info.query_axis == "nodes" and info.key_axis == "tokens") else None
    data = HeatmapData(
        sample_id=smp.id,
        site=site,
        query_axis=info.query_axis,
        key_axis=info.key_axis,
        layer=lay,
        n_layers=info.n_layers,
        head=hd,
        n_heads=info.n_heads,
        models=(baseline, variant),
        matrices=mats,  # type: ignore[arg-type]
        row_labels=_axis_labels(info.query_axis, smp.node_labels, smp.tokens),
        col_labels=_axis_labels(info.key_axis, smp.node_labels, smp.tokens),
        col_special=np.asarray(key_special, bool),
        gold=gold,
        node_labels=list(smp.node_labels) if info.query_axis == "nodes" else None,
        text=_source_text(smp) if info.key_axis == "tokens" else None,
    )
    data.metrics, data.jsd = quick_metrics(
        data, threshold=threshold, exclude_special=exclude_special
    )
    data.note = metrics_note(threshold, exclude_special and bool(data.col_special.any()))
    return data


def _source_text(smp) -> str | None:
    """The sample's original text, if a string metadata value is what the tokens came from (the
    reference adapter's ``name``; an adapter's ``text``/``description``): the text view then
    joins pieces as the text spells them."""
    from .textview import align_to_text

    for key in ("text", "description", "name", "caption", *smp.meta):
        v = smp.meta.get(key)
        if isinstance(v, str) and v.strip() and align_to_text(smp.tokens, smp.special, v):
            return v
    return None


def metrics_note(threshold: float, special_excluded: bool) -> str:
    """The conventions of the title metrics, stated under the figure."""
    sp = "special tokens excluded, rows renormalised; " if special_excluded else ""
    return f"title metrics: {sp}eff. tokens = count(weight > {threshold:g})"


def quick_metrics(
    data: HeatmapData, *, threshold: float = 0.1, exclude_special: bool = True
) -> tuple[dict[str, dict[str, float]], float | None]:
    """Sample-level (mean over rows) entropy, normalised entropy, max weight, effective tokens and
    Gini of the drawn distributions, plus the mean row JSD between the two models.

    Computed by the analysis engine's own kernel (:func:`analyze.metrics.row_metrics`,
    :func:`analyze.metrics.jensen_shannon`) in float32 like the engine, so the title states the
    per-sample table's values and conventions: special keys dropped and rows renormalised when
    ``exclude_special`` (a row whose keys are all special keeps them), rows summing to 0 or
    putting all mass on special keys left out (NaN, not uniform), means over the kept rows.
    """
    from .metrics import jensen_shannon, row_metrics

    names = ROW_SUMMARY_METRICS
    out: dict[str, dict[str, float]] = {}
    rows = []
    for m, mat in zip(data.models, data.matrices, strict=False):
        w = np.asarray(mat, dtype=np.float32)
        nq, nk = w.shape
        rm = row_metrics(
            w.ravel(),
            np.arange(0, nq * nk + 1, nk),
            special=np.tile(np.asarray(data.col_special, bool), nq),
            threshold=threshold,
            exclude_special=exclude_special,
        )
        rows.append((rm.p, nq, nk))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all rows dropped: NaN
            out[m] = {k: float(np.nanmean(getattr(rm, k))) for k in names}
    jsd = None
    (pa, qa, ka), (pb, qb, kb) = rows
    if (qa, ka) == (qb, kb):
        j = jensen_shannon(pa, pb, np.arange(0, qa * ka + 1, ka))
        jsd = float(np.nanmean(j)) if np.isfinite(j).any() else None
    return out, jsd


def _layer_head_text(d: HeatmapData) -> str:
    last = " (last)" if d.layer == d.n_layers - 1 else ""
    lay = f"layer {d.layer}{last} of {d.n_layers}"
    if d.head is None:
        return f"{lay}, head-mean of {d.n_heads} head(s)"
    return f"{lay}, head {d.head} of {d.n_heads} (matched by index)"


def _metrics_lines(d: HeatmapData) -> list[str]:
    parts = []
    for m in d.models:
        v = d.metrics.get(m)
        if not v:
            continue
        parts.append(
            f"{safe_text(m)}: entropy {v['entropy']:.3f}, max {v['max_weight']:.3f}, "
            f"eff. tokens {v['effective_tokens']:.2f}, Gini {v['gini']:.3f}"
        )
    if d.jsd is not None and parts:
        parts[-1] += f"  |  mean row JSD between them {d.jsd:.3f}"
    return parts


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
PAGE_IN = (8.27, 11.69)  # A4 portrait (inches); a figure fits it upright or turned (landscape)
MAX_FONT = 7.0  # tick label size (points) when cells are large
MIN_FONT = 5.5  # smallest tick label: legible on a printed page at 100 %
PITCH = 1.3  # cell edge / tick-label size: rotated labels need a line height each
CELL_MAX = 0.21  # largest cell edge (inches)
HEADER_FONT = 7.5
NOTE_FONT = 6.5
_CB_W = 0.8  # colour bar + its tick labels and title (inches)
_LM, _RM, _TM, _BM = 0.12, 0.08, 0.1, 0.08
_YLAB = 0.2  # axis label beside the row labels
_TITLE = 0.24  # panel title
_XLAB = 0.2  # axis label under the column labels
_GAP = 0.14  # between stacked panels / side-by-side panels


def token_windows(
    score: np.ndarray, must: np.ndarray | None, cap: int, radius: int = 3
) -> np.ndarray:
    """Ascending indices of at most ``cap`` tokens, as contiguous windows.

    Every ``must`` position (gold tokens) is kept (the first ``cap`` of them if there are more),
    with the widest context window (up to ``radius`` tokens each side, the same for all) that
    fits; gaps of one or two tokens between them are closed while two thirds of the room is
    left; the remaining room goes to windows around the highest-``score`` tokens, nearest tokens
    first. Windows that touch merge, so the figure shows readable stretches of text instead of
    isolated columns.
    """
    n = len(score)
    if n <= cap:
        return np.arange(n)
    keep = np.zeros(n, bool)
    must_idx = np.flatnonzero(must) if must is not None else np.zeros(0, np.int64)
    must_idx = must_idx[:cap]

    def span(idx: np.ndarray, r: int) -> np.ndarray:
        m = np.zeros(n, bool)
        for c in idx:
            m[max(0, c - r) : min(n, c + r + 1)] = True
        return m

    for r in range(radius, -1, -1):
        m = span(must_idx, r)
        if m.sum() <= cap:
            keep |= m
            break
    # close small gaps between kept tokens (smallest first) while two thirds of the room is left
    # for windows around attention: fewer, longer stretches of text, fewer separators
    kept = np.flatnonzero(keep)
    gaps = sorted(
        (int(b - a - 1), int(a)) for a, b in zip(kept[:-1], kept[1:], strict=True) if 1 < b - a <= 3
    )
    for size, a in gaps:
        if cap - int(keep.sum()) - size < (2 * cap) // 3:
            break
        keep[a + 1 : a + 1 + size] = True
    order = [
        int(i) for i in np.argsort(-np.asarray(score, np.float64), kind="stable") if not keep[i]
    ]
    for c in order:
        room = cap - int(keep.sum())
        if room <= 0:
            break
        lo, hi = max(0, c - radius), min(n, c + radius + 1)
        new = [j for j in range(lo, hi) if not keep[j]]
        new.sort(key=lambda j: (abs(j - c), j))
        keep[new[:room]] = True
    return np.flatnonzero(keep)


def _width10(s: str) -> float:
    """Width of ``s`` in inches at 10 pt (scale linearly for other sizes)."""
    from .textview import text_width

    return text_width(s, 10.0) * 1.03 + 0.01


@dataclass
class _Plan:
    """What is drawn: rows (nodes or node groups), columns (tokens), labels, notes."""

    base: np.ndarray
    var: np.ndarray
    gold: np.ndarray | None
    row_labels: list[str]
    col_labels: list[str]
    special: np.ndarray
    cols: np.ndarray
    grouped: bool
    notes: list[str]


@dataclass
class _Box:
    side: bool
    cell: float
    font: float
    width: float
    height: float
    wy: float  # row label width (inches)
    hx: float  # column label height (inches)


def _box(k, q, w10_rows, w10_cols, header_h, notes_h, side: bool) -> _Box | None:
    """Cell size and figure size for ``k`` columns x ``q`` rows in one layout (None: does not
    fit with labels of at least MIN_FONT)."""
    page_w, page_h = (PAGE_IN[1], PAGE_IN[0]) if side else PAGE_IN
    font = MAX_FONT
    cell = 0.0
    for _ in range(4):
        wy = w10_rows * font / 10 + 0.06
        hx = w10_cols * font / 10 + 0.06
        if side:
            fixed_w = _LM + _YLAB + wy + _GAP + 2 * _CB_W + _RM
            fixed_h = _TM + header_h + _TITLE + hx + _XLAB + notes_h + _BM
            cell = min(CELL_MAX, (page_w - fixed_w) / (3 * k), (page_h - fixed_h) / q)
        else:
            fixed_w = _LM + _YLAB + wy + _CB_W + _RM
            fixed_h = _TM + header_h + 3 * (_TITLE + _GAP) + hx + _XLAB + notes_h + _BM
            cell = min(CELL_MAX, (page_w - fixed_w) / k, (page_h - fixed_h) / (3 * q))
        new_font = min(MAX_FONT, cell * 72 / PITCH)
        if abs(new_font - font) < 1e-3:
            break
        font = max(new_font, MIN_FONT - 1e-6) if new_font < font else new_font
    if cell * 72 / PITCH < MIN_FONT - 1e-6:
        return None
    font = min(MAX_FONT, cell * 72 / PITCH)
    wy = w10_rows * font / 10 + 0.06
    hx = w10_cols * font / 10 + 0.06
    if side:
        width = _LM + _YLAB + wy + 3 * k * cell + _GAP + 2 * _CB_W + _RM
        height = _TM + header_h + _TITLE + q * cell + hx + _XLAB + notes_h + _BM
    else:
        width = _LM + _YLAB + wy + k * cell + _CB_W + _RM
        height = _TM + header_h + 3 * (_TITLE + q * cell + _GAP) + hx + _XLAB + notes_h + _BM
    return _Box(side, cell, font, width, height, wy, hx)


def _col_label(tok: str, pos: int, with_pos: bool) -> str:
    t = safe_text(tok, 12)
    return f"{t}@{pos}" if with_pos else t


def _plan(d: HeatmapData, max_tokens: int, max_nodes: int, header_h: float) -> tuple[_Plan, _Box]:
    from .groups import group_rows, node_groups

    base, var = (np.asarray(m, np.float64) for m in d.matrices)
    nq, nk = base.shape
    gold = d.gold if d.gold is not None and d.gold.shape == base.shape and d.gold.any() else None
    special_all = (
        np.asarray(d.col_special, bool) if len(d.col_special) == nk else np.zeros(nk, bool)
    )
    notes_h = 2 * NOTE_FONT * 1.45 / 72 + 0.05
    # capacities at the smallest legible label size, portrait, stacked panels
    all_col = [_col_label(t, i, True) for i, t in enumerate(d.col_labels)]
    w10_cols_max = max((_width10(s) for s in all_col), default=0.3)
    grouped = False
    if d.query_axis == "nodes":
        groups = node_groups(d.node_labels_or_rows())
    else:
        groups = []
    row_sets: list[tuple[bool, list[str]]] = [(False, [safe_text(r, 12) for r in d.row_labels])]
    if groups and len(groups) < nq:
        row_sets.append((True, [safe_text(g.display, 16) for g in groups]))
    cmin = MIN_FONT * PITCH / 72
    notes: list[str] = []
    for is_group, rl in row_sets:
        q = len(rl)
        if q > max_nodes and not is_group and len(row_sets) > 1:
            continue
        w10_rows = max((_width10(s) for s in rl), default=0.3)
        wy = w10_rows * MIN_FONT / 10 + 0.06
        hx = w10_cols_max * MIN_FONT / 10 + 0.06
        col_cap = int((PAGE_IN[0] - _LM - _YLAB - wy - _CB_W - _RM) // cmin)
        fixed_h = _TM + header_h + 3 * (_TITLE + _GAP) + hx + _XLAB + notes_h + _BM
        row_cap = int(((PAGE_IN[1] - fixed_h) / 3) // cmin)
        if q <= row_cap or is_group:
            grouped = is_group
            row_labels = rl
            break
    if grouped:
        base_r, var_r = group_rows(base, groups), group_rows(var, groups)
        gold_r = None
        if gold is not None:
            gold_r = np.stack([gold[list(g.members)].any(axis=0) for g in groups])
        notes.append(
            f"{nq} {d.query_axis} shown as {len(groups)} node group"
            f"{'s' if len(groups) != 1 else ''} by label (mean row of each group; n = group size)"
        )
    else:
        base_r, var_r, gold_r = base, var, gold
    q_all = base_r.shape[0]
    if q_all > row_cap:  # more groups than fit: keep the first ones, say so
        notes.append(f"first {row_cap} of {q_all} rows shown (page size)")
        base_r, var_r = base_r[:row_cap], var_r[:row_cap]
        gold_r = None if gold_r is None else gold_r[:row_cap]
        row_labels = row_labels[:row_cap]
    q = base_r.shape[0]
    cap = max(1, min(max_tokens, col_cap, nk))
    must = None if gold_r is None else gold_r.any(axis=0)
    score = np.maximum(base_r, var_r).max(axis=0)
    while True:
        cols = token_windows(score, must, cap)
        trimmed = len(cols) < nk
        col_labels = [_col_label(d.col_labels[c], int(c), trimmed) for c in cols]
        w10_cols = max((_width10(s) for s in col_labels), default=0.3)
        w10_rows = max((_width10(s) for s in row_labels), default=0.3)
        nn = 0
        if trimmed:
            nn = 1 + len(notes)
        box = None
        k = len(cols)
        if k <= MAX_SIDE_BY_SIDE_COLS:
            box = _box(k, q, w10_rows, w10_cols, header_h, notes_h + 0.1 * nn, True)
        if box is None:
            box = _box(k, q, w10_rows, w10_cols, header_h, notes_h + 0.1 * nn, False)
        if box is not None or cap <= 1:
            break
        cap = max(1, int(cap * 0.9))
    if box is None:  # pragma: no cover - only for absurd label lengths
        box = _Box(False, cmin, MIN_FONT, PAGE_IN[0], PAGE_IN[1], 1.0, 1.0)
    if trimmed:
        n_gold = int(must.sum()) if must is not None else 0
        kept_gold = int(must[cols].sum()) if must is not None else 0
        gold_txt = f", all {n_gold} gold tokens kept" if n_gold and kept_gold == n_gold else ""
        if n_gold and kept_gold < n_gold:
            gold_txt = f", {kept_gold} of {n_gold} gold tokens kept (page size)"
        n_win = 1 + int((np.diff(cols) > 1).sum())
        notes.insert(
            0,
            f"{len(cols)} of {nk} {d.key_axis} shown in {n_win} contiguous windows around gold "
            f"and highly attended tokens{gold_txt}; labels give the position (token@index); "
            "white lines separate windows",
        )
    plan = _Plan(
        base=base_r[:, cols],
        var=var_r[:, cols],
        gold=None if gold_r is None else gold_r[:, cols],
        row_labels=row_labels,
        col_labels=col_labels,
        special=special_all[cols],
        cols=cols,
        grouped=grouped,
        notes=notes,
    )
    return plan, box


def plot_heatmap(
    data: HeatmapData,
    path: str | Path | None = None,
    *,
    formats: tuple[str, ...] | None = None,
    max_tokens: int = 72,
    max_nodes: int = 48,
    title: str | None = None,
):
    """Draw ``data``; with ``path`` write it (format from the suffix, or ``formats`` for a stem)
    and return the written paths, else return the :class:`~matplotlib.figure.Figure`.

    The figure never exceeds an A4 page (upright, or turned for short texts drawn side by side):
    beyond what fits with tick labels of at least :data:`MIN_FONT` points, tokens are trimmed to
    contiguous windows (:func:`token_windows`; gold tokens always first) and nodes are shown as
    node groups (:mod:`analyze.groups`; every label keeps its row, however small its group).
    The layout is fixed (computed here, no layout engine), so saving needs one draw.
    """
    if path is not None:
        ensure_parent(path)  # before any work
    with style():
        fig = _draw(data, max_tokens=max_tokens, max_nodes=max_nodes, title=title)
        if path is None:
            return fig
        return write_figures(fig, path, formats)


def _wrap(lines: list[str], width_in: float, font: float) -> list[str]:
    out: list[str] = []
    for line in lines:
        words = line.split(" ")
        cur = ""
        for w in words:
            trial = f"{cur} {w}" if cur else w
            if cur and _width10(trial) * font / 10 > width_in:
                out.append(cur)
                cur = w
            else:
                cur = trial
        out.append(cur)
    return out


def _draw(d: HeatmapData, *, max_tokens: int, max_nodes: int, title: str | None):
    # matplotlib is imported when drawing, so reading heatmap data (analyze) does not load it
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import blended_transform_factory, offset_copy

    head = title or (
        f"Sample {safe_text(d.sample_id)}  -  site {safe_text(d.site)} "
        f"({d.query_axis} -> {d.key_axis}), {_layer_head_text(d)}"
    )
    head_lines = _wrap([head, *_metrics_lines(d)], PAGE_IN[0] - 0.3, HEADER_FONT)
    header_h = len(head_lines) * HEADER_FONT * 1.4 / 72 + 0.08
    p, box = _plan(d, max_tokens, max_nodes, header_h)
    q, k = p.base.shape
    diff = p.var - p.base
    vmax = float(max(p.base.max(initial=0.0), p.var.max(initial=0.0), 1e-6))
    dmax = float(max(np.abs(diff).max(initial=0.0), 1e-6))

    notes = list(p.notes)
    if p.gold is not None and p.gold.any():
        notes.append("outlined cells: gold alignment")
    if p.special.any():
        notes.append("grey italic labels: special tokens")
    if d.note:
        notes.append(d.note)
    page_w = PAGE_IN[1] if box.side else PAGE_IN[0]
    header_w = max(_width10(s) for s in head_lines) * HEADER_FONT / 10 + 0.3
    width = min(page_w, max(box.width, header_w, 4.0))
    note_lines = _wrap(["; ".join(notes)], width - 0.25, NOTE_FONT) if notes else []
    notes_h = len(note_lines) * NOTE_FONT * 1.45 / 72 + 0.05
    page_h = PAGE_IN[0] if box.side else PAGE_IN[1]
    # box.height assumed two note lines (+0.1 in per extra note); use the real count
    height = box.height - (2 * NOTE_FONT * 1.45 / 72 + 0.05) + notes_h
    height = min(page_h, height - 0.1 * (1 + len(p.notes)) * (k < len(d.col_labels)))
    height = max(height, 1.5)
    fig = new_figure(width, height, layout=None)
    c = box.cell

    def rect(x, y_top, w, h):
        return (x / width, 1 - (y_top + h) / height, w / width, h / height)

    norm = Normalize(0.0, vmax)
    dnorm = Normalize(-dmax, dmax)
    names = [
        f"{safe_text(d.models[0])} (baseline)",
        safe_text(d.models[1]),
        f"difference: {safe_text(d.models[1])} - {safe_text(d.models[0])}",
    ]
    x_left = _LM + _YLAB + box.wy
    y = _TM + header_h
    axes = []
    positions = []
    if box.side:
        for j in range(3):
            x = x_left + j * k * c + (_GAP if j >= 1 else 0.0) + (_CB_W if j >= 2 else 0.0)
            positions.append((x, y + _TITLE))
    else:
        for j in range(3):
            positions.append((x_left, y + _TITLE + j * (_TITLE + q * c + _GAP)))
    ylabel = "node groups" if p.grouped else d.query_axis
    fs = box.font
    for j, (x, yt) in enumerate(positions):
        ax = fig.add_axes(rect(x, yt, k * c, q * c))
        axes.append(ax)
        is_diff = j == 2
        ax.imshow(
            diff if is_diff else (p.base, p.var)[j],
            cmap=DIFF_CMAP if is_diff else ATTN_CMAP,
            norm=dnorm if is_diff else norm,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(names[j], fontsize=8, loc="left", pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
        # labels are plain texts at fixed offsets (no tick machinery: a few hundred labels cost
        # little); column labels under every side-by-side panel, under the last stacked one
        if box.side or j == 2:
            tr = offset_copy(
                blended_transform_factory(ax.transData, ax.transAxes), fig=fig, y=-2, units="points"
            )
            for i, (lab, sp) in enumerate(zip(p.col_labels, p.special, strict=True)):
                ax.text(
                    i,
                    0,
                    lab,
                    transform=tr,
                    rotation=90,
                    ha="center",
                    va="top",
                    fontsize=fs,
                    color=SPECIAL_LABEL_COLOUR if sp else "black",
                    style="italic" if sp else "normal",
                    gid="col_label",
                )
            fig.text(
                (x + k * c / 2) / width,
                1 - (yt + q * c + box.hx + 0.04) / height,
                d.key_axis,
                ha="center",
                va="top",
                fontsize=7,
            )
        if j == 0 or not box.side:
            tr = offset_copy(
                blended_transform_factory(ax.transAxes, ax.transData), fig=fig, x=-2, units="points"
            )
            for i, lab in enumerate(p.row_labels):
                ax.text(
                    0, i, lab, transform=tr, ha="right", va="center", fontsize=fs, gid="row_label"
                )
            fig.text(
                (x - box.wy - 0.04) / width,
                1 - (yt + q * c / 2) / height,
                ylabel,
                rotation=90,
                ha="right",
                va="center",
                fontsize=7,
            )
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_linewidth(0.6)
        gaps = np.nonzero(np.diff(p.cols) > 1)[0]
        if len(gaps):  # one line per gap between windows (never one per column)
            ax.vlines(
                gaps + 0.5, -0.5, q - 0.5, colors="#777777" if is_diff else "white", linewidth=1.6
            )
        if p.gold is not None and p.gold.any():
            rr, cc = np.nonzero(p.gold)
            ax.add_collection(
                PatchCollection(
                    [Rectangle((cj - 0.5, ri - 0.5), 1, 1) for ri, cj in zip(rr, cc, strict=True)],
                    facecolor="none",
                    edgecolor=GOLD_COLOUR,
                    linewidth=1.0 if c < 0.15 else 1.3,
                    gid="gold",
                )
            )

    # colour bars: the shared scale beside the second panel (side by side) / both model panels
    def colorbar(ax_for, mappable, label):
        pos = ax_for.get_position()
        cax = fig.add_axes((pos.x1 + 0.08 / width, pos.y0, 0.1 / width, pos.height))
        cb = fig.colorbar(mappable, cax=cax)
        cb.ax.tick_params(labelsize=6, length=1.5, pad=1)
        cb.set_label(label, fontsize=6.5, labelpad=2)
        cb.outline.set_linewidth(0.4)
        return cb

    if box.side:
        colorbar(axes[1], axes[1].images[0], "weight (shared scale)")
    else:  # one bar beside both model panels: one scale, said once
        top, bot = axes[0].get_position(), axes[1].get_position()
        cax = fig.add_axes((top.x1 + 0.08 / width, bot.y0, 0.1 / width, top.y1 - bot.y0))
        cb = fig.colorbar(axes[0].images[0], cax=cax)
        cb.ax.tick_params(labelsize=6, length=1.5, pad=1)
        cb.set_label("weight (shared scale)", fontsize=6.5, labelpad=2)
        cb.outline.set_linewidth(0.4)
    colorbar(axes[2], axes[2].images[0], "weight difference")
    fig.suptitle(
        "\n".join(head_lines),
        fontsize=HEADER_FONT,
        x=_LM / width,
        y=1 - _TM / height,
        ha="left",
        va="top",
        linespacing=1.4,
    )
    if note_lines:
        fig.supxlabel(
            "\n".join(note_lines),
            fontsize=NOTE_FONT,
            x=_LM / width,
            y=_BM / height,
            ha="left",
            va="bottom",
            color="#444444",
            linespacing=1.45,
        )
    return fig
