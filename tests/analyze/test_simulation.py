"""Simulations (seeded, fast): the corrected family keeps its false-positive rate at alpha under
the null, and a planted shift in concentration is found with the right sign.

Small versions of the checks of ``benchmarks/bench_calibration.py`` (issue 9 (a)-(d)); the large
ones are marked ``slow`` (run with ``pytest -m slow``)."""

from __future__ import annotations

import numpy as np
import pytest
from attncmp.analyze import compare, compute_tables
from attncmp.analyze.calibration import Scenario, clopper_pearson, simulate_tables
from attncmp.analyze.compare import EXPECTED, INCONCLUSIVE, OPPOSITE
from attncmp.store import open_store
from scipy import stats

from tests.analyze._stores import plain_store

from ._engine_helpers import simulate_attention_values, simulate_shapes, tables_from_values

ALPHA = 0.05


def _replicate(rng, n, sharp_full, sharp_var, n_heads=0):
    nn, nt = simulate_shapes(rng, n, tokens=(8, 14))
    vals = {
        "full": simulate_attention_values(rng, nn, nt, sharp_full),
        "no_middle": simulate_attention_values(rng, nn, nt, sharp_var),
    }
    per_head = None
    if n_heads:
        per_head = {
            m: {
                "entropy": np.stack(
                    [simulate_attention_values(rng, nn, nt, s)["entropy"] for _ in range(n_heads)]
                )
            }
            for m, s in (("full", sharp_full), ("no_middle", sharp_var))
        }
    return tables_from_values(vals, per_head=per_head)


@pytest.mark.slow
def test_null_family_wise_error_rate_is_at_most_alpha():
    _null_fwer(reps=300)


def test_null_family_wise_error_rate_small():
    _null_fwer(reps=40)


def _null_fwer(reps):
    rng = np.random.default_rng(20240501)
    n = 30
    rejections = 0
    for _ in range(reps):
        t = _replicate(rng, n, 1.0, 1.0, n_heads=2)
        c = compare(t, n_boot=0, head_matching="index", alpha=ALPHA)
        assert c.n_family == 3 and c.families["per-head"].size == 2
        rejections += any(x.p_corrected < ALPHA for x in c.main_tests())
    # Holm keeps P(any rejection) <= alpha; allow binomial slack at the 99.9% level
    limit = stats.binom.ppf(0.999, reps, ALPHA)
    assert rejections <= limit, f"{rejections}/{reps} replicates had a false positive"


@pytest.mark.slow
def test_uncorrected_tests_would_inflate_the_error_rate():
    # sanity check of the simulation itself: per-test rejections near alpha, family-wise above
    rng = np.random.default_rng(7)
    reps, hits, any_hit = 120, 0, 0
    for _ in range(reps):
        c = compare(_replicate(rng, 30, 1.0, 1.0, n_heads=2), n_boot=0, head_matching="index")
        p = np.array([x.p_primary for x in c.tests])
        hits += int((p < ALPHA).sum())
        any_hit += bool((p < ALPHA).any())
    per_test = hits / (reps * len(p))
    assert 0.01 < per_test < 0.10
    assert any_hit / reps > per_test


def test_planted_concentration_shift_is_detected_with_the_right_sign():
    # entropy, max weight and Gini are monotone in the sharpness of a softmax; the effective-token
    # count (weights > 0.1) is not: sharpening a diffuse row first lifts some weights above 0.1,
    # so it can rise before it falls. It is reported, but not asserted here.
    rng = np.random.default_rng(11)
    for _ in range(20):
        c = compare(_replicate(rng, 40, 1.5, 1.0), n_boot=0)
        by = {x.metric: x for x in c.main_tests()}
        assert by["entropy"].mean_diff > 0  # variant - full: the full model has lower entropy
        assert by["max_weight"].mean_diff < 0 and by["gini"].mean_diff < 0
        for m in ("entropy", "max_weight", "gini"):
            assert by[m].verdict == EXPECTED, (m, by[m].p_corrected)
        assert c.verdict.overall in ("supported", "partly supported")


def test_planted_shift_end_to_end_through_a_store(tmp_path):
    p = plain_store(
        tmp_path / "shift.h5",
        40,
        sharpness={"full": 1.6},
        nodes=(2, 6),
        tokens=(6, 20),
        seed=3,
    )
    c = compare(compute_tables(open_store(p)), n_boot=200)
    by = {x.metric: x for x in c.main_tests()}
    for m in ("entropy", "max_weight", "gini"):
        assert by[m].verdict == EXPECTED, m
    assert OPPOSITE not in {x.verdict for x in c.tests if x.metric != "effective_tokens"}
    assert c.verdict.overall in ("supported", "partly supported")
    q = plain_store(tmp_path / "null.h5", 40, nodes=(2, 6), tokens=(6, 20), seed=4)
    v = compare(compute_tables(open_store(q)), n_boot=0).verdict
    assert v.overall != "supported"


# -- the calibration scenarios (analyze.calibration), small seeded versions --------------------
def test_simulated_null_makes_no_claim_and_intervals_cover():
    rng = np.random.default_rng(101)
    reps, claims, cover, n_ci, head_fw = 12, 0, 0, 0, 0
    for _ in range(reps):
        c = compare(simulate_tables(rng, Scenario(n=30, n_heads=2)), n_boot=0)
        claims += c.verdict.overall != "not supported"
        head_fw += c.families["per-head"].n_significant > 0
        for t in c.main_tests():
            n_ci += 1
            cover += t.ci_diff_low <= 0 <= t.ci_diff_high
    limit = stats.binom.ppf(0.999, reps, ALPHA)
    assert claims <= limit and head_fw <= limit
    assert clopper_pearson(cover, n_ci)[1] >= 0.95  # coverage not below nominal


def test_planted_diffuse_shift_is_supported_even_with_long_rows():
    # logits x 0.8 in the variant: the full model is more concentrated (d_z about 1.2-1.5)
    rng = np.random.default_rng(102)
    for keys in ((5, 80), (5, 80), (100, 512)):
        c = compare(simulate_tables(rng, Scenario(n=40, scale=0.8, keys=keys)), n_boot=0)
        assert c.verdict.overall == "supported", (keys, [x.verdict for x in c.main_tests()])
        assert {x.family for x in c.tests if x.metric == "effective_tokens"} <= {
            "secondary",
            "per-head",
        }


def test_opposite_shift_is_contrary_never_supported():
    rng = np.random.default_rng(103)
    for _ in range(2):
        c = compare(simulate_tables(rng, Scenario(n=40, scale=1.25)), n_boot=0, heads="mean")
        assert c.verdict.overall == "contrary"


def test_five_samples_are_inconclusive():
    rng = np.random.default_rng(104)
    c = compare(simulate_tables(rng, Scenario(n=5, scale=0.5)), n_boot=0, heads="mean")
    v = c.verdict
    assert v.overall == INCONCLUSIVE and v.n_needed == 8
    assert min(t.p_corrected for t in c.main_tests()) >= 4 * 2 / 2**5 - 1e-12


def test_cross_fitted_heads_are_matched_on_other_samples():
    rng = np.random.default_rng(105)
    t = simulate_tables(rng, Scenario(n=30, n_heads=3))
    c = compare(t, n_boot=0, heads="each", head_matching="crossfit")
    ha = c.head_assignments
    assert ha.height == 3 and set(ha["fit_on"]) == {"15 samples (tested on the other 15)"}
    per_head = c.families["per-head"].tests
    assert per_head and {x.n for x in per_head} == {15}  # tested on the held-out half only
    again = compare(t, n_boot=0, heads="each", head_matching="crossfit")
    assert again.head_assignments.equals(ha)  # seeded
