"""compare(): directions, verdicts, family-wise correction, head matching."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import MetricTables, compare, compute_tables, correct_pvalues, paired_test
from attncmp.analyze.compare import (
    EXPECTED,
    INCONCLUSIVE,
    NOT_SIG,
    OPPOSITE,
    MetricTest,
    match_heads,
    overall_verdict,
)
from attncmp.analyze.figures import _mean_ci_from_tests, plot_gold_alignment
from attncmp.analyze.registry import metric_range
from attncmp.analyze.stats import mean_ci
from attncmp.store import ModelSpec, SampleRecord, SiteSpec, StoreSpec, StoreWriter, open_store

from tests.analyze._stores import plain_store

from ._engine_helpers import tables_from_values

N = 60
FOUR = ("entropy", "max_weight", "perplexity", "gini")


def _vals(rng, shift):
    """full/no_middle head-mean values; `shift[metric]` is added to no_middle (variant)."""
    base = {m: rng.normal(1.0, 0.3, N) for m in (*FOUR, "effective_tokens")}
    var = {m: v + shift.get(m, 0.0) + rng.normal(0, 0.05, N) for m, v in base.items()}
    return {"full": base, "no_middle": var}


def test_direction_convention_and_supported_verdict():
    rng = np.random.default_rng(0)
    # the full model is more concentrated: entropy/perplexity lower, max/gini higher
    t = tables_from_values(
        _vals(rng, {"entropy": 0.2, "perplexity": 0.3, "max_weight": -0.2, "gini": -0.1})
    )
    c = compare(t, n_boot=200)
    assert c.baseline == "full" and c.variants == ["no_middle"]
    by = {x.metric: x for x in c.main_tests()}
    assert set(by) == set(FOUR)  # effective_tokens is not in the confirmatory family
    e = by["entropy"]
    assert e.expected == "full < no_middle" and e.expected_direction == "lower"
    assert e.mean_diff > 0 and e.observed_direction == "lower" and e.verdict == EXPECTED
    m = by["max_weight"]
    assert m.expected == "full > no_middle" and m.mean_diff < 0 and m.verdict == EXPECTED
    v = c.verdict
    assert v.overall == "supported"
    assert set(v.per_metric.values()) == {EXPECTED}
    assert "4 of 4 confirmatory tests" in v.explanation and "Holm" in v.explanation
    assert v.family_size == 4 and v.n == N
    # effective_tokens: same data, tested two-sided in the secondary family
    et = [x for x in c.tests if x.metric == "effective_tokens"]
    assert [x.family for x in et] == ["secondary"] and et[0].expected == "two-sided"
    # the same data with the ablation as reference is contrary
    r = compare(t, baseline="no_middle", n_boot=0)
    assert r.verdict.overall == "contrary"
    assert {x.verdict for x in r.main_tests()} == {OPPOSITE}


def test_partly_supported_mixed_contrary_and_not_supported():
    rng = np.random.default_rng(1)
    t = tables_from_values(_vals(rng, {"entropy": 0.3, "gini": 0.3}))  # gini the wrong way
    v = compare(t, n_boot=0).verdict
    assert v.per_metric["entropy"] == EXPECTED and v.per_metric["gini"] == OPPOSITE
    assert v.per_metric["max_weight"] == NOT_SIG
    assert v.overall == "mixed"  # one expected, one opposite: a tie is never "contrary"
    t = tables_from_values(_vals(rng, {"entropy": 0.3, "perplexity": 0.3}))
    assert compare(t, n_boot=0).verdict.overall == "partly supported"
    t = tables_from_values(_vals(rng, {"gini": 0.3}))
    assert compare(t, n_boot=0).verdict.overall == "contrary"
    t = tables_from_values(_vals(rng, {}))
    v = compare(t, n_boot=0).verdict
    assert v.overall == "not supported" and set(v.per_metric.values()) == {NOT_SIG}


def test_overall_verdict_rules():
    assert overall_verdict([EXPECTED, OPPOSITE], 1e-6, 0.05) == "mixed"
    assert overall_verdict([EXPECTED, EXPECTED, OPPOSITE, NOT_SIG], 1e-6, 0.05) == "mixed"
    assert overall_verdict([OPPOSITE, NOT_SIG], 1e-6, 0.05) == "contrary"
    assert overall_verdict([EXPECTED, EXPECTED], 1e-6, 0.05) == "supported"
    assert overall_verdict([NOT_SIG, NOT_SIG], 0.0625, 0.05) == INCONCLUSIVE
    assert overall_verdict([], 0.0, 0.05) == "not supported"


def test_tiny_n_is_inconclusive_not_no_difference():
    # n = 5 with a huge shift: the exact Wilcoxon cannot go below 2/32 = 0.0625 per test
    rng = np.random.default_rng(5)
    base = {m: rng.normal(1, 0.1, 5) for m in FOUR}
    shift = {"entropy": 1, "perplexity": 1, "max_weight": -1, "gini": -1}
    t = tables_from_values({"full": base, "no_middle": {m: base[m] + shift[m] for m in FOUR}})
    v = compare(t, n_boot=0).verdict
    assert v.overall == INCONCLUSIVE
    assert v.min_corrected_p == pytest.approx(4 * 2 / 2**5)
    assert v.n_needed == 8  # 4 * 2 / 2**8 < 0.05 <= 4 * 2 / 2**7
    assert "at least 8 samples" in v.explanation
    # the t-test can reach any p: the rule follows the actual test
    assert compare(t, n_boot=0, primary="t").verdict.overall == "supported"


def test_families_are_corrected_separately_and_labelled():
    rng = np.random.default_rng(2)
    per_head = {
        m: {"entropy": rng.normal(1, 0.2, (3, N)), "gini": rng.normal(0.5, 0.1, (3, N))}
        for m in ("full", "no_middle")
    }
    t = tables_from_values(_vals(rng, {"entropy": 0.05}), per_head=per_head)
    c = compare(t, n_boot=100, seed=4, head_matching="index", correction="holm")
    f = c.to_frame()
    assert c.n_family == 4 and c.confirmatory.confirmatory
    sizes = {k: v.size for k, v in c.families.items()}
    assert sizes == {
        "confirmatory": 4,
        "secondary": 1,
        "per-layer": 0,
        "per-head": 2 * 3,  # the two metrics with per-head values x 3 heads
        "gold-vs-chance": 0,
    }
    for fam in c.families:
        sub = f.filter(pl.col("family") == fam)
        if sub.height:
            np.testing.assert_allclose(
                sub["p_corrected"], correct_pvalues(sub["p_primary"].to_numpy(), "holm")
            )
    assert (f["p_primary"] == f["wilcoxon_pvalue"]).all()
    assert set(f["ci_method"]) == {"paired t interval"}
    ent = next(x for x in c.tests if x.metric == "entropy" and x.head == -1)
    vals = t.per_sample.filter(pl.col("head") == -1).sort("position")
    ref = paired_test(
        vals.filter(model="full")["entropy"], vals.filter(model="no_middle")["entropy"]
    )
    assert ent.mean_diff == pytest.approx(ref.mean_diff) and ent.ci_diff_low == ref.ci_diff[0]
    assert ent.wilcoxon_pvalue == ref.wilcoxon_pvalue and ent.t_pvalue == ref.t_pvalue
    bh = compare(t, n_boot=0, head_matching="index", correction="bh", primary="t").to_frame()
    for fam in ("confirmatory", "per-head"):
        sub = bh.filter(pl.col("family") == fam)
        np.testing.assert_allclose(
            sub["p_corrected"], correct_pvalues(sub["t_pvalue"].to_numpy(), "bh")
        )
    assert set(bh["correction"]) == {"bh"} and set(bh["primary"]) == {"t"}
    mean_only = compare(t, n_boot=0, heads="mean")
    assert {x.head_kind for x in mean_only.tests} == {"head-mean"} and mean_only.n_family == 4
    # metrics without a direction are two-sided
    tw = compare(
        t, n_boot=0, metrics=["entropy", "gini"], directions={"entropy": "lower"}, heads="mean"
    )
    assert [x.expected for x in tw.tests] == ["full < no_middle", "two-sided"]
    assert [x.family for x in tw.tests] == ["confirmatory", "secondary"]
    # the flat statistics are the PairedResult's, not re-declared
    assert "mean_diff" not in {fl.name for fl in dataclasses.fields(MetricTest)}
    assert ent.as_dict()["mean_diff"] == ent.result.mean_diff


def test_hypothesis_layers_define_the_confirmatory_family():
    rng = np.random.default_rng(8)
    rows = []
    for layer in (0, 1):
        v = _vals(rng, {"entropy": 0.4} if layer == 0 else {})
        rows.append(tables_from_values(v).per_sample.with_columns(pl.lit(layer).alias("layer")))
    t = MetricTables.from_per_sample(pl.concat(rows))
    c = compare(t, n_boot=0)
    assert c.hypothesis_layers == [1]
    assert {x.layer for x in c.main_tests()} == {1} and c.verdict.overall == "not supported"
    assert {x.family for x in c.tests if x.layer == 0} == {"per-layer"}
    c0 = compare(t, n_boot=0, hypothesis_layers=[0])
    assert c0.verdict.overall == "partly supported" and c0.n_family == 4
    ca = compare(t, n_boot=0, hypothesis_layers="all")
    assert ca.n_family == 8 and ca.verdict.per_metric["entropy"] == EXPECTED
    with pytest.raises(ValueError, match="layer 5"):
        compare(t, hypothesis_layers=[5])


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
    assert any("not calibrated" in w for w in c.warnings)
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
    p = plain_store(tmp_path / "d.h5", 10, sites=sites, nodes=(2, 4), tokens=(3, 6))
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
        lo, hi = metric_range(row["metric"])
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


def test_gold_mass_is_tested_against_its_chance_level():
    rng = np.random.default_rng(9)
    chance = rng.uniform(0.05, 0.2, N)
    vals = {
        "full": {"gold_mass": chance + 0.2 + rng.normal(0, 0.05, N), "gold_chance": chance},
        "no_middle": {"gold_mass": chance + rng.normal(0, 0.05, N), "gold_chance": chance},
    }
    c = compare(tables_from_values(vals), metrics=[], secondary_metrics=["gold_mass"], n_boot=0)
    fam = c.families["gold-vs-chance"]
    assert fam.size == 2 and not fam.confirmatory
    by = {t.variant: t for t in fam.tests}
    assert {t.baseline for t in fam.tests} == {"chance"}
    assert by["full"].mean_baseline == pytest.approx(chance.mean())
    assert by["full"].mean_variant == pytest.approx(vals["full"]["gold_mass"].mean())
    assert by["full"].verdict == EXPECTED and by["no_middle"].verdict == NOT_SIG
    np.testing.assert_allclose(
        [t.p_corrected for t in fam.tests],
        correct_pvalues(np.array([t.p_primary for t in fam.tests]), "holm"),
    )
    # the model-vs-model gold test is in the secondary family, not mixed with these
    assert [t.family for t in c.tests if t.baseline == "full"] == ["secondary"]


def test_threshold_uninformative_notice_on_long_rows():
    rng = np.random.default_rng(10)
    vals = {
        m: {
            "effective_tokens": np.zeros(N),
            "max_weight": rng.uniform(0.01, 0.03, N),
            "entropy": rng.normal(5, 0.1, N),
        }
        for m in ("full", "no_middle")
    }
    c = compare(tables_from_values(vals), n_boot=0)
    (note,) = c.notices
    assert note["kind"] == "threshold_uninformative" and note["threshold"] == 0.1
    assert note["share_zero"] == {"full": 1.0, "no_middle": 1.0}
    assert 0.005 <= note["suggested_threshold"] <= 0.015
    assert any("threshold_uninformative" in w for w in c.warnings)
    vals["full"]["effective_tokens"] = rng.integers(1, 3, N).astype(float)
    assert compare(tables_from_values(vals), n_boot=0).notices == []
