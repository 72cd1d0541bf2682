"""Node groups: rows aggregated by label, sizes in labels, singletons kept; per-group metrics
agree with a plain per-row reference and with the engine's row metrics."""

from __future__ import annotations

import numpy as np
import pytest
from attncmp.analyze.groups import (
    group_metrics_table,
    group_rows,
    label_token_mask,
    node_groups,
    sample_group_metrics,
)
from attncmp.store import open_store

from tests.analyze._stores import long_text_store


def test_node_groups_keep_order_sizes_and_singletons():
    g = node_groups(["O", "Mg", "O", "Si", "O", "Mn"])
    assert [(x.label, x.members) for x in g] == [
        ("O", (0, 2, 4)),
        ("Mg", (1,)),
        ("Si", (3,)),
        ("Mn", (5,)),
    ]
    assert [x.display for x in g] == ["O (n=3)", "Mg (n=1)", "Si (n=1)", "Mn (n=1)"]
    m = np.arange(24, dtype=float).reshape(6, 4)
    np.testing.assert_allclose(group_rows(m, g)[0], m[[0, 2, 4]].mean(axis=0))
    np.testing.assert_allclose(group_rows(m, g)[2], m[3])


@pytest.mark.parametrize(
    "label, tokens, expect",
    [
        ("O", ["O", "##²⁻", "Os", "of", "O2", "[SEP]"], [1, 1, 0, 0, 1, 0]),
        ("Si", ["Si", "##⁴⁺", "S", "i"], [1, 1, 0, 0]),
        ("K", ["K", "##¹⁺", "KO", "##₁₂"], [1, 1, 1, 1]),  # KO₁₂ names K (then O)
        ("Cl", ["chloro", "Cl"], [0, 1]),
    ],
)
def test_label_token_mask(label, tokens, expect):
    assert label_token_mask(label, tokens).astype(int).tolist() == expect


def _plain_entropy(row):
    p = row / row.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_group_metrics_match_a_plain_reference():
    rng = np.random.default_rng(5)
    toks = ["[CLS]", "O", "##²⁻", "is", "Si", "##⁴⁺", "bonded", "[SEP]"]
    special = np.array([t.startswith("[") for t in toks])
    labels = ["O", "O", "Si", "O"]
    m = rng.dirichlet(np.ones(len(toks)), size=4)
    other = rng.dirichlet(np.ones(len(toks)) * 0.5, size=4)
    gold = np.zeros((4, len(toks)), bool)
    gold[[0, 1, 3], 1] = True
    gold[2, 4] = True
    rows = {r["group"]: r for r in sample_group_metrics(
        m, labels, toks, special=special, gold=gold, other=other)}  # fmt: skip
    assert set(rows) == {"O", "Si"} and rows["Si"]["group_size"] == 1
    keep = ~special
    p = m[:, keep] / m[:, keep].sum(axis=1, keepdims=True)
    q = other[:, keep] / other[:, keep].sum(axis=1, keepdims=True)
    o = [0, 1, 3]
    assert rows["O"]["entropy"] == pytest.approx(np.mean([_plain_entropy(p[i]) for i in o]))
    assert rows["Si"]["max_weight"] == pytest.approx(p[2].max())
    # gold mass: mass on the gold token of each member (renormalised row), averaged
    kt = np.flatnonzero(keep)
    g_o = np.mean([p[i, list(kt).index(1)] for i in o])
    assert rows["O"]["gold_mass"] == pytest.approx(g_o)
    # label mass: O rows on the pieces "O", "##²⁻"
    lm = np.mean([p[i, [list(kt).index(1), list(kt).index(2)]].sum() for i in o])
    assert rows["O"]["label_mass"] == pytest.approx(lm) and rows["O"]["label_tokens"] == 2
    mid = 0.5 * (p + q)

    def kl(a, b):
        return float((a * np.log(a / b)).sum())

    jsd = [0.5 * kl(p[i], mid[i]) + 0.5 * kl(q[i], mid[i]) for i in range(4)]
    assert rows["O"]["jsd"] == pytest.approx(np.mean([jsd[i] for i in o]))


def test_group_metrics_table_of_the_long_store(tmp_path):
    p = long_text_store(tmp_path / "long.h5")
    with open_store(p) as st:
        frame = group_metrics_table(st)
        labels = st.sample(st.ids[0], with_attention=False).node_labels
    one = frame.filter((frame["sample_id"] == "s0000") & (frame["model"] == "full"))
    sizes = dict(zip(one["group"].to_list(), one["group_size"].to_list(), strict=True))
    assert sizes == {el: labels.count(el) for el in set(labels)}
    assert sizes["Si"] == 1 and sizes["Mn"] == 1  # singletons are groups too
    # "do O atoms attend to O2- tokens more in the full model": a lookup
    o = frame.filter(frame["group"] == "O").select("sample_id", "model", "label_mass")
    assert o.height == 4 and o["label_mass"].is_not_null().all()
    assert frame.filter(frame["model"] == "full")["jsd"].is_null().all()
    assert frame.filter(frame["model"] == "no_middle")["jsd"].is_not_null().all()
