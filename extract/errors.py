"""Exceptions of the extraction stage (torch-free, safe to import anywhere).

Every message is one line that names the problem (file, model, sample, site) and says how to fix
it; the CLI prints it as is, without a traceback. All derive from
:class:`attncmp.store.errors.AttncmpError`; store problems (config mismatch on append, bad store
files) surface as :class:`attncmp.store.StoreError` and are reported the same way.
"""

from __future__ import annotations

from attncmp.store.errors import AttncmpError

__all__ = [
    "AdapterError",
    "AttentionShapeError",
    "CaptureError",
    "CheckpointLoadError",
    "ExtractError",
    "InvalidAttentionError",
    "KeyPathError",
    "LengthMismatchError",
    "SelectionError",
    "StoreWriteError",
]


class ExtractError(AttncmpError):
    """Base class: a problem with an extraction run that the user can act on."""


class AdapterError(ExtractError):
    """The adapter cannot be resolved (not importable, missing method) or a method of it failed."""


class AttentionShapeError(AdapterError):
    """An adapter returned attention, lengths or predictions with the wrong shape."""


class LengthMismatchError(AdapterError):
    """Query/key lengths of a sample differ between variants (or from the adapter's describe())."""


class CaptureError(AdapterError):
    """An attention capture helper found nothing to capture (no matching module, no outputs)."""


class KeyPathError(CaptureError):
    """A key path into a model's output does not exist; the message lists the keys that do."""


class CheckpointLoadError(ExtractError):
    """A checkpoint is missing, unreadable, or needs ``--trust-checkpoint`` to be unpickled."""


class SelectionError(ExtractError):
    """The sample selection is impossible or unsafe (empty split, too few, training samples)."""


class InvalidAttentionError(ExtractError):
    """Attention is NaN/Inf, negative, or rows do not sum to 1 (names sample, model, site)."""


class StoreWriteError(ExtractError):
    """Writing the store failed (e.g. out of disk space); committed samples are preserved."""
