"""The exception family of attncmp, rooted here because every layer imports ``store``.

Everything a user can cause (a bad file, option, checkpoint, adapter or store) raises a subclass
of :class:`AttncmpError` with a one-line message that names the file (and the HDF5 path, sample,
model or option where relevant) and says what to do. The command line prints exactly these as one
line with a non-zero exit; any other exception is a bug and shows its traceback.

    AttncmpError
    ├── StoreError                  (store/)
    │   ├── StoreVersionError
    │   ├── StoreConfigMismatch
    │   ├── StoreReadError
    │   └── StoreInputError         (also a ValueError)
    ├── ExtractError                (extract/errors.py)
    │   ├── AdapterError, CheckpointLoadError, SelectionError, ...
    │   └── ReferenceModelError     (extract/reference/errors.py)
    └── AnalysisError               (analyze/errors.py)
        └── AnalysisInputError      (also a ValueError)
"""

from __future__ import annotations

import re

__all__ = [
    "AttncmpError",
    "StoreConfigMismatch",
    "StoreError",
    "StoreInputError",
    "StoreReadError",
    "StoreVersionError",
    "one_line",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class AttncmpError(Exception):
    """Root of every error a user can cause and fix; its message is the one line the CLI prints."""


class StoreError(AttncmpError):
    """Base class: a problem with a store file that the user can act on."""


class StoreVersionError(StoreError):
    """The store was written by a newer, incompatible schema version."""


class StoreConfigMismatch(StoreError):
    """An existing store was made with a different configuration than the one appending to it."""


class StoreInputError(StoreError, ValueError):
    """Data or a specification handed to the store is inconsistent (wrong sizes, unknown ids,
    duplicates, an invalid model or site name...). Also a ``ValueError`` for API callers."""


class StoreReadError(StoreError):
    """Stored data cannot be read back (a chunk fails its Fletcher-32 checksum, cannot be
    decompressed, or the file is damaged); the message names the file, the HDF5 dataset and the
    samples affected."""


def one_line(exc: BaseException, limit: int | None = None, with_type: bool = False) -> str:
    """``exc`` as one line: its message with whitespace collapsed and terminal colour codes removed,
    cut to ``limit`` characters when given, prefixed by the type name when ``with_type`` (for
    foreign exceptions quoted inside an attncmp message). An empty message gives the type name."""
    raw = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    text = " ".join(_ANSI.sub("", str(raw)).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if with_type else text


class StoreDiskFullError(StoreError):
    """The disk holding the store is (about to be) full. Raised before HDF5 writes anything it
    could not finish: the committed samples are safe and the same command continues the store."""
