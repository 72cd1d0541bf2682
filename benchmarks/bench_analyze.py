"""Benchmark of the analysis engine (analyze.compute_tables), printed as ratios in one run.

    python benchmarks/bench_analyze.py            # 2,000 samples (+ 20,000 for memory)
    python benchmarks/bench_analyze.py --quick    # 300 samples, smoke test

Synthetic store at realistic shapes: 2 models, 1 site nodes -> tokens, 8 heads, 1 layer, nodes
4-64, tokens 32-256 (2 special tokens each), float16, gzip (the store defaults).

(a) speed vs a straightforward per-row implementation of the four original metrics (a Python
    loop calling scipy.stats.entropy and np.sort per row, as the old script did) on weights
    already in memory; it is timed on a subset of rows and extrapolated per row to every
    per-head row of both models. The engine's time is the whole compute_tables run (reading,
    every metric, head-mean rows, pairwise JSD/TV, head similarity, per-sample tables).
(b) the engine vs the floor: reading every weight from the store (same chunks) plus one
    vectorised p*log(p) pass, on one core; the engine with --jobs 1 and with --jobs 2 (worker
    processes), timed in interleaved rounds in the same run: engine(2 workers) / floor and the
    speed-up of 2 workers over 1. CPU seconds include the worker processes.
(c) peak memory of compute_tables (each in a fresh subprocess; VmHWM and tracemalloc peak) on the
    store and on a store 10x larger, with 1 worker (in process) and with 2 (the peak of each
    worker process, and of the calling process that assembles the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attncmp.store import ModelSpec, SiteSpec, StoreSpec, StoreWriter, open_store  # noqa: E402
from attncmp.store.batch import FlatBatch  # noqa: E402

SITE = SiteSpec("atom_to_text", "nodes", "tokens", n_layers=1, n_heads=8)
MODELS = ("full", "no_middle")


def make_store(path: Path, n_samples: int, *, seed: int = 0, repeat: int = 1) -> Path:
    """Write the synthetic store; ``repeat > 1`` appends the same batches under new ids (a store
    ``repeat`` times larger without ``repeat`` times the generation cost)."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    total = n_samples * repeat
    ids = tuple(f"s{i:07d}" for i in range(total))
    spec = StoreSpec(
        models=tuple(ModelSpec(m) for m in MODELS),
        sites=(SITE,),
        selection_ids=ids,
        dtype="float16",
        compression="gzip",
        selection_seed=seed,
        split="test",
    )
    batches = []
    bs = 250
    for lo in range(0, n_samples, bs):
        b = min(bs, n_samples - lo)
        nn = rng.integers(4, 65, size=b)
        nt = rng.integers(32, 257, size=b)
        special = np.zeros(int(nt.sum()), dtype=bool)
        ends = np.cumsum(nt)
        special[ends - nt] = True
        special[ends - 1] = True
        att = {}
        for j, m in enumerate(MODELS):
            parts = []
            for q, k in zip(nn, nt, strict=True):
                z = rng.standard_normal((SITE.n_layers, SITE.n_heads, q, k), dtype=np.float32)
                z *= 1.5 + 0.3 * j
                z = np.exp(z - z.max(-1, keepdims=True))
                z /= z.sum(-1, keepdims=True)
                parts.append(z.reshape(-1))
            att[m] = {SITE.name: np.concatenate(parts).astype(np.float16)}
        tgt = rng.normal(size=(b, 1))
        batches.append(
            FlatBatch(
                ids=[],
                n_nodes=nn,
                n_tokens=nt,
                node_labels=["C"] * int(nn.sum()),
                tokens=["tok"] * int(nt.sum()),
                special=special,
                targets=tgt,
                predictions={m: tgt + rng.normal(size=(b, 1)) * 0.3 for m in MODELS},
                attention=att,
                splits=["test"] * b,
            )
        )
    k = 0
    with StoreWriter.create(path, spec) as w:
        for _ in range(repeat):
            for fb in batches:
                fb.ids = list(ids[k : k + len(fb.n_nodes)])
                k += len(fb.n_nodes)
                w.append(fb)
    return path


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t, extra_cpu: float = 0.0):
    return time.perf_counter() - t[0], time.process_time() - t[1] + extra_cpu


def run_engine(path: Path, chunk: int, in_memory: bool = False, jobs: int = 1):
    """compute_tables end to end; with ``in_memory`` the chunks are read first (not timed)."""
    from attncmp.analyze import MetricOptions, compute_tables

    st = open_store(path)
    if in_memory:
        chunks = list(st.iter_chunks(SITE.name, chunk_samples=chunk))
        st.iter_chunks = lambda *a, **k: iter(chunks)
    t = _clock()
    tab = compute_tables(st, options=MetricOptions(chunk_samples=chunk), jobs=jobs)
    return _since(t, tab.run_info.get("worker_cpu_s", 0.0)), tab  # + the workers' CPU


def run_floor(path: Path, chunk: int) -> float:
    """Read every weight (same chunks) + one vectorised p*log(p) pass."""
    st = open_store(path)
    t = _clock()
    acc = 0.0
    tiny = np.float32(np.finfo(np.float32).tiny)
    for ch in st.iter_chunks(SITE.name, chunk_samples=chunk):
        for m in st.models:
            p = ch.blocks[m].data
            lg = np.log2(np.maximum(p, tiny))
            lg *= p
            acc += float(lg.sum())
    return _since(t)


def vectorised_four(path: Path, chunk: int):
    """The same four metrics on the same rows with analyze.metrics (weights in memory):
    row_metrics over every per-head row of both models (it computes all ten row metrics)."""
    from attncmp.analyze.metrics import row_metrics

    st = open_store(path)
    chunks = list(st.iter_chunks(SITE.name, chunk_samples=chunk))
    t = _clock()
    for ch in chunks:
        rows = np.repeat(ch.n_key, SITE.n_layers * SITE.n_heads * ch.n_query)
        off = np.concatenate(([0], np.cumsum(rows)))
        for m in MODELS:
            r = row_metrics(ch.blocks[m].data, off, threshold=0.1, exclude_special=False)
            _ = (r.entropy, r.max_weight, r.effective_tokens, r.gini)
    return _since(t)


def old_per_row(path: Path, max_rows: int) -> tuple[float, int, int]:
    """The old script's per-row loop (scipy.stats.entropy, np.sort) on a subset of rows.

    Returns (seconds for the subset, rows timed, total per-head rows of both models)."""
    from scipy.stats import entropy

    st = open_store(path)
    total_rows = int(np.sum(st.n_nodes)) * SITE.n_heads * SITE.n_layers * len(MODELS)
    rows = []
    for ch in st.iter_chunks(SITE.name, chunk_samples=64):
        for m in MODELS:
            for i in range(len(ch)):
                blk = ch.matrix(m, i).astype(np.float64)
                rows.extend(blk.reshape(-1, blk.shape[-1]))
                if len(rows) >= max_rows:
                    break
        if len(rows) >= max_rows:
            break
    rows = rows[:max_rows]
    t = _clock()
    out = []
    for p in rows:
        h = entropy(p)
        mx = p.max()
        eff = int(np.sum(p > 0.1))
        s = np.sort(p)
        n = len(s)
        g = (2 * np.sum(np.arange(1, n + 1) * s) / (n * s.sum())) - (n + 1) / n
        out.append((h, mx, eff, g))
    return _since(t), len(rows), total_rows


MEM_CHILD = r"""
import json, sys, time, tracemalloc
sys.path.insert(0, {root!r})
from attncmp.analyze import MetricOptions, compute_tables
from attncmp.store import open_store
def hwm():  # peak RSS of this process (VmHWM; ru_maxrss would include the parent's at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
if {jobs} == 1:
    tracemalloc.start()  # (numpy's share; not for the pool run: it slows pickling)
base = hwm()
t0 = time.perf_counter()
t = compute_tables(open_store({path!r}), options=MetricOptions(chunk_samples={chunk}),
                   jobs={jobs})
dt = time.perf_counter() - t0
cur, peak = tracemalloc.get_traced_memory() if {jobs} == 1 else (0, 0)
print(json.dumps(dict(rss_kb=hwm(),
                      rss_before_kb=base, traced_peak=peak, seconds=dt,
                      rows=len(t.per_sample),
                      workers=t.run_info.get("worker_peak_rss_kb", []))))
"""


def peak_memory(path: Path, chunk: int, jobs: int = 1) -> dict:
    code = MEM_CHILD.format(root=str(ROOT), path=str(path), chunk=chunk, jobs=jobs)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--scale", type=int, default=10, help="size factor of the memory store")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--old-rows", type=int, default=20000, help="rows timed for (a)")
    ap.add_argument("--quick", action="store_true", help="300 samples, 3x memory store")
    ap.add_argument("--workdir", default=None, help="where stores are written (kept/reused)")
    ap.add_argument("--no-memory", action="store_true", help="skip (c)")
    ap.add_argument("--memory-only", action="store_true", help="only (c)")
    ap.add_argument("--parallel-only", action="store_true", help="only the timings of (b)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (best is reported)")
    a = ap.parse_args()
    if a.quick:
        a.samples, a.scale, a.old_rows = 300, 3, 3000
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_analyze_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}; numpy {np.__version__}; {os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    small = make_store(work / f"bench_{a.samples}.h5", a.samples)
    print(
        f"store: {small.name} ({small.stat().st_size / 2**20:.0f} MiB, "
        f"written in {time.perf_counter() - t0:.1f} s)"
    )
    st = open_store(small)
    n_el = int(np.sum(st.n_nodes * st.n_tokens)) * SITE.n_heads * len(MODELS)
    rows = int(np.sum(st.n_nodes)) * SITE.n_heads * len(MODELS)
    print(f"  {st.n_samples} samples, {rows:,} per-head rows, {n_el:,} weights (2 models)")

    if a.memory_only:
        return memory(a, work, small)
    # warm the page cache and imports once, then time (best of 3; wall and CPU seconds);
    # floor, 1 worker and 2 workers alternate round by round, so they share the machine's load
    run_floor(small, a.chunk)
    best = lambda runs: (min(r[0] for r in runs), min(r[1] for r in runs))  # noqa: E731
    rounds = {"floor": [], "eng": [], "eng2": []}
    for _ in range(a.rounds):
        rounds["floor"].append(run_floor(small, a.chunk))
        rounds["eng"].append(run_engine(small, a.chunk)[0])
        rounds["eng2"].append(run_engine(small, a.chunk, jobs=2)[0])
    floor, eng, eng2 = (best(rounds[k]) for k in ("floor", "eng", "eng2"))
    if a.parallel_only:
        return report_parallel(floor, eng, eng2, rounds, n_el)
    mem = best([run_engine(small, a.chunk, in_memory=True)[0] for _ in range(3)])
    four = best([vectorised_four(small, a.chunk) for _ in range(3)])
    old_t, old_n, old_total = old_per_row(small, a.old_rows)
    old = tuple(x / old_n * old_total for x in old_t)

    def r(x, y):
        return f"{x[0] / y[0]:.0f}x wall, {x[1] / y[1]:.0f}x CPU"

    print()
    print("times: wall s / CPU s (best of 3)")
    print(
        f"(a) old per-row loop (4 metrics, weights in memory): {old_t[0]:.2f} / {old_t[1]:.2f} "
        f"for {old_n:,} rows -> {old[0]:.1f} / {old[1]:.1f} extrapolated to {old_total:,} rows"
    )
    print(
        f"    analyze.metrics.row_metrics on the same rows (the four metrics and six more): "
        f"{four[0]:.2f} / {four[1]:.2f}"
    )
    print(f"    speed-up, same four metrics: {r(old, four)}   (goal >= 100x)")
    print(
        f"    whole engine, weights in memory (every metric, head-mean, pairwise, head "
        f"similarity, tables): {mem[0]:.2f} / {mem[1]:.2f}"
    )
    print(f"    speed-up, whole engine vs the four-metric loop: {r(old, mem)}")
    print(
        f"    end to end (both also read the store, {floor[0] - 0:.2f} s floor incl. read): "
        f"{(old[0] + floor[0]) / eng[0]:.0f}x wall, {(old[1] + floor[1]) / eng[1]:.0f}x CPU"
    )
    print(f"(b) floor (read all weights + one p*log p pass): {floor[0]:.2f} / {floor[1]:.2f}")
    print(f"    engine end to end: {eng[0]:.2f} / {eng[1]:.2f}")
    print(
        f"    engine / floor: {eng[0] / floor[0]:.2f}x wall, {eng[1] / floor[1]:.2f}x CPU"
        "   (goal <= 3x)"
    )
    print(
        f"    throughput: {n_el / eng[0] / 1e6:.0f} M weights/s (engine), "
        f"{n_el / floor[0] / 1e6:.0f} M weights/s (floor), wall"
    )

    report_parallel(floor, eng, eng2, rounds, n_el)
    if not a.no_memory:
        memory(a, work, small)


def report_parallel(floor, eng, eng2, rounds, n_el) -> None:
    """(b) with worker processes: 2 workers vs the one-core floor and vs 1 worker."""
    print(f"(b) --jobs 2 (2 worker processes): {eng2[0]:.2f} / {eng2[1]:.2f}")
    print(f"    engine(2 workers) / floor(1 core): {eng2[0] / floor[0]:.2f}x wall   (goal <= 1.5x)")
    print(
        f"    speed-up 2 workers vs 1: {eng[0] / eng2[0]:.2f}x wall   (goal >= 1.7x); CPU "
        f"seconds 2 workers / 1: {eng2[1] / eng[1]:.2f}"
    )
    print(
        "    every round (wall s): "
        + "; ".join(
            f"floor {f[0]:.2f}, 1 worker {e[0]:.2f}, 2 workers {e2[0]:.2f}"
            for f, e, e2 in zip(rounds["floor"], rounds["eng"], rounds["eng2"], strict=True)
        )
    )
    print(f"    load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def memory(a, work: Path, small: Path) -> None:
    """(c): peak memory of compute_tables on the store and on one `--scale` times larger."""
    t0 = time.perf_counter()
    big = make_store(work / f"bench_{a.samples}x{a.scale}.h5", a.samples, repeat=a.scale)
    print(
        f"(c) store {a.scale}x larger: {big.name} ({big.stat().st_size / 2**20:.0f} MiB, "
        f"written in {time.perf_counter() - t0:.1f} s)"
    )
    m1 = peak_memory(small, a.chunk)
    m2 = peak_memory(big, a.chunk)
    for name, m in (("1x", m1), (f"{a.scale}x", m2)):
        print(
            f"    {name}: peak RSS {m['rss_kb'] / 1024:.0f} MiB (after imports "
            f"{m['rss_before_kb'] / 1024:.0f} MiB), tracemalloc peak "
            f"{m['traced_peak'] / 2**20:.0f} MiB, {m['seconds']:.1f} s, "
            f"{m['rows']:,} table rows"
        )
    print(
        f"    peak RSS ratio {a.scale}x/1x: {m2['rss_kb'] / m1['rss_kb']:.2f}   "
        f"tracemalloc ratio: {m2['traced_peak'] / m1['traced_peak']:.2f}   (goal <= 1.2)"
    )
    p1 = peak_memory(small, a.chunk, jobs=2)
    p2 = peak_memory(big, a.chunk, jobs=2)
    for name, m in (("1x", p1), (f"{a.scale}x", p2)):
        w = ", ".join(f"{x / 1024:.0f}" for x in m["workers"])
        print(
            f"    --jobs 2, {name}: workers' peak RSS {w} MiB; calling process "
            f"{m['rss_kb'] / 1024:.0f} MiB (assembles the tables); {m['seconds']:.1f} s"
        )
    print(
        f"    per-worker peak RSS ratio {a.scale}x/1x: "
        f"{max(p2['workers']) / max(p1['workers']):.2f}   (goal <= 1.2); calling process: "
        f"{p2['rss_kb'] / p1['rss_kb']:.2f}"
    )


if __name__ == "__main__":
    main()
