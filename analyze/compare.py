"""Paired comparison of a reference model (the baseline, usually ``full``) against each variant.

Directions
----------
The hypothesis is about the **baseline relative to each variant** ("middle fusion makes the full
model's fine-grained attention more concentrated"); a direction says how the *baseline* is
expected to compare (:mod:`analyze.registry`):

========================  ==========  ===============================================
metric                    direction   meaning (baseline = full, variant = ablation)
========================  ==========  ===============================================
entropy                   ``lower``   full < ablation, i.e. ``variant - baseline > 0``
max_weight                ``higher``  full > ablation, i.e. ``variant - baseline < 0``
perplexity (exp H)        ``lower``   full < ablation (the effective number of tokens)
gini                      ``higher``  full > ablation
effective_tokens          none        count of weights > threshold: two-sided, exploratory
========================  ==========  ===============================================

Differences are always ``variant - baseline`` (as in :func:`analyze.stats.paired_test`).

Families
--------
Every test belongs to exactly one family, corrected on its own (Holm by default, BH with
``correction="bh"``):

* ``confirmatory``: the hypothesis as stated before looking at the data: the directional metrics
  x the headline site x the hypothesis layer(s) (default: the last layer, whose output feeds the
  prediction) x the head-mean distribution x the variants. The verdict, the headline table,
  stdout, ``attention_statistics.csv`` and ``summary.json`` all come from this one
  :class:`Family` object.
* ``secondary`` (exploratory): metrics without a direction (``effective_tokens``, normalised
  entropy, node specificity, gold mass, ...) at the same headline cells, two-sided.
* ``per-layer`` (exploratory): head-mean tests at every other (site, layer).
* ``per-head`` (exploratory): tests of individual heads.
* ``gold-vs-chance`` (exploratory): each model's gold mass against the mass a uniform row would
  put on the gold tokens (``gold_chance``), when the store has gold masks.

The primary p-value is the Wilcoxon signed-rank test (``primary="t"``: the paired t-test); the
observed direction is the sign of the matched-pairs rank-biserial (t: of the mean difference).

Heads
-----
Heads of independently trained variants do not correspond by index. ``head_matching``:

* ``"sorted"`` (default): order-free. For every sample and model the per-head values are sorted;
  rank ``r`` of the baseline is compared with rank ``r`` of the variant (``head`` =
  ``variant_head`` = rank, 0 = smallest). Exchangeable under the null, so calibrated.
* ``"crossfit"``: the samples are split at random (seeded) into two halves; heads are matched
  (Hungarian, minimising the summed squared paired t statistics of the metrics) on the first
  half and tested on the second, so the matching never sees the tested samples. Calibrated when
  the variant's heads are the baseline's in another order; a head without a counterpart is a
  real difference, which it may then find.
* ``"hungarian"``: matched on the mean JSD between head rows over **all** samples, then tested on
  the same samples: a selection step, so its p-values are not calibrated (41.5% family-wise
  false positives in a null simulation). Exploratory only; a warning says so.
* ``"index"``: heads paired by index (variants fine-tuned from one checkpoint).

Small samples
-------------
With ``n`` pairs and a family of ``m`` tests the smallest attainable corrected p-value is
``m * p_min(n)`` (:func:`analyze.stats.min_corrected_p`; exact Wilcoxon: ``p_min = 2^(1-n)``). If
it cannot go below alpha, the verdict is ``"inconclusive (too few samples)"`` and says how many
samples would be needed (:func:`analyze.stats.samples_needed`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import polars as pl

from . import registry as REG
from .errors import AnalysisInputError
from .options import resolve_models
from .stats import (
    CORRECTIONS,
    PAIRED_COLUMNS,
    PairedResult,
    correct_pvalues,
    detectable_effect,
    min_corrected_p,
    paired_test,
    samples_needed,
)
from .table import HEAD, HEAD_MEAN, HEADS, MetricTables

__all__ = [
    "DEFAULT_DIRECTIONS",
    "MAIN_METRICS",
    "CONFIRMATORY_METRICS",
    "FAMILIES",
    "VERDICTS",
    "OVERALL",
    "INCONCLUSIVE",
    "MetricTest",
    "Family",
    "Verdict",
    "Comparison",
    "compare",
    "match_heads",
    "expected_sign",
    "threshold_diagnostic",
]

DEFAULT_DIRECTIONS = dict(REG.DEFAULT_DIRECTIONS)
#: the original workflow's four metrics (figure and CSV rows; not the confirmatory family)
MAIN_METRICS = REG.ORIGINAL_METRICS
CONFIRMATORY_METRICS = REG.CONFIRMATORY_METRICS
EXPECTED = "expected direction, significant"
NOT_SIG = "not significant"
OPPOSITE = "significant, opposite direction"
UNDIRECTED = "significant, no expected direction"
MIXED = "mixed"
VERDICTS = (EXPECTED, NOT_SIG, OPPOSITE)
INCONCLUSIVE = "inconclusive (too few samples)"
OVERALL = ("supported", "partly supported", "mixed", "contrary", "not supported", INCONCLUSIVE)
HEAD_MATCHING = ("sorted", "crossfit", "index", "hungarian")
CONFIRMATORY = "confirmatory"
FAMILIES = (CONFIRMATORY, "secondary", "per-layer", "per-head", "gold-vs-chance")
_CORR_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
HUNGARIAN_WARNING = (
    "head_matching='hungarian' matches heads on the same samples it then tests (a selection "
    "step): its per-head p-values are not calibrated; read them as exploratory only, or use "
    "'sorted' or 'crossfit'"
)


def expected_sign(direction: str | None) -> int:
    """Expected sign of ``variant - baseline`` for a direction describing the baseline."""
    if direction is None:
        return 0
    if direction == "lower":
        return 1
    if direction == "higher":
        return -1
    raise AnalysisInputError(f"direction must be 'lower' or 'higher', got {direction!r}")


@dataclass(frozen=True)
class MetricTest:
    """One paired test: ``metric`` at ``site``/``layer``/``head`` of ``variant`` vs ``baseline``.

    The statistics are those of ``result`` (:class:`analyze.stats.PairedResult`; ``mean_diff``
    and its CI are ``variant - baseline``); its flat fields (``mean_diff``, ``ci_diff_low``,
    ``wilcoxon_pvalue``, ... :data:`analyze.stats.PAIRED_COLUMNS`) read as attributes of the
    test. ``family`` names the family the test was corrected in; ``expected_direction``
    describes the baseline ("lower": expected lower than the variant), ``expected`` spells it
    out with model names, ``observed_direction`` is what the primary test shows. ``p_primary``
    is the primary p-value and ``p_corrected`` its adjusted value within ``family``.
    """

    metric: str
    site: str
    layer: int
    head: int
    head_kind: str
    head_matching: str
    variant_head: int
    baseline: str
    variant: str
    family: str
    primary: str
    p_primary: float
    p_corrected: float
    correction: str
    expected_direction: str
    expected: str
    observed_direction: str
    verdict: str
    result: PairedResult = field(repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        if name in PAIRED_COLUMNS:
            return self.result.as_dict()[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        """Identification, then the paired statistics, then the family's decision (flat)."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "result"}
        head = {k: meta.pop(k) for k in list(meta)[:10]}  # metric ... family
        return {**head, **self.result.as_dict(), **meta}


#: the columns of :meth:`Comparison.to_frame` / ``significance.csv``, in order
TEST_COLUMNS = tuple(
    [f.name for f in fields(MetricTest) if f.name != "result"][:10]
    + list(PAIRED_COLUMNS)
    + [f.name for f in fields(MetricTest) if f.name != "result"][10:]
)


@dataclass(frozen=True)
class Family:
    """A family of tests corrected together.

    ``name`` (one of :data:`FAMILIES`), ``confirmatory`` (decides the verdict) or exploratory,
    ``description`` (what it holds, stated in every output), ``tests``, ``correction``,
    ``alpha``, ``primary``; ``size`` counts the tests with a p-value; ``min_corrected_p`` is the
    smallest corrected p-value the family could reach at its sample size.
    """

    name: str
    confirmatory: bool
    description: str
    tests: tuple[MetricTest, ...]
    correction: str
    alpha: float
    primary: str

    @property
    def size(self) -> int:
        return int(sum(math.isfinite(t.p_primary) for t in self.tests))

    @property
    def n(self) -> int:
        """The smallest number of pairs in any test of the family (0 when empty)."""
        ns = [t.n for t in self.tests]
        return int(min(ns)) if ns else 0

    @property
    def min_corrected_p(self) -> float:
        return min_corrected_p(self.n, max(self.size, 1), self.primary)

    @property
    def n_significant(self) -> int:
        return sum(
            1 for t in self.tests if math.isfinite(t.p_corrected) and t.p_corrected < self.alpha
        )

    @property
    def kind(self) -> str:
        return "confirmatory" if self.confirmatory else "exploratory"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "size": self.size,
            "n_significant": self.n_significant,
            "correction": self.correction,
            "alpha": self.alpha,
            "primary_test": self.primary,
            "min_corrected_p": self.min_corrected_p,
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome for the hypothesis, from the confirmatory family only.

    ``overall`` is one of :data:`OVERALL`:

    * ``supported``: every confirmatory test is significant in the expected direction;
    * ``partly supported``: some are, none is significant the opposite way;
    * ``mixed``: some significant in the expected direction and some opposite (a tie is never
      "contrary");
    * ``contrary``: some significant opposite, none expected;
    * ``not supported``: none is significant although the family could reach alpha;
    * ``inconclusive (too few samples)``: the family cannot reach alpha at this n
      (``n_needed`` says how many samples could).

    ``per_metric[metric]`` combines the metric's confirmatory tests (every hypothesis layer and
    variant): one of :data:`VERDICTS`, or ``"mixed"`` when they disagree; ``per_variant`` the
    same per variant. ``detectable_dz``: the smallest |d_z| one test of the family detects with
    80% power (:func:`analyze.stats.detectable_effect`).
    """

    overall: str
    per_metric: dict[str, str]
    explanation: str
    per_variant: dict[str, dict[str, str]] = field(default_factory=dict)
    family_size: int = 0
    n: int = 0
    min_corrected_p: float = math.nan
    n_needed: int = 0
    detectable_dz: float = math.nan


def _combine(verdicts: list[str]) -> str:
    exp = sum(v == EXPECTED for v in verdicts)
    opp = sum(v == OPPOSITE for v in verdicts)
    if exp and opp:
        return MIXED
    if exp and exp == len(verdicts):
        return EXPECTED
    if exp:
        return EXPECTED  # some expected, the others not significant
    if opp:
        return OPPOSITE
    if any(v == UNDIRECTED for v in verdicts):
        return UNDIRECTED
    return NOT_SIG


def overall_verdict(verdicts: Sequence[str], min_p: float, alpha: float) -> str:
    """The overall outcome from the verdicts of the confirmatory tests (see :class:`Verdict`)."""
    if not verdicts:
        return "not supported"
    if not (math.isfinite(min_p) and min_p < alpha):
        return INCONCLUSIVE
    exp = sum(v == EXPECTED for v in verdicts)
    opp = sum(v == OPPOSITE for v in verdicts)
    if exp == len(verdicts):
        return "supported"
    if exp and opp:
        return "mixed"
    if opp:
        return "contrary"
    if exp:
        return "partly supported"
    return "not supported"


@dataclass
class Comparison:
    """All tests of :func:`compare`, grouped into families, and how they were run.

    ``families`` (:class:`Family` by name; ``confirmatory`` is the hypothesis), ``tests`` (every
    test, family by family), ``to_frame()`` (polars), ``main_tests()`` (the confirmatory
    tests), ``verdict``; ``hypothesis_layers`` (the layers of the headline site the hypothesis
    covers); ``head_assignments`` (frame of head matches); ``skipped`` (left-out tests, with
    reasons); ``warnings`` (degenerate attention, uncalibrated options) and ``notices``
    (structured diagnostics, e.g. ``threshold_uninformative``).
    """

    families: dict[str, Family]
    baseline: str
    variants: list[str]
    main_site: str | None
    hypothesis_layers: list[int]
    correction: str
    alpha: float
    seed: int
    n_boot: int
    primary: str
    directions: dict[str, str]
    head_matching: str
    ci_method: str = "t"
    confidence: float = 0.95
    metrics: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    head_assignments: pl.DataFrame | None = None

    @property
    def tests(self) -> list[MetricTest]:
        return [t for f in self.families.values() for t in f.tests]

    @property
    def confirmatory(self) -> Family:
        return self.families[CONFIRMATORY]

    @property
    def n_family(self) -> int:
        """Number of tests with a p-value in the confirmatory family."""
        return self.confirmatory.size

    def family(self, name: str) -> Family:
        return self.families[name]

    def to_frame(self) -> pl.DataFrame:
        rows = [t.as_dict() for t in self.tests]
        if not rows:
            return pl.DataFrame(schema={c: pl.Float64 for c in TEST_COLUMNS})
        return pl.DataFrame(rows, infer_schema_length=None)

    def main_metrics(self) -> list[str]:
        return [m for m in self.metrics if self.directions.get(m) is not None]

    def main_tests(self) -> list[MetricTest]:
        """The confirmatory family's tests (directional metrics, headline site, hypothesis
        layers, head-mean, every variant)."""
        return list(self.confirmatory.tests)

    def headline_tests(self) -> list[MetricTest]:
        """Every test at the headline cells (confirmatory and secondary), for tables."""
        return [*self.confirmatory.tests, *self.families["secondary"].tests]

    @property
    def verdict(self) -> Verdict:
        fam = self.confirmatory
        main = list(fam.tests)
        metrics = [m for m in self.main_metrics() if any(t.metric == m for t in main)]
        per_metric = {m: _combine([t.verdict for t in main if t.metric == m]) for m in metrics}
        per_variant = {
            v: {
                m: _combine([t.verdict for t in main if t.metric == m and t.variant == v])
                for m in metrics
            }
            for v in self.variants
        }
        min_p = fam.min_corrected_p
        overall = overall_verdict([t.verdict for t in main], min_p, self.alpha)
        m = max(fam.size, 1)
        n_needed = samples_needed(m, self.alpha, self.primary)
        dz = detectable_effect(fam.n, m, self.alpha, 0.8, self.primary) if fam.n >= 2 else math.nan
        corr = _CORR_NAMES[self.correction]
        ptxt = "Wilcoxon signed-rank" if self.primary == "wilcoxon" else "paired t-test"
        hyp = ", ".join(f"{k} {self.directions[k]}" for k in metrics)
        layers = ", ".join(str(x) for x in self.hypothesis_layers)
        n_exp = sum(t.verdict == EXPECTED for t in main)
        n_opp = sum(t.verdict == OPPOSITE for t in main)
        lines = [
            f"Hypothesis (confirmatory family, fixed before the analysis): {self.baseline} has "
            f"{hyp} than {', '.join(self.variants) or 'the variants'} (site {self.main_site}, "
            f"layer {layers}, head-mean).",
            f"{n_exp} of {fam.size} confirmatory tests moved in the expected direction and "
            f"{n_opp} in the opposite direction, significant after {corr} correction within the "
            f"family (alpha {self.alpha}, primary p: {ptxt}, {fam.size} tests, n = {fam.n}).",
        ]
        if overall == INCONCLUSIVE:
            lines.append(
                f"With n = {fam.n} the smallest attainable corrected p-value is {min_p:.3g} "
                f"(>= alpha {self.alpha}): no result could be significant; at least {n_needed} "
                "samples are needed."
            )
        for k, v in per_metric.items():
            if v != EXPECTED:
                lines.append(f"{k}: {v}.")
        lines.extend(self.warnings)
        return Verdict(
            overall,
            per_metric,
            " ".join(lines),
            per_variant,
            family_size=fam.size,
            n=fam.n,
            min_corrected_p=min_p,
            n_needed=n_needed,
            detectable_dz=dz,
        )


def match_heads(cost: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Hungarian assignment minimising ``cost[i, j]`` (baseline head i -> variant head j).

    Returns ``(rows, cols, total_cost)``; with unequal head counts, ``min(H_a, H_b)`` pairs.
    """
    from scipy.optimize import linear_sum_assignment

    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise AnalysisInputError(f"`cost` must be a 2-D matrix, got shape {c.shape}")
    c = np.where(np.isfinite(c), c, np.nanmax(c[np.isfinite(c)]) + 1 if np.isfinite(c).any() else 1)
    r, k = linear_sum_assignment(c)
    return r, k, float(c[r, k].sum())


def classify(
    res: PairedResult,
    direction: str | None,
    p_corrected: float,
    alpha: float,
    primary: str,
    baseline: str,
    variant: str,
) -> tuple[str, str, str]:
    """``(observed_direction, verdict, expected)`` of one paired result (see :class:`MetricTest`).

    The observed direction is the baseline's relative to the variant, from the primary test's
    estimate (rank-biserial for Wilcoxon, mean difference for t); both are ``variant - baseline``.
    """
    est = res.rank_biserial if primary == "wilcoxon" else res.mean_diff
    obs = "none"
    if np.isfinite(est) and est != 0:
        obs = "lower" if est > 0 else "higher"
    sig = bool(np.isfinite(p_corrected) and p_corrected < alpha)
    if not sig:
        verdict = NOT_SIG
    elif direction is None:
        verdict = UNDIRECTED
    elif obs == direction:
        verdict = EXPECTED
    else:
        verdict = OPPOSITE
    if direction == "lower":
        expected = f"{baseline} < {variant}"
    elif direction == "higher":
        expected = f"{baseline} > {variant}"
    else:
        expected = "two-sided"
    return obs, verdict, expected


def _values(tables: MetricTables, site: str, metrics: Sequence[str]):
    """``{(model, kind, layer, head): {metric: array over store positions}}`` for one site."""
    n = tables.n_samples
    ps = tables.per_sample.filter(pl.col("site") == site)
    out: dict[tuple[str, str, int, int], dict[str, np.ndarray]] = {}
    if len(ps) == 0:
        return out
    for key, g in ps.group_by(["model", "head_kind", "layer", "head"], maintain_order=True):
        pos = g["position"].to_numpy()
        d = {}
        for m in metrics:
            a = np.full(n, np.nan)
            if m in g.columns:
                a[pos] = g[m].to_numpy()
            d[m] = a
        out[(str(key[0]), str(key[1]), int(key[2]), int(key[3]))] = d
    return out


def _cost(tables: MetricTables, a: str, b: str, site: str, layer: int, ha: int, hb: int):
    hs = tables.head_similarity
    for x, y, flip in ((a, b, False), (b, a, True)):
        f = hs.filter(
            (pl.col("baseline") == x)
            & (pl.col("variant") == y)
            & (pl.col("site") == site)
            & (pl.col("layer") == layer)
        )
        if len(f):
            shape = (hb, ha) if flip else (ha, hb)
            c = np.full(shape, np.nan)
            c[f["head_baseline"].to_numpy(), f["head_variant"].to_numpy()] = f[
                "mean_jsd"
            ].to_numpy()
            return c.T if flip else c
    return None


def _crossfit_split(n: int, ok: np.ndarray, seed: int, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Random halves (fit, test) of the positions where ``ok``; seeded per layer."""
    idx = np.flatnonzero(ok)
    rng = np.random.default_rng([seed, 7919, layer])
    perm = rng.permutation(idx)
    half = len(perm) // 2
    fit = np.zeros(n, dtype=bool)
    fit[perm[:half]] = True
    test = np.zeros(n, dtype=bool)
    test[perm[half:]] = True
    return fit, test


def _profile_cost(
    vals, baseline: str, variant: str, layer: int, hb: int, hv: int, metrics, fit: np.ndarray
) -> np.ndarray:
    r"""Cost of pairing baseline head i with variant head j, from the ``fit`` samples only:
    :math:`\sum_m t_{ij,m}^2`, the squared paired t statistics of the per-sample differences
    ``variant head j - baseline head i`` of every metric (pairs that look alike on the fit half
    cost little; the sample-to-sample variation both heads share cancels in the differences)."""
    cost = np.zeros((hb, hv))
    for m in metrics:
        xb = np.vstack([vals[(baseline, HEAD, layer, h)][m][fit] for h in range(hb)])
        xv = np.vstack([vals[(variant, HEAD, layer, h)][m][fit] for h in range(hv)])
        d = xv[None, :, :] - xb[:, None, :]  # [hb, hv, samples]
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            k = np.sum(np.isfinite(d), axis=-1)
            mu = np.nanmean(d, axis=-1)
            sd = np.nanstd(d, axis=-1, ddof=1)
            t2 = mu**2 / (sd**2 / np.maximum(k, 1))
        t2 = np.where(np.isfinite(t2), t2, np.where(np.abs(mu) > 0, 1e12, 0.0))
        cost += t2
    return cost


def threshold_diagnostic(
    tables: MetricTables,
    site: str | None,
    layers: Sequence[int],
    models: Sequence[str],
    *,
    share: float = 0.9,
) -> dict[str, Any] | None:
    """A ``threshold_uninformative`` notice when the effective-token threshold is above
    (nearly) every weight: for every model, at least ``share`` of the samples have no weight
    above it at the headline cells (head-mean). Suggests an informative threshold: half the
    median per-sample max weight, which about half of the rows' largest weights exceed."""
    ps = tables.per_sample
    if site is None or "effective_tokens" not in ps.columns or ps.height == 0:
        return None
    thr = float(getattr(tables.options, "threshold", 0.1))
    sub = ps.filter(
        (pl.col("site") == site)
        & pl.col("layer").is_in(list(layers))
        & (pl.col("head") == -1)
        & pl.col("model").is_in(list(models))
    )
    if sub.height == 0:
        return None
    shares = {}
    for m in models:
        x = sub.filter(pl.col("model") == m)["effective_tokens"].to_numpy().astype(float)
        x = x[np.isfinite(x)]
        if len(x) == 0:
            return None
        shares[m] = float(np.mean(x == 0))
    if min(shares.values()) < share:
        return None
    mw = sub["max_weight"].to_numpy().astype(float) if "max_weight" in sub.columns else []
    mw = np.asarray(mw)[np.isfinite(mw)] if len(mw) else np.zeros(0)
    suggest = float(f"{np.median(mw) / 2:.2g}") if len(mw) else math.nan
    keys = sub["n_keys"].to_numpy().astype(float) if "n_keys" in sub.columns else np.zeros(0)
    med_keys = float(np.median(keys)) if len(keys) else math.nan
    msg = (
        f"threshold_uninformative: the effective-token threshold {thr:g} is above every weight "
        f"of {min(shares.values()):.0%}-{max(shares.values()):.0%} of the samples (site {site}), "
        f"so effective_tokens is 0 almost everywhere and says nothing; rows have a median of "
        f"{med_keys:.0f} keys (uniform weight {1 / med_keys if med_keys else math.nan:.3g}); a "
        f"threshold near {suggest:g} (half the median max weight) would be informative "
        "(--threshold). The verdict uses perplexity exp(H) instead."
    )
    return {
        "kind": "threshold_uninformative",
        "threshold": thr,
        "share_zero": shares,
        "suggested_threshold": suggest,
        "median_keys": med_keys,
        "message": msg,
    }


def _hypothesis_layers(spec: Sequence[int] | str | None, n_layers: int) -> list[int]:
    if spec is None or spec == "last":
        return [n_layers - 1]
    if spec == "all":
        return list(range(n_layers))
    if isinstance(spec, str):
        raise AnalysisInputError(
            f"`hypothesis_layers` must be 'last', 'all' or layer indices, got {spec!r}"
        )
    out = []
    for x in spec:
        i = int(x)
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise AnalysisInputError(
                f"`hypothesis_layers`: layer {i} does not exist (the site has {n_layers} layers)"
            )
        out.append(j)
    if not out:
        raise AnalysisInputError("`hypothesis_layers` is empty")
    return sorted(set(out))


_FAMILY_TEXT = {
    CONFIRMATORY: "directional metrics x headline site x hypothesis layer(s) x head-mean x "
    "variants (the hypothesis; decides the verdict)",
    "secondary": "metrics without a direction (incl. effective_tokens) at the headline cells, "
    "two-sided",
    "per-layer": "head-mean tests at every other site and layer",
    "per-head": "tests of individual heads (matching: {matching})",
    "gold-vs-chance": "each model's gold mass against the chance level gold_chance",
}


def compare(
    tables: MetricTables,
    *,
    baseline: str | None = None,
    variants: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    secondary_metrics: Sequence[str] = (),
    directions: Mapping[str, str | None] = DEFAULT_DIRECTIONS,
    correction: str = "holm",
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    heads: str = "both",
    head_matching: str = "sorted",
    primary: str = "wilcoxon",
    sites: Sequence[str] | None = None,
    main_site: str | None = None,
    hypothesis_layers: Sequence[int] | str | None = None,
    confidence: float = 0.95,
    ci_method: str = "t",
) -> Comparison:
    """Compare ``baseline`` (default: the tables' baseline, the reference model of the
    hypothesis) with each variant on per-sample metrics, one family at a time. See the module
    docstring for directions, families, head matching and the small-sample rule.

    Parameters
    ----------
    metrics : metrics tested in every cell (default: the confirmatory metrics and
        ``effective_tokens``, those present); metrics without a direction are two-sided.
    secondary_metrics : further undirected metrics tested at the headline cells only
        (``secondary`` family).
    heads : ``"mean"`` (head-mean only), ``"each"`` (per head only) or ``"both"``.
    sites : sites to test (default: every site that is not degenerate; degenerate ones are
        listed in ``Comparison.skipped``).
    main_site : the site the hypothesis is about (default: the first nodes -> tokens site).
    hypothesis_layers : layers of ``main_site`` in the confirmatory family: ``"last"``
        (default), ``"all"`` or indices (negative counts from the end).
    ci_method : interval of the mean difference (:func:`analyze.stats.paired_test`): ``"t"``
        (default), ``"BCa"`` or ``"percentile"`` (bootstrap with ``n_boot`` resamples).
    """
    if correction not in CORRECTIONS:
        raise AnalysisInputError(f"`correction` must be 'holm' or 'bh', got {correction!r}")
    if heads not in HEADS:
        raise AnalysisInputError(f"`heads` must be 'each', 'mean' or 'both', got {heads!r}")
    if head_matching not in HEAD_MATCHING:
        raise AnalysisInputError(
            f"`head_matching` must be one of {HEAD_MATCHING}, got {head_matching!r}"
        )
    if primary not in ("wilcoxon", "t"):
        raise AnalysisInputError(f"`primary` must be 'wilcoxon' or 't', got {primary!r}")
    if not (0 < alpha < 1):
        raise AnalysisInputError(f"`alpha` must be in (0, 1), got {alpha}")
    baseline, variants = resolve_models(tables.models, tables.baseline, baseline, variants)
    directions = dict(directions)
    for d in directions.values():
        expected_sign(d)
    known = set(tables.per_sample.columns)
    if metrics is None:
        metrics = [m for m in (*directions, "effective_tokens") if m in known]
        metrics = list(dict.fromkeys(metrics))
    else:
        metrics = list(metrics)
        bad = [m for m in metrics if m not in known]
        if bad:
            raise AnalysisInputError(f"`metrics` {bad} are not per-sample metric columns")
    secondary_metrics = [m for m in secondary_metrics if m in known and m not in metrics]
    degenerate = tables.diagnostics.degenerate_sites()
    skipped: list[str] = []
    if sites is None:
        sites = []
        for s in tables.sites:
            if s in degenerate:
                skipped.append(f"site {s!r} skipped: {degenerate[s]}")
            else:
                sites.append(s)
    else:
        sites = list(sites)
        bad = [s for s in sites if s not in tables.sites]
        if bad:
            raise AnalysisInputError(f"`sites` {bad} not in the tables; have {list(tables.sites)}")
    if main_site is None:
        main_site = tables.main_site()
        if main_site not in sites:
            main_site = sites[0] if sites else None
    main_layers = int(tables.sites[main_site]["n_layers"]) if main_site in tables.sites else 1
    hyp_layers = _hypothesis_layers(hypothesis_layers, main_layers)
    warn: list[str] = []
    diag = tables.diagnostics.sites
    if diag is not None and len(diag):
        for row in diag.iter_rows(named=True):
            if row["site"] in sites and row["model"] in [baseline, *variants] and row["reason"]:
                warn.append(f"Warning: site {row['site']}, model {row['model']}: {row['reason']}.")
    per_head_requested = heads in ("each", "both")
    if head_matching == "hungarian" and per_head_requested:
        warn.append(f"Warning: {HUNGARIAN_WARNING}.")

    raw: dict[str, list[tuple[dict[str, Any], PairedResult]]] = {f: [] for f in FAMILIES}
    empty: dict[tuple[str, str], int] = {}
    assignments: list[dict[str, Any]] = []

    def run(meta: dict[str, Any], family: str, xb: np.ndarray, xv: np.ndarray) -> None:
        ok = np.isfinite(xb) & np.isfinite(xv)
        if not ok.any():  # not applicable (e.g. gold metrics without gold)
            key = (meta["metric"], meta["site"])
            empty[key] = empty.get(key, 0) + 1
            return
        res = paired_test(
            xb,
            xv,
            n_boot=n_boot,
            seed=seed,
            confidence=confidence,
            ci_method=ci_method,
            bounds=REG.metric_range(meta["metric"]),
        )
        raw[family].append(({**meta, "family": family}, res))

    for site in sites:
        vals = _values(tables, site, [*metrics, *secondary_metrics, "gold_mass", "gold_chance"])
        info = tables.sites[site]
        n_layers = int(info["n_layers"])
        hby = info.get("n_heads_by_model", {})
        for variant in variants:
            hb_ = int(hby.get(baseline, info["n_heads"]))
            hv_ = int(hby.get(variant, info["n_heads"]))
            for layer in range(n_layers):
                headline = site == main_site and layer in hyp_layers

                def meta(metric, kind, hb, hv, matching, variant=variant, site=site, layer=layer):
                    return {
                        "metric": metric,
                        "site": site,
                        "layer": layer,
                        "head": hb,
                        "head_kind": kind,
                        "head_matching": matching,
                        "variant_head": hv,
                        "baseline": baseline,
                        "variant": variant,
                    }

                # -- head-mean -------------------------------------------------------------------
                if heads in ("mean", "both") or headline:
                    db = vals.get((baseline, HEAD_MEAN, layer, -1))
                    dv = vals.get((variant, HEAD_MEAN, layer, -1))
                    if db is not None and dv is not None:
                        for metric in metrics + (secondary_metrics if headline else []):
                            if headline:
                                fam = CONFIRMATORY if directions.get(metric) else "secondary"
                            else:
                                fam = "per-layer"
                            run(
                                meta(metric, HEAD_MEAN, -1, -1, "none"), fam, db[metric], dv[metric]
                            )
                # -- per head ---------------------------------------------------------------------
                if not (per_head_requested and max(hb_, hv_) > 1):
                    continue
                have = all(
                    (m_, HEAD, layer, h) in vals
                    for m_, H in ((baseline, hb_), (variant, hv_))
                    for h in range(H)
                )
                if not have:
                    continue
                if head_matching in ("index", "sorted") and hb_ != hv_:
                    skipped.append(
                        f"site {site!r} {variant!r}: {hb_} vs {hv_} heads; head_matching="
                        f"{head_matching!r} needs equal counts (use 'crossfit')"
                    )
                    continue
                if head_matching == "sorted":
                    for metric in metrics:
                        sb = np.sort(
                            np.vstack(
                                [vals[(baseline, HEAD, layer, h)][metric] for h in range(hb_)]
                            ),
                            axis=0,
                        )
                        sv = np.sort(
                            np.vstack(
                                [vals[(variant, HEAD, layer, h)][metric] for h in range(hv_)]
                            ),
                            axis=0,
                        )
                        for r in range(hb_):
                            run(meta(metric, HEAD, r, r, "sorted"), "per-head", sb[r], sv[r])
                    continue
                fit_mask = None

                def matched(cost, fit_on, variant=variant, site=site, layer=layer):
                    """Hungarian pairs of ``cost``, recorded in ``assignments``."""
                    r_, k_, _ = match_heads(cost)
                    pairs = [(int(i), int(j)) for i, j in zip(r_, k_, strict=True)]
                    for i, j in pairs:
                        assignments.append(
                            {
                                "baseline": baseline,
                                "variant": variant,
                                "site": site,
                                "layer": layer,
                                "head_baseline": i,
                                "head_variant": j,
                                "cost": float(cost[i, j]),
                                "fit_on": fit_on,
                            }
                        )
                    return pairs

                if head_matching == "index":
                    pairs = [(h, h) for h in range(hb_)]
                elif head_matching == "hungarian":
                    cost = _cost(tables, baseline, variant, site, layer, hb_, hv_)
                    if cost is None or not np.isfinite(cost).any():
                        skipped.append(
                            f"site {site!r} layer {layer} {variant!r}: no head similarity "
                            "(compute tables with pairs='all'/'baseline' and heads "
                            "'each'/'both'); per-head tests skipped"
                        )
                        continue
                    pairs = matched(cost, "all samples (not cross-fitted)")
                else:  # crossfit
                    ok = np.ones(tables.n_samples, dtype=bool)
                    for m_, H in ((baseline, hb_), (variant, hv_)):
                        for h in range(H):
                            for metric in metrics:
                                ok &= np.isfinite(vals[(m_, HEAD, layer, h)][metric])
                    if ok.sum() < 4:
                        skipped.append(
                            f"site {site!r} layer {layer} {variant!r}: fewer than 4 complete "
                            "samples; cross-fitted per-head tests skipped"
                        )
                        continue
                    fit_mask, test_mask = _crossfit_split(tables.n_samples, ok, seed, layer)
                    cost = _profile_cost(
                        vals, baseline, variant, layer, hb_, hv_, metrics, fit_mask
                    )
                    pairs = matched(
                        cost,
                        f"{int(fit_mask.sum())} samples (tested on the other "
                        f"{int(test_mask.sum())})",
                    )
                for metric in metrics:
                    for i, j in pairs:
                        xb = vals[(baseline, HEAD, layer, i)][metric]
                        xv = vals[(variant, HEAD, layer, j)][metric]
                        if fit_mask is not None:
                            xb = np.where(test_mask, xb, np.nan)
                            xv = np.where(test_mask, xv, np.nan)
                        run(meta(metric, HEAD, i, j, head_matching), "per-head", xb, xv)
        # -- gold mass against chance (each model, headline cells) -------------------------------
        if site == main_site and "gold_mass" in known and "gold_chance" in known:
            for model in [baseline, *variants]:
                for layer in hyp_layers:
                    d = vals.get((model, HEAD_MEAN, layer, -1))
                    if d is None:
                        continue
                    m = {
                        "metric": "gold_mass",
                        "site": site,
                        "layer": layer,
                        "head": -1,
                        "head_kind": HEAD_MEAN,
                        "head_matching": "none",
                        "variant_head": -1,
                        "baseline": "chance",
                        "variant": model,
                    }
                    run(m, "gold-vs-chance", d["gold_chance"], d["gold_mass"])
    for (metric, site), k in empty.items():
        skipped.append(f"{metric} at site {site!r}: {k} tests skipped, no paired values")

    pkey = "wilcoxon_pvalue" if primary == "wilcoxon" else "t_pvalue"
    families: dict[str, Family] = {}
    for fname in FAMILIES:
        items = raw[fname]
        p = np.array([getattr(r, pkey) for _, r in items], dtype=np.float64)
        padj = correct_pvalues(p, correction) if len(p) else p
        tests = []
        for (meta_, res), pp, pa in zip(items, p, padj, strict=True):
            if fname == "gold-vs-chance":
                direction = "lower"  # chance is expected below the model's gold mass
            else:
                direction = directions.get(meta_["metric"]) if fname != "secondary" else None
            obs, verdict, expected = classify(
                res, direction, float(pa), alpha, primary, meta_["baseline"], meta_["variant"]
            )
            tests.append(
                MetricTest(
                    **meta_,
                    primary=primary,
                    p_primary=float(pp),
                    p_corrected=float(pa),
                    correction=correction,
                    expected_direction=direction or "none",
                    expected=expected,
                    observed_direction=obs,
                    verdict=verdict,
                    result=res,
                )
            )
        families[fname] = Family(
            name=fname,
            confirmatory=fname == CONFIRMATORY,
            description=_FAMILY_TEXT[fname].format(matching=head_matching),
            tests=tuple(tests),
            correction=correction,
            alpha=alpha,
            primary=primary,
        )
    notices = []
    note = threshold_diagnostic(tables, main_site, hyp_layers, [baseline, *variants])
    if note is not None:
        notices.append(note)
        warn.append(f"Warning: {note['message']}")
    return Comparison(
        families=families,
        baseline=baseline,
        variants=variants,
        main_site=main_site,
        hypothesis_layers=hyp_layers,
        correction=correction,
        alpha=alpha,
        seed=seed,
        n_boot=n_boot,
        primary=primary,
        directions={k: v for k, v in directions.items() if v is not None},
        head_matching=head_matching,
        ci_method=ci_method,
        confidence=confidence,
        metrics=metrics,
        skipped=skipped,
        warnings=warn,
        notices=notices,
        head_assignments=pl.DataFrame(assignments) if assignments else None,
    )
