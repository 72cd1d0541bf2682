"""Extraction overhead: `run_extraction` wall time vs the bare forward passes it cannot avoid.

Both sides run the same reference-model variants over the same samples in the same batches:

- **bare**: ``make_batch`` + move to the device + every variant's forward pass under
  ``torch.inference_mode()`` (no gather, no sanity checks, no copies, no writing);
- **extract**: the whole :func:`extract.engine.run_extraction` call, end to end (model loading,
  selection, gather on the device, sanity statistics, device-to-host copies, compression and HDF5
  writing on the background thread, commit), into a fresh store each repeat.

The two are interleaved ``--repeats`` times and the medians compared; goal: overhead <= 15%.

    python benchmarks/bench_extract.py                      # CPU, all 642 molecules, batch 32
    python benchmarks/bench_extract.py --device cuda --batch-size 256

Checkpoints: ``--checkpoints FULL NO_MIDDLE`` uses existing reference checkpoints; otherwise two
are trained for one epoch (the cost of a forward pass does not depend on training).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from attncmp.extract.adapters.reference import ReferenceAdapter
from attncmp.extract.engine import ExtractConfig, move_to_device, resolve_device, run_extraction


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(ckpts: list[Path], ids: list[str], batch_size: int, device: torch.device) -> float:
    """Seconds for make_batch + forward of every variant on every batch (models preloaded)."""
    ad = ReferenceAdapter()
    handles = [ad.load_model(str(p), device, False) for p in ckpts]
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(ids), batch_size):
            batch = move_to_device(ad.make_batch(ids[lo : lo + batch_size], None), device)
            for h in handles:
                out = ad.forward(h, batch, device)
                del out
    _sync(device)
    return time.perf_counter() - t0


def extraction(ckpts: list[Path], args, out: Path) -> dict[str, float]:
    """Wall seconds of one run_extraction call and its phases (load_models, setup, batches)."""
    cfg = ExtractConfig(
        models=[("full", str(ckpts[0])), ("no_middle", str(ckpts[1]))],
        adapter="reference",
        out=out,
        split=args.split,
        allow_training_samples=args.split != "test",
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        quiet=True,
    )
    t0 = time.perf_counter()
    res = run_extraction(cfg)
    wall = time.perf_counter() - t0
    assert res.complete, res.summary()
    return {"total": wall, **res.timings}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoints", nargs=2, type=Path, metavar=("FULL", "NO_MIDDLE"))
    ap.add_argument("--split", default="all", help="'all' (642 molecules) or 'test' (64)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoints:
            ckpts = list(args.checkpoints)
        else:
            from attncmp.extract.reference.train import train_variant

            print("training two 1-epoch reference checkpoints...", file=sys.stderr)
            ckpts = [
                train_variant(v, epochs=1, out=tmp / f"{v}.pt", quiet=True).checkpoint
                for v in ("full", "no_middle")
            ]
        ad = ReferenceAdapter()
        ad.load_model(str(ckpts[0]), torch.device("cpu"), False)
        ids = ad.sample_ids(args.split, None)
        # warm-up (allocator, kernels, page cache)
        bare_forward(ckpts, ids[: args.batch_size], args.batch_size, device)
        bares, runs = [], []
        for r in range(args.repeats):
            bares.append(bare_forward(ckpts, ids, args.batch_size, device))
            runs.append(extraction(ckpts, args, tmp / f"store_{r}.h5"))
        size = (tmp / "store_0.h5").stat().st_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), torch threads {torch.get_num_threads()}, {len(ids)} samples, "
        f"batch {args.batch_size}, 2 variants, dtype {args.dtype}, {args.repeats} repeats "
        f"interleaved; store {size / 2**20:.2f} MiB"
    )
    n = len(ids)
    for label, pick in (("median", statistics.median), ("best", min)):
        bare = pick(bares)
        ext = {k: pick([r[k] for r in runs]) for k in runs[0]}
        print(f"[{label} of {args.repeats}]")
        print(f"  bare forward passes           {bare:7.3f} s  {n / bare:8.1f} samples/s")
        tot = ext["total"]
        print(f"  extraction, end to end        {tot:7.3f} s  {n / tot:8.1f} samples/s")
        print(f"    loading the 2 models        {ext['load_models']:7.3f} s")
        print(f"    setup (selection, store)    {ext['setup']:7.3f} s")
        print(f"    batches incl. last commit   {ext['batches']:7.3f} s")
        load = ext["load_models"]
        for what, t, ref in (
            ("end to end / bare forward passes", tot, bare),
            ("end to end / (bare + loading models)", tot, bare + load),
            ("batches only / bare forward passes", ext["batches"], bare),
        ):
            print(f"  ratio {what:38s} {t / ref:6.3f}  (overhead {100 * (t / ref - 1):+.1f}%)")


if __name__ == "__main__":
    main()
