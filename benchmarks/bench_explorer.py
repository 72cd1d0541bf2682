"""Size and build time of explorer.html for a large store, with and without a cap.

    python benchmarks/bench_explorer.py                 # 2,000 samples, 4-64 nodes x 32-256 tokens
    python benchmarks/bench_explorer.py --samples 300 --tokens 32,256 --heads 8

Builds a synthetic store (``attncmp.store.synthetic``: one layer, ``--heads`` heads, two models,
float16) like the store benchmark's, then writes its explorer from the store alone for every
``--caps`` value (``--max-samples``; 0 = every sample) and for the default size budget, and prints
one line per file: samples embedded, MiB, bytes per embedded weight, seconds. Results are in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from attncmp.analyze.explorer import DEFAULT_MAX_MB, write_explorer
from attncmp.store import SiteSpec, open_store
from attncmp.store.synthetic import GRADED_HEADS, synthetic_batch, synthetic_spec
from attncmp.store.writer import StoreWriter


def _pair(s: str) -> tuple[int, int]:
    a, b = s.split(",")
    return int(a), int(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--nodes", type=_pair, default=(4, 64))
    ap.add_argument("--tokens", type=_pair, default=(32, 256))
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--caps", default="0,500,100")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="keep DIR/store.h5 if it exists")
    ap.add_argument("--no-budget", action="store_true", help="skip the default --max-mb run")
    a = ap.parse_args()
    d = Path(a.dir or tempfile.mkdtemp(prefix="bench_explorer_"))
    d.mkdir(parents=True, exist_ok=True)
    store = d / "store.h5"
    spec = synthetic_spec(
        a.samples, sites=(SiteSpec("atom_to_text", n_layers=1, n_heads=a.heads),), has_gold=False
    )
    t = time.perf_counter()
    if not (a.reuse and store.exists()):
        with StoreWriter.create(store, spec, overwrite=True) as w:
            for lo in range(0, a.samples, 64):
                ids = spec.selection_ids[lo : lo + 64]
                w.append(synthetic_batch(spec, ids, GRADED_HEADS, nodes=a.nodes, tokens=a.tokens))
    with open_store(store) as st:
        weights = int(np.sum(st.n_nodes * st.n_tokens)) * a.heads * len(st.models)
    print(
        f"store: {a.samples} samples, {weights / 1e6:.1f} M weights, "
        f"{store.stat().st_size / 2**20:.1f} MiB, written in {time.perf_counter() - t:.1f} s"
    )
    runs = [(int(c), None) for c in a.caps.split(",")] + (
        [] if a.no_budget else [(0, DEFAULT_MAX_MB)]
    )
    for cap, mb in runs:
        out = d / f"explorer_{cap}_{mb}.html"
        t = time.perf_counter()
        r = write_explorer(out, stores=store, max_samples=cap, max_mb=mb)
        sec = time.perf_counter() - t
        with open_store(store) as st:
            emb = [i for i, p in enumerate(st.ids) if i in set(_embedded(out))]
            w_emb = int(np.sum(st.n_nodes[emb] * st.n_tokens[emb])) * a.heads * len(st.models)
        label = f"--max-mb {mb}" if mb else f"--max-samples {cap}"
        print(
            f"{label:<18} {r.n_embedded:>5} of {r.n_samples} embedded  "
            f"{r.n_bytes / 2**20:8.1f} MiB  {r.n_bytes / max(w_emb, 1):.2f} bytes/weight  "
            f"{sec:6.1f} s"
        )
        out.unlink()


def _embedded(path: Path) -> list[int]:
    import re

    text = path.read_text(encoding="utf-8")
    return [int(x) for x in re.findall(r'type="application/x-attncmp-sample" id="a(\d+)"', text)]


if __name__ == "__main__":
    main()
