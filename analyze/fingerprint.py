"""Content fingerprints of a figure's inputs, so a re-plot draws only what would change.

A figure file is a deterministic function of the drawing code, the library versions and the
arguments of its plotting function. :func:`figure_key` hashes all three: the source of every
module of this package (any code change, a development edit included, changes every key), the
versions of matplotlib, numpy and polars, the function's name, the file's stem and the *content*
of the arguments (:func:`content_hash`: frames by their schema and row hashes, arrays by dtype,
shape and bytes, dataclasses field by field). ``attncmp plot stats`` keeps a figure whose
recorded key equals the new one and whose file is unchanged since it was recorded; ``--force``
redraws every figure.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import polars as pl

__all__ = ["code_version", "content_hash", "figure_key"]


def content_hash(obj: Any) -> str:
    """sha256 of ``obj``'s content: equal for equal content however it was computed or loaded
    (an in-memory frame and the same frame read back from parquet hash alike)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _tag(h, tag: str, text: str = "") -> None:
    h.update(f"<{tag}:{len(text)}:{text}>".encode("utf-8", "surrogatepass"))


def _feed(h, x: Any) -> None:
    if x is None or isinstance(x, (bool, int, str)):
        _tag(h, type(x).__name__, repr(x))
    elif isinstance(x, float):
        _tag(h, "float", "nan" if math.isnan(x) else repr(x))
    elif isinstance(x, np.generic):
        _feed(h, x.item())
    elif isinstance(x, PurePath):
        _tag(h, "path", x.as_posix())
    elif isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            _tag(h, "objarray", repr(x.shape))
            for v in x.ravel():
                _feed(h, v)
        else:
            _tag(h, "array", f"{x.dtype.str}{x.shape}")
            h.update(np.ascontiguousarray(x).tobytes())
    elif isinstance(x, pl.DataFrame):
        _tag(h, "frame", repr([(c, str(t)) for c, t in x.schema.items()]) + f"#{x.height}")
        if x.height and x.width:  # categories by their text: their codes depend on history
            cat = [c for c, t in x.schema.items() if isinstance(t, (pl.Categorical, pl.Enum))]
            x = x.with_columns(pl.col(cat).cast(pl.String)) if cat else x
            h.update(x.hash_rows(seed=0).to_numpy().tobytes())
    elif isinstance(x, pl.Series):
        _feed(h, x.to_frame())
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        _tag(h, "dataclass", type(x).__qualname__)
        for f in dataclasses.fields(x):
            _tag(h, "field", f.name)
            _feed(h, getattr(x, f.name))
    elif isinstance(x, Mapping):
        items = sorted(((repr(k), v) for k, v in x.items()), key=lambda kv: kv[0])
        _tag(h, "map", str(len(items)))
        for k, v in items:
            _tag(h, "key", k)
            _feed(h, v)
    elif isinstance(x, (list, tuple)):
        _tag(h, type(x).__name__, str(len(x)))
        for v in x:
            _feed(h, v)
    elif isinstance(x, (set, frozenset)):
        _feed(h, sorted(x, key=repr))
    else:
        raise TypeError(f"cannot fingerprint a {type(x).__name__}")


@functools.cache
def code_version() -> str:
    """sha256 over the source of every module of the analysis package, attncmp's version and the
    versions of the libraries that draw (matplotlib), compute (scipy) or hold the data (numpy,
    polars)."""
    from importlib.metadata import version

    from attncmp import analyze

    h = hashlib.sha256()
    for lib in ("attncmp", "matplotlib", "numpy", "polars", "scipy"):
        try:
            _tag(h, lib, version(lib))
        except Exception:  # noqa: BLE001 - e.g. run from a source tree that is not installed
            _tag(h, lib, "unknown")
    root = Path(analyze.__file__).parent
    for p in sorted(root.glob("*.py")):
        _tag(h, "module", p.name)
        h.update(p.read_bytes())
    return h.hexdigest()


def figure_key(fn: object, stem: str | PurePath, args: tuple, kwargs: Mapping[str, Any]) -> str:
    """The key of one figure job: code version, function, file stem (name only: the directory a
    job is drawn in does not matter) and the content of its arguments.

    Raises ``TypeError`` when an argument's content cannot be fingerprinted."""
    name = fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}"
    h = hashlib.sha256()
    _tag(h, "code", code_version())
    _tag(h, "fn", str(name))
    _tag(h, "stem", PurePath(stem).name)
    _feed(h, tuple(args))
    _feed(h, dict(kwargs))
    return h.hexdigest()
