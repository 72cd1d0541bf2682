"""``summary.json``: the machine-readable record of one analysis (documented in the README,
section analyze). :func:`build_summary` builds it from the objects that computed each part; the
report (:mod:`analyze.report`) and the command line read it.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from attncmp.store import StoreError
from attncmp.store.schema import tool_version

from . import registry as REG

__all__ = [
    "SUMMARY_FORMAT",
    "SUMMARY_VERSION",
    "OUTPUT_FILES",
    "build_summary",
    "describe_file",
    "jsonable",
    "store_facts",
]

SUMMARY_FORMAT = "attncmp-analysis-summary"
SUMMARY_VERSION = 2
#: what reading an optional part of a store can raise (the part is then left out of the facts)
_FACT_ERRORS = (StoreError, KeyError, OSError)
CI_METHOD_NAMES = {
    "t": "paired t interval",
    "BCa": "paired bootstrap BCa",
    "percentile": "paired bootstrap percentile",
}

#: every file an analysis may write, with its meaning (also in summary.json under "files")
OUTPUT_FILES: dict[str, str] = {
    "attention_statistics_comparison.png": "the four original metrics (entropy, max weight, "
    "effective tokens, Gini), per-sample paired values of each model, mean with 95% CI, % change "
    "and corrected p-value per panel (headline site, last layer, head-mean)",
    "attention_statistics.csv": "one row per metric (and variant): each model's mean, change %, "
    "n, CIs, mean difference with bootstrap CI, t-test / Wilcoxon / corrected p-values, effect "
    "sizes, verdict (headline selection)",
    "attention_heatmap_example_{k}.png": "node x token attention of the baseline and a variant "
    "with one shared colour scale, and their difference, for example sample k",
    "attention_text_example_{k}.png": "the text view of example sample k: its text as a "
    "wrapped paragraph, each token's background its attention (both models on one scale, and "
    "the difference), for the mean over nodes and for node groups (smallest first) as far as "
    "a page allows; subword pieces joined as they read, gold tokens underlined",
    "per_sample_metrics.parquet": "every metric per sample x model x site x layer x head "
    "(head -1 = head-mean); the cache all figures are drawn from",
    "per_sample_metrics.csv": "the same table as CSV",
    "per_group_metrics.csv": "metrics per sample x model x node group (nodes with one label, e.g. "
    "all O atoms; group_size = number of nodes; singletons kept): entropy, max weight, effective "
    "tokens, Gini, gold mass, label_mass (attention on the tokens that name the label, e.g. O -> "
    "O2-) and JSD to the baseline; headline site, last layer, head-mean",
    "per_layer_head.csv": "mean of every metric per site x layer x head x model, with n",
    "significance.csv": "every paired test of the family (metric x site x layer x head x variant) "
    "with means, CIs, % change, p-values, corrected p-values, effect sizes and verdicts",
    "prediction.csv": "MAE and RMSE per model, and the MAE difference with its paired bootstrap CI",
    "attention_error_correlation.csv": "Spearman correlation of per-sample attention metrics with "
    "absolute error, with CI and partial correlation controlling for the token count (headline "
    "site and layer, head-mean)",
    "strata.csv": "the paired comparison within quantile bins of node count, token count, target "
    "and baseline error",
    "noise_floor.csv": "seed-to-seed differences within replicate groups (with --group)",
    "summary.json": "machine-readable summary: store facts, options, verdict, main numbers, "
    "warnings, file list",
    "report.md": "the report: what was compared, main table, verdict, caveats, figures, drafted "
    "results paragraph",
    "explorer.html": "one offline HTML file to browse every sample: both models' attention as "
    "matrix and text, per-sample metric differences, the report (written last, after summary.json)",
    "per_layer_head_{site}.png": "% change per layer and head (and head-mean) for each metric",
    "attention_vs_error.png": "per-sample attention metrics vs absolute error with Spearman rho",
    "strata_comparison.png": "paired differences within quantile bins",
    "node_specificity.png": "node specificity per sample and the share of samples whose nodes "
    "all attend identically",
    "gold_alignment.png": "gold mass and gold pointing accuracy (stores with gold masks)",
    "mae_comparison.png": "MAE / RMSE per model, per-sample |error|, MAE difference with CI",
}


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def store_facts(store) -> dict[str, Any]:
    cfg = {}
    try:
        cfg = store.config
    except _FACT_ERRORS:  # a store without this part (older or partial): left out
        cfg = {}
    prov = {}
    for m in store.models:
        try:
            prov[m] = store.provenance(m)
        except _FACT_ERRORS:
            prov[m] = {}
    sites = {
        name: {
            "query_axis": s.query_axis,
            "key_axis": s.key_axis,
            "n_layers": s.n_layers,
            "n_heads": s.n_heads,
            "description": s.description,
        }
        for name, s in store.sites().items()
    }
    invalid = 0
    try:
        if "invalid_attention" in store.meta_columns():
            invalid = sum(1 for v in store.meta_column("invalid_attention") if str(v).strip())
    except _FACT_ERRORS:
        invalid = 0
    splits = {}
    try:
        for s in store.split_column():
            splits[s] = splits.get(s, 0) + 1
    except _FACT_ERRORS:
        splits = {}
    return {
        "paths": [str(p) for p in store.paths],
        "n_samples": store.n_samples,
        "n_planned": store.n_planned,
        "is_partial": bool(store.is_partial),
        "split": store.split,
        "sample_splits": splits,
        "selection_seed": store.selection_seed,
        "schema_version": store.schema_version,
        "models": list(store.models),
        "baseline": store.baseline,
        "sites": sites,
        "has_gold": bool(store.has_gold),
        "targets": list(store.targets),
        "provenance": prov,
        "config": cfg,
        "n_invalid_attention": invalid,
    }


def build_summary(
    *,
    state: dict[str, Any],
    options,
    tables,
    statistics,
    examples,
    figures: dict[str, list[Path]],
    target: str,
    written=(),
) -> dict[str, Any]:
    """The documented ``summary.json`` (see README, section analyze) from an analysis'
    ``statistics`` (:class:`analyze.pipeline.Statistics`: comparison, selection, prediction,
    correlations, strata, noise floor, notes). ``main_results`` are the tests of the
    confirmatory family, the one the verdict, the headline table, stdout and
    ``attention_statistics.csv`` come from."""
    comparison, selection, notes = statistics.comparison, statistics.selection, statistics.notes
    prediction, correlations = statistics.prediction, statistics.correlations
    strata, noise = statistics.strata, statistics.noise
    facts = state["store"]
    baseline, variants = state["baseline"], list(state["variants"])
    identical = _identical_rows(tables, selection, [baseline, *variants])
    diag = tables.diagnostics
    degenerate, codes = diag.degenerate_sites(), diag.degenerate_codes()
    warnings = _warnings(facts, tables, comparison, identical, degenerate, variants, notes, codes)
    return {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "attncmp_version": tool_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "store": {k: v for k, v in facts.items() if k not in ("provenance", "config")},
        "store_config": facts.get("config", {}),
        "provenance": facts.get("provenance", {}),
        "models": [baseline, *variants],
        "baseline": baseline,
        "variants": variants,
        "n_samples": tables.n_samples,
        "is_partial": bool(facts.get("is_partial")),
        "selection": selection,
        "options": options.to_dict(),
        "statistics": _statistics(comparison),
        "verdict": _verdict(comparison),
        "main_results": [_test_dict(t) for t in comparison.confirmatory.tests],
        "secondary_results": [_test_dict(t) for t in comparison.families["secondary"].tests],
        "gold_vs_chance": [_test_dict(t) for t in comparison.families["gold-vs-chance"].tests],
        "grid_counts": {
            name: {"n_tests": f.size, "n_significant": f.n_significant}
            for name, f in comparison.families.items()
            if name in ("per-layer", "per-head")
        },
        "prediction": _prediction(prediction, target),
        "correlations": None if correlations is None else correlations.to_dicts(),
        "strata": None if strata is None else strata.to_dicts(),
        "noise_floor": None if noise is None else _noise_summary(noise, selection["layer"]),
        "diagnostics": {
            "messages": list(getattr(diag, "messages", []) or []),
            "degenerate_sites": degenerate,
            "degenerate_codes": codes,
            "identical_rows": identical,
        },
        "notices": list(comparison.notices),
        "warnings": warnings,
        "examples": _examples(examples, options.formats[0]),
        "figures": {k: [p.name for p in v] for k, v in figures.items()},
        "files_written": [
            {"name": n, "description": describe_file(n)}
            for n in dict.fromkeys([*(p.name for p in written), "summary.json", "report.md"])
        ],
    }


def restamp(summary: dict[str, Any], options) -> dict[str, Any]:
    """A kept summary (a re-plot whose statistics did not change) with this run's options (the
    report language) and creation time; every result in it stays as computed."""
    out = dict(summary)
    out["options"] = jsonable(options.to_dict())
    out["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out["attncmp_version"] = tool_version()
    return out


def _test_dict(t) -> dict[str, Any]:
    """A test's flat fields (no resampling distributions: they do not belong in JSON)."""
    return jsonable(t.as_dict())


def _statistics(comparison) -> dict[str, Any]:
    return {
        "correction": comparison.correction,
        "alpha": comparison.alpha,
        "n_boot": comparison.n_boot,
        "seed": comparison.seed,
        "primary_test": comparison.primary,
        "head_matching": comparison.head_matching,
        "ci_method": comparison.ci_method,
        "ci_method_name": CI_METHOD_NAMES[comparison.ci_method],
        "hypothesis_layers": list(comparison.hypothesis_layers),
        "confirmatory_metrics": list(comparison.main_metrics()),
        "family_size": comparison.confirmatory.size,
        "families": {k: f.summary() for k, f in comparison.families.items()},
        "directions": dict(comparison.directions),
    }


def _verdict(comparison) -> dict[str, Any]:
    v = comparison.verdict
    return {
        "overall": v.overall,
        "per_metric": dict(v.per_metric),
        "per_variant": dict(v.per_variant),
        "explanation": v.explanation,
        "family": "confirmatory",
        "family_size": v.family_size,
        "n": v.n,
        "min_corrected_p": v.min_corrected_p,
        "n_needed": v.n_needed,
        "detectable_dz": v.detectable_dz,
    }


def _prediction(prediction, target: str) -> dict[str, Any] | None:
    if prediction is None:
        return None
    return {
        "target": getattr(prediction, "target", target),
        "per_model": {r["model"]: r for r in prediction.per_model.iter_rows(named=True)},
        "differences": prediction.differences.to_dicts(),
        "naive_mae": getattr(prediction, "naive_mae", None),
        "naive_method": getattr(prediction, "naive_method", None),
        "n_boot": prediction.n_boot,
        "seed": prediction.seed,
    }


def _identical_rows(tables, selection, models) -> dict[str, dict[str, int]]:
    ps = tables.per_sample
    if "identical_rows" not in ps.columns or ps.height == 0:
        return {}
    sub = ps.filter(
        (pl.col("site") == selection["site"])
        & (pl.col("layer") == selection["layer"])
        & (pl.col("head") == selection["head"])
    )
    out = {}
    for m in models:
        x = sub.filter(pl.col("model") == m)
        if x.height:
            out[m] = {
                "n_samples": int(x.height),
                "n_identical": int(x["identical_rows"].cast(pl.Int64).fill_null(0).sum()),
            }
    return out


def _examples(examples, fmt: str) -> list[dict[str, Any]]:
    return [
        {
            "index": k,
            "sample_id": e.sample_id,
            "file": f"attention_heatmap_example_{k}.{fmt}",
            "site": e.site,
            "layer": e.layer,
            "head": "head-mean" if e.head is None else e.head,
            "jsd": e.jsd,
            "metrics": e.metrics,
        }
        for k, e in enumerate(examples, 1)
    ]


def describe_file(name: str) -> str:
    """One line on what an output file holds (patterns of :data:`OUTPUT_FILES`)."""
    if name in OUTPUT_FILES:
        return OUTPUT_FILES[name]
    stem, _, ext = name.rpartition(".")
    for pat, desc in OUTPUT_FILES.items():
        rx = re.escape(pat).replace(r"\{k\}", r"\d+").replace(r"\{site\}", r".+")
        if re.fullmatch(rx, name) or re.fullmatch(rx, stem + ".png"):
            return desc
    if ext in ("png", "pdf", "svg"):
        return "figure"
    return "table"


def _noise_summary(noise, layer: int) -> Any:
    """The noise-floor rows (within- and between-group comparisons) of the headline layer, main
    metrics first."""
    f = noise.frame
    if f is None or f.height == 0:
        return []
    keep = [
        c
        for c in (
            "metric",
            "comparison",
            "group_a",
            "group_b",
            "model_a",
            "model_b",
            "n",
            "mean_diff",
            "mean_abs_diff",
            "layer",
        )
        if c in f.columns
    ]
    f = f.select(keep)
    if "layer" in f.columns:
        f = f.filter(pl.col("layer") == layer)
    order = {m: i for i, m in enumerate([*REG.ORIGINAL_METRICS, "perplexity", "jsd", "tv"])}
    if "metric" in f.columns:
        f = (
            f.with_columns(
                pl.col("metric")
                .replace_strict(order, default=99, return_dtype=pl.Int64)
                .alias("_o")
            )
            .sort("_o")
            .drop("_o")
        )
    return f.to_dicts()


def _warnings(
    facts, tables, comparison, identical, degenerate, variants, notes, codes=None
) -> list[dict]:
    """Caveats as ``{"kind", "message"}`` (kinds: partial_store, training_samples, small_sample,
    degenerate_site, identical_rows, invalid_attention, skipped). A degenerate site carries the
    engine's English ``reason`` and its ``reason_code`` (what the report translates)."""
    out: list[dict] = []
    if facts.get("is_partial"):
        out.append(
            {"kind": "partial_store", "n": facts["n_samples"], "n_planned": facts["n_planned"]}
        )
    cfg = facts.get("config") or {}
    tr = cfg.get("training_samples_selected") or {}
    if isinstance(tr, dict) and any(int(v or 0) > 0 for v in tr.values()):
        out.append({"kind": "training_samples", "counts": {k: int(v) for k, v in tr.items()}})
    splits = facts.get("sample_splits") or {}
    if any(str(s).lower() in ("train", "training") for s in splits):
        out.append({"kind": "training_split", "splits": splits})
    n = int(tables.n_samples)
    if n < 30:
        out.append({"kind": "small_sample", "n": n})
    for s, why in (degenerate or {}).items():
        out.append(
            {
                "kind": "degenerate_site",
                "site": s,
                "reason": why,
                "reason_code": (codes or {}).get(s, ""),
            }
        )
    for m, v in (identical or {}).items():
        if v["n_identical"] > 0:
            out.append({"kind": "identical_rows", "model": m, **v})
    if facts.get("n_invalid_attention"):
        out.append({"kind": "invalid_attention", "n": facts["n_invalid_attention"]})
    for s in getattr(comparison, "skipped", []) or []:
        if any(f"'{site}'" in str(s) for site in (degenerate or {})):
            continue  # already reported as a degenerate site
        out.append({"kind": "skipped", "message": str(s)})
    for s in notes:
        out.append({"kind": "skipped", "message": s})
    for note in getattr(comparison, "notices", []) or []:
        out.append(dict(note))
    if comparison.head_matching == "hungarian" and comparison.families["per-head"].size:
        out.append({"kind": "uncalibrated_heads", "message": "head_matching='hungarian'"})
    return out
