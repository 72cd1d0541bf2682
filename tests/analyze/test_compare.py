"""compare(): directions, verdicts, family-wise correction, head matching."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import compare, compute_tables, correct_pvalues, paired_test
from attncmp.analyze.compare import EXPECTED, NOT_SIG, OPPOSITE, match_heads
from attncmp.analyze.figures import _mean_ci_from_tests, plot_gold_alignment
from attncmp.analyze.metrics import METRIC_RANGES
from attncmp.analyze.stats import mean_ci
from attncmp.analyze.synthetic import write_synthetic_store
from attncmp.store import ModelSpec, SampleRecord, SiteSpec, StoreSpec, StoreWriter, open_store

from ._engine_helpers import tables_from_values

N = 60


def _vals(rng, shift):
    """full/no_middle head-mean values; `shift[metric]` is added to no_middle (variant)."""
    base = {
        m: rng.normal(1.0, 0.3, N) for m in ("entropy", "max_weight", "effective_tokens", "gini")
    }
    var = {m: v + shift.get(m, 0.0) + rng.normal(0, 0.05, N) for m, v in base.items()}
    return {"full": base, "no_middle": var}


def test_direction_convention_and_supported_verdict():
    rng = np.random.default_rng(0)
    # the full model is more concentrated: entropy/effective lower, max/gini higher
    t = tables_from_values(
        _vals(rng, {"entropy": 0.2, "effective_tokens": 0.3, "max_weight": -0.2, "gini": -0.1})
    )
    c = compare(t, n_boot=200)
    assert c.baseline == "full" and c.variants == ["no_middle"]
    by = {x.metric: x for x in c.main_tests()}
    e = by["entropy"]
    assert e.expected == "full < no_middle" and e.expected_direction == "lower"
    assert e.mean_diff > 0 and e.observed_direction == "lower" and e.verdict == EXPECTED
    m = by["max_weight"]
    assert m.expected == "full > no_middle" and m.mean_diff < 0 and m.verdict == EXPECTED
    v = c.verdict
    assert v.overall == "supported"
    assert set(v.per_metric.values()) == {EXPECTED}
    assert "4 of 4 metrics" in v.explanation and "Holm" in v.explanation
    # the same data with the ablation as reference is contrary
    r = compare(t, baseline="no_middle", n_boot=0)
    assert r.verdict.overall == "contrary"
    assert {x.verdict for x in r.main_tests()} == {OPPOSITE}


def test_partly_supported_contrary_and_not_supported():
    rng = np.random.default_rng(1)
    t = tables_from_values(_vals(rng, {"entropy": 0.3, "gini": 0.3}))  # gini the wrong way
    v = compare(t, n_boot=0).verdict
    assert v.per_metric["entropy"] == EXPECTED and v.per_metric["gini"] == OPPOSITE
    assert v.per_metric["max_weight"] == NOT_SIG
    assert v.overall == "contrary"  # one expected, one opposite
    t = tables_from_values(_vals(rng, {"entropy": 0.3, "effective_tokens": 0.3, "gini": 0.3}))
    assert compare(t, n_boot=0).verdict.overall == "partly supported"
    t = tables_from_values(_vals(rng, {}))
    v = compare(t, n_boot=0).verdict
    assert v.overall == "not supported" and set(v.per_metric.values()) == {NOT_SIG}


def test_tests_equal_paired_test_and_family_is_corrected():
    rng = np.random.default_rng(2)
    per_head = {
        m: {"entropy": rng.normal(1, 0.2, (3, N)), "gini": rng.normal(0.5, 0.1, (3, N))}
        for m in ("full", "no_middle")
    }
    t = tables_from_values(_vals(rng, {"entropy": 0.05}), per_head=per_head)
    c = compare(t, n_boot=100, seed=4, head_matching="index", correction="holm")
    f = c.to_frame()
    assert len(f) == c.n_family == 4 + 2 * 3  # four head-mean metrics + 2 metrics x 3 heads
    np.testing.assert_allclose(f["p_corrected"], correct_pvalues(f["p_primary"].to_numpy(), "holm"))
    assert (f["p_primary"] == f["wilcoxon_pvalue"]).all()
    ent = next(x for x in c.tests if x.metric == "entropy" and x.head == -1)
    vals = t.per_sample.filter(pl.col("head") == -1).sort("position")
    ref = paired_test(
        vals.filter(model="full")["entropy"],
        vals.filter(model="no_middle")["entropy"],
        n_boot=100,
        seed=4,
    )
    assert ent.mean_diff == pytest.approx(ref.mean_diff) and ent.ci_diff_low == ref.ci_diff[0]
    assert ent.wilcoxon_pvalue == ref.wilcoxon_pvalue and ent.t_pvalue == ref.t_pvalue
    bh = compare(t, n_boot=0, head_matching="index", correction="bh", primary="t").to_frame()
    np.testing.assert_allclose(bh["p_corrected"], correct_pvalues(bh["t_pvalue"].to_numpy(), "bh"))
    assert set(bh["correction"]) == {"bh"} and set(bh["primary"]) == {"t"}
    mean_only = compare(t, n_boot=0, heads="mean")
    assert {x.head_kind for x in mean_only.tests} == {"head-mean"} and mean_only.n_family == 4
    # metrics without a direction are two-sided
    tw = compare(
        t, n_boot=0, metrics=["entropy", "gini"], directions={"entropy": "lower"}, heads="mean"
    )
    assert [x.expected for x in tw.tests] == ["full < no_middle", "two-sided"]


def test_sorted_matching_compares_order_statistics():
    rng = np.random.default_rng(3)
    a = rng.normal(1, 0.1, (4, N))
    b = a[::-1] + 0.5  # same heads in another order, all shifted
    t = tables_from_values(
        _vals(rng, {}), per_head={"full": {"entropy": a}, "no_middle": {"entropy": b}}
    )
    c = compare(t, n_boot=0, head_matching="sorted", metrics=["entropy"])
    heads = [x for x in c.tests if x.head_kind == "head"]
    assert [x.head for x in heads] == [0, 1, 2, 3] and {x.head_matching for x in heads} == {
        "sorted"
    }
    for x in heads:
        assert x.mean_diff == pytest.approx(0.5)


def _permuted_heads_store(path, perm, n=30, H=4, seed=0):
    """Variant heads are the baseline heads in another order (head h of the variant = baseline
    head perm[h]) plus noise; each baseline head has its own token preference."""
    rng = np.random.default_rng(seed)
    site = SiteSpec("atom_to_text", "nodes", "tokens", n_layers=1, n_heads=H)
    spec = StoreSpec(
        models=(ModelSpec("full"), ModelSpec("other")),
        sites=(site,),
        selection_ids=tuple(f"s{i}" for i in range(n)),
    )
    recs = []
    for i in range(n):
        q, k = int(rng.integers(2, 6)), int(rng.integers(H + 2, 12))
        logits = rng.normal(0, 0.3, (1, H, q, k))
        for h in range(H):
            logits[0, h, :, h] += 4.0  # head h looks at token h
        a = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        lb = logits[:, perm] + rng.normal(0, 0.3, logits.shape)
        b = np.exp(lb) / np.exp(lb).sum(-1, keepdims=True)
        recs.append(
            SampleRecord(
                id=f"s{i}",
                node_labels=["C"] * q,
                tokens=["t"] * k,
                special=np.zeros(k, bool),
                target=0.0,
                predictions={"full": 0.0, "other": 0.0},
                attention={"full": {"atom_to_text": a}, "other": {"atom_to_text": b}},
            )
        )
    with StoreWriter.create(path, spec) as w:
        w.append(recs)
    return path


def test_hungarian_matching_recovers_a_head_permutation(tmp_path):
    perm = [2, 0, 3, 1]  # variant head h = baseline head perm[h]
    t = compute_tables(open_store(_permuted_heads_store(tmp_path / "p.h5", perm)))
    c = compare(t, n_boot=0, head_matching="hungarian")
    ha = c.head_assignments
    got = dict(zip(ha["head_baseline"], ha["head_variant"], strict=True))
    assert got == {perm[h]: h for h in range(4)}
    per_head = [x for x in c.tests if x.head_kind == "head"]
    assert {x.head_matching for x in per_head} == {"hungarian"}
    assert all(x.variant_head == got[x.head] for x in per_head)
    # index pairing of the same heads is (wrongly) very different; matching makes it close
    f = c.to_frame().filter((pl.col("metric") == "entropy") & (pl.col("head") >= 0))
    idx = (
        compare(t, n_boot=0, head_matching="index")
        .to_frame()
        .filter((pl.col("metric") == "entropy") & (pl.col("head") >= 0))
    )
    assert (
        f["mean_diff"].abs().max() < 0.2
        or f["mean_diff"].abs().mean() < idx["mean_diff"].abs().mean()
    )


def test_match_heads_on_a_cost_matrix():
    cost = np.array([[5.0, 1.0, 9.0], [1.0, 5.0, 9.0], [9.0, 9.0, 0.5]])
    r, k, total = match_heads(cost)
    assert list(k) == [1, 0, 2] and total == pytest.approx(2.5)


def test_degenerate_sites_are_skipped_and_validation(tmp_path):
    sites = (
        SiteSpec("atom_to_text", "nodes", "tokens", n_heads=2),
        SiteSpec("pooled", "nodes", "single"),
    )
    p = write_synthetic_store(
        tmp_path / "d.h5", n_samples=10, sites=sites, nodes=(2, 4), tokens=(3, 6)
    )
    t = compute_tables(open_store(p))
    c = compare(t, n_boot=0)
    assert c.main_site == "atom_to_text" and all(x.site == "atom_to_text" for x in c.tests)
    assert any("pooled" in s and "key length 1" in s for s in c.skipped)
    with pytest.raises(ValueError, match="correction"):
        compare(t, correction="bonferroni")
    with pytest.raises(ValueError, match="head_matching"):
        compare(t, head_matching="greedy")
    with pytest.raises(ValueError, match="baseline"):
        compare(t, baseline="nope")
    with pytest.raises(ValueError, match="variants"):
        compare(t, variants=["full"])
    with pytest.raises(ValueError, match="metrics"):
        compare(t, metrics=["nope"])
    with pytest.raises(ValueError, match="direction"):
        compare(t, directions={"entropy": "down"})


def test_mean_cis_of_bounded_metrics_stay_in_range():
    """Gold pointing accuracy near 0 and max weight near 1: a plain t interval leaves [0, 1]."""
    rare = np.array([0.0] * 37 + [1.0, 0.5, 0.25])
    saturated = np.array([1.0] * 37 + [0.2, 0.3, 0.1])
    spec = np.array([0.0] * 38 + [0.6, 0.65])
    assert mean_ci(rare)[1] < 0 and mean_ci(saturated)[2] > 1 and mean_ci(spec)[2] > 0  # premise
    vals = {
        "full": {
            "gold_pointing": rare,
            "gold_mass": rare / 2,
            "max_weight": saturated,
            "node_specificity": spec,
        },
        "no_middle": {
            "gold_pointing": np.roll(rare, 1),
            "gold_mass": np.roll(rare, 3) / 3,
            "max_weight": np.roll(saturated, 2),
            "node_specificity": np.roll(spec, 1),
        },
    }
    t = tables_from_values(vals)
    c = compare(t, metrics=list(vals["full"]), directions={}, n_boot=200, heads="mean")
    assert len(c.tests) == 4
    f = c.to_frame()
    for row in f.iter_rows(named=True):
        lo, hi = METRIC_RANGES[row["metric"]]
        for k in ("ci_baseline_low", "ci_baseline_high", "ci_variant_low", "ci_variant_high"):
            assert lo <= row[k] <= hi, (row["metric"], k, row[k])
    by = {x.metric: x for x in c.tests}
    assert by["gold_pointing"].ci_baseline_low == 0.0
    assert by["max_weight"].ci_baseline_high == 1.0
    # the figures use these intervals, and clip a frame from elsewhere as well
    sel = {"site": "atom_to_text", "layer": 0, "head": -1, "head_kind": "head-mean"}
    raw = f.with_columns(
        pl.lit(-0.2).alias("ci_baseline_low"), pl.lit(1.3).alias("ci_variant_high")
    )
    for frame in (f, raw):
        for metric in ("gold_pointing", "max_weight"):
            got, rows = _mean_ci_from_tests(frame, metric, "full", ["no_middle"], sel)
            assert len(rows) == 1
            for mu, lo_, hi_ in got.values():
                assert 0.0 <= lo_ <= mu <= hi_ <= 1.0
    fig = plot_gold_alignment(
        t.per_sample, f, models=["full", "no_middle"], selection=sel, stem=None
    )
    assert fig is not None
    for ax in fig.axes:
        for line in ax.get_lines():  # the CI error bars: nothing below 0 or above 1
            y = np.asarray(line.get_ydata(), dtype=float)
            assert np.all((y >= -1e-12) & (y <= 1 + 1e-12))
