"""compute_tables on real stores vs the per-row reference applied to padded batches."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import MetricOptions, MetricTables, compare, compute_tables
from attncmp.analyze.errors import AnalysisError
from attncmp.analyze.table import METRICS
from attncmp.store import ModelSpec, SampleRecord, SiteSpec, StoreSpec, StoreWriter, open_store
from polars.testing import assert_frame_equal

from tests.analyze._stores import plain_store

from ._engine_reference import ref_group, ref_jsd, ref_tv

MODELS = ("full", "no_middle")


def _padded_store(
    tmp_path,
    *,
    n=9,
    L=2,
    H=3,
    qmax=6,
    kmax=9,
    dtype="float32",
    gold=True,
    seed=0,
    qmin=1,
    kmin=1,
    all_special=False,
):
    """Write a store from padded batch arrays (valid region only goes in); return the arrays.
    ``all_special``: some rows put all their mass on the special tokens (first and last key)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(qmin, qmax + 1, size=n)
    k = rng.integers(kmin, kmax + 1, size=n)
    A = {}
    for m in MODELS:
        a = rng.random((n, L, H, qmax, kmax)) * 5 + 3.0  # garbage in the padding
        for i in range(n):
            z = rng.standard_normal((L, H, q[i], k[i])) * rng.choice([0.5, 2.0, 6.0])
            e = np.exp(z - z.max(-1, keepdims=True))
            a[i, :, :, : q[i], : k[i]] = e / e.sum(-1, keepdims=True)
        A[m] = a
    if all_special:  # the baseline's node 0 of every other sample, in every layer and head
        for i in range(0, n, 2):
            if k[i] >= 3:
                A[MODELS[0]][i, :, :, 0, : k[i]] = 0.0
                A[MODELS[0]][i, :, :, 0, [0, k[i] - 1]] = 0.5
    special = np.zeros((n, kmax), dtype=bool)
    for i in range(n):
        if k[i] >= 3:
            special[i, 0] = special[i, k[i] - 1] = True
    G = rng.random((n, qmax, kmax)) < 0.25 if gold else None
    site = SiteSpec("atom_to_text", "nodes", "tokens", n_layers=L, n_heads=H)
    ids = tuple(f"x{i}" for i in range(n))
    spec = StoreSpec(
        models=tuple(ModelSpec(m) for m in MODELS),
        sites=(site,),
        selection_ids=ids,
        dtype=dtype,
        has_gold=gold,
        selection_seed=7,
        split="test",
    )
    path = tmp_path / f"s_{dtype}_{seed}.h5"
    recs = []
    for i in range(n):
        recs.append(
            SampleRecord(
                id=ids[i],
                node_labels=["C"] * int(q[i]),
                tokens=["t"] * int(k[i]),
                special=special[i, : k[i]],
                target=float(i),
                predictions={m: float(i) + 0.1 for m in MODELS},
                attention={m: {"atom_to_text": A[m][i, :, :, : q[i], : k[i]]} for m in MODELS},
                gold=G[i, : q[i], : k[i]] if gold else None,
                split="test",
            )
        )
    with StoreWriter.create(path, spec) as w:
        w.append(recs[: n // 2])
        w.append(recs[n // 2 :])
    if dtype == "float16":  # the reference must see what the store holds
        A = {m: a.astype(np.float16).astype(np.float64) for m, a in A.items()}
    return path, dict(A=A, q=q, k=k, special=special, G=G, L=L, H=H, n=n)


def _reference(arr, opts: MetricOptions):
    A, q, k, sp, G, L, H, n = (arr[x] for x in ("A", "q", "k", "special", "G", "L", "H", "n"))
    per, pair = {}, {}
    kw = dict(threshold=opts.threshold, top_k=opts.top_k, exclude_special=opts.exclude_special)
    for i in range(n):
        gold = None if G is None else G[i, : q[i], : k[i]]
        for lyr in range(L):
            ps = {}
            for m in MODELS:
                blocks = [(h, A[m][i, lyr, h]) for h in range(H)]
                blocks.append((-1, A[m][i, lyr].mean(axis=0)))  # head-mean of the valid region
                for h, blk in blocks:
                    rows = [blk[r, : k[i]] for r in range(q[i])]
                    if h == -1:
                        rows = [A[m][i, lyr, :, r, : k[i]].mean(axis=0) for r in range(q[i])]
                    out, p = ref_group(rows, sp[i, : k[i]], gold, **kw)
                    per[(i, m, lyr, h)] = out
                    ps[(m, h)] = p
            for h in [*range(H), -1]:
                both = [
                    (x, y)
                    for x, y in zip(ps[(MODELS[0], h)], ps[(MODELS[1], h)], strict=True)
                    if x is not None and y is not None  # a dropped row has no divergence
                ]
                pair[(i, lyr, h)] = (
                    np.mean([ref_jsd(x, y) for x, y in both]) if both else math.nan,
                    np.mean([ref_tv(x, y) for x, y in both]) if both else math.nan,
                )
    return per, pair


@pytest.mark.parametrize(
    "dtype,exclude,threshold,top_k,seed",
    # fixed seeds (not hash() of a string, which Python randomises per process)
    [("float32", True, 0.1, 3, 11), ("float32", False, 0.25, 1, 12), ("float16", True, 0.1, 2, 13)],
)
def test_tables_match_reference_on_padded_batches(tmp_path, dtype, exclude, threshold, top_k, seed):
    path, arr = _padded_store(tmp_path, dtype=dtype, seed=seed, all_special=exclude)
    opts = MetricOptions(threshold=threshold, exclude_special=exclude, top_k=top_k, chunk_samples=4)
    t = compute_tables(open_store(path), options=opts)
    per, pair = _reference(arr, opts)
    H, L, n = arr["H"], arr["L"], arr["n"]
    assert len(t.per_sample) == n * 2 * L * (H + 1)
    tol = dict(rtol=1e-5, atol=3e-6)
    for row in t.per_sample.iter_rows(named=True):
        i = int(row["sample_id"][1:])
        ref = per[(i, row["model"], row["layer"], row["head"])]
        assert row["head_kind"] == ("head-mean" if row["head"] == -1 else "head")
        assert row["n_rows"] == ref["n_rows"]
        assert row["n_rows"] + row["n_all_special_rows"] == arr["q"][i]
        assert row["n_all_special_rows"] == ref["n_all_special_rows"]
        assert row["n_keys"] == ref["n_keys"]
        for col in METRICS:
            want, got = ref[col], row[col]
            if math.isnan(want):
                assert math.isnan(got), (col, row)
            elif col == "effective_tokens":
                assert abs(got - want) <= 1.0 / row["n_rows"] + 1e-9
            else:
                np.testing.assert_allclose(got, want, **tol, err_msg=f"{col} {row}")
    if exclude:  # the dropped rows were exercised, and reported
        assert t.per_sample["n_all_special_rows"].sum() > 0
        d = t.diagnostics.sites.filter(pl.col("model") == MODELS[0]).row(0, named=True)
        assert d["all_special_mass_rows"] > 0
        assert any("excluded from the metrics" in m for m in t.diagnostics.messages)
    assert len(t.pairwise) == n * L * (H + 1)
    for row in t.pairwise.iter_rows(named=True):
        i = int(row["sample_id"][1:])
        jsd, tv = pair[(i, row["layer"], row["head"])]
        if math.isnan(jsd):
            assert math.isnan(row["jsd"]) and math.isnan(row["tv"])
            continue
        np.testing.assert_allclose(row["jsd"], jsd, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(row["tv"], tv, rtol=1e-5, atol=1e-6)


def test_results_do_not_depend_on_chunk_size(tmp_path):
    path, _ = _padded_store(tmp_path, n=11)
    st = open_store(path)
    ref = compute_tables(st, options=MetricOptions(chunk_samples=1000))
    for c in (1, 3):
        t = compute_tables(st, options=MetricOptions(chunk_samples=c))
        assert_frame_equal(t.per_sample, ref.per_sample, check_exact=False, abs_tol=1e-9)
        assert_frame_equal(t.pairwise, ref.pairwise, check_exact=False, abs_tol=1e-9)
        assert_frame_equal(t.head_similarity, ref.head_similarity, check_exact=False, abs_tol=1e-9)


def test_save_and_load_round_trip(tmp_path):
    path, _ = _padded_store(tmp_path, n=5)
    t = compute_tables(open_store(path))
    d = t.save(tmp_path / "out")
    for f in (
        "per_sample_metrics.parquet",
        "per_sample_metrics.csv",
        "pairwise.parquet",
        "samples.parquet",
        "tables_meta.json",
    ):
        assert (d / f).exists(), f
    back = MetricTables.load(d)
    assert_frame_equal(back.per_sample, t.per_sample)
    assert_frame_equal(back.pairwise, t.pairwise)
    assert_frame_equal(back.samples, t.samples)
    assert back.models == t.models and back.baseline == t.baseline and back.sites == t.sites
    assert back.seed == 7 and back.split == "test" and back.options == t.options
    assert back.diagnostics.to_dict() == t.diagnostics.to_dict()
    with pytest.raises(AnalysisError, match="tables_meta.json"):
        MetricTables.load(tmp_path / "nothing")


def test_nan_never_leaks_from_one_node_samples_and_one_token_rows(tmp_path):
    path = plain_store(tmp_path / "tiny.h5", 40, nodes=(1, 3), tokens=(1, 3), seed=5)
    t = compute_tables(open_store(path))
    cols = [c for c in METRICS if not c.startswith("gold")]
    for c in cols:
        assert t.per_sample[c].is_nan().sum() == 0, c
        assert t.per_sample[c].null_count() == 0, c
    assert t.pairwise["jsd"].is_nan().sum() == 0
    one = t.per_sample.filter(pl.col("n_rows") == 1)
    assert len(one) > 0
    assert (one["node_specificity"] == 0).all() and not one["identical_rows"].any()
    single_key = t.per_sample.filter(pl.col("n_keys") == 1)
    assert len(single_key) > 0
    assert (single_key["entropy"] == 0).all() and (single_key["norm_entropy"] == 0).all()
    d = t.diagnostics.sites.filter(pl.col("model") == "full").row(0, named=True)
    assert d["rows_key_len_1"] > 0 and d["one_node_samples"] > 0
    cmp = compare(t, n_boot=50)
    for test in cmp.tests:
        assert math.isfinite(test.mean_baseline) and math.isfinite(test.mean_variant)
        assert test.n == 40 and test.n_dropped == 0


def test_degenerate_site_and_identical_rows_are_reported(tmp_path):
    sites = (
        SiteSpec("atom_to_text", "nodes", "tokens", n_layers=1, n_heads=2),
        SiteSpec("graph_to_text_pooled", "nodes", "single", n_layers=1, n_heads=1),
    )
    path = plain_store(
        tmp_path / "deg.h5",
        12,
        sites=sites,
        nodes=(2, 5),
        tokens=(4, 8),
        identical_rows=("no_middle",),
    )
    t = compute_tables(open_store(path))
    assert t.diagnostics.degenerate_sites() == {
        "graph_to_text_pooled": "key length 1 in every sample (weights are always 1.0)"
    }
    msgs = " ".join(t.diagnostics.messages)
    assert "graph_to_text_pooled" in msgs and "degenerate" in msgs
    assert "every node attends identically" in msgs
    nm = t.per_sample.filter((pl.col("model") == "no_middle") & (pl.col("site") == "atom_to_text"))
    assert nm["identical_rows"].all()
    assert (nm["node_specificity"] < 1e-5).all()
    full = t.per_sample.filter((pl.col("model") == "full") & (pl.col("site") == "atom_to_text"))
    assert not full["identical_rows"].any()
    cmp = compare(t, n_boot=20)
    assert {x.site for x in cmp.tests} == {"atom_to_text"}
    assert any("graph_to_text_pooled" in s for s in cmp.skipped)
    assert any("identically" in w for w in cmp.warnings)
    assert "identically" in cmp.verdict.explanation


def test_single_key_samples_are_not_identical_rows(tmp_path):
    # several nodes, one key: every row is the same one-hot whatever the model does, so node
    # specificity 0 there is no evidence of broadcast attention (no flag, no warning)
    path = plain_store(tmp_path / "k1.h5", 8, nodes=(2, 5), tokens=(1, 1), seed=2)
    t = compute_tables(open_store(path), options=MetricOptions(exclude_special=False))
    assert (t.per_sample["n_keys"] == 1).all() and (t.per_sample["n_rows"] > 1).all()
    assert (t.per_sample["node_specificity"] == 0).all()
    assert not t.per_sample["identical_rows"].any()
    d = t.diagnostics.sites
    assert (d["identical_row_samples"] == 0).all() and (d["identical_row_heads"] == 0).all()
    assert not any("identically" in m for m in t.diagnostics.messages)


@pytest.mark.parametrize(
    "heads,kinds", [("each", {"head"}), ("mean", {"head-mean"}), ("both", {"head", "head-mean"})]
)
def test_heads_option(tmp_path, heads, kinds):
    path = plain_store(tmp_path / "h.h5", 6)
    t = compute_tables(open_store(path), options=MetricOptions(heads=heads))
    assert set(t.per_sample["head_kind"].unique()) == kinds
    assert set(t.pairwise["head_kind"].unique()) == kinds


def test_partial_store_is_flagged(tmp_path):
    site = SiteSpec("a", "nodes", "tokens")
    spec = StoreSpec(
        models=(ModelSpec("full"), ModelSpec("nm")), sites=(site,), selection_ids=("a", "b", "c")
    )
    path = tmp_path / "p.h5"
    with StoreWriter.create(path, spec) as w:
        w.append(
            [
                SampleRecord(
                    id="a",
                    node_labels=["C", "O"],
                    tokens=["x", "y"],
                    special=[False, False],
                    target=1.0,
                    predictions={"full": 1.0, "nm": 2.0},
                    attention={m: {"a": np.full((1, 1, 2, 2), 0.5)} for m in ("full", "nm")},
                )
            ]
        )
    t = compute_tables(open_store(path))
    assert t.is_partial and t.n_samples == 1 and t.n_planned == 3
    assert t.diagnostics.messages[0].startswith("partial store: 1 of 3")


def test_unknown_sites_and_models_are_clear_errors(tmp_path):
    path = plain_store(tmp_path / "e.h5", 3)
    st = open_store(path)
    with pytest.raises(ValueError, match="`sites`.*nope"):
        compute_tables(st, sites=["nope"])
    with pytest.raises(ValueError, match="`models`.*nope"):
        compute_tables(st, models=["nope"])
    with pytest.raises(ValueError, match="heads"):
        MetricOptions(heads="all")


def test_accepts_a_path_and_reports_progress(tmp_path):
    path = plain_store(tmp_path / "g.h5", 10)
    seen = []
    t = compute_tables(
        path, options=MetricOptions(chunk_samples=4), progress=lambda d, tot: seen.append((d, tot))
    )
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert t.main_site() == "atom_to_text"


def test_heatmap_title_metrics_are_the_table_values(tmp_path):
    # one implementation: the heatmap's title numbers equal the per-sample table (head-mean,
    # last layer), including rows with all their mass on special tokens (left out by both, not
    # made uniform)
    from attncmp.analyze.heatmap import heatmap_data

    path, arr = _padded_store(tmp_path, n=6, L=2, H=3, kmin=4, seed=21, all_special=True)
    t = compute_tables(open_store(path))
    with open_store(path) as st:
        for sid in st.ids:
            d = heatmap_data(st, sid)
            for m in MODELS:
                row = t.per_sample.filter(
                    (pl.col("sample_id") == sid)
                    & (pl.col("model") == m)
                    & (pl.col("head") == -1)
                    & (pl.col("layer") == arr["L"] - 1)
                ).row(0, named=True)
                for name, got in d.metrics[m].items():
                    if math.isnan(row[name]):
                        assert math.isnan(got), (sid, m, name)
                    else:
                        np.testing.assert_allclose(got, row[name], rtol=1e-5, atol=1e-6)
            pw = t.pairwise.filter(
                (pl.col("sample_id") == sid)
                & (pl.col("head") == -1)
                & (pl.col("layer") == arr["L"] - 1)
            ).row(0, named=True)
            if math.isnan(pw["jsd"]):
                assert d.jsd is None
            else:
                np.testing.assert_allclose(d.jsd, pw["jsd"], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# --jobs: worker processes give the same tables and outputs as one process, bit for bit
# ---------------------------------------------------------------------------------------------
def test_jobs_give_identical_tables_bit_for_bit(tmp_path):
    path, _ = _padded_store(tmp_path, n=11, all_special=True, seed=31)
    st = open_store(path)
    opts = MetricOptions(chunk_samples=3)  # 4 chunks: work for both workers
    one = compute_tables(st, options=opts, jobs=1)
    seen = []
    two = compute_tables(st, options=opts, jobs=2, progress=lambda d, t: seen.append((d, t)))
    assert one.run_info["workers"] == 0 and two.run_info["workers"] == 2
    assert len(two.run_info["worker_peak_rss_kb"]) >= 1
    assert seen == [(3, 11), (6, 11), (9, 11), (11, 11)]  # in chunk order
    for name in ("per_sample", "pairwise", "head_similarity", "samples"):
        assert_frame_equal(getattr(one, name), getattr(two, name), check_exact=True)
    assert one.diagnostics.to_dict() == two.diagnostics.to_dict()


def test_resolve_jobs():
    import os

    from attncmp.analyze.table import resolve_jobs

    assert resolve_jobs(3) == 3 and resolve_jobs(1) == 1
    assert resolve_jobs(None) == resolve_jobs(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="jobs"):
        resolve_jobs(-1)


@pytest.mark.parametrize(
    "chunk, jobs, want", [(64, 2, 0), (32, 2, 2), (16, 3, 3), (16, 1, 0), (16, 8, 4), (64, None, 0)]
)
def test_engine_workers_is_what_compute_tables_starts(tmp_path, chunk, jobs, want):
    """engine_workers (which analyze uses to decide whether to start the figure workers during
    the scan) tells exactly how many worker processes compute_tables runs (0: in process)."""
    from attncmp.analyze.table import engine_workers
    from attncmp.store import open_store

    from ._stores import plain_store

    path = plain_store(tmp_path / "s.h5", 64)
    with open_store(path) as st:
        got = engine_workers(st, chunk, jobs)
        assert got == want
        tables = compute_tables(st, options=MetricOptions(chunk_samples=chunk), jobs=jobs)
        assert tables.run_info["workers"] == got


def test_analysis_outputs_identical_with_jobs(tmp_path):
    from attncmp.analyze.outputs import AnalysisOptions, run_analysis

    path, _ = _padded_store(tmp_path, n=12, seed=32)
    outs = {}
    for jobs in (1, 2):
        d = tmp_path / f"out{jobs}"
        opts = AnalysisOptions(chunk_samples=4, jobs=jobs, n_boot=200, examples=2, quiet=True)
        run_analysis([str(path)], d, opts)
        outs[jobs] = d
    files = sorted(
        p.relative_to(outs[1])
        for p in outs[1].rglob("*")
        if p.is_file() and p.suffix in (".csv", ".parquet")
    )
    assert len(files) >= 5
    for rel in files:
        assert (outs[1] / rel).read_bytes() == (outs[2] / rel).read_bytes(), rel
    s1, s2 = (json.loads((outs[j] / "summary.json").read_text()) for j in (1, 2))
    for s in (s1, s2):  # timing is the only thing allowed to differ
        _drop_keys(s, {"seconds", "elapsed_s", "created", "timestamp", "timings"})
    assert s1 == s2


def _drop_keys(d, keys):
    """Remove ``keys`` at any depth of a JSON object (in place)."""
    if isinstance(d, dict):
        for k in list(d):
            if k in keys:
                del d[k]
            else:
                _drop_keys(d[k], keys)
    elif isinstance(d, list):
        for x in d:
            _drop_keys(x, keys)


def test_unknown_models_and_sites_are_one_clear_error(tmp_path):
    path = plain_store(tmp_path / "s.h5", 4)
    with open_store(path) as st:
        with pytest.raises(AnalysisError, match=r"`models`: \['nope'\] not in the store; it has"):
            compute_tables(st, models=["full", "nope"])
        with pytest.raises(AnalysisError, match=r"`sites`: \['bogus'\] not in the store"):
            compute_tables(st, sites=iter(["bogus"]))
        t = compute_tables(st, models=iter(["no_middle", "full"]))
    assert t.models == ["full", "no_middle"]  # the store's baseline first
