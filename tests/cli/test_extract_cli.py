"""`attncmp extract`: the worked example adapter end to end, the original option spellings, and
every user error as one clear line (exit code != 0, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from attncmp.cli import main
from attncmp.store import open_store
from click.testing import CliRunner

from ._example import EXAMPLE_ADAPTER

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = EXAMPLE_ADAPTER  # the `example` fixture (conftest) holds its data and checkpoints


def _invoke(args: list[str]):
    return CliRunner().invoke(main, ["extract", *args])


def _base(d: Path, out: str = "s.h5") -> list[str]:
    return [
        "--adapter", ADAPTER, "--model", f"full={d / 'full.pt'}",
        "--model", f"no_middle={d / 'no_middle.pt'}", "--root-dir", str(d / "data"),
        "--out", str(d / out), "--batch-size", "4", "--quiet",
    ]  # fmt: skip


def _one_error_line(r, *wanted: str) -> None:
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, r.output
    for w in wanted:
        assert w in errors[0], r.output


def test_example_adapter_end_to_end_with_trust_checkpoint(example: Path) -> None:
    # the original-style checkpoints pickle an argparse.Namespace: refused without trust
    r = _invoke(_base(example))
    _one_error_line(r, "model 'full'", "--trust-checkpoint")
    assert not (example / "s.h5").exists()
    r = _invoke([*_base(example), "--trust-checkpoint", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    assert "extracted 12 samples" in r.output and "1 site (atom_to_text)" in r.output
    # the stored matrices are the model's output sliced to the valid region
    from attncmp.extract.adapter import resolve_adapter

    ad, _ = resolve_adapter(ADAPTER)
    with open_store(example / "s.h5") as st:
        assert st.provenance("full")["trust_checkpoint"] is True
        assert st.provenance("full")["config"] == {
            "d_model": 32,
            "n_heads": 4,
            "middle_fusion": True,
        }
        for name in ("full", "no_middle"):
            h = ad.load_model(str(example / f"{name}.pt"), torch.device("cpu"), True)
            batch = ad.make_batch(st.ids, str(example / "data"))
            with torch.no_grad():
                out = ad.forward(h, batch, "cpu")
            att = out.attention["atom_to_text"]  # [B, 4, N, T], padded
            for j, info in enumerate(ad.describe(batch)):
                n, t = len(info.node_labels), len(info.tokens)
                stored = st.attention(name, "atom_to_text", info.id)
                assert stored.shape == (1, 4, n, t)
                np.testing.assert_allclose(stored[0], att[j, :, :n, :t].numpy(), atol=1e-6)
                assert st.sample(info.id, with_attention=False).tokens == list(info.tokens)


def test_original_spellings_and_save_dir(example: Path) -> None:
    save = example / "attention_comparison"
    r = _invoke([
        "--adapter", ADAPTER, "--checkpoint_full", str(example / "full.pt"),
        "--checkpoint_no_middle", str(example / "no_middle.pt"), "--root_dir",
        str(example / "data"), "--num_samples", "5", "--batch_size", "2", "--save_dir", str(save),
        "--trust-checkpoint", "--seed", "3",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    with open_store(save / "attention_store.h5") as st:
        assert st.models == ["full", "no_middle"] and st.n_samples == 5
        assert st.selection_seed == 3 and st.config["batch_size"] == 2


def test_compare_extracts_with_the_shared_options_then_reuses_the_store(example: Path) -> None:
    # `compare` hands one ExtractConfig (the options `extract` shares, the analysis seed as the
    # selection seed) to the workflow; the same command again finds the store current
    save = example / "compared"
    args = [
        "compare", "--adapter", ADAPTER, "--checkpoint_full", str(example / "full.pt"),
        "--checkpoint-no-middle", str(example / "no_middle.pt"), "--root_dir",
        str(example / "data"), "--num_samples", "6", "--batch_size", "4", "--save_dir",
        str(save), "--trust-checkpoint", "--seed", "3", "--n-boot", "100", "--examples", "1",
    ]  # fmt: skip
    r = CliRunner().invoke(main, [*args, "--quiet"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("verdict: ")
    with open_store(save / "attention_store.h5") as st:
        assert st.models == ["full", "no_middle"] and st.n_samples == 6
        assert st.selection_seed == 3 and st.config["batch_size"] == 4
        assert st.provenance("full")["trust_checkpoint"] is True
    assert (save / "report.md").exists()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "complete store with 6 samples); extraction skipped" in r.output


@pytest.mark.parametrize(
    "args, wanted",
    [
        (["--model", "full=nope.pt", "--model", "b=nope2.pt"], ["nope.pt", "does not exist"]),
        (["--model", "full=a.pt"], ["need at least 2 model variants"]),
        (["--model", "fullpath.pt", "--model", "b=x"], ["expected NAME=PATH"]),
        (["--adapter", "no_such_module:Adapter", "--model", "a=x", "--model", "b=y"],
         ["module 'no_such_module' is not importable"]),
        (["--adapter", "tests.cli.test_extract_cli:_invoke", "--model", "a=x", "--model", "b=y"],
         ["lacks required method(s) load_model"]),
        (["--model", "a=x", "--model", "b=y", "--all", "--num-samples", "3"],
         ["--all and --num-samples exclude each other"]),
        (["--model", "a=x", "--model", "b=y", "--shard", "2/2"], ["--shard 2/2"]),
        (["--model", "a=x", "--model", "a=y"], ["given more than once"]),
        (["--model", "a=x", "--model", "b=y", "--device", "cuda:7"], ["--device cuda:7"]),
    ],
)  # fmt: skip
def test_user_errors_are_one_clear_line(args, wanted, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "--device" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    r = _invoke(args)
    _one_error_line(r, *wanted)


def test_more_errors_through_the_cli(example: Path) -> None:
    base = [*_base(example, "e.h5"), "--trust-checkpoint"]
    _one_error_line(_invoke([*base, "--split", "train"]), "used to train model 'full'",
                    "--allow-training-samples")  # fmt: skip
    _one_error_line(_invoke([*base, "--num-samples", "99"]), "--num-samples 99", "only 12")
    assert _invoke([*base, "--num-samples", "4"]).exit_code == 0
    _one_error_line(_invoke([*base, "--num-samples", "4", "--dtype", "float32"]),
                    "different configuration", "dtype")  # fmt: skip
    _one_error_line(_invoke([*base, "--num-samples", "4", "--baseline", "zzz"]),
                    "--baseline 'zzz'")  # fmt: skip
    with open_store(example / "e.h5") as st:  # nothing was lost
        assert st.n_samples == 4


def test_extract_help_does_not_import_torch() -> None:
    code = (
        "import sys; from click.testing import CliRunner; import cli; "
        "r = CliRunner().invoke(cli.main, ['extract', '--help']); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "sys.exit(0 if (r.exit_code == 0 and not bad and '--checkpoint_full' in r.output) else 1)"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
