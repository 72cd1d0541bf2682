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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from .plotstyle import new_figure, safe_text, save_figure, style

__all__ = [
    "HeatmapData",
    "default_site",
    "heatmap_data",
    "plot_heatmap",
    "metrics_note",
    "quick_metrics",
    "resolve_layer_head",
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
        raise ValueError(
            f"`layer` {layer} out of range: the site has {n_layers} layer(s) (0..{n_layers - 1})"
        )
    if head is None or (isinstance(head, str) and head.lower() in ("mean", "head-mean")):
        return lay, None
    try:
        h = int(head)
    except (TypeError, ValueError):
        raise ValueError(
            f"`head` {head!r} is neither a head index (0..{n_heads - 1}) nor 'mean'"
        ) from None
    if h == -1:
        return lay, None
    if not 0 <= h < n_heads:
        raise ValueError(
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
    baseline = baseline or store.baseline
    if baseline not in store.models:
        raise ValueError(
            f"`baseline` {baseline!r} is not in the store; models: {', '.join(store.models)}"
        )
    if variant is None:
        others = [m for m in store.models if m != baseline]
        if not others:
            raise ValueError("the store holds one model only; a heatmap comparison needs two")
        variant = others[0]
    if variant not in store.models or variant == baseline:
        raise ValueError(
            f"`variant` {variant!r} must be another model of the store: {', '.join(store.models)}"
        )
    site = site or default_site(store)
    sites = store.sites(baseline)
    if site not in sites:
        raise ValueError(f"`site` {site!r} is not in the store; sites: {', '.join(sorted(sites))}")
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
    )
    data.metrics, data.jsd = quick_metrics(
        data, threshold=threshold, exclude_special=exclude_special
    )
    data.note = metrics_note(threshold, exclude_special and bool(data.col_special.any()))
    return data


def metrics_note(threshold: float, special_excluded: bool) -> str:
    """The conventions of the title metrics, stated under the figure."""
    sp = "special tokens excluded, rows renormalised; " if special_excluded else ""
    return f"title metrics: {sp}eff. tokens = count(weight > {threshold:g})"


def _jsd_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1.0)), 0.0)
        return t.sum(axis=-1)

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, np.log(2.0))


def quick_metrics(
    data: HeatmapData, *, threshold: float = 0.1, exclude_special: bool = True
) -> tuple[dict[str, dict[str, float]], float | None]:
    """Sample-level (mean over rows) entropy, normalised entropy, max weight, effective tokens and
    Gini of the drawn distributions, plus the mean row JSD between the two models.

    Same conventions as the analysis engine: rows restricted to non-special keys and renormalised
    when ``exclude_special`` (unless that leaves no key), 0 log 0 = 0, normalised entropy of a
    one-key row = 0, Gini on the ascending-sorted row ``(2 sum i p_(i)) / (n sum p) - (n + 1) / n``.
    """
    keep = ~data.col_special if exclude_special else np.ones(len(data.col_special), bool)
    if not keep.any():
        keep = np.ones_like(keep)
    out: dict[str, dict[str, float]] = {}
    rows = []
    for m, mat in zip(data.models, data.matrices, strict=False):
        p = np.asarray(mat, np.float64)[:, keep]
        s = p.sum(axis=1, keepdims=True)
        p = np.divide(p, s, out=np.full_like(p, 1.0 / p.shape[1]), where=s > 0)
        rows.append(p)
        n = p.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        srt = np.sort(p, axis=1)
        idx = np.arange(1, n + 1)
        gini = (2.0 * (srt * idx).sum(axis=1)) / (n * srt.sum(axis=1)) - (n + 1) / n
        out[m] = {
            "entropy": float(h.mean()),
            "norm_entropy": float((h / np.log(n)).mean()) if n > 1 else 0.0,
            "max_weight": float(p.max(axis=1).mean()),
            "effective_tokens": float((p > threshold).sum(axis=1).mean()),
            "gini": float(gini.mean()),
        }
    jsd = float(_jsd_rows(rows[0], rows[1]).mean()) if rows[0].shape == rows[1].shape else None
    return out, jsd


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def _keep_top(weights: np.ndarray, cap: int, must: np.ndarray | None = None) -> np.ndarray:
    """Indices (ascending) of at most ``cap`` positions with the largest ``weights`` (``must``
    positions, e.g. gold columns, first)."""
    n = len(weights)
    if n <= cap:
        return np.arange(n)
    score = weights.astype(np.float64).copy()
    if must is not None:
        score = score + np.where(must, 10.0, 0.0)
    return np.sort(np.argsort(-score, kind="stable")[:cap])


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
    and return the written paths, else return the :class:`~matplotlib.figure.Figure`."""
    with style():
        fig = _draw(data, max_tokens=max_tokens, max_nodes=max_nodes, title=title)
        if path is None:
            return fig
        path = Path(path)
        if formats is None and path.suffix.lower().lstrip(".") in ("png", "pdf", "svg"):
            fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
            return [path]
        return save_figure(fig, path, formats or ("png",))


def _draw(d: HeatmapData, *, max_tokens: int, max_nodes: int, title: str | None):
    base, var = (np.asarray(m, np.float64) for m in d.matrices)
    nq, nk = base.shape
    both = np.maximum(base, var)
    gold = d.gold if d.gold is not None and d.gold.shape == base.shape and d.gold.any() else None
    cols = _keep_top(both.max(axis=0), max_tokens, None if gold is None else gold.any(axis=0))
    rows = _keep_top(both.max(axis=1), max_nodes, None if gold is None else gold.any(axis=1))
    omitted = []
    if len(cols) < nk:
        omitted.append(f"{len(cols)} of {nk} {d.key_axis} shown (highest attention)")
    if len(rows) < nq:
        omitted.append(f"{len(rows)} of {nq} {d.query_axis} shown (highest attention)")
    if omitted:
        omitted.append("dashed lines mark omitted ranges")
    base, var = base[np.ix_(rows, cols)], var[np.ix_(rows, cols)]
    diff = var - base
    g = None if gold is None else gold[np.ix_(rows, cols)]
    col_labels = [safe_text(d.col_labels[c], 14) for c in cols]
    row_labels = [safe_text(d.row_labels[r], 12) for r in rows]
    special = (
        np.asarray(d.col_special, bool)[cols]
        if len(d.col_special) == nk
        else np.zeros(len(cols), bool)
    )
    q, k = base.shape

    vmax = float(max(base.max(), var.max(), 1e-6))
    dmax = float(max(np.abs(diff).max(), 1e-6))
    side = k <= MAX_SIDE_BY_SIDE_COLS
    label_w = 0.12 + 0.065 * max((len(s) for s in row_labels), default=3)
    label_h = 0.12 + 0.06 * max((len(s) for s in col_labels), default=3)
    pw, ph = max(k * CELL_IN, 1.6), max(q * CELL_IN, 0.9)
    header = 1.0
    if side:
        width = 3 * pw + 3 * label_w + 2.2
        height = ph + label_h + header + 0.45
        fig = new_figure(max(width, 9.0), height)
        axes = fig.subplots(1, 3, sharey=True)
    else:
        width = pw + label_w + 1.4
        height = 3 * (ph + label_h + 0.45) + header
        fig = new_figure(max(width, 9.0), height)
        axes = fig.subplots(3, 1)

    fig.get_layout_engine().set(h_pad=0.08, w_pad=0.06)  # room between titles, labels, notes
    norm = Normalize(0.0, vmax)
    dnorm = Normalize(-dmax, dmax)
    names = [
        f"{safe_text(d.models[0])} (baseline)",
        safe_text(d.models[1]),
        f"difference: {safe_text(d.models[1])} - {safe_text(d.models[0])}",
    ]
    ims = []
    for ax, mat, name, is_diff in zip(
        axes, (base, var, diff), names, (False, False, True), strict=False
    ):
        im = ax.imshow(
            mat,
            cmap=DIFF_CMAP if is_diff else ATTN_CMAP,
            norm=dnorm if is_diff else norm,
            aspect="equal",
            interpolation="nearest",
        )
        ims.append(im)
        ax.set_title(name, fontsize=9.5, loc="left")
        ax.set_xticks(np.arange(k))
        ax.set_xticklabels(col_labels, rotation=90, fontsize=7)
        for lab, sp in zip(ax.get_xticklabels(), special, strict=False):
            if sp:
                lab.set_color(SPECIAL_LABEL_COLOUR)
                lab.set_fontstyle("italic")
        ax.set_yticks(np.arange(q))
        if ax is axes[0] or not side:
            ax.set_yticklabels(row_labels, fontsize=7)
        ax.tick_params(length=2, pad=1.5)
        ax.set_xlabel(d.key_axis, fontsize=8)
        if ax is axes[0] or not side:
            ax.set_ylabel(d.query_axis, fontsize=8)
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_linewidth(0.6)
        gap = "#777777" if is_diff else "white"
        for i in np.nonzero(np.diff(cols) > 1)[0]:  # omitted columns between i and i + 1
            ax.axvline(i + 0.5, color=gap, linewidth=1.2, linestyle=(0, (2, 1)))
        for i in np.nonzero(np.diff(rows) > 1)[0]:
            ax.axhline(i + 0.5, color=gap, linewidth=1.2, linestyle=(0, (2, 1)))
        if g is not None:
            for r, c in zip(*np.nonzero(g), strict=False):
                ax.add_patch(
                    Rectangle(
                        (c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=GOLD_COLOUR, linewidth=1.3
                    )
                )
    shrink = 0.9 if side else 0.85
    cb = fig.colorbar(ims[0], ax=list(axes[:2]), shrink=shrink, pad=0.02, fraction=0.04)
    cb.set_label("weight (shared scale)", fontsize=8)
    cbd = fig.colorbar(ims[2], ax=axes[2], shrink=shrink, pad=0.02, fraction=0.04)
    cbd.set_label("weight difference", fontsize=8)

    head = title or (
        f"Sample {safe_text(d.sample_id)}  -  site {safe_text(d.site)} "
        f"({d.query_axis} -> {d.key_axis}), {_layer_head_text(d)}"
    )
    lines = [head]
    lines += _metrics_lines(d)
    fig.suptitle("\n".join(lines), fontsize=9, x=0.01, ha="left", linespacing=1.35)
    notes = list(omitted)
    if g is not None:
        notes.append("outlined cells: gold alignment")
    if special.any():
        notes.append("grey italic labels: special tokens")
    if d.note:
        notes.append(d.note)
    if notes:
        fig.supxlabel("; ".join(notes), fontsize=8, x=0.01, ha="left", color="#444444")
    return fig
