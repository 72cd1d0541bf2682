"""Exceptions of the reference model package (torch-free, safe to import anywhere)."""

from __future__ import annotations

__all__ = ["CheckpointError", "ReferenceModelError"]


class ReferenceModelError(Exception):
    """Base class for user-facing errors of ``extract.reference`` (one clear line each)."""


class CheckpointError(ReferenceModelError, ValueError):
    """A reference checkpoint is missing, unreadable, corrupt or in the wrong format.

    The message names the file and says how to fix it.
    """
