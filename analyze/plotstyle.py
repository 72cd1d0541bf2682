"""Shared figure plumbing for the output side: backend-free figures, one font, safe labels, saving.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so the
library does not switch the user's backend or keep global figure state; saving uses the Agg canvas.
Every figure is drawn inside :func:`style` so labels use DejaVu Sans (ships with matplotlib, so no
missing-glyph boxes on any install). Text that comes from data (token strings, node labels, model
names) goes through :func:`safe_text` so a ``$`` can never start mathtext.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

__all__ = [
    "FORMATS",
    "MODEL_COLOURS",
    "new_figure",
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


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house rcParams (DejaVu Sans, sizes, dpi) for the duration of a figure's life."""
    with matplotlib.rc_context(_RC):
        yield


def new_figure(width: float, height: float, **kw) -> Figure:
    """A figure not registered with pyplot (call inside :func:`style`)."""
    kw.setdefault("layout", "constrained")
    return Figure(figsize=(width, height), **kw)


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
            raise ValueError(f"`formats`: {f!r} is not one of {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    return tuple(out) or ("png",)


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem.<fmt>`` for each format; returns the written paths."""
    stem = Path(stem)
    paths = []
    with style():
        for fmt in formats:
            p = stem.with_name(stem.name + "." + fmt)
            fig.savefig(p, format=fmt, bbox_inches="tight", pad_inches=0.15)
            paths.append(p)
    return paths
