"""The analysis outputs, as the README's Python API documents them::

    from attncmp.analyze.outputs import AnalysisOptions, run_analysis, replot
    res = run_analysis(["attention_store.h5"], "out", AnalysisOptions(examples=3))
    res.comparison.to_frame(); res.summary["verdict"]

The work is done by modules with one job each: :mod:`analyze.options` (the request),
:mod:`analyze.pipeline` (run, render, replot), :mod:`analyze.csvtables` (CSV tables),
:mod:`analyze.summary` (``summary.json``), :mod:`analyze.examples` (heatmap examples),
:mod:`analyze.report` (``report.md``) and :mod:`analyze.files` (writing). This module re-exports
their public names. Files written into the save directory: :data:`OUTPUT_FILES`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from attncmp.store import StoreError, open_store

from .examples import choose_examples
from .options import EXAMPLE_STRATEGIES, AnalysisError, AnalysisOptions
from .pipeline import CACHE_DIR, AnalysisResult, prepare_save_dir, render, replot, run_analysis
from .summary import OUTPUT_FILES, SUMMARY_FORMAT, SUMMARY_VERSION, build_summary, describe_file

__all__ = [
    "CACHE_DIR",
    "EXAMPLE_STRATEGIES",
    "OUTPUT_FILES",
    "SUMMARY_FORMAT",
    "SUMMARY_VERSION",
    "AnalysisError",
    "AnalysisOptions",
    "AnalysisResult",
    "build_summary",
    "choose_examples",
    "describe_file",
    "existing_store_matches",
    "prepare_save_dir",
    "render",
    "replot",
    "run_analysis",
]


def existing_store_matches(
    path: str | os.PathLike,
    models: Sequence[tuple[str, str]],
    *,
    split: str | None = None,
    seed: int | None = None,
    num_samples: int | None = None,
) -> tuple[bool, str]:
    """Whether ``path`` is a complete store of exactly these (name, checkpoint) models (same
    checkpoint files by SHA-256) and selection, so ``attncmp compare`` can skip extraction.

    Returns (True, reason) to skip, (False, reason) to (re-)run extraction, which continues a
    partial store or refuses a different configuration with its own message.
    """
    import hashlib

    p = Path(path)
    if not p.exists():
        return False, "no store yet"
    try:
        with open_store(p) as st:
            if st.is_partial:
                return False, f"store has {st.n_samples}/{st.n_planned} samples; continuing it"
            if [m for m, _ in models] != st.models:
                return False, f"store models {st.models} differ"
            if split is not None and st.split and st.split != split:
                return False, f"store split {st.split!r} differs"
            if seed is not None and st.selection_seed is not None and st.selection_seed != seed:
                return False, f"store seed {st.selection_seed} differs"
            cfg = st.config
            if num_samples is not None and cfg.get("num_samples") not in (None, num_samples):
                return False, f"store num_samples {cfg.get('num_samples')} differs"
            for name, ckpt in models:
                prov = st.provenance(name)
                want = prov.get("checkpoint_sha256")
                if not want:
                    return False, f"store lacks the checkpoint hash of {name}"
                h = hashlib.sha256()
                with open(ckpt, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != want:
                    return False, f"checkpoint of {name} changed since extraction"
            return True, f"complete store with {st.n_samples} samples"
    except (StoreError, OSError) as e:
        return False, str(e)
