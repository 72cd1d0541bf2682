"""The long-text store of issue 11: crystal-like samples of 96 nodes x 512 tokens (element labels
with repeats and the singletons Si and Mn, WordPiece pieces such as ``O`` + ``##²⁻``, gold cells),
built with the synthetic generator of :mod:`attncmp.store.synthetic`."""

from __future__ import annotations

from pathlib import Path

from attncmp.store import SiteSpec
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store


def long_text_store(path: Path, n: int = 2) -> Path:
    spec = synthetic_spec(
        n,
        has_gold=True,
        sites=(SiteSpec("atom_to_text", n_layers=1, n_heads=2),),
    )
    return write_synthetic_store(path, spec, nodes=(96, 96), tokens=(512, 512), kind="crystal")
