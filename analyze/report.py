"""``report.md``: what was compared, the main table, the verdict, caveats, figures and a drafted
results paragraph with the measured numbers filled in, in English or Chinese (``lang="zh"``).

Everything comes from the analysis summary (:func:`analyze.outputs.build_summary`, also written as
``summary.json``), so a report can be re-rendered from the cache without the store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from . import registry as REG
from .figures import fmt_p
from .i18n import FILES_ZH, text

__all__ = ["render_report"]

_VERDICT_KEYS = {
    "expected direction, significant": "v_expected_sig",
    "not significant": "v_not_sig",
    "significant, opposite direction": "v_opposite_sig",
    "significant, no expected direction": "v_two_sided_sig",
    "mixed": "v_mixed",
}
_OVERALL_KEYS = {
    "supported": ("verdict_supported", "para_supported"),
    "partly supported": ("verdict_partly", "para_partly"),
    "not supported": ("verdict_not", "para_not"),
    "contrary": ("verdict_contrary", "para_contrary"),
    "mixed": ("verdict_mixed", "para_mixed"),
    "inconclusive (too few samples)": ("verdict_inconclusive", "para_inconclusive"),
}
#: headline table rows: the confirmatory metrics, then the original effective-token count
TABLE_METRICS = (*REG.CONFIRMATORY_METRICS, "effective_tokens")
MAIN_METRICS = TABLE_METRICS
_UNITS = {"entropy": " nats"}


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def _pct(x: Any) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return "n/a"
    return f"{float(x):+.1f}%"


def _md(s: Any) -> str:
    """Escape table-breaking characters in data text."""
    return str(s).replace("|", "\\|").replace("\n", " ")


def _metric_name(lang: str, metric: str) -> str:
    key = f"metric_{metric}"
    try:
        return text(lang, key)
    except KeyError:
        return metric.replace("_", " ")


#: the engine's diagnostics ``reason_code`` (``Diagnostics.sites``) -> report text key
REASON_KEYS = {
    "key_len_1": "reason_key_len_1",
    "uniform": "reason_uniform",
    "identical_rows": "reason_identical_rows",
}


def _reason(lang: str, code: Any, reason: Any = "") -> str:
    """The diagnostics reason for ``code`` in the report language; without a known code (an old
    summary, a message from elsewhere) the engine's English ``reason`` verbatim."""
    key = REASON_KEYS.get(str(code or ""))
    return text(lang, key) if key else str(reason or code or "")


def _file_description(lang: str, name: str, default: str) -> str:
    if lang != "zh":
        return default
    stem = name.rsplit(".", 1)[0]
    for key in sorted(FILES_ZH, key=len, reverse=True):
        if stem == key or stem.startswith(key):
            return FILES_ZH[key]
    return default


def _primary_name(lang: str, primary: str) -> str:
    return text(lang, "primary_t") if primary == "t" else text(lang, "primary_wilcoxon")


def _matching_name(lang: str, matching: str) -> str:
    key = {"hungarian": "match_hungarian", "sorted": "match_sorted", "index": "match_index"}
    return text(lang, key[matching]) if matching in key else str(matching)


def _verdict_text(lang: str, v: str | None) -> str:
    if not v:
        return text(lang, "na")
    key = _VERDICT_KEYS.get(v)
    return text(lang, key) if key else str(v)


def render_report(
    summary: Mapping[str, Any], *, stats: pl.DataFrame | None = None, lang: str = "en"
) -> str:
    """The Markdown report for an analysis ``summary``.

    ``summary`` is what :func:`analyze.outputs.build_summary` returns (``summary.json``).
    """
    t = lambda key, **kw: text(lang, key, **kw)  # noqa: E731
    s = summary
    store = s.get("store", {})
    opts = s.get("options", {})
    st = s.get("statistics", {})
    sel = s.get("selection", {})
    b, variants = s["baseline"], list(s["variants"])
    v0 = variants[0] if variants else "?"
    n = s.get("n_samples", 0)
    corr = st.get("correction", "holm")
    corr_name = {"holm": "Holm", "bh": "Benjamini-Hochberg"}.get(corr, corr)
    site = sel.get("site", "")
    site_info = store.get("sites", {}).get(site, {})
    head_mean = sel.get("head", -1) == -1
    where = (
        t("where_mean", layer=sel.get("layer"))
        if head_mean
        else t("where_head", layer=sel.get("layer"), head=sel.get("head"))
    )
    where_short = (
        t("where_short_mean", site=site, layer=sel.get("layer"))
        if head_mean
        else t("where_short_head", site=site, layer=sel.get("layer"), head=sel.get("head"))
    )
    out: list[str] = [f"# {t('title')}", ""]
    out += [t("generated", version=s.get("attncmp_version", "?"), date=s.get("created", "?")), ""]
    if s.get("is_partial"):
        out += [f"> {t('partial', n=n, n_planned=store.get('n_planned', '?'))}", ""]

    # -- what was compared ------------------------------------------------------------------------
    out += [f"## {t('h_compared')}", "", t("models_header"), "|---|---|---|---|"]
    prov = s.get("provenance", {})
    for m in [b, *variants]:
        p = prov.get(m, {}) or {}
        ck = p.get("checkpoint") or p.get("checkpoint_path") or "n/a"
        sha = p.get("checkpoint_sha256") or p.get("sha256") or ""
        role = t("role_baseline") if m == b else t("role_variant")
        out.append(f"| {role} | `{_md(m)}` | `{_md(ck)}` | `{_md(str(sha)[:12])}` |")
    out.append("")
    planned = (
        t("planned", n_planned=store.get("n_planned"))
        if store.get("n_planned") not in (None, n)
        else ""
    )
    out.append(
        t(
            "samples_line",
            n=n,
            split=store.get("split") or "n/a",
            seed=store.get("selection_seed", "n/a"),
            planned=planned,
        )
    )
    out.append(t("store_line", paths=", ".join(f"`{p}`" for p in store.get("paths", []))))
    out.append(
        t(
            "site_line",
            site=site,
            q=site_info.get("query_axis", "?"),
            k=site_info.get("key_axis", "?"),
            layers=site_info.get("n_layers", "?"),
            heads=site_info.get("n_heads", "?"),
            where=where,
        )
    )
    special = t("special_excluded") if opts.get("exclude_special", True) else t("special_included")
    out.append(t("metrics_line", special=special, threshold=opts.get("threshold", 0.1)))
    out.append(
        t(
            "stats_line",
            n_boot=st.get("n_boot"),
            seed=st.get("seed"),
            correction=corr_name,
            family=st.get("family_size"),
            primary=_primary_name(lang, st.get("primary_test", "wilcoxon")),
            matching=_matching_name(lang, st.get("head_matching", "index")),
        )
    )
    out.append("")

    # -- main table --------------------------------------------------------------------------------
    main = [r for r in s.get("main_results", []) if r.get("metric") in MAIN_METRICS]
    main += [
        r
        for r in s.get("secondary_results", [])
        if r.get("metric") == "effective_tokens" and r.get("layer") == sel.get("layer")
    ]
    main.sort(
        key=lambda r: (
            variants.index(r["variant"]) if r.get("variant") in variants else 0,
            MAIN_METRICS.index(r["metric"]),
        )
    )
    out += [f"## {t('h_main')}", "", t("main_intro", where_short=where_short), ""]
    if main:
        hdr = [
            t("col_metric"),
            f"`{_md(b)}`",
            "`{v}`",
            t("col_change"),
            t("col_diff"),
            t("col_pt"),
            t("col_pw"),
            t("col_pc", correction=corr_name),
            t("col_dz"),
            t("col_verdict"),
        ]
        cur = None
        for r in main:
            if r["variant"] != cur:
                cur = r["variant"]
                out += [
                    "| " + " | ".join(h.replace("{v}", _md(cur)) for h in hdr) + " |",
                    "|" + "---|" * len(hdr),
                ]
            out.append(
                "| "
                + " | ".join(
                    [
                        _metric_name(lang, r["metric"]),
                        f"{_f(r['mean_baseline'])} ({_f(r['ci_baseline_low'])}, "
                        f"{_f(r['ci_baseline_high'])})",
                        f"{_f(r['mean_variant'])} ({_f(r['ci_variant_low'])}, "
                        f"{_f(r['ci_variant_high'])})",
                        _pct(r.get("pct_change")),
                        f"{_f(r['mean_diff'], 4)} ({_f(r['ci_diff_low'], 4)}, "
                        f"{_f(r['ci_diff_high'], 4)})",
                        fmt_p(r.get("t_pvalue")),
                        fmt_p(r.get("wilcoxon_pvalue")),
                        fmt_p(r.get("p_corrected")),
                        _f(r.get("cohens_dz"), 2),
                        _verdict_text(lang, r.get("verdict")),
                    ]
                )
                + " |"
            )
        out.append("")
    else:
        out += [t("no_tests"), ""]
    out += _img("attention_statistics_comparison", s, t("fig_stats"))

    # -- verdict -----------------------------------------------------------------------------------
    ver = s.get("verdict", {}) or {}
    overall = str(ver.get("overall", ""))
    vkey, pkey = _OVERALL_KEYS.get(overall, ("verdict_other", None))
    if lang == "en":
        explanation = ver.get("explanation", "")
    else:
        pm = ver.get("per_metric") or {}
        explanation = t(
            "verdict_count",
            n_metrics=len(pm),
            n_exp=sum(1 for v in pm.values() if v == "expected direction, significant"),
            correction=corr_name,
            primary=_primary_name(lang, st.get("primary_test", "wilcoxon")),
            family=st.get("family_size", "?"),
            alpha=st.get("alpha", 0.05),
        )
    out += [
        f"## {t('h_verdict')}",
        "",
        t("scenarios_intro"),
        "",
        t("scenario_1", b=b),
        t("scenario_2"),
        t("scenario_3", b=b, v=v0),
        "",
    ]
    degenerate = (s.get("diagnostics") or {}).get("degenerate_sites") or {}
    codes = (s.get("diagnostics") or {}).get("degenerate_codes") or {}
    if site in degenerate:
        why = _reason(lang, codes.get(site), degenerate[site])
        out += [t("verdict_degenerate", site=site, reason=why), ""]
    out += [t(vkey, explanation=explanation, overall=overall).strip(), ""]
    n_layers = site_info.get("n_layers", 1)
    if (isinstance(n_layers, int) and n_layers > 1) or len(variants) > 1:
        out += [t("verdict_scope", site=site, layer=sel.get("layer")), ""]
    for metric in REG.CONFIRMATORY_METRICS:
        vv = (ver.get("per_metric") or {}).get(metric)
        if vv is not None:
            out.append(
                t(
                    "per_metric_verdict",
                    metric=_metric_name(lang, metric),
                    verdict=_verdict_text(lang, vv),
                )
            )
    out.append("")

    # -- prediction --------------------------------------------------------------------------------
    pred = s.get("prediction")
    if pred:
        out += [f"## {t('h_prediction')}", "", t("pred_header"), "|---|---|---|---|"]
        for m in [b, *variants]:
            r = (pred.get("per_model") or {}).get(m)
            if r:
                out.append(
                    f"| `{_md(m)}` | {r.get('n', '')} | {_f(r.get('mae'))} | {_f(r.get('rmse'))} |"
                )
        out.append("")
        for d in pred.get("differences") or []:
            lo, hi = d.get("ci_low"), d.get("ci_high")
            sig = (
                t("pred_ci_excludes")
                if lo is not None and hi is not None and (lo > 0 or hi < 0)
                else t("pred_ci_includes")
            )
            out.append(
                t(
                    "pred_diff",
                    v=d.get("variant", v0),
                    b=b,
                    diff=_f(d.get("mae_diff"), 4),
                    lo=_f(lo, 4),
                    hi=_f(hi, 4),
                    sig=sig,
                )
            )
        out.append("")
        out += _img("mae_comparison", s, "MAE")

    # -- correlation -------------------------------------------------------------------------------
    cors = s.get("correlations")
    if cors or "attention_vs_error" in s.get("figures", {}):
        out += [f"## {t('h_corr')}", "", t("corr_intro"), ""]
        if cors:
            out += [t("corr_header"), "|---|---|---|---|---|"]
            for r in cors:
                if r.get("metric") not in MAIN_METRICS:
                    continue
                model = f"`{_md(r.get('model'))}`"
                if r.get("kind") not in (None, "per_model"):
                    model = t("corr_delta", m=model)
                out.append(
                    f"| {model} | {_metric_name(lang, r['metric'])} | "
                    f"{_f(r.get('rho'), 2)} ({_f(r.get('ci_low'), 2)}, {_f(r.get('ci_high'), 2)})"
                    f" | {_f(r.get('partial_rho'), 2)} | {fmt_p(r.get('pvalue'))} |"
                )
            out.append("")
        out += _img("attention_vs_error", s, "attention vs |error|")

    # -- per layer / head --------------------------------------------------------------------------
    grids = [k for k in s.get("figures", {}) if k.startswith("per_layer_head_")]
    if grids:
        gs = {
            "n_significant": sum(
                v.get("n_significant", 0) for v in s.get("grid_counts", {}).values()
            ),
            "n_tests": sum(v.get("n_tests", 0) for v in s.get("grid_counts", {}).values()),
        }
        out += [
            f"## {t('h_grid')}",
            "",
            t(
                "grid_text",
                n_sig=gs.get("n_significant", "?"),
                n_tests=gs.get("n_tests", "?"),
                correction=corr_name,
                matching=_matching_name(lang, st.get("head_matching", "index")),
            ),
            "",
        ]
        for g in grids:
            out += _img(g, s, g.replace("_", " "))

    # -- strata ------------------------------------------------------------------------------------
    if "strata_comparison" in s.get("figures", {}):
        out += [f"## {t('h_strata')}", "", t("strata_text"), ""]
        out += _img("strata_comparison", s, "strata")

    # -- node specificity --------------------------------------------------------------------------
    if "node_specificity" in s.get("figures", {}):
        out += [f"## {t('h_spec')}", "", t("spec_text"), ""]
        for m, v in ((s.get("diagnostics") or {}).get("identical_rows") or {}).items():
            out.append(
                t("identical_line", model=f"`{m}`", k=v.get("n_identical"), n=v.get("n_samples"))
            )
        out.append("")
        out += _img("node_specificity", s, "node specificity")

    # -- gold --------------------------------------------------------------------------------------
    if "gold_alignment" in s.get("figures", {}):
        out += [f"## {t('h_gold')}", "", t("gold_text"), ""]
        sec = [
            r
            for r in s.get("secondary_results", [])
            if r.get("metric") in ("gold_mass", "gold_pointing")
        ]
        for r in sec:
            out.append(
                f"- {_metric_name(lang, r['metric'])}: `{_md(b)}` {_f(r['mean_baseline'])}, "
                f"`{_md(r['variant'])}` {_f(r['mean_variant'])} ({_pct(r.get('pct_change'))}), "
                f"p ({corr_name}) = {fmt_p(r.get('p_corrected'))}, n = {r.get('n')}"
            )
        out.append("")
        out += _img("gold_alignment", s, "gold alignment")

    # -- noise floor -------------------------------------------------------------------------------
    if s.get("noise_floor"):
        out += [f"## {t('h_noise')}", "", t("noise_text"), ""]
        out += _table(s["noise_floor"])
        out.append("")

    # -- examples ----------------------------------------------------------------------------------
    ex = s.get("examples") or []
    if ex:
        out += [
            f"## {t('h_examples')}",
            "",
            t("examples_text", strategy=opts.get("example_strategy", "divergent"), b=b, v=v0),
            "",
        ]
        for e in ex:
            jsd = t("example_jsd", jsd=_f(e.get("jsd"))) if e.get("jsd") is not None else ""
            cap = t("example_caption", k=e["index"], sid=e["sample_id"], jsd=jsd)
            out += [f"**{cap}**", "", f"![{cap}]({e['file']})", ""]

    # -- caveats -----------------------------------------------------------------------------------
    out += [f"## {t('h_caveats')}", ""]
    mde = (1.959964 + 0.841621) / math.sqrt(n) if n else float("nan")
    small = t("cav_small") if n < 30 else ""
    out.append(t("cav_sample", n=n, mde=_f(mde, 2)) + small)
    out.append(t("cav_multiple", family=st.get("family_size", "?"), correction=corr_name))
    out.append(t("cav_heads"))
    out.append(t("cav_effective_tokens", threshold=opts.get("threshold", 0.1)))
    for w in s.get("warnings", []):
        k = w.get("kind")
        if k == "partial_store":
            out.append(t("cav_partial", n=w.get("n"), n_planned=w.get("n_planned")))
        elif k == "training_samples":
            counts = ", ".join(f"{m}: {c}" for m, c in (w.get("counts") or {}).items())
            out.append(t("cav_training", counts=counts))
        elif k == "training_split":
            splits = ", ".join(f"{sp}: {c}" for sp, c in (w.get("splits") or {}).items())
            out.append(t("cav_training_split", splits=splits))
        elif k == "degenerate_site":
            why = _reason(lang, w.get("reason_code"), w.get("reason"))
            out.append(t("cav_degenerate", site=w.get("site"), reason=why))
        elif k == "identical_rows":
            out.append(
                t(
                    "cav_identical",
                    model=f"`{w.get('model')}`",
                    k=w.get("n_identical"),
                    n=w.get("n_samples"),
                )
            )
        elif k == "invalid_attention":
            out.append(t("cav_invalid", n=w.get("n")))
        elif k == "skipped":
            out.append(t("cav_skipped", message=w.get("message")))
    degenerate = (s.get("diagnostics") or {}).get("degenerate_sites") or {}
    msgs = [
        m
        for m in (s.get("diagnostics") or {}).get("messages", [])
        if not any(f"'{site}'" in m and "degenerate" in m for site in degenerate)
    ]
    for msg in msgs[:12]:
        out.append(t("cav_diag", message=msg))
    out.append("")

    # -- paragraph ---------------------------------------------------------------------------------
    out += [f"## {t('h_paragraph')}", "", f"*{t('paragraph_note')}*", ""]
    out += [_paragraph(lang, s, main, where, corr_name, pkey), ""]

    # -- files -------------------------------------------------------------------------------------
    files = s.get("files_written") or []
    if files:
        out += [f"## {t('h_files')}", ""]
        for f in files:
            desc = _file_description(lang, f["name"], f["description"])
            out.append(f"- `{f['name']}`: {desc}")
        out.append("")
    return "\n".join(out)


def _img(name: str, s: Mapping[str, Any], alt: str) -> list[str]:
    files = (s.get("figures") or {}).get(name)
    if not files:
        return []
    png = next((f for f in files if f.endswith(".png")), files[0])
    return [f"![{alt}]({png})", ""]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                _f(r.get(c)) if isinstance(r.get(c), float) else _md(r.get(c)) for c in cols
            )
            + " |"
        )
    return out


def _paragraph(
    lang: str, s: Mapping[str, Any], main: list[dict], where: str, corr_name: str, pkey: str | None
) -> str:
    t = lambda key, **kw: text(lang, key, **kw)  # noqa: E731
    store = s.get("store", {})
    st = s.get("statistics", {})
    opts = s.get("options", {})
    b = s["baseline"]
    parts = []
    for v in s["variants"]:
        rows = {r["metric"]: r for r in main if r["variant"] == v}
        parts.append(
            t(
                "para_open",
                n=s.get("n_samples"),
                split=store.get("split") or "n/a",
                seed=store.get("selection_seed", "n/a"),
                site=s.get("selection", {}).get("site"),
                where=t("where_para", layer=s.get("selection", {}).get("layer")),
                b=f"`{b}`",
                v=f"`{v}`",
            )
        )
        items = []
        for metric in MAIN_METRICS:
            r = rows.get(metric)
            if r is None:
                continue
            d = r.get("mean_diff")
            dirk = (
                "dir_same"
                if d is None or not math.isfinite(float(d)) or d == 0
                else ("dir_higher" if d > 0 else "dir_lower")
            )
            what = t(f"what_{metric}", threshold=opts.get("threshold", 0.1))
            items.append(
                t(
                    "para_item",
                    dir=t(dirk),
                    what=what,
                    pct=_pct(r.get("pct_change")),
                    mb=_f(r.get("mean_baseline")),
                    mv=_f(r.get("mean_variant")),
                    unit=_UNITS.get(metric, "")
                    if lang == "en"
                    else (" nats" if metric == "entropy" else ""),
                    p=fmt_p(r.get("p_corrected"))
                    + ("" if r.get("verdict") != "not significant" else t("para_ns")),
                )
            )
        if items:
            joined = (
                t("para_sep").join(items[:-1]) + t("para_and") + items[-1]
                if len(items) > 1
                else items[0]
            )
            parts.append(t("para_metrics", b=f"`{b}`", v=f"`{v}`", items=joined))
            parts.append(
                t(
                    "para_pnote",
                    primary=_primary_name(lang, st.get("primary_test", "wilcoxon")),
                    correction=corr_name,
                    family=st.get("family_size", "?"),
                )
            )
        if pkey:
            parts.append(t(pkey, b=f"`{b}`", v=f"`{v}`"))
        pred = s.get("prediction") or {}
        pm = pred.get("per_model") or {}
        diff = next((d for d in pred.get("differences") or [] if d.get("variant") == v), None)
        if b in pm and v in pm:
            parts.append(
                t(
                    "para_mae",
                    b=f"`{b}`",
                    v=f"`{v}`",
                    mae_b=_f(pm[b].get("mae")),
                    mae_v=_f(pm[v].get("mae")),
                    diff=_f(diff.get("mae_diff"), 4) if diff else "n/a",
                    lo=_f(diff.get("ci_low"), 4) if diff else "n/a",
                    hi=_f(diff.get("ci_high"), 4) if diff else "n/a",
                )
            )
    sep = " " if lang == "en" else ""
    return sep.join(parts)
