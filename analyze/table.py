"""Streaming per-sample metric tables: one pass over the store, chunk by chunk.

:func:`compute_tables` reads each attention site ``chunk_samples`` samples at a time, computes every
row metric for every model on all rows of the chunk at once (see :mod:`analyze.metrics`), and
reduces rows to samples. Memory is bounded by the chunk, not by the store. The result,
:class:`MetricTables`, holds polars DataFrames and can be saved and re-loaded, so figures and
statistics never rescan the attention.

Aggregation (DESIGN.md section 5): **row -> sample = mean over the sample's valid query rows**
(nodes), kept per site, layer and head (``head_kind = "head"``, ``head = 0..H-1``), plus the same
metrics of the head-averaged distribution (``head_kind = "head-mean"``, ``head = -1``: the weights
are averaged over heads first, then the row metrics are taken: the original method, labelled).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import metrics as M
from .errors import AnalysisError, AnalysisInputError
from .metrics import Diagnostics

__all__ = [
    "resolve_jobs",
    "METRICS",
    "ROW_METRIC_COLUMNS",
    "MetricOptions",
    "MetricTables",
    "compute_tables",
    "HEAD",
    "HEAD_MEAN",
    "HEADS",
]

HEAD = "head"
HEAD_MEAN = "head-mean"
HEADS = ("each", "mean", "both")  # which distributions get metrics: per head, head-mean, both

#: metric columns of ``MetricTables.per_sample`` (all float64): the row metrics, then the
#: per-(sample, layer, head) ones
METRICS = (*M.ROW_METRICS, "node_specificity", "gold_mass", "gold_chance", "gold_pointing")
ROW_METRIC_COLUMNS = M.ROW_METRICS

TABLE_FILES = {
    "per_sample": "per_sample_metrics.parquet",
    "per_sample_csv": "per_sample_metrics.csv",
    "pairwise": "pairwise.parquet",
    "samples": "samples.parquet",
    "head_similarity": "head_similarity.parquet",
    "meta": "tables_meta.json",
}


@dataclass(frozen=True)
class MetricOptions:
    """How rows become metrics.

    Attributes
    ----------
    threshold : effective tokens count keys with weight strictly above this (default 0.1).
    exclude_special : drop special-token keys ([CLS], [SEP], ...) and renormalise each row over the
        remaining keys before every metric except ``special_mass`` (default True).
    top_k : k of ``topk_mass`` (default 3).
    heads : ``"each"`` (per head), ``"mean"`` (head-averaged distribution) or ``"both"``.
    chunk_samples : samples read and processed at once (memory ~ chunk size).
    identical_tol : a (sample, layer, head) whose node specificity is <= this many nats, with
        more than one node, is flagged ``identical_rows`` (every node attends identically).
    constant_rtol : a row with ``max_weight * n_keys <= 1 + constant_rtol`` is uniform
        ("constant"); None picks 2e-3 for float16 stores and 1e-5 for float32 ones.
    pairs : which model pairs get JSD/TV: ``"all"`` (every pair, baseline first) or
        ``"baseline"`` (baseline vs each other model).
    """

    threshold: float = 0.1
    exclude_special: bool = True
    top_k: int = 3
    heads: str = "both"
    chunk_samples: int = 256
    identical_tol: float = 1e-5
    constant_rtol: float | None = None
    pairs: str = "all"

    def __post_init__(self) -> None:
        if self.heads not in HEADS:
            raise AnalysisInputError(
                f"`heads` must be 'each', 'mean' or 'both', got {self.heads!r}"
            )
        if self.pairs not in ("all", "baseline"):
            raise AnalysisInputError(f"`pairs` must be 'all' or 'baseline', got {self.pairs!r}")
        if not (0.0 <= self.threshold < 1.0):
            raise AnalysisInputError(f"`threshold` must be in [0, 1), got {self.threshold}")
        if self.top_k < 1:
            raise AnalysisInputError(f"`top_k` must be >= 1, got {self.top_k}")
        if self.chunk_samples < 1:
            raise AnalysisInputError(f"`chunk_samples` must be >= 1, got {self.chunk_samples}")


@dataclass
class MetricTables:
    """Per-sample metrics of a store, plus what is needed to interpret them.

    Attributes
    ----------
    per_sample : long table, one row per (sample, model, site, layer, head); columns
        ``sample_id, position, model, site, layer, head, head_kind, n_rows, n_keys, n_gold_rows,
        n_all_special_rows``, the :data:`METRICS` and ``identical_rows``. ``head = -1`` /
        ``head_kind = "head-mean"`` is the head-averaged distribution. ``n_rows`` counts the valid
        query rows averaged; ``n_all_special_rows`` the rows left out because (nearly) all their
        mass is on excluded special tokens (see :func:`analyze.metrics.block_metrics`);
        ``gold_mass`` / ``gold_chance`` / ``gold_pointing`` are NaN for samples without gold (not
        applicable); ``gold_chance`` is the gold mass a uniform row over the analysed keys would
        have, averaged over the same rows as ``gold_mass``. ``identical_rows``: more than one
        valid row and more than one key, and node specificity <= ``identical_tol``.
        Rows are ordered by site, model (baseline first), head kind (per head, then head-mean),
        sample position, layer and head, whatever ``chunk_samples`` was.
    pairwise : ``sample_id, position, baseline, variant, site, layer, head, head_kind, jsd, tv``:
        per-row Jensen-Shannon divergence (nats) and total variation between the two models'
        (normalised) rows, averaged over the sample's rows. Per head, heads are paired by index.
    head_similarity : ``baseline, variant, site, layer, head_baseline, head_variant, mean_jsd,
        n_samples``: JSD between the two models' per-sample mean rows of each head pair, averaged
        over samples (the cost matrix for Hungarian head matching in :func:`analyze.compare`).
    samples : ``store.samples_frame()`` (ids, sizes, targets, metadata, predictions).
    diagnostics : degenerate attention found (see :class:`analyze.metrics.Diagnostics`).
    """

    per_sample: pl.DataFrame
    pairwise: pl.DataFrame
    samples: pl.DataFrame
    diagnostics: Diagnostics
    head_similarity: pl.DataFrame
    models: list[str]
    baseline: str
    sites: dict[str, dict[str, Any]]
    n_samples: int
    is_partial: bool
    store_paths: list[str]
    split: str
    seed: int | None
    options: MetricOptions = field(default_factory=MetricOptions)
    targets: list[str] = field(default_factory=list)
    n_planned: int | None = None
    seconds: float = 0.0
    #: how the tables were computed (``jobs``, ``workers``, ``chunks``, ``worker_peak_rss_kb``,
    #: ``worker_cpu_s``);
    #: not saved, not part of the results
    run_info: dict[str, Any] = field(default_factory=dict)

    # -- convenience ----------------------------------------------------------------------------
    def metric(
        self,
        metric: str,
        *,
        model: str,
        site: str,
        layer: int = 0,
        head: int = -1,
    ) -> pl.DataFrame:
        """``sample_id, position, value`` of one metric for one model/site/layer/head
        (``head = -1``: the head-mean distribution)."""
        f = self.per_sample.filter(
            (pl.col("model") == model)
            & (pl.col("site") == site)
            & (pl.col("layer") == layer)
            & (pl.col("head") == head)
        )
        return f.select("sample_id", "position", pl.col(metric).alias("value")).sort("position")

    def main_site(self) -> str | None:
        """The first nodes -> tokens site (the fine-grained attention), else the first site."""
        for name, info in self.sites.items():
            if info.get("query_axis") == "nodes" and info.get("key_axis") == "tokens":
                return name
        return next(iter(self.sites), None)

    @classmethod
    def from_per_sample(
        cls,
        per_sample: pl.DataFrame,
        *,
        samples: pl.DataFrame | None = None,
        baseline: str | None = None,
        site_axes: dict[str, tuple[str, str]] | None = None,
        pairwise: pl.DataFrame | None = None,
        head_similarity: pl.DataFrame | None = None,
    ) -> MetricTables:
        """Tables from a per-sample frame computed elsewhere (or simulated), for
        :func:`analyze.compare` and friends. ``per_sample`` needs ``sample_id, model, site,
        layer, head, head_kind`` and metric columns; ``position`` is added (order of first
        appearance of ``sample_id``) if missing, missing metric columns are NaN.
        ``site_axes``: ``{site: (query_axis, key_axis)}`` (default nodes -> tokens)."""
        f = per_sample
        key = ["sample_id", "model", "site", "layer", "head", "head_kind"]
        missing = [c for c in key if c not in f.columns]
        if missing:
            raise AnalysisInputError(f"`per_sample` lacks columns {missing}")
        dup = f.select(key).is_duplicated()
        if dup.any():
            raise AnalysisInputError(
                f"`per_sample` has {int(dup.sum())} rows sharing (sample_id, model, site, layer, "
                "head, head_kind); one row per key is expected"
            )
        ids = list(dict.fromkeys(f["sample_id"].to_list()))
        if "position" not in f.columns:
            pos = {s: i for i, s in enumerate(ids)}
            f = f.with_columns(
                pl.col("sample_id").replace_strict(pos, return_dtype=pl.Int64).alias("position")
            )
        for col in (*METRICS, *_GROUP_INT):
            if col not in f.columns:
                f = f.with_columns(pl.lit(float("nan") if col in METRICS else 0).alias(col))
        if "identical_rows" not in f.columns:
            f = f.with_columns(pl.lit(False).alias("identical_rows"))
        models = list(dict.fromkeys(f["model"].to_list()))
        baseline = baseline or models[0]
        models = [baseline] + [m for m in models if m != baseline]
        sites: dict[str, dict[str, Any]] = {}
        for site in dict.fromkeys(f["site"].to_list()):
            g = f.filter(pl.col("site") == site)
            heads = g.filter(pl.col("head_kind") == HEAD)
            hby = {
                m: int(heads.filter(pl.col("model") == m)["head"].max() or 0) + 1 for m in models
            }
            qa, ka = (site_axes or {}).get(site, ("nodes", "tokens"))
            sites[site] = {
                "query_axis": qa,
                "key_axis": ka,
                "n_layers": int(g["layer"].max()) + 1,
                "n_heads": hby[baseline],
                "n_heads_by_model": hby,
                "description": "",
            }
        if samples is None:
            samples = pl.DataFrame({"sample_id": ids, "position": np.arange(len(ids))})
        return cls(
            per_sample=f,
            pairwise=pairwise if pairwise is not None else _empty_pairwise(),
            samples=samples,
            diagnostics=Diagnostics(None, []),
            head_similarity=head_similarity if head_similarity is not None else _empty_similarity(),
            models=models,
            baseline=baseline,
            sites=sites,
            n_samples=len(ids),
            is_partial=False,
            store_paths=[],
            split="",
            seed=None,
            targets=[c for c in ("target",) if c in samples.columns],
        )

    # -- persistence ----------------------------------------------------------------------------
    def meta_dict(self) -> dict[str, Any]:
        return {
            "format": "attncmp-metric-tables",
            "version": 1,
            "models": self.models,
            "baseline": self.baseline,
            "sites": self.sites,
            "n_samples": self.n_samples,
            "n_planned": self.n_planned,
            "is_partial": self.is_partial,
            "store_paths": self.store_paths,
            "split": self.split,
            "seed": self.seed,
            "targets": self.targets,
            "options": asdict(self.options),
            "diagnostics": self.diagnostics.to_dict(),
            "seconds": self.seconds,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``per_sample_metrics.parquet`` (+ ``.csv``), ``pairwise.parquet``,
        ``samples.parquet``, ``head_similarity.parquet`` and ``tables_meta.json`` into
        ``directory`` (created if needed); returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.per_sample.write_parquet(d / TABLE_FILES["per_sample"])
        self.per_sample.write_csv(d / TABLE_FILES["per_sample_csv"])
        self.pairwise.write_parquet(d / TABLE_FILES["pairwise"])
        self.samples.write_parquet(d / TABLE_FILES["samples"])
        self.head_similarity.write_parquet(d / TABLE_FILES["head_similarity"])
        (d / TABLE_FILES["meta"]).write_text(json.dumps(self.meta_dict(), indent=2, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> MetricTables:
        """Restore tables written by :meth:`save` (no attention is read)."""
        d = Path(directory)
        meta_path = d / TABLE_FILES["meta"]
        if not meta_path.exists():
            raise AnalysisError(
                f"{meta_path}: no saved metric tables here; run `attncmp analyze` first"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "attncmp-metric-tables":
            raise AnalysisInputError(f"{meta_path}: not an attncmp metric-tables file")
        if int(meta.get("version", 0)) > 1:
            raise AnalysisInputError(
                f"{meta_path}: tables version {meta['version']} is newer; upgrade attncmp"
            )
        opts = MetricOptions(**meta["options"])
        return cls(
            per_sample=pl.read_parquet(d / TABLE_FILES["per_sample"]),
            pairwise=pl.read_parquet(d / TABLE_FILES["pairwise"]),
            samples=pl.read_parquet(d / TABLE_FILES["samples"]),
            head_similarity=pl.read_parquet(d / TABLE_FILES["head_similarity"]),
            diagnostics=Diagnostics.from_dict(meta["diagnostics"]),
            models=list(meta["models"]),
            baseline=meta["baseline"],
            sites=dict(meta["sites"]),
            n_samples=int(meta["n_samples"]),
            is_partial=bool(meta["is_partial"]),
            store_paths=list(meta["store_paths"]),
            split=meta["split"],
            seed=meta["seed"],
            options=opts,
            targets=list(meta.get("targets", [])),
            n_planned=meta.get("n_planned"),
            seconds=float(meta.get("seconds", 0.0)),
        )


# ----------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------
_COUNT_KEYS = M.DIAGNOSTIC_COUNTS


def compute_tables(
    store,
    *,
    options: MetricOptions = MetricOptions(),
    sites: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    jobs: int | None = 1,
) -> MetricTables:
    """Stream ``store`` and compute every per-sample metric (see :class:`MetricTables`).

    Parameters
    ----------
    store : an open :class:`store.Store` (see :func:`store.open_store`) or a path.
    options : :class:`MetricOptions`.
    sites, models : restrict to these (default: all; the baseline always comes first).
    progress : called as ``progress(done, total)`` in units of sample-sites after each chunk.
    jobs : worker processes (``None`` or 0: every core this process may use,
        :func:`resolve_jobs`). With more than one, chunks are computed in a pool of processes
        that each open the store themselves; every chunk is computed by the same code whatever
        the number of workers and its results are combined in chunk order, so the tables are
        identical to ``jobs=1`` bit for bit. Memory: each worker holds one chunk
        (``options.chunk_samples`` samples of one site, every model) and its block temporaries
        at a time, and writes its results to disk; the calling process holds only the final
        tables.
    """
    from attncmp.store import Store, open_store

    if not isinstance(store, Store):
        store = open_store(store)
    t0 = time.perf_counter()
    all_models = store.models
    baseline = store.baseline
    models = _chosen("models", models, all_models)
    if baseline in models:
        models = [baseline] + [m for m in models if m != baseline]
    else:
        baseline = models[0]
    site_infos = store.sites(baseline)
    sites = _chosen("sites", sites, list(site_infos))
    if options.pairs == "all":
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    else:
        pairs = [(baseline, b) for b in models[1:]]
    crtol = options.constant_rtol
    if crtol is None:
        crtol = 2e-3 if store.attention_dtype == "float16" else 1e-5
    want_each = options.heads in ("each", "both")
    want_mean = options.heads in ("mean", "both")

    jobs = resolve_jobs(jobs)
    site_jobs: list[_SiteJob] = []
    site_meta: dict[str, dict[str, Any]] = {}
    for site in sites:
        info = site_infos[site]
        heads_of = {}
        for m in models:
            mi = store.sites(m)[site]
            if mi.n_layers != info.n_layers:
                raise AnalysisInputError(
                    f"site {site!r}: model {m!r} has {mi.n_layers} layers, {baseline!r} has "
                    f"{info.n_layers}; layers must correspond across models"
                )
            heads_of[m] = mi.n_heads
        site_meta[site] = {
            "query_axis": info.query_axis,
            "key_axis": info.key_axis,
            "n_layers": info.n_layers,
            "n_heads": info.n_heads,
            "n_heads_by_model": heads_of,
            "description": info.description,
        }
        site_jobs.append(
            _SiteJob(
                site, info.n_layers, heads_of, models, pairs, options, crtol, want_each, want_mean
            )
        )
    tasks = _tasks(len(site_jobs), store.n_samples, options.chunk_samples)
    total_units = store.n_samples * len(sites)
    states = {sj.site: _SiteState(models) for sj in site_jobs}
    run_info: dict[str, Any] = {"jobs": jobs, "chunks": len(tasks), "workers": 0}

    spill = _Spill()  # per-chunk results go to a temporary directory: memory ~ one chunk
    per_acc = spill.table("per_sample", _PER_CONSTS, _empty_per_sample())
    pair_acc = spill.table("pairwise", _PAIR_CONSTS, _empty_pairwise())
    done = 0
    try:
        for res in _chunk_results(store, site_jobs, tasks, jobs, spill.root, run_info):
            for key, path in res.per:
                per_acc.register(key, path)
            for key, path in res.pair:
                pair_acc.register(key, path)
            states[res.site].absorb(res)  # in chunk order: float sums are order-fixed
            done += res.n
            if progress is not None:
                progress(done, total_units)
            del res
        _release_memory()  # hand the chunks' freed heap back before the tables are built
        per = per_acc.collect()
        pair = pair_acc.collect()
    finally:
        spill.close()
    sim_parts: list[pl.DataFrame] = []
    diag_rows: list[dict[str, Any]] = []
    for sj in site_jobs:
        st_ = states[sj.site]
        sim_parts.extend(st_.similarity_frames(sj.site))
        for m in models:
            c = st_.counts[m]
            code = _reason_code(c)
            diag_rows.append(
                {
                    "model": m,
                    "site": sj.site,
                    **c,
                    "degenerate": code in ("key_len_1", "uniform"),
                    "reason": DEGENERATE_REASONS.get(code, ""),
                    "reason_code": code,
                }
            )
    diag_frame = pl.DataFrame(diag_rows) if diag_rows else None
    diagnostics = Diagnostics(diag_frame, _messages(diag_rows))
    if store.is_partial:
        diagnostics.messages.insert(
            0,
            f"partial store: {store.n_samples} of {store.n_planned} planned samples are committed",
        )
    return MetricTables(
        per_sample=per,
        pairwise=pair,
        samples=store.samples_frame(),
        diagnostics=diagnostics,
        head_similarity=_concat(sim_parts, _empty_similarity()),
        models=list(models),
        baseline=baseline,
        sites=site_meta,
        n_samples=store.n_samples,
        is_partial=store.is_partial,
        store_paths=[str(p) for p in store.paths],
        split=store.split,
        seed=store.selection_seed,
        options=options,
        targets=list(store.targets),
        n_planned=store.n_planned,
        seconds=time.perf_counter() - t0,
        run_info=run_info,
    )


def _chosen(arg: str, chosen: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    """``chosen`` (None: all of ``known``), each checked to be one of ``known``; ``arg`` is the
    argument's name for the error."""
    if chosen is None:
        return list(known)
    chosen = list(chosen)
    bad = [x for x in chosen if x not in known]
    if bad:
        raise AnalysisInputError(f"`{arg}`: {bad} not in the store; it has {list(known)}")
    return chosen


def _concat(parts: list[pl.DataFrame], empty: pl.DataFrame) -> pl.DataFrame:
    if not parts:
        return empty
    return pl.concat(parts, how="vertical", rechunk=True)


def _row_key_schema(models: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The columns that say which attention a per-sample row is about: the sample, the model(s)
    (``models``: ``model``, or ``baseline`` and ``variant``), the site, layer and head."""
    return {
        "sample_id": pl.String,
        "position": pl.Int64,
        **models,
        "site": pl.String,
        "layer": pl.Int32,
        "head": pl.Int32,
        "head_kind": pl.String,
    }


def _empty_per_sample() -> pl.DataFrame:
    schema = {
        **_row_key_schema({"model": pl.String}),
        "n_rows": pl.Int32,
        "n_keys": pl.Int32,
        "n_gold_rows": pl.Int32,
        "n_all_special_rows": pl.Int32,
        **{m: pl.Float64 for m in METRICS},
        "identical_rows": pl.Boolean,
    }
    return pl.DataFrame(schema=schema)


def _empty_pairwise() -> pl.DataFrame:
    schema = {
        **_row_key_schema({"baseline": pl.String, "variant": pl.String}),
        "jsd": pl.Float64,
        "tv": pl.Float64,
    }
    return pl.DataFrame(schema=schema)


def _empty_similarity() -> pl.DataFrame:
    schema = {
        "baseline": pl.String,
        "variant": pl.String,
        "site": pl.String,
        "layer": pl.Int64,
        "head_baseline": pl.Int64,
        "head_variant": pl.Int64,
        "mean_jsd": pl.Float64,
        "n_samples": pl.Int64,
    }
    return pl.DataFrame(schema=schema)


def _messages(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        where = f"site {r['site']!r}, model {r['model']!r}"
        if r["reason"]:
            out.append(f"{where}: {'degenerate: ' if r['degenerate'] else ''}{r['reason']}")
        if r["n_rows"] and 0 < r["rows_key_len_1"] < r["n_rows"]:
            out.append(f"{where}: {r['rows_key_len_1']} of {r['n_rows']} rows have a single key")
        if r["constant_rows"] and not r["degenerate"]:
            out.append(f"{where}: {r['constant_rows']} of {r['n_rows']} rows are uniform")
        if r["invalid_rows"]:
            out.append(f"{where}: {r['invalid_rows']} rows sum to 0 or are not finite (excluded)")
        if r["all_special_mass_rows"]:
            out.append(
                f"{where}: {r['all_special_mass_rows']} rows put all mass on special tokens "
                "(excluded from the metrics; per sample: n_all_special_rows)"
            )
        if r["all_special_key_rows"]:
            out.append(f"{where}: {r['all_special_key_rows']} rows have only special keys (kept)")
        if r["identical_row_samples"] and not r["reason"]:
            out.append(
                f"{where}: in {r['identical_row_samples']} samples every node attends identically "
                "(head-mean node specificity ~0)"
            )
    return out


# per-(sample, layer, head) outputs of one model and head kind, filled block by block
_GROUP_FLOAT = METRICS
_GROUP_INT = ("n_rows", "n_keys", "n_gold_rows", "n_all_special_rows")
#: weights per 2-D block (rows of one length): small enough to stay in cache
BLOCK_ELEMENTS = 1 << 18


def _new_groups(n: int, gold: bool) -> dict[str, np.ndarray]:
    out = {k: np.zeros(n) for k in _GROUP_FLOAT}
    for k in _GROUP_INT:
        out[k] = np.zeros(n, dtype=np.int64)
    if not gold:
        for k in M._GOLD_ROW:
            out[k][:] = np.nan
    return out


def _group_mean(v: np.ndarray, gs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring mean of consecutive row groups starting at ``gs`` (and the count)."""
    bad = np.isnan(v)
    if not bad.any():
        sizes = np.diff(np.append(gs, len(v)))
        return np.add.reduceat(v, gs) / sizes, sizes
    cnt = np.add.reduceat((~bad).astype(np.int64), gs)
    tot = np.add.reduceat(np.where(bad, 0.0, v), gs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan), cnt


def _split(members: np.ndarray, el: np.ndarray, limit: int) -> list[np.ndarray]:
    """Split consecutive samples into blocks of at most ``limit`` weights (whole samples)."""
    cs = np.cumsum(el)
    if cs[-1] <= limit:
        return [members]
    cuts = np.unique(np.searchsorted(cs, np.arange(limit, cs[-1], limit), side="right"))
    cuts = cuts[(cuts > 0) & (cuts < len(members))]
    return np.split(members, cuts)


def _segments(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated ranges ``[starts[i], starts[i] + sizes[i])`` (vectorised)."""
    total = int(sizes.sum())
    csum = np.cumsum(sizes) - sizes
    return np.repeat(starts - csum, sizes) + np.arange(total, dtype=np.int64)


def _group_stats(rows: dict[str, np.ndarray], gs: np.ndarray, has_gold: bool):
    """Row -> group means of every row metric at once (NaN-ignoring): (names, means, counts)."""
    names = list(M.ROW_METRICS) + (list(M._GOLD_ROW) if has_gold else [])
    V = np.stack([rows[n] for n in names])
    bad = np.isnan(V)
    if not bad.any():
        sizes = np.diff(np.append(gs, V.shape[1]))
        mean = np.add.reduceat(V, gs, axis=1) / sizes
        cnt = np.broadcast_to(sizes, mean.shape)
    else:
        cnt = np.add.reduceat((~bad).astype(np.int64), gs, axis=1)
        V[bad] = 0.0
        tot = np.add.reduceat(V, gs, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return names, mean, cnt


def _informative(kept: np.ndarray, nkeys: np.ndarray) -> np.ndarray:
    """Groups whose node specificity can show identical rows: more than one kept row and more
    than one key (with one key every row is the same one-hot, whatever the model does)."""
    return (kept > 1) & (nkeys > 1)


def _count(cnt, rows: dict[str, np.ndarray], r0: int, r1: int, spec, multi, tol) -> None:
    sl = slice(r0, r1)
    cnt["n_rows"] += r1 - r0
    cnt["rows_key_len_1"] += int(np.count_nonzero(rows["n_keys"][sl] == 1))
    cnt["constant_rows"] += int(np.count_nonzero(rows["constant"][sl]))
    cnt["all_special_mass_rows"] += int(np.count_nonzero(rows["all_special_mass"][sl]))
    cnt["all_special_key_rows"] += int(np.count_nonzero(rows["all_special_keys"][sl]))
    cnt["invalid_rows"] += int(np.count_nonzero(rows["invalid"][sl]))
    cnt["head_groups"] += int(multi.sum())
    cnt["identical_row_heads"] += int(
        np.count_nonzero(multi & (np.nan_to_num(spec, nan=np.inf) <= tol))
    )


def _cross_head_jsd(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """JSD between every head of A and every head of B, per sample and layer.

    A ``[s, L, Ha, K]`` and B ``[s, L, Hb, K]`` (mean rows); returns ``[s, L, Ha, Hb]``."""
    jsd, _ = M.block_divergence(A[:, :, :, None, :], B[:, :, None, :, :])
    return jsd


def _segment_positions(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions in ragged data (segment ``i`` at ``offsets[i]:offsets[i + 1]``) as
    (segment, position within the segment)."""
    seg = np.searchsorted(offsets, flat, side="right") - 1
    return seg, flat - offsets[seg]


def _process_chunk(
    chunk, L, heads_of, models, pairs, options, crtol, want_each, want_mean, counts, sim_acc, sim_n
):
    """Metrics of one chunk, block by block (samples of equal key length, bounded size)."""
    Q = chunk.n_query.astype(np.int64)
    K = chunk.n_key.astype(np.int64)
    c = len(Q)
    site = chunk.site
    pos = np.asarray(chunk.index, dtype=np.int64)
    tol = options.identical_tol
    kw = dict(
        threshold=options.threshold,
        top_k=options.top_k,
        exclude_special=options.exclude_special,
        constant_rtol=crtol,
    )
    # special keys and gold cells as (chunk sample, local position) items
    sp_s, sp_k = _segment_positions(np.flatnonzero(chunk.key_special), chunk.key_offsets)
    has_gold = chunk.gold is not None and chunk.gold_offsets is not None
    gd_s = gd_c = None
    if has_gold:
        gd_s, gd_c = _segment_positions(np.flatnonzero(chunk.gold), chunk.gold_offsets)
    ctx = _ChunkContext(
        chunk=chunk,
        Q=Q,
        L=L,
        heads_of=heads_of,
        models=models,
        pairs=pairs,
        kw=kw,
        tol=tol,
        where=np.full(c, -1, dtype=np.int64),
        sp_s=sp_s,
        sp_k=sp_k,
        gd_s=gd_s,
        gd_c=gd_c,
        has_gold=has_gold,
        want_each=want_each,
        want_mean=want_mean,
        out_head={m: _new_groups(c * L * heads_of[m], has_gold) for m in models},
        out_mean={m: _new_groups(c * L, has_gold) for m in models},
        pair_head={
            (a, b): (np.zeros(c * L * heads_of[a]), np.zeros(c * L * heads_of[a]))
            for a, b in pairs
            if heads_of[a] == heads_of[b]
        },
        pair_mean={(a, b): (np.zeros(c * L), np.zeros(c * L)) for a, b in pairs},
        ident_mean={m: np.zeros(c, dtype=bool) for m in models},
        counts=counts,
        sim_acc=sim_acc,
        sim_n=sim_n,
    )

    for kk, members in M._length_groups(K):  # the chunk's samples of each key length
        el = L * max(heads_of.values()) * Q[members] * kk
        for S in _split(members, el, BLOCK_ELEMENTS):
            _block(ctx, S, kk)
    out_head, out_mean = ctx.out_head, ctx.out_mean
    pair_head, pair_mean, ident_mean = ctx.pair_head, ctx.pair_mean, ctx.ident_mean
    for m in models:
        counts[m]["n_samples"] += c
        counts[m]["one_node_samples"] += int(np.sum(Q == 1))
        counts[m]["identical_row_samples"] += int(np.sum(ident_mean[m] & (Q > 1)))
    per_frames: list[tuple[tuple, dict]] = []
    for m in models:
        if want_each:
            per_frames.append(
                ((site, m, HEAD), _frame(pos, Q, L, heads_of[m], HEAD, out_head[m], tol))
            )
        if want_mean:
            src = out_mean[m] if heads_of[m] > 1 else out_head[m]
            per_frames.append(((site, m, HEAD_MEAN), _frame(pos, Q, L, 1, HEAD_MEAN, src, tol)))
    pair_frames: list[tuple[tuple, dict]] = []
    for a, b in pairs:
        if want_each and (a, b) in pair_head:
            j, t = pair_head[(a, b)]
            pair_frames.append(((site, a, b, HEAD), _pair_frame(pos, L, heads_of[a], HEAD, j, t)))
        if want_mean:
            j, t = pair_mean[(a, b)]
            if heads_of[a] == 1 and heads_of[b] == 1:
                j, t = pair_head[(a, b)]
            pair_frames.append(((site, a, b, HEAD_MEAN), _pair_frame(pos, L, 1, HEAD_MEAN, j, t)))
    return per_frames, pair_frames


@dataclass
class _Part:
    """One model's rows of one head kind inside a block (a row range of the combined array)."""

    model: str
    kind: str
    H: int  # heads in this layout (1 for the head mean)
    r0: int = 0
    r1: int = 0
    g0: int = 0
    g1: int = 0


@dataclass
class _ChunkContext:
    """One chunk's inputs, read by every :func:`_block`, and its outputs, filled block by block
    (indexed by chunk sample ``s``, layer ``l``, head ``h`` as ``(s * L + l) * H + h``)."""

    chunk: Any  # the store chunk (one site, ``c`` samples)
    Q: np.ndarray  # [c] query rows (nodes) per sample
    L: int  # layers
    heads_of: dict[str, int]  # heads per model
    models: Sequence[str]
    pairs: Sequence[tuple[str, str]]  # model pairs that get JSD/TV
    kw: dict[str, Any]  # keyword options of :func:`analyze.metrics.block_metrics`
    tol: float  # MetricOptions.identical_tol
    where: np.ndarray  # [c] scratch: chunk sample -> position in the block, -1 outside it
    sp_s: np.ndarray  # special keys: chunk sample ...
    sp_k: np.ndarray  # ... and key position inside the sample
    gd_s: np.ndarray | None  # gold cells: chunk sample ...
    gd_c: np.ndarray | None  # ... and cell (query * n_key + key) inside the sample
    has_gold: bool
    want_each: bool  # per-head rows wanted
    want_mean: bool  # head-mean rows wanted
    out_head: dict[str, dict[str, np.ndarray]]  # model -> _new_groups [c * L * H]
    out_mean: dict[str, dict[str, np.ndarray]]  # model -> _new_groups [c * L]
    pair_head: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]  # (jsd, tv) [c * L * H]
    pair_mean: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]  # (jsd, tv) [c * L]
    ident_mean: dict[str, np.ndarray]  # model -> [c] bool, a head-mean layer has identical rows
    counts: dict[str, dict[str, int]]  # model -> diagnostic counters (whole run)
    sim_acc: dict[tuple[str, str], np.ndarray]  # pair -> summed cross-head JSD [L, Ha, Hb]
    sim_n: dict[tuple[str, str], int]  # pair -> samples summed into sim_acc


def _block(ctx: _ChunkContext, S: np.ndarray, kk: int) -> None:
    """All models and head kinds of the samples ``S`` (equal key length ``kk``) in one
    :func:`analyze.metrics.block_metrics` call (few large numpy calls, not many small ones)."""
    chunk, Q, L, heads_of, models = ctx.chunk, ctx.Q, ctx.L, ctx.heads_of, ctx.models
    where, sp_s, sp_k, gd_s, gd_c = ctx.where, ctx.sp_s, ctx.sp_k, ctx.gd_s, ctx.gd_c
    has_gold, want_mean, tol = ctx.has_gold, ctx.want_mean, ctx.tol
    nS = len(S)
    where[S] = np.arange(nS)
    qs = Q[S]
    sel = where[sp_s] >= 0
    sp_j, sp_loc = where[sp_s[sel]], sp_k[sel]
    if has_gold:
        gsel = where[gd_s] >= 0
        gd_j, gd_loc = where[gd_s[gsel]], gd_c[gsel]
    where[S] = -1
    parts: list[_Part] = []
    sps, gds, gss = [], [], []
    sq = int(qs.sum())
    with_head = {m: ctx.want_each or heads_of[m] == 1 for m in models}
    with_mean = {m: want_mean and heads_of[m] > 1 for m in models}
    total = sum(L * heads_of[m] * sq * with_head[m] + L * sq * with_mean[m] for m in models)
    Xall = np.empty((total, kk), dtype=np.float32)  # every part of the block, written in place
    row0 = 0
    for m in models:
        H = heads_of[m]
        blocks = chunk.blocks[m]
        rows_per = L * H * qs
        n_rows = L * H * sq
        X = Xall[row0 : row0 + n_rows] if with_head[m] else np.empty((n_rows, kk), np.float32)
        flat = X.reshape(-1)
        if nS == 1:  # one sample: a slice
            a = int(blocks.offsets[S[0]])
            flat[...] = blocks.data[a : a + n_rows * kk]
        else:
            idx = _segments(blocks.offsets[S].astype(np.int64), rows_per * kk)
            if blocks.data.dtype == np.float32:
                np.take(blocks.data, idx, out=flat)
            else:
                flat[...] = blocks.data[idx]
        layouts = []
        if with_head[m]:
            layouts.append((HEAD, H, n_rows))
        if with_mean[m]:
            # head-mean rows (s, l, q) from the raw weights: mean over h of row (l*H + h)*Q + q
            h0 = row0 + (n_rows if with_head[m] else 0)
            hm = Xall[h0 : h0 + L * sq]
            if np.all(qs == qs[0]):  # equal node counts: a contiguous reduction
                q0 = int(qs[0])
                X.reshape(nS * L, H, q0, kk).sum(axis=1, out=hm.reshape(nS * L, q0, kk))
            else:
                rstart = np.cumsum(rows_per) - rows_per
                hm_per = L * qs
                hstart = np.cumsum(hm_per) - hm_per
                j = np.arange(int(hm_per.sum()), dtype=np.int64) - np.repeat(hstart, hm_per)
                qrep = np.repeat(qs, hm_per)
                src = np.repeat(rstart, hm_per) + (j // qrep) * (H * qrep) + j % qrep
                np.take(X, src, axis=0, out=hm)
                for h in range(1, H):
                    hm += X[src + h * qrep]
            hm *= np.float32(1.0 / H)
            layouts.append((HEAD_MEAN, 1, L * sq))
        for kind, Hk, nr in layouts:
            per = L * Hk * qs
            start = np.cumsum(per) - per
            sps.append(M.expand_positions(sp_j, sp_loc, per, np.full(nS, kk), (row0 + start) * kk))
            if has_gold:
                gds.append(
                    M.expand_positions(
                        gd_j, gd_loc, np.full(nS, L * Hk), qs * kk, (row0 + start) * kk
                    )
                )
            gss.append(
                row0
                + np.repeat(start, L * Hk)
                + np.tile(np.arange(L * Hk), nS) * np.repeat(qs, L * Hk)
            )
            parts.append(_Part(m, kind, Hk, row0, row0 + nr))
            row0 += nr
    gs = np.concatenate(gss)
    r = M.block_metrics(
        Xall,
        special=np.concatenate(sps),
        gold=np.concatenate(gds) if has_gold else None,
        group_starts=gs,
        **ctx.kw,
    )
    names, gmean, gcnt = _group_stats(r.rows, gs, has_gold)
    nkeys = np.maximum.reduceat(r.rows["n_keys"], gs)
    n_all_sp = np.add.reduceat(r.rows["all_special_mass"].astype(np.int64), gs)
    informative = _informative(r.group_rows, nkeys)
    g0 = 0
    by: dict[tuple[str, str], _Part] = {}
    for p in parts:
        p.g0, p.g1 = g0, g0 + nS * L * p.H
        g0 = p.g1
        by[(p.model, p.kind)] = p
        gsl = slice(p.g0, p.g1)
        LH = L * p.H
        gid = np.repeat(S * LH, LH) + np.tile(np.arange(LH), nS)
        dst = (ctx.out_head if p.kind == HEAD else ctx.out_mean)[p.model]
        for i, name in enumerate(names):
            dst[name][gid] = gmean[i, gsl]
        dst["n_rows"][gid] = gcnt[0, gsl]
        if has_gold:
            dst["n_gold_rows"][gid] = gcnt[len(M.ROW_METRICS), gsl]
        dst["n_keys"][gid] = nkeys[gsl]
        dst["n_all_special_rows"][gid] = n_all_sp[gsl]
        spec = r.specificity[gsl]
        dst["node_specificity"][gid] = spec
        if p.kind == HEAD:
            _count(ctx.counts[p.model], r.rows, p.r0, p.r1, spec, informative[gsl], tol)
        if want_mean and (p.kind == HEAD_MEAN or heads_of[p.model] == 1):
            ident = informative[gsl] & (np.nan_to_num(spec, nan=np.inf) <= tol)
            ctx.ident_mean[p.model][S] |= np.any(ident.reshape(nS, LH), axis=1)
    for a, b in ctx.pairs:
        for kind, store_ in ((HEAD, ctx.pair_head), (HEAD_MEAN, ctx.pair_mean)):
            pa, pb = by.get((a, kind)), by.get((b, kind))
            if pa is None or pb is None or pa.H != pb.H or (a, b) not in store_:
                continue
            jsd, tv = M.block_divergence(Xall[pa.r0 : pa.r1], Xall[pb.r0 : pb.r1])
            lgs = gs[pa.g0 : pa.g1] - pa.r0
            LH = L * pa.H
            gid = np.repeat(S * LH, LH) + np.tile(np.arange(LH), nS)
            pj, pt = store_[(a, b)]
            pj[gid], _ = _group_mean(jsd, lgs)
            pt[gid], _ = _group_mean(tv, lgs)
        pa, pb = by.get((a, HEAD)), by.get((b, HEAD))
        if pa is not None and pb is not None and (pa.H > 1 or pb.H > 1):
            A = r.mean_rows[pa.g0 : pa.g1].reshape(nS, L, pa.H, kk)
            B = r.mean_rows[pb.g0 : pb.g1].reshape(nS, L, pb.H, kk)
            cj = _cross_head_jsd(A, B)
            acc = np.nan_to_num(cj, nan=0.0).sum(axis=0)
            if (a, b) in ctx.sim_acc:
                ctx.sim_acc[(a, b)] += acc
            else:
                ctx.sim_acc[(a, b)] = acc
            ctx.sim_n[(a, b)] = ctx.sim_n.get((a, b), 0) + nS


def _frame(pos, Q, L, H, kind, g, tol) -> dict[str, np.ndarray]:
    """Columns of one chunk's rows for one (site, model, head kind), ordered (sample, layer,
    head); constant columns are added once when the table is assembled."""
    cols: dict[str, np.ndarray] = {
        **_index_columns(pos, L, H, kind),
        "n_rows": g["n_rows"].astype(np.int32),
        "n_keys": g["n_keys"].astype(np.int32),
        "n_gold_rows": g["n_gold_rows"].astype(np.int32),
        "n_all_special_rows": g["n_all_special_rows"].astype(np.int32),
    }
    for name in METRICS:
        cols[name] = g[name]
    spec = g["node_specificity"]
    cols["identical_rows"] = _informative(g["n_rows"], g["n_keys"]) & (
        np.nan_to_num(spec, nan=np.inf) <= tol
    )
    return cols


def _index_columns(pos, L, H, kind) -> dict[str, np.ndarray]:
    """``position``, ``layer``, ``head`` of rows ordered (sample, layer, head); head -1 for the
    head mean."""
    c = len(pos)
    return {
        "position": np.repeat(pos, L * H),
        "layer": np.tile(np.repeat(np.arange(L, dtype=np.int32), H), c),
        "head": (
            np.tile(np.arange(H, dtype=np.int32), c * L)
            if kind == HEAD
            else np.full(c * L * H, -1, dtype=np.int32)
        ),
    }


def _pair_frame(pos, L, H, kind, jsd, tv) -> dict[str, np.ndarray]:
    return {
        **_index_columns(pos, L, H, kind),
        "jsd": jsd,
        "tv": tv,
    }


#: why a site is degenerate (or suspicious), by the ``reason_code`` of ``Diagnostics.sites``
DEGENERATE_REASONS = {
    "key_len_1": "key length 1 in every sample (weights are always 1.0)",
    "uniform": "every row is uniform over its keys",
    "identical_rows": "every node attends identically in every sample (node specificity 0)",
}


def _reason_code(c: dict[str, int]) -> str:
    """``key_len_1`` / ``uniform`` (degenerate: excluded from comparisons), ``identical_rows``
    (reported, still compared) or ``""``. Key length counts valid keys (specials dropped)."""
    if c["n_rows"] and c["rows_key_len_1"] == c["n_rows"]:
        return "key_len_1"
    if c["n_rows"] and c["constant_rows"] + c["rows_key_len_1"] == c["n_rows"]:
        return "uniform"
    if c["head_groups"] and c["identical_row_heads"] == c["head_groups"]:
        return "identical_rows"
    return ""


def _release_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``; a no-op elsewhere), so the
    peak resident memory is one chunk's working set or the result tables, not their sum."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_PER_CONSTS = ("site", "model", "head_kind")
_PAIR_CONSTS = ("site", "baseline", "variant", "head_kind")


def _spill_frame(
    path: Path, const_names: tuple[str, ...], key: tuple, cols: dict, ids: pl.Series, columns
) -> Path:
    """Write one chunk's rows of one table (one key) as an uncompressed Arrow IPC file."""
    n = len(cols["position"])
    consts = [
        pl.Series(name, [val], dtype=pl.String).new_from_index(0, n)
        for name, val in zip(const_names, key, strict=True)
    ]
    f = pl.DataFrame(cols)
    f = f.with_columns(ids.gather(cols["position"]), *consts).select(columns)
    f.write_ipc(path, compression="uncompressed")
    return path


class _SpilledTable:
    """Rows of one output table, written chunk by chunk as Arrow IPC files (by whichever process
    computed the chunk) and read back in canonical key order at the end (so memory holds one
    chunk's results, then the table)."""

    def __init__(self, root: Path, name: str, const_names: tuple[str, ...], empty: pl.DataFrame):
        self.root, self.name, self.const_names, self.empty = root, name, const_names, empty
        self.files: dict[tuple, list[Path]] = {}

    def register(self, key: tuple, path: Path) -> None:
        """Add a chunk's file; keys keep the order of their first registration."""
        self.files.setdefault(key, []).append(Path(path))

    def collect(self) -> pl.DataFrame:
        if not self.files:
            return self.empty
        frames = []
        for key in list(self.files):  # keys in order of first appearance: canonical
            for path in self.files.pop(key):
                frames.append(pl.read_ipc(path).rechunk())
                path.unlink()
        # no rechunk: a contiguous copy would double the peak memory of the largest table
        return pl.concat(frames, how="vertical", rechunk=False)


class _Spill:
    """A temporary directory for per-chunk results, removed by :meth:`close`."""

    def __init__(self) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="attncmp_tables_")
        self.root = Path(self._dir.name)

    def table(self, name: str, const_names: tuple[str, ...], empty: pl.DataFrame):
        return _SpilledTable(self.root, name, const_names, empty)

    def close(self) -> None:
        self._dir.cleanup()


# ----------------------------------------------------------------------------------------------
# chunks: computed in this process or in a pool of worker processes, combined in chunk order
# ----------------------------------------------------------------------------------------------
def _tasks(n_sites: int, n_samples: int, chunk_samples: int) -> list[tuple[int, int, int]]:
    """The engine's chunks: (site job, first, end) positions, site by site."""
    return [
        (k, lo, min(n_samples, lo + chunk_samples))
        for k in range(n_sites)
        for lo in range(0, n_samples, chunk_samples)
    ]


def _workers(jobs: int, n_tasks: int) -> int:
    """Worker processes for ``n_tasks`` chunks and ``jobs`` (resolved): one per chunk at most;
    0 (compute in the calling process) for a single chunk or ``jobs=1``."""
    workers = min(jobs, n_tasks)
    return workers if workers > 1 else 0


def engine_workers(store, chunk_samples: int, jobs: int | None) -> int:
    """Worker processes :func:`compute_tables` will start for every site of ``store`` (0: it
    computes in the calling process)."""
    n_tasks = len(_tasks(len(store.sites()), store.n_samples, chunk_samples))
    return _workers(resolve_jobs(jobs), n_tasks)


def resolve_jobs(jobs: int | None) -> int:
    """Worker processes for ``jobs``: ``None`` or 0 -> the cores this process may run on
    (``os.sched_getaffinity``, else ``os.cpu_count()``); a positive count is used as given."""
    if jobs is None or jobs == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if jobs < 0:
        raise AnalysisInputError(f"`jobs` must be >= 0 (0: every available core), got {jobs}")
    return int(jobs)


@dataclass(frozen=True)
class _SiteJob:
    """Everything needed to compute one site's chunks (small and picklable)."""

    site: str
    L: int
    heads_of: dict[str, int]
    models: list[str]
    pairs: list[tuple[str, str]]
    options: MetricOptions
    crtol: float
    want_each: bool
    want_mean: bool


@dataclass
class _ChunkResult:
    """One chunk's results: spilled table files by key, diagnostic counts and head-similarity
    sums of this chunk alone (combined by the caller in chunk order)."""

    site: str
    n: int
    per: list[tuple[tuple, str]]
    pair: list[tuple[tuple, str]]
    counts: dict[str, dict[str, int]]
    sim_acc: dict[tuple[str, str], np.ndarray]
    sim_n: dict[tuple[str, str], int]
    pid: int = 0
    peak_rss_kb: int = 0
    cpu_s: float = 0.0  # the worker process's CPU seconds so far


class _SiteState:
    """A site's diagnostic counts and head-similarity sums over its chunks."""

    def __init__(self, models: Sequence[str]) -> None:
        self.counts = {m: dict.fromkeys(_COUNT_KEYS, 0) for m in models}
        self.sim_acc: dict[tuple[str, str], np.ndarray] = {}
        self.sim_n: dict[tuple[str, str], int] = {}

    def absorb(self, res: _ChunkResult) -> None:
        for m, c in res.counts.items():
            for k, v in c.items():
                self.counts[m][k] += v
        for key, acc in res.sim_acc.items():  # chunk order: the float sums never depend on jobs
            self.sim_acc[key] = self.sim_acc[key] + acc if key in self.sim_acc else acc
            self.sim_n[key] = self.sim_n.get(key, 0) + res.sim_n[key]

    def similarity_frames(self, site: str) -> list[pl.DataFrame]:
        out = []
        for (a, b), acc in self.sim_acc.items():
            n = self.sim_n[(a, b)]
            La, Ha, Hb = acc.shape
            li, hi, hj = np.meshgrid(np.arange(La), np.arange(Ha), np.arange(Hb), indexing="ij")
            out.append(
                pl.DataFrame(
                    {
                        "baseline": [a] * acc.size,
                        "variant": [b] * acc.size,
                        "site": [site] * acc.size,
                        "layer": li.ravel().astype(np.int64),
                        "head_baseline": hi.ravel().astype(np.int64),
                        "head_variant": hj.ravel().astype(np.int64),
                        "mean_jsd": (acc / max(n, 1)).ravel(),
                        "n_samples": np.full(acc.size, n, dtype=np.int64),
                    }
                )
            )
        return out


def _peak_rss_kb() -> int:
    """This process's peak resident memory (``VmHWM``, Linux), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _run_chunk(chunk, job: _SiteJob, root: Path, tag: str, ids: pl.Series) -> _ChunkResult:
    """Compute one chunk and spill its table rows to ``root`` (file names start with ``tag``)."""
    counts = {m: dict.fromkeys(_COUNT_KEYS, 0) for m in job.models}
    sim_acc: dict[tuple[str, str], np.ndarray] = {}
    sim_n: dict[tuple[str, str], int] = {}
    per_frames, pair_frames = _process_chunk(
        chunk,
        job.L,
        job.heads_of,
        job.models,
        job.pairs,
        job.options,
        job.crtol,
        job.want_each,
        job.want_mean,
        counts,
        sim_acc,
        sim_n,
    )
    out: dict[str, list[tuple[tuple, str]]] = {"p": [], "q": []}
    for kind, frames, consts, empty in (
        ("p", per_frames, _PER_CONSTS, _empty_per_sample()),
        ("q", pair_frames, _PAIR_CONSTS, _empty_pairwise()),
    ):
        for i, (key, cols) in enumerate(frames):
            path = root / f"{tag}_{kind}{i}.arrow"
            out[kind].append((key, str(_spill_frame(path, consts, key, cols, ids, empty.columns))))
    per, pair = out["p"], out["q"]
    return _ChunkResult(job.site, len(chunk), per, pair, counts, sim_acc, sim_n)


def _chunk_results(store, site_jobs, tasks, jobs: int, root: Path, run_info: dict):
    """Yield every chunk's :class:`_ChunkResult` in task order (site, then samples)."""
    ids = pl.Series("sample_id", store.ids, dtype=pl.String)
    workers = _workers(jobs, len(tasks))
    if not workers:  # in this process, reading chunk after chunk
        run_info["workers"] = 0
        for k, sj in enumerate(site_jobs):
            for chunk in store.iter_chunks(sj.site, sj.models, sj.options.chunk_samples):
                res = _run_chunk(chunk, sj, root, f"s{k}_c{int(chunk.index[0]):09d}", ids)
                del chunk  # release before the next chunk is read (peak = one chunk)
                yield res
        return
    from .processes import main_hidden

    run_info["workers"] = workers
    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}
    ex = _pool(store, root, workers)
    try:
        with main_hidden():  # the submits start the workers: they need not re-run a script
            futures = [
                ex.submit(_worker_chunk, site_jobs[k], lo, hi, f"s{k}_c{lo:09d}")
                for k, lo, hi in tasks
            ]
        for fut in futures:  # in task order, whichever finishes first
            res = fut.result()
            peaks[res.pid] = max(peaks.get(res.pid, 0), res.peak_rss_kb)
            cpu[res.pid] = max(cpu.get(res.pid, 0.0), res.cpu_s)
            yield res
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        run_info["worker_peak_rss_kb"] = [peaks[p] for p in sorted(peaks)]
        run_info["worker_cpu_s"] = sum(cpu.values())


def _pool(store: Any, root: Path, workers: int):
    """The engine's worker processes (a ``ProcessPoolExecutor``; they start on the first
    submit): from a forkserver where there is one, so they do not inherit this process's open
    HDF5 files; each opens the store itself and exits with this process."""
    from concurrent.futures import ProcessPoolExecutor

    from .processes import caller_identity, context

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context(["attncmp.analyze.table"]),
        initializer=_worker_init,
        initargs=([str(p) for p in store.paths], list(store.ids), str(root), caller_identity()),
    )


#: the worker process's own store handle and the caller's sample ids (set by _worker_init; one
#: per worker process, never used in the calling process)
_WORKER: dict[str, Any] = {}


def _worker_init(
    paths: list[str], ids: list[str], root: str, caller: tuple[int, str | None]
) -> None:
    from attncmp.store import open_store

    from .processes import watch_caller

    watch_caller(*caller)  # a killed caller cannot shut the pool down: leave with it
    _WORKER["store"] = open_store(paths)
    _WORKER["ids"] = pl.Series("sample_id", ids, dtype=pl.String)
    _WORKER["root"] = Path(root)


def _worker_chunk(job: _SiteJob, lo: int, hi: int, tag: str) -> _ChunkResult:
    """One chunk in a worker: the caller's positions ``lo:hi``, read by sample id (a store being
    written may have committed more samples since the caller opened it)."""
    store, ids = _WORKER["store"], _WORKER["ids"]
    want = ids[lo:hi].to_list()
    if store.ids[lo:hi] == want:
        positions = np.arange(lo, hi, dtype=np.int64)
    else:
        positions = np.array([store.index_of(s) for s in want], dtype=np.int64)
    chunk = store.read_site(job.site, positions, job.models)
    chunk.index = np.arange(lo, hi, dtype=np.int64)  # the caller's positions
    res = _run_chunk(chunk, job, _WORKER["root"], tag, ids)
    del chunk
    _release_memory()
    res.pid, res.peak_rss_kb, res.cpu_s = os.getpid(), _peak_rss_kb(), time.process_time()
    return res
