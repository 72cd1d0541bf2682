"""Shared figure plumbing for the output side: backend-free figures, one font, safe labels, saving.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so the
library does not switch the user's backend or keep global figure state; saving uses the Agg canvas.
Every figure is drawn inside :func:`style` so labels use DejaVu Sans (ships with matplotlib, so no
missing-glyph boxes on any install). Text that comes from data (token strings, node labels, model
names) goes through :func:`safe_text` so a ``$`` can never start mathtext.

Fixed layouts (cheap to save): a layout engine or ``bbox_inches="tight"`` measures every text of
the figure once more per pass (several passes per save), which for figures with many panels costs
more than drawing them. Figures made with ``new_figure(..., layout=None)`` place their axes with
:func:`fit_layout` (room for titles, tick labels and axis labels estimated from DejaVu Sans'
advance widths, without drawing) and are saved by :func:`save_figure` in one draw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from attncmp.store import atomic

if TYPE_CHECKING:  # matplotlib itself is imported when a figure is made, not with this module
    from matplotlib.figure import Figure

from .errors import AnalysisError, AnalysisInputError

__all__ = [
    "FORMATS",
    "MODEL_COLOURS",
    "fit_layout",
    "legend_above",
    "line_height",
    "new_figure",
    "text_width",
    "parse_formats",
    "safe_text",
    "save_figure",
    "style",
]

FORMATS = ("png", "pdf", "svg")
# one colour per model position (baseline first), colour-blind safe (Okabe-Ito)
MODEL_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 150,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}
# fixed-layout figures: titles at a fixed height (no search for top tick labels; none are drawn)
_FIXED_RC = {"axes.titley": 1.0}
# DejaVu Sans advance widths in em (units / 2048) of the characters tick labels are made of
_ADVANCE = {c: 0.636 for c in "0123456789"}
_ADVANCE.update({".": 0.318, ",": 0.318, " ": 0.318, "\u2212": 0.838, "-": 0.361, "+": 0.838})
_ADVANCE.update({"e": 0.615, "%": 0.950, "*": 0.500, "[": 0.390, "]": 0.390, "=": 0.838})
_WIDE = 0.72  # other characters: a little wider than DejaVu Sans' average letter


@contextlib.contextmanager
def style(fixed: bool = False) -> Iterator[None]:
    """The house rcParams (DejaVu Sans, sizes, dpi) for the duration of a figure's life;
    ``fixed``: also those of fixed-layout figures (titles at a fixed height)."""
    import matplotlib

    with matplotlib.rc_context({**_RC, **_FIXED_RC} if fixed else _RC):
        yield


def new_figure(width: float, height: float, **kw) -> Figure:
    """A figure not registered with pyplot (call inside :func:`style`)."""
    kw.setdefault("layout", "constrained")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kw)


def text_width(text: str, size: float) -> float:
    """Width in inches of one line of ``text`` at ``size`` points in DejaVu Sans (an estimate:
    exact for digits, signs and points; other characters are counted a little wide)."""
    return sum(_ADVANCE.get(c, _WIDE) for c in text) * size / 72.0


def line_height(size: float, lines: int = 1) -> float:
    """Height in inches of ``lines`` lines of text at ``size`` points (matplotlib's 1.2 spacing)."""
    return lines * 1.2 * size / 72.0 if lines > 0 else 0.0


def _tick_extent(axis) -> float:
    """Estimated extent in inches, away from the axes, of ``axis``'s visible tick labels (their
    width for a y axis, their height for an x axis) including tick length and pad."""
    major = axis.get_major_ticks()
    if not major or not axis.get_visible():
        return 0.0
    tick = (major[0].get_tick_padding() + major[0].get_pad()) / 72.0
    drawn = axis._update_ticks()  # the ticks inside the view limits: those that get drawn
    labels = [k.label1 for k in drawn if k.label1.get_visible() and k.label1.get_text()]
    if not labels:
        return tick
    if axis.axis_name == "y":
        return tick + max(
            text_width(line, t.get_fontsize()) for t in labels for line in t.get_text().split("\n")
        )
    return tick + max(line_height(t.get_fontsize(), t.get_text().count("\n") + 1) for t in labels)


def _x_overhang(ax, width: float) -> tuple[float, float]:
    """How far (inches) the x tick labels of ``ax`` reach beyond its left and right edges when it
    is ``width`` inches wide (labels are centred on their ticks)."""
    if not ax.xaxis.get_visible():
        return 0.0, 0.0
    to_axes = ax.transScale + ax.transLimits
    left = right = 0.0
    for tick in ax.xaxis._update_ticks():
        lab = tick.label1
        if not (lab.get_visible() and lab.get_text()) or lab.get_ha() != "center":
            continue
        w = max(text_width(line, lab.get_fontsize()) for line in lab.get_text().split("\n"))
        f = to_axes.transform((tick.get_loc(), 0.0))[0]
        left = max(left, w / 2 - f * width)
        right = max(right, w / 2 - (1 - f) * width)
    return left, right


def _label_extent(label) -> float:
    text = label.get_text()
    return line_height(label.get_fontsize(), text.count("\n") + 1) if text else 0.0


def _title_extent(ax) -> float:
    """Height above the axes of its titles and of a legend anchored above it."""
    h = 0.0
    for loc in ("left", "center", "right"):
        t = ax.get_title(loc=loc)
        if t:
            size = ax.title.get_fontsize() if loc == "center" else ax._left_title.get_fontsize()
            h = max(
                h,
                line_height(size, t.count("\n") + 1)
                + ax.titleOffsetTrans.get_matrix()[1, 2] / ax.figure.dpi,
            )
    leg = ax.get_legend()
    if leg is not None and leg.get_visible() and getattr(leg, "_attncmp_above", False):
        size = leg.prop.get_size_in_points()
        n = len(leg.texts) + (1 if leg.get_title().get_text() else 0)
        h = max(h, n * 1.45 * size / 72 + 0.12)
    return h


def fit_layout(
    fig: Figure,
    axes,
    *,
    width_ratios: Sequence[float] | None = None,
    wgap: float = 0.25,
    hgap: float = 0.12,
    pad: float = 0.1,
    colorbars: dict | None = None,
) -> None:
    """Place a grid of axes (2-D array, rows x columns) in a figure without a layout engine.

    Each column gets room on its left for its widest y tick labels and y label, each row room
    above for its titles (and a legend placed above the axes by :func:`legend_above`) and below
    for its x tick labels and x label, all estimated from the texts (no drawing); the figure's
    suptitle and supxlabel (a note) get their line heights. ``colorbars`` maps an axes to the
    axes of its colour bar, drawn right of it with its ticks and label. Axis labels are pinned
    just outside the estimated tick labels, so drawing measures no tick-label bounding boxes.
    Margins and gaps are in inches; ``width_ratios`` as in a gridspec.
    """
    grid = np.atleast_2d(np.asarray(axes, dtype=object))
    nrows, ncols = grid.shape
    colorbars = colorbars or {}
    W, H = fig.get_size_inches()
    live = [[ax for ax in grid[:, j] if ax is not None and ax.get_visible()] for j in range(ncols)]
    rows = [[ax for ax in grid[i, :] if ax is not None and ax.get_visible()] for i in range(nrows)]

    def cb_right(ax) -> float:
        cax = colorbars.get(ax)
        if cax is None:
            return 0.0
        return 0.06 + 0.12 + _tick_extent(cax.yaxis) + _label_extent(cax.yaxis.label) + 0.04

    left = [
        max((_tick_extent(ax.yaxis) + _label_extent(ax.yaxis.label) + 0.06 for ax in c), default=0)
        for c in live
    ]
    right = [max((cb_right(ax) for ax in c), default=0.0) for c in live]
    above = [max((_title_extent(ax) for ax in r), default=0.0) for r in rows]
    below = [
        max((_tick_extent(ax.xaxis) + _label_extent(ax.xaxis.label) + 0.04 for ax in r), default=0)
        for r in rows
    ]
    sup = fig._suptitle
    top = pad + (_label_extent(sup) + 0.1 if sup is not None and sup.get_text() else 0.0)
    note = fig._supxlabel
    bottom = pad + (_label_extent(note) + 0.06 if note is not None and note.get_text() else 0.0)
    ratios = np.asarray(width_ratios if width_ratios is not None else [1.0] * ncols, float)
    left0, right0 = left, right
    for _ in range(2):  # x tick labels overhanging an edge need the column widths: twice
        avail_w = W - pad - sum(left) - sum(right) - wgap * (ncols - 1) - pad
        widths = avail_w * ratios / ratios.sum()
        over = [[_x_overhang(ax, widths[j]) for ax in c] for j, c in enumerate(live)]
        left = [max([a, *(o[0] for o in oj)]) for a, oj in zip(left0, over, strict=True)]
        right = [max([a, *(o[1] for o in oj)]) for a, oj in zip(right0, over, strict=True)]
    avail_w = W - pad - sum(left) - sum(right) - wgap * (ncols - 1) - pad
    avail_h = H - top - sum(above) - sum(below) - hgap * (nrows - 1) - bottom
    if avail_w <= 0.5 or avail_h <= 0.5:
        raise ValueError(f"figure {W:.1f} x {H:.1f} in is too small for its texts")
    widths = avail_w * ratios / ratios.sum()
    height = avail_h / nrows
    x, xs = pad, []
    for j in range(ncols):
        x += left[j]
        xs.append(x)
        x += widths[j] + right[j] + wgap
    y, ys = H - top, []
    for i in range(nrows):
        y -= above[i] + height
        ys.append(y)
        y -= below[i] + hgap
    for i in range(nrows):
        for j in range(ncols):
            ax = grid[i, j]
            if ax is None:
                continue
            ax.set_position([xs[j] / W, ys[i] / H, widths[j] / W, height / H])
            cax = colorbars.get(ax)
            if cax is not None:
                cax.set_position([(xs[j] + widths[j] + 0.06) / W, ys[i] / H, 0.12 / W, height / H])
    if sup is not None and sup.get_text():
        sup.set_y(1 - pad / H)
        sup.set_va("top")
    if note is not None and note.get_text():
        note.set_y(pad / H)
        note.set_va("bottom")
    for ax in [*grid.ravel(), *colorbars.values()]:
        if ax is not None and ax.get_visible():
            _pin_axis_labels(ax)


def _pin_axis_labels(ax, pad: float = 0.04) -> None:
    from matplotlib.transforms import ScaledTranslation

    fig = ax.figure
    if ax.yaxis.label.get_text():
        side = ax.yaxis.get_label_position()
        d = _tick_extent(ax.yaxis) + pad
        off = ScaledTranslation(-d if side == "left" else d, 0, fig.dpi_scale_trans)
        ax.yaxis.set_label_coords(0 if side == "left" else 1, 0.5, transform=ax.transAxes + off)
        if side == "right":
            ax.yaxis.label.set_va("top")
    if ax.xaxis.label.get_text():
        off = ScaledTranslation(0, -(_tick_extent(ax.xaxis) + pad), fig.dpi_scale_trans)
        ax.xaxis.set_label_coords(0.5, 0, transform=ax.transAxes + off)


def legend_above(ax, *args, **kw):
    """``ax.legend`` anchored above the axes, left-aligned (room for it made by
    :func:`fit_layout`)."""
    kw.setdefault("loc", "lower left")
    kw.setdefault("bbox_to_anchor", (0.0, 1.0))
    leg = ax.legend(*args, **kw)
    leg._attncmp_above = True
    return leg


def safe_text(text: object, max_len: int | None = None) -> str:
    """Data text made safe for matplotlib: ``$`` escaped, empty/blank shown in words, long cut."""
    s = str(text)
    if s == "":
        s = "(empty)"
    elif not s.strip():
        s = "(space)"
    s = s.replace("\n", " ")
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 2] + ".."
    return s.replace("$", r"\$")


def parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"png,pdf"`` or ``["png", "svg"]`` -> validated tuple (default ``("png",)``)."""
    if formats is None:
        return ("png",)
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in items:
        f = f.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in FORMATS:
            raise AnalysisInputError(f"`formats`: {f!r} is not one of {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    return tuple(out) or ("png",)


def ensure_parent(path: str | Path) -> Path:
    """Create ``path``'s parent directory (so a write after long work cannot fail on it)."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnalysisError(
            f"{p}: cannot create its directory ({e.strerror or e}); choose a writable path"
        ) from None
    return p


def write_figure(fig: Figure, path: str | Path, **savefig_kw) -> None:
    """``fig.savefig(path, **savefig_kw)``; a file that cannot be written is an
    :class:`AnalysisError` naming it (a user's path), not a bare ``OSError``."""
    path = Path(path)
    if "format" not in savefig_kw and path.suffix.lower().lstrip(".") in FORMATS:
        savefig_kw["format"] = path.suffix.lower().lstrip(".")
    direct = savefig_kw.get("format") == "png" and set(savefig_kw) <= {"format", "dpi"}
    direct = direct and fig.get_layout_engine() is None
    try:
        with atomic.atomic_path(path) as tmp:  # never a half-written figure under its name
            if direct:
                _write_png(fig, tmp, savefig_kw.get("dpi"))
            else:
                fig.savefig(tmp, **savefig_kw)
    except OSError as e:
        raise AnalysisError(
            f"{path}: cannot write the figure ({e.strerror or e}); choose a writable path"
        ) from None


def _write_png(fig: Figure, path: Path | BinaryIO, dpi: float | None) -> None:
    """A fixed-layout figure as PNG: the pixels ``savefig`` draws (one Agg draw at ``dpi``,
    default ``savefig.dpi``), stored as 8-bit RGB when every pixel is opaque (all our figures:
    a quarter fewer bytes to compress) at zlib level 1 with PIL's adaptive filters. Lossless;
    about half the encoding time of ``savefig``'s RGBA at level 6 and slightly smaller files on
    our figures (benchmarks/README.md). The file carries ``savefig``'s Software text and dpi."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image, PngImagePlugin

    if dpi is None:
        dpi = matplotlib.rcParams["savefig.dpi"]
    if dpi == "figure":  # as savefig: the figure's own
        dpi = fig.dpi
    old = fig.dpi
    canvas = FigureCanvasAgg(fig)
    try:
        fig.dpi = dpi
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())  # [height, width, 4], the canvas' own memory
        opaque = bool((rgba[..., 3] == 255).all())
        img = Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), rgba, "raw", "RGBA", 0, 1)
        img = img.convert("RGB") if opaque else img.copy()  # (a copy: the buffer is the canvas')
    finally:
        fig.dpi = old
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "Software", f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/"
    )
    img.save(path, format="png", compress_level=1, pnginfo=info, dpi=(dpi, dpi))


def write_figures(
    fig: Figure, path: str | Path, formats: Sequence[str] | None = None, **savefig_kw
) -> list[Path]:
    """Write a fixed-layout ``fig`` (no tight bounding box) to ``path`` in the format its suffix
    names (``.png``/``.pdf``/``.svg``, ``formats`` None), else as ``path.<fmt>`` for each of
    ``formats`` (default png); ``savefig_kw`` (e.g. ``dpi``) go to every write. Returns the
    written paths."""
    path = Path(path)
    if formats is None and path.suffix.lower().lstrip(".") in FORMATS:
        write_figure(fig, path, **savefig_kw)
        return [path]
    out = []
    for fmt in formats or ("png",):
        p = path.with_name(path.name + "." + fmt)
        write_figure(fig, p, format=fmt, **savefig_kw)
        out.append(p)
    return out


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem.<fmt>`` for each format; returns the written paths. A figure with a
    layout engine is saved with a tight bounding box; one with a fixed layout (``layout=None``)
    as it is, in one draw."""
    stem = Path(stem)
    paths = []
    fixed = fig.get_layout_engine() is None
    kw = {} if fixed else {"bbox_inches": "tight", "pad_inches": 0.15}
    with style():
        for fmt in formats:
            p = stem.with_name(stem.name + "." + fmt)
            write_figure(fig, p, format=fmt, **kw)
            paths.append(p)
    return paths
