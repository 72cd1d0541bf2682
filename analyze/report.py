"""``report.md``: what was compared, the main table, the verdict, caveats, figures and a drafted
results paragraph with the measured numbers filled in, in English or Chinese (``lang="zh"``).

Everything comes from the analysis summary (:func:`analyze.summary.build_summary`, also written as
``summary.json``), so a report can be re-rendered from the cache without the store. The report is
the concatenation of one function per section (:data:`SECTIONS`); each takes a :class:`Ctx` and
returns its Markdown lines (empty when the section does not apply).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import registry as REG
from .figures import fmt_p
from .i18n import FILES_ZH, metric_label, text

__all__ = ["render_report", "SECTIONS"]

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
#: the engine's diagnostics ``reason_code`` (``Diagnostics.sites``) -> report text key
REASON_KEYS = {
    "key_len_1": "reason_key_len_1",
    "uniform": "reason_uniform",
    "identical_rows": "reason_identical_rows",
}
_MATCHING_KEYS = {
    "hungarian": "match_hungarian",
    "sorted": "match_sorted",
    "index": "match_index",
    "crossfit": "match_crossfit",
}


# ----------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------
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
        cells = [_f(r.get(c)) if isinstance(r.get(c), float) else _md(r.get(c)) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    return out


# ----------------------------------------------------------------------------------------------
# context shared by the sections
# ----------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What every section needs: the summary, the language and a few derived values."""

    s: Mapping[str, Any]
    lang: str

    def t(self, key: str, **kw: Any) -> str:
        return text(self.lang, key, **kw)

    @property
    def b(self) -> str:
        return self.s["baseline"]

    @property
    def variants(self) -> list[str]:
        return list(self.s["variants"])

    @property
    def v0(self) -> str:
        return self.variants[0] if self.variants else "?"

    @property
    def n(self) -> int:
        return self.s.get("n_samples", 0)

    @property
    def st(self) -> Mapping[str, Any]:
        return self.s.get("statistics", {})

    @property
    def opts(self) -> Mapping[str, Any]:
        return self.s.get("options", {})

    @property
    def sel(self) -> Mapping[str, Any]:
        return self.s.get("selection", {})

    @property
    def site(self) -> str:
        return self.sel.get("site", "")

    @property
    def site_info(self) -> Mapping[str, Any]:
        return self.s.get("store", {}).get("sites", {}).get(self.site, {})

    @property
    def layers(self) -> str:
        return ", ".join(str(x) for x in self.st.get("hypothesis_layers", [self.sel.get("layer")]))

    @property
    def corr_name(self) -> str:
        c = self.st.get("correction", "holm")
        return {"holm": "Holm", "bh": "Benjamini-Hochberg"}.get(c, c)

    @property
    def primary(self) -> str:
        return (
            self.t("primary_t")
            if self.st.get("primary_test") == "t"
            else self.t("primary_wilcoxon")
        )

    @property
    def matching(self) -> str:
        m = self.st.get("head_matching", "sorted")
        return self.t(_MATCHING_KEYS[m]) if m in _MATCHING_KEYS else str(m)

    def metric_name(self, metric: str) -> str:
        return metric_label(self.lang, metric)

    def verdict_text(self, v: str | None) -> str:
        if not v:
            return self.t("na")
        key = _VERDICT_KEYS.get(v)
        return self.t(key) if key else str(v)

    def reason(self, code: Any, reason: Any = "") -> str:
        """The diagnostics reason for ``code`` in the report language; without a known code
        the engine's English ``reason`` verbatim."""
        key = REASON_KEYS.get(str(code or ""))
        return self.t(key) if key else str(reason or code or "")

    def table_rows(self) -> list[dict[str, Any]]:
        """The headline table: the confirmatory tests, then effective tokens (secondary
        family) at the same cells, by variant, layer and :data:`TABLE_METRICS` order."""
        rows = [r for r in self.s.get("main_results", []) if r.get("metric") in TABLE_METRICS]
        rows += [
            r for r in self.s.get("secondary_results", []) if r.get("metric") == "effective_tokens"
        ]
        vs = self.variants
        return sorted(
            rows,
            key=lambda r: (
                vs.index(r["variant"]) if r.get("variant") in vs else 0,
                r.get("layer", 0),
                TABLE_METRICS.index(r["metric"]),
            ),
        )


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
def section_title(c: Ctx) -> list[str]:
    s = c.s
    out = [f"# {c.t('title')}", ""]
    out += [c.t("generated", version=s.get("attncmp_version", "?"), date=s.get("created", "?"))]
    out.append("")
    if s.get("is_partial"):
        n_planned = s.get("store", {}).get("n_planned", "?")
        out += [f"> {c.t('partial', n=c.n, n_planned=n_planned)}", ""]
    return out


def section_compared(c: Ctx) -> list[str]:
    s, store = c.s, c.s.get("store", {})
    out = [f"## {c.t('h_compared')}", "", c.t("models_header"), "|---|---|---|---|"]
    prov = s.get("provenance", {})
    for m in [c.b, *c.variants]:
        p = prov.get(m, {}) or {}
        ck = p.get("checkpoint") or p.get("checkpoint_path") or "n/a"
        sha = p.get("checkpoint_sha256") or p.get("sha256") or ""
        role = c.t("role_baseline") if m == c.b else c.t("role_variant")
        out.append(f"| {role} | `{_md(m)}` | `{_md(ck)}` | `{_md(str(sha)[:12])}` |")
    out.append("")
    planned = (
        c.t("planned", n_planned=store.get("n_planned"))
        if store.get("n_planned") not in (None, c.n)
        else ""
    )
    out.append(
        c.t(
            "samples_line",
            n=c.n,
            split=store.get("split") or "n/a",
            seed=store.get("selection_seed", "n/a"),
            planned=planned,
        )
    )
    out.append(c.t("store_line", paths=", ".join(f"`{p}`" for p in store.get("paths", []))))
    info = c.site_info
    out.append(
        c.t(
            "site_line",
            site=c.site,
            q=info.get("query_axis", "?"),
            k=info.get("key_axis", "?"),
            layers=info.get("n_layers", "?"),
            heads=info.get("n_heads", "?"),
            where=c.t("where_mean", layer=c.layers),
        )
    )
    special = (
        c.t("special_excluded") if c.opts.get("exclude_special", True) else c.t("special_included")
    )
    out.append(c.t("metrics_line", special=special, threshold=c.opts.get("threshold", 0.1)))
    out.append(
        c.t(
            "stats_line",
            ci=c.st.get("ci_method_name", c.st.get("ci_method", "")),
            correction=c.corr_name,
            primary=c.primary,
            matching=c.matching,
        )
    )
    out += [_families_line(c), ""]
    return out


def _families_line(c: Ctx) -> str:
    fams = c.st.get("families", {})
    conf = fams.get("confirmatory", {})
    expl = [
        c.t("family_item", name=k, size=f.get("size", 0), n_sig=f.get("n_significant", 0))
        for k, f in fams.items()
        if f.get("kind") == "exploratory" and f.get("size")
    ]
    return c.t(
        "families_line",
        metrics=", ".join(c.st.get("confirmatory_metrics", [])),
        site=c.site,
        layers=c.layers,
        n_variants=len(c.variants),
        size=conf.get("size", c.st.get("family_size", "?")),
        exploratory="; ".join(expl) or "-",
    )


def section_main(c: Ctx) -> list[str]:
    rows = c.table_rows()
    where = c.t("where_short_mean", site=c.site, layer=c.layers)
    out = [f"## {c.t('h_main')}", "", c.t("main_intro", where_short=where), ""]
    if not rows:
        return out + [c.t("no_tests"), ""] + _img("attention_statistics_comparison", c.s, "")
    hdr = [
        c.t("col_metric"),
        f"`{_md(c.b)}`",
        "`{v}`",
        c.t("col_change"),
        c.t("col_diff"),
        c.t("col_pt"),
        c.t("col_pw"),
        c.t("col_pc", correction=c.corr_name),
        c.t("col_dz"),
        c.t("col_family"),
        c.t("col_verdict"),
    ]
    cur = None
    multi_layer = len(c.st.get("hypothesis_layers", [])) > 1
    for r in rows:
        if r["variant"] != cur:
            cur = r["variant"]
            out += [
                "| " + " | ".join(h.replace("{v}", _md(cur)) for h in hdr) + " |",
                "|" + "---|" * len(hdr),
            ]
        name = c.metric_name(r["metric"])
        if multi_layer:
            name += f" (L{r.get('layer')})"
        fam = "fam_confirmatory" if r.get("family") == "confirmatory" else "fam_secondary"
        cells = [
            name,
            f"{_f(r['mean_baseline'])} ({_f(r['ci_baseline_low'])}, {_f(r['ci_baseline_high'])})",
            f"{_f(r['mean_variant'])} ({_f(r['ci_variant_low'])}, {_f(r['ci_variant_high'])})",
            _pct(r.get("pct_change")),
            f"{_f(r['mean_diff'], 4)} ({_f(r['ci_diff_low'], 4)}, {_f(r['ci_diff_high'], 4)})",
            fmt_p(r.get("t_pvalue")),
            fmt_p(r.get("wilcoxon_pvalue")),
            fmt_p(r.get("p_corrected")),
            _f(r.get("cohens_dz"), 2),
            c.t(fam),
            c.verdict_text(r.get("verdict")),
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out + _img("attention_statistics_comparison", c.s, c.t("fig_stats"))


def section_verdict(c: Ctx) -> list[str]:
    ver = c.s.get("verdict", {}) or {}
    overall = str(ver.get("overall", ""))
    vkey, _ = _OVERALL_KEYS.get(overall, ("verdict_other", None))
    if c.lang == "en":
        explanation = ver.get("explanation", "")
    else:
        pm = ver.get("per_metric") or {}
        explanation = c.t(
            "verdict_count",
            n_metrics=len(pm),
            n_exp=sum(1 for v in pm.values() if v == "expected direction, significant"),
            correction=c.corr_name,
            primary=c.primary,
            family=c.st.get("family_size", "?"),
            alpha=c.st.get("alpha", 0.05),
        )
    out = [f"## {c.t('h_verdict')}", "", c.t("scenarios_intro"), ""]
    out += [c.t("scenario_1", b=c.b), c.t("scenario_2"), c.t("scenario_3", b=c.b, v=c.v0), ""]
    diag = c.s.get("diagnostics") or {}
    degenerate = diag.get("degenerate_sites") or {}
    if c.site in degenerate:
        why = c.reason((diag.get("degenerate_codes") or {}).get(c.site), degenerate[c.site])
        out += [c.t("verdict_degenerate", site=c.site, reason=why), ""]
    out += [c.t(vkey, explanation=explanation, overall=overall).strip(), ""]
    out += [c.t("verdict_scope", site=c.site, layers=c.layers), ""]
    for metric, vv in (ver.get("per_metric") or {}).items():
        out.append(
            c.t("per_metric_verdict", metric=c.metric_name(metric), verdict=c.verdict_text(vv))
        )
    out.append("")
    return out


def section_prediction(c: Ctx) -> list[str]:
    pred = c.s.get("prediction")
    if not pred:
        return []
    out = [f"## {c.t('h_prediction')}", "", c.t("pred_header"), "|---|---|---|---|"]
    for m in [c.b, *c.variants]:
        r = (pred.get("per_model") or {}).get(m)
        if r:
            out.append(
                f"| `{_md(m)}` | {r.get('n', '')} | {_f(r.get('mae'))} | {_f(r.get('rmse'))} |"
            )
    out.append("")
    if pred.get("naive_mae") is not None:
        out += [c.t("pred_naive", method=pred.get("naive_method") or "", mae=_f(pred["naive_mae"]))]
        out.append("")
    for d in pred.get("differences") or []:
        lo, hi = d.get("mae_diff_ci_low"), d.get("mae_diff_ci_high")
        excludes = lo is not None and hi is not None and (lo > 0 or hi < 0)
        out.append(
            c.t(
                "pred_diff",
                v=d.get("variant", c.v0),
                b=c.b,
                diff=_f(d.get("mae_diff"), 4),
                lo=_f(lo, 4),
                hi=_f(hi, 4),
                sig=c.t("pred_ci_excludes") if excludes else c.t("pred_ci_includes"),
            )
        )
    out.append("")
    return out + _img("mae_comparison", c.s, "MAE")


def section_correlation(c: Ctx) -> list[str]:
    cors = c.s.get("correlations")
    if not cors and "attention_vs_error" not in c.s.get("figures", {}):
        return []
    out = [f"## {c.t('h_corr')}", "", c.t("corr_intro"), ""]
    if cors:
        out += [c.t("corr_header"), "|---|---|---|---|---|"]
        for r in cors:
            if r.get("metric") not in TABLE_METRICS:
                continue
            model = f"`{_md(r.get('model'))}`"
            if r.get("kind") not in (None, "per_model"):
                model = c.t("corr_delta", m=model)
            out.append(
                f"| {model} | {c.metric_name(r['metric'])} | {_f(r.get('rho'), 2)} "
                f"({_f(r.get('rho_ci_low'), 2)}, {_f(r.get('rho_ci_high'), 2)}) | "
                f"{_f(r.get('partial_rho'), 2)} | {fmt_p(r.get('p'))} |"
            )
        out.append("")
    return out + _img("attention_vs_error", c.s, "attention vs |error|")


def section_grid(c: Ctx) -> list[str]:
    grids = [k for k in c.s.get("figures", {}) if k.startswith("per_layer_head_")]
    gc = c.s.get("grid_counts", {})
    if not grids and not gc:
        return []
    layer, head = gc.get("per-layer", {}), gc.get("per-head", {})
    out = [f"## {c.t('h_grid')}", ""]
    out += [
        c.t(
            "grid_text",
            n_sig_layer=layer.get("n_significant", 0),
            n_layer=layer.get("n_tests", 0),
            n_sig_head=head.get("n_significant", 0),
            n_head=head.get("n_tests", 0),
            correction=c.corr_name,
            matching=c.matching,
        ),
        "",
    ]
    for g in grids:
        out += _img(g, c.s, g.replace("_", " "))
    return out


def section_strata(c: Ctx) -> list[str]:
    if "strata_comparison" not in c.s.get("figures", {}):
        return []
    return [f"## {c.t('h_strata')}", "", c.t("strata_text"), ""] + _img(
        "strata_comparison", c.s, "strata"
    )


def section_specificity(c: Ctx) -> list[str]:
    if "node_specificity" not in c.s.get("figures", {}):
        return []
    out = [f"## {c.t('h_spec')}", "", c.t("spec_text"), ""]
    for m, v in ((c.s.get("diagnostics") or {}).get("identical_rows") or {}).items():
        out.append(
            c.t("identical_line", model=f"`{m}`", k=v.get("n_identical"), n=v.get("n_samples"))
        )
    out.append("")
    return out + _img("node_specificity", c.s, "node specificity")


def section_gold(c: Ctx) -> list[str]:
    chance = c.s.get("gold_vs_chance") or []
    if "gold_alignment" not in c.s.get("figures", {}) and not chance:
        return []
    out = [f"## {c.t('h_gold')}", "", c.t("gold_text"), ""]
    for r in chance:  # each model's gold mass beside its chance level, tested against it
        out.append(
            c.t(
                "gold_chance_line",
                model=_md(r["variant"]),
                mass=_f(r.get("mean_variant")),
                chance=_f(r.get("mean_baseline")),
                diff=_f(r.get("mean_diff"), 4),
                lo=_f(r.get("ci_diff_low"), 4),
                hi=_f(r.get("ci_diff_high"), 4),
                correction=c.corr_name,
                p=fmt_p(r.get("p_corrected")),
                n=r.get("n"),
            )
        )
    for r in c.s.get("secondary_results", []):
        if r.get("metric") in ("gold_mass", "gold_pointing"):
            out.append(
                f"- {c.metric_name(r['metric'])}: `{_md(c.b)}` {_f(r['mean_baseline'])}, "
                f"`{_md(r['variant'])}` {_f(r['mean_variant'])} ({_pct(r.get('pct_change'))}), "
                f"p ({c.corr_name}) = {fmt_p(r.get('p_corrected'))}, n = {r.get('n')}"
            )
    out.append("")
    return out + _img("gold_alignment", c.s, "gold alignment")


def section_noise(c: Ctx) -> list[str]:
    if not c.s.get("noise_floor"):
        return []
    return [f"## {c.t('h_noise')}", "", c.t("noise_text"), ""] + _table(c.s["noise_floor"]) + [""]


def section_examples(c: Ctx) -> list[str]:
    ex = c.s.get("examples") or []
    if not ex:
        return []
    strategy = c.opts.get("example_strategy", "divergent")
    out = [f"## {c.t('h_examples')}", "", c.t("examples_text", strategy=strategy, b=c.b, v=c.v0)]
    out.append("")
    for e in ex:
        jsd = c.t("example_jsd", jsd=_f(e.get("jsd"))) if e.get("jsd") is not None else ""
        cap = c.t("example_caption", k=e["index"], sid=e["sample_id"], jsd=jsd)
        out += [f"**{cap}**", "", f"![{cap}]({e['file']})", ""]
    return out


def section_caveats(c: Ctx) -> list[str]:
    ver = c.s.get("verdict", {}) or {}
    out = [f"## {c.t('h_caveats')}", ""]
    family = ver.get("family_size", c.st.get("family_size", "?"))
    if ver.get("overall") == "inconclusive (too few samples)":
        out.append(
            c.t(
                "cav_inconclusive",
                n=c.n,
                family=family,
                correction=c.corr_name,
                min_p=_f(ver.get("min_corrected_p"), 4),
                alpha=c.st.get("alpha", 0.05),
                n_needed=ver.get("n_needed", "?"),
            )
        )
    else:
        out.append(
            c.t(
                "cav_sample",
                n=c.n,
                primary=c.primary,
                correction=c.corr_name,
                family=family,
                alpha=c.st.get("alpha", 0.05),
                dz=_f(ver.get("detectable_dz"), 2),
            )
            + (c.t("cav_small") if c.n < 30 else "")
        )
    out.append(c.t("cav_multiple", family=family, correction=c.corr_name))
    out.append(c.t("cav_heads"))
    out.append(c.t("cav_effective_tokens", threshold=c.opts.get("threshold", 0.1)))
    out += [line for w in c.s.get("warnings", []) if (line := _warning_line(c, w))]
    diag = c.s.get("diagnostics") or {}
    degenerate = diag.get("degenerate_sites") or {}
    msgs = [
        m
        for m in diag.get("messages", [])
        if not any(f"'{site}'" in m and "degenerate" in m for site in degenerate)
    ]
    out += [c.t("cav_diag", message=m) for m in msgs[:12]]
    out.append("")
    return out


def _warning_line(c: Ctx, w: Mapping[str, Any]) -> str:
    k = w.get("kind")
    if k == "partial_store":
        return c.t("cav_partial", n=w.get("n"), n_planned=w.get("n_planned"))
    if k == "training_samples":
        counts = ", ".join(f"{m}: {n}" for m, n in (w.get("counts") or {}).items())
        return c.t("cav_training", counts=counts)
    if k == "training_split":
        splits = ", ".join(f"{sp}: {n}" for sp, n in (w.get("splits") or {}).items())
        return c.t("cav_training_split", splits=splits)
    if k == "degenerate_site":
        why = c.reason(w.get("reason_code"), w.get("reason"))
        return c.t("cav_degenerate", site=w.get("site"), reason=why)
    if k == "identical_rows":
        return c.t(
            "cav_identical",
            model=f"`{w.get('model')}`",
            k=w.get("n_identical"),
            n=w.get("n_samples"),
        )
    if k == "invalid_attention":
        return c.t("cav_invalid", n=w.get("n"))
    if k == "skipped":
        return c.t("cav_skipped", message=w.get("message"))
    if k == "threshold_uninformative":
        return c.t("cav_threshold", message=w.get("message"))
    if k == "uncalibrated_heads":
        return c.t("cav_uncalibrated_heads")
    return ""


def section_paragraph(c: Ctx) -> list[str]:
    ver = c.s.get("verdict", {}) or {}
    _, pkey = _OVERALL_KEYS.get(str(ver.get("overall", "")), (None, None))
    out = [f"## {c.t('h_paragraph')}", "", f"*{c.t('paragraph_note')}*", ""]
    return out + [_paragraph(c, pkey), ""]


def _paragraph(c: Ctx, pkey: str | None) -> str:
    s, store = c.s, c.s.get("store", {})
    rows = [r for r in s.get("main_results", []) if r.get("layer") == c.sel.get("layer")]
    parts = []
    for v in c.variants:
        by = {r["metric"]: r for r in rows if r["variant"] == v}
        parts.append(
            c.t(
                "para_open",
                n=s.get("n_samples"),
                split=store.get("split") or "n/a",
                seed=store.get("selection_seed", "n/a"),
                site=c.site,
                where=c.t("where_para", layer=c.sel.get("layer")),
                b=f"`{c.b}`",
                v=f"`{v}`",
            )
        )
        items = [_para_item(c, by[m]) for m in REG.CONFIRMATORY_METRICS if m in by]
        if items:
            joined = (
                c.t("para_sep").join(items[:-1]) + c.t("para_and") + items[-1]
                if len(items) > 1
                else items[0]
            )
            parts.append(c.t("para_metrics", b=f"`{c.b}`", v=f"`{v}`", items=joined))
            parts.append(
                c.t(
                    "para_pnote",
                    primary=c.primary,
                    correction=c.corr_name,
                    family=c.st.get("family_size", "?"),
                )
            )
        if pkey:
            parts.append(c.t(pkey, b=f"`{c.b}`", v=f"`{v}`"))
        parts += _para_mae(c, v)
    return (" " if c.lang == "en" else "").join(parts)


def _para_item(c: Ctx, r: Mapping[str, Any]) -> str:
    d = r.get("mean_diff")
    dirk = (
        "dir_same"
        if d is None or not math.isfinite(float(d)) or d == 0
        else ("dir_higher" if d > 0 else "dir_lower")
    )
    metric = r["metric"]
    unit = " nats" if REG.unit(metric) == "nats" else ""
    return c.t(
        "para_item",
        dir=c.t(dirk),
        what=c.t(f"what_{metric}", threshold=c.opts.get("threshold", 0.1)),
        pct=_pct(r.get("pct_change")),
        mb=_f(r.get("mean_baseline")),
        mv=_f(r.get("mean_variant")),
        unit=unit,
        p=fmt_p(r.get("p_corrected"))
        + ("" if r.get("verdict") != "not significant" else c.t("para_ns")),
    )


def _para_mae(c: Ctx, v: str) -> list[str]:
    pred = c.s.get("prediction") or {}
    pm = pred.get("per_model") or {}
    if c.b not in pm or v not in pm:
        return []
    diff = next((d for d in pred.get("differences") or [] if d.get("variant") == v), None)
    return [
        c.t(
            "para_mae",
            b=f"`{c.b}`",
            v=f"`{v}`",
            mae_b=_f(pm[c.b].get("mae")),
            mae_v=_f(pm[v].get("mae")),
            diff=_f(diff.get("mae_diff"), 4) if diff else "n/a",
            lo=_f(diff.get("mae_diff_ci_low"), 4) if diff else "n/a",
            hi=_f(diff.get("mae_diff_ci_high"), 4) if diff else "n/a",
        )
    ]


def section_files(c: Ctx) -> list[str]:
    files = c.s.get("files_written") or []
    if not files:
        return []
    out = [f"## {c.t('h_files')}", ""]
    for f in files:
        out.append(f"- `{f['name']}`: {_file_description(c.lang, f['name'], f['description'])}")
    return out + [""]


def _file_description(lang: str, name: str, default: str) -> str:
    if lang != "zh":
        return default
    stem = name.rsplit(".", 1)[0]
    for key in sorted(FILES_ZH, key=len, reverse=True):
        if stem == key or stem.startswith(key):
            return FILES_ZH[key]
    return default


#: the report, in order: one function per section
SECTIONS: tuple[Callable[[Ctx], list[str]], ...] = (
    section_title,
    section_compared,
    section_main,
    section_verdict,
    section_prediction,
    section_correlation,
    section_grid,
    section_strata,
    section_specificity,
    section_gold,
    section_noise,
    section_examples,
    section_caveats,
    section_paragraph,
    section_files,
)


def render_report(summary: Mapping[str, Any], *, lang: str = "en") -> str:
    """The Markdown report for an analysis ``summary`` (what
    :func:`analyze.summary.build_summary` returns, i.e. ``summary.json``)."""
    c = Ctx(summary, lang)
    return "\n".join(line for section in SECTIONS for line in section(c))
