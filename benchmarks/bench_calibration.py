"""Calibration of the verdict by simulation (issue 9, "How it is checked"), with Clopper-Pearson
intervals on every rate.

Simulated studies (:mod:`attncmp.analyze.calibration`): samples of 2-30 nodes x 5-80 tokens
(or 100-512), per-sample sharpness varying, 4 heads, float16 rows, default options of
:func:`attncmp.analyze.compare` (Wilcoxon primary, Holm, sorted head matching, t interval).

(a) null (variant logit scale 1.0), independent and correlated models, 2 layers (the last is the
    hypothesis layer, the other forms the per-layer family): rate of "supported" or "contrary"
    (any claim), family-wise error rate of each family (confirmatory, per-layer, per-head with
    sorted and with cross-fitted matching), coverage of the 95% intervals (paired t interval of
    the mean difference, Hodges-Lehmann/Wilcoxon-inverted shift) of the confirmatory tests;
(b) planted diffuse shift (variant scale 0.8 / 0.9 / 0.95 at n = 20 / 40 / 80, and with 100-512
    keys per row): rates of "supported" and "contrary";
(c) the opposite shift (variant scale 1/0.8): rates of "contrary" and "supported";
(d) n = 5 with a large shift: rate of "inconclusive (too few samples)".

Also times the Wilcoxon test on small samples with ties (which once took about a second each
through scipy's permutation path): the median time per ``paired_test`` call.

    python benchmarks/bench_calibration.py            # default replicates (a few minutes)
    python benchmarks/bench_calibration.py --reps 400 --planted-reps 200   # tighter intervals
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from attncmp.analyze import MetricTables, compare
from attncmp.analyze.calibration import Scenario, clopper_pearson, simulate_tables
from attncmp.analyze.compare import INCONCLUSIVE
from attncmp.analyze.stats import paired_test

ALPHA = 0.05


def rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k:4d}/{n:<4d} = {k / n:6.3f}  [{lo:.3f}, {hi:.3f}]"


def two_layers(rng, sc: Scenario) -> MetricTables:
    """Two independent layers of the same samples (layer 1 is the hypothesis layer)."""
    a = simulate_tables(rng, sc).per_sample
    b = simulate_tables(rng, sc).per_sample.with_columns(pl.lit(1).alias("layer"))
    t = MetricTables.from_per_sample(pl.concat([a, b]))
    return t


def null_block(rng, reps: int, rho: float, n: int) -> None:
    sc = Scenario(n=n, scale=1.0, rho=rho)
    claim = fam_c = fam_l = fam_h = fam_x = 0
    cover_t = cover_hl = n_ci = 0
    t0 = time.perf_counter()
    for _ in range(reps):
        t = two_layers(rng, sc)
        c = compare(t, n_boot=0, head_matching="sorted")
        v = c.verdict.overall
        claim += v in ("supported", "contrary", "mixed", "partly supported")
        fam_c += c.confirmatory.n_significant > 0
        fam_l += c.families["per-layer"].n_significant > 0
        fam_h += c.families["per-head"].n_significant > 0
        x = compare(t, n_boot=0, heads="each", head_matching="crossfit")
        fam_x += x.families["per-head"].n_significant > 0
        for test in c.main_tests():
            n_ci += 1
            cover_t += test.ci_diff_low <= 0.0 <= test.ci_diff_high
            cover_hl += test.ci_shift_low <= 0.0 <= test.ci_shift_high
    kind = "independent" if rho == 0 else f"correlated (rho {rho})"
    print(f"(a) null, {kind} models, n = {n}, {reps} replicates ({time.perf_counter() - t0:.0f} s)")
    print(f"    any claim (supported/partly/mixed/contrary)  {rate(claim, reps)}   want <= {ALPHA}")
    print(f"    FWER confirmatory family                     {rate(fam_c, reps)}")
    print(f"    FWER per-layer family                        {rate(fam_l, reps)}")
    print(f"    FWER per-head family, sorted                 {rate(fam_h, reps)}")
    print(f"    FWER per-head family, cross-fitted           {rate(fam_x, reps)}")
    print(f"    95% t interval of the mean diff covers 0     {rate(cover_t, n_ci)}   want ~0.95")
    print(f"    95% HL / Wilcoxon-inverted covers 0          {rate(cover_hl, n_ci)}")


def planted_block(rng, reps: int, scale: float, n: int, keys=(5, 80), label="") -> None:
    sc = Scenario(n=n, scale=scale, keys=keys)
    sup = con = inc = 0
    for _ in range(reps):
        v = compare(simulate_tables(rng, sc), n_boot=0, heads="mean").verdict.overall
        sup += v == "supported"
        con += v == "contrary"
        inc += v == INCONCLUSIVE
    tail = f"   inconclusive {inc}" if inc else ""
    print(
        f"    scale {scale:<5} n = {n:<3} keys {keys[0]}-{keys[1]:<4}{label}  supported "
        f"{rate(sup, reps)}   contrary {rate(con, reps)}{tail}"
    )


def wilcoxon_timing() -> None:
    ties_zeros = np.array([0.0, 0.1, 0.1, -0.2, 0.3, 0.0, 0.4, -0.1, 0.2, 0.5])
    times = []
    for k in range(200):
        t0 = time.perf_counter()
        paired_test(np.zeros(10), np.roll(ties_zeros, k), n_boot=0)
        times.append(time.perf_counter() - t0)
    print(
        f"paired_test on n = 10 with ties and zeros: median {1e3 * np.median(times):.2f} ms, "
        f"max {1e3 * max(times):.2f} ms per call (200 calls)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=100, help="null replicates per block")
    ap.add_argument("--planted-reps", type=int, default=60, help="replicates per planted cell")
    ap.add_argument("--seed", type=int, default=20261201)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    print(f"alpha = {ALPHA}; rates with 95% Clopper-Pearson intervals\n")
    null_block(rng, a.reps, 0.0, 40)
    null_block(rng, a.reps, 0.5, 40)
    print("(b) planted diffuse shift (the variant's logits x scale; the hypothesis holds)")
    for scale in (0.8, 0.9, 0.95):
        for n in (20, 40, 80):
            planted_block(rng, a.planted_reps, scale, n)
    planted_block(rng, a.planted_reps, 0.8, 40, keys=(100, 512))
    print("(c) opposite shift (the variant more concentrated; the hypothesis is false)")
    planted_block(rng, a.planted_reps, 1 / 0.8, 40)
    planted_block(rng, a.planted_reps, 1 / 0.8, 40, keys=(100, 512))
    print("(d) n = 5, large diffuse shift")
    planted_block(rng, a.planted_reps, 0.5, 5)
    wilcoxon_timing()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
