"""Workflows: pipelines that run extraction, then analysis (the one layer above both stages).

``run_demo`` (``attncmp demo``): the whole job on embedded data, on a fresh machine without GPU or
network. Train the two reference variants (``full`` and ``no_middle``; fixed seeds, recorded
split) or reuse their cached checkpoints, extract the held-out test split with the built-in
``reference`` adapter into ``SAVE_DIR/attention_store.h5``, run the full analysis into
``SAVE_DIR``, and report the test MAE of both variants and of the mean predictor, the verdict and
where the report is.

``run_compare`` (``attncmp compare``, the original ``compare_attention_weights.py``): extract the
given checkpoints into ``SAVE_DIR/attention_store.h5`` unless a complete store of exactly these
checkpoint files and selection is already there (:func:`store_is_current`), then analyse it.

torch is imported only when extraction actually runs, so re-analysing a current store works
without the extraction extra.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attncmp.analyze.options import AnalysisOptions
    from attncmp.extract.config import ExtractConfig

__all__ = [
    "CompareResult",
    "DemoResult",
    "format_demo",
    "run_compare",
    "run_demo",
    "store_is_current",
]

VARIANTS = ("full", "no_middle")
QUICK_SAMPLES = 24  # test molecules extracted in --quick mode (the test split has 64)


@dataclass
class DemoResult:
    """What one demo run produced."""

    save_dir: Path
    checkpoints: dict[str, Path]
    train_metrics: dict[str, dict[str, float]]
    store: Path
    report: Path
    verdict: str
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _checkpoint_matches(path: Path, *, quick: bool, seed: int, epochs: int | None) -> dict | None:
    """The cached checkpoint's metrics when it was trained with the same settings, else None."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    demo = ck.get("demo") if isinstance(ck, dict) else None
    if not isinstance(demo, dict):
        return None
    if demo != {"quick": bool(quick), "seed": int(seed), "epochs": epochs}:
        return None
    return dict(ck.get("metrics", {}))


def _train_or_reuse(
    variant: str,
    ckdir: Path,
    *,
    quick: bool,
    seed: int,
    epochs: int | None,
    device: str,
    quiet: bool,
    log: Callable[[str], None],
) -> tuple[Path, dict[str, float]]:
    import torch
    from attncmp.extract.reference.train import train_variant

    path = ckdir / f"reference_{variant}.pt"
    if path.exists():
        metrics = _checkpoint_matches(path, quick=quick, seed=seed, epochs=epochs)
        if metrics is not None:
            log(f"[demo] reusing cached checkpoint {path}")
            return path, metrics
    log(f"[demo] training variant {variant!r}{' (quick)' if quick else ''} -> {path}")
    res = train_variant(
        variant, epochs=epochs, seed=seed, out=path, device=device, quiet=quiet, quick=quick
    )
    # mark the checkpoint as the demo's, so a later demo with the same settings reuses it
    ck = torch.load(path, map_location="cpu", weights_only=True)
    ck["demo"] = {"quick": bool(quick), "seed": int(seed), "epochs": epochs}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ck, tmp)
    tmp.replace(path)
    return path, dict(res.metrics)


def run_demo(
    save_dir: str | Path = "./attention_comparison",
    *,
    device: str = "cpu",
    quick: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    lang: str = "en",
) -> DemoResult:
    """Train (or reuse) both reference variants, extract the test split, analyse it."""
    from attncmp.analyze.outputs import AnalysisOptions, prepare_save_dir, run_analysis
    from attncmp.extract.engine import ExtractConfig, run_extraction
    from attncmp.store import StoreConfigMismatch

    started = time.perf_counter()
    log: Callable[[str], None] = (
        (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    )
    save = prepare_save_dir(save_dir)  # a directory it cannot write is one clear line
    ckdir = save / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)

    checkpoints: dict[str, Path] = {}
    metrics: dict[str, dict[str, float]] = {}
    for v in VARIANTS:
        checkpoints[v], metrics[v] = _train_or_reuse(
            v, ckdir, quick=quick, seed=seed, epochs=epochs, device=device, quiet=quiet, log=log
        )

    store_path = save / "attention_store.h5"
    cfg = ExtractConfig(
        models=[(v, str(checkpoints[v])) for v in VARIANTS],
        adapter="reference",
        out=store_path,
        split="test",
        num_samples=QUICK_SAMPLES if quick else None,
        batch_size=32,
        seed=seed,
        device=device,
        quiet=quiet,
    )
    log(f"[demo] extracting the held-out test split -> {store_path}")
    try:
        ext = run_extraction(cfg)
    except StoreConfigMismatch:
        # the demo owns this file: a store from other checkpoints/settings is replaced
        log(f"[demo] {store_path} was made with other settings; re-extracting")
        store_path.unlink()
        ext = run_extraction(cfg)
    log(f"[demo] {ext.summary()}")

    log(f"[demo] analysing -> {save}")
    result = run_analysis([ext.path], save, AnalysisOptions(seed=seed, quiet=quiet, lang=lang))
    verdict = result.verdict.overall
    return DemoResult(
        save_dir=save,
        checkpoints=checkpoints,
        train_metrics=metrics,
        store=Path(ext.path),
        report=save / "report.md",
        verdict=verdict,
        summary=result.summary,
        seconds=time.perf_counter() - started,
    )


def format_demo(result: DemoResult) -> str:
    """The demo's closing lines for stdout."""
    lines = ["", "attncmp demo: test split of FreeSolv (kcal/mol)"]
    any_m = next(iter(result.train_metrics.values()))
    lines.append(
        f"  mean predictor      MAE {any_m.get('mean_predictor_test_mae', float('nan')):.3f}  "
        f"RMSE {any_m.get('mean_predictor_test_rmse', float('nan')):.3f}"
    )
    for v, m in result.train_metrics.items():
        lines.append(
            f"  {v:<18}  MAE {m.get('test_mae', float('nan')):.3f}  "
            f"RMSE {m.get('test_rmse', float('nan')):.3f}  ({int(m.get('epochs_run', 0))} epochs)"
        )
    lines.append(f"  verdict: {result.verdict}")
    lines.append(f"  store:   {result.store}")
    lines.append(f"  report:  {result.report}")
    lines.append(f"  done in {result.seconds:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    """What one ``compare`` run produced."""

    store: Path
    analysis: Any  # analyze.outputs.AnalysisResult
    extraction: Any = None  # extract.engine.ExtractionResult; None when extraction was skipped
    skipped: str | None = None  # why extraction was skipped (None when it ran)


def store_is_current(config: ExtractConfig) -> tuple[bool, str]:
    """Whether ``config.out`` is a complete store of exactly ``config.models`` (the same
    checkpoint files by SHA-256) and selection (split, seed, number of samples), so extraction
    can be skipped.

    Returns ``(True, reason)`` to skip, ``(False, reason)`` to (re-)run extraction, which then
    continues a partial store or refuses a different configuration with its own message.
    """
    from attncmp.extract.checkpoint import sha256_file
    from attncmp.store import open_store
    from attncmp.store.errors import AttncmpError

    p = Path(config.out)
    if not p.exists():
        return False, "no store yet"
    try:
        with open_store(p) as st:
            if st.is_partial:
                return False, f"store has {st.n_samples}/{st.n_planned} samples; continuing it"
            if [m for m, _ in config.models] != st.models:
                return False, f"store models {st.models} differ"
            if st.split and st.split != config.split:
                return False, f"store split {st.split!r} differs"
            if st.selection_seed is not None and st.selection_seed != config.seed:
                return False, f"store seed {st.selection_seed} differs"
            stored = st.config.get("num_samples")
            if stored not in (None, config.num_samples):
                return False, f"store num_samples {stored} differs"
            for name, ckpt in config.models:
                want = st.provenance(name).get("checkpoint_sha256")
                if not want:
                    return False, f"store lacks the checkpoint hash of {name}"
                if not Path(ckpt).is_file() or sha256_file(ckpt) != want:
                    return False, f"checkpoint of {name} changed since extraction"
            return True, f"complete store with {st.n_samples} samples"
    except AttncmpError as e:
        return False, str(e)


def run_compare(
    config: ExtractConfig, save_dir: str | Path, options: AnalysisOptions
) -> CompareResult:
    """Extract with ``config`` (its ``models``, ``(name, checkpoint)`` pairs, the first is the
    baseline) into the store ``config.out`` unless that store is current
    (:func:`store_is_current`), then analyse it into ``save_dir`` with ``options``.
    ``attncmp compare`` keeps the store as ``save_dir/attention_store.h5`` and uses the analysis
    seed as the selection seed. Progress goes to stderr unless ``options.quiet``."""
    from attncmp.analyze.outputs import prepare_save_dir, run_analysis

    quiet = bool(options.quiet)
    out = prepare_save_dir(save_dir)
    store_path = Path(config.out)
    skip, why = store_is_current(config)
    extraction = None
    if skip:
        _log(quiet, f"using the existing store {store_path} ({why}); extraction skipped")
    else:
        from attncmp.extract.engine import run_extraction

        extraction = run_extraction(config)
        _log(quiet, extraction.summary())
    analysis = run_analysis([store_path], out, options)
    return CompareResult(store_path, analysis, extraction, why if skip else None)


def _log(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)
