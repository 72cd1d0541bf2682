"""Shared fixtures of the CLI tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ._example import EXAMPLE_ADAPTER


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """A directory with the example adapter's demo data (``data/``) and two checkpoints
    (``full.pt`` with middle fusion, ``no_middle.pt`` without); one per test module."""
    from attncmp.extract.adapter import resolve_adapter

    ad, _ = resolve_adapter(EXAMPLE_ADAPTER)
    mod = sys.modules[type(ad).__module__]
    d = tmp_path_factory.mktemp("example")
    data = mod.write_demo_data(d / "data")
    mod.save_demo_checkpoint(d / "full.pt", data, middle_fusion=True, seed=0)
    mod.save_demo_checkpoint(d / "no_middle.pt", data, middle_fusion=False, seed=1)
    return d
