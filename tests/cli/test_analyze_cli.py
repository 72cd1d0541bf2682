"""`attncmp analyze`, `plot stats`, `plot heatmap`, `compare` (extraction skipped on a complete
store): happy paths, and one clear line for every bad input."""

from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import pytest
from attncmp import cli
from click.testing import CliRunner

from tests.analyze._stores import study_store

FAST = ["--n-boot", "100", "--examples", "2", "-q"]


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return study_store(
        tmp_path_factory.mktemp("cli") / "store.h5",
        n=10,
        n_heads=2,
        n_layers=1,
        max_nodes=10,
        max_tokens=20,
    )


def test_analyze_then_plot_stats_without_the_store(store, tmp_path):
    out = tmp_path / "out"
    r = run("analyze", store, "--save-dir", out, *FAST)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("verdict: ")
    assert "report: " in r.output and "entropy" in r.output
    assert sorted(p.name for p in out.glob("attention_heatmap_example_*.png")) == [
        "attention_heatmap_example_1.png",
        "attention_heatmap_example_2.png",
    ]
    # re-plot from the cache with the store moved away
    moved = tmp_path / "elsewhere.h5"
    shutil.move(store, moved)
    try:
        (out / "attention_statistics_comparison.png").unlink()
        r2 = run("plot", "stats", out, "--lang", "zh", "-q")
    finally:
        shutil.move(moved, store)
    assert r2.exit_code == 0, r2.output
    assert (out / "attention_statistics_comparison.png").exists()
    zh = (out / "report.md").read_text(encoding="utf-8")
    assert "注意力对比分析报告" in zh
    assert "不再衡量集中程度" in zh  # the effective-tokens caveat


def test_plot_heatmap(store, tmp_path):
    from attncmp.store import open_store

    with open_store(store) as st:
        sid = st.ids[3]
    r = run("plot", "heatmap", store, "--id", sid, "--head", "1", "--out", tmp_path / "h.pdf")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h.pdf").stat().st_size > 1000
    r = run("plot", "heatmap", store, "--id", "NOPE", "--out", tmp_path / "x.png")
    assert r.exit_code != 0 and "NOPE" in r.output and "Traceback" not in r.output


def _one_clear_line(r):
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 or lines[0].startswith("Usage:"), r.output
    return lines[-1]


def _plain_h5(path):
    """An HDF5 file that is not a store."""
    with h5py.File(path, "w") as f:
        f["x"] = [0, 1, 2]
    return path


def test_bad_inputs_each_give_one_clear_line(store, tmp_path):
    msg = _one_clear_line(run("analyze", tmp_path / "missing.h5", "--save-dir", tmp_path / "o"))
    assert "does not exist" in msg
    msg = _one_clear_line(
        run("analyze", _plain_h5(tmp_path / "plain.h5"), "--save-dir", tmp_path / "o")
    )
    assert "not an attncmp store" in msg
    one = study_store(tmp_path / "one.h5", n=4, models=("full",), extra_sites=False)
    msg = _one_clear_line(run("analyze", one, "--save-dir", tmp_path / "o"))
    assert "one model only" in msg
    msg = _one_clear_line(run("analyze", store, "--save-dir", tmp_path / "o", "--site", "bogus"))
    assert "--site 'bogus'" in msg and "atom_to_text" in msg
    msg = _one_clear_line(
        run("analyze", store, "--save-dir", tmp_path / "o", "--site", "text_pool")
    )
    assert "single key" in msg and "atom_to_text" in msg
    msg = _one_clear_line(
        run("analyze", store, "--save-dir", tmp_path / "o", "--baseline", "bogus")
    )
    assert "--baseline 'bogus'" in msg and "no_middle" in msg
    msg = _one_clear_line(run("analyze", store, "--save-dir", ""))
    assert "--save-dir is empty" in msg
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    msg = _one_clear_line(run("analyze", store, "--save-dir", blocker / "sub"))
    assert "not writable" in msg
    msg = _one_clear_line(run("analyze", store, "--save-dir", tmp_path / "o", "--format", "gif"))
    assert "gif" in msg
    msg = _one_clear_line(run("analyze", store, "--save-dir", tmp_path / "o", "--group", "x"))
    assert "NAME=MODEL1,MODEL2" in msg
    msg = _one_clear_line(run("plot", "stats", tmp_path))
    assert "no cached analysis" in msg


def test_partial_store_says_partial(tmp_path):
    path, writer = study_store(
        tmp_path / "partial.h5",
        n=6,
        n_planned=15,
        n_heads=1,
        n_layers=1,
        extra_sites=False,
        keep_open=True,
    )
    try:
        r = CliRunner().invoke(
            cli.main,
            [
                "analyze",
                str(path),
                "--save-dir",
                str(tmp_path / "o"),
                "--n-boot",
                "100",
                "--examples",
                "1",
            ],
        )
    finally:
        writer.close()
    assert r.exit_code == 0, r.output
    assert "partial" in r.output.lower() and "6 of 15" in r.output
    assert "PARTIAL store" in r.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["is_partial"] is True


def test_compare_reuses_a_complete_store(tmp_path):
    ck = {}
    for name in ("full", "no_middle"):
        p = tmp_path / f"{name}.pt"
        p.write_bytes(name.encode() * 100)
        ck[name] = {
            "checkpoint": str(p),
            "checkpoint_sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
    out = tmp_path / "attention_comparison"
    out.mkdir()
    study_store(
        out / "attention_store.h5",
        n=8,
        n_heads=1,
        n_layers=1,
        extra_sites=False,
        provenance=ck,
        config={"num_samples": 8},
    )
    r = CliRunner().invoke(
        cli.main,
        [
            "compare",
            "--checkpoint_full",
            str(tmp_path / "full.pt"),
            "--checkpoint-no-middle",
            str(tmp_path / "no_middle.pt"),
            "--save_dir",
            str(out),
            "--num_samples",
            "8",
            "--n-boot",
            "100",
            "--examples",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "extraction skipped" in r.output
    assert (out / "attention_heatmap_example_1.png").exists() and (out / "report.md").exists()


def test_compare_needs_two_checkpoints(tmp_path):
    p = tmp_path / "a.pt"
    p.write_bytes(b"x")
    r = run("compare", "--checkpoint_full", p, "--save_dir", tmp_path / "o")
    assert r.exit_code == 2 and "two checkpoints" in r.output
