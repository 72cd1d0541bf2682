"""The metric registry: what every per-sample metric is called, measured in, ranges over, and
which way the hypothesis expects it to move. One entry per metric; comparison, figures, report
and output tables look metrics up here instead of keeping their own tables.

The hypothesis of the study ("middle fusion makes the full model's fine-grained attention more
concentrated") is about the **baseline** (the full model) relative to each variant, so
``direction`` describes the baseline: ``"lower"`` means the baseline is expected lower than the
variant (``variant - baseline > 0``). ``confirmatory`` marks the metrics of the confirmatory
family (the verdict): the concentration measures that are monotone in the sharpness of a row.

``effective_tokens`` (the count of weights above a fixed threshold, the original workflow's
"effective tokens") keeps its column, figure panel and CSV row, but is **not** confirmatory and
has no direction: once rows have more than about ``1/threshold`` keys, a more diffuse row has
*fewer* weights above the threshold, so its sign is not a measure of concentration. Its
length-aware counterpart, the perplexity :math:`e^H` (the effective number of tokens, between 1
and the number of keys), takes its place in the confirmatory family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "MetricSpec",
    "REGISTRY",
    "CONFIRMATORY_METRICS",
    "ORIGINAL_METRICS",
    "SECONDARY_METRICS",
    "ROW_SUMMARY_METRICS",
    "DEFAULT_DIRECTIONS",
    "spec",
    "label",
    "unit",
    "metric_range",
    "direction",
]


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    ``name`` (the per-sample column), ``label`` (figure axis / table text, English),
    ``unit`` ("" when unitless), ``range`` (every value, per row or per sample, lies in it;
    mean CIs are clipped to it), ``direction`` (expected for the baseline relative to a variant:
    ``"lower"``, ``"higher"`` or ``None`` when the hypothesis says nothing), ``confirmatory``
    (in the confirmatory family that decides the verdict), ``description`` (one line).
    """

    name: str
    label: str
    unit: str
    range: tuple[float, float]
    direction: str | None
    confirmatory: bool
    description: str


_INF = math.inf
_LN2 = math.log(2.0)

#: ranges: every value of a metric (row, sample or mean over samples) lies in ``range``; CIs of
#: means are clipped to it (:func:`analyze.stats.mean_ci`). Proportions and weights are in
#: [0, 1]; JSD (natural log) in [0, ln 2]; node specificity (a generalised JSD of Q rows) in
#: [0, ln Q], a bound that depends on the sample, so its fixed range has no upper bound; counts
#: and entropies are non-negative; perplexity and IPR are at least 1 (one key).
REGISTRY: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec(
            "entropy",
            "Entropy",
            "nats",
            (0.0, _INF),
            "lower",
            True,
            "Shannon entropy -sum p log p of a row over its valid keys",
        ),
        MetricSpec(
            "norm_entropy",
            "Normalised entropy",
            "",
            (0.0, 1.0),
            None,
            False,
            "entropy / log(number of valid keys); 0 for one key",
        ),
        MetricSpec(
            "perplexity",
            "Perplexity exp(H)",
            "tokens",
            (1.0, _INF),
            "lower",
            True,
            "effective number of tokens exp(H), between 1 and the number of keys (length-aware)",
        ),
        MetricSpec(
            "max_weight",
            "Max weight",
            "",
            (0.0, 1.0),
            "higher",
            True,
            "largest weight of a row",
        ),
        MetricSpec(
            "effective_tokens",
            "Effective tokens",
            "tokens",
            (0.0, _INF),
            None,
            False,
            "count of weights above the threshold (original metric; two-sided, exploratory)",
        ),
        MetricSpec(
            "gini",
            "Gini coefficient",
            "",
            (0.0, 1.0),
            "higher",
            True,
            "Gini coefficient of the sorted weights of a row",
        ),
        MetricSpec(
            "ipr",
            "Inverse participation ratio",
            "tokens",
            (1.0, _INF),
            None,
            False,
            "1 / sum p^2",
        ),
        MetricSpec(
            "topk_mass", "Top-k mass", "", (0.0, 1.0), None, False, "mass on the k largest weights"
        ),
        MetricSpec(
            "special_mass",
            "Mass on special tokens",
            "",
            (0.0, 1.0),
            None,
            False,
            "mass on special tokens such as [CLS]/[SEP] (attention sinks)",
        ),
        MetricSpec(
            "node_specificity",
            "Node specificity",
            "nats",
            (0.0, _INF),  # at most ln Q for a sample with Q nodes
            None,
            False,
            "mean JSD of each row to the sample's mean row; ~0: every node attends identically",
        ),
        MetricSpec(
            "gold_mass",
            "Gold mass",
            "",
            (0.0, 1.0),
            None,
            False,
            "attention mass on the gold tokens of a node",
        ),
        MetricSpec(
            "gold_chance",
            "Gold mass at chance",
            "",
            (0.0, 1.0),
            None,
            False,
            "mass a uniform row over the analysed keys would put on the gold tokens",
        ),
        MetricSpec(
            "gold_pointing",
            "Gold pointing accuracy",
            "",
            (0.0, 1.0),
            None,
            False,
            "share of rows whose argmax is a gold token",
        ),
        MetricSpec(
            "jsd",
            "Jensen-Shannon divergence",
            "nats",
            (0.0, _LN2),
            None,
            False,
            "JSD between the two models' rows (natural log)",
        ),
        MetricSpec(
            "tv", "Total variation", "", (0.0, 1.0), None, False, "total variation distance"
        ),
    )
}

#: the metrics of the confirmatory family, in table order
CONFIRMATORY_METRICS: tuple[str, ...] = ("entropy", "max_weight", "perplexity", "gini")
#: the original workflow's four metrics (figure ``attention_statistics_comparison``, CSV rows)
ORIGINAL_METRICS: tuple[str, ...] = ("entropy", "max_weight", "effective_tokens", "gini")
#: tested two-sided at the headline selection only (their own exploratory family)
SECONDARY_METRICS: tuple[str, ...] = (
    "effective_tokens",
    "norm_entropy",
    "node_specificity",
    "gold_mass",
    "gold_pointing",
    "special_mass",
)
#: the per-row concentration measures summarised wherever one sample or node group is shown
#: (heatmap titles, example cards, node-group tables) and correlated with the prediction error by
#: default (:func:`analyze.prediction.attention_error_correlation`), in display order
ROW_SUMMARY_METRICS: tuple[str, ...] = (
    "entropy",
    "norm_entropy",
    "max_weight",
    "effective_tokens",
    "gini",
)
#: hypothesis directions of the confirmatory metrics (for the baseline)
DEFAULT_DIRECTIONS: dict[str, str] = {
    m: REGISTRY[m].direction for m in CONFIRMATORY_METRICS if REGISTRY[m].direction
}


def spec(name: str) -> MetricSpec:
    """The registry entry of ``name``; an unknown name gets a plain, undirected entry."""
    s = REGISTRY.get(name)
    if s is not None:
        return s
    return MetricSpec(
        name, name.replace("_", " ").capitalize(), "", (-_INF, _INF), None, False, name
    )


def label(name: str, threshold: float | None = None, *, with_unit: bool = True) -> str:
    """Axis/table label, e.g. ``"Entropy (nats)"``, ``"Effective tokens (weight > 0.1)"``."""
    s = spec(name)
    if name == "effective_tokens" and threshold is not None:
        return f"{s.label} (weight > {threshold:g})"
    if with_unit and s.unit == "nats":
        return f"{s.label} (nats)"
    return s.label


def unit(name: str) -> str:
    return spec(name).unit


def metric_range(name: str) -> tuple[float, float] | None:
    """``(low, high)`` of a registered metric, ``None`` for an unknown column."""
    s = REGISTRY.get(name)
    return None if s is None else s.range


def direction(name: str) -> str | None:
    return spec(name).direction
