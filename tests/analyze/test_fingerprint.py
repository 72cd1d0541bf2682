"""Content fingerprints (analyze.fingerprint): equal content -> equal key, any change -> new key."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import fingerprint as FP
from hypothesis import given, settings
from hypothesis import strategies as st


def _frame(values, names=("a", "b", "c")):
    return pl.DataFrame({"k": list(names), "v": values})


def test_equal_content_hashes_alike_however_it_was_built(tmp_path):
    a = _frame([1.0, float("nan"), 3.0])
    chunked = pl.concat(
        [_frame([1.0], ["a"]), _frame([float("nan"), 3.0], ["b", "c"])], rechunk=False
    )
    assert chunked.n_chunks() == 2
    a.write_parquet(tmp_path / "a.parquet")
    back = pl.read_parquet(tmp_path / "a.parquet")
    h = FP.content_hash(a)
    assert FP.content_hash(chunked) == h
    assert FP.content_hash(back) == h
    # categories hash by their text, not by their codes (which depend on what was seen before)
    seen_first = pl.Series(["zz", "c", "yy", "b"]).cast(pl.Categorical)
    assert seen_first.len() == 4
    cat = a.with_columns(pl.col("k").cast(pl.Categorical))
    cat2 = a.reverse().with_columns(pl.col("k").cast(pl.Categorical)).reverse()
    assert FP.content_hash(cat) == FP.content_hash(cat2)
    assert FP.content_hash(cat) != h  # the dtype is part of the content
    assert FP.content_hash(cat.with_columns(pl.col("k").cast(pl.String))) == h


def test_any_change_changes_the_hash():
    base = _frame([1.0, 2.0, 3.0])
    h = FP.content_hash(base)
    assert FP.content_hash(_frame([1.0, 2.0, 3.0000001])) != h  # a value
    assert FP.content_hash(_frame([1.0, 3.0, 2.0], ["a", "c", "b"])) != h  # row order
    assert FP.content_hash(base.rename({"v": "w"})) != h  # a column name
    assert FP.content_hash(base.with_columns(pl.col("v").cast(pl.Float32))) != h  # a dtype
    assert FP.content_hash(base.head(2)) != h
    assert FP.content_hash(_frame([1.0, None, 3.0])) != FP.content_hash(
        _frame([1.0, float("nan"), 3.0])
    )  # null is not NaN


def test_containers_arrays_and_dataclasses():
    @dataclasses.dataclass
    class D:
        m: np.ndarray
        labels: list[str]
        extra: dict

    x = D(np.arange(6, dtype=np.float32).reshape(2, 3), ["C", "O"], {"b": 1, "a": (1, 2.5)})
    y = D(np.arange(6, dtype=np.float32).reshape(2, 3), ["C", "O"], {"a": (1, 2.5), "b": 1})
    assert FP.content_hash(x) == FP.content_hash(y)  # dict order does not matter
    assert FP.content_hash(x) != FP.content_hash(dataclasses.replace(x, labels=["C", "N"]))
    z = dataclasses.replace(x, m=np.arange(6, dtype=np.float32).reshape(3, 2))
    assert FP.content_hash(x) != FP.content_hash(z)  # shape
    w = dataclasses.replace(x, m=np.arange(6, dtype=np.float64).reshape(2, 3))
    assert FP.content_hash(x) != FP.content_hash(w)  # dtype
    assert FP.content_hash([1, 2]) != FP.content_hash((1, 2))
    assert FP.content_hash(["ab", "c"]) != FP.content_hash(["a", "bc"])  # no ambiguity
    assert FP.content_hash(1) != FP.content_hash(1.0) != FP.content_hash("1")
    with pytest.raises(TypeError, match="cannot fingerprint"):
        FP.content_hash(object())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30),
    st.integers(min_value=1, max_value=29),
)
def test_hash_is_a_function_of_content_only(values, cut):
    """Property: a frame split into chunks anywhere, or round-tripped through numpy, hashes like
    the whole; changing any one value (to a different non-NaN value) changes it."""
    whole = pl.DataFrame({"v": values})
    cut = min(cut, len(values))
    parts = pl.concat([whole.slice(0, cut), whole.slice(cut)], rechunk=False)
    again = pl.DataFrame({"v": np.asarray(values, dtype=np.float64)})
    h = FP.content_hash(whole)
    assert FP.content_hash(parts) == h == FP.content_hash(again)
    i = cut - 1
    new = 12345.678 if values[i] != 12345.678 else -1.0
    changed = pl.DataFrame({"v": [*values[:i], new, *values[i + 1 :]]})
    assert FP.content_hash(changed) != h


def test_figure_key_covers_code_function_stem_and_arguments(monkeypatch):
    args, kw = (_frame([1.0, 2.0, 3.0]),), {"models": ["full", "no_middle"], "alpha": 0.05}
    k = FP.figure_key("m:plot_a", "/stage/x/fig", args, kw)
    assert FP.figure_key("m:plot_a", "/elsewhere/fig", args, kw) == k  # the directory: no
    assert FP.figure_key("m:plot_b", "/stage/x/fig", args, kw) != k
    assert FP.figure_key("m:plot_a", "/stage/x/fig2", args, kw) != k
    assert FP.figure_key("m:plot_a", "/stage/x/fig", args, {**kw, "alpha": 0.01}) != k
    monkeypatch.setattr(FP, "code_version", lambda: "another version of the drawing code")
    assert FP.figure_key("m:plot_a", "/stage/x/fig", args, kw) != k


def test_code_version_reads_every_module_of_the_package():
    from pathlib import Path

    import attncmp.analyze as A

    v = FP.code_version()
    assert len(v) == 64
    assert len(list(Path(A.__file__).parent.glob("*.py"))) > 20
