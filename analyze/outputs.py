"""One analysis run: store -> tables -> statistics -> files in a save directory; and re-plotting.

:func:`run_analysis` scans the store once (:func:`analyze.table.compute_tables`), caches the
per-sample tables and the example heatmaps' matrices in the save directory, then calls
:func:`render`, which computes every statistic from the cached tables and writes every CSV, figure,
``summary.json`` and ``report.md``. :func:`replot` calls :func:`render` again from the cache alone
(no store, no scan), so figures and the report can be re-made in seconds, e.g. in another language
or format.

Files written into the save directory (see :data:`OUTPUT_FILES` for one line on each)::

    attention_statistics_comparison.png   attention_statistics.csv
    attention_heatmap_example_{1..K}.png  per_sample_metrics.parquet / .csv
    per_layer_head.csv  significance.csv  summary.json  report.md  (+ figures, caches)

Notebook use::

    from attncmp.analyze.outputs import AnalysisOptions, run_analysis
    res = run_analysis(["attention_store.h5"], "out", AnalysisOptions(examples=3))
    res.comparison.to_frame(); res.summary["verdict"]
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from attncmp.store import open_store
from attncmp.store.schema import tool_version

from .errors import AnalysisError
from .heatmap import HeatmapData, default_site, heatmap_data
from .plotstyle import parse_formats
from .render import FigureJob, FigureRenderer

# matplotlib (figures, heatmap/text drawing) and scipy (statistics) are imported where used, so
# `attncmp analyze` reaches its first chunk without them; figure functions are named here and
# imported by the process that draws them (analyze.render)
_FIG = "attncmp.analyze.figures:"
_HEATMAP = "attncmp.analyze.heatmap:plot_heatmap"
_TEXT = "attncmp.analyze.textview:plot_text"

__all__ = [
    "OUTPUT_FILES",
    "AnalysisError",
    "AnalysisOptions",
    "AnalysisResult",
    "choose_examples",
    "render",
    "replot",
    "run_analysis",
]

SUMMARY_FORMAT = "attncmp-analysis-summary"
SUMMARY_VERSION = 1
CACHE_DIR = "analysis_cache"
#: tested as their own family (two-sided, no hypothesis direction), head-mean, headline site
SECONDARY_METRICS = (
    "norm_entropy",
    "node_specificity",
    "gold_mass",
    "gold_pointing",
    "special_mass",
)
EXAMPLE_STRATEGIES = ("divergent", "random", "ids")

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
    "per_layer_head_{site}.png": "% change per layer and head (and head-mean) for each metric",
    "attention_vs_error.png": "per-sample attention metrics vs absolute error with Spearman rho",
    "strata_comparison.png": "paired differences within quantile bins",
    "node_specificity.png": "node specificity per sample and the share of samples whose nodes "
    "all attend identically",
    "gold_alignment.png": "gold mass and gold pointing accuracy (stores with gold masks)",
    "mae_comparison.png": "MAE / RMSE per model, per-sample |error|, MAE difference with CI",
}


@dataclass
class AnalysisOptions:
    """Options of one analysis (the CLI builds this from its flags; defaults in comments)."""

    baseline: str | None = None  # default: the store's baseline
    variants: Sequence[str] | None = None  # default: every other model
    site: str | None = None  # headline site; default: first nodes -> tokens site
    threshold: float = 0.1  # effective tokens: weight > threshold
    exclude_special: bool = True  # drop [CLS]/[SEP]... and renormalise rows
    heads: str = "both"  # each | mean | both
    top_k: int = 3
    examples: int = 3  # heatmap examples K
    example_strategy: str = "divergent"  # divergent | random | ids
    example_ids: Sequence[str] | None = None
    formats: Sequence[str] = ("png",)
    correction: str = "holm"  # holm | bh
    alpha: float = 0.05
    seed: int = 0
    n_boot: int = 2000
    head_matching: str = "hungarian"
    lang: str = "en"  # en | zh (report text)
    groups: dict[str, list[str]] = field(default_factory=dict)  # replicate groups (noise floor)
    strata: Sequence[str] | None = None  # stratifiers; default: analyze.strata.BUILTIN (+ split)
    strata_bins: int = 3  # quantile bins of numeric stratifiers
    strata_min_size: int = 5  # smaller strata are merged
    node_groups: bool = True  # per_group_metrics.csv: metrics per node label (element) group
    chunk_samples: int = 256
    quiet: bool = False
    log: Callable[[str], None] | None = None  # default: print to stderr unless quiet

    def validate(self) -> None:
        if self.example_strategy not in EXAMPLE_STRATEGIES:
            raise AnalysisError(
                f"--example-strategy {self.example_strategy!r} is not one of "
                f"{', '.join(EXAMPLE_STRATEGIES)}"
            )
        if self.example_strategy == "ids" and not self.example_ids:
            raise AnalysisError("--example-strategy ids needs --ids ID[,ID...]")
        if self.examples < 0:
            raise AnalysisError("--examples must be >= 0")
        if self.correction not in ("holm", "bh"):
            raise AnalysisError(f"--correction {self.correction!r} is not one of holm, bh")
        if self.lang not in ("en", "zh"):
            raise AnalysisError(f"--lang {self.lang!r} is not one of en, zh")
        if self.heads not in ("each", "mean", "both"):
            raise AnalysisError(f"--heads {self.heads!r} is not one of each, mean, both")
        if not 0.0 <= self.threshold < 1.0:
            raise AnalysisError(f"--threshold {self.threshold} must be in [0, 1)")
        try:
            self.formats = parse_formats(self.formats)
        except ValueError as e:
            raise AnalysisError(f"--format: {e}".replace("`formats`: ", "")) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("log", None)
        d["formats"] = list(self.formats)
        d["variants"] = None if self.variants is None else list(self.variants)
        d["example_ids"] = None if self.example_ids is None else list(self.example_ids)
        d["strata"] = None if self.strata is None else list(self.strata)
        return d


@dataclass
class AnalysisResult:
    """Everything one analysis produced (objects and the files written)."""

    save_dir: Path
    tables: Any
    comparison: Any
    prediction: Any
    correlations: pl.DataFrame | None
    strata: pl.DataFrame | None
    noise: Any
    summary: dict[str, Any]
    files: list[Path]
    examples: list[HeatmapData]

    @property
    def verdict(self):
        return self.comparison.verdict


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _logger(options: AnalysisOptions) -> Callable[[str], None]:
    if options.log is not None:
        return options.log
    if options.quiet:
        return lambda _msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def prepare_save_dir(save_dir: str | os.PathLike | None) -> Path:
    """Create ``save_dir`` if needed and check it is writable (one-line errors)."""
    if save_dir is None or not str(save_dir).strip():
        raise AnalysisError(
            "--save-dir is empty; pass a directory for the outputs, e.g. ./analysis"
        )
    d = Path(save_dir).expanduser()
    if d.exists() and not d.is_dir():
        raise AnalysisError(f"--save-dir {d}: exists and is not a directory; choose another path")
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".attncmp_write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        why = e.strerror or str(e)
        raise AnalysisError(
            f"--save-dir {d}: not writable ({why}); choose a directory you can write to"
        ) from None
    return d


def _store_facts(store) -> dict[str, Any]:
    cfg = {}
    try:
        cfg = store.config
    except Exception:  # noqa: BLE001 - facts are best effort
        cfg = {}
    prov = {}
    for m in store.models:
        try:
            prov[m] = store.provenance(m)
        except Exception:  # noqa: BLE001
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
    except Exception:  # noqa: BLE001
        invalid = 0
    splits = {}
    try:
        for s in store.split_column():
            splits[s] = splits.get(s, 0) + 1
    except Exception:  # noqa: BLE001
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


def _check_request(store, options: AnalysisOptions) -> tuple[str, list[str], str]:
    models = list(store.models)
    path = store.paths[0]
    if len(models) < 2:
        raise AnalysisError(
            f"{path}: holds one model only ({models[0]}); a comparison needs a store extracted "
            "with at least two variants"
        )
    baseline = options.baseline or store.baseline
    if baseline not in models:
        raise AnalysisError(
            f"--baseline {baseline!r} is not a model of {path}; choose one of {', '.join(models)}"
        )
    variants = list(options.variants) if options.variants else [m for m in models if m != baseline]
    bad = [v for v in variants if v not in models or v == baseline]
    if bad:
        raise AnalysisError(
            f"variant {bad[0]!r} is not another model of {path}; models: {', '.join(models)}"
        )
    sites = store.sites(baseline)
    site = options.site or default_site(store)
    if site not in sites:
        raise AnalysisError(
            f"--site {site!r} is not an attention site of {path}; choose one of "
            f"{', '.join(sorted(sites))}"
        )
    if sites[site].key_axis == "single":
        usable = [s for s, i in sites.items() if i.key_axis != "single"]
        raise AnalysisError(
            f"--site {site!r} attends over a single key (every weight is 1.0), so its attention "
            f"carries no information; choose one of {', '.join(sorted(usable)) or '(none)'}"
        )
    for g, members in options.groups.items():
        miss = [m for m in members if m not in models]
        if miss:
            raise AnalysisError(
                f"--group {g}: model {miss[0]!r} is not in the store; models: {', '.join(models)}"
            )
    return baseline, variants, site


# ---------------------------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------------------------
def _check_strata(store, options: AnalysisOptions) -> None:
    """``--strata`` names must exist in the store (checked before the metric scan)."""
    if not options.strata:
        return
    from .strata import BUILTIN

    have = [*BUILTIN, "split", *store.targets, *store.meta_columns()]
    bad = [n for n in options.strata if n not in have and n.removeprefix("meta_") not in have]
    if bad:
        raise AnalysisError(
            f"--strata {bad[0]!r} is not a stratifier of this store; choose from "
            f"{', '.join(dict.fromkeys(have))}"
        )
    if options.strata_bins < 1 or options.strata_min_size < 1:
        raise AnalysisError("strata bins and minimum stratum size must be >= 1")


def choose_examples(
    tables,
    *,
    k: int,
    strategy: str,
    site: str,
    layer: int,
    baseline: str,
    variant: str,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Sample ids for the heatmap examples.

    ``divergent``: the ``k`` samples with the largest mean row JSD between ``baseline`` and
    ``variant`` (site, layer, head-mean), ties in store order; ``random``: ``k`` samples drawn with
    ``seed``; ``ids``: exactly the given ids (each must be in the store). Fewer than ``k`` when the
    store has fewer samples.
    """
    all_ids = tables.samples["sample_id"].to_list()
    if strategy == "ids":
        known = set(all_ids)
        miss = [i for i in ids or [] if i not in known]
        if miss:
            raise AnalysisError(
                f"--ids: sample {miss[0]!r} is not in the store (e.g. {', '.join(all_ids[:3])})"
            )
        return list(dict.fromkeys(ids or []))
    k = min(k, len(all_ids))
    if k <= 0:
        return []
    if strategy == "random":
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(all_ids), size=k, replace=False))
        return [all_ids[i] for i in pick]
    pw = tables.pairwise
    if pw is not None and pw.height:
        cand = pw.filter(
            (pl.col("site") == site)
            & (pl.col("layer") == layer)
            & (pl.col("head") == -1)
            & (pl.col("baseline") == baseline)
            & (pl.col("variant") == variant)
        )
        if cand.height == 0:  # pair stored the other way round
            cand = pw.filter(
                (pl.col("site") == site)
                & (pl.col("layer") == layer)
                & (pl.col("head") == -1)
                & (pl.col("baseline") == variant)
                & (pl.col("variant") == baseline)
            )
        if cand.height:
            pos = {s: i for i, s in enumerate(all_ids)}
            rows = sorted(
                ((r["sample_id"], r["jsd"]) for r in cand.iter_rows(named=True)),
                key=lambda t: (
                    -(t[1] if t[1] is not None and np.isfinite(t[1]) else -1.0),
                    pos.get(t[0], 0),
                ),
            )
            out = [sid for sid, _ in rows[:k]]
            if len(out) == k:
                return out
    return all_ids[:k]


def _example_metrics(tables, data: HeatmapData) -> None:
    """Use the engine's numbers for the heatmap title (same conventions as the tables)."""
    ps = tables.per_sample
    head = -1 if data.head is None else data.head
    sub = ps.filter(
        (pl.col("sample_id") == data.sample_id)
        & (pl.col("site") == data.site)
        & (pl.col("layer") == data.layer)
        & (pl.col("head") == head)
    )
    for m in data.models:
        r = sub.filter(pl.col("model") == m)
        if r.height:
            row = r.row(0, named=True)
            data.metrics[m] = {
                k: float(row[k])
                for k in ("entropy", "norm_entropy", "max_weight", "effective_tokens", "gini")
                if k in row and row[k] is not None
            }
    pw = tables.pairwise
    if pw is not None and pw.height:
        r = pw.filter(
            (pl.col("sample_id") == data.sample_id)
            & (pl.col("site") == data.site)
            & (pl.col("layer") == data.layer)
            & (pl.col("head") == head)
            & (pl.col("baseline") == data.models[0])
            & (pl.col("variant") == data.models[1])
        )
        if r.height and r["jsd"][0] is not None:
            data.jsd = float(r["jsd"][0])


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
def run_analysis(
    store_paths: str | os.PathLike | Sequence[str | os.PathLike],
    save_dir: str | os.PathLike,
    options: AnalysisOptions | None = None,
) -> AnalysisResult:
    """Analyse a store (one file or several shards) and write every output into ``save_dir``.

    Raises :class:`AnalysisError` or :class:`store.StoreError` (one-line messages) for user
    mistakes: missing or non-store file, one-model store, unknown site/baseline/variant/ids, empty
    or unwritable save directory.
    """
    from .table import MetricOptions, compute_tables

    options = options or AnalysisOptions()
    options.validate()
    log = _logger(options)
    out = prepare_save_dir(save_dir)
    if isinstance(store_paths, (str, os.PathLike)):
        store_paths = [store_paths]
    paths = [Path(p) for p in store_paths]
    if not paths:
        raise AnalysisError("no store path given; pass the attention store (.h5) to analyse")
    with open_store(paths) as store:
        baseline, variants, site = _check_request(store, options)
        _check_strata(store, options)
        facts = _store_facts(store)
        if store.is_partial:
            log(
                f"note: the store is partial: {store.n_samples} of {store.n_planned} planned "
                "samples committed (extraction still running or incomplete); analysing those"
            )
        if store.n_samples == 0:
            raise AnalysisError(f"{paths[0]}: no committed samples yet; wait for the extraction")
        mopt = MetricOptions(
            threshold=options.threshold,
            exclude_special=options.exclude_special,
            top_k=options.top_k,
            heads=options.heads,
            chunk_samples=options.chunk_samples,
        )
        log(
            f"computing metrics: {store.n_samples} samples x {len(store.models)} models x "
            f"{len(facts['sites'])} sites"
        )
        last = [-1]

        def progress(done: int, total: int) -> None:
            pct = int(100 * done / max(total, 1))
            if pct >= last[0] + 10 or done >= total:
                last[0] = pct
                log(f"  {done}/{total} ({pct}%)")

        tables = compute_tables(store, options=mopt, progress=None if options.quiet else progress)
        # heatmap examples: read their matrices now (the only store access after the scan)
        n_layers = facts["sites"][site]["n_layers"]
        if options.example_ids and options.example_strategy != "ids":
            options.example_strategy = "ids"
        ids = choose_examples(
            tables,
            k=options.examples,
            strategy=options.example_strategy,
            site=site,
            layer=n_layers - 1,
            baseline=baseline,
            variant=variants[0],
            seed=options.seed,
            ids=options.example_ids,
        )
        examples = []
        for sid in ids:
            d = heatmap_data(
                store,
                sid,
                site=site,
                baseline=baseline,
                variant=variants[0],
                threshold=options.threshold,
                exclude_special=options.exclude_special,
            )
            _example_metrics(tables, d)
            examples.append(d)
        group_frame = None
        info = store.sites()[site]
        if options.node_groups and (info.query_axis, info.key_axis) == ("nodes", "tokens"):
            from .groups import group_metrics_table

            log("node groups: metrics per node label (element) group")
            group_frame = group_metrics_table(
                store,
                site=site,
                models=[baseline, *variants],
                threshold=options.threshold,
                exclude_special=options.exclude_special,
            )
    if group_frame is not None:
        group_frame.write_csv(out / "per_group_metrics.csv")
    tables.save(out)
    cache = out / CACHE_DIR
    cache.mkdir(exist_ok=True)
    for old in cache.glob("example_*.npz"):
        old.unlink()
    for k, d in enumerate(examples, 1):
        d.save(cache / f"example_{k}.npz")
    state = {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "store": facts,
        "options": options.to_dict(),
        "baseline": baseline,
        "variants": variants,
        "site": site,
        "example_ids": ids,
    }
    (cache / "analysis_state.json").write_text(json.dumps(state, indent=2, default=str))
    return render(out, tables=tables, state=state, options=options, examples=examples)


def replot(
    save_dir: str | os.PathLike,
    *,
    formats: Sequence[str] | None = None,
    lang: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> AnalysisResult:
    """Re-render every figure, table and the report of an earlier analysis from its cache
    (``per_sample_metrics.parquet`` & co. and ``analysis_cache/``); never opens the store.
    ``workers``: figure-drawing processes (default: the available cores; 1 draws here)."""
    from .table import MetricTables

    d = Path(save_dir)
    state_path = d / CACHE_DIR / "analysis_state.json"
    if not d.is_dir():
        raise AnalysisError(f"{d}: no such directory; pass the --save-dir of an earlier analysis")
    if not state_path.exists() or not (d / "per_sample_metrics.parquet").exists():
        raise AnalysisError(
            f"{d}: no cached analysis (per_sample_metrics.parquet, "
            f"{CACHE_DIR}/analysis_state.json);"
            " run `attncmp analyze STORE --save-dir DIR` first"
        )
    state = json.loads(state_path.read_text())
    try:
        tables = MetricTables.load(d)
    except Exception as e:  # noqa: BLE001 - a damaged cache is a user-facing problem
        raise AnalysisError(
            f"{d}: cached tables unreadable ({e}); re-run `attncmp analyze`"
        ) from None
    o = dict(state["options"])
    options = AnalysisOptions(
        **{k: v for k, v in o.items() if k in AnalysisOptions.__dataclass_fields__}
    )
    options.quiet = quiet
    options.log = log
    if formats is not None:
        options.formats = tuple(formats)
    if lang is not None:
        options.lang = lang
    options.validate()
    examples = [
        HeatmapData.load(p)
        for p in sorted(
            (d / CACHE_DIR).glob("example_*.npz"), key=lambda p: int(re.sub(r"\D", "", p.stem))
        )
    ]
    return render(
        d, tables=tables, state=state, options=options, examples=examples, workers=workers
    )


# ---------------------------------------------------------------------------------------------
# render: statistics + files from the tables
# ---------------------------------------------------------------------------------------------
def _main_selection(comparison, tables, site: str) -> dict[str, Any]:
    """The headline cell: the main site's head-mean distribution of its last layer (the layer
    whose output feeds the prediction; the original method on a one-layer model)."""
    site = getattr(comparison, "main_site", None) or site
    n_layers = int(tables.sites.get(site, {}).get("n_layers", 1))
    return {"site": site, "layer": n_layers - 1, "head": -1, "head_kind": "head-mean"}


def _errors_frame(tables, models: Sequence[str]) -> tuple[pl.DataFrame, str]:
    """``sample_id, model, abs_error`` for the first target."""
    s = tables.samples
    targets = list(tables.targets) or ["target"]
    tgt = targets[0]
    rows = []
    for m in models:
        col = f"prediction_{m}" if len(targets) == 1 else f"prediction_{m}_{tgt}"
        if col not in s.columns or tgt not in s.columns:
            continue
        rows.append(
            s.select(
                "sample_id",
                pl.lit(m).alias("model"),
                (pl.col(col) - pl.col(tgt)).abs().cast(pl.Float64).alias("abs_error"),
            )
        )
    if not rows:
        return pl.DataFrame(
            schema={"sample_id": pl.String, "model": pl.String, "abs_error": pl.Float64}
        ), tgt
    return pl.concat(rows), tgt


def _per_layer_head_table(tables) -> pl.DataFrame:
    from .table import METRICS

    ps = tables.per_sample
    metrics = [m for m in METRICS if m in ps.columns]
    keys = ["site", "layer", "head", "head_kind", "model"]
    if ps.height == 0:
        return pl.DataFrame(schema={k: pl.String for k in keys})
    agg = [pl.col("sample_id").n_unique().alias("n_samples")]
    agg += [pl.col(m).filter(pl.col(m).is_not_nan()).mean().alias(m) for m in metrics]
    if "identical_rows" in ps.columns:
        agg.append(pl.col("identical_rows").cast(pl.Float64).mean().alias("identical_rows_share"))
    return ps.group_by(keys, maintain_order=True).agg(agg).sort(["site", "layer", "head", "model"])


def _statistics_csv(comparison, models: Sequence[str], sel: dict[str, Any]) -> pl.DataFrame:
    """``attention_statistics.csv``: the original columns (metric, each model's value, change %)
    then n, CIs, p-values, effect sizes and verdict; one row per metric (x variant)."""
    from .compare import MAIN_METRICS

    rows = []
    tests = [
        t
        for t in comparison.tests
        if t.site == sel["site"] and t.layer == sel["layer"] and t.head == sel["head"]
    ]
    by = {(t.metric, t.variant): t for t in tests}
    for metric in MAIN_METRICS:
        for v in models[1:]:
            t = by.get((metric, v))
            if t is None:
                continue
            row: dict[str, Any] = {"metric": metric}
            row[models[0]] = t.mean_baseline
            for m in models[1:]:
                tm = by.get((metric, m))
                row[m] = tm.mean_variant if tm is not None else None
            row.update(
                {
                    "change_pct": t.pct_change,
                    "variant": v,
                    "baseline": t.baseline,
                    "n": t.n,
                    "baseline_ci_low": t.ci_baseline_low,
                    "baseline_ci_high": t.ci_baseline_high,
                    "variant_ci_low": t.ci_variant_low,
                    "variant_ci_high": t.ci_variant_high,
                    "mean_diff": t.mean_diff,
                    "diff_ci_low": t.ci_diff_low,
                    "diff_ci_high": t.ci_diff_high,
                    "t_pvalue": t.t_pvalue,
                    "wilcoxon_pvalue": t.wilcoxon_pvalue,
                    "p_corrected": t.p_corrected,
                    "correction": comparison.correction,
                    "cohens_dz": t.cohens_dz,
                    "rank_biserial": t.rank_biserial,
                    "expected_direction": t.expected_direction,
                    "verdict": t.verdict,
                    "site": t.site,
                    "layer": t.layer,
                    "head": t.head_kind if t.head < 0 else t.head,
                }
            )
            rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"metric": pl.String})


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
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


def _test_dict(t) -> dict[str, Any]:
    """A test's flat fields (the nested ``result`` repeats them, plus the bootstrap's 2,000
    resamples, which do not belong in summary.json)."""
    d = asdict(t)
    d.pop("result", None)
    return _jsonable(d)


def _safe_call(log, what: str, fn, *a, **kw):
    """Secondary analyses must not sink the whole run: failures become a warning line."""
    try:
        return fn(*a, **kw), None
    except Exception as e:  # noqa: BLE001
        msg = f"{what} skipped: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        log(f"warning: {msg}")
        return None, msg


def _write_csv(frame: pl.DataFrame | None, path: Path) -> Path | None:
    if frame is None:
        return None
    flat = frame
    for name, dt in frame.schema.items():
        if isinstance(dt, (pl.List, pl.Struct, pl.Array, pl.Object)):
            flat = flat.with_columns(pl.col(name).map_elements(str, return_dtype=pl.String))
    flat.write_csv(path)
    return path


def render(
    save_dir: Path,
    *,
    tables,
    state: dict[str, Any],
    options: AnalysisOptions,
    examples: list[HeatmapData],
    workers: int | None = None,
) -> AnalysisResult:
    """Statistics, CSVs, figures, summary.json and report.md from cached tables. Figures are
    drawn in ``workers`` processes (default: the analysis' ``jobs``, else the available cores)
    while the statistics run (:mod:`analyze.render`)."""
    if workers is None:
        workers = getattr(options, "jobs", None)
    with FigureRenderer(formats=tuple(options.formats), workers=workers) as renderer:
        return _render(Path(save_dir), tables, state, options, examples, renderer)


def _render(
    d: Path,
    tables,
    state: dict[str, Any],
    options: AnalysisOptions,
    examples: list[HeatmapData],
    renderer: FigureRenderer,
) -> AnalysisResult:
    from . import report as R
    from .compare import compare
    from .noise import noise_floor
    from .prediction import attention_error_correlation, compare_predictions
    from .strata import compare_strata

    log = _logger(options)
    fm = tuple(options.formats)
    baseline, variants, site = state["baseline"], list(state["variants"]), state["site"]
    models = [baseline, *variants]
    files: list[Path] = []
    notes: list[str] = []
    # heatmap examples (they need no statistics): exactly one file per example, stale
    # higher-numbered ones removed
    for old in [*d.glob("attention_heatmap_example_*.*"), *d.glob("attention_text_example_*.*")]:
        m = re.fullmatch(r"attention_(?:heatmap|text)_example_(\d+)\.(png|pdf|svg)", old.name)
        if m and (int(m.group(1)) > len(examples) or m.group(2) not in fm):
            old.unlink()
    renderer.start()
    for k, ex in enumerate(examples, 1):
        stem = d / f"attention_heatmap_example_{k}"
        renderer.submit(FigureJob(f"heatmap example {k}", _HEATMAP, stem, (ex,), stem_arg="path"))
        if ex.key_axis == "tokens":  # the same example as readable text (issue 11)
            stem = d / f"attention_text_example_{k}"
            kw = {"auto_groups": True}
            job = FigureJob(f"text view example {k}", _TEXT, stem, (ex,), kw, "path")
            renderer.submit(job)

    log("statistics: paired tests, prediction error, correlations, strata")
    comparison = compare(
        tables,
        baseline=baseline,
        variants=variants,
        correction=options.correction,
        alpha=options.alpha,
        n_boot=options.n_boot,
        seed=options.seed,
        heads=options.heads,
        head_matching=options.head_matching,
        main_site=site,
    )
    sel = _main_selection(comparison, tables, site)
    secondary, err = _safe_call(
        log,
        "secondary metrics",
        compare,
        tables,
        baseline=baseline,
        variants=variants,
        metrics=[m for m in SECONDARY_METRICS if m in tables.per_sample.columns],
        correction=options.correction,
        alpha=options.alpha,
        n_boot=options.n_boot,
        seed=options.seed,
        heads="mean",
        sites=[sel["site"]],
        main_site=sel["site"],
    )
    notes += [err] if err else []
    prediction, err = _safe_call(
        log,
        "prediction comparison",
        compare_predictions,
        tables,
        baseline=baseline,
        n_boot=options.n_boot,
        seed=options.seed,
    )
    notes += [err] if err else []
    correlations, err = _safe_call(
        log,
        "attention-error correlation",
        attention_error_correlation,
        tables,
        site=sel["site"],
        layer=sel["layer"],  # the headline layer only: every row bootstraps
        n_boot=options.n_boot,
        seed=options.seed,
    )
    notes += [err] if err else []
    strata, err = _safe_call(
        log,
        "strata comparison",
        compare_strata,
        tables,
        **({"by": list(options.strata)} if options.strata else {}),
        bins=options.strata_bins,
        min_size=options.strata_min_size,
        site=sel["site"],
        baseline=baseline,
        variants=variants,
        n_boot=min(options.n_boot, 1000),
        seed=options.seed,
        correction=options.correction,
        alpha=options.alpha,
        layer=sel["layer"],
    )
    notes += [err] if err else []
    noise = None
    if options.groups:
        noise, err = _safe_call(log, "noise floor", noise_floor, tables, options.groups, site=site)
        notes += [err] if err else []

    # -- tables ---------------------------------------------------------------------------------
    stats_csv = _statistics_csv(comparison, models, sel)
    files.append(_write_csv(stats_csv, d / "attention_statistics.csv"))
    tests_frame = comparison.to_frame()
    sec_frame = secondary.to_frame() if secondary is not None else None
    if sec_frame is not None and sec_frame.height:
        sec_frame = sec_frame.with_columns(pl.lit("secondary").alias("family"))
        all_tests = pl.concat(
            [tests_frame.with_columns(pl.lit("main").alias("family")), sec_frame],
            how="diagonal_relaxed",
        )
    else:
        all_tests = tests_frame.with_columns(pl.lit("main").alias("family"))
    files.append(_write_csv(all_tests, d / "significance.csv"))
    files.append(_write_csv(_per_layer_head_table(tables), d / "per_layer_head.csv"))
    files += [d / "per_sample_metrics.parquet", d / "per_sample_metrics.csv"]
    pred_frame = _prediction_frame(prediction)
    if pred_frame is not None:
        files.append(_write_csv(pred_frame, d / "prediction.csv"))
    corr_frame = _norm_correlations(correlations, sel["layer"])
    if correlations is not None:
        files.append(_write_csv(correlations, d / "attention_error_correlation.csv"))
    strata_frame = _norm_strata(strata, sel["layer"])
    if strata is not None:
        files.append(_write_csv(strata, d / "strata.csv"))
    if noise is not None:
        files.append(_write_csv(noise.frame, d / "noise_floor.csv"))

    # -- figures --------------------------------------------------------------------------------
    log("figures")
    figs: dict[str, list[Path]] = {}

    def fig(name: str, fn, *a, **kw):
        renderer.submit(FigureJob(f"figure {name}", fn, d / name, a, kw))

    fig(
        "attention_statistics_comparison",
        _FIG + "plot_statistics_comparison",
        tables.per_sample,
        tests_frame,
        models=models,
        selection=sel,
        correction=options.correction,
        threshold=options.threshold,
        directions=comparison.directions,
    )
    for s in _grid_sites(tables, tests_frame):
        fig(
            f"per_layer_head_{_slug(s)}",
            _FIG + "plot_per_layer_head",
            tests_frame,
            site=s,
            baseline=baseline,
            variants=variants,
            alpha=options.alpha,
            correction=options.correction,
            head_matching=comparison.head_matching,
        )
    errors, target = _errors_frame(tables, models)
    if errors.height:
        fig(
            "attention_vs_error",
            _FIG + "plot_attention_error",
            tables.per_sample,
            errors,
            corr_frame,
            models=models,
            selection=sel,
            threshold=options.threshold,
        )
    if strata_frame is not None and strata_frame.height:
        fig(
            "strata_comparison",
            _FIG + "plot_strata",
            strata_frame,
            baseline=baseline,
            alpha=options.alpha,
        )
    fig(
        "node_specificity",
        _FIG + "plot_node_specificity",
        tables.per_sample,
        all_tests,
        models=models,
        selection=sel,
        correction=options.correction,
    )
    if _has_gold(tables, sel):
        fig(
            "gold_alignment",
            _FIG + "plot_gold_alignment",
            tables.per_sample,
            all_tests,
            models=models,
            selection=sel,
            correction=options.correction,
        )
    if prediction is not None and errors.height:
        per_model, diffs = _prediction_parts(prediction)
        fig(
            "mae_comparison",
            _FIG + "plot_mae_comparison",
            per_model,
            diffs,
            errors,
            models=models,
            target=target,
        )

    heatmaps = []
    for res in renderer.results():  # in submission order: the heatmaps, then the figures
        if res.error:
            msg = f"{res.name} skipped: {res.error[:200]}"
            log(f"warning: {msg}")
            notes.append(msg)
        if not res.paths:
            continue
        files.extend(res.paths)
        if res.name.startswith("heatmap example"):
            heatmaps.append(res.paths[0])
        elif not res.name.startswith("text view example"):
            figs[res.name.removeprefix("figure ")] = list(res.paths)

    # -- summary + report -------------------------------------------------------------------------
    summary = build_summary(
        state=state,
        options=options,
        tables=tables,
        comparison=comparison,
        selection=sel,
        prediction=prediction,
        correlations=corr_frame,
        strata=strata_frame,
        noise=noise,
        examples=examples,
        figures=figs,
        notes=notes,
        target=target,
        written=[p for p in files if p is not None],
        secondary=secondary,
    )
    (d / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2, default=str))
    files.append(d / "summary.json")
    text = R.render_report(summary, stats=stats_csv, lang=options.lang)
    (d / "report.md").write_text(text, encoding="utf-8")
    files.append(d / "report.md")
    log(f"wrote {len(files)} files to {d}")
    return AnalysisResult(
        save_dir=d,
        tables=tables,
        comparison=comparison,
        prediction=prediction,
        correlations=correlations,
        strata=strata,
        noise=noise,
        summary=summary,
        files=[p for p in files if p is not None],
        examples=examples,
    )


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def _grid_sites(tables, tests: pl.DataFrame) -> list[str]:
    """Sites with more than one (layer, head) cell tested."""
    out = []
    if tests.height == 0:
        return out
    for s in tables.sites:
        t = tests.filter(pl.col("site") == s)
        if t.height and t.select(pl.struct("layer", "head").n_unique()).item() > 1:
            out.append(s)
    return out


def _has_gold(tables, sel) -> bool:
    ps = tables.per_sample
    if "gold_mass" not in ps.columns or ps.height == 0:
        return False
    sub = ps.filter((pl.col("site") == sel["site"]) & pl.col("gold_mass").is_not_nan())
    return sub.height > 0


def _prediction_parts(prediction) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(per_model, differences) with the MAE-difference CI as ``ci_low`` / ``ci_high``."""
    per_model = prediction.per_model
    diffs = prediction.differences
    if diffs is not None and diffs.height:
        ren = {}
        for want, cands in (
            ("ci_low", ("mae_diff_ci_low", "ci_diff_low")),
            ("ci_high", ("mae_diff_ci_high", "ci_diff_high")),
        ):
            if want not in diffs.columns:
                c = next((c for c in cands if c in diffs.columns), None)
                if c:
                    ren[c] = want
        diffs = diffs.rename(ren)
    return per_model, diffs


def _prediction_frame(prediction) -> pl.DataFrame | None:
    if prediction is None:
        return None
    per_model, diffs = _prediction_parts(prediction)
    out = per_model.with_columns(pl.lit(prediction.baseline).alias("baseline"))
    if diffs is not None and diffs.height and "variant" in diffs.columns:
        keep = [c for c in diffs.columns if c != "baseline"]
        out = out.join(diffs.select(keep).rename({"variant": "model"}), on="model", how="left")
    return out


def _norm_correlations(c: pl.DataFrame | None, layer: int) -> pl.DataFrame | None:
    """The engine's correlation rows of ``layer`` as ``kind, model, metric, n, rho, ci_low,
    ci_high, pvalue, partial_rho, partial_p`` (figures and report)."""
    if c is None or c.height == 0:
        return None
    if "layer" in c.columns:
        c = c.filter(pl.col("layer") == layer)
    ren = {"rho_ci_low": "ci_low", "rho_ci_high": "ci_high", "p": "pvalue"}
    c = c.rename({k: v for k, v in ren.items() if k in c.columns})
    keep = [
        k
        for k in (
            "kind",
            "model",
            "metric",
            "n",
            "rho",
            "ci_low",
            "ci_high",
            "pvalue",
            "partial_rho",
            "partial_p",
        )
        if k in c.columns
    ]
    return c.select(keep)


def _num(x) -> str:
    if x is None or not math.isfinite(float(x)):
        return "?"
    return f"{float(x):.0f}" if float(x).is_integer() else f"{float(x):.3g}"


def _norm_strata(s: pl.DataFrame | None, layer: int) -> pl.DataFrame | None:
    """The engine's strata rows of ``layer`` as ``stratum`` (the stratifier), ``bin`` (order),
    ``bin_label``, ``variant, metric, n, mean_diff, ci_diff_low, ci_diff_high, p_corrected``."""
    if s is None or s.height == 0:
        return None
    if "layer" in s.columns:
        s = s.filter(pl.col("layer") == layer)
    s = s.rename({"stratum": "bin_label"}).rename({"stratifier": "stratum"})
    order = (
        s.select("stratum", "bin_label", "low")
        .unique(maintain_order=True)
        .with_columns(pl.int_range(pl.len()).over("stratum").alias("bin"))
    )
    s = s.join(order.select("stratum", "bin_label", "bin"), on=["stratum", "bin_label"])
    if "low" in s.columns and "high" in s.columns:

        def label(r) -> str:
            lo, hi = r["low"], r["high"]
            if lo is None or hi is None or lo != lo or hi != hi:  # a category: keep its name
                return r["bin_label"]
            if lo == hi:  # a tied value holding its own bin (e.g. band gap = 0)
                return f"q{r['bin'] + 1} = {_num(lo)}"
            return f"q{r['bin'] + 1} [{_num(lo)}, {_num(hi)}]"

        s = s.with_columns(
            pl.struct("bin", "low", "high", "bin_label")
            .map_elements(label, return_dtype=pl.String)
            .alias("bin_label")
        )
    return s.select(
        "stratum",
        "bin",
        "bin_label",
        "variant",
        "metric",
        "n",
        "mean_diff",
        "ci_diff_low",
        "ci_diff_high",
        "p_corrected",
    )


# ---------------------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------------------
def build_summary(
    *,
    state,
    options,
    tables,
    comparison,
    selection,
    prediction,
    correlations,
    strata,
    noise,
    examples,
    figures,
    notes,
    target,
    written=(),
    secondary=None,
) -> dict[str, Any]:
    """The documented ``summary.json`` (see README, section analyze)."""
    from .compare import MAIN_METRICS

    facts = state["store"]
    baseline, variants = state["baseline"], list(state["variants"])
    verdict = comparison.verdict

    def at_selection(t) -> bool:
        return (
            t.site == selection["site"]
            and t.layer == selection["layer"]
            and t.head == selection["head"]
        )

    main = [_test_dict(t) for t in comparison.tests if at_selection(t) and t.metric in MAIN_METRICS]
    secondary_rows = [
        _test_dict(t) for t in (secondary.tests if secondary is not None else []) if at_selection(t)
    ]
    cells = [
        t
        for t in comparison.tests
        if t.site == selection["site"] and t.metric in MAIN_METRICS and not at_selection(t)
    ]
    grid = {
        "n_tests": len(cells),
        "n_significant": sum(
            1
            for t in cells
            if t.p_corrected is not None
            and math.isfinite(t.p_corrected)
            and t.p_corrected < comparison.alpha
        ),
    }
    family = len(comparison.tests)
    ps = tables.per_sample
    identical = {}
    sub = (
        ps.filter(
            (pl.col("site") == selection["site"])
            & (pl.col("layer") == selection["layer"])
            & (pl.col("head") == selection["head"])
        )
        if ps.height
        else ps
    )
    if "identical_rows" in ps.columns:
        for m in [baseline, *variants]:
            x = sub.filter(pl.col("model") == m)
            if x.height:
                identical[m] = {
                    "n_samples": int(x.height),
                    "n_identical": int(x["identical_rows"].cast(pl.Int64).fill_null(0).sum()),
                }
    diag = tables.diagnostics
    degenerate, codes = {}, {}
    try:
        degenerate = diag.degenerate_sites()
        codes = diag.degenerate_codes()
    except Exception:  # noqa: BLE001
        degenerate, codes = {}, {}
    warnings = _warnings(facts, tables, comparison, identical, degenerate, variants, notes, codes)
    pred = None
    if prediction is not None:
        per_model, diffs = _prediction_parts(prediction)
        pred = {
            "target": getattr(prediction, "target", target),
            "per_model": {r["model"]: r for r in per_model.iter_rows(named=True)},
            "differences": [] if diffs is None else diffs.to_dicts(),
            "n_boot": getattr(prediction, "n_boot", None),
            "seed": getattr(prediction, "seed", None),
        }
    ex = []
    for k, e in enumerate(examples, 1):
        ex.append(
            {
                "index": k,
                "sample_id": e.sample_id,
                "file": f"attention_heatmap_example_{k}.{options.formats[0]}",
                "site": e.site,
                "layer": e.layer,
                "head": "head-mean" if e.head is None else e.head,
                "jsd": e.jsd,
                "metrics": e.metrics,
            }
        )
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
        "statistics": {
            "correction": comparison.correction,
            "alpha": comparison.alpha,
            "n_boot": comparison.n_boot,
            "seed": comparison.seed,
            "primary_test": comparison.primary,
            "head_matching": comparison.head_matching,
            "family_size": family,
            "directions": dict(comparison.directions),
        },
        "verdict": {
            "overall": verdict.overall,
            "per_metric": dict(verdict.per_metric),
            "explanation": verdict.explanation,
        },
        "main_results": main,
        "prediction": pred,
        "correlations": None if correlations is None else correlations.to_dicts(),
        "strata": None if strata is None else strata.to_dicts(),
        "noise_floor": None if noise is None else _noise_summary(noise, selection["layer"]),
        "diagnostics": {
            "messages": list(getattr(diag, "messages", []) or []),
            "degenerate_sites": degenerate,
            "degenerate_codes": codes,
            "identical_rows": identical,
        },
        "warnings": warnings,
        "examples": ex,
        "figures": {k: [p.name for p in v] for k, v in figures.items()},
        "secondary_results": secondary_rows,
        "grid_counts": grid,
        "files_written": [
            {"name": n, "description": describe_file(n)}
            for n in dict.fromkeys([*(p.name for p in written), "summary.json", "report.md"])
        ],
    }


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
    from .compare import MAIN_METRICS

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
    order = {m: i for i, m in enumerate([*MAIN_METRICS, "jsd", "tv"])}
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
    return out
