"""The text view: every token in order as wrapped paragraphs, pieces joined as they read, one
shared scale, gold marked, no overlapping text, one A4 page width at 512 tokens."""

from __future__ import annotations

import numpy as np
import pytest
from attncmp.analyze.heatmap import HeatmapData, heatmap_data
from attncmp.analyze.textview import (
    PAGE_W,
    align_to_text,
    focus_for,
    merge_pieces,
    plot_text,
    text_layout,
)
from attncmp.store import open_store
from matplotlib.collections import LineCollection, PolyCollection
from PIL import Image

from tests.analyze._figure_checks import inside_figure, overlapping_pairs, text_boxes
from tests.analyze._stores import long_text_store


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    p = long_text_store(tmp_path_factory.mktemp("tv") / "long.h5")
    with open_store(p) as st:
        return heatmap_data(st, st.ids[0])


def _reads_as(tokens):
    """The text as a reader sees it, built independently of merge_pieces."""
    out = []
    for t in tokens:
        if t.startswith("##") and len(t) > 2 and out and out[-1] not in ("[CLS]", "[SEP]"):
            out[-1] += t[2:]
        else:
            out.append(t)
    return " ".join(out)


@pytest.mark.parametrize(
    "tokens, words",
    [
        (["K", "##¹⁺", "is", "bonded"], ["K¹⁺", "is", "bonded"]),
        (["[CLS]", "O", "##²⁻", "##x", "[SEP]"], ["[CLS]", "O²⁻x", "[SEP]"]),
        (["\u2581Mg", "O", "\u2581is"], ["MgO", "is"]),  # SentencePiece word starts
        (["meth", "yl", "chloro"], ["meth", "yl", "chloro"]),  # plain tokens stay words
        (["##"], ["##"]),  # a bare '##' is a token, not a marker
    ],
)
def test_merge_pieces(tokens, words):
    got = merge_pieces(tokens, [t in ("[CLS]", "[SEP]") for t in tokens])
    assert [w.text for w in got] == words
    # every token in exactly one word, in order
    assert [i for w in got for i in w.pieces] == list(range(len(tokens)))


def test_special_tokens_are_never_joined():
    got = merge_pieces(["[CLS]", "##a", "b"], [True, False, False])
    assert [w.text for w in got] == ["[CLS]", "a", "b"]


def test_layout_wraps_in_order_and_pieces_touch(long_data):
    d = long_data
    lay = text_layout(d.col_labels, d.col_special, 7.6)
    assert lay.n_lines > 5 and len(lay.x0) == 512
    # reading order: line by line, left to right
    key = lay.line * 1000 + lay.x0
    assert np.all(np.diff(key) > 0)
    assert np.all(lay.x1 <= 7.6 + 1e-6) and np.all(lay.x1 > lay.x0)
    # pieces of one word are adjacent on one line (no space between them)
    for w in lay.words:
        for a, b in zip(w.pieces[:-1], w.pieces[1:], strict=True):
            assert lay.line[a] == lay.line[b] and lay.x1[a] == pytest.approx(lay.x0[b])


def test_text_view_of_512_tokens(long_data, tmp_path):
    d = long_data
    fig = plot_text(d)
    w, h = fig.get_size_inches()
    assert w == pytest.approx(PAGE_W)  # one A4 page width
    boxes = text_boxes(fig)
    assert overlapping_pairs(boxes) == [] and inside_figure(fig, boxes) == []
    # the text view contains every token, in order, joined as it reads (three paragraphs)
    expected = _reads_as(d.col_labels)
    for j in range(3):
        runs = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == f"text0.{j}"]
        assert " ".join(runs) == expected
        assert all(t.get_fontsize() >= 7 for t in fig.axes[0].texts if t.get_gid())
    # one box per token per paragraph; colours from one scale shared by both models
    polys = {c.get_gid(): c for c in fig.axes[0].collections if isinstance(c, PolyCollection)}
    fb, fv = (polys[f"text0.{j}.boxes"].get_facecolors() for j in (0, 1))
    assert len(fb) == len(fv) == 512
    wb, wv = d.matrices[0].mean(axis=0), d.matrices[1].mean(axis=0)
    top = int(np.argmax(np.maximum(wb, wv)))
    # the single darkest box of both model paragraphs is the most attended token
    lum_b, lum_v = fb[:, :3].sum(axis=1), fv[:, :3].sum(axis=1)
    darkest = int(np.argmin(lum_v)) if wv.max() >= wb.max() else int(np.argmin(lum_b))
    assert darkest == top
    # gold tokens underlined: one segment per gold token of the focus
    gold = d.gold.any(axis=0)
    (gl,) = [c for c in fig.axes[0].collections if c.get_gid() == "text0.0.gold"]
    assert isinstance(gl, LineCollection) and len(gl.get_segments()) == int(gold.sum())
    out = plot_text(d, tmp_path / "sub" / "t.png")
    pw, ph = Image.open(out[0]).size
    assert pw <= 2480 and ph <= 3508


def test_nodes_groups_and_singletons(long_data):
    d = long_data
    labels = d.node_labels
    si = labels.index("Si")
    f = focus_for(d, group="Si")
    assert f.rows == (si,) and "Si (n=1)" in f.name
    np.testing.assert_allclose(f.weights[0], d.matrices[0][si])
    o = focus_for(d, group="O")
    np.testing.assert_allclose(o.weights[1], d.matrices[1][list(o.rows)].mean(axis=0))
    fig = plot_text(d, nodes=[3], groups=["Si"])
    titles = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("Attention")]
    assert titles == [
        "Attention of the mean over all 96 nodes",
        f"Attention of the node {labels[3]}3",
        "Attention of the node group Si (n=1)",
    ]
    with pytest.raises(ValueError, match="no node has the label 'Xx'"):
        focus_for(d, group="Xx")
    with pytest.raises(ValueError, match="`node` 99 out of range"):
        focus_for(d, node=99)


def test_auto_groups_smallest_first_within_a_page():
    toks = ["[CLS]", "K", "##¹⁺", "is", "bonded", "to", "O", "##²⁻", "[SEP]"]
    labels = ["O"] * 5 + ["K", "Si"]
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.ones(len(toks)), size=len(labels))
    b = rng.dirichlet(np.ones(len(toks)), size=len(labels))
    d = HeatmapData(
        "KSiO", "s", "nodes", "tokens", 0, 1, None, 1, ("full", "no_middle"), (a, b),
        [f"{x}{i}" for i, x in enumerate(labels)], toks,
        np.array([t.startswith("[") for t in toks]), node_labels=labels,
    )  # fmt: skip
    fig = plot_text(d, auto_groups=True)
    titles = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("Attention")]
    assert titles[1:] == [
        "Attention of the node group K (n=1)",
        "Attention of the node group Si (n=1)",
        "Attention of the node group O (n=5)",
    ]
    assert fig.get_size_inches()[1] <= 11.69


def test_text_view_needs_token_keys(long_data):
    import dataclasses

    d = dataclasses.replace(long_data, key_axis="nodes")
    with pytest.raises(ValueError, match="needs a site whose keys are the tokens"):
        plot_text(d)


def test_pieces_join_as_the_original_text_spells_them():
    toks = ["[CLS]", "2", "-", "chloro", "prop", "ane", "and", "x", "[SEP]"]
    sp = [t.startswith("[") for t in toks]
    words = merge_pieces(toks, sp, text="2-Chloropropane and X")
    assert [w.text for w in words] == ["[CLS]", "2-Chloropropane", "and", "X", "[SEP]"]
    assert words[1].pieces == (1, 2, 3, 4, 5) and words[1].shown[2] == "Chloro"
    # a text the tokens do not come from is ignored: every token stays a word
    other = merge_pieces(toks, sp, text="benzene")
    assert [w.text for w in other] == toks
    assert align_to_text(toks, sp, "benzene") is None
    assert align_to_text(toks, sp, "2-chloropropane and x")[3] == (2, 8)
