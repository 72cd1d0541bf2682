"""Exceptions of the reference model package (torch-free, safe to import anywhere)."""

from __future__ import annotations

from attncmp.extract.errors import ExtractError

__all__ = ["CheckpointError", "ReferenceInputError", "ReferenceModelError"]


class ReferenceModelError(ExtractError):
    """Base class for user-facing errors of ``extract.reference`` (one clear line each)."""


class CheckpointError(ReferenceModelError, ValueError):
    """A reference checkpoint is missing, unreadable, corrupt or in the wrong format.

    The message names the file and says how to fix it.
    """


class ReferenceInputError(ReferenceModelError, ValueError):
    """An invalid request to the reference model (unknown variant or split, epochs < 1, ...)."""
