"""What one analysis is asked to do: :class:`AnalysisOptions` (the CLI builds it from its flags)
and :class:`AnalysisError`, the one-line error for a request a user can correct."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import AnalysisError, AnalysisInputError
from .plotstyle import parse_formats

__all__ = ["AnalysisError", "AnalysisOptions", "EXAMPLE_STRATEGIES", "logger", "resolve_models"]

EXAMPLE_STRATEGIES = ("divergent", "random", "ids")


@dataclass
class AnalysisOptions:
    """Options of one analysis (the CLI builds this from its flags; defaults in comments)."""

    baseline: str | None = None  # default: the store's baseline
    variants: Sequence[str] | None = None  # default: every other model
    site: str | None = None  # headline site; default: first nodes -> tokens site
    threshold: float = 0.1  # effective tokens: weight > threshold
    exclude_special: bool = True  # drop [CLS]/[SEP]... and renormalise rows
    heads: str = "both"  # each | mean | both
    top_k: int = 3
    examples: int = 3  # heatmap examples K
    example_strategy: str = "divergent"  # divergent | random | ids
    example_ids: Sequence[str] | None = None
    formats: Sequence[str] = ("png",)
    correction: str = "holm"  # holm | bh
    alpha: float = 0.05
    seed: int = 0
    n_boot: int = 2000
    head_matching: str = "sorted"  # sorted | crossfit | index | hungarian (exploratory)
    hypothesis_layers: str = "last"  # last | all | comma-separated layer indices
    ci_method: str = "t"  # t | BCa | percentile (interval of the mean difference)
    lang: str = "en"  # en | zh (report text)
    groups: dict[str, list[str]] = field(default_factory=dict)  # replicate groups (noise floor)
    strata: Sequence[str] | None = None  # stratifiers; default: analyze.strata.BUILTIN (+ split)
    strata_bins: int = 3  # quantile bins of numeric stratifiers
    strata_min_size: int = 5  # smaller strata are merged
    node_groups: bool = True  # per_group_metrics.csv: metrics per node label (element) group
    chunk_samples: int = 256
    jobs: int | None = None  # metric-engine worker processes; None or 0: every available core
    quiet: bool = False
    log: Callable[[str], None] | None = None  # default: print to stderr unless quiet

    def validate(self) -> None:
        # each vocabulary lives with the procedure that takes it (imported here: compare itself
        # imports this module)
        from .compare import HEAD_MATCHING
        from .i18n import LANGS
        from .stats import CI_METHODS, CORRECTIONS
        from .table import HEADS

        for flag, value, allowed in (
            ("--example-strategy", self.example_strategy, EXAMPLE_STRATEGIES),
            ("--correction", self.correction, CORRECTIONS),
            ("--lang", self.lang, LANGS),
            ("--heads", self.heads, HEADS),
            ("--head-matching", self.head_matching, HEAD_MATCHING),
            ("--ci-method", self.ci_method, CI_METHODS),
        ):
            if value not in allowed:
                raise AnalysisError(f"{flag} {value!r} is not one of {', '.join(allowed)}")
        if self.example_strategy == "ids" and not self.example_ids:
            raise AnalysisError("--example-strategy ids needs --ids ID[,ID...]")
        if self.examples < 0:
            raise AnalysisError("--examples must be >= 0")
        self.hypothesis_layers = str(self.hypothesis_layers).strip() or "last"
        if self.hypothesis_layers not in ("last", "all"):
            try:
                [int(x) for x in self.hypothesis_layers.split(",") if x.strip()]
            except ValueError:
                raise AnalysisError(
                    f"--hypothesis-layers {self.hypothesis_layers!r}: expected last, all or "
                    "comma-separated layer indices such as 0,1 or -1"
                ) from None
        if not 0.0 <= self.threshold < 1.0:
            raise AnalysisError(f"--threshold {self.threshold} must be in [0, 1)")
        try:
            self.formats = parse_formats(self.formats)
        except ValueError as e:
            raise AnalysisError(f"--format: {e}".replace("`formats`: ", "")) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("log", None)
        d.pop("jobs", None)  # how, not what: no result depends on it
        d["formats"] = list(self.formats)
        d["variants"] = None if self.variants is None else list(self.variants)
        d["example_ids"] = None if self.example_ids is None else list(self.example_ids)
        d["strata"] = None if self.strata is None else list(self.strata)
        return d

    def compare_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`analyze.compare.compare` that these options set."""
        return {
            "correction": self.correction,
            "alpha": self.alpha,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "heads": self.heads,
            "head_matching": self.head_matching,
            "hypothesis_layers": self.hypothesis_layer_spec(),
            "ci_method": self.ci_method,
        }

    def hypothesis_layer_spec(self) -> str | list[int]:
        """``hypothesis_layers`` as :func:`analyze.compare.compare` takes it."""
        if self.hypothesis_layers in ("last", "all"):
            return self.hypothesis_layers
        return [int(x) for x in self.hypothesis_layers.split(",") if x.strip()]


def logger(options: AnalysisOptions) -> Callable[[str], None]:
    """Where progress lines go: ``options.log``, nowhere when quiet, else stderr."""
    if options.log is not None:
        return options.log
    if options.quiet:
        return lambda _msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def resolve_models(
    models: Sequence[str],
    default_baseline: str,
    baseline: str | None = None,
    variants: Sequence[str] | None = None,
    *,
    variants_arg: str = "variants",
) -> tuple[str, list[str]]:
    """The baseline (``baseline``, else ``default_baseline``) and the variants compared with it
    (``variants``, else every other of ``models`` in their order), checked against ``models``.

    Raises :class:`AnalysisInputError` naming the argument (``variants_arg``: the caller's name
    for ``variants``): a baseline or variant that is not one of ``models``, a variant equal to
    the baseline, or no variant at all (one model only).
    """
    baseline = baseline or default_baseline
    if baseline not in models:
        raise AnalysisInputError(
            f"`baseline` {baseline!r} is not one of the models: {', '.join(models)}"
        )
    if variants is None:
        variants = [m for m in models if m != baseline]
        if not variants:
            raise AnalysisInputError(
                f"one model only ({baseline}); a comparison needs a second model"
            )
    variants = list(variants)
    bad = [v for v in variants if v not in models or v == baseline]
    if bad:
        raise AnalysisInputError(
            f"`{variants_arg}` {bad[0]!r} must be a model other than the baseline {baseline!r}: "
            f"{', '.join(models)}"
        )
    return baseline, variants
