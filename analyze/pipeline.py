"""One analysis run: store -> tables -> statistics -> files in a save directory; and re-plotting.

:func:`run_analysis` scans the store once (:func:`analyze.table.compute_tables`), caches the
per-sample tables and the example heatmaps' matrices in the save directory, then calls
:func:`render`, which computes every statistic from the cached tables (:func:`statistics`) and
writes the CSV tables (:mod:`analyze.csvtables`), the figures, ``summary.json``
(:mod:`analyze.summary`) and ``report.md`` (:mod:`analyze.report`). :func:`replot` calls
:func:`render` again from the cache alone (no store, no scan), so figures and the report can be
re-made in seconds, e.g. in another language or format. Every file is written through
:mod:`analyze.files`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from attncmp.store import atomic, open_store

from . import csvtables as T
from . import outputset
from . import registry as REG
from .examples import choose_examples, example_metrics
from .files import write_csv, write_json, write_text
from .heatmap import HeatmapData, default_site, heatmap_data
from .options import AnalysisError, AnalysisOptions, logger
from .render import FigureJob, FigureRenderer, Reuse, prestart_workers
from .summary import SUMMARY_FORMAT, SUMMARY_VERSION, build_summary, jsonable, store_facts

__all__ = [
    "CACHE_DIR",
    "AnalysisResult",
    "Statistics",
    "prepare_save_dir",
    "render",
    "replot",
    "run_analysis",
    "statistics",
    "statistics_key",
]

CACHE_DIR = "analysis_cache"
# matplotlib (figures, heatmap/text drawing) and scipy (statistics) are imported where used, so
# `attncmp analyze` reaches its first chunk without them; figure functions are named here and
# imported by the process that draws them (analyze.render)
_FIG = "attncmp.analyze.figures:"
_HEATMAP = "attncmp.analyze.heatmap:plot_heatmap"
_TEXT = "attncmp.analyze.textview:plot_text"


@dataclass
class Statistics:
    """Every statistic of one analysis, computed from the tables (:func:`statistics`).

    ``selection``: the headline cell (``site``, ``layer`` = the last hypothesis layer, ``layers``
    = all of them, ``head = -1``: head-mean); ``notes``: secondary analyses that failed."""

    comparison: Any
    selection: dict[str, Any]
    prediction: Any = None
    correlations: pl.DataFrame | None = None
    strata: pl.DataFrame | None = None
    noise: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass
class AnalysisResult:
    """Everything one analysis produced (objects and the files written).

    ``statistics`` (:class:`Statistics`; its parts also as ``comparison``, ``prediction``,
    ``correlations``, ``strata``, ``noise``) is None when a re-plot kept the statistics because
    nothing they depend on changed (:func:`replot`); ``summary`` (summary.json) holds every
    result either way."""

    save_dir: Path
    tables: Any
    statistics: Statistics | None
    summary: dict[str, Any]
    files: list[Path]
    examples: list[HeatmapData]
    keys: dict[str, str] = field(default_factory=dict)  # file name -> fingerprint
    kept: list[Path] = field(default_factory=list)  # unchanged files of the previous set (replot)

    @property
    def comparison(self):
        return None if self.statistics is None else self.statistics.comparison

    @property
    def prediction(self):
        return None if self.statistics is None else self.statistics.prediction

    @property
    def correlations(self) -> pl.DataFrame | None:
        return None if self.statistics is None else self.statistics.correlations

    @property
    def strata(self) -> pl.DataFrame | None:
        return None if self.statistics is None else self.statistics.strata

    @property
    def noise(self):
        return None if self.statistics is None else self.statistics.noise

    @property
    def verdict(self):
        if self.comparison is None:
            raise AnalysisError(
                "this re-plot kept the statistics (nothing they depend on changed): read "
                "summary['verdict'], or re-plot with force=True to compute them again"
            )
        return self.comparison.verdict


def prepare_save_dir(save_dir: str | os.PathLike | None) -> Path:
    """Create ``save_dir`` if needed and check it is writable (one-line errors)."""
    if save_dir is None or not str(save_dir).strip():
        raise AnalysisError(
            "--save-dir is empty; pass a directory for the outputs, e.g. ./analysis"
        )
    d = Path(save_dir).expanduser()
    _check_utf8(d, "--save-dir")
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


def _check_utf8(path: Path, what: str) -> None:
    """Paths are written into summary.json and report.md (UTF-8): refuse one that is not."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "replace").decode("utf-8")
        raise AnalysisError(
            f"{what} {shown}: the path is not valid UTF-8; rename it or use another path"
        ) from None


def _write_set(out: Path, options: AnalysisOptions, write, *, keep: bool) -> AnalysisResult:
    """Run ``write(stage)`` (which writes one analysis into the staging directory ``stage`` and
    returns its result) and move the complete set into ``out`` (see :mod:`.outputset`): a failed
    or killed run leaves the previous outputs in ``out`` whole."""
    stage = outputset.new_stage(out)
    base, caller_log = logger(options), options.log
    options.log = lambda msg: base(msg.replace(str(stage), str(out)))
    try:
        res = write(stage)
    except Exception as e:
        outputset.discard(stage)
        free = atomic.free_bytes(out)
        if atomic.is_disk_full(e) or (free is not None and free < (4 << 20)):
            raise AnalysisError(
                f"disk full while writing the analysis into {out}: the previous outputs there are "
                "kept; free space and re-run the same command"
            ) from None
        raise
    except BaseException:
        outputset.discard(stage)
        raise
    finally:
        options.log = caller_log
    moved = outputset.publish(stage, out, keep=keep, keys=res.keys)
    res.save_dir = out
    res.files = [moved.get(p, p) for p in res.files]
    return res


def check_request(store, options: AnalysisOptions) -> tuple[str, list[str], str]:
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


def check_strata(store, options: AnalysisOptions) -> None:
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
    from .table import MetricOptions, compute_tables, engine_workers

    options = options or AnalysisOptions()
    options.validate()
    log = logger(options)
    out = prepare_save_dir(save_dir)
    if isinstance(store_paths, (str, os.PathLike)):
        store_paths = [store_paths]
    paths = [Path(p) for p in store_paths]
    if not paths:
        raise AnalysisError("no store path given; pass the attention store (.h5) to analyse")
    for p in paths:
        _check_utf8(p, "store")
    with open_store(paths) as store:
        baseline, variants, site = check_request(store, options)
        check_strata(store, options)
        facts = store_facts(store)
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
        if not engine_workers(store, mopt.chunk_samples, options.jobs):
            # the scan runs here: the figure workers' server imports matplotlib meanwhile
            prestart_workers(options.jobs)
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

        tables = compute_tables(
            store,
            options=mopt,
            progress=None if options.quiet else progress,
            jobs=options.jobs,
        )
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
        if options.example_strategy != "ids" and len(ids) < options.examples:
            print(
                f"note: --examples {options.examples}: the store has {store.n_samples} "
                f"samples; drew {len(ids)} heatmap example(s)",
                file=sys.stderr,
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
            example_metrics(tables, d)
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
    state = {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "store": facts,
        "options": options.to_dict(),
        "baseline": baseline,
        "variants": variants,
        "site": site,
        "example_ids": ids,
        "group_metrics": group_frame is not None,  # per_group_metrics.csv (written by analyze)
    }

    def write(stage: Path) -> AnalysisResult:
        if group_frame is not None:
            write_csv(group_frame, stage / "per_group_metrics.csv")
        tables.save(stage)
        cache = stage / CACHE_DIR
        cache.mkdir(exist_ok=True)
        for k, d in enumerate(examples, 1):
            d.save(cache / f"example_{k}.npz")
        write_json(jsonable(state), cache / "analysis_state.json")
        result = render(stage, tables=tables, state=state, options=options, examples=examples)
        from .explorer import add_explorer  # explorer.html: every sample, browsable offline

        # the logger of the staging run: it names the final directory, not the staging one
        return add_explorer(result, paths, log=logger(options))

    return _write_set(out, options, write, keep=False)


def replot(
    save_dir: str | os.PathLike,
    *,
    formats: Sequence[str] | None = None,
    lang: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
    workers: int | None = None,
    force: bool = False,
) -> AnalysisResult:
    """Re-render every figure, table and the report of an earlier analysis from its cache
    (``per_sample_metrics.parquet`` & co. and ``analysis_cache/``); never opens the store.
    ``workers``: figure-drawing processes (default: the available cores; 1 draws here). A figure
    whose file already holds exactly what it would draw (same fingerprint: drawing code, library
    versions, input content; file unchanged since) is kept unless ``force``; the statistics,
    tables, summary and report are always computed and written again."""
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
    from .table import TABLE_FILES

    why = outputset.problem(d, inputs=set(TABLE_FILES.values()))
    if why is not None:
        raise AnalysisError(
            f"{d}: {why}; re-run `attncmp analyze STORE --save-dir {d}` to write it again"
        )
    state = json.loads(state_path.read_text())
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
    key = statistics_key(state, options)
    kept = None if force else kept_summary(d, key)
    if kept is None:  # figures to draw (all, after --force or an upgrade): workers start now
        prestart_workers(workers)
    try:
        tables = MetricTables.load(d)
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as e:  # a damaged cache
        raise AnalysisError(
            f"{d}: cached tables unreadable ({e}); re-run `attncmp analyze`"
        ) from None
    examples = [
        HeatmapData.load(p)
        for p in sorted(
            (d / CACHE_DIR).glob("example_*.npz"), key=lambda p: int(re.sub(r"\D", "", p.stem))
        )
    ]
    if kept is not None:
        logger(options)(
            "statistics: unchanged since they were computed (same cache, options and code); "
            "kept with every table and figure, report written again (--force recomputes)"
        )

        def report_only(stage: Path) -> AnalysisResult:
            from . import report as R
            from .summary import restamp

            summary = restamp(kept, options)
            files = [
                write_json(jsonable(summary), stage / "summary.json"),
                write_text(R.render_report(summary, lang=options.lang), stage / "report.md"),
            ]
            same = [d / n for n in _recorded_outputs(kept)]
            return AnalysisResult(
                save_dir=stage,
                tables=tables,
                statistics=None,
                summary=summary,
                files=[*same, *files],
                examples=examples,
                keys={"summary.json": key},
                kept=same,
            )

        res = _write_set(d, options, report_only, keep=True)
    else:
        res = _write_set(
            d,
            options,
            lambda stage: render(
                stage,
                tables=tables,
                state=state,
                options=options,
                examples=examples,
                workers=workers,
                reuse=None if force else outputset.unchanged(d),
            ),
            keep=True,
        )
    if (d / "explorer.html").exists():
        logger(options)(
            f"note: {d / 'explorer.html'} still holds the report of the analysis; "
            f"`attncmp view {d}` writes it again with this one (it needs the store)"
        )
    return res


def statistics_key(state: dict[str, Any], options: AnalysisOptions) -> str:
    """The fingerprint of everything the statistics, tables and figures of an analysis depend on
    besides the cached tables and examples (which the save directory's manifest vouches for):
    the analysis code and library versions (:func:`analyze.fingerprint.code_version`), the
    analysed store's facts and selection, and the options, except the report language and
    progress output. Recorded with summary.json; a re-plot with the same key keeps them."""
    from .fingerprint import code_version, content_hash

    opts = {k: v for k, v in options.to_dict().items() if k not in ("lang", "quiet")}
    facts = {k: v for k, v in state.items() if k != "options"}
    text = json.dumps(jsonable({"state": facts, "options": opts}), sort_keys=True, default=str)
    return content_hash((code_version(), text))


def _recorded_outputs(summary: dict[str, Any]) -> list[str]:
    """The files a summary lists as written, but summary.json and report.md themselves."""
    names = [f.get("name") for f in summary.get("files_written", []) if isinstance(f, dict)]
    return [n for n in names if n and n not in ("summary.json", "report.md")]


def kept_summary(d: Path, key: str) -> dict | None:
    """summary.json of ``d`` when a re-plot would compute exactly it again: recorded with ``key``
    (:func:`statistics_key`), and it and every file it lists unchanged since (the manifest);
    else None (the statistics are computed again)."""
    if outputset.unchanged(d)(key, "summary.json") is None:
        return None
    try:
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("version") != SUMMARY_VERSION:
        return None
    return summary if outputset.intact(d, _recorded_outputs(summary)) else None


# ---------------------------------------------------------------------------------------------
# render: statistics, then files
# ---------------------------------------------------------------------------------------------
def _safe_call(log, notes: list[str], what: str, fn, *a, **kw):
    """Secondary analyses and figures must not sink the whole run: a failure becomes a warning
    line on stderr and in the report (``notes``), naming the exception."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - reported, not swallowed: see the docstring
        msg = f"{what} skipped: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        log(f"warning: {msg}")
        notes.append(msg)
        return None


def statistics(tables, state: dict[str, Any], options: AnalysisOptions, log) -> Statistics:
    """The comparison (every family, one :func:`analyze.compare.compare` call), prediction
    error, attention-error correlations and strata at the headline cell, the noise floor."""
    from .compare import compare
    from .noise import noise_floor
    from .prediction import attention_error_correlation, compare_predictions
    from .strata import compare_strata

    baseline, variants, site = state["baseline"], list(state["variants"]), state["site"]
    try:
        comparison = compare(
            tables,
            baseline=baseline,
            variants=variants,
            secondary_metrics=REG.SECONDARY_METRICS,
            main_site=site,
            **options.compare_options(),
        )
    except ValueError as e:
        if "hypothesis_layers" not in str(e):
            raise
        msg = f"--hypothesis-layers: {e}".replace("`hypothesis_layers`: ", "")
        raise AnalysisError(msg) from None
    layers = list(comparison.hypothesis_layers)
    sel = {
        "site": comparison.main_site or site,
        "layer": layers[-1],
        "layers": layers,
        "head": -1,
        "head_kind": "head-mean",
    }
    st = Statistics(comparison, sel)
    safe = functools.partial(_safe_call, log, st.notes)  # a failure: a warning, not the end
    st.prediction = safe(
        "prediction comparison",
        compare_predictions,
        tables,
        baseline=baseline,
        n_boot=options.n_boot,
        seed=options.seed,
    )
    st.correlations = safe(
        "attention-error correlation",
        attention_error_correlation,
        tables,
        site=sel["site"],
        layer=sel["layer"],  # the headline layer only: every row bootstraps
        n_boot=options.n_boot,
        seed=options.seed,
    )
    st.strata = safe(
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
    if options.groups:
        st.noise = safe("noise floor", noise_floor, tables, options.groups, site=site)
    return st


def write_tables(d: Path, tables, st: Statistics, models: Sequence[str]) -> list[Path]:
    """Every CSV table (the per-sample tables were saved with the cache)."""
    files = [
        write_csv(
            T.statistics_table(st.comparison, models, st.selection["layers"]),
            d / "attention_statistics.csv",
        ),
        write_csv(st.comparison.to_frame(), d / "significance.csv"),
        write_csv(T.per_layer_head_table(tables), d / "per_layer_head.csv"),
        d / "per_sample_metrics.parquet",
        d / "per_sample_metrics.csv",
        write_csv(T.prediction_table(st.prediction), d / "prediction.csv"),
        write_csv(st.correlations, d / "attention_error_correlation.csv"),
        write_csv(st.strata, d / "strata.csv"),
    ]
    if st.noise is not None:
        files.append(write_csv(st.noise.frame, d / "noise_floor.csv"))
    return [p for p in files if p is not None]


def submit_figures(
    d: Path,
    tables,
    st: Statistics,
    options: AnalysisOptions,
    models: Sequence[str],
    renderer: FigureRenderer,
) -> None:
    """Every figure but the examples, as jobs of ``renderer`` (drawn while the caller goes on)."""
    sel, comparison = st.selection, st.comparison
    baseline, variants = models[0], list(models[1:])
    tests = comparison.to_frame()
    if tests.height:  # model-vs-chance rows share metric names with the model-vs-model ones
        tests = tests.filter(pl.col("family") != "gold-vs-chance")

    def fig(name: str, fn, *a, **kw) -> None:
        renderer.submit(FigureJob(f"figure {name}", fn, d / name, a, kw))

    fig(
        "attention_statistics_comparison",
        _FIG + "plot_statistics_comparison",
        tables.per_sample,
        tests,
        models=models,
        selection=sel,
        correction=options.correction,
        threshold=options.threshold,
        directions=comparison.directions,
    )
    for s in _grid_sites(tables, tests):
        fig(
            f"per_layer_head_{_slug(s)}",
            _FIG + "plot_per_layer_head",
            tests,
            site=s,
            baseline=baseline,
            variants=variants,
            alpha=options.alpha,
            correction=options.correction,
            head_matching=comparison.head_matching,
        )
    errors, target = T.errors_frame(tables, models)
    if errors.height:
        fig(
            "attention_vs_error",
            _FIG + "plot_attention_error",
            tables.per_sample,
            errors,
            st.correlations,
            models=models,
            selection=sel,
            threshold=options.threshold,
        )
    if st.strata is not None and st.strata.height:
        fig(
            "strata_comparison",
            _FIG + "plot_strata",
            st.strata,
            baseline=baseline,
            alpha=options.alpha,
        )
    fig(
        "node_specificity",
        _FIG + "plot_node_specificity",
        tables.per_sample,
        tests,
        models=models,
        selection=sel,
        correction=options.correction,
    )
    if _has_gold(tables, sel):
        fig(
            "gold_alignment",
            _FIG + "plot_gold_alignment",
            tables.per_sample,
            tests,
            models=models,
            selection=sel,
            correction=options.correction,
        )
    if st.prediction is not None and errors.height:
        fig(
            "mae_comparison",
            _FIG + "plot_mae_comparison",
            st.prediction.per_model,
            st.prediction.differences,
            errors,
            models=models,
            target=target,
        )


def submit_examples(
    d: Path, examples: list[HeatmapData], options: AnalysisOptions, renderer: FigureRenderer
) -> None:
    """``attention_heatmap_example_{k}`` and, over tokens, ``attention_text_example_{k}``:
    exactly one file per example and format; stale higher-numbered ones removed."""
    fm = tuple(options.formats)
    for old in [*d.glob("attention_heatmap_example_*.*"), *d.glob("attention_text_example_*.*")]:
        m = re.fullmatch(r"attention_(?:heatmap|text)_example_(\d+)\.(png|pdf|svg)", old.name)
        if m and (int(m.group(1)) > len(examples) or m.group(2) not in fm):
            old.unlink()
    for k, ex in enumerate(examples, 1):
        stem = d / f"attention_heatmap_example_{k}"
        renderer.submit(FigureJob(f"heatmap example {k}", _HEATMAP, stem, (ex,), stem_arg="path"))
        if ex.key_axis == "tokens":  # the same example as readable text (issue 11)
            stem = d / f"attention_text_example_{k}"
            kw = {"auto_groups": True}
            renderer.submit(FigureJob(f"text view example {k}", _TEXT, stem, (ex,), kw, "path"))


@dataclass
class DrawnFigures:
    """What the figure jobs produced (:func:`collect_figures`)."""

    figures: dict[str, list[Path]]  # figure name -> its files
    files: list[Path]  # every file, drawn now or reused
    keys: dict[str, str]  # file name -> fingerprint (:mod:`analyze.fingerprint`)
    reused: list[Path]  # files kept from the previous set (a re-plot)


def collect_figures(renderer: FigureRenderer, notes: list[str], log) -> DrawnFigures:
    """Wait for every figure job; a failed figure becomes a warning line (stderr, report)
    naming the exception."""
    out = DrawnFigures({}, [], {}, [])
    for res in renderer.results():  # in submission order
        if res.error:
            msg = f"{res.name} skipped: {res.error[:200]}"
            log(f"warning: {msg}")
            notes.append(msg)
        if not res.paths:
            continue
        out.files.extend(res.paths)
        out.reused.extend(res.reused)
        if res.key is not None:
            out.keys.update({p.name: res.key for p in res.paths})
        if res.name.startswith("figure "):
            out.figures[res.name.removeprefix("figure ")] = list(res.paths)
    return out


def render(
    save_dir: Path,
    *,
    tables,
    state: dict[str, Any],
    options: AnalysisOptions,
    examples: list[HeatmapData],
    workers: int | None = None,
    reuse: Reuse | None = None,
) -> AnalysisResult:
    """Statistics, CSVs, figures, summary.json and report.md from cached tables. Figures are
    drawn in ``workers`` processes (default: the analysis' ``jobs``, else the available cores)
    while the statistics run (:mod:`analyze.render`); ``reuse`` (a re-plot): figures whose
    existing file already holds what they would draw are kept, not drawn again."""
    if workers is None:
        workers = getattr(options, "jobs", None)
    with FigureRenderer(formats=tuple(options.formats), workers=workers, reuse=reuse) as renderer:
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

    log = logger(options)
    models = [state["baseline"], *state["variants"]]
    renderer.start()
    submit_examples(d, examples, options, renderer)  # they need no statistics
    log("statistics: paired tests, prediction error, correlations, strata")
    st = statistics(tables, state, options, log)
    files = write_tables(d, tables, st, models)
    if state.get("group_metrics"):  # written with the cache; listed in summary.json with the rest
        files.append(d / "per_group_metrics.csv")
    log("figures")
    submit_figures(d, tables, st, options, models, renderer)
    drawn = collect_figures(renderer, st.notes, log)
    if drawn.reused:
        log(f"  {len(drawn.reused)} figure file(s) unchanged, kept (--force draws them again)")
    drawn.keys["summary.json"] = statistics_key(state, options)
    files += drawn.files
    summary = build_summary(
        state=state,
        options=options,
        tables=tables,
        statistics=st,
        examples=examples,
        figures=drawn.figures,
        target=T.errors_frame(tables, models)[1],
        written=files,
    )
    files.append(write_json(jsonable(summary), d / "summary.json"))
    files.append(write_text(R.render_report(summary, lang=options.lang), d / "report.md"))
    log(f"wrote {len(files) - len(drawn.reused)} files to {d}")
    return AnalysisResult(
        save_dir=d,
        tables=tables,
        statistics=st,
        summary=summary,
        files=files,
        examples=examples,
        keys=drawn.keys,
        kept=drawn.reused,
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
