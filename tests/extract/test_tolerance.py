"""One row-sum tolerance (store.schema.ROW_SUM_TOL), applied per model and site to what is stored,
recorded in the store and used by validate: a half-precision model extracted with --dtype float32
writes a store that validates."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import pytest
import torch
from attncmp.extract.engine import ExtractConfig, run_extraction
from attncmp.store import open_store, validate_store
from attncmp.store.schema import ROW_SUM_TOL, row_sum_tolerance

from .toy import Handle, ToyAdapter, save_checkpoint


class Bf16ToyAdapter(ToyAdapter):
    """The toy model with bfloat16 weights, run under CPU autocast (attention comes out bf16)."""

    def load_model(self, path: str, device: Any, trust_checkpoint: bool) -> Handle:
        h = super().load_model(path, device, trust_checkpoint)
        h.model = h.model.to(torch.bfloat16)
        return h

    def forward(self, h: Handle, batch: dict[str, Any], device: Any):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = super().forward(h, batch, device)
        assert out.attention["atom_to_text"].dtype == torch.bfloat16
        return out


def test_table():
    assert row_sum_tolerance("float32") == ROW_SUM_TOL["float32"] == 1e-3
    assert row_sum_tolerance("float16") == 2e-2
    assert row_sum_tolerance("float32", "bfloat16") == 2e-2  # the looser of the two
    assert row_sum_tolerance("float16", "float32") == 2e-2
    assert row_sum_tolerance("float32", "float64") == 1e-3
    assert row_sum_tolerance("float32", "torch.float8_e4m3fn") == max(ROW_SUM_TOL.values())


@pytest.mark.parametrize("store_dtype", ["float32", "float16"])
def test_half_precision_model_stored_as_float32_validates(tmp_path, store_dtype):
    a = save_checkpoint(tmp_path / "a.pt", "dict", seed=0)
    b = save_checkpoint(tmp_path / "b.pt", "dict", seed=1, middle=False)
    out = tmp_path / "s.h5"
    cfg = ExtractConfig(
        models=[("full", str(a)), ("no_middle", str(b))],
        out=out,
        adapter=Bf16ToyAdapter(),
        batch_size=4,
        dtype=store_dtype,
        quiet=True,
    )
    run_extraction(cfg)
    with open_store(out) as st:
        info = st.sites("full")["atom_to_text"]
        assert info.source_dtype == "bfloat16" and info.row_sum_tolerance == 2e-2
        # the stored rows really are off by more than the float32 entry (1e-3): the test
        # exercises the table, not a lucky margin
        worst = max(
            float(
                np.abs(st.attention("full", "atom_to_text", i).astype(np.float64).sum(-1) - 1).max()
            )
            for i in st.ids
        )
    assert worst > ROW_SUM_TOL["float32"], worst
    report = validate_store([out])
    assert report.ok, report.summary()


def test_recorded_tolerance_is_what_validate_applies(tmp_path):
    """A float32 model's rows off by 5e-3 pass with a recorded bfloat16 tolerance and fail
    without it (the table's float32 entry)."""
    from attncmp.store.synthetic import synthetic_spec, write_synthetic_store

    path = write_synthetic_store(tmp_path / "s.h5", synthetic_spec(4, dtype="float32"))
    with h5py.File(path, "r+") as f:
        g = f["models/full/attention/fine_grained"]
        g["data"][0] = g["data"][0] + 5e-3  # the first row now sums to 1.005
        assert g.attrs["row_sum_tolerance"] == 1e-3
    assert [p.kind for p in validate_store([path]).problems] == ["row-sum"]
    with h5py.File(path, "r+") as f:
        f["models/full/attention/fine_grained"].attrs["row_sum_tolerance"] = 2e-2
    assert validate_store([path]).ok
    with h5py.File(path, "r+") as f:
        f["models/full/attention/fine_grained"].attrs["row_sum_tolerance"] = 0.5
    assert "row_sum_tolerance" in validate_store([path]).summary()
