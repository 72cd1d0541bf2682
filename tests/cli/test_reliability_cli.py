"""Reliability from the command line: damaged stores, failed and killed runs, full disks and
concurrent writers end in one line, and nothing already written is lost."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from attncmp import cli
from attncmp.store import SiteSpec, StoreWriter, open_store
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from click.testing import CliRunner

from ._example import EXAMPLE_ADAPTER

ATT = "models/full/attention/fine_grained"
REPO = Path(__file__).resolve().parents[2]


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def _one_line_error(r) -> str:
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("Error: "), r.output
    return lines[0]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.h5"
    spec = synthetic_spec(12, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=2),))
    write_synthetic_store(path, spec, batch_size=4)
    return path


def _corrupt_chunk(path, dataset, chunk=0):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_analyze_on_a_corrupted_attention_chunk_is_one_line(store, tmp_path):
    _corrupt_chunk(store, f"{ATT}/data")
    r = run("analyze", store, "--save-dir", tmp_path / "out", "--n-boot", "100", "-q")
    line = _one_line_error(r)
    for part in (f"/{ATT}/data", "model 'full'", "site 'fine_grained'", "damaged: 's0000'"):
        assert part in line, line
    assert f"attncmp store validate {store}" in line
    # and validate lists the same dataset
    r = run("store", "validate", store)
    assert r.exit_code != 0 and f"/{ATT}/data" in r.output, r.output


# -- analysis outputs: one consistent set -----------------------------------------------------
ANALYZE_FAST = ["--n-boot", "100", "--examples", "2", "-q"]

KILLED_ANALYZE = """
import os, signal, sys
from unittest import mock
from attncmp import cli
from attncmp.analyze import report

where, store, out = sys.argv[1:4]
real_replace = os.replace
moves = [0]


def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)


def replace(src, dst):
    if ".analysis.tmp-" in str(src):
        moves[0] += 1
        if moves[0] == 4:
            die()
    return real_replace(src, dst)


if where == "render":
    report.render_report = die
else:
    os.replace = replace
cli.main(["analyze", store, "--save-dir", out, "--threshold", "0.2", *sys.argv[4:]])
"""


def _snapshot(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _threshold_everywhere(out: Path) -> set:
    summary = json.loads((out / "summary.json").read_text())
    state = json.loads((out / "analysis_cache" / "analysis_state.json").read_text())
    tables = (
        json.loads((out / "metric_tables.json").read_text())
        if (out / "metric_tables.json").exists()
        else {}
    )
    found = {state["options"]["threshold"]}
    found.add(summary.get("options", {}).get("threshold", state["options"]["threshold"]))
    if "threshold" in tables.get("options", {}):
        found.add(tables["options"]["threshold"])
    return found


@pytest.mark.parametrize("where", ["render", "publish"])
def test_killed_analyze_leaves_the_previous_set_or_one_plot_stats_refuses(store, tmp_path, where):
    out = tmp_path / "out"
    r = run("analyze", store, "--save-dir", out, *ANALYZE_FAST)
    assert r.exit_code == 0, r.output
    before = _snapshot(out)
    assert "report.md" in before and "analysis_cache/manifest.json" in before
    # output to a file: drawing worker processes outlive the killed parent for a moment
    with open(tmp_path / "child.log", "w") as log:
        p = subprocess.run(
            [sys.executable, "-c", KILLED_ANALYZE, where, str(store), str(out), *ANALYZE_FAST],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert p.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()[-3000:]
    if where == "render":  # killed while writing: the previous set is whole, byte for byte
        assert _snapshot(out) == before
        r = run("plot", "stats", out, "-q")
        assert r.exit_code == 0, r.output
        assert _threshold_everywhere(out) == {0.1}
    else:  # killed while moving files into place: refused in one line, never re-rendered
        line = _one_line_error(run("plot", "stats", out, "-q"))
        assert "incomplete" in line and "re-run `attncmp analyze" in line, line
    # the same command again: a complete, consistent set (leftovers removed)
    r = run("analyze", store, "--save-dir", out, "--threshold", "0.2", *ANALYZE_FAST)
    assert r.exit_code == 0, r.output
    assert _threshold_everywhere(out) == {0.2}
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    r = run("plot", "stats", out, "-q")
    assert r.exit_code == 0, r.output


def test_failed_analyze_keeps_every_earlier_output(store, tmp_path, monkeypatch):
    out = tmp_path / "out"
    r = run("analyze", store, "--save-dir", out, *ANALYZE_FAST)
    assert r.exit_code == 0, r.output
    before = _snapshot(out)
    from attncmp.analyze import report

    def broken(*a, **k):
        raise RuntimeError("a bug while writing the report")

    monkeypatch.setattr(report, "render_report", broken)
    r = run("analyze", store, "--save-dir", out, "--threshold", "0.3", *ANALYZE_FAST)
    assert r.exit_code == 70, r.output  # a bug shows itself ("internal error, please report")
    assert _snapshot(out) == before  # ... and nothing already written is lost
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_changed_cache_file_is_refused_by_plot_stats(store, tmp_path):
    out = tmp_path / "out"
    assert run("analyze", store, "--save-dir", out, *ANALYZE_FAST).exit_code == 0
    other = tmp_path / "other"
    assert (
        run("analyze", store, "--save-dir", other, "--threshold", "0.3", *ANALYZE_FAST).exit_code
        == 0
    )
    shutil.copy(other / "analysis_cache" / "analysis_state.json", out / "analysis_cache")
    line = _one_line_error(run("plot", "stats", out, "-q"))
    assert "analysis_state.json was changed after the analysis wrote it" in line, line


def test_more_examples_than_samples_says_how_many_were_drawn(store, tmp_path):
    r = run(
        "analyze", store, "--save-dir", tmp_path / "o", "--n-boot", "100", "--examples", "100", "-q"
    )
    assert r.exit_code == 0, r.output
    assert "note: --examples 100: the store has 12 samples; drew 12 heatmap example(s)" in r.output
    assert len(list((tmp_path / "o").glob("attention_heatmap_example_*.png"))) == 12


def test_save_dir_that_is_not_utf8_is_one_line(store, tmp_path):
    bad = os.fsdecode(bytes(tmp_path) + b"/out\xff")
    line = _one_line_error(run("analyze", store, "--save-dir", bad, *ANALYZE_FAST))
    assert "not valid UTF-8" in line, line


# -- extract: --overwrite, a failed first batch, full and read-only disks ---------------------
ADAPTER = EXAMPLE_ADAPTER  # the `example` fixture (conftest) holds its data and checkpoints


def _extract(d: Path, out: Path, *extra):
    return run(
        "extract", "--adapter", ADAPTER, "--model", f"full={d / 'full.pt'}",
        "--model", f"no_middle={d / 'no_middle.pt'}", "--root-dir", d / "data", "--out", out,
        "--batch-size", "4", "--trust-checkpoint", "--quiet", *extra,
    )  # fmt: skip


def test_extract_overwrite_and_a_failed_first_batch(example, tmp_path):
    out = tmp_path / "s.h5"
    assert _extract(example, out).exit_code == 0
    line = _one_line_error(_extract(example, out, "--dtype", "float32"))
    assert "different configuration" in line, line
    r = _extract(example, out, "--dtype", "float32", "--overwrite")
    assert r.exit_code == 0, r.output
    with open_store(out) as st:
        assert st.attention_dtype == "float32" and st.n_samples == 12
    # a store whose first batch failed (nothing committed) is replaced without --overwrite
    empty = tmp_path / "e.h5"
    StoreWriter.create(empty, synthetic_spec(3, sites=(SiteSpec("x"),))).close()
    r = _extract(example, empty)
    assert r.exit_code == 0, r.output
    with open_store(empty) as st:
        assert st.n_samples == 12


def _mount(mnt: Path, opts: str) -> None:
    mnt.mkdir(exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'})")


def test_extract_into_a_full_disk_is_one_line_and_continues(example, tmp_path):
    mnt = tmp_path / "mnt"
    _mount(mnt, "size=3m")
    try:
        (mnt / "filler").write_bytes(b"\0" * (1 << 20))
        out = mnt / "s.h5"
        line = _one_line_error(_extract(example, out, "--dtype", "float32"))
        assert line.startswith(f"Error: disk full while writing {out}: 0 samples are committed"), (
            line
        )
        (mnt / "filler").unlink()
        r = _extract(example, out, "--dtype", "float32")
        assert r.exit_code == 0, r.output
        with open_store(out) as st:
            assert st.n_samples == 12
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_extract_into_a_read_only_directory_and_a_too_long_name(example, tmp_path):
    line = _one_line_error(_extract(example, tmp_path / ("x" * 300 + ".h5")))
    assert "name too long" in line.lower(), line
    mnt = tmp_path / "ro"
    _mount(mnt, "size=1m,ro")
    try:
        line = _one_line_error(_extract(example, mnt / "s.h5"))
        assert "cannot be created" in line and "Read-only file system" in line, line
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
