"""Heatmaps: data straight from the store, shared colour scale, difference panel, labels, gold
outlines, long texts capped, caching round trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from attncmp.analyze.heatmap import (
    MIN_FONT,
    HeatmapData,
    heatmap_data,
    plot_heatmap,
    quick_metrics,
    token_windows,
)
from attncmp.store import open_store
from matplotlib.collections import LineCollection, PatchCollection
from PIL import Image

from tests.analyze._figure_checks import fits_page, inside_figure, overlapping_pairs, text_boxes
from tests.analyze._stores import long_text_store, study_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return study_store(tmp_path_factory.mktemp("hm") / "s.h5", n=6, n_heads=3, n_layers=2)


def test_data_is_the_stores_head_mean_of_the_last_layer(store_path):
    with open_store(store_path) as st:
        sid = st.ids[2]
        d = heatmap_data(st, sid)
        smp = st.sample(sid, with_attention=False)
        full = st.attention("full", "atom_to_text", sid)
        nomid = st.attention("no_middle", "atom_to_text", sid)
    assert d.site == "atom_to_text" and d.layer == 1 and d.head is None
    assert d.models == ("full", "no_middle")
    np.testing.assert_allclose(d.matrices[0], full[-1].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(d.matrices[1], nomid[-1].mean(axis=0), rtol=1e-6)
    # rows: node label + position; columns: the model's own token strings, valid region only
    assert d.row_labels == [f"{lab}{i}" for i, lab in enumerate(smp.node_labels)]
    assert d.col_labels == smp.tokens
    assert d.matrices[0].shape == (smp.n_nodes, smp.n_tokens)
    assert d.gold is not None and d.gold.shape == d.matrices[0].shape


def test_one_head_and_layer_are_selectable(store_path):
    with open_store(store_path) as st:
        sid = st.ids[0]
        d = heatmap_data(st, sid, layer=0, head=2)
        raw = st.attention("full", "atom_to_text", sid)
    assert d.layer == 0 and d.head == 2
    np.testing.assert_allclose(d.matrices[0], raw[0, 2], rtol=1e-6)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"layer": 5}, "`layer` 5 out of range"),
        ({"head": 9}, "`head` 9 out of range"),
        ({"head": "x"}, "neither a head index"),
        ({"site": "nope"}, "`site` 'nope' is not in the store"),
        ({"baseline": "nope"}, "`baseline` 'nope'"),
    ],
)
def test_bad_selection_is_one_clear_error(store_path, kw, msg):
    with open_store(store_path) as st, pytest.raises(ValueError, match=msg):
        heatmap_data(st, st.ids[0], **kw)


def test_shared_scale_symmetric_difference_and_gold_outlines(store_path):
    with open_store(store_path) as st:
        sid = max(st.ids, key=lambda i: int(st.gold(i).sum()) if st.gold(i) is not None else 0)
        d = heatmap_data(st, sid)
    fig = plot_heatmap(d)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    n_a, n_b, n_d = (ax.images[0].norm for ax in panels)
    vmax = max(d.matrices[0].max(), d.matrices[1].max())
    assert n_a.vmin == n_b.vmin == 0.0 and n_a.vmax == n_b.vmax == pytest.approx(vmax)
    dmax = np.abs(d.matrices[1] - d.matrices[0]).max()
    assert n_d.vmin == pytest.approx(-dmax) and n_d.vmax == pytest.approx(dmax)
    np.testing.assert_allclose(panels[2].images[0].get_array(), d.matrices[1] - d.matrices[0])
    n_gold = int(d.gold.sum())
    assert n_gold > 0
    for ax in panels:
        (gold,) = [c for c in ax.collections if c.get_gid() == "gold"]
        assert isinstance(gold, PatchCollection) and len(gold.get_paths()) == n_gold
    labels = [t.get_text() for t in panels[0].texts if t.get_gid() == "col_label"]
    assert labels == d.col_labels
    assert sid in fig._suptitle.get_text() and "head-mean" in fig._suptitle.get_text()
    boxes = text_boxes(fig)
    assert overlapping_pairs(boxes) == [] and inside_figure(fig, boxes) == []
    assert fits_page(fig)
    assert "entropy" in fig._suptitle.get_text()  # the sample's metrics in the title


def _synthetic(q, k, tokens=None):
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.ones(k), size=q)
    b = rng.dirichlet(np.ones(k) * 0.3, size=q)
    tokens = tokens or [f"tok{i}" for i in range(k)]
    d = HeatmapData(
        "LONG",
        "atom_to_text",
        "nodes",
        "tokens",
        0,
        1,
        None,
        2,
        ("full", "no_middle"),
        (a, b),
        [f"C{i}" for i in range(q)],
        tokens,
        np.array([t.startswith("[") for t in tokens]),
    )
    d.metrics, d.jsd = quick_metrics(d)
    return d


def test_long_text_is_capped_not_soup(tmp_path):
    toks = ["[CLS]"] + ["$x", "chloro", "", " ", "2"] * 40 + ["[SEP]"]
    d = _synthetic(80, len(toks), toks)
    fig = plot_heatmap(d, max_tokens=60, max_nodes=40)
    panels = [ax for ax in fig.axes if ax.images]
    # 80 rows all labelled C: one node group; 60 of 202 tokens in windows
    assert all(ax.images[0].get_array().shape == (1, 60) for ax in panels)
    assert fits_page(fig)
    text = " ".join(fig._supxlabel.get_text().split())
    assert "60 of 202 tokens shown" in text and "80 nodes shown as 1 node group by label" in text
    out = plot_heatmap(d, tmp_path / "long.png")  # "$", empty and blank tokens do not break it
    assert out[0].stat().st_size > 10_000


def test_token_windows_keep_must_positions_and_stay_contiguous():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(5, 600))
        cap = int(rng.integers(1, 80))
        score = rng.random(n)
        must = rng.random(n) < rng.uniform(0, 0.1)
        cols = token_windows(score, must, cap)
        assert len(cols) == min(n, cap) and np.all(np.diff(cols) > 0)
        m = np.flatnonzero(must)
        if len(m) <= cap:
            assert set(m) <= set(cols)  # every gold token kept
        else:
            assert set(m[:cap]) == set(cols)
    # windows, not scattered columns: one peak gives one window around it
    score = np.zeros(500)
    score[250] = 1
    cols = token_windows(score, None, 7)
    assert list(cols) == list(range(247, 254))


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    p = long_text_store(tmp_path_factory.mktemp("long") / "long.h5")
    with open_store(p) as st:
        return heatmap_data(st, st.ids[0])


def test_long_text_heatmap_page_labels_groups_gold(long_data, tmp_path):
    d = long_data
    assert d.matrices[0].shape == (96, 512)
    fig = plot_heatmap(d)
    assert fits_page(fig)  # no figure exceeds an A4 page at 300 dpi
    boxes = text_boxes(fig)
    assert overlapping_pairs(boxes) == []  # no two labels (or any texts) overlap
    assert inside_figure(fig, boxes) == []
    panels = [ax for ax in fig.axes if ax.images]
    rows = [t.get_text() for t in panels[0].texts if t.get_gid() == "row_label"]
    # rows are node groups by element with their sizes; the singletons survive
    labels = d.node_labels
    for el in dict.fromkeys(labels):
        assert f"{el} (n={labels.count(el)})" in rows
    assert "Si (n=1)" in rows and "Mn (n=1)" in rows
    # every gold token kept; columns labelled token@position, in order
    cols = [t.get_text() for t in panels[2].texts if t.get_gid() == "col_label"]
    pos = [int(c.rsplit("@", 1)[1]) for c in cols]
    assert pos == sorted(pos) and len(pos) < 512
    assert set(np.flatnonzero(d.gold.any(axis=0))) <= set(pos)
    for c, p in zip(cols, pos, strict=True):
        assert c.rsplit("@", 1)[0] == d.col_labels[p]
    # legible: every label at least MIN_FONT points
    sizes = [t.get_fontsize() for ax in panels for t in ax.texts]
    assert min(sizes) >= MIN_FONT - 1e-6
    # window separators: one line per gap between windows, never one per column
    gaps = int((np.diff(pos) > 1).sum())
    for ax in panels:
        (sep,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(sep.get_segments()) == gaps
    assert gaps < len(pos) / 2
    # the written file: within A4 at 300 dpi, and parent directories created
    out = plot_heatmap(d, tmp_path / "new" / "dir" / "hm.png")
    w, h = Image.open(out[0]).size
    assert w <= 2480 and h <= 3508


def test_short_text_side_by_side_and_formats(tmp_path):
    d = _synthetic(4, 6)
    fig = plot_heatmap(d)
    panels = [ax for ax in fig.axes if ax.images]
    x0 = [ax.get_position().x0 for ax in panels]
    assert x0 == sorted(x0) and len(set(np.round(x0, 3))) == 3  # one row of three panels
    paths = plot_heatmap(d, tmp_path / "h", formats=("png", "pdf", "svg"))
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[1].read_bytes().startswith(b"%PDF") and b"<svg" in paths[2].read_bytes()


def test_cache_round_trip(tmp_path):
    d = _synthetic(5, 7)
    d.gold = np.zeros((5, 7), bool)
    d.gold[1, 2] = True
    back = HeatmapData.load(d.save(tmp_path / "e.npz"))
    assert back.row_labels == d.row_labels and back.col_labels == d.col_labels
    np.testing.assert_allclose(back.matrices[0], d.matrices[0], rtol=1e-6)
    assert back.gold.sum() == 1 and back.metrics == d.metrics and back.head is None


def test_one_model_store_is_refused(tmp_path):
    p = study_store(tmp_path / "one.h5", n=2, models=("full",), extra_sites=False)
    with open_store(p) as st, pytest.raises(ValueError, match="one model only"):
        heatmap_data(st, st.ids[0])
