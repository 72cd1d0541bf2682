"""plotstyle.write_figure: the direct PNG path draws exactly what ``savefig`` draws."""

from __future__ import annotations

import numpy as np
import pytest
from attncmp.analyze.plotstyle import new_figure, style, write_figure
from PIL import Image


def _figure(transparent: bool = False):
    with style(fixed=True):
        fig = new_figure(4.0, 3.0, layout=None)
        ax = fig.add_axes((0.15, 0.15, 0.8, 0.75))
        rng = np.random.default_rng(0)
        ax.imshow(rng.random((12, 20)), cmap="viridis", aspect="auto")
        ax.set_title("a title with text")
        ax.set_xticks(range(0, 20, 2), [f"tok{i}" for i in range(0, 20, 2)], rotation=90)
        if transparent:
            fig.patch.set_alpha(0.0)
    return fig


@pytest.mark.parametrize("dpi", [None, 72, 150, "figure"])
def test_direct_png_is_pixel_identical_to_savefig(tmp_path, dpi):
    fig = _figure()
    kw = {} if dpi is None else {"dpi": dpi}
    with style(fixed=True):
        write_figure(fig, tmp_path / "direct.png", **kw)  # the direct path (fixed layout, png)
        fig.savefig(tmp_path / "ref.png", format="png", **kw)  # matplotlib's own
    a, b = Image.open(tmp_path / "direct.png"), Image.open(tmp_path / "ref.png")
    assert a.mode == "RGB" and b.mode == "RGBA"  # opaque: stored without the alpha channel
    assert a.size == b.size
    assert np.array_equal(np.asarray(a.convert("RGBA")), np.asarray(b))
    assert a.info["dpi"] == b.info["dpi"]  # pHYs in dots per metre, as savefig stores it
    want = {None: 150, "figure": 100}.get(dpi, dpi)  # "figure": the figure's own dpi
    assert a.info["dpi"] == pytest.approx((want, want), abs=0.02)
    assert a.info["Software"] == b.info["Software"]
    assert fig.dpi == 100  # the figure's own dpi is restored


def test_direct_png_keeps_alpha_when_not_opaque(tmp_path):
    fig = _figure(transparent=True)
    with style(fixed=True):
        write_figure(fig, tmp_path / "direct.png")
        fig.savefig(tmp_path / "ref.png", format="png")
    a, b = Image.open(tmp_path / "direct.png"), Image.open(tmp_path / "ref.png")
    assert a.mode == "RGBA"
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_layout_engine_figures_still_go_through_savefig(tmp_path):
    with style():
        fig = new_figure(3.0, 2.0)  # constrained layout
        fig.add_subplot().plot([0, 1], [1, 0])
        write_figure(fig, tmp_path / "c.png")
        fig.savefig(tmp_path / "ref.png")
    assert Image.open(tmp_path / "c.png").mode == "RGBA"
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "c.png")), np.asarray(Image.open(tmp_path / "ref.png"))
    )
