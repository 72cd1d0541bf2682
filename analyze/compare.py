"""Paired comparison of a reference model (the baseline, usually ``full``) against each variant.

The hypothesis of the study is about the **reference (baseline) model relative to each other
variant**: "middle fusion makes the full model's fine-grained attention more concentrated". So a
direction in ``directions`` says how the *baseline* is expected to compare with the variant:

========================  ==========  ===============================================
metric                    direction   meaning (baseline = full, variant = ablation)
========================  ==========  ===============================================
entropy                   ``lower``   full < ablation, i.e. ``variant - baseline > 0``
max_weight                ``higher``  full > ablation, i.e. ``variant - baseline < 0``
effective_tokens          ``lower``   full < ablation
gini                      ``higher``  full > ablation
========================  ==========  ===============================================

Differences are always ``variant - baseline`` (as in :func:`analyze.stats.paired_test`); each
:class:`MetricTest` spells the expectation out (``expected = "full < no_middle"``).

The family and the primary p-value
----------------------------------
For every metric x site x layer x (head, plus the head-mean distribution) x variant one paired
test is run on per-sample values (the sample is the unit). The **primary p-value is the Wilcoxon
signed-rank test** (``primary="wilcoxon"``; robust to the skewed per-sample distributions of
attention metrics; ``primary="t"`` uses the paired t-test instead), and it is corrected across the
**whole family of tests run** (Holm by default, Benjamini-Hochberg with ``correction="bh"``). The
observed direction is that of the primary test: the sign of the matched-pairs rank-biserial for
Wilcoxon, of the mean difference for t.

Heads
-----
Heads of independently trained variants do not correspond by index. ``head_matching`` chooses:

* ``"hungarian"`` (default): per layer, heads of the variant are assigned one-to-one to heads of
  the baseline by minimising the total mean Jensen-Shannon divergence between their per-sample
  mean attention rows (``MetricTables.head_similarity``; ``scipy.optimize.linear_sum_assignment``).
  ``head`` is the baseline head, ``variant_head`` its match.
* ``"sorted"``: order-free. For every sample and model the per-head values of the metric are
  sorted ascending; rank ``r`` of the baseline is compared with rank ``r`` of the variant
  (``head`` = ``variant_head`` = rank, 0 = smallest).
* ``"index"``: heads paired by index (only meaningful for variants fine-tuned from one checkpoint).

The head-mean rows (``head = -1``) need no matching. Every output row carries ``head_matching``.

Note on ``effective_tokens``: the count of weights above a threshold is not monotone in
concentration (see :func:`analyze.metrics.effective_tokens`); a sharper model can show *more*
effective tokens. Its verdict should be read next to entropy, max weight and Gini.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from .errors import AnalysisInputError
from .metrics import metric_range
from .stats import PairedResult, correct_pvalues, paired_test
from .table import HEAD, HEAD_MEAN, MetricTables

__all__ = [
    "DEFAULT_DIRECTIONS",
    "MAIN_METRICS",
    "VERDICTS",
    "OVERALL",
    "MetricTest",
    "Verdict",
    "Comparison",
    "compare",
    "match_heads",
    "expected_sign",
]

DEFAULT_DIRECTIONS = {
    "entropy": "lower",
    "max_weight": "higher",
    "effective_tokens": "lower",
    "gini": "higher",
}
MAIN_METRICS = ("entropy", "max_weight", "effective_tokens", "gini")
EXPECTED = "expected direction, significant"
NOT_SIG = "not significant"
OPPOSITE = "significant, opposite direction"
UNDIRECTED = "significant, no expected direction"
MIXED = "mixed"
VERDICTS = (EXPECTED, NOT_SIG, OPPOSITE)
OVERALL = ("supported", "partly supported", "contrary", "not supported")
HEAD_MATCHING = ("hungarian", "sorted", "index")


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

    ``mean_diff`` and its CI are ``variant - baseline``; ``ci_baseline_*`` / ``ci_variant_*``
    are t intervals of each model's mean, clipped to the metric's range
    (:data:`analyze.metrics.METRIC_RANGES`, e.g. [0, 1] for gold pointing accuracy) so a mean
    near a bound never gets an impossible interval. ``expected_direction`` describes the
    baseline ("lower": the baseline is expected lower than the variant), ``expected`` spells it
    out with model names, ``observed_direction`` is what the primary test shows ("lower",
    "higher" or "none", again for the baseline). ``p_primary`` is the primary p-value (see
    ``primary``) and ``p_corrected`` its family-wise adjusted value.
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
    n: int
    n_dropped: int
    n_zero: int
    mean_baseline: float
    ci_baseline_low: float
    ci_baseline_high: float
    mean_variant: float
    ci_variant_low: float
    ci_variant_high: float
    mean_diff: float
    ci_diff_low: float
    ci_diff_high: float
    pct_change: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_dz: float
    rank_biserial: float
    primary: str
    p_primary: float
    p_corrected: float
    correction: str
    expected_direction: str
    expected: str
    observed_direction: str
    verdict: str
    result: PairedResult | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("result", None)
        return d


@dataclass(frozen=True)
class Verdict:
    """The outcome for the hypothesis.

    ``overall`` is one of :data:`OVERALL`:

    * ``supported``: every directional metric moved in the expected direction, significantly;
    * ``partly supported``: some did (more metrics expected than opposite), none or fewer opposite;
    * ``contrary``: significant opposite movements at least as many as expected ones (and >= 1);
    * ``not supported``: no main test is significant.

    ``per_metric[metric]`` combines the metric's main tests (head-mean, main site, every layer and
    variant): one of :data:`VERDICTS`, or ``"mixed"`` when they disagree. ``per_variant`` gives
    the same per variant.
    """

    overall: str
    per_metric: dict[str, str]
    explanation: str
    per_variant: dict[str, dict[str, str]] = field(default_factory=dict)


def _combine(verdicts: list[str]) -> str:
    exp = sum(v == EXPECTED for v in verdicts)
    opp = sum(v == OPPOSITE for v in verdicts)
    if exp and not opp:
        return EXPECTED
    if opp and not exp:
        return OPPOSITE
    if exp and opp:
        return MIXED
    if any(v == UNDIRECTED for v in verdicts):
        return UNDIRECTED
    return NOT_SIG


@dataclass
class Comparison:
    """All tests of :func:`compare` and how they were run.

    ``tests`` (the family, in a stable order), ``to_frame()`` (polars), ``main_tests()``,
    ``verdict``; ``head_assignments`` (frame of Hungarian matches with their mean JSD);
    ``skipped`` (sites/tests left out, with reasons); ``warnings`` (degenerate attention in
    the tested sites that a reader must know about).
    """

    tests: list[MetricTest]
    baseline: str
    variants: list[str]
    main_site: str | None
    correction: str
    alpha: float
    seed: int
    n_boot: int
    primary: str
    directions: dict[str, str]
    head_matching: str
    confidence: float = 0.95
    metrics: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    head_assignments: pl.DataFrame | None = None

    @property
    def n_family(self) -> int:
        """Number of tests with a p-value in the corrected family."""
        return int(sum(math.isfinite(t.p_primary) for t in self.tests))

    def to_frame(self) -> pl.DataFrame:
        if not self.tests:
            return pl.DataFrame(
                schema={f: pl.Float64 for f in MetricTest.__dataclass_fields__ if f != "result"}
            )
        return pl.DataFrame([t.as_dict() for t in self.tests])

    def main_metrics(self) -> list[str]:
        return [m for m in self.metrics if self.directions.get(m) is not None]

    def main_tests(self) -> list[MetricTest]:
        """Head-mean tests of the directional metrics (the four original ones by default) at
        the main site (every layer and variant)."""
        mm = set(self.main_metrics())
        return [
            t
            for t in self.tests
            if t.head_kind == HEAD_MEAN and t.site == self.main_site and t.metric in mm
        ]

    @property
    def verdict(self) -> Verdict:
        main = self.main_tests()
        metrics = self.main_metrics()
        per_metric = {m: _combine([t.verdict for t in main if t.metric == m]) for m in metrics}
        per_variant = {
            v: {
                m: _combine([t.verdict for t in main if t.metric == m and t.variant == v])
                for m in metrics
            }
            for v in self.variants
        }
        exp = [m for m, v in per_metric.items() if v == EXPECTED]
        opp = [m for m, v in per_metric.items() if v == OPPOSITE]
        mixed = [m for m, v in per_metric.items() if v == MIXED]
        n_exp = len(exp) + 0.5 * len(mixed)
        n_opp = len(opp) + 0.5 * len(mixed)
        if not main:
            overall = "not supported"
        elif metrics and len(exp) == len(metrics):
            overall = "supported"
        elif n_opp > 0 and n_opp >= n_exp:
            overall = "contrary"
        elif n_exp > 0:
            overall = "partly supported"
        else:
            overall = "not supported"
        corr = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[self.correction]
        ptxt = "Wilcoxon signed-rank" if self.primary == "wilcoxon" else "paired t-test"
        hyp = ", ".join(f"{m} {self.directions[m]}" for m in metrics)
        lines = [
            f"Hypothesis: {self.baseline} has {hyp} than "
            f"{', '.join(self.variants) or 'the variants'} (site {self.main_site}, head-mean).",
            f"{len(exp)} of {len(metrics)} metrics moved in the expected direction and were "
            f"significant after {corr} correction (alpha {self.alpha}, primary p: {ptxt}, family "
            f"of {self.n_family} tests).",
        ]
        for m, v in per_metric.items():
            if v != EXPECTED:
                lines.append(f"{m}: {v}.")
        lines.extend(self.warnings)
        return Verdict(overall, per_metric, " ".join(lines), per_variant)


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
            a[pos] = g[m].to_numpy()
            d[m] = a
        out[(str(key[0]), str(key[1]), int(key[2]), int(key[3]))] = d
    return out


def _cost(tables: MetricTables, a: str, b: str, site: str, layer: int, ha: int, hb: int):
    hs = tables.head_similarity
    f = hs.filter(
        (pl.col("baseline") == a)
        & (pl.col("variant") == b)
        & (pl.col("site") == site)
        & (pl.col("layer") == layer)
    )
    if len(f):
        c = np.full((ha, hb), np.nan)
        c[f["head_baseline"].to_numpy(), f["head_variant"].to_numpy()] = f["mean_jsd"].to_numpy()
        return c
    f = hs.filter(
        (pl.col("baseline") == b)
        & (pl.col("variant") == a)
        & (pl.col("site") == site)
        & (pl.col("layer") == layer)
    )
    if len(f):
        c = np.full((hb, ha), np.nan)
        c[f["head_baseline"].to_numpy(), f["head_variant"].to_numpy()] = f["mean_jsd"].to_numpy()
        return c.T
    return None


def compare(
    tables: MetricTables,
    *,
    baseline: str | None = None,
    variants: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    directions: Mapping[str, str | None] = DEFAULT_DIRECTIONS,
    correction: str = "holm",
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    heads: str = "both",
    head_matching: str = "hungarian",
    primary: str = "wilcoxon",
    sites: Sequence[str] | None = None,
    main_site: str | None = None,
    confidence: float = 0.95,
) -> Comparison:
    """Compare ``baseline`` (default: the tables' baseline, the reference model of the
    hypothesis) with each variant on per-sample metrics. See the module docstring for the
    direction convention, the family, the primary p-value and head matching.

    Parameters
    ----------
    metrics : metrics to test (default: the keys of ``directions``); metrics without a
        direction are tested two-sided ("significant, no expected direction").
    heads : ``"mean"`` (head-mean only), ``"each"`` (per head only) or ``"both"``.
    sites : sites to test (default: every site that is not degenerate; degenerate ones are
        listed in ``Comparison.skipped``).
    main_site : the site the verdict is about (default: the first nodes -> tokens site).
    """
    if correction not in ("holm", "bh"):
        raise AnalysisInputError(f"`correction` must be 'holm' or 'bh', got {correction!r}")
    if heads not in ("each", "mean", "both"):
        raise AnalysisInputError(f"`heads` must be 'each', 'mean' or 'both', got {heads!r}")
    if head_matching not in HEAD_MATCHING:
        raise AnalysisInputError(
            f"`head_matching` must be one of {HEAD_MATCHING}, got {head_matching!r}"
        )
    if primary not in ("wilcoxon", "t"):
        raise AnalysisInputError(f"`primary` must be 'wilcoxon' or 't', got {primary!r}")
    if not (0 < alpha < 1):
        raise AnalysisInputError(f"`alpha` must be in (0, 1), got {alpha}")
    baseline = baseline or tables.baseline
    if baseline not in tables.models:
        raise AnalysisInputError(
            f"`baseline` {baseline!r} is not one of the models {tables.models}"
        )
    if variants is None:
        variants = [m for m in tables.models if m != baseline]
    variants = list(variants)
    bad = [v for v in variants if v not in tables.models or v == baseline]
    if bad:
        raise AnalysisInputError(
            f"`variants` {bad} must be models other than the baseline; have {tables.models}"
        )
    directions = {k: v for k, v in dict(directions).items()}
    for d in directions.values():
        expected_sign(d)
    metrics = list(metrics) if metrics is not None else list(directions)
    known = set(tables.per_sample.columns)
    bad = [m for m in metrics if m not in known]
    if bad:
        raise AnalysisInputError(f"`metrics` {bad} are not per-sample metric columns")
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
    warn: list[str] = []
    diag = tables.diagnostics.sites
    if diag is not None and len(diag):
        for row in diag.iter_rows(named=True):
            if row["site"] in sites and row["model"] in [baseline, *variants] and row["reason"]:
                warn.append(f"Warning: site {row['site']}, model {row['model']}: {row['reason']}.")

    raw: list[tuple[dict[str, Any], PairedResult]] = []
    empty: dict[tuple[str, str], int] = {}
    assignments: list[dict[str, Any]] = []
    for site in sites:
        vals = _values(tables, site, metrics)
        info = tables.sites[site]
        n_layers = int(info["n_layers"])
        hby = info.get("n_heads_by_model", {})
        for variant in variants:
            hb_, hv_ = (
                int(hby.get(baseline, info["n_heads"])),
                int(hby.get(variant, info["n_heads"])),
            )
            for layer in range(n_layers):
                pairs: list[tuple[str, int, int]] = []  # (kind, head_b, head_v)
                if heads in ("mean", "both"):
                    pairs.append((HEAD_MEAN, -1, -1))
                per_head = heads in ("each", "both") and max(hb_, hv_) > 1
                if per_head:
                    if head_matching == "hungarian":
                        cost = _cost(tables, baseline, variant, site, layer, hb_, hv_)
                        if cost is None or not np.isfinite(cost).any():
                            skipped.append(
                                f"site {site!r} layer {layer} {variant!r}: no head similarity "
                                "(compute tables with pairs='all'/'baseline' and heads "
                                "'each'/'both'); per-head tests skipped"
                            )
                        else:
                            r, k, _ = match_heads(cost)
                            for i, j in zip(r, k, strict=True):
                                pairs.append((HEAD, int(i), int(j)))
                                assignments.append(
                                    {
                                        "baseline": baseline,
                                        "variant": variant,
                                        "site": site,
                                        "layer": layer,
                                        "head_baseline": int(i),
                                        "head_variant": int(j),
                                        "mean_jsd": float(cost[i, j]),
                                    }
                                )
                    elif hb_ != hv_:
                        skipped.append(
                            f"site {site!r} {variant!r}: {hb_} vs {hv_} heads; "
                            f"head_matching={head_matching!r} needs equal counts (use 'hungarian')"
                        )
                    else:
                        pairs.extend((HEAD, h, h) for h in range(hb_))
                for metric in metrics:
                    sorted_cache: dict[str, np.ndarray] = {}
                    if per_head and head_matching == "sorted":
                        for mdl, H in ((baseline, hb_), (variant, hv_)):
                            stack = []
                            for h in range(H):
                                d = vals.get((mdl, HEAD, layer, h))
                                stack.append(d[metric] if d else np.full(tables.n_samples, np.nan))
                            sorted_cache[mdl] = np.sort(np.vstack(stack), axis=0)
                    for kind, h_b, h_v in pairs:
                        if kind == HEAD and head_matching == "sorted":
                            xb, xv = sorted_cache[baseline][h_b], sorted_cache[variant][h_v]
                            matching = "sorted"
                        else:
                            db = vals.get((baseline, kind, layer, h_b))
                            dv = vals.get((variant, kind, layer, h_v))
                            if db is None or dv is None:
                                continue
                            xb, xv = db[metric], dv[metric]
                            matching = "none" if kind == HEAD_MEAN else head_matching
                        ok = np.isfinite(xb) & np.isfinite(xv)
                        if not ok.any():  # not applicable (e.g. gold metrics without gold)
                            empty[(metric, site)] = empty.get((metric, site), 0) + 1
                            continue
                        res = paired_test(
                            xb,
                            xv,
                            n_boot=n_boot,
                            seed=seed,
                            confidence=confidence,
                            bounds=metric_range(metric),
                        )
                        raw.append(
                            (
                                {
                                    "metric": metric,
                                    "site": site,
                                    "layer": layer,
                                    "head": h_b,
                                    "head_kind": kind,
                                    "head_matching": matching,
                                    "variant_head": h_v,
                                    "baseline": baseline,
                                    "variant": variant,
                                },
                                res,
                            )
                        )
    for (metric, site), k in empty.items():
        skipped.append(f"{metric} at site {site!r}: {k} tests skipped, no paired values")
    pkey = "wilcoxon_pvalue" if primary == "wilcoxon" else "t_pvalue"
    p = np.array([getattr(r, pkey) for _, r in raw], dtype=np.float64)
    padj = correct_pvalues(p, correction) if len(p) else p
    tests: list[MetricTest] = []
    for (meta, res), pp, pa in zip(raw, p, padj, strict=True):
        direction = directions.get(meta["metric"])
        obs, verdict, expected = classify(
            res, direction, float(pa), alpha, primary, meta["baseline"], meta["variant"]
        )
        tests.append(
            MetricTest(
                **meta,
                **res.as_dict(),  # n ... rank_biserial: the PairedResult columns
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
    return Comparison(
        tests=tests,
        baseline=baseline,
        variants=variants,
        main_site=main_site,
        correction=correction,
        alpha=alpha,
        seed=seed,
        n_boot=n_boot,
        primary=primary,
        directions={k: v for k, v in directions.items() if v is not None},
        head_matching=head_matching,
        confidence=confidence,
        metrics=metrics,
        skipped=skipped,
        warnings=warn,
        head_assignments=pl.DataFrame(assignments) if assignments else None,
    )
