"""The real GPU check, prepared for a machine with a CUDA device (none was lent while writing it).

Unit tests run the CUDA code path's logic on the CPU; this script runs it on a real device:

1. trains two quick reference checkpoints (CPU, seconds);
2. extracts the whole embedded data set (642 molecules) on ``cpu`` and on ``cuda`` into two float32
   stores, with a large batch (so pinned memory, non-blocking copies, the on-device index gather
   and the prefetch thread are all exercised);
3. checks both stores validate and hold the same ids, lengths, tokens, gold masks, predictions and
   attention matrices (within float32 kernel differences);
4. runs ``bench_extract.py --device cuda`` for the overhead ratio.

    python benchmarks/gpu_check.py [--batch-size 256] [--workdir DIR]

Prints one ``PASS``/``FAIL`` line per check and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from attncmp.extract.engine import ExtractConfig, run_extraction
from attncmp.extract.reference.train import train_variant
from attncmp.store import open_store
from attncmp.store.validate import validate_store

ATOL = 1e-4  # float32 softmax on different kernels (cuBLAS vs MKL) agrees to ~1e-6; margin


def _check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument(
        "--devices",
        default="cpu,cuda",
        help="the two devices compared (cpu,cpu checks the script itself on a machine without GPU)",
    )
    args = ap.parse_args()
    devices = args.devices.split(",")
    if len(devices) != 2:
        ap.error("--devices takes two devices, e.g. cpu,cuda")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("FAIL  no CUDA device visible to torch; run this on a GPU machine", flush=True)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="attncmp_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU {gpu}, torch {torch.__version__}, devices {devices}, workdir {work}")

    ckpts = [
        train_variant(v, quick=True, seed=0, out=work / f"{v}.pt", quiet=True).checkpoint
        for v in ("full", "no_middle")
    ]
    stores = {}
    for k, device in enumerate(devices):
        t0 = time.perf_counter()
        res = run_extraction(
            ExtractConfig(
                models=[("full", str(ckpts[0])), ("no_middle", str(ckpts[1]))],
                adapter="reference",
                out=work / f"store_{k}_{device.replace(':', '')}.h5",
                split="all",
                num_samples=None,
                batch_size=args.batch_size,
                device=device,
                dtype="float32",
                allow_training_samples=True,
                quiet=True,
            )
        )
        print(f"      {device}: {res.summary()} [{time.perf_counter() - t0:.1f} s]")
        stores[k] = res.path

    ok = True
    for k, path in stores.items():
        rep = validate_store(path)
        ok &= _check(f"{devices[k]} store validates", rep.ok, "" if rep.ok else rep.summary())
    with open_store(stores[0]) as a, open_store(stores[1]) as b:
        ok &= _check("same ids in the same order", a.ids == b.ids, f"{len(a.ids)} samples")
        ok &= _check(
            "same lengths",
            np.array_equal(a.n_nodes, b.n_nodes) and np.array_equal(a.n_tokens, b.n_tokens),
        )
        worst_att, worst_pred, same_meta = 0.0, 0.0, True
        for sid in a.ids:
            sa, sb = a.sample(sid), b.sample(sid)
            same_meta &= sa.tokens == sb.tokens and sa.node_labels == sb.node_labels
            same_meta &= (sa.gold is None) == (sb.gold is None)
            if sa.gold is not None:
                same_meta &= bool(np.array_equal(sa.gold, sb.gold))
            for m in a.models:
                worst_pred = max(
                    worst_pred, float(np.abs(sa.predictions[m] - sb.predictions[m]).max())
                )
                for site, mat in sa.attention[m].items():
                    worst_att = max(worst_att, float(np.abs(mat - sb.attention[m][site]).max()))
        ok &= _check("same tokens, node labels and gold masks", same_meta)
        ok &= _check(
            "attention equal within tolerance", worst_att <= ATOL, f"max |diff| {worst_att:.2e}"
        )
        ok &= _check(
            "predictions equal within tolerance", worst_pred <= 1e-3, f"max |diff| {worst_pred:.2e}"
        )

    if not args.no_bench and "cuda" in args.devices:
        bench = Path(__file__).with_name("bench_extract.py")
        r = subprocess.run(
            [
                sys.executable,
                str(bench),
                "--device",
                "cuda",
                "--batch-size",
                str(args.batch_size),
                "--checkpoints",
                str(ckpts[0]),
                str(ckpts[1]),
            ],
            check=False,
        )
        ok &= _check("bench_extract.py --device cuda ran", r.returncode == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
