"""Exceptions of the analysis stage (derived from :class:`attncmp.store.errors.AttncmpError`)."""

from __future__ import annotations

from attncmp.store.errors import AttncmpError

__all__ = ["AnalysisError", "AnalysisInputError"]


class AnalysisError(AttncmpError):
    """A user-correctable problem with an analysis request (one line, names the fix)."""


class AnalysisInputError(AnalysisError, ValueError):
    """A name or value the user chose does not fit the store or the tables (unknown model, site,
    sample id, layer, format, group...). Also a ``ValueError`` for API callers."""
