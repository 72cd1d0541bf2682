"""Train and load the reference model variants on the embedded FreeSolv data.

``train_variant("full" | "no_middle", out=...)`` trains one variant with fixed seeds on a fixed,
recorded split (tokenizer fitted on the training names only), standardised targets, AdamW, early
stopping on validation MAE, and writes a self-describing checkpoint: a plain dict of str / int /
float / bool / list / dict / tensors, so that ``torch.load(path, weights_only=True)`` reads it::

    {"format": "attncmp-reference-checkpoint", "format_version": 1, "variant": str,
     "state_dict": {...}, "config": asdict(ReferenceConfig), "split": {"train", "val", "test"},
     "split_seed": int, "seed": int, "tokenizer": json str, "target_mean": float,
     "target_std": float, "metrics": {"test_mae", "test_rmse", "val_mae", "mean_predictor_test_mae",
     "mean_predictor_test_rmse", "epochs_run", "train_seconds", ...}, "history": [...],
     "versions": {...}}

``load_checkpoint(path)`` returns the model in eval mode with its tokenizer and config, or raises
:class:`~extract.reference.errors.CheckpointError` (one line naming the file) when the file is
missing, corrupt or not such a checkpoint.
"""

from __future__ import annotations

import math
import random
import sys
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attncmp.store import atomic
from attncmp.store.errors import one_line

from ..checkpoint import trust_hint, weights_only_refusal
from .data import Molecule, load_freesolv, make_split
from .errors import CheckpointError, ReferenceInputError, ReferenceModelError
from .model import VARIANTS, Batch, ReferenceConfig, ReferenceModel, collate, variant_config
from .tokenizer import NameTokenizer

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "DEFAULT_EPOCHS",
    "QUICK_EPOCHS",
    "LoadedReference",
    "TrainResult",
    "load_checkpoint",
    "train_variant",
]

CHECKPOINT_FORMAT = "attncmp-reference-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
DEFAULT_EPOCHS = 120  # upper bound; early stopping usually ends sooner
QUICK_EPOCHS = 3  # smoke-test mode (CI): seconds, not a useful model
PATIENCE = 25  # epochs without a better validation MAE before stopping
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-2


@dataclass
class TrainResult:
    """What :func:`train_variant` produced."""

    variant: str
    checkpoint: Path  # where the checkpoint was written
    metrics: dict[str, float]  # test_mae, test_rmse, val_mae, mean_predictor_*, epochs_run, ...
    config: ReferenceConfig
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch


@dataclass
class LoadedReference:
    """A loaded checkpoint: model (eval mode), the raw checkpoint dict, tokenizer and config."""

    model: ReferenceModel
    checkpoint: dict[str, Any]
    tokenizer: NameTokenizer
    config: ReferenceConfig
    path: Path | None = None

    @property
    def variant(self) -> str:
        return str(self.checkpoint["variant"])

    @property
    def split(self) -> dict[str, list[str]]:
        return self.checkpoint["split"]

    def samples(self, split: str | None = "test") -> list[Molecule]:
        """The embedded molecules of one recorded split (``None``: all 642), ordered by id."""
        mols = load_freesolv()
        if split is None:
            return mols
        if split not in self.split:
            raise ReferenceInputError(
                f"unknown split {split!r}; choose one of {sorted(self.split)}"
            )
        wanted = set(self.split[split])
        return [m for m in mols if m.id in wanted]

    def collate(self, molecules: list[Molecule]) -> Batch:
        return collate(molecules, self.tokenizer)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@contextmanager
def _deterministic(seed: int, threads: int | None):
    """Seed python, numpy and torch; force deterministic torch algorithms; set the number of
    intra-op CPU threads; restore the previous settings afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(previous_threads)


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def _predict(model: ReferenceModel, batches: list[Batch], device: str) -> tuple[np.ndarray, ...]:
    model.eval()
    preds, targets = [], []
    for b in batches:
        preds.append(model(b.to(device))["prediction"].float().cpu().numpy())
        targets.append(b.targets.numpy())
    return np.concatenate(preds), np.concatenate(targets)


def _mae_rmse(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    err = pred.astype(np.float64) - target.astype(np.float64)
    return float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2)))


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _resolve_out(out: str | Path, variant: str) -> Path:
    out = Path(out)
    if out.is_dir() or out.suffix == "":
        return out / f"reference_{variant}.pt"
    return out


def _check_device(device: str) -> None:
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        why = one_line(exc, limit=200, with_type=True)
        raise ReferenceModelError(
            f"device {device!r} is not usable here ({why}); use --device cpu"
        ) from None


def train_variant(
    variant: str,
    *,
    epochs: int | None = None,
    seed: int = 0,
    out: str | Path,
    device: str = "cpu",
    quiet: bool = False,
    split_seed: int = 0,
    max_minutes: float | None = None,
    quick: bool = False,
    max_train_samples: int | None = None,
    threads: int | None = 1,
    **config_overrides: Any,
) -> TrainResult:
    """Train one reference variant on embedded FreeSolv and write its checkpoint.

    Parameters
    ----------
    variant : ``"full"`` or ``"no_middle"``
    epochs : maximum epochs (default :data:`DEFAULT_EPOCHS`, or :data:`QUICK_EPOCHS` if ``quick``);
        training stops earlier after :data:`PATIENCE` epochs without a better validation MAE.
    seed : seeds python, numpy and torch (initialisation, shuffling, dropout).
    out : checkpoint file, or a directory (then ``reference_{variant}.pt`` inside it).
    device : torch device string.
    quiet : no per-epoch progress line on stderr.
    split_seed : seed of :func:`~extract.reference.data.make_split` (80/10/10), recorded.
    max_minutes : stop after this wall-clock budget (the best model so far is kept).
    quick : smoke-test mode (CI): :data:`QUICK_EPOCHS` epochs unless ``epochs`` is given.
    max_train_samples : train on only the first n training molecules (tests); the split recorded
        in the checkpoint is still the full split.
    threads : intra-op CPU threads while training (restored afterwards); default 1: the model is
        so small that more threads gain little on an idle machine and lose badly (10x) on a
        busy one, and a fixed count keeps float results reproducible. ``None``: leave as is.
    **config_overrides : fields of :class:`~extract.reference.model.ReferenceConfig`.

    The best model by validation MAE is restored before testing and saving.
    """
    if variant not in VARIANTS:
        raise ReferenceInputError(
            f"unknown variant {variant!r}; choose {' or '.join(map(repr, VARIANTS))}"
        )
    if epochs is None:
        epochs = QUICK_EPOCHS if quick else DEFAULT_EPOCHS
    if epochs < 1:
        raise ReferenceInputError(f"`epochs` must be >= 1, got {epochs}")
    path = _resolve_out(out, variant)
    _check_device(device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReferenceModelError(
            f"{path}: cannot create the checkpoint's directory ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    started = time.perf_counter()

    with _deterministic(seed, threads):
        molecules = load_freesolv()
        by_id = {m.id: m for m in molecules}
        split = make_split(sorted(by_id), seed=split_seed)
        train_mols = [by_id[i] for i in split["train"]]
        if max_train_samples is not None:
            train_mols = train_mols[:max_train_samples]
        val_mols = [by_id[i] for i in split["val"]]
        test_mols = [by_id[i] for i in split["test"]]

        tokenizer = NameTokenizer.train([m.name for m in by_id.values() if m.id in split["train"]])
        config = variant_config(
            variant,
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            max_tokens=tokenizer.max_length,
            **config_overrides,
        )
        train_targets = np.array([m.target for m in train_mols], dtype=np.float64)
        target_mean = float(train_targets.mean())
        target_std = float(train_targets.std()) or 1.0

        model = ReferenceModel(config).to(device)
        model.target_mean.fill_(target_mean)
        model.target_std.fill_(target_std)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=8, min_lr=1e-5
        )

        encodings = {m.id: tokenizer.encode(m.name) for m in molecules}

        def make(ms: list[Molecule]) -> Batch:
            return collate(ms, tokenizer, encodings=[encodings[m.id] for m in ms])

        val_batches = [make(ms) for ms in _batches(val_mols, 128)]
        test_batches = [make(ms) for ms in _batches(test_mols, 128)]
        rng = np.random.default_rng(seed)

        best_mae, best_state, best_epoch = math.inf, None, 0
        history: list[dict[str, float]] = []
        epoch = 0
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = rng.permutation(len(train_mols))
            losses = []
            for idx in _batches(order.tolist(), BATCH_SIZE):
                batch = make([train_mols[i] for i in idx]).to(device)
                pred = model(batch)["prediction"]
                # loss on standardised targets (prediction is in kcal/mol)
                loss = torch.mean(((pred - batch.targets) / target_std) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                losses.append(loss.item())
            val_mae, _ = _mae_rmse(*_predict(model, val_batches, device))
            scheduler.step(val_mae)
            train_loss = float(np.mean(losses))
            history.append({"epoch": epoch, "train_loss": train_loss, "val_mae": val_mae})
            if val_mae < best_mae:
                best_mae, best_epoch = val_mae, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            _log(
                quiet,
                f"[{variant}] epoch {epoch:3d}/{epochs}  train_loss {train_loss:.4f}  "
                f"val_mae {val_mae:.3f}  best {best_mae:.3f}@{best_epoch}  "
                f"{time.perf_counter() - t0:.1f}s",
            )
            if epoch - best_epoch >= PATIENCE:
                _log(quiet, f"[{variant}] early stop: no better val_mae for {PATIENCE} epochs")
                break
            if max_minutes is not None and time.perf_counter() - started > 60.0 * max_minutes:
                _log(quiet, f"[{variant}] time budget of {max_minutes} min reached")
                break

        assert best_state is not None
        model.load_state_dict(best_state)
        test_pred, test_true = _predict(model, test_batches, device)
        test_mae, test_rmse = _mae_rmse(test_pred, test_true)
        mean_mae, mean_rmse = _mae_rmse(np.full_like(test_true, target_mean), test_true)
        train_seconds = time.perf_counter() - started
        metrics = {
            "test_mae": test_mae,
            "test_rmse": test_rmse,
            "val_mae": best_mae,
            "mean_predictor_test_mae": mean_mae,
            "mean_predictor_test_rmse": mean_rmse,
            "epochs_run": int(epoch),
            "best_epoch": int(best_epoch),
            "train_seconds": float(train_seconds),
        }
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "variant": variant,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": asdict(config),
            "split": split,
            "split_seed": int(split_seed),
            "seed": int(seed),
            "tokenizer": tokenizer.to_json(),
            "target_mean": target_mean,
            "target_std": target_std,
            "metrics": metrics,
            "history": history,
            "max_train_samples": max_train_samples,
            "threads": threads,
            "versions": {"torch": str(torch.__version__), "numpy": str(np.__version__)},
        }
        try:  # never a half-written checkpoint under the real name (temp name, fsync, rename)
            with atomic.atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as exc:  # torch's zip writer raises RuntimeError
            raise ReferenceModelError(
                f"{path}: cannot write the checkpoint ({exc.strerror or exc}); choose another --out"
            ) from None
        _log(
            quiet,
            f"[{variant}] test MAE {test_mae:.3f} RMSE {test_rmse:.3f} kcal/mol "
            f"(mean predictor {mean_mae:.3f} / {mean_rmse:.3f}); {epoch} epochs, "
            f"{train_seconds:.0f}s -> {path}",
        )
    return TrainResult(variant, path, metrics, config, history)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load_checkpoint(
    path: str | Path, device: str = "cpu", trust_checkpoint: bool = False
) -> LoadedReference:
    """Load a reference checkpoint written by :func:`train_variant`.

    Uses ``torch.load(weights_only=True)`` unless ``trust_checkpoint`` (then arbitrary pickled
    objects are allowed: only for files from a trusted source). Raises :class:`CheckpointError`
    naming the file when it is missing, unreadable, corrupt, or not a reference checkpoint.
    """
    path = Path(path)
    fix = "train one with `attncmp train --variant full|no_middle --out PATH`"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; {fix}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a torch checkpoint (not a zip archive: truncated or another file); {fix}"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as exc:
        refused = None if trust_checkpoint else weights_only_refusal(exc)
        if refused is not None:
            raise CheckpointError(
                f"{path}: {trust_hint(refused)} (trust_checkpoint=True in Python)"
            ) from None
        why = one_line(exc, limit=200, with_type=True)
        raise CheckpointError(
            f"{path}: corrupt checkpoint, cannot be read ({why}); {fix}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not an attncmp reference checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); {fix}"
        )
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: reference checkpoint format_version {version!r} is newer than this attncmp "
            f"supports ({CHECKPOINT_FORMAT_VERSION}); upgrade attncmp"
        )
    try:
        config = ReferenceConfig.from_dict(dict(ckpt["config"]))
        tokenizer = NameTokenizer.from_json(ckpt["tokenizer"])
        model = ReferenceModel(config)
        model.load_state_dict(ckpt["state_dict"], strict=True)
        for key in ("variant", "split", "target_mean", "target_std"):
            ckpt[key]  # noqa: B018 - presence check
    except (KeyError, TypeError, ValueError, RuntimeError, AssertionError) as exc:
        why = one_line(exc, limit=200, with_type=True)
        raise CheckpointError(f"{path}: corrupt reference checkpoint ({why}); {fix}") from None
    model.to(device).eval()
    return LoadedReference(
        model=model, checkpoint=ckpt, tokenizer=tokenizer, config=config, path=path
    )
