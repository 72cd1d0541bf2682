"""`attncmp plot stats` keeps a figure whose file already holds what it would draw, and draws
every other one (new format, changed or missing file, --force)."""

from __future__ import annotations

import json
import shutil

import pytest
from attncmp.analyze.outputs import AnalysisOptions, replot, run_analysis

from ._stores import study_store


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    store = study_store(root / "store.h5", n=12, n_heads=2, n_layers=1, max_nodes=10, max_tokens=20)
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


def test_replot_keeps_what_cannot_change_and_rewrites_the_report(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    before = _stamp(d)
    csv = {p.name: p.stat().st_mtime_ns for p in d.glob("*.csv")}
    res = replot(d, lang="zh", workers=2)
    assert res.comparison is None  # the statistics were kept, not recomputed
    assert {p.name for p in res.kept} >= set(before) | set(csv)
    assert _stamp(d) == before  # not even touched
    assert {p.name: p.stat().st_mtime_ns for p in d.glob("*.csv")} == csv
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
    drawn = {p.name for p in res.files if p.suffix == ".png"} - {p.name for p in res.kept}
    assert drawn == {"strata_comparison.png", "attention_heatmap_example_1.png"}
    assert (d / "strata_comparison.png").read_bytes() == ref  # the same figure, drawn again
    assert (d / "attention_heatmap_example_1.png").exists()
    again = replot(d, workers=1)  # now recorded: kept
    assert {p.name for p in again.kept} >= {p.name for p in d.glob("*.png")}


def test_a_new_format_draws_only_that_format(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    before = _stamp(d)
    res = replot(d, formats=("png", "svg"), workers=2)
    assert {p.name for p in res.kept} == set(before)
    svgs = sorted(p.name for p in d.glob("*.svg"))
    assert sorted(n.replace(".png", ".svg") for n in before) == svgs
    assert _stamp(d) == before
    s = json.loads((d / "summary.json").read_text())
    assert s["figures"]["mae_comparison"] == ["mae_comparison.png", "mae_comparison.svg"]


def test_force_draws_every_figure_identically(analysed, tmp_path):
    d = _copy(analysed, tmp_path)
    before = _stamp(d)
    res = replot(d, workers=2, force=True)
    assert res.kept == []
    after = _stamp(d)
    assert after.keys() == before.keys()
    assert all(after[n][0] != before[n][0] for n in before)  # written again
    assert all(after[n][1] == before[n][1] for n in before)  # to the same bytes
    kept = replot(d, workers=1)
    assert {p.name for p in kept.kept} >= set(before)


def test_cli_plot_stats_says_what_it_kept(analysed, tmp_path):
    from attncmp.cli import main
    from click.testing import CliRunner

    d = _copy(analysed, tmp_path)
    n = len(json.loads((d / "summary.json").read_text())["files_written"]) - 2
    r = CliRunner().invoke(main, ["plot", "stats", str(d), "--quiet", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    assert f"re-rendered 2 files in {d} ({n} unchanged files kept)" in r.output
    r = CliRunner().invoke(main, ["plot", "stats", str(d), "--quiet", "--jobs", "1", "--force"])
    assert r.exit_code == 0, r.output
    assert "kept" not in r.output


def _report_body(path):
    return [x for x in path.read_text(encoding="utf-8").splitlines() if "attncmp" not in x]


def _summary_body(path):
    s = json.loads(path.read_text())
    return {k: v for k, v in s.items() if k not in ("created", "options")}, s["options"]["lang"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_kept_report_is_the_recomputed_one(analysed, tmp_path, lang):
    """The report written from the kept summary.json equals the one written from freshly
    computed statistics (apart from the line that names the version and date)."""
    d = _copy(analysed, tmp_path)
    fast = replot(d, lang=lang, workers=1)
    assert fast.comparison is None
    fast_report, fast_summary = _report_body(d / "report.md"), _summary_body(d / "summary.json")
    full = replot(d, lang=lang, workers=1, force=True)
    assert full.comparison is not None and full.kept == []
    assert _report_body(d / "report.md") == fast_report
    assert _summary_body(d / "summary.json") == fast_summary
    assert fast_summary[1] == lang
    assert len(fast_report) > 40


def test_a_changed_table_or_code_recomputes_the_statistics(analysed, tmp_path, monkeypatch):
    d = _copy(analysed, tmp_path)
    ref = (d / "attention_statistics.csv").read_bytes()
    (d / "attention_statistics.csv").write_text("edited by hand\n")
    res = replot(d, workers=1)
    assert res.comparison is not None  # recomputed
    assert (d / "attention_statistics.csv").read_bytes() == ref  # and written again
    assert {p.name for p in res.kept} == {p.name for p in d.glob("*.png")}  # figures kept
    from attncmp.analyze import fingerprint as FP

    monkeypatch.setattr(FP, "code_version", lambda: "another version of attncmp")
    res = replot(d, workers=1)
    assert res.comparison is not None and res.kept == []  # new code: everything again


def test_kept_statistics_have_no_comparison_object(analysed, tmp_path):
    from attncmp.analyze.options import AnalysisError

    d = _copy(analysed, tmp_path)
    res = replot(d, workers=1)
    assert res.summary["verdict"]["overall"] == analysed.summary["verdict"]["overall"]
    with pytest.raises(AnalysisError, match="kept the statistics"):
        _ = res.verdict
