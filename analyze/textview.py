"""The text view: a sample's text as a wrapped paragraph, each token's background its attention.

A 512-token robocrystallographer description cannot be read as matrix columns; it can be read as
text. :func:`plot_text` draws the sample's tokens in their original order as paragraphs that wrap
at an A4 page width, once per model (``baseline``, ``variant``: one colour scale shared by the two)
and once for the difference ``variant - baseline`` (symmetric diverging scale). The attention shown
is a *focus*: the mean over all nodes (default), one node, or a node group (the mean over the
nodes with one label, e.g. all O atoms; :mod:`analyze.groups`).

Subword pieces are shown as they read: WordPiece continuations (``K`` + ``##¹⁺``) are joined into
one word (``K¹⁺``) and SentencePiece/BPE word starts (``▁``/``Ġ``) begin a new word
(:func:`merge_pieces`); every piece keeps its own background box, and a thin gap marks the piece
boundary inside a word. Gold tokens (for the focus' nodes) are underlined in magenta; special
tokens ([CLS], [SEP]) are grey italic.

The layout is fixed (no layout engine, no tight bounding box): token positions are measured once
with the Agg renderer, and each paragraph is one collection of boxes plus one text per line run,
so a 512-token view renders in well under a second.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.font_manager import FontProperties

from .errors import AnalysisInputError
from .plotstyle import ensure_parent, new_figure, safe_text, style, write_figures

__all__ = [
    "Focus",
    "Word",
    "ensure_parent",
    "focus_for",
    "align_to_text",
    "merge_pieces",
    "plot_text",
    "text_layout",
]

PAGE_W = 8.27  # A4 width, inches
PAGE_H = 11.69
MARGIN = 0.3
FONT = 7.5  # body text size (points)
LINE_H = FONT * 1.6 / 72  # inches per text line
PIECE_GAP = 0.8 / 72  # the gap that separates two pieces of one word (inches)
GOLD_COLOUR = "#ff2d95"
SPECIAL_COLOUR = "#777777"


def _light(cmap_name: str, lo: float, hi: float) -> ListedColormap:
    import matplotlib

    base = matplotlib.colormaps[cmap_name]
    return ListedColormap(base(np.linspace(lo, hi, 256)), name=f"{cmap_name}_light")


ATTN_CMAP = _light("Blues", 0.0, 0.62)  # black text stays readable on every shade
DIFF_CMAP = _light("RdBu_r", 0.18, 0.82)


# ---------------------------------------------------------------------------------------------
# words from pieces
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Word:
    """A word as it reads (``text``) and the token positions of its pieces (``pieces``)."""

    text: str
    pieces: tuple[int, ...]
    shown: tuple[str, ...]  # each piece's text as drawn (markers removed)


def _piece_style(tokens: Sequence[str]) -> str:
    if any(t.startswith("##") for t in tokens):
        return "wordpiece"
    if any(t.startswith(("\u2581", "\u0120")) for t in tokens):
        return "sentencepiece"
    return "plain"


def align_to_text(
    tokens: Sequence[str], special: Sequence[bool] | None, text: str, min_share: float = 0.9
) -> list[tuple[int, int] | None] | None:
    """Each token's ``(start, end)`` in the sample's original ``text`` (case-insensitive, in
    order), or None per token not found; None overall when fewer than ``min_share`` of the
    non-special tokens align (the text is not what the model read)."""
    low = text.lower()
    pos = 0
    spans: list[tuple[int, int] | None] = []
    n_ok = n_want = 0
    for i, t in enumerate(tokens):
        if special is not None and special[i]:
            spans.append(None)
            continue
        n_want += 1
        t = str(t).lower()
        j = low.find(t, pos) if t else -1
        # the token must come next, after at most whitespace/punctuation the tokenizer dropped
        if j < 0 or (j > pos and any(ch.isalnum() for ch in low[pos:j])):
            spans.append(None)
            continue
        spans.append((j, j + len(t)))
        pos = j + len(t)
        n_ok += 1
    if n_want == 0 or n_ok < min_share * n_want:
        return None
    return spans


def merge_pieces(
    tokens: Sequence[str], special: Sequence[bool] | None = None, text: str | None = None
) -> list[Word]:
    """Join subword pieces into words, in order; every token belongs to exactly one word.

    WordPiece (any token starts with ``##``): a ``##`` piece continues the previous word.
    SentencePiece / byte-level BPE (tokens start with ``▁`` or ``Ġ``): a marked piece starts a new
    word, an unmarked one continues. Tokens without markers: with the sample's original ``text``
    (e.g. the molecule name the model read), pieces that touch in the text form one word and are
    shown as the text spells them (``2`` ``-`` ``chloro`` -> ``2-chloro``); without it every
    token is a word. Special tokens are always words of their own.
    """
    mode = _piece_style(tokens)
    sp = [False] * len(tokens) if special is None else [bool(x) for x in special]
    spans = None
    if mode == "plain" and text:
        spans = align_to_text(tokens, sp, text)
    words: list[list[int]] = []
    shown: list[str] = []
    prev_end: int | None = None
    for i, t in enumerate(tokens):
        t = str(t)
        cont = False
        piece = t
        if mode == "wordpiece" and t.startswith("##") and len(t) > 2:
            cont, piece = True, t[2:]
        elif mode == "sentencepiece":
            if t.startswith(("\u2581", "\u0120")):
                piece = t[1:] or t
            else:
                cont = True
        elif spans is not None:
            span = spans[i]
            if span is not None:
                piece = text[span[0] : span[1]]  # type: ignore[index]
                cont = prev_end is not None and span[0] == prev_end
                prev_end = span[1]
            else:
                prev_end = None
        if cont and words and not sp[i] and not sp[words[-1][-1]]:
            words[-1].append(i)
        else:
            words.append([i])
        shown.append(piece)
    return [Word("".join(shown[i] for i in w), tuple(w), tuple(shown[i] for i in w)) for w in words]


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------
MEASURE_DPI = 150  # the house savefig dpi: glyph advances are measured as they are drawn


@functools.lru_cache(maxsize=8)
def _ft_font(italic: bool):
    from matplotlib.font_manager import findfont, get_font

    return get_font(findfont(_font(10.0, italic)))


@functools.lru_cache(maxsize=8)
def _font(size: float, italic: bool = False) -> FontProperties:
    return FontProperties(family="DejaVu Sans", size=size, style="italic" if italic else "normal")


def glyph_x(s: str, size: float = FONT, italic: bool = False) -> np.ndarray:
    """``[len(s) + 1]`` x offsets (inches) of every character of ``s`` and of its end, as the
    Agg backend lays the string out (kerning and hinting included; one layout call)."""
    from matplotlib.backends.backend_agg import get_hinting_flag

    font = _ft_font(italic)
    font.clear()
    font.set_size(size, MEASURE_DPI)
    xys = font.set_text(s + "|", 0.0, flags=get_hinting_flag())
    x = np.asarray(xys, dtype=np.float64).reshape(-1, 2)[:, 0] / 64.0 / MEASURE_DPI
    if len(x) != len(s) + 1:  # ligatures or shaping changed the glyph count: measure per char
        w = [text_width(ch, size, italic) for ch in s]
        return np.concatenate(([0.0], np.cumsum(w)))
    return x


@functools.lru_cache(maxsize=4096)
def _char_w(ch: str, italic: bool) -> float:
    from matplotlib.backends.backend_agg import get_hinting_flag

    font = _ft_font(italic)
    font.clear()
    font.set_size(10.0, MEASURE_DPI)
    font.set_text(ch, 0.0, flags=get_hinting_flag())
    return font.get_width_height()[0] / 64.0 / MEASURE_DPI


def text_width(s: str, size: float = FONT, italic: bool = False) -> float:
    """Width of ``s`` in inches (sum of the characters' advances: a close upper estimate for
    layout decisions; cached per character, so measuring thousands of labels is cheap)."""
    return sum(_char_w(ch, italic) for ch in s) * size / 10.0


@dataclass
class TextLayout:
    """Where every token goes: ``x0/x1`` (inches from the text's left edge) and ``line``."""

    words: list[Word]
    x0: np.ndarray  # [n_tokens]
    x1: np.ndarray
    line: np.ndarray  # int [n_tokens]
    n_lines: int
    runs: list[tuple[int, float, str, bool]]  # (line, x, text, is_special) one text per run
    shown: list[str]  # each token's drawn text


def text_layout(
    tokens: Sequence[str],
    special: Sequence[bool] | None,
    width: float,
    size: float = FONT,
    text: str | None = None,
) -> TextLayout:
    """Wrap the words into lines of ``width`` inches and place every piece.

    The whole text is laid out once by the font engine (:func:`glyph_x`), so each piece's box
    sits exactly under its glyphs; a line is drawn as runs of one style (normal or special), one
    text object per run, starting at the first piece's measured position.
    """
    n = len(tokens)
    sp = np.zeros(n, bool) if special is None else np.asarray(special, bool)
    words = merge_pieces(tokens, sp, text)
    shown = [""] * n
    for w in words:
        for i, s in zip(w.pieces, w.shown, strict=True):
            shown[i] = s if s.strip() else safe_text(s)
    # one layout of every normal word, one per special word (italic)
    full = " ".join("".join(shown[i] for i in w.pieces) for w in words)
    gx = glyph_x(full, size) if full else np.zeros(1)
    space = (
        float(np.median(np.diff(gx)[[j for j, ch in enumerate(full) if ch == " "]]))
        if (" " in full)
        else text_width(" ", size)
    )
    x0 = np.zeros(n)
    x1 = np.zeros(n)
    line = np.zeros(n, dtype=np.int64)
    runs: list[tuple[int, float, str, bool]] = []
    # per word: piece offsets relative to the word start, and its width
    offsets: list[np.ndarray] = []
    widths = np.zeros(len(words))
    cstart = np.zeros(len(words), dtype=np.int64)
    c = 0
    for k, w in enumerate(words):
        cstart[k] = c
        texts = [shown[i] for i in w.pieces]
        bounds = np.concatenate(([0], np.cumsum([len(t) for t in texts])))
        if sp[w.pieces[0]]:
            xs = glyph_x("".join(texts), size, italic=True)
            rel = xs[bounds]
        else:
            rel = gx[c + bounds] - gx[c]
        offsets.append(rel)
        widths[k] = rel[-1]
        c += int(bounds[-1]) + 1
    cur_line, x = 0, 0.0
    run_words: list[int] = []
    run_x = 0.0

    def close_run() -> None:
        if run_words:
            is_sp = bool(sp[words[run_words[0]].pieces[0]])
            text = " ".join("".join(shown[i] for i in words[k].pieces) for k in run_words)
            runs.append((cur_line, run_x, text, is_sp))
            run_words.clear()

    style_gap = 2.0 / 72  # extra room where normal and special (italic) text meet
    for k, w in enumerate(words):
        is_sp = bool(sp[w.pieces[0]])
        switch = bool(run_words) and bool(sp[words[run_words[0]].pieces[0]]) != is_sp
        step = space + (style_gap if switch else 0.0)
        if x > 0 and x + step + widths[k] > width:
            close_run()
            cur_line += 1
            x = 0.0
        elif x > 0:
            x += step
        if run_words and bool(sp[words[run_words[0]].pieces[0]]) != is_sp:
            close_run()
        if not run_words:
            run_x = x
        elif not is_sp:  # inside a normal run: the engine's own position of this word
            x = run_x + gx[cstart[k]] - gx[cstart[run_words[0]]]
        run_words.append(k)
        rel = offsets[k]
        for j, i in enumerate(w.pieces):
            x0[i] = x + rel[j]
            x1[i] = x + rel[j + 1]
            line[i] = cur_line
        x += widths[k]
    close_run()
    return TextLayout(words, x0, x1, line, cur_line + 1 if n else 0, runs, shown)


# ---------------------------------------------------------------------------------------------
# foci
# ---------------------------------------------------------------------------------------------
@dataclass
class Focus:
    """Which node rows are averaged for a paragraph, and how it is called."""

    name: str
    rows: tuple[int, ...]
    weights: tuple[np.ndarray, np.ndarray] = field(default=None)  # type: ignore[assignment]
    gold: np.ndarray | None = None


def focus_for(
    data, *, node: int | None = None, group: str | None = None, node_labels=None
) -> Focus:
    """The mean over all nodes (default), one node (0-based index) or a node group (label)."""
    from .groups import group_label

    nq = data.matrices[0].shape[0]
    labels = list(node_labels if node_labels is not None else data.node_labels_or_rows())
    if node is not None:
        if not 0 <= node < nq:
            raise AnalysisInputError(
                f"`node` {node} out of range: the sample has {nq} nodes (0..{nq - 1})"
            )
        rows = (node,)
        name = f"node {safe_text(labels[node])}{node}"
    elif group is not None:
        rows = tuple(i for i, lab in enumerate(labels) if lab == group)
        if not rows:
            have = ", ".join(dict.fromkeys(labels))
            raise AnalysisInputError(
                f"no node has the label {group!r}; the sample's labels: {have}"
            )
        name = f"node group {safe_text(group_label(group, len(rows)))}"
    else:
        rows = tuple(range(nq))
        name = f"mean over all {nq} {data.query_axis}"
    idx = list(rows)
    w = tuple(np.asarray(m, np.float64)[idx].mean(axis=0) for m in data.matrices)
    gold = None
    if data.gold is not None and np.shape(data.gold) == data.matrices[0].shape:
        gold = np.asarray(data.gold, bool)[idx].any(axis=0)
    return Focus(name, rows, w, gold)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def plot_text(
    data,
    path: str | Path | None = None,
    *,
    formats: tuple[str, ...] | None = None,
    nodes: Sequence[int] = (),
    groups: Sequence[str] = (),
    auto_groups: bool = False,
    max_height: float = PAGE_H,
    width: float = PAGE_W,
):
    """Draw the text view of a :class:`~analyze.heatmap.HeatmapData` (a nodes -> tokens site).

    Foci: the mean over all nodes, then each of ``nodes`` and ``groups``; with ``auto_groups``
    the node groups follow, smallest first (so a singleton such as the only Si comes first), as
    long as the figure stays within ``max_height`` inches. With ``path`` the figure is written
    (format from the suffix, or ``formats`` for a stem) and the written paths are returned; else
    the :class:`~matplotlib.figure.Figure` is returned.
    """
    if data.key_axis != "tokens":
        raise AnalysisInputError(
            f"site {data.site!r} attends over {data.key_axis}, not tokens; the text view needs a "
            "site whose keys are the tokens"
        )
    if path is not None:
        ensure_parent(path)
    foci = [focus_for(data)]
    foci += [focus_for(data, node=int(n)) for n in nodes]
    foci += [focus_for(data, group=str(g)) for g in groups]
    layout = text_layout(
        data.col_labels,
        data.col_special,
        width - 2 * MARGIN,
        FONT,
        text=getattr(data, "text", None),
    )
    if auto_groups:
        from .groups import node_groups

        labels = data.node_labels_or_rows()
        grps = sorted(node_groups(labels), key=lambda g: (g.size, g.label))
        if len(grps) > 1:
            have = {f.rows for f in foci}
            for g in grps:
                f = focus_for(data, group=g.label)
                if f.rows in have:
                    continue
                if _height(layout, len(foci) + 1) > max_height:
                    break
                foci.append(f)
                have.add(f.rows)
    if path is not None:
        fmts = (
            [Path(path).suffix.lower().lstrip(".")]
            if formats is None and Path(path).suffix.lower().lstrip(".") in ("png", "pdf", "svg")
            else list(formats or ("png",))
        )
    raster = path is not None and all(f == "png" for f in fmts)
    with style():
        fig = _draw(data, layout, foci, width, raster=raster)
        if path is None:
            return fig
        return write_figures(fig, path, formats, dpi=MEASURE_DPI)


_HEADER_H = 0.62
_FOCUS_H = 0.42
_PARA_TITLE_H = 0.2
_PARA_GAP = 0.08
_NOTE_H = 0.3


def _height(layout: TextLayout, n_foci: int) -> float:
    para = _PARA_TITLE_H + layout.n_lines * LINE_H + _PARA_GAP
    return _HEADER_H + n_foci * (_FOCUS_H + 3 * para) + _NOTE_H


def _draw(data, layout: TextLayout, foci: list[Focus], width: float, raster: bool = False):
    H = _height(layout, len(foci))
    text_image = _text_image(layout, width - 2 * MARGIN) if raster else None
    fig = new_figure(width, H, layout=None, dpi=MEASURE_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(H, 0)  # inches from the top
    ax.axis("off")
    base, var = data.models
    from .heatmap import _layer_head_text

    head = (
        f"Sample {safe_text(data.sample_id)}  -  text view of site {safe_text(data.site)} "
        f"({data.query_axis} -> tokens), {_layer_head_text(data)}"
    )
    sub = (
        f"{len(data.col_labels)} tokens in their original order, subword pieces joined as they "
        "read (a thin gap separates the pieces of one word)"
    )
    ax.text(MARGIN, 0.12, head, fontsize=8.5, va="top", ha="left", fontweight="bold")
    ax.text(MARGIN, 0.36, sub, fontsize=7, va="top", ha="left", color="#444444")
    y = _HEADER_H
    n = len(data.col_labels)
    sp = np.asarray(data.col_special, bool) if len(data.col_special) == n else np.zeros(n, bool)
    for k, f in enumerate(foci):
        wb, wv = f.weights
        vmax = float(max(wb.max(initial=0.0), wv.max(initial=0.0), 1e-9))
        diff = wv - wb
        dmax = float(max(np.abs(diff).max(initial=0.0), 1e-9))
        norm, dnorm = Normalize(0.0, vmax), Normalize(-dmax, dmax)
        ax.text(
            MARGIN,
            y + 0.06,
            safe_text(f"Attention of the {f.name}", 46),
            fontsize=8.5,
            va="top",
            ha="left",
            fontweight="bold",
        )
        _colorbar(ax, y, norm, ATTN_CMAP, "weight (one scale for both models)", 4.05)
        _colorbar(
            ax,
            y,
            dnorm,
            DIFF_CMAP,
            f"difference {safe_text(var)} - {safe_text(base)}",
            width - MARGIN - 1.75,
        )
        y += _FOCUS_H
        paras = (
            (f"{safe_text(base)} (baseline)", wb, ATTN_CMAP, norm),
            (safe_text(var), wv, ATTN_CMAP, norm),
            (f"difference: {safe_text(var)} - {safe_text(base)}", diff, DIFF_CMAP, dnorm),
        )
        for j, (title, w, cmap, nm) in enumerate(paras):
            ax.text(
                MARGIN,
                y + 0.02,
                title,
                fontsize=7.5,
                va="top",
                ha="left",
                color="#222222",
                style="italic",
            )
            y += _PARA_TITLE_H
            _paragraph(
                ax,
                layout,
                w,
                cmap,
                nm,
                f.gold,
                sp,
                MARGIN,
                y,
                gid=f"text{k}.{j}",
                text_image=text_image,
            )
            y += layout.n_lines * LINE_H + _PARA_GAP
    notes = ["boxes: attention of each token (piece)"]
    if any(f.gold is not None and f.gold.any() for f in foci):
        notes.append("magenta underline: gold token of the focus' nodes")
    if sp.any():
        notes.append("grey italic: special tokens")
    if getattr(data, "note", ""):
        notes.append(data.note.split(";")[0] if "title metrics" in data.note else data.note)
    ax.text(
        MARGIN, H - 0.1, "; ".join(notes[:3]), fontsize=6.5, va="bottom", ha="left", color="#444444"
    )
    return fig


_PT = 1 / 72  # one point in inches


def _colorbar(ax, y, norm, cmap, label, x0, length: float = 1.6, height: float = 0.07) -> None:
    """A small horizontal colour bar at ``x0`` inches from the left, ``y + 0.19`` inches from the
    top, drawn on the page axes ``ax`` (inches, y down): the colour ramp as one image, its
    outline, three ticks (min, middle, max) with labels below and ``label`` above. What
    ``fig.colorbar`` draws, without an axes of its own (14 axes with tick machinery cost about
    a third of a text view's drawing time)."""
    from matplotlib.patches import Rectangle

    top, bottom = y + 0.19, y + 0.19 + height
    ramp = np.linspace(0.0, 1.0, 256)[None, :]
    ax.imshow(
        ramp,
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        extent=(x0, x0 + length, bottom, top),
        aspect="auto",
        interpolation="nearest",
        zorder=2,
    )
    ax.add_patch(
        Rectangle((x0, top), length, height, fill=False, linewidth=0.4, edgecolor="black", zorder=3)
    )
    mid = 0.5 * (norm.vmin + norm.vmax)
    tick = 1.5 * _PT
    xs = [x0, x0 + length / 2, x0 + length]
    ax.add_collection(
        LineCollection(
            [((x, bottom), (x, bottom + tick)) for x in xs], linewidths=0.8, colors="black"
        )
    )
    for x, v in zip(xs, (norm.vmin, mid, norm.vmax), strict=True):
        ax.text(x, bottom + tick + 1 * _PT, f"{v:.2g}", fontsize=5.5, ha="center", va="top")
    ax.text(x0 + length / 2, top - 1.5 * _PT, label, fontsize=6, ha="center", va="bottom")


def _runs(ax, layout: TextLayout, left: float, top: float, gid: str | None) -> None:
    """One text object per line run, at the measured positions."""
    for ln, x, text, is_sp in layout.runs:
        ax.text(
            left + x,
            top + ln * LINE_H + 0.53 * LINE_H,
            text,
            fontsize=FONT,
            va="center_baseline",
            ha="left",
            color=SPECIAL_COLOUR if is_sp else "black",
            style="italic" if is_sp else "normal",
            gid=gid,
            parse_math=False,
        )


def _text_image(layout: TextLayout, width: float) -> np.ndarray:
    """The paragraph's glyphs as an RGBA array at :data:`MEASURE_DPI` on a transparent ground
    (drawn once, then placed over each paragraph's boxes: a 512-token view has three identical
    paragraphs per focus, and drawing glyphs is most of its cost)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w_in = width
    h_in = max(layout.n_lines, 1) * LINE_H
    fig = Figure(figsize=(w_in, h_in), dpi=MEASURE_DPI)
    fig.patch.set_alpha(0.0)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w_in)
    ax.set_ylim(h_in, 0)
    ax.axis("off")
    ax.patch.set_alpha(0.0)
    _runs(ax, layout, 0.0, 0.0, None)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _paragraph(
    ax, layout: TextLayout, w, cmap, norm, gold, special, left, top, gid: str, text_image=None
):
    """One paragraph: a box per token (one collection), one text per line run, gold lines."""
    n = len(layout.x0)
    if n == 0:
        return
    ytop = top + layout.line * LINE_H
    pad = 0.6 / 72
    # pieces of one word touch; a gap of PIECE_GAP separates them (shrink each box's right edge
    # when the next token continues the same word)
    x0 = left + layout.x0 - pad
    x1 = left + layout.x1 + pad
    same_next = np.zeros(n, bool)
    for word in layout.words:
        if len(word.pieces) > 1:
            same_next[list(word.pieces[:-1])] = True
    x1 = np.where(same_next, left + layout.x1 - PIECE_GAP / 2, x1)
    x0_in = np.zeros(n, bool)
    x0_in[1:] = same_next[:-1]
    x0 = np.where(x0_in, left + layout.x0 + PIECE_GAP / 2, x0)
    y0 = ytop + 0.12 * LINE_H
    y1 = ytop + 0.92 * LINE_H
    verts = np.stack(
        [
            np.stack([x0, y0], 1),
            np.stack([x1, y0], 1),
            np.stack([x1, y1], 1),
            np.stack([x0, y1], 1),
        ],
        axis=1,
    )
    colours = cmap(norm(np.asarray(w, np.float64)))
    colours[special] = (1, 1, 1, 1)
    pc = PolyCollection(verts, facecolors=colours, edgecolors="none", gid=f"{gid}.boxes")
    ax.add_collection(pc)
    if special.any():
        sv = verts[special]
        ax.add_collection(
            PolyCollection(
                sv, facecolors="none", edgecolors="#bbbbbb", linewidths=0.4, linestyles="dotted"
            )
        )
    if text_image is None:
        _runs(ax, layout, left, top, gid)
    else:  # the same glyphs, rendered once for all paragraphs (raster output only)
        # pixels placed as they are (no resampling): the figure is drawn at MEASURE_DPI
        fig = ax.figure
        H = fig.get_size_inches()[1]
        h = text_image.shape[0]
        fig.figimage(
            text_image,
            xo=int(round(left * MEASURE_DPI)),
            yo=int(round((H - top) * MEASURE_DPI)) - h,
            origin="upper",
            zorder=3,
        ).set_gid(f"{gid}.image")
    if gold is not None and np.any(gold):
        g = np.flatnonzero(gold)
        yy = ytop[g] + 0.97 * LINE_H
        segs = np.stack([np.stack([x0[g], yy], 1), np.stack([x1[g], yy], 1)], axis=1)
        ax.add_collection(
            LineCollection(segs, colors=GOLD_COLOUR, linewidths=1.3, gid=f"{gid}.gold")
        )
