"""Crash-resume and sharding with real processes: SIGKILL mid-run then the same command again
yields the uninterrupted store; two shard processes together equal a single run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from attncmp.store import open_store
from attncmp.store.merge import merge_stores
from attncmp.store.validate import validate_store

from .toy import assert_same_store, one_torch_thread, save_checkpoint  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def _cmd(tmp: Path, out: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "attncmp.cli", "extract",
        "--adapter", "tests.extract.toy:ToyAdapter",
        "--model", f"full={tmp / 'a.pt'}", "--model", f"no_middle={tmp / 'b.pt'}",
        "--batch-size", "2", "--out", str(tmp / out), "--quiet", "--commit-every", "0", *extra,
    ]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _finish(p: subprocess.Popen) -> tuple[int, str]:
    out, _ = p.communicate(timeout=120)
    return p.returncode, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The uninterrupted run, a run SIGKILLed in its 4th batch, and two shards, in parallel."""
    tmp = tmp_path_factory.mktemp("proc")
    save_checkpoint(tmp / "a.pt", "dict", seed=0)
    save_checkpoint(tmp / "b.pt", "dict", seed=1, middle=False)
    kw = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = {
        "whole": subprocess.Popen(_cmd(tmp, "whole.h5"), env=_env(), **kw),
        "killed": subprocess.Popen(
            _cmd(tmp, "resumed.h5"), env=_env(ATTNCMP_TOY_KILL_AT="4"), **kw
        ),
    }
    results = {k: _finish(p) for k, p in procs.items()}
    shards = {
        i: subprocess.Popen(_cmd(tmp, "sharded.h5", "--shard", f"{i}/2"), env=_env(), **kw)
        for i in range(2)
    }
    results.update({f"shard{i}": _finish(p) for i, p in shards.items()})
    (tmp / "results.txt").write_text(repr(results))
    return tmp


def test_sigkill_then_the_same_command_gives_the_uninterrupted_store(runs: Path) -> None:
    results = eval((runs / "results.txt").read_text())
    rc, out = results["whole"]
    assert rc == 0, out
    assert "extracted 14 samples" in out
    rc, out = results["killed"]
    assert rc == -signal.SIGKILL, out
    with open_store(runs / "resumed.h5") as st:  # readable after the kill
        committed = st.n_samples
    assert 0 <= committed < 14 and committed % 2 == 0
    p = subprocess.run(
        _cmd(runs, "resumed.h5"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"resumed at {committed}" in p.stdout or committed == 0
    assert_same_store(runs / "whole.h5", runs / "resumed.h5")


def test_two_shard_processes_together_equal_a_single_run(runs: Path) -> None:
    results = eval((runs / "results.txt").read_text())
    for i in range(2):
        rc, out = results[f"shard{i}"]
        assert rc == 0, out
        assert f"shard {i}/2" in out
    paths = [runs / f"sharded.shard-0{i}-of-02.h5" for i in range(2)]
    with open_store(paths[0]) as a, open_store(paths[1]) as b:
        assert len(a.ids) == len(b.ids) == 7 and not set(a.ids) & set(b.ids)
    merge_stores(runs / "merged.h5", paths)
    for path in (*paths, runs / "merged.h5", runs / "resumed.h5"):
        assert validate_store(path).ok, validate_store(path).summary()
    with open_store(runs / "merged.h5") as merged, open_store(runs / "whole.h5") as whole:
        assert not merged.is_partial
        assert merged.ids == whole.ids
        assert merged.n_planned == whole.n_planned == 14
        for m in whole.models:
            # batch boundaries differ, so float32 results may differ in the last bit
            np.testing.assert_allclose(
                merged.prediction_array(m), whole.prediction_array(m), atol=1e-6
            )
            for sid in whole.ids:  # stored as float16: equal up to one float16 rounding
                np.testing.assert_allclose(
                    merged.attention(m, "atom_to_text", sid),
                    whole.attention(m, "atom_to_text", sid),
                    atol=1e-3,
                )
