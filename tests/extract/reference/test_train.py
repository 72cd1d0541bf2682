"""Training (tiny runs), checkpoint round trip with weights_only, clear checkpoint errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attncmp.cli import main
from attncmp.extract.reference.errors import CheckpointError
from attncmp.extract.reference.train import load_checkpoint, train_variant
from click.testing import CliRunner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "tiny_full.pt"
    result = train_variant(
        "full", epochs=4, out=out, quiet=True, max_train_samples=96, d_model=32, n_heads=2
    )
    return result


def test_short_training_lowers_loss(tiny):
    losses = [h["train_loss"] for h in tiny.history]
    assert len(losses) == 4 and tiny.metrics["epochs_run"] == 4
    assert losses[-1] < losses[0]
    assert tiny.checkpoint.is_file()


def test_checkpoint_is_plain_and_weights_only(tiny):
    ckpt = torch.load(tiny.checkpoint, weights_only=True)
    assert ckpt["format"] == "attncmp-reference-checkpoint" and ckpt["format_version"] == 1
    assert ckpt["variant"] == "full" and ckpt["seed"] == 0 and ckpt["split_seed"] == 0
    assert {k: len(v) for k, v in ckpt["split"].items()} == {"train": 514, "val": 64, "test": 64}
    assert ckpt["config"]["middle_fusion"] is True and ckpt["config"]["d_model"] == 32
    assert isinstance(ckpt["tokenizer"], str)
    for key in (
        "test_mae", "test_rmse", "val_mae", "mean_predictor_test_mae",
        "mean_predictor_test_rmse", "epochs_run", "train_seconds",
    ):  # fmt: skip
        assert np.isfinite(ckpt["metrics"][key]), key


def test_checkpoint_round_trip_gives_identical_predictions(tiny):
    a = load_checkpoint(tiny.checkpoint)
    b = load_checkpoint(tiny.checkpoint)
    assert not a.model.training and a.variant == "full"
    test = a.samples("test")
    assert [m.id for m in test] == a.split["test"]
    batch = a.collate(test)
    with torch.no_grad():
        pa, pb = a.model(batch)["prediction"], b.model(batch)["prediction"]
    assert torch.equal(pa, pb)
    # the recorded test MAE is what the reloaded model predicts
    mae = float((pa.double() - batch.targets.double()).abs().mean())
    assert mae == pytest.approx(a.checkpoint["metrics"]["test_mae"], abs=1e-5)
    # tokenizer was trained on training names only, and round-tripped
    assert a.tokenizer.to_json() == a.checkpoint["tokenizer"]


def test_training_is_deterministic(tmp_path):
    kw = dict(epochs=2, quiet=True, max_train_samples=32, d_model=16, n_heads=2)
    r1 = train_variant("no_middle", out=tmp_path / "a.pt", **kw)
    r2 = train_variant("no_middle", out=tmp_path / "b.pt", **kw)
    s1 = torch.load(r1.checkpoint, weights_only=True)["state_dict"]
    s2 = torch.load(r2.checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1.metrics["test_mae"] == r2.metrics["test_mae"]
    assert torch.load(r1.checkpoint, weights_only=True)["config"]["middle_fusion"] is False


def _assert_clear(exc_info, path):
    msg = str(exc_info.value)
    assert str(path) in msg and "\n" not in msg


def test_checkpoint_errors(tmp_path, tiny):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_checkpoint(missing)
    _assert_clear(e, missing)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(garbage)
    _assert_clear(e, garbage)

    truncated = tmp_path / "truncated.pt"
    data = tiny.checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(truncated)
    _assert_clear(e, truncated)

    other = tmp_path / "other.pt"
    torch.save({"model": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an attncmp reference checkpoint") as e:
        load_checkpoint(other)
    _assert_clear(e, other)

    broken = tmp_path / "broken.pt"
    ckpt = torch.load(tiny.checkpoint, weights_only=True)
    del ckpt["state_dict"]["head.0.weight"]
    torch.save(ckpt, broken)
    with pytest.raises(CheckpointError, match="head.0.weight") as e:
        load_checkpoint(broken)
    _assert_clear(e, broken)

    assert issubclass(CheckpointError, ValueError)


def test_pickled_objects_need_trust(tmp_path, tiny):
    ckpt = torch.load(tiny.checkpoint, weights_only=True)
    ckpt["extra"] = np.random.default_rng(0)  # an arbitrary Python object
    path = tmp_path / "pickled.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="trust") as e:
        load_checkpoint(path)
    _assert_clear(e, path)
    assert load_checkpoint(path, trust_checkpoint=True).variant == "full"


def test_cli_train(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main, ["train", "--variant", "no_middle", "--quick", "--epochs", "1", "--quiet",
               "--out", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    path = tmp_path / "reference_no_middle.pt"
    assert str(path) in res.output and path.is_file()
    bad = ["train", "--variant", "full", "--device", "nonsense", "--out", str(tmp_path / "x")]
    res = runner.invoke(main, bad)
    assert res.exit_code == 1, res.output
    assert "Error: device 'nonsense'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()  # nothing created before the failure
