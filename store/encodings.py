"""The store's element encodings: every group the format describes carries an ``encoding-type``
and an ``encoding-version`` attribute (``store_schema.md`` section 1.3).

Writers create stamped elements only through :func:`create_group` / :func:`stamp`, so no element
can be written without its stamp; readers call :func:`check` on every element before using it,
and validation reports :func:`stamp_problem`. A newer major version of an element than this code
reads is refused with "upgrade attncmp", never misread; a newer minor version is read (minor
versions only add optional parts). h5py + numpy only.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import h5py

from .errors import StoreError, StoreVersionError

__all__ = [
    "ATTENTION",
    "ENCODINGS",
    "GOLD",
    "ITEMS",
    "MODEL",
    "ROOT",
    "SAMPLES",
    "STRING_ARRAY",
    "Encoding",
    "check",
    "create_group",
    "read_stamp",
    "stamp",
    "stamp_problem",
]


class Encoding(NamedTuple):
    """An element encoding: ``type`` and the ``"MAJOR.MINOR"`` ``version`` this code writes."""

    type: str
    version: str

    @property
    def major(self) -> int:
        return _parse(self.version)[0]


ROOT = Encoding("attncmp-store", "1.0")
STRING_ARRAY = Encoding("string-array", "1.0")  # data (uint8 UTF-8 bytes) + offsets (int64, n+1)
SAMPLES = Encoding("sample-table", "1.0")
ITEMS = Encoding("item-table", "1.0")  # per-node / per-token tables
MODEL = Encoding("model", "1.0")
ATTENTION = Encoding("ragged-attention", "1.0")  # data (float16|float32) + offsets (int64, N+1)
GOLD = Encoding("ragged-mask", "1.0")  # data (uint8 0/1) + offsets (int64, N+1) + present

ENCODINGS: tuple[Encoding, ...] = (ROOT, STRING_ARRAY, SAMPLES, ITEMS, MODEL, ATTENTION, GOLD)


def _parse(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return v if isinstance(v, str) else str(v)


# -- writing ------------------------------------------------------------------------------------
def stamp(obj: h5py.Group | h5py.File, enc: Encoding) -> None:
    """Write ``enc``'s ``encoding-type`` / ``encoding-version`` attributes on ``obj``."""
    obj.attrs["encoding-type"] = enc.type
    obj.attrs["encoding-version"] = enc.version


def create_group(parent: h5py.Group, name: str, enc: Encoding) -> h5py.Group:
    """Create the group ``parent/name`` stamped with ``enc`` (the only way writers make one)."""
    g = parent.create_group(name)
    stamp(g, enc)
    return g


# -- reading ------------------------------------------------------------------------------------
def read_stamp(obj: h5py.HLObject) -> tuple[str | None, str | None]:
    """``(encoding-type, encoding-version)`` of ``obj``; None for a missing attribute."""
    a = obj.attrs
    return _text(a.get("encoding-type")), _text(a.get("encoding-version"))


class StampProblem(NamedTuple):
    message: str
    newer: bool  # the element is a newer major version than this code reads


def stamp_problem(obj: h5py.HLObject, enc: Encoding) -> StampProblem | None:
    """What is wrong with ``obj``'s stamp as an ``enc`` element, or None when it can be read.

    Accepted: the same type with the same major version and any minor version.
    """
    t, v = read_stamp(obj)
    if t is None or v is None:
        return StampProblem(
            f"missing encoding-type/encoding-version (expected {enc.type!r} {enc.version})", False
        )
    if t != enc.type:
        return StampProblem(f"encoding-type is {t!r}, expected {enc.type!r}", False)
    try:
        major, _minor = _parse(v)
    except ValueError:
        return StampProblem(f"encoding-version {v!r} is not 'MAJOR.MINOR'", False)
    if major > enc.major:
        return StampProblem(
            f"{t} encoding-version {v} is newer than this attncmp reads ({enc.version}); "
            "upgrade attncmp (pip install -U attncmp)",
            True,
        )
    if major < enc.major:
        return StampProblem(
            f"{t} encoding-version {v} is older than any this attncmp reads ({enc.version})", False
        )
    return None


def check(obj: h5py.HLObject, enc: Encoding, path: str | os.PathLike | None = None) -> None:
    """Raise unless ``obj`` is an element this code reads as ``enc``.

    Raises
    ------
    StoreVersionError
        The element is a newer major version (the message says to upgrade attncmp).
    StoreError
        The stamp is missing, names another encoding type or is malformed.
    """
    p = stamp_problem(obj, enc)
    if p is None:
        return
    where = f"{path if path is not None else obj.file.filename}: {obj.name}"
    if p.newer:
        raise StoreVersionError(f"{where}: {p.message}")
    raise StoreError(
        f"{where}: {p.message}; the store is damaged or was not written by attncmp: "
        f"run `attncmp store validate {path if path is not None else obj.file.filename}`"
    )
