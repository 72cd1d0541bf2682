"""Preset stores for the tests, all written by the one generator :mod:`attncmp.store.synthetic`
(this module only chooses its options; it draws nothing itself).

* :func:`study_store`: the realistic study (IUPAC-like molecule names, gold cells on halogen and
  nitro fragments, attention that finds them, an attention sink, sites ``atom_to_text``,
  ``graph_to_text`` and the degenerate ``text_pool``); the baseline attends more sharply
  (``effect``), so the hypothesis is supported; ``effect=0`` gives the models the same attention
  distribution.
* :func:`plain_store`: random words at one site ``atom_to_text`` (1 layer x 4 heads), float32;
  a null store unless ``sharpness`` says otherwise.
* :func:`long_text_store`: the long-text store of issue 11 (crystal-like samples of 96 nodes x
  512 tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from attncmp.store import SiteSpec, StoreWriter
from attncmp.store.synthetic import (
    STUDY,
    study_sites,
    synthetic_batch,
    synthetic_spec,
    write_synthetic_store,
)

ATOM_TO_TEXT = SiteSpec("atom_to_text", n_layers=1, n_heads=4, description="fine-grained")


def study_store(
    path: str | Path,
    n: int = 30,
    *,
    n_planned: int | None = None,
    keep_open: bool = False,
    models: Sequence[str] = ("full", "no_middle"),
    n_layers: int = 2,
    n_heads: int = 4,
    extra_sites: bool = True,
    gold: bool = True,
    provenance: dict | None = None,
    config: dict | None = None,
    effect: float = 0.6,
    max_nodes: int = 24,
    max_tokens: int = 40,
    seed: int = 0,
) -> Any:
    """``n`` committed samples of the study (of ``n_planned`` selected). The baseline's logits
    are scaled by ``1 + effect`` and its predictions are a little better. With ``keep_open`` the
    writer is returned too: ``(path, writer)``, a partial store still being written."""
    spec = synthetic_spec(
        n if n_planned is None else n_planned,
        models=models,
        sites=study_sites(n_layers, n_heads, extra=extra_sites),
        has_gold=gold,
        meta=("formula", "n_rings"),
        provenance=provenance,
        config=config,
    )
    opts = replace(
        STUDY,
        nodes=(2, max_nodes),
        tokens=(4, max_tokens),
        seed=seed,
        sharpness={models[0]: 1.0 + effect},
        noise={models[0]: 0.25},
    )
    ids = spec.selection_ids[:n]
    if keep_open:
        writer = StoreWriter.create(path, spec)
        writer.append(synthetic_batch(spec, ids, opts))
        return Path(path), writer
    return write_synthetic_store(path, spec, opts, ids=ids, batch_size=16)


def plain_store(
    path: str | Path,
    n: int = 64,
    *,
    models: Sequence[str] = ("full", "no_middle"),
    sites: Sequence[SiteSpec] = (ATOM_TO_TEXT,),
    **options: Any,
) -> Path:
    """``n`` samples of random words; ``options`` are :class:`SynthOptions` fields."""
    spec = synthetic_spec(n, models=models, sites=sites, dtype="float32", meta=("group",))
    return write_synthetic_store(path, spec, batch_size=64, **options)


def long_text_store(path: str | Path, n: int = 2) -> Path:
    """Crystal-like samples of 96 nodes x 512 tokens (element labels with repeats and the
    singletons Si and Mn, WordPiece pieces such as ``O`` + ``##²⁻``, gold cells)."""
    spec = synthetic_spec(
        n, has_gold=True, sites=(SiteSpec("atom_to_text", n_layers=1, n_heads=2),)
    )
    return write_synthetic_store(path, spec, kind="crystal", nodes=(96, 96), tokens=(512, 512))
