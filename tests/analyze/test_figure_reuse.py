"""`attncmp plot stats` keeps a figure whose file already holds what it would draw, and draws
every other one (new format, changed or missing file, --force)."""

from __future__ import annotations

import json
import shutil

import pytest
from attncmp.analyze.outputs import AnalysisOptions, replot, run_analysis

from .synth_outputs import make_store


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    store = make_store(root / "store.h5", n=12, n_heads=2, n_layers=1, max_nodes=10, max_tokens=20)
    opts = AnalysisOptions(n_boot=200, examples=2, quiet=True)
    return run_analysis([store], root / "analysis", opts)


def _copy(res, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(res.save_dir, d)
    return d


def _stamp(d):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.glob("*.png")}


def test_analysis_records_a_key_for_every_figure(analysed):
    m = json.loads((analysed.save_dir / "analysis_cache" / "manifest.json").read_text())
    pngs = sorted(p.name for p in analysed.save_dir.glob("*.png"))
    assert len(pngs) >= 8 and "attention_heatmap_example_2.png" in pngs
    assert all(len(m["files"][n]["key"]) == 64 for n in pngs)
    assert len({m["files"][n]["key"] for n in pngs}) == len(pngs)  # one per figure


def test_replot_keeps_unchanged_figures_and_rewrites_the_report(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    before = _stamp(d)
    res = replot(d, lang="zh", workers=2)
    assert sorted(p.name for p in res.figures_reused) == sorted(before)
    assert _stamp(d) == before  # not even touched
    assert "注意力对比分析报告" in (d / "report.md").read_text(encoding="utf-8")
    assert {p.name for p in res.files} >= set(before) | {"summary.json", "report.md"}
    s = json.loads((d / "summary.json").read_text())
    assert s["figures"] == analysed.summary["figures"]
    assert s["verdict"] == json.loads((analysed.save_dir / "summary.json").read_text())["verdict"]


def test_changed_or_missing_figures_are_drawn_again(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    ref = (d / "strata_comparison.png").read_bytes()
    (d / "strata_comparison.png").write_bytes(b"not a png")  # changed after it was recorded
    (d / "attention_heatmap_example_1.png").unlink()
    res = replot(d, workers=1)
    drawn = {p.name for p in res.files if p.suffix == ".png"} - {p.name for p in res.figures_reused}
    assert drawn == {"strata_comparison.png", "attention_heatmap_example_1.png"}
    assert (d / "strata_comparison.png").read_bytes() == ref  # the same figure, drawn again
    assert (d / "attention_heatmap_example_1.png").exists()
    again = replot(d, workers=1)  # now recorded: kept
    assert {p.name for p in again.figures_reused} == {p.name for p in d.glob("*.png")}


def test_a_new_format_draws_only_that_format(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    before = _stamp(d)
    res = replot(d, formats=("png", "svg"), workers=2)
    assert {p.name for p in res.figures_reused} == set(before)
    svgs = sorted(p.name for p in d.glob("*.svg"))
    assert sorted(n.replace(".png", ".svg") for n in before) == svgs
    assert _stamp(d) == before
    s = json.loads((d / "summary.json").read_text())
    assert s["figures"]["mae_comparison"] == ["mae_comparison.png", "mae_comparison.svg"]


def test_force_draws_every_figure_identically(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    before = _stamp(d)
    res = replot(d, workers=2, force=True)
    assert res.figures_reused == []
    after = _stamp(d)
    assert after.keys() == before.keys()
    assert all(after[n][0] != before[n][0] for n in before)  # written again
    assert all(after[n][1] == before[n][1] for n in before)  # to the same bytes
    kept = replot(d, workers=1)
    assert {p.name for p in kept.figures_reused} == set(before)


def test_cli_plot_stats_says_what_it_kept(analysed, tmp_path):
    from attncmp.cli import main
    from click.testing import CliRunner

    d = _copy(analysed, tmp_path)
    n = len(list(d.glob("*.png")))
    r = CliRunner().invoke(main, ["plot", "stats", str(d), "--quiet", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    assert f"({n} unchanged figure files kept)" in r.output
    r = CliRunner().invoke(main, ["plot", "stats", str(d), "--quiet", "--jobs", "1", "--force"])
    assert r.exit_code == 0, r.output
    assert "kept" not in r.output
