"""extract.checkpoint: the one place that recognises torch's weights_only refusal."""

from __future__ import annotations

import fractions

import pytest
import torch
from attncmp.extract.checkpoint import load_torch_checkpoint, weights_only_refusal
from attncmp.extract.errors import CheckpointLoadError


def _failure(path):
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the exception itself is under test
        return exc
    raise AssertionError("torch.load did not fail")


def test_refusal_names_the_global_and_corruption_is_not_a_refusal(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"w": torch.zeros(2), "cfg": fractions.Fraction(1, 3)}, pickled)
    assert weights_only_refusal(_failure(pickled)) == "fractions.Fraction"

    broken = tmp_path / "broken.pt"
    broken.write_bytes(pickled.read_bytes()[:100])
    assert weights_only_refusal(_failure(broken)) is None
    assert weights_only_refusal(ValueError("anything else")) is None


def test_load_torch_checkpoint_messages(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"cfg": fractions.Fraction(1, 3)}, pickled)
    with pytest.raises(CheckpointLoadError, match=r"\(fractions.Fraction\).*--trust-checkpoint"):
        load_torch_checkpoint(pickled)
    assert load_torch_checkpoint(pickled, trust_checkpoint=True)["cfg"] == fractions.Fraction(1, 3)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointLoadError, match="cannot be loaded") as e:
        load_torch_checkpoint(broken)
    assert "trust" not in str(e.value)
