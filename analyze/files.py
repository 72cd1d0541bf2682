"""Writing an analysis's files: every CSV, JSON and text output goes through these three
functions (one place to make writing atomic or to redirect it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["write_csv", "write_json", "write_text"]


def write_csv(frame: pl.DataFrame | None, path: Path) -> Path | None:
    """``frame`` as CSV (nested columns as their text); ``None`` writes nothing."""
    if frame is None:
        return None
    flat = frame
    for name, dt in frame.schema.items():
        if isinstance(dt, (pl.List, pl.Struct, pl.Array, pl.Object)):
            flat = flat.with_columns(pl.col(name).map_elements(str, return_dtype=pl.String))
    flat.write_csv(path)
    return path


def write_json(obj: Any, path: Path) -> Path:
    """``obj`` (plain JSON types, see :func:`analyze.summary.jsonable`) as indented JSON."""
    Path(path).write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    return path


def write_text(text: str, path: Path) -> Path:
    Path(path).write_text(text, encoding="utf-8")
    return path
