"""Store benchmark: size on disk vs a dense padded float32 layout, write and read throughput.

A realistic synthetic run (default: 2 models, 1 site, 8 heads, 2,000 samples, 4-64 nodes and
32-256 tokens per sample, float16, rows = softmax of Gaussian logits with a per-head scale, so the
weights compress like real attention rather than like noise) is written once per codec, then:

- bytes on disk of the attention (data + offsets) vs ``n_samples x heads x max_nodes x max_tokens x
  4`` bytes per model, the dense padded float32 layout of the original workflow;
- write throughput of ``StoreWriter.append`` (batches of 32 samples, one commit each; generating
  the data and converting it to float16, which extraction does on the device, is not timed) in
  MB/s of float32-equivalent weights and in samples/s;
- read + iterate throughput of every weight through ``Store.iter_chunks`` (decompress, checksum,
  gather, cast to float32), against ``np.fromfile`` of a raw uncompressed file holding the same
  float16 bytes followed by the same cast to float32: the ratio is the price of compression,
  checksums and the ragged layout when reading;
- ``validate_store`` (reads every chunk and checks every row) and ``merge_stores`` of two shards;
- file growth: the file's size against its datasets' storage, for small samples (the reference
  model's molecules) and realistic ones, committed after every batch of 32 and grouped 8 batches
  per commit, with the writer's repack on close and without it (HDF5 SWMR never reuses freed
  space, so every commit leaves the previous partial chunks behind).

Everything is measured side by side in one run; no asserts. Usage::

    python benchmarks/bench_store.py                 # the full run (about 1 GB of temp files)
    python benchmarks/bench_store.py --samples 200   # quick
    python benchmarks/bench_store.py --growth-only   # file size vs dataset storage only
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from attncmp.store import SiteSpec, StoreWriter, open_store, shard_ids
from attncmp.store.info import store_info
from attncmp.store.merge import merge_stores
from attncmp.store.synthetic import GRADED_HEADS, synthetic_batch, synthetic_spec
from attncmp.store.validate import validate_store

NODES, TOKENS = (4, 64), (32, 256)
MB = 1e6


def write_store(path: Path, spec, ids, batch: int, seed: int = 0) -> tuple[float, int]:
    """Write ``ids`` in batches; returns (seconds spent in append, float32-equivalent bytes)."""
    spent, nbytes = 0.0, 0
    with StoreWriter.create(path, spec, overwrite=True) as w:
        for lo in range(0, len(ids), batch):
            b = synthetic_batch(
                spec, ids[lo : lo + batch], GRADED_HEADS, seed=seed, nodes=NODES, tokens=TOKENS
            )
            for d in b.attention.values():
                for site in d:
                    # the extraction engine converts to the stored dtype on the device, before
                    # the writer; numpy's float32 -> float16 cast is slow on softmax weights
                    d[site] = d[site].astype(spec.dtype)
                    nbytes += 4 * d[site].size
            t0 = time.perf_counter()
            w.append(b)
            spent += time.perf_counter() - t0
    return spent, nbytes


def read_store(path: Path, chunk: int) -> tuple[float, float]:
    """Iterate every weight of every model; returns (seconds, checksum)."""
    t0 = time.perf_counter()
    total = 0.0
    with open_store(path) as st:
        for site in st.sites():
            for ch in st.iter_chunks(site, chunk_samples=chunk):
                for blocks in ch.blocks.values():
                    total += float(blocks.data.sum(dtype=np.float64))
    return time.perf_counter() - t0, total


def read_raw(path: Path, n_values: int, chunk_values: int) -> tuple[float, float]:
    """np.fromfile of the same float16 bytes, uncompressed, cast to float32 like the reader."""
    t0 = time.perf_counter()
    total = 0.0
    with open(path, "rb") as fh:
        done = 0
        while done < n_values:
            k = min(chunk_values, n_values - done)
            x = np.fromfile(fh, dtype=np.float16, count=k).astype(np.float32)
            total += float(x.sum(dtype=np.float64))
            done += k
    return time.perf_counter() - t0, total


def dump_raw(store_path: Path, raw_path: Path) -> int:
    """Write the store's float16 weights, uncompressed, to ``raw_path``; returns the count."""
    n = 0
    with open_store(store_path) as st, open(raw_path, "wb") as out:
        for sh in st._shards:
            for m in st.models:
                for site in st.sites(m):
                    ds = sh.f[f"models/{m}/attention/{site}/data"]
                    for lo in range(0, ds.shape[0], 1 << 22):
                        block = ds[lo : lo + (1 << 22)]
                        block.tofile(out)
                        n += block.size
    return n


def file_growth(tmp: Path, n: int, heads: int) -> None:
    """File size vs dataset storage after committing every batch (and grouped commits)."""
    from unittest import mock

    from attncmp.store import writer as W

    print(f"\nfile growth: {n} samples, file size / datasets' storage (both in KiB)")
    print(
        f"{'samples':>10} {'commit every':>13} {'repack':>7} {'file':>9} {'datasets':>9} "
        f"{'ratio':>6}"
    )
    site = SiteSpec("fine_grained", n_layers=1, n_heads=heads)
    for label, nodes, tokens in (("small", (1, 6), (8, 24)), ("realistic", NODES, TOKENS)):
        spec = synthetic_spec(n, sites=(site,), models=("full", "no_middle"))
        ids = list(spec.selection_ids)
        for group in (1, 8):
            step = 32 * group
            batches = [
                synthetic_batch(spec, ids[lo : lo + step], GRADED_HEADS, nodes=nodes, tokens=tokens)
                for lo in range(0, n, step)
            ]
            for repack in (True, False):
                path = tmp / f"growth_{label}_{group}_{repack}.h5"
                ratio = W.REPACK_RATIO if repack else float("inf")
                with mock.patch.object(W, "REPACK_RATIO", ratio):
                    with StoreWriter.create(path, spec, overwrite=True) as w:
                        for b in batches:
                            w.append(b)
                size, storage = path.stat().st_size, W.dataset_storage(path)
                print(
                    f"{label:>10} {32 * group:>9} smp {'yes' if repack else 'no':>7} "
                    f"{size / 1024:>9,.0f} {storage / 1024:>9,.0f} {size / storage:>6.2f}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000, help="samples (default: 2000)")
    ap.add_argument("--heads", type=int, default=8, help="heads (default: 8)")
    ap.add_argument("--batch", type=int, default=32, help="samples per append (default: 32)")
    ap.add_argument("--chunk", type=int, default=256, help="samples per read chunk (default: 256)")
    ap.add_argument(
        "--codecs", default="gzip,lzf", help="comma-separated codecs to compare (default: gzip,lzf)"
    )
    ap.add_argument("--no-merge", action="store_true", help="skip the merge measurement")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--growth-only", action="store_true", help="only the file-growth table")
    args = ap.parse_args()

    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench_store_"))
    tmp.mkdir(parents=True, exist_ok=True)
    if args.growth_only:
        file_growth(tmp, args.samples, args.heads)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    site = SiteSpec("fine_grained", n_layers=1, n_heads=args.heads)
    base = synthetic_spec(args.samples, sites=(site,), models=("full", "no_middle"))
    ids = list(base.selection_ids)
    print(
        f"store benchmark: {args.samples} samples, 2 models, 1 site x {args.heads} heads, "
        f"nodes {NODES[0]}-{NODES[1]}, tokens {TOKENS[0]}-{TOKENS[1]}, float16, "
        f"append batches of {args.batch}"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    print(f"scratch: {tmp}")

    rows = []
    raw_path = tmp / "raw.f16"
    for codec in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        spec = replace(base, compression=codec)
        path = tmp / f"store_{codec}.h5"
        t_write, f32_bytes = write_store(path, spec, ids, args.batch)
        info = store_info(path)
        if not rows:
            n_values = dump_raw(path, raw_path)
        t_read, s_store = read_store(path, args.chunk)
        t_raw, s_raw = read_raw(raw_path, n_values, 1 << 22)
        assert abs(s_store - s_raw) <= 1e-9 * abs(s_raw), (s_store, s_raw)  # same weights
        t_val = time.perf_counter()
        report = validate_store(path)
        t_val = time.perf_counter() - t_val
        rows.append(
            {
                "codec": codec,
                "weights": n_values,
                "disk": info.attention_bytes,
                "file": info.file_bytes,
                "dense": info.dense_float32_bytes,
                "f32": f32_bytes,
                "t_write": t_write,
                "t_read": t_read,
                "t_raw": t_raw,
                "t_val": t_val,
                "valid": report.ok,
            }
        )

    n = args.samples
    print()
    print("sizes (attention data + offsets of both models)")
    r0 = rows[0]
    print(f"  weights stored (valid regions)       {r0['weights']:>14,}")
    print(f"  dense padded float32                 {r0['dense'] / MB:>11.1f} MB")
    print(f"  valid regions as float32             {r0['f32'] / MB:>11.1f} MB")
    print(f"  valid regions as float16, raw        {r0['weights'] * 2 / MB:>11.1f} MB")
    for r in rows:
        print(
            f"  on disk, {r['codec']:<5}                       {r['disk'] / MB:>11.1f} MB   "
            f"(whole file {r['file'] / MB:.1f} MB)"
        )
    print()
    hdr = (
        f"  {'codec':<6} {'dense f32/disk':>14} {'f32/disk':>9} {'write MB/s':>11} "
        f"{'write smp/s':>12} {'read MB/s':>10} {'fromfile MB/s':>14} {'read/fromfile':>14} "
        f"{'validate s':>11}"
    )
    print("ratios and throughput (MB/s of float32-equivalent weights)")
    print(hdr)
    for r in rows:
        print(
            f"  {r['codec']:<6} {r['dense'] / r['disk']:>13.1f}x {r['f32'] / r['disk']:>8.1f}x "
            f"{r['f32'] / MB / r['t_write']:>11.1f} {n / r['t_write']:>12.1f} "
            f"{r['f32'] / MB / r['t_read']:>10.1f} {r['f32'] / MB / r['t_raw']:>14.1f} "
            f"{r['t_read'] / r['t_raw']:>13.1f}x {r['t_val']:>11.2f}"
            + ("" if r["valid"] else "  INVALID")
        )
    print(
        "  (read/fromfile: time to iterate every weight through Store.iter_chunks over time to "
        "np.fromfile the same\n   bytes uncompressed, both cast to float32 and summed; files "
        "freshly written, so both are read from page cache)"
    )

    if not args.no_merge:
        spec = replace(base, compression=rows[0]["codec"])
        shards = []
        for i in range(2):
            sspec = replace(spec, shard_index=i, shard_count=2)
            p = tmp / f"shard{i}.h5"
            write_store(p, sspec, shard_ids(ids, i, 2), args.batch)
            shards.append(p)
        t0 = time.perf_counter()
        res = merge_stores(tmp / "merged.h5", shards, overwrite=True)
        t_merge = time.perf_counter() - t0
        print()
        print(
            f"merge of 2 shards ({rows[0]['codec']}): {t_merge:.2f} s, "
            f"{res.n_samples / t_merge:.0f} samples/s, "
            f"{rows[0]['f32'] / MB / t_merge:.1f} MB/s float32-equivalent"
        )
    if args.dir is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
