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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import metrics as M
from .metrics import Diagnostics

__all__ = [
    "METRICS",
    "ROW_METRIC_COLUMNS",
    "MetricOptions",
    "MetricTables",
    "compute_tables",
    "HEAD",
    "HEAD_MEAN",
]

HEAD = "head"
HEAD_MEAN = "head-mean"

#: metric columns of ``MetricTables.per_sample`` (all float64)
METRICS = (
    "entropy",
    "norm_entropy",
    "perplexity",
    "max_weight",
    "effective_tokens",
    "gini",
    "ipr",
    "topk_mass",
    "special_mass",
    "node_specificity",
    "gold_mass",
    "gold_pointing",
)
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
        if self.heads not in ("each", "mean", "both"):
            raise ValueError(f"`heads` must be 'each', 'mean' or 'both', got {self.heads!r}")
        if self.pairs not in ("all", "baseline"):
            raise ValueError(f"`pairs` must be 'all' or 'baseline', got {self.pairs!r}")
        if not (0.0 <= self.threshold < 1.0):
            raise ValueError(f"`threshold` must be in [0, 1), got {self.threshold}")
        if self.top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, got {self.top_k}")
        if self.chunk_samples < 1:
            raise ValueError(f"`chunk_samples` must be >= 1, got {self.chunk_samples}")


@dataclass
class MetricTables:
    """Per-sample metrics of a store, plus what is needed to interpret them.

    Attributes
    ----------
    per_sample : long table, one row per (sample, model, site, layer, head); columns
        ``sample_id, position, model, site, layer, head, head_kind, n_rows, n_keys, n_gold_rows``,
        the :data:`METRICS` and ``identical_rows``. ``head = -1`` / ``head_kind = "head-mean"`` is
        the head-averaged distribution. ``n_rows`` counts the valid query rows averaged;
        ``gold_mass`` / ``gold_pointing`` are NaN for samples without gold (not applicable).
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
            raise FileNotFoundError(
                f"{meta_path}: no saved metric tables here; run `attncmp analyze` first"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "attncmp-metric-tables":
            raise ValueError(f"{meta_path}: not an attncmp metric-tables file")
        if int(meta.get("version", 0)) > 1:
            raise ValueError(
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
@dataclass
class _Layout:
    """Row/group structure of one chunk for one head layout (per-head or head-mean)."""

    block_off: np.ndarray  # element offset of each sample's block [c + 1]
    row_off: np.ndarray  # [n_rows + 1]
    group_off: np.ndarray  # rows of each (sample, layer, head) group [n_groups + 1]
    special: np.ndarray  # flat positions of special keys
    gold: np.ndarray | None  # flat positions of gold cells
    n_heads: int  # heads in this layout (H, or 1 for head-mean)


def _layout(
    chunk, L: int, H: int, block_off: np.ndarray, sp_sample, sp_local, gd_sample, gd_local
) -> _Layout:
    Q = chunk.n_query.astype(np.int64)
    K = chunk.n_key.astype(np.int64)
    rows_per = L * H * Q
    row_len = np.repeat(K, rows_per)
    row_off = np.concatenate(([0], np.cumsum(row_len)))
    group_off = np.concatenate(([0], np.cumsum(np.repeat(Q, L * H))))
    base = block_off[:-1]
    special = M.expand_positions(sp_sample, sp_local, rows_per, K, base)
    gold = None
    if gd_sample is not None:
        gold = M.expand_positions(gd_sample, gd_local, np.full(len(Q), L * H), Q * K, base)
    return _Layout(block_off, row_off, group_off, special, gold, H)


def _head_mean(w: np.ndarray, block_off: np.ndarray, Q, K, L: int, H: int):
    """Average over heads of each sample's ``[L, H, Q, K]`` block -> flat ``[L, Q, K]`` blocks."""
    qk = Q * K
    sizes = L * qk
    hm_off = np.concatenate(([0], np.cumsum(sizes)))
    total = int(hm_off[-1])
    s = np.repeat(np.arange(len(Q)), sizes)
    local = np.arange(total, dtype=np.int64) - hm_off[:-1][s]
    qks = qk[s]
    if L == 1:
        src = block_off[:-1][s] + local
    else:
        src = block_off[:-1][s] + (local // qks) * (H * qks) + local % qks
    out = w[src].astype(np.float32, copy=True)
    for h in range(1, H):
        out += w[src + h * qks]
    out *= np.float32(1.0 / H)
    return out, hm_off


_COUNT_KEYS = M.DIAGNOSTIC_COUNTS


def compute_tables(
    store,
    *,
    options: MetricOptions = MetricOptions(),
    sites: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MetricTables:
    """Stream ``store`` and compute every per-sample metric (see :class:`MetricTables`).

    Parameters
    ----------
    store : an open :class:`store.Store` (see :func:`store.open_store`) or a path.
    options : :class:`MetricOptions`.
    sites, models : restrict to these (default: all; the baseline always comes first).
    progress : called as ``progress(done, total)`` in units of sample-sites after each chunk.
    """
    from store import Store, open_store

    if not isinstance(store, Store):
        store = open_store(store)
    t0 = time.perf_counter()
    all_models = store.models
    baseline = store.baseline
    if models is None:
        models = list(all_models)
    else:
        models = list(models)
        bad = [m for m in models if m not in all_models]
        if bad:
            raise ValueError(f"`models`: {bad} not in the store; it has {all_models}")
    if baseline in models:
        models = [baseline] + [m for m in models if m != baseline]
    else:
        baseline = models[0]
    site_infos = store.sites(baseline)
    if sites is None:
        sites = list(site_infos)
    else:
        sites = list(sites)
        bad = [s for s in sites if s not in site_infos]
        if bad:
            raise ValueError(f"`sites`: {bad} not in the store; it has {sorted(site_infos)}")
    if options.pairs == "all":
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    else:
        pairs = [(baseline, b) for b in models[1:]]
    crtol = options.constant_rtol
    if crtol is None:
        crtol = 2e-3 if store.attention_dtype == "float16" else 1e-5
    want_each = options.heads in ("each", "both")
    want_mean = options.heads in ("mean", "both")

    per_parts: list[pl.DataFrame] = []
    pair_parts: list[pl.DataFrame] = []
    sim_parts: list[pl.DataFrame] = []
    diag_rows: list[dict[str, Any]] = []
    total_units = store.n_samples * len(sites)
    done = 0
    site_meta: dict[str, dict[str, Any]] = {}
    for site in sites:
        info = site_infos[site]
        heads_of = {}
        for m in models:
            mi = store.sites(m)[site]
            if mi.n_layers != info.n_layers:
                raise ValueError(
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
        counts = {m: dict.fromkeys(_COUNT_KEYS, 0) for m in models}
        sim_acc: dict[tuple[str, str], np.ndarray] = {}
        sim_n: dict[tuple[str, str], int] = {}
        for chunk in store.iter_chunks(site, models, options.chunk_samples):
            res = _process_chunk(
                chunk,
                info.n_layers,
                heads_of,
                models,
                pairs,
                options,
                crtol,
                want_each,
                want_mean,
                counts,
                sim_acc,
                sim_n,
            )
            per_parts.extend(res[0])
            pair_parts.extend(res[1])
            done += len(chunk)
            if progress is not None:
                progress(done, total_units)
        for (a, b), acc in sim_acc.items():
            n = sim_n[(a, b)]
            La, Ha, Hb = acc.shape
            li, hi, hj = np.meshgrid(np.arange(La), np.arange(Ha), np.arange(Hb), indexing="ij")
            sim_parts.append(
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
        for m in models:
            c = counts[m]
            degenerate, reason = False, ""
            if c["n_rows"] and c["rows_key_len_1"] == c["n_rows"]:
                degenerate, reason = True, "key length 1 in every sample (weights are always 1.0)"
            elif c["n_rows"] and c["constant_rows"] + c["rows_key_len_1"] == c["n_rows"]:
                degenerate, reason = True, "every row is uniform over its keys"
            elif c["head_groups"] and c["identical_row_heads"] == c["head_groups"]:
                reason = "every node attends identically in every sample (node specificity 0)"
            diag_rows.append(
                {"model": m, "site": site, **c, "degenerate": degenerate, "reason": reason}
            )

    ids = store.ids
    per = _sorted(_concat(per_parts, _empty_per_sample()), sites, models, "model")
    pair = _sorted(_concat(pair_parts, _empty_pairwise()), sites, models, "variant")
    if len(per):
        id_series = pl.Series("sample_id", ids, dtype=pl.String)
        per = per.with_columns(id_series.gather(per["position"]).alias("sample_id"))
        per = per.select(["sample_id", *[c for c in per.columns if c != "sample_id"]])
    if len(pair):
        id_series = pl.Series("sample_id", ids, dtype=pl.String)
        pair = pair.with_columns(id_series.gather(pair["position"]).alias("sample_id"))
        pair = pair.select(["sample_id", *[c for c in pair.columns if c != "sample_id"]])
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
    )


def _sorted(frame: pl.DataFrame, sites, models, model_col: str) -> pl.DataFrame:
    """Canonical row order (site, model, head kind, layer, head, position): independent of
    ``chunk_samples``."""
    if len(frame) == 0:
        return frame
    keys = [
        pl.col("site").replace_strict(list(sites), list(range(len(sites))), return_dtype=pl.Int64),
        pl.col(model_col).replace_strict(
            list(models), list(range(len(models))), return_dtype=pl.Int64
        ),
    ]
    if model_col == "variant":
        keys.insert(
            1,
            pl.col("baseline").replace_strict(
                list(models), list(range(len(models))), return_dtype=pl.Int64
            ),
        )
    keys += [pl.col("head_kind") == HEAD_MEAN, "layer", "head", "position"]
    return frame.sort(keys)


def _concat(parts: list[pl.DataFrame], empty: pl.DataFrame) -> pl.DataFrame:
    if not parts:
        return empty
    return pl.concat(parts, how="vertical", rechunk=True)


def _empty_per_sample() -> pl.DataFrame:
    schema = {
        "sample_id": pl.String,
        "position": pl.Int64,
        "model": pl.String,
        "site": pl.String,
        "layer": pl.Int64,
        "head": pl.Int64,
        "head_kind": pl.String,
        "n_rows": pl.Int64,
        "n_keys": pl.Int64,
        "n_gold_rows": pl.Int64,
        **{m: pl.Float64 for m in METRICS},
        "identical_rows": pl.Boolean,
    }
    return pl.DataFrame(schema=schema)


def _empty_pairwise() -> pl.DataFrame:
    schema = {
        "sample_id": pl.String,
        "position": pl.Int64,
        "baseline": pl.String,
        "variant": pl.String,
        "site": pl.String,
        "layer": pl.Int64,
        "head": pl.Int64,
        "head_kind": pl.String,
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
                "(treated as uniform over the other tokens)"
            )
        if r["all_special_key_rows"]:
            out.append(f"{where}: {r['all_special_key_rows']} rows have only special keys (kept)")
        if r["identical_row_samples"] and not r["reason"]:
            out.append(
                f"{where}: in {r['identical_row_samples']} samples every node attends identically "
                "(head-mean node specificity ~0)"
            )
    return out


def _chunk_frames(
    chunk_pos: np.ndarray,
    Q: np.ndarray,
    L: int,
    H: int,
    head_kind: str,
    model: str,
    site: str,
    rm: M.RowMetrics,
    group_off: np.ndarray,
    tol: float,
) -> pl.DataFrame:
    """Reduce row metrics to (sample, layer, head) rows."""
    c = len(Q)
    n_groups = c * L * H
    cols: dict[str, Any] = {
        "position": np.repeat(chunk_pos, L * H),
        "model": pl.Series([model], dtype=pl.String).new_from_index(0, n_groups),
        "site": pl.Series([site], dtype=pl.String).new_from_index(0, n_groups),
        "layer": np.tile(np.repeat(np.arange(L, dtype=np.int64), H), c),
        "head": (
            np.tile(np.arange(H, dtype=np.int64), c * L)
            if head_kind == HEAD
            else np.full(n_groups, -1, dtype=np.int64)
        ),
        "head_kind": pl.Series([head_kind], dtype=pl.String).new_from_index(0, n_groups),
    }
    ent, n_rows = M.segment_mean(rm.entropy, group_off)
    cols["n_rows"] = n_rows
    cols["n_keys"] = np.maximum.reduceat(rm.n_keys, group_off[:-1]) if n_groups else np.zeros(0)
    if rm.gold_mass is not None:
        gm, gcount = M.segment_mean(rm.gold_mass, group_off)
        gp, _ = M.segment_mean(rm.gold_pointing, group_off)
    else:
        gm = gp = np.full(n_groups, np.nan)
        gcount = np.zeros(n_groups, dtype=np.int64)
    cols["n_gold_rows"] = gcount
    for name in M.ROW_METRICS:
        cols[name] = ent if name == "entropy" else M.segment_mean(getattr(rm, name), group_off)[0]
    spec = rm.specificity
    cols["node_specificity"] = spec
    cols["gold_mass"] = gm
    cols["gold_pointing"] = gp
    qg = np.repeat(Q, L * H)
    cols["identical_rows"] = (qg > 1) & (np.nan_to_num(spec, nan=np.inf) <= tol)
    return pl.DataFrame(cols)


def _process_chunk(
    chunk, L, heads_of, models, pairs, options, crtol, want_each, want_mean, counts, sim_acc, sim_n
):
    Q = chunk.n_query.astype(np.int64)
    K = chunk.n_key.astype(np.int64)
    c = len(Q)
    site = chunk.site
    pos = np.asarray(chunk.index, dtype=np.int64)
    # special keys of each sample: (sample, key) pairs
    spk = np.flatnonzero(chunk.key_special)
    sp_sample = np.searchsorted(chunk.key_offsets, spk, side="right") - 1
    sp_local = spk - chunk.key_offsets[sp_sample]
    gd_sample = gd_local = None
    if chunk.gold is not None and chunk.gold_offsets is not None:
        gcell = np.flatnonzero(chunk.gold)
        gd_sample = np.searchsorted(chunk.gold_offsets, gcell, side="right") - 1
        gd_local = gcell - chunk.gold_offsets[gd_sample]
    per_frames: list[pl.DataFrame] = []
    pair_frames: list[pl.DataFrame] = []
    kinds: dict[str, dict[str, tuple[M.RowMetrics, _Layout]]] = {HEAD: {}, HEAD_MEAN: {}}
    for m in models:
        H = heads_of[m]
        blocks = chunk.blocks[m]
        w = blocks.data
        if w.dtype != np.float32:
            w = w.astype(np.float32)
        block_off = blocks.offsets.astype(np.int64)
        lay = _layout(chunk, L, H, block_off, sp_sample, sp_local, gd_sample, gd_local)
        hm = None
        if want_mean and H > 1:
            hm_data, hm_off = _head_mean(w, block_off, Q, K, L, H)
            hm = (hm_data, _layout(chunk, L, 1, hm_off, sp_sample, sp_local, gd_sample, gd_local))
        rm = None
        if want_each or H == 1:
            rm = M.row_metrics(
                w,
                lay.row_off,
                special=lay.special,
                gold=lay.gold,
                groups=lay.group_off,
                threshold=options.threshold,
                top_k=options.top_k,
                exclude_special=options.exclude_special,
                constant_rtol=crtol,
                copy=False,
            )
            _count(counts[m], rm, Q, K, L * H, options.identical_tol, lay.group_off)
            if want_each:
                per_frames.append(
                    _chunk_frames(
                        pos, Q, L, H, HEAD, m, site, rm, lay.group_off, options.identical_tol
                    )
                )
                kinds[HEAD][m] = (rm, lay)
        if want_mean:
            if hm is None:  # one head: the head mean is that head
                rmh, layh = rm, lay
            else:
                rmh = M.row_metrics(
                    hm[0],
                    hm[1].row_off,
                    special=hm[1].special,
                    gold=hm[1].gold,
                    groups=hm[1].group_off,
                    threshold=options.threshold,
                    top_k=options.top_k,
                    exclude_special=options.exclude_special,
                    constant_rtol=crtol,
                    copy=False,
                )
                layh = hm[1]
            per_frames.append(
                _chunk_frames(
                    pos, Q, L, 1, HEAD_MEAN, m, site, rmh, layh.group_off, options.identical_tol
                )
            )
            spec = rmh.specificity.reshape(c, L)
            counts[m]["identical_row_samples"] += int(
                np.sum(
                    (Q > 1)
                    & np.any(np.nan_to_num(spec, nan=np.inf) <= options.identical_tol, axis=1)
                )
            )
            kinds[HEAD_MEAN][m] = (rmh, layh)
        counts[m]["n_samples"] += c
        counts[m]["one_node_samples"] += int(np.sum(Q == 1))
    for a, b in pairs:
        for kind, d in kinds.items():
            if a not in d or b not in d:
                continue
            ra, la = d[a]
            rb, lb = d[b]
            if kind == HEAD and heads_of[a] != heads_of[b]:
                continue  # index pairing needs equal head counts; see head_similarity
            Hk = la.n_heads
            jsd = M._jsd(ra.p, rb.p, la.row_off, ra.entropy, rb.entropy)
            tv = M.total_variation(ra.p, rb.p, la.row_off)
            n_groups = c * L * Hk
            pair_frames.append(
                pl.DataFrame(
                    {
                        "position": np.repeat(pos, L * Hk),
                        "baseline": pl.Series([a], dtype=pl.String).new_from_index(0, n_groups),
                        "variant": pl.Series([b], dtype=pl.String).new_from_index(0, n_groups),
                        "site": pl.Series([site], dtype=pl.String).new_from_index(0, n_groups),
                        "layer": np.tile(np.repeat(np.arange(L, dtype=np.int64), Hk), c),
                        "head": (
                            np.tile(np.arange(Hk, dtype=np.int64), c * L)
                            if kind == HEAD
                            else np.full(n_groups, -1, dtype=np.int64)
                        ),
                        "head_kind": pl.Series([kind], dtype=pl.String).new_from_index(0, n_groups),
                        "jsd": M.segment_mean(jsd, la.group_off)[0],
                        "tv": M.segment_mean(tv, la.group_off)[0],
                    }
                )
            )
        if a in kinds[HEAD] and b in kinds[HEAD]:
            _head_similarity(
                kinds[HEAD][a][0],
                kinds[HEAD][b][0],
                K,
                L,
                heads_of[a],
                heads_of[b],
                (a, b),
                sim_acc,
                sim_n,
            )
    return per_frames, pair_frames


def _count(cnt, rm: M.RowMetrics, Q, K, LH, tol, group_off) -> None:
    nk1 = rm.n_keys == 1
    cnt["n_rows"] += len(rm.n_keys)
    cnt["rows_key_len_1"] += int(nk1.sum())
    cnt["constant_rows"] += int(rm.constant.sum())
    cnt["all_special_mass_rows"] += int(rm.all_special_mass.sum())
    cnt["all_special_key_rows"] += int(rm.all_special_keys.sum())
    cnt["invalid_rows"] += int(rm.invalid.sum())
    qg = np.repeat(Q, LH)
    multi = qg > 1
    cnt["head_groups"] += int(multi.sum())
    cnt["identical_row_heads"] += int(
        np.sum(multi & (np.nan_to_num(rm.specificity, nan=np.inf) <= tol))
    )


def _head_similarity(ra, rb, K, L, Ha, Hb, key, sim_acc, sim_n) -> None:
    """Accumulate JSD between per-sample mean rows of every (head a, head b) pair."""
    c = len(K)
    ma, moa = ra.mean_rows, ra.mean_row_offsets
    mb, mob = rb.mean_rows, rb.mean_row_offsets
    # pair-rows ordered (sample, layer, ha, hb)
    s = np.repeat(np.arange(c), L * Ha * Hb)
    rest = np.tile(np.arange(L * Ha * Hb), c)
    lyr = rest // (Ha * Hb)
    ha = (rest // Hb) % Ha
    hb = rest % Hb
    ga = (s * L + lyr) * Ha + ha
    gb = (s * L + lyr) * Hb + hb
    lens = K[s]
    off = np.concatenate(([0], np.cumsum(lens)))
    within = np.arange(int(off[-1])) - np.repeat(off[:-1], lens)
    pa = ma[np.repeat(moa[:-1][ga], lens) + within]
    pb = mb[np.repeat(mob[:-1][gb], lens) + within]
    ha_ent = M.entropy(ma, moa)[ga]
    hb_ent = M.entropy(mb, mob)[gb]
    j = M._jsd(pa, pb, off, ha_ent, hb_ent)
    j = np.nan_to_num(j, nan=0.0)
    acc = j.reshape(c, L, Ha, Hb).sum(axis=0)
    if key in sim_acc:
        sim_acc[key] += acc
    else:
        sim_acc[key] = acc
    sim_n[key] = sim_n.get(key, 0) + c
