"""Checkpoint helpers for adapters: safe ``torch.load`` with one-line errors, and file hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointLoadError

__all__ = [
    "TRUST_HINT",
    "is_weights_only_refusal",
    "load_failure_reason",
    "load_torch_checkpoint",
    "sha256_file",
]

TRUST_HINT = (
    "it contains pickled Python objects that torch.load(weights_only=True) refuses; if you trust "
    "its source, pass --trust-checkpoint (recorded in the store's provenance)"
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as exc:
        raise CheckpointLoadError(
            f"checkpoint {path}: cannot be read ({exc.strerror or exc})"
        ) from None
    return h.hexdigest()


def is_weights_only_refusal(exc: BaseException) -> bool:
    """True when ``torch.load(weights_only=True)`` refused a pickled global (a class, a function):
    the file is fine, it just needs trust. Corrupt files give other messages."""
    text = str(exc)
    return "Unsupported global" in text or "This file can still be loaded" in text


def load_failure_reason(exc: BaseException) -> str:
    """The informative line of a ``torch.load`` failure (torch's own text is many lines long)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        tail = [ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()]
        if tail:
            return f"{type(exc).__name__}: {tail[0][:200]}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def load_torch_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", trust_checkpoint: bool = False
) -> Any:
    """``torch.load(path, weights_only=not trust_checkpoint)`` with one-line errors.

    Raises :class:`CheckpointLoadError` naming the file when it is missing, unreadable, not a torch
    checkpoint, or holds pickled objects while ``trust_checkpoint`` is false.
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise CheckpointLoadError(f"checkpoint {p}: file does not exist")
    if p.is_dir():
        raise CheckpointLoadError(f"checkpoint {p}: is a directory, expected a checkpoint file")
    try:
        return torch.load(p, map_location=map_location, weights_only=not trust_checkpoint)
    except Exception as exc:
        if not trust_checkpoint and is_weights_only_refusal(exc):
            raise CheckpointLoadError(f"checkpoint {p}: {TRUST_HINT}") from exc
        raise CheckpointLoadError(
            f"checkpoint {p}: cannot be loaded ({load_failure_reason(exc)}); is it a complete "
            "torch checkpoint file?"
        ) from exc
