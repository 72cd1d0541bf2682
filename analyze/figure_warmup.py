"""Imported once by the figure workers' forkserver (:mod:`analyze.render`): draws one small
figure in memory, so that every worker forked from the server inherits what matplotlib builds
on first use (the Agg canvas and renderer modules, the DejaVu Sans font objects and their glyph
caches, tick and text machinery, PIL's PNG encoder) instead of building it again before its
first figure (~0.2 s of CPU per worker here). Nothing is written."""

from __future__ import annotations

import io

from .plotstyle import _write_png, new_figure, style


def warm_up() -> None:
    """Draw and encode one figure with the artists our figures use, in memory."""
    with style(fixed=True):
        fig = new_figure(3.0, 2.0, layout=None)
        ax = fig.add_axes((0.15, 0.2, 0.6, 0.65))
        im = ax.imshow([[0.0, 1.0], [1.0, 0.0]], cmap="viridis", aspect="auto")
        ax.errorbar([0.0, 1.0], [0.5, 0.5], yerr=[0.1, 0.2], fmt="o", capsize=2)
        ax.plot([0.0, 1.0], [0.0, 1.0], "s-", linewidth=0.8)
        ax.scatter([0.2], [0.8], s=6)
        ax.set_title("warm-up: 0.5 \u2212 \u0394", fontsize=8)
        ax.set_xlabel("tokens", fontsize=7)
        fig.colorbar(im, ax=ax)
        fig.text(0.01, 0.01, "note", fontsize=7, color="#444444")
        _write_png(fig, io.BytesIO(), None)  # the path every PNG of ours takes


warm_up()
