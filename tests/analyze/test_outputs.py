"""run_analysis / replot: every output file, its documented columns and keys, values consistent
with the engine's results, K heatmaps, re-plotting without the store, partial stores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from attncmp.analyze.compare import compare
from attncmp.analyze.outputs import (
    AnalysisError,
    AnalysisOptions,
    choose_examples,
    replot,
    run_analysis,
)
from attncmp.analyze.table import MetricTables

from tests.analyze._stores import study_store

FAST = dict(n_boot=200, quiet=True)

ALWAYS = [
    "attention_statistics_comparison.png",
    "attention_statistics.csv",
    "attention_heatmap_example_1.png",
    "attention_heatmap_example_2.png",
    "attention_heatmap_example_3.png",
    "per_sample_metrics.parquet",
    "per_sample_metrics.csv",
    "per_layer_head.csv",
    "significance.csv",
    "summary.json",
    "report.md",
    "prediction.csv",
    "attention_error_correlation.csv",
    "strata.csv",
    "per_layer_head_atom_to_text.png",
    "attention_vs_error.png",
    "strata_comparison.png",
    "node_specificity.png",
    "gold_alignment.png",
    "mae_comparison.png",
]
SUMMARY_KEYS = {
    "format",
    "version",
    "attncmp_version",
    "created",
    "store",
    "store_config",
    "provenance",
    "models",
    "baseline",
    "variants",
    "n_samples",
    "is_partial",
    "selection",
    "options",
    "statistics",
    "verdict",
    "main_results",
    "secondary_results",
    "prediction",
    "correlations",
    "strata",
    "noise_floor",
    "diagnostics",
    "warnings",
    "examples",
    "figures",
    "grid_counts",
    "files_written",
}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    store = study_store(root / "store.h5", n=14, n_heads=2, n_layers=2, max_nodes=12, max_tokens=24)
    res = run_analysis([store], root / "analysis", AnalysisOptions(**FAST))
    return store, res


def test_every_documented_file_is_written(analysed):
    _, res = analysed
    d = res.save_dir
    missing = [f for f in ALWAYS if not (d / f).exists()]
    assert not missing, missing
    assert all(p.exists() for p in res.files)
    assert not list(d.glob("attention_heatmap_example_4.*"))


def test_statistics_csv_matches_the_engine(analysed):
    _, res = analysed
    csv = pl.read_csv(res.save_dir / "attention_statistics.csv")
    for col in [
        "metric",
        "full",
        "no_middle",
        "change_pct",
        "n",
        "baseline_ci_low",
        "baseline_ci_high",
        "variant_ci_low",
        "variant_ci_high",
        "mean_diff",
        "diff_ci_low",
        "diff_ci_high",
        "t_pvalue",
        "wilcoxon_pvalue",
        "p_corrected",
        "correction",
        "cohens_dz",
        "rank_biserial",
        "verdict",
        "ci_method",
        "family",
        "family_size",
    ]:
        assert col in csv.columns, col
    # the original four rows (seed parity), then perplexity, the confirmatory effective number
    assert csv["metric"].to_list() == [
        "entropy",
        "max_weight",
        "effective_tokens",
        "gini",
        "perplexity",
    ]
    fam = dict(zip(csv["metric"], csv["family"], strict=True))
    assert fam["effective_tokens"] == "secondary" and fam["entropy"] == "confirmatory"
    assert set(csv["ci_method"]) == {"paired t interval"}
    assert set(csv.filter(pl.col("family") == "confirmatory")["family_size"]) == {4}
    sel = res.summary["selection"]
    assert sel == {
        "site": "atom_to_text",
        "layer": 1,
        "layers": [1],
        "head": -1,
        "head_kind": "head-mean",
    }
    by = {t.metric: t for t in res.comparison.headline_tests()}
    for row in csv.iter_rows(named=True):
        t = by[row["metric"]]
        assert row["full"] == pytest.approx(t.mean_baseline)
        assert row["no_middle"] == pytest.approx(t.mean_variant)
        assert row["change_pct"] == pytest.approx(t.pct_change)
        assert row["p_corrected"] == pytest.approx(t.p_corrected)
        assert row["n"] == t.n == 14
        assert row["verdict"] == t.verdict
    # the per-sample table agrees with the csv means
    ps = pl.read_parquet(res.save_dir / "per_sample_metrics.parquet")
    ent = ps.filter(
        (pl.col("model") == "full")
        & (pl.col("site") == "atom_to_text")
        & (pl.col("layer") == 1)
        & (pl.col("head") == -1)
    )["entropy"].mean()
    assert csv["full"][0] == pytest.approx(ent)


def test_significance_and_per_layer_head_tables(analysed):
    _, res = analysed
    sig = pl.read_csv(res.save_dir / "significance.csv")
    assert sig.height == len(res.comparison.tests)
    main = sig.filter(pl.col("family") == "confirmatory")
    assert main.height == res.comparison.n_family == 4
    assert set(sig["family"]) <= {
        "confirmatory",
        "secondary",
        "per-layer",
        "per-head",
        "gold-vs-chance",
    }
    assert {
        "metric",
        "site",
        "layer",
        "head",
        "variant",
        "pct_change",
        "p_corrected",
        "verdict",
        "head_matching",
    } <= set(sig.columns)
    assert (
        sig.filter(pl.col("family") == "secondary")["metric"]
        .is_in(
            [
                "effective_tokens",
                "node_specificity",
                "gold_mass",
                "gold_pointing",
                "norm_entropy",
                "special_mass",
            ]
        )
        .all()
    )
    plh = pl.read_csv(res.save_dir / "per_layer_head.csv")
    assert {"site", "layer", "head", "head_kind", "model", "n_samples", "entropy", "gini"} <= set(
        plh.columns
    )
    ps = res.tables.per_sample
    want = ps.filter(
        (pl.col("site") == "atom_to_text")
        & (pl.col("layer") == 0)
        & (pl.col("head") == 1)
        & (pl.col("model") == "no_middle")
    )["gini"].mean()
    got = plh.filter(
        (pl.col("site") == "atom_to_text")
        & (pl.col("layer") == 0)
        & (pl.col("head") == 1)
        & (pl.col("model") == "no_middle")
    )["gini"][0]
    assert got == pytest.approx(want)
    # the cached per-sample table is the engine's table
    assert pl.read_parquet(res.save_dir / "per_sample_metrics.parquet").equals(ps)
    assert pl.read_csv(res.save_dir / "per_sample_metrics.csv").height == ps.height


def test_summary_json_documented_keys(analysed):
    _, res = analysed
    s = json.loads((res.save_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s)
    assert s["verdict"]["overall"] == res.comparison.verdict.overall
    assert s["n_samples"] == 14 and s["is_partial"] is False
    assert s["store"]["split"] == "test" and s["store"]["selection_seed"] == 0
    assert {r["metric"] for r in s["main_results"]} == {
        "entropy",
        "max_weight",
        "perplexity",
        "gini",
    }
    assert {r["family"] for r in s["main_results"]} == {"confirmatory"}
    st = s["statistics"]
    assert st["hypothesis_layers"] == [1] and st["ci_method_name"] == "paired t interval"
    assert st["family_size"] == s["verdict"]["family_size"] == 4
    assert st["families"]["confirmatory"]["kind"] == "confirmatory"
    assert st["families"]["per-head"]["kind"] == "exploratory"
    assert set(s["prediction"]["per_model"]) == {"full", "no_middle"}
    mae = s["prediction"]["per_model"]["full"]["mae"]
    smp = res.tables.samples
    assert mae == pytest.approx(float((smp["prediction_full"] - smp["target"]).abs().mean()))
    assert [e["file"] for e in s["examples"]] == [
        f"attention_heatmap_example_{k}.png" for k in (1, 2, 3)
    ]
    assert any(w["kind"] == "degenerate_site" for w in s["warnings"])
    # the report translates the code, not the English reason
    assert s["diagnostics"]["degenerate_codes"] == {"text_pool": "key_len_1"}
    deg = [w for w in s["warnings"] if w["kind"] == "degenerate_site"]
    assert [(w["site"], w["reason_code"]) for w in deg] == [("text_pool", "key_len_1")]
    assert any(w["kind"] == "small_sample" for w in s["warnings"])
    names = {f["name"] for f in s["files_written"]}
    assert {"report.md", "summary.json", "attention_statistics.csv"} <= names


def test_report_has_the_measured_numbers(analysed):
    _, res = analysed
    text = (res.save_dir / "report.md").read_text()
    s = res.summary
    for r in s["main_results"]:
        assert f"{r['pct_change']:+.1f}%" in text
    for m, r in s["prediction"]["per_model"].items():
        assert f"{r['mae']:.3f}" in text, m
    assert "n = 14" in text and "Draft results paragraph" in text
    assert "scenario" in text.lower() and "Caveats" in text
    for name in (
        "attention_statistics_comparison.png",
        "mae_comparison.png",
        "attention_heatmap_example_3.png",
        "gold_alignment.png",
    ):
        assert f"]({name})" in text, name
    assert "text_pool" in text  # the degenerate site is reported


def test_examples_strategies(analysed):
    _, res = analysed
    t = res.tables
    kw = dict(site="atom_to_text", layer=1, baseline="full", variant="no_middle")
    div = choose_examples(t, k=3, strategy="divergent", **kw)
    jsd = t.pairwise.filter(
        (pl.col("site") == "atom_to_text")
        & (pl.col("layer") == 1)
        & (pl.col("head") == -1)
        & (pl.col("variant") == "no_middle")
    )
    top = jsd.sort("jsd", descending=True)["sample_id"].to_list()[:3]
    assert div == top == [e.sample_id for e in res.examples]
    r1 = choose_examples(t, k=3, strategy="random", seed=5, **kw)
    assert r1 == choose_examples(t, k=3, strategy="random", seed=5, **kw) and len(set(r1)) == 3
    assert choose_examples(t, k=99, strategy="random", **kw).__len__() == 14
    ids = t.samples["sample_id"].to_list()[:2]
    assert choose_examples(t, k=3, strategy="ids", ids=ids, **kw) == ids
    with pytest.raises(AnalysisError, match="--ids: sample 'nope' is not in the store"):
        choose_examples(t, k=1, strategy="ids", ids=["nope"], **kw)


def test_replot_needs_no_store_and_switches_language(analysed, tmp_path):
    store, res = analysed
    out = tmp_path / "copy"
    shutil.copytree(res.save_dir, out)
    moved = tmp_path / "moved.h5"
    shutil.copy(store, moved)
    for f in out.glob("*.png"):
        f.unlink()
    store_backup = store.read_bytes()
    store.unlink()  # the store is gone: re-plotting must not need it
    try:
        again = replot(out, lang="zh")
    finally:
        store.write_bytes(store_backup)
    for name in (
        "attention_statistics_comparison.png",
        "attention_heatmap_example_1.png",
        "attention_heatmap_example_3.png",
        "mae_comparison.png",
    ):
        assert (out / name).exists(), name
    zh = (out / "report.md").read_text(encoding="utf-8")
    assert "注意力对比分析报告" in zh and "结果段落草稿" in zh
    for r in again.summary["main_results"]:
        assert f"{r['pct_change']:+.1f}%" in zh
    # same statistics as the original run (seeded, same cache)
    a = pl.read_csv(res.save_dir / "attention_statistics.csv")
    b = pl.read_csv(out / "attention_statistics.csv")
    assert a.equals(b)


def test_replot_without_cache_is_a_clear_error(tmp_path):
    with pytest.raises(AnalysisError, match="no cached analysis"):
        replot(tmp_path)


def test_partial_store_is_analysed_and_says_so(tmp_path):
    path, writer = study_store(
        tmp_path / "partial.h5",
        n=8,
        n_planned=20,
        n_heads=1,
        n_layers=1,
        extra_sites=False,
        keep_open=True,
    )
    lines: list[str] = []
    try:
        res = run_analysis(
            [path], tmp_path / "p", AnalysisOptions(n_boot=200, examples=2, log=lines.append)
        )
    finally:
        writer.close()
    assert any("partial" in ln and "8 of 20" in ln for ln in lines)
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["is_partial"] is True and s["store"]["n_planned"] == 20
    assert any(w["kind"] == "partial_store" for w in s["warnings"])
    report = (tmp_path / "p" / "report.md").read_text()
    assert "Partial store" in report and "8 of the 20" in report
    assert len(list((tmp_path / "p").glob("attention_heatmap_example_*.png"))) == 2
    assert res.tables.n_samples == 8


def test_options_are_validated_before_any_work(tmp_path):
    with pytest.raises(AnalysisError, match="--format"):
        run_analysis([tmp_path / "x.h5"], tmp_path / "o", AnalysisOptions(formats="png,gif"))
    with pytest.raises(AnalysisError, match="--save-dir is empty"):
        run_analysis([tmp_path / "x.h5"], "", AnalysisOptions())
    for bad, match in (
        (dict(hypothesis_layers="first"), "--hypothesis-layers"),
        (dict(head_matching="greedy"), "--head-matching"),
        (dict(ci_method="bootstrap"), "--ci-method"),
    ):
        with pytest.raises(AnalysisError, match=match):
            run_analysis([tmp_path / "x.h5"], tmp_path / "o", AnalysisOptions(**bad))
    assert AnalysisOptions(hypothesis_layers="0, -1").hypothesis_layer_spec() == [0, -1]


def test_secondary_family_is_separate(analysed):
    _, res = analysed
    t = MetricTables.load(res.save_dir)
    c = compare(t, n_boot=200)
    # the confirmatory family is what the engine computes by default: the secondary metrics
    # the outputs add do not inflate it
    assert c.n_family == res.comparison.n_family == 4
    assert np.allclose(
        [x.p_corrected for x in c.main_tests()],
        [x.p_corrected for x in res.comparison.main_tests()],
    )
    assert res.comparison.families["secondary"].size > c.families["secondary"].size


def test_correlations_are_computed_for_the_headline_layer_only(analysed):
    """Every correlation row bootstraps; the outputs ask for the headline layer only, so a
    multi-layer store does not multiply the replot time."""
    _, res = analysed
    layer = res.summary["selection"]["layer"]
    assert layer == 1  # the last of two layers
    assert set(res.correlations["layer"]) == {layer}
    csv = pl.read_csv(res.save_dir / "attention_error_correlation.csv")
    assert set(csv["layer"]) == {layer} and csv.height == res.correlations.height


def test_mean_cis_in_the_outputs_stay_in_the_metric_range(analysed):
    from attncmp.analyze.registry import metric_range

    _, res = analysed
    sig = pl.read_csv(res.save_dir / "significance.csv")
    assert {"gold_pointing", "gold_mass", "max_weight", "gini"} <= set(sig["metric"])
    for row in sig.iter_rows(named=True):
        lo, hi = metric_range(row["metric"])
        for k in ("ci_baseline_low", "ci_baseline_high", "ci_variant_low", "ci_variant_high"):
            if row[k] is not None:
                assert lo <= row[k] <= hi, (row["metric"], k, row[k])


def test_summary_json_holds_plain_json_only(tmp_path):
    """No numpy reprs (e.g. a bootstrap distribution turned into a string) in summary.json."""
    import json

    from attncmp.analyze.outputs import AnalysisOptions, run_analysis

    from tests.analyze._stores import plain_store

    store = plain_store(tmp_path / "s.h5", 12, seed=1)
    res = run_analysis(store, tmp_path / "out", AnalysisOptions(quiet=True, n_boot=100, examples=1))
    text = (res.save_dir / "summary.json").read_text()
    assert "array(" not in text and "np.float" not in text
    summary = json.loads(text)
    assert summary["main_results"], "main results missing"
    for r in summary["main_results"]:
        assert "result" not in r
        for key in ("mean_diff", "ci_diff_low", "ci_diff_high", "p_corrected", "verdict"):
            assert key in r, key
