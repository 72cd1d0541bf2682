"""analyze.options.resolve_models: the one place that picks and checks baseline and variants
(compare, strata and the heatmaps use it)."""

from __future__ import annotations

import pytest
from attncmp.analyze.errors import AnalysisInputError
from attncmp.analyze.options import resolve_models

MODELS = ["full", "no_middle", "seed2"]


def test_defaults_are_the_stores_baseline_and_every_other_model_in_order():
    assert resolve_models(MODELS, "full") == ("full", ["no_middle", "seed2"])
    assert resolve_models(MODELS, "full", "seed2") == ("seed2", ["full", "no_middle"])
    assert resolve_models(MODELS, "full", None, ("seed2",)) == ("full", ["seed2"])


@pytest.mark.parametrize(
    "models, baseline, variants, arg, wanted",
    [
        (MODELS, "nope", None, "variants", "`baseline` 'nope' is not one of the models: full, "),
        (MODELS, None, ["full"], "variants", "`variants` 'full' must be a model other than the "
         "baseline 'full'"),
        (MODELS, None, ["nope"], "variant", "`variant` 'nope' must be a model other than"),
        (["full"], None, None, "variants", "one model only (full)"),
    ],
)  # fmt: skip
def test_bad_choices_name_the_argument(models, baseline, variants, arg, wanted):
    with pytest.raises(AnalysisInputError) as e:
        resolve_models(models, "full", baseline, variants, variants_arg=arg)
    assert wanted in str(e.value)
