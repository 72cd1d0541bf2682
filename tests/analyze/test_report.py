"""report.md rendering from a summary: both languages complete, the three scenarios, caveats,
the drafted paragraph with the numbers filled in (fast: no store, no statistics)."""

from __future__ import annotations

import re

import pytest
from attncmp.analyze.i18n import STRINGS
from attncmp.analyze.report import render_report

CJK = re.compile(r"[\u4e00-\u9fff]")


def _row(metric, mb, mv, p, verdict, family="confirmatory"):
    return {
        "family": family,
        "metric": metric,
        "site": "atom_to_text",
        "layer": 0,
        "head": -1,
        "variant": "no_middle",
        "baseline": "full",
        "n": 42,
        "mean_baseline": mb,
        "ci_baseline_low": mb - 0.1,
        "ci_baseline_high": mb + 0.1,
        "mean_variant": mv,
        "ci_variant_low": mv - 0.1,
        "ci_variant_high": mv + 0.1,
        "mean_diff": mv - mb,
        "ci_diff_low": mv - mb - 0.05,
        "ci_diff_high": mv - mb + 0.05,
        "pct_change": 100 * (mv - mb) / mb,
        "t_pvalue": p / 2,
        "wilcoxon_pvalue": p / 3,
        "p_corrected": p,
        "cohens_dz": 0.8,
        "verdict": verdict,
    }


def summary(overall="supported", **extra):
    s = {
        "attncmp_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "store": {
            "paths": ["a.h5"],
            "n_planned": 42,
            "split": "test",
            "selection_seed": 7,
            "sites": {
                "atom_to_text": {
                    "query_axis": "nodes",
                    "key_axis": "tokens",
                    "n_layers": 1,
                    "n_heads": 4,
                }
            },
        },
        "provenance": {
            "full": {"checkpoint": "/c/full.pt", "checkpoint_sha256": "ab" * 32},
            "no_middle": {"checkpoint": "/c/nm.pt", "checkpoint_sha256": "cd" * 32},
        },
        "baseline": "full",
        "variants": ["no_middle"],
        "n_samples": 42,
        "is_partial": False,
        "selection": {"site": "atom_to_text", "layer": 0, "head": -1, "head_kind": "head-mean"},
        "options": {"threshold": 0.1, "exclude_special": True, "example_strategy": "divergent"},
        "statistics": {
            "correction": "holm",
            "alpha": 0.05,
            "n_boot": 2000,
            "seed": 0,
            "primary_test": "wilcoxon",
            "head_matching": "sorted",
            "ci_method": "t",
            "ci_method_name": "paired t interval",
            "hypothesis_layers": [0],
            "confirmatory_metrics": ["entropy", "max_weight", "perplexity", "gini"],
            "family_size": 4,
            "families": {
                "confirmatory": {"kind": "confirmatory", "size": 4, "n_significant": 3},
                "secondary": {"kind": "exploratory", "size": 6, "n_significant": 1},
                "per-head": {"kind": "exploratory", "size": 20, "n_significant": 0},
            },
        },
        "verdict": {
            "overall": overall,
            "explanation": "Engine explanation.",
            "per_metric": {
                "entropy": "expected direction, significant",
                "max_weight": "expected direction, significant",
                "perplexity": "not significant",
                "gini": "significant, opposite direction",
            },
            "family_size": 4,
            "n": 42,
            "min_corrected_p": 1e-12,
            "n_needed": 8,
            "detectable_dz": 0.61,
        },
        "main_results": [
            _row("entropy", 2.0, 2.3, 0.0012, "expected direction, significant"),
            _row("max_weight", 0.40, 0.33, 0.004, "expected direction, significant"),
            _row("perplexity", 8.0, 8.8, 0.2, "not significant"),
            _row("gini", 0.60, 0.50, 0.03, "expected direction, significant"),
        ],
        "secondary_results": [
            _row("effective_tokens", 2.5, 2.4, 0.5, "not significant", family="secondary"),
        ],
        "prediction": {
            "per_model": {
                "full": {"n": 42, "mae": 0.255, "rmse": 0.31},
                "no_middle": {"n": 42, "mae": 0.274, "rmse": 0.35},
            },
            "differences": [
                {
                    "variant": "no_middle",
                    "mae_diff": 0.019,
                    "mae_diff_ci_low": 0.002,
                    "mae_diff_ci_high": 0.037,
                }
            ],
            "naive_mae": 0.912,
            "naive_method": "leave-one-out mean of the analysed targets",
        },
        "figures": {
            "attention_statistics_comparison": ["attention_statistics_comparison.png"],
            "mae_comparison": ["mae_comparison.png"],
        },
        "examples": [
            {
                "index": 1,
                "sample_id": "FS0001",
                "file": "attention_heatmap_example_1.png",
                "jsd": 0.2,
            }
        ],
        "warnings": [],
        "diagnostics": {"messages": [], "identical_rows": {}},
    }
    s.update(extra)
    return s


def test_both_languages_have_every_key():
    assert set(STRINGS["en"]) == set(STRINGS["zh"])
    prose = [
        k
        for k, v in STRINGS["zh"].items()
        if len(v) > 12 and "{metric}" not in v and not k.endswith("header")
    ]
    assert all(CJK.search(STRINGS["zh"][k]) for k in prose), [
        k for k in prose if not CJK.search(STRINGS["zh"][k])
    ]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_numbers_filled_in_and_no_placeholders(lang):
    text = render_report(summary(), lang=lang)
    assert "{" not in text and "}" not in text
    for pct in ("+15.0%", "-17.5%", "-4.0%", "-16.7%", "+10.0%"):
        assert pct in text
    for num in ("2.000", "2.300", "0.255", "0.274", "0.0190", "0.0020", "0.0370", "0.0012"):
        assert num in text, num
    assert "0.912" in text  # the naive-baseline MAE beside the models'
    assert "0.61" in text  # the detectable effect of the actual test and correction
    assert "paired t interval" in text
    assert "n = 42" in text
    assert "![" in text and "(attention_statistics_comparison.png)" in text
    assert "(attention_heatmap_example_1.png)" in text
    if lang == "zh":
        para = text.split("## 结果段落草稿")[1]
        assert len(CJK.findall(para)) > 100  # real Chinese prose, not English with a header
        assert "注意力熵更高" in para and "+15.0%" in para


@pytest.mark.parametrize(
    "overall, en, zh",
    [
        ("supported", "scenario 1, hypothesis supported", "情形 1，假设成立"),
        ("partly supported", "between scenarios 1 and 2", "介于情形 1 与情形 2 之间"),
        ("not supported", "scenario 2, no significant difference", "情形 2，无显著差异"),
        ("contrary", "scenario 3, opposite direction", "情形 3，方向相反"),
        ("mixed", "Outcome: mixed", "结果：不一致"),
        ("inconclusive (too few samples)", "inconclusive (too few samples)", "样本太少"),
    ],
)
def test_verdict_uses_the_three_scenarios(overall, en, zh):
    assert en in render_report(summary(overall), lang="en")
    assert zh in render_report(summary(overall), lang="zh")


def test_caveats_partial_training_identical_degenerate():
    s = summary(
        is_partial=True,
        warnings=[
            {"kind": "partial_store", "n": 42, "n_planned": 100},
            {"kind": "training_samples", "counts": {"full": 5}},
            {"kind": "degenerate_site", "site": "pool", "reason": "key length 1"},
            {"kind": "identical_rows", "model": "no_middle", "n_samples": 42, "n_identical": 42},
            {"kind": "invalid_attention", "n": 2},
        ],
    )
    s["store"]["n_planned"] = 100
    en = render_report(s, lang="en")
    assert "Partial store" in en and "42 of the 100" in en
    assert "Training samples" in en and "full: 5" in en
    assert "Degenerate site `pool`" in en and "key length 1" in en
    assert "42 of 42 samples have every node attending identically" in en
    assert "Invalid attention" in en
    zh = render_report(s, lang="zh")
    assert "存储文件尚不完整" in zh and "训练样本" in zh and "退化位点 `pool`" in zh
    assert "Multiple comparisons" in en and "20 tests" in en  # family size stated


def test_degenerate_reasons_come_from_the_reason_code_not_the_english_text():
    # the engine's English wording may change; the report translates the stable code
    s = summary(
        warnings=[
            {
                "kind": "degenerate_site",
                "site": "pool",
                "reason": "ENGINE WORDING A",
                "reason_code": "key_len_1",
            },
            {
                "kind": "degenerate_site",
                "site": "flat",
                "reason": "ENGINE WORDING B",
                "reason_code": "uniform",
            },
        ],
    )
    s["diagnostics"]["degenerate_sites"] = {"atom_to_text": "ENGINE WORDING C"}
    s["diagnostics"]["degenerate_codes"] = {"atom_to_text": "identical_rows"}
    zh = render_report(s, lang="zh")
    assert "ENGINE WORDING" not in zh
    assert STRINGS["zh"]["reason_key_len_1"] in zh and STRINGS["zh"]["reason_uniform"] in zh
    assert f"主要位点 `atom_to_text` 是退化的（{STRINGS['zh']['reason_identical_rows']}）" in zh
    en = render_report(s, lang="en")
    assert "ENGINE WORDING" not in en
    assert "Degenerate site `pool`:** key length 1 in every sample" in en
    assert "Degenerate site `flat`:** every row is uniform over its keys" in en
    # without a (known) code, e.g. an older summary, the engine's text is shown verbatim
    s["warnings"][0]["reason_code"] = ""
    assert "ENGINE WORDING A" in render_report(s, lang="zh")


@pytest.mark.parametrize(
    "lang, words",
    [
        ("en", ["not a measure of concentration", "*fewer*", "perplexity exp(H)", "0.1"]),
        ("zh", ["不再衡量集中程度", "*更少*", "exp(H)", "0.1"]),
    ],
)
def test_caveats_say_effective_tokens_is_not_monotone(lang, words):
    text = render_report(summary(), lang=lang)
    caveats = text.split("## " + STRINGS[lang]["h_caveats"])[1].split("\n## ")[0]
    for w in words:
        assert w in caveats, w


def test_families_small_n_gold_chance_and_threshold_notice():
    s = summary(
        "inconclusive (too few samples)",
        n_samples=5,
        gold_vs_chance=[
            {
                **_row("gold_mass", 0.05, 0.31, 0.001, "expected direction, significant"),
                "baseline": "chance",
                "variant": "full",
            }
        ],
        warnings=[
            {
                "kind": "threshold_uninformative",
                "message": "threshold_uninformative: the effective-token threshold 0.1 is above "
                "every weight; a threshold near 0.012 would be informative",
            },
            {"kind": "uncalibrated_heads", "message": "head_matching='hungarian'"},
        ],
    )
    s["verdict"].update(min_corrected_p=0.25, n_needed=8)
    for lang in ("en", "zh"):
        text = render_report(s, lang=lang)
        assert "{" not in text and "}" not in text
        assert "0.2500" in text and " 8 " in text  # the attainable p and the samples needed
        assert "0.310" in text and "0.050" in text  # gold mass beside its chance level
        assert "0.012" in text  # the informative threshold suggested
        assert "secondary (6" in text or "secondary（6" in text  # exploratory families listed
        assert "--head-matching sorted" in text
    en = render_report(s, lang="en")
    assert "not evidence of no difference" in en and "scenario 2" not in en.split("Outcome")[1]


def test_report_is_the_concatenation_of_its_sections():
    from attncmp.analyze.report import SECTIONS, Ctx

    s = summary()
    parts = ["\n".join(section(Ctx(s, "en"))) for section in SECTIONS]
    assert render_report(s, lang="en") == "\n".join(p for p in parts if p)
    assert len(SECTIONS) >= 12
