"""Checkpoint helpers for adapters: safe ``torch.load`` with one-line errors, and file hashing."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attncmp.store.errors import one_line

from .errors import CheckpointLoadError, ExtractError

__all__ = [
    "load_failure_reason",
    "load_torch_checkpoint",
    "named_checkpoints",
    "sha256_file",
    "trust_hint",
    "weights_only_refusal",
]


def named_checkpoints(
    models: Sequence[str | tuple[str, str]] = (),
    checkpoint_full: str | os.PathLike | None = None,
    checkpoint_no_middle: str | os.PathLike | None = None,
) -> list[tuple[str, str]]:
    """The model variants of a run as ``(name, checkpoint)`` pairs, in order: the original
    spelling's ``checkpoint_full`` / ``checkpoint_no_middle`` (named ``full`` / ``no_middle``)
    first, then each ``"NAME=PATH"`` of ``models`` (pairs pass through). The one parser of
    ``--model NAME=PATH`` (``extract`` and ``compare``); raises :class:`ExtractError`."""
    pairs: list[tuple[str, str]] = []
    if checkpoint_full:
        pairs.append(("full", str(checkpoint_full)))
    if checkpoint_no_middle:
        pairs.append(("no_middle", str(checkpoint_no_middle)))
    for item in models:
        if isinstance(item, tuple):
            name, path, sep = str(item[0]), str(item[1]), "="
        else:
            name, sep, path = str(item).partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ExtractError(f"--model {item!r}: expected NAME=PATH, e.g. full=runs/full/best.pt")
        pairs.append((name.strip(), path.strip()))
    return pairs


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


def weights_only_refusal(exc: BaseException) -> str | None:
    """Whether ``exc`` is ``torch.load(weights_only=True)`` refusing a pickled global (a class, a
    function): the file is fine, it just needs trust. Returns the refused global's dotted name
    (``""`` when torch does not name it), or None for any other failure (corrupt or truncated
    files give other messages). The one place that reads torch's refusal text."""
    text = str(exc)
    if "Unsupported global" not in text and "This file can still be loaded" not in text:
        return None
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    return found.group(1) if found else ""


def trust_hint(refused: str) -> str:
    """What to tell the user when :func:`weights_only_refusal` returned ``refused``."""
    what = f" ({refused})" if refused else ""
    return (
        f"it contains pickled Python objects{what} that torch.load(weights_only=True) refuses; if "
        "you trust its source, pass --trust-checkpoint (recorded in the store's provenance)"
    )


def load_failure_reason(exc: BaseException) -> str:
    """The informative line of a ``torch.load`` failure (torch's own text is many lines long)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        tail = [ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()]
        if tail:
            return f"{type(exc).__name__}: {tail[0][:200]}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else one_line(exc, with_type=True)


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
        refused = None if trust_checkpoint else weights_only_refusal(exc)
        if refused is not None:
            raise CheckpointLoadError(f"checkpoint {p}: {trust_hint(refused)}") from exc
        raise CheckpointLoadError(
            f"checkpoint {p}: cannot be loaded ({load_failure_reason(exc)}); is it a complete "
            "torch checkpoint file?"
        ) from exc
