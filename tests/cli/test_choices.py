"""The command line's choice lists are the packages' vocabularies.

cli.py spells them as literals so that `attncmp ... --help` imports no package; this test keeps
each one equal (same values, same order) to the constant the package validates against.
"""

from __future__ import annotations

import click
import pytest
from attncmp.analyze.compare import HEAD_MATCHING
from attncmp.analyze.i18n import LANGS
from attncmp.analyze.options import EXAMPLE_STRATEGIES
from attncmp.analyze.stats import CI_METHODS, CORRECTIONS
from attncmp.analyze.table import HEADS
from attncmp.cli import main
from attncmp.store.schema import ATTENTION_DTYPES
from attncmp.workflows import VARIANTS as DEMO_VARIANTS

ANALYSIS = [
    ("heads", HEADS),
    ("example_strategy", EXAMPLE_STRATEGIES),
    ("correction", CORRECTIONS),
    ("head_matching", HEAD_MATCHING),
    ("ci_method", CI_METHODS),
    ("lang", LANGS),
]


def _command(path: tuple[str, ...]) -> click.Command:
    cmd = main
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize(
    "path, param, vocabulary",
    [
        *[(("analyze",), p, v) for p, v in ANALYSIS],
        *[(("compare",), p, v) for p, v in ANALYSIS],
        (("demo",), "lang", LANGS),
        (("plot", "stats"), "lang", LANGS),
        (("extract",), "dtype", ATTENTION_DTYPES),
    ],
)
def test_cli_choices_are_the_package_vocabularies(path, param, vocabulary) -> None:
    (opt,) = [p for p in _command(path).params if p.name == param]
    assert isinstance(opt.type, click.Choice)
    assert tuple(opt.type.choices) == tuple(vocabulary)


def test_extract_and_train_choices_are_the_engine_and_reference_vocabularies() -> None:
    from attncmp.extract.engine import ON_INVALID
    from attncmp.extract.reference.model import VARIANTS

    (on_invalid,) = [p for p in main.commands["extract"].params if p.name == "on_invalid"]
    (variant,) = [p for p in main.commands["train"].params if p.name == "variant"]
    assert tuple(on_invalid.type.choices) == ON_INVALID
    assert tuple(variant.type.choices) == tuple(VARIANTS)


def test_demo_variants_are_the_reference_models() -> None:
    from attncmp.extract.reference.model import VARIANTS

    assert DEMO_VARIANTS == tuple(VARIANTS)


def test_the_cli_starts_the_figure_server_with_the_renderers_preloads() -> None:
    from attncmp.analyze.render import _PRELOAD
    from attncmp.cli import FIGURE_PRELOAD

    assert FIGURE_PRELOAD == tuple(_PRELOAD)
