"""Row metrics against a plain per-row reference (padded inputs sliced by the reference), plus
hand-checked values and edge-case conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from attncmp.analyze import metrics as M
from attncmp.analyze.registry import metric_range
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ._engine_reference import ref_jsd, ref_row, ref_specificity, ref_tv

TOL = dict(rtol=1e-5, atol=2e-6)


def _padded_rows(rng, n_rows, kmax, kind):
    """Padded [n_rows, kmax] weights with garbage in the padding, lengths, special/gold masks."""
    lengths = rng.integers(1, kmax + 1, size=n_rows)
    P = np.full((n_rows, kmax), 7.5)  # padding: garbage that must never be read
    P[:, ::2] = np.nan
    special = np.zeros((n_rows, kmax), dtype=bool)
    gold = np.zeros((n_rows, kmax), dtype=bool)
    for r, k in enumerate(lengths):
        style = kind if kind != "mixed" else rng.choice(["dirichlet", "onehot", "uniform", "zeros"])
        if style == "onehot":
            w = np.zeros(k)
            w[rng.integers(k)] = 1.0
        elif style == "uniform":
            w = np.full(k, 1.0 / k)
        elif style == "zeros":  # some exact zeros
            w = rng.dirichlet(np.full(k, 0.5))
            w[rng.random(k) < 0.3] = 0.0
            if w.sum() == 0:
                w[0] = 1.0
            w /= w.sum()
        else:
            w = rng.dirichlet(np.full(k, rng.choice([0.1, 1.0, 10.0])))
        P[r, :k] = w
        if k >= 3 and rng.random() < 0.7:
            special[r, 0] = special[r, k - 1] = True
        gold[r, :k] = rng.random(k) < 0.2
    return P, lengths, special, gold


def _flat(P, lengths, mask=None):
    src = P if mask is None else mask
    return np.concatenate([src[r, :k] for r, k in enumerate(lengths)])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 25),
    kmax=st.integers(1, 40),
    kind=st.sampled_from(["dirichlet", "mixed"]),
    exclude=st.booleans(),
    threshold=st.sampled_from([0.05, 0.1, 0.3]),
    top_k=st.integers(1, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_row_metrics_match_reference(seed, n_rows, kmax, kind, exclude, threshold, top_k, dtype):
    rng = np.random.default_rng(seed)
    P, lengths, special, gold = _padded_rows(rng, n_rows, kmax, kind)
    data = _flat(P, lengths).astype(dtype)
    off = np.concatenate(([0], np.cumsum(lengths)))
    rm = M.row_metrics(
        data,
        off,
        special=_flat(P, lengths, special),
        gold=_flat(P, lengths, gold),
        threshold=threshold,
        top_k=top_k,
        exclude_special=exclude,
    )
    for r, k in enumerate(lengths):
        # the reference sees the padded row and slices the valid region itself
        ref, ref_p = ref_row(
            P[r].astype(dtype)[:k],
            special[r, :k],
            gold[r, :k],
            threshold=threshold,
            top_k=top_k,
            exclude_special=exclude,
        )
        for key, want in ref.items():
            got = getattr(rm, key)[r]
            if key == "effective_tokens" and ref_p is not None:
                # the engine renormalises in float32: a weight within float32 rounding of the
                # threshold (e.g. ten weights of exactly 0.1) may land on either side of it, so
                # exactly those weights may be counted differently; every other weight must agree
                ambiguous = int(np.sum(np.abs(ref_p - threshold) <= 4e-7 * max(threshold, 1e-30)))
                assert abs(got - want) <= ambiguous, (key, r, got, want, ambiguous)
                continue
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(got), (key, r, got)
            else:
                np.testing.assert_allclose(got, want, **TOL, err_msg=f"{key} row {r}")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 20), kmax=st.integers(1, 30))
def test_single_metric_functions_match_reference(seed, n_rows, kmax):
    rng = np.random.default_rng(seed)
    P, lengths, _, gold = _padded_rows(rng, n_rows, kmax, "mixed")
    data = _flat(P, lengths)
    off = np.concatenate(([0], np.cumsum(lengths)))
    refs = [
        ref_row(P[r, :k], np.zeros(k, bool), gold[r, :k], exclude_special=False)[0]
        for r, k in enumerate(lengths)
    ]
    want = {key: np.array([r[key] for r in refs]) for key in refs[0]}
    np.testing.assert_allclose(M.entropy(data, off), want["entropy"], **TOL)
    np.testing.assert_allclose(M.max_weight(data, off), want["max_weight"], **TOL)
    np.testing.assert_allclose(M.gini(data, off), want["gini"], **TOL)
    np.testing.assert_allclose(M.inverse_participation_ratio(data, off), want["ipr"], **TOL)
    np.testing.assert_allclose(M.topk_mass(data, off, 3), want["topk_mass"], **TOL)
    np.testing.assert_allclose(M.effective_tokens(data, off, 0.1), want["effective_tokens"])
    h = M.entropy(data, off)
    np.testing.assert_allclose(M.normalized_entropy(h, lengths), want["norm_entropy"], **TOL)
    np.testing.assert_allclose(M.perplexity(h), want["perplexity"], **TOL)
    gm = M.gold_mass(data, off, _flat(P, lengths, gold))
    np.testing.assert_allclose(gm, want["gold_mass"], **TOL)
    np.testing.assert_array_equal(
        M.pointing(data, off, _flat(P, lengths, gold)), want["gold_pointing"]
    )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 20), kmax=st.integers(1, 30))
def test_jsd_and_tv_match_scipy(seed, n_rows, kmax):
    rng = np.random.default_rng(seed)
    P, lengths, _, _ = _padded_rows(rng, n_rows, kmax, "mixed")
    Q, _, _, _ = _padded_rows(rng, n_rows, kmax, "mixed")
    # Q must have the same valid lengths: renormalise its first `k` entries
    for r, k in enumerate(lengths):
        q = np.abs(np.nan_to_num(Q[r, :k], nan=1.0)) + rng.random(k) * 0.1
        Q[r, :k] = q / q.sum()
    p, q = _flat(P, lengths), _flat(Q, lengths)
    off = np.concatenate(([0], np.cumsum(lengths)))
    jsd = M.jensen_shannon(p, q, off)
    tv = M.total_variation(p, q, off)
    for r, k in enumerate(lengths):
        np.testing.assert_allclose(jsd[r], ref_jsd(P[r, :k], Q[r, :k]), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tv[r], ref_tv(P[r, :k], Q[r, :k]), rtol=1e-9, atol=1e-12)
    assert np.all(jsd <= math.log(2) + 1e-12) and np.all(jsd >= 0)
    np.testing.assert_allclose(M.jensen_shannon(p, p, off), 0.0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_groups=st.integers(1, 8))
def test_node_specificity_matches_mean_kl_to_mean_row(seed, n_groups):
    rng = np.random.default_rng(seed)
    rows, gsizes = [], []
    for _ in range(n_groups):
        q, k = int(rng.integers(1, 6)), int(rng.integers(1, 12))
        gsizes.append(q)
        rows.append([rng.dirichlet(np.ones(k)) for _ in range(q)])
    data = np.concatenate([r for g in rows for r in g])
    lengths = [len(r) for g in rows for r in g]
    off = np.concatenate(([0], np.cumsum(lengths)))
    goff = np.concatenate(([0], np.cumsum(gsizes)))
    spec = M.node_specificity(data, off, goff)
    for g, grp in enumerate(rows):
        np.testing.assert_allclose(spec[g], ref_specificity(grp), rtol=1e-7, atol=1e-10)
    # identical rows -> exactly 0 (within rounding)
    same = np.tile(rng.dirichlet(np.ones(7)), 4)
    assert M.node_specificity(same, np.arange(0, 29, 7), [0, 4])[0] < 1e-12


def _one(row, **kw):
    row = np.asarray(row, dtype=np.float64)
    return M.row_metrics(row, [0, len(row)], **kw)


def test_hand_checked_document_example():
    rm = _one([0.8, 0.1, 0.05, 0.05])
    # -(0.8 ln 0.8 + 0.1 ln 0.1 + 2 * 0.05 ln 0.05) = 0.7084 (the old guide printed 0.92)
    want = -(0.8 * math.log(0.8) + 0.1 * math.log(0.1) + 2 * 0.05 * math.log(0.05))
    assert rm.entropy[0] == pytest.approx(want, abs=1e-12)
    assert rm.entropy[0] == pytest.approx(0.7084, abs=1e-4)
    rm = _one([0.25] * 4)
    assert rm.entropy[0] == pytest.approx(math.log(4), abs=1e-12)
    assert rm.entropy[0] == pytest.approx(1.386, abs=1e-3)


@pytest.mark.parametrize("n", [2, 3, 7, 50, 256])
def test_uniform_row(n):
    rm = _one(np.full(n, 1.0 / n))
    assert rm.norm_entropy[0] == pytest.approx(1.0, abs=1e-12)
    assert rm.gini[0] == pytest.approx(0.0, abs=1e-12)
    assert rm.perplexity[0] == pytest.approx(n, rel=1e-12)
    assert rm.ipr[0] == pytest.approx(n, rel=1e-12)
    assert rm.max_weight[0] == pytest.approx(1.0 / n)
    assert rm.constant[0]


@pytest.mark.parametrize("n", [1, 2, 5, 64])
@pytest.mark.parametrize("at", [0, -1])
def test_one_hot_row(n, at):
    row = np.zeros(n)
    row[at] = 1.0
    rm = _one(row)
    assert rm.entropy[0] == 0.0
    assert rm.norm_entropy[0] == 0.0
    assert rm.perplexity[0] == 1.0
    assert rm.gini[0] == pytest.approx((n - 1) / n, abs=1e-12)
    assert rm.max_weight[0] == 1.0
    assert rm.effective_tokens[0] == 1.0
    assert rm.ipr[0] == 1.0
    assert rm.topk_mass[0] == 1.0


def test_single_key_row_conventions():
    rm = _one([0.37])  # renormalised to 1
    assert (rm.entropy[0], rm.norm_entropy[0], rm.perplexity[0]) == (0.0, 0.0, 1.0)
    assert (rm.max_weight[0], rm.gini[0], rm.ipr[0], rm.topk_mass[0]) == (1.0, 0.0, 1.0, 1.0)
    assert not rm.constant[0]  # one key is "key length 1", not a constant row
    assert M.node_specificity(np.array([1.0]), [0, 1], [0, 1])[0] == 0.0


def test_gini_in_unit_interval_and_monotone_in_concentration():
    rng = np.random.default_rng(0)
    rows = [rng.dirichlet(np.full(20, a)) for a in (100.0, 1.0, 0.01)]
    data = np.concatenate(rows)
    g = M.gini(data, [0, 20, 40, 60])
    assert np.all((g >= 0) & (g < 1))
    assert g[0] < g[1] < g[2]


def test_special_tokens_excluded_and_renormalised():
    w = np.array([0.5, 0.3, 0.2])  # [CLS] 0.5, content 0.3, 0.2
    sp = np.array([True, False, False])
    rm = _one(w, special=sp, exclude_special=True)
    assert rm.special_mass[0] == pytest.approx(0.5)
    assert rm.n_keys[0] == 2
    assert rm.max_weight[0] == pytest.approx(0.6)
    assert rm.entropy[0] == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)))
    kept = _one(w, special=sp, exclude_special=False)
    assert kept.n_keys[0] == 3 and kept.max_weight[0] == pytest.approx(0.5)
    assert kept.special_mass[0] == pytest.approx(0.5)


def test_gold_on_an_excluded_special_token_is_not_counted():
    # row 0: the only gold key is [SEP] (excluded) -> no gold among the analysed keys: NaN,
    # not gold mass 0 / a pointing miss; row 1: gold on [SEP] and a content key -> only the
    # content key counts
    data = np.array([0.2, 0.5, 0.1, 0.2, 0.2, 0.5, 0.1, 0.2])
    off = np.array([0, 4, 8])
    sp = np.array([1, 0, 0, 1, 1, 0, 0, 1], bool)
    gold = np.array([0, 0, 0, 1, 0, 1, 0, 1], bool)
    rm = M.row_metrics(data, off, special=sp, gold=gold, exclude_special=True)
    assert math.isnan(rm.gold_mass[0]) and math.isnan(rm.gold_pointing[0])
    assert rm.gold_mass[1] == pytest.approx(0.5 / 0.6) and rm.gold_pointing[1] == 1.0
    kept = M.row_metrics(data, off, special=sp, gold=gold, exclude_special=False)
    assert kept.gold_mass[0] == pytest.approx(0.2) and kept.gold_pointing[0] == 0.0


def test_all_mass_on_special_tokens_is_dropped_not_made_uniform():
    # row 0: every weight on [CLS]/[SEP] -> no distribution over the content keys: every metric
    # NaN (not the maximal entropy of a uniform row), special mass 1 kept, flagged; row 1 is a
    # normal row of the same group and alone decides the group's mean row / specificity
    data = np.array([0.6, 0.0, 0.0, 0.0, 0.4, 0.1, 0.5, 0.2, 0.1, 0.1])
    sp = np.array([1, 0, 0, 0, 1] * 2, bool)
    gold = np.array([0, 1, 0, 0, 0] * 2, bool)
    rm = M.row_metrics(data, [0, 5, 10], special=sp, gold=gold, groups=[0, 2])
    assert list(rm.all_special_mass) == [True, False] and not rm.invalid.any()
    assert rm.special_mass[0] == pytest.approx(1.0) and rm.special_mass[1] == pytest.approx(0.2)
    assert rm.n_keys[0] == 3
    for name in (*M.ROW_METRICS, "gold_mass", "gold_chance", "gold_pointing"):
        if name != "special_mass":
            assert math.isnan(getattr(rm, name)[0]), name
            assert not math.isnan(getattr(rm, name)[1]), name
    assert rm.entropy[1] == pytest.approx(-sum(x * math.log(x) for x in (0.625, 0.25, 0.125)))
    assert rm.group_rows[0] == 1 and rm.specificity[0] == 0.0
    # mass below 1e-6 of the row on the content keys is "all on specials" (float16 residue)
    rm = _one([0.5, 1e-8, 0.0, 0.5], special=np.array([1, 0, 0, 1], bool))
    assert rm.all_special_mass[0] and math.isnan(rm.entropy[0])
    rm = _one([0.5, 1e-4, 0.0, 0.5], special=np.array([1, 0, 0, 1], bool))
    assert not rm.all_special_mass[0] and rm.max_weight[0] == pytest.approx(1.0)


def test_row_of_only_special_keys_keeps_all_keys():
    rm = _one([0.7, 0.3], special=np.array([True, True]))
    assert rm.all_special_keys[0]
    assert rm.n_keys[0] == 2 and rm.max_weight[0] == pytest.approx(0.7)


def test_invalid_rows_are_nan_and_reported():
    data = np.array([0.0, 0.0, 0.5, 0.5, np.nan, 1.0])
    rm = M.row_metrics(data, [0, 2, 4, 6])
    assert list(rm.invalid) == [True, False, True]
    assert np.isnan(rm.entropy[[0, 2]]).all() and rm.entropy[1] == pytest.approx(math.log(2))
    mean, cnt = M.segment_mean(rm.entropy, [0, 3])
    assert cnt[0] == 1 and mean[0] == pytest.approx(math.log(2))


def test_float16_rounding_is_absorbed_by_renormalisation():
    rng = np.random.default_rng(3)
    row = rng.dirichlet(np.ones(100))
    r16 = row.astype(np.float16).astype(np.float32)
    a, b = _one(row), M.row_metrics(r16, [0, 100])
    assert abs(a.entropy[0] - b.entropy[0]) < 2e-3


def test_input_validation_messages():
    with pytest.raises(ValueError, match="empty row"):
        M.entropy(np.ones(2), [0, 0, 2])
    with pytest.raises(ValueError, match="ends at"):
        M.entropy(np.ones(3), [0, 2])
    with pytest.raises(ValueError, match="top_k"):
        M.row_metrics(np.ones(2), [0, 2], top_k=0)
    with pytest.raises(ValueError, match="differ in length"):
        M.jensen_shannon(np.ones(2), np.ones(3), [0, 2])
    with pytest.raises(ValueError, match="same length"):
        M.node_specificity(np.ones(5) / 5, [0, 2, 5], [0, 2])


def test_empty_input():
    rm = M.row_metrics(np.zeros(0, np.float32), [0])
    assert len(rm.entropy) == 0


def test_segment_reductions_need_no_loop_over_rows():
    # many rows of many distinct lengths: the length-group loop stays exact
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 300, size=2000)
    data = np.concatenate([rng.dirichlet(np.ones(k)) for k in lengths])
    off = np.concatenate(([0], np.cumsum(lengths)))
    g = M.gini(data, off)
    i = int(np.argmax(lengths))
    row = np.sort(data[off[i] : off[i + 1]])
    n = len(row)
    want = np.sum((2 * np.arange(1, n + 1) - n - 1) * row) / (n * row.sum())
    assert g[i] == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# JSD accuracy (issue: the entropy-difference form in float32 had ~1e-5 relative error)
# ---------------------------------------------------------------------------------------------
def _jsd_mp(p, q):
    """JSD by mpmath at 40 digits from the float32 values (the exact value of these inputs)."""
    import mpmath as mp

    with mp.workdps(40):
        s = mp.mpf(0)
        for a, b in zip(p.tolist(), q.tolist(), strict=True):
            a, b = mp.mpf(a), mp.mpf(b)
            m = (a + b) / 2
            if a > 0:
                s += a * mp.log(a / m) / 2
            if b > 0:
                s += b * mp.log(b / m) / 2
        return float(s)


@settings(max_examples=60, deadline=None)
@example(seed=86, k=2, alpha=0.05, kind="independent", scale=-1.0)  # was 1.03e-6 (float32 logs)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(2, 300),
    alpha=st.sampled_from([0.05, 1.0, 20.0]),
    kind=st.sampled_from(["independent", "perturbed", "zeros"]),
    scale=st.floats(-6, -1),
)
def test_jsd_is_accurate_to_1e6_relative_in_float32(seed, k, alpha, kind, scale):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, alpha)).astype(np.float32)
    if kind == "independent":
        q = rng.dirichlet(np.full(k, alpha))
    elif kind == "perturbed":  # nearly equal rows: the hard case for H(m) - (H(p) + H(q)) / 2
        q = p * (1.0 + rng.normal(0.0, 10.0**scale, k))
    else:
        q = p * (rng.random(k) > 0.3)
    q = np.abs(q)
    q = (q / q.sum() if q.sum() > 0 else p).astype(np.float32)
    want = _jsd_mp(p, q)
    got_block = M.block_divergence(p[None], q[None])[0][0]
    got_flat = M.jensen_shannon(p, q, [0, k])[0]
    for got in (got_block, got_flat):
        if want == 0.0:
            assert got == 0.0
        else:
            assert abs(got - want) <= 1e-6 * want, (got, want)


def test_jsd_bounds_and_hand_values():
    # disjoint supports: ln 2 exactly; equal rows: exactly 0; one half-overlap by hand
    p = np.array([0.5, 0.5, 0.0, 0.0], np.float32)
    q = np.array([0.0, 0.0, 0.5, 0.5], np.float32)
    assert M.jensen_shannon(p, q, [0, 4])[0] == pytest.approx(math.log(2), rel=1e-7)
    assert M.jensen_shannon(p, p, [0, 4])[0] == 0.0
    a, b = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    want = 0.5 * math.log(1 / 0.75) + 0.5 * (
        0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    )
    assert M.jensen_shannon(a, b, [0, 2])[0] == pytest.approx(want, rel=1e-12)
    j, t = M.block_divergence(np.full((1, 3), np.nan, np.float32), np.ones((1, 3), np.float32))
    assert math.isnan(j[0]) and math.isnan(t[0])


# ---------------------------------------------------------------------------------------------
# node specificity range, gold chance
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [2, 3, 8, 40])
def test_node_specificity_reaches_ln_q_not_ln_2(q):
    # q one-hot rows on q different keys: mean row uniform over q keys, every row entropy 0
    data = np.eye(q).ravel()
    spec = M.node_specificity(data, np.arange(0, q * q + 1, q), [0, q])[0]
    assert spec == pytest.approx(math.log(q), rel=1e-12)
    assert metric_range("node_specificity")[1] >= math.log(q)  # the registry's bound


def test_gold_chance_is_the_gold_mass_of_a_uniform_row():
    # row 0: 5 keys, [CLS] and [SEP] excluded -> 3 analysed keys, gold on 2 of them (and on
    # [SEP], which is not analysed): chance 2/3; row 1: no gold -> NaN like gold mass;
    # without exclusion row 0 has 5 keys and 3 gold keys: 3/5
    data = np.array([0.1, 0.2, 0.3, 0.3, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    sp = np.array([1, 0, 0, 0, 1] * 2, bool)
    gold = np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    ch = M.gold_chance(data, [0, 5, 10], gold)
    np.testing.assert_allclose(ch[0], 3 / 5)
    assert math.isnan(ch[1]) and math.isnan(M.gold_mass(data, [0, 5, 10], gold)[1])
    rm = M.row_metrics(data, [0, 5, 10], special=sp, gold=gold)
    assert rm.gold_chance[0] == pytest.approx(2 / 3) and math.isnan(rm.gold_chance[1])
    # a uniform row's gold mass equals its gold chance
    u = M.row_metrics(np.full(6, 1 / 6), [0, 6], gold=np.array([1, 1, 0, 0, 0, 0], bool))
    assert u.gold_mass[0] == pytest.approx(u.gold_chance[0]) == pytest.approx(1 / 3)


def test_one_implementation_single_functions_equal_row_metrics():
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 40, size=50)
    data = np.concatenate([rng.dirichlet(np.ones(k)) for k in lengths]).astype(np.float32)
    off = np.concatenate(([0], np.cumsum(lengths)))
    rm = M.row_metrics(data, off, exclude_special=False)
    for name, fn in (
        ("entropy", M.entropy),
        ("max_weight", M.max_weight),
        ("gini", M.gini),
        ("ipr", M.inverse_participation_ratio),
        ("effective_tokens", M.effective_tokens),
        ("topk_mass", M.topk_mass),
    ):
        np.testing.assert_array_equal(fn(data, off), getattr(rm, name), err_msg=name)
