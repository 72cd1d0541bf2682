"""Figure checks shared by the heatmap and text-view tests: text bounding boxes, page size."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

A4_300DPI_PX = (2480, 3508)  # A4 portrait at 300 dpi


def text_boxes(fig, gid_prefix: str | None = None):
    """``[(text, Bbox)]`` of every visible, non-empty text of ``fig`` as drawn (display units)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        if gid_prefix is not None and not str(t.get_gid() or "").startswith(gid_prefix):
            continue
        out.append((t.get_text(), t.get_window_extent(r)))
    return out


def overlapping_pairs(boxes, tol: float = 0.5):
    """Pairs of texts whose boxes intersect by more than ``tol`` pixels in both directions."""
    if len(boxes) < 2:
        return []
    b = np.array([[bb.x0, bb.y0, bb.x1, bb.y1] for _, bb in boxes])
    ox = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    oy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    hit = (ox > tol) & (oy > tol)
    i, j = np.nonzero(np.triu(hit, 1))
    return [(boxes[a][0], boxes[c][0]) for a, c in zip(i, j, strict=True)]


def inside_figure(fig, boxes, tol: float = 1.0):
    """Texts that stick out of the figure (they would be cut off on the page)."""
    w, h = fig.get_size_inches() * fig.dpi
    return [
        s for s, bb in boxes if bb.x0 < -tol or bb.y0 < -tol or bb.x1 > w + tol or bb.y1 > h + tol
    ]


def fits_page(fig, dpi: float = 300) -> bool:
    """The figure is at most an A4 page at ``dpi`` (upright or turned)."""
    w, h = sorted(fig.get_size_inches() * dpi)
    return w <= A4_300DPI_PX[0] * dpi / 300 + 1 and h <= A4_300DPI_PX[1] * dpi / 300 + 1
