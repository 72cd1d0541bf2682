"""The fixed layouts of the analysis figures (plotstyle.fit_layout) keep every text readable: each
text of the figure's frame (titles, tick labels, axis labels, legends above axes, the note) lies
inside the figure, and none of them overlaps another or the plotting area of an axes."""

from __future__ import annotations

import shutil

import pytest
from attncmp.analyze import figures as F
from attncmp.analyze.outputs import AnalysisOptions, replot, run_analysis
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ._stores import study_store


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    store = study_store(root / "store.h5", n=16, n_heads=3, n_layers=2, max_nodes=10, max_tokens=20)
    opts = AnalysisOptions(n_boot=200, examples=0, quiet=True)
    res = run_analysis([store], root / "analysis", opts)
    captured = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(F, "_finish", lambda fig, stem, formats: captured.setdefault(stem.name, fig) and [])
    try:
        shutil.rmtree(root / "analysis" / "figs", ignore_errors=True)
        replot(res.save_dir, workers=1, force=True)
    finally:
        mp.undo()
    return captured


def _frame_texts(fig):
    """Texts outside the plotting areas, with their window extents (after one draw)."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    out = []
    for t in (fig._suptitle, fig._supxlabel):
        if t is not None and t.get_text():
            out.append((None, "figure", t))
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            drawn = axis._update_ticks()  # the ticks inside the view (others are not drawn)
            out += [(ax, "tick", k.label1) for k in drawn if k.label1.get_visible()]
            out.append((ax, "label", axis.label))
        out += [(ax, "title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        leg = ax.get_legend()
        if leg is not None and getattr(leg, "_attncmp_above", False):
            out += [(ax, "legend", t) for t in [*leg.texts, leg.get_title()]]
    return r, [(ax, kind, t, t.get_window_extent(r)) for ax, kind, t in out if t.get_text()]


def test_every_figure_was_drawn_with_a_fixed_layout(figures):
    assert {"attention_statistics_comparison", "strata_comparison", "mae_comparison"} <= set(
        figures
    )
    assert len(figures) >= 6
    for name, fig in figures.items():
        assert fig.get_layout_engine() is None, name


def test_frame_texts_are_inside_and_do_not_overlap(figures):
    for name, fig in figures.items():
        r, texts = _frame_texts(fig)
        W, H = fig.bbox.width, fig.bbox.height
        for _, kind, t, bb in texts:
            assert bb.x0 >= -1 and bb.y0 >= -1 and bb.x1 <= W + 1 and bb.y1 <= H + 1, (
                f"{name}: {kind} {t.get_text()!r} at {bb.bounds} leaves the {W:.0f}x{H:.0f} figure"
            )
        areas = [ax.get_window_extent(r) for ax in fig.axes if ax.get_visible()]
        for _, kind, t, bb in texts:
            for area in areas:
                inner = area.padded(-1)
                assert not bb.overlaps(inner), (
                    f"{name}: {kind} {t.get_text()!r} overlaps the plotting area of an axes"
                )
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                a, b = texts[i], texts[j]
                if a[0] is b[0] and a[1] == b[1] == "tick":
                    continue  # neighbouring ticks of one axis: matplotlib's own spacing
                overlap = a[3].padded(-0.5).overlaps(b[3].padded(-0.5))
                assert not overlap, (
                    f"{name}: {a[1]} {a[2].get_text()!r} overlaps {b[1]} {b[2].get_text()!r}"
                )


def test_stratum_tick_labels_do_not_overlap_their_neighbours(figures):
    """The strata figure labels its own ticks (bin name, range, n): unlike matplotlib's numeric
    ticks, nothing spaces them, so neighbours are checked too."""
    fig = figures["strata_comparison"]
    r, texts = _frame_texts(fig)
    for ax in fig.axes:
        ticks = [
            bb for a, kind, t, bb in texts if a is ax and kind == "tick" and "n=" in t.get_text()
        ]
        assert len(ticks) >= 2
        ticks.sort(key=lambda bb: bb.x0)
        for left, right in zip(ticks, ticks[1:], strict=False):
            assert left.x1 < right.x0, f"stratum labels overlap: {left.bounds} {right.bounds}"
