"""One sample's heatmap and text view against a bare ``imshow`` + ``savefig`` of the same matrices.

Two samples from the synthetic generator (:mod:`attncmp.store.synthetic`), written to a real store
and read back with :func:`attncmp.analyze.heatmap.heatmap_data`:

- ``long``: a crystal-like sample of 96 nodes x 512 WordPiece tokens (issue 11's long text);
- ``short``: a molecule-like sample of 6 nodes x 9 tokens (the demo's scale).

Per sample, alternating ``--repeats`` times, each writing a PNG at the house dpi (150):

- *bare*: one figure (A4 portrait), three ``imshow`` panels (baseline, variant, difference) of the
  full matrices, ``savefig``: the floor any drawing of these matrices pays;
- *heatmap*: :func:`attncmp.analyze.heatmap.plot_heatmap` (windows, groups, labels, gold, notes);
- *text view*: :func:`attncmp.analyze.textview.plot_text` (the mean-over-nodes focus, as written
  for every analysis example; long texts fit one focus on a page);
- *read*: ``heatmap_data`` (store read + title metrics), reported on its own.

Prints medians and the ratios heatmap / bare and text view / bare (goal <= 3x) and the absolute
time of the long sample (goal <= 3 s)::

    python benchmarks/bench_sample_views.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

from attncmp.analyze.heatmap import heatmap_data, plot_heatmap  # noqa: E402
from attncmp.analyze.textview import plot_text  # noqa: E402
from attncmp.store import SiteSpec, open_store  # noqa: E402
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def make(path: Path, kind: str, nodes: tuple[int, int], tokens: tuple[int, int]) -> Path:
    spec = synthetic_spec(
        1, has_gold=True, sites=(SiteSpec("atom_to_text", n_layers=1, n_heads=4),)
    )
    return write_synthetic_store(path, spec, nodes=nodes, tokens=tokens, kind=kind)


def bare(d, out: Path) -> None:
    a, b = d.matrices
    fig = Figure(figsize=(8.27, 11.69))
    for j, m in enumerate((a, b, b - a)):
        ax = fig.add_subplot(3, 1, j + 1)
        ax.imshow(m, aspect="auto", interpolation="nearest")
    fig.savefig(out, dpi=150)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = {
            "long (96 x 512)": make(tmp / "long.h5", "crystal", (96, 96), (512, 512)),
            "short (6 x 9)": make(tmp / "short.h5", "molecule", (6, 6), (9, 9)),
        }
        for name, path in cases.items():
            t_read = []
            with open_store(path) as st:
                for _ in range(args.repeats):
                    t_read.append(timed(lambda st=st: heatmap_data(st, st.ids[0])))
                d = heatmap_data(st, st.ids[0])
            # warm-up (font cache, first-use imports) outside the timings
            bare(d, tmp / "w.png")
            plot_heatmap(d, tmp / "w_hm.png")
            plot_text(d, tmp / "w_tv.png")
            t = {"bare": [], "heatmap": [], "text view": []}
            for _ in range(args.repeats):  # alternate so load changes hit all three alike
                t["bare"].append(timed(lambda d=d: bare(d, tmp / "b.png")))
                t["heatmap"].append(timed(lambda d=d: plot_heatmap(d, tmp / "h.png")))
                t["text view"].append(timed(lambda d=d: plot_text(d, tmp / "t.png")))
            med = {k: statistics.median(v) for k, v in t.items()}
            ratios = {k: [x / y for x, y in zip(v, t["bare"], strict=True)] for k, v in t.items()}
            rows.append((name, med, statistics.median(t_read), ratios))
    print(f"repeats: {args.repeats}; medians (s); ratio = median of per-repeat ratios to bare")
    print(
        f"{'sample':<18}{'read':>8}{'bare':>8}{'heatmap':>9}{'text':>8}{'hm/bare':>9}{'tv/bare':>9}"
    )
    for name, med, rd, ratios in rows:
        print(
            f"{name:<18}{rd:8.3f}{med['bare']:8.3f}{med['heatmap']:9.3f}{med['text view']:8.3f}"
            f"{np.median(ratios['heatmap']):9.2f}{np.median(ratios['text view']):9.2f}"
        )
    long = rows[0][1]
    print(
        f"long sample, read + heatmap: {rows[0][2] + long['heatmap']:.2f} s; read + text view: "
        f"{rows[0][2] + long['text view']:.2f} s (goal <= 3 s each)"
    )


if __name__ == "__main__":
    main()
