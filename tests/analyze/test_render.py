"""Figures drawn in worker processes are the same files, byte for byte, as drawn in-process."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from attncmp.analyze.outputs import AnalysisOptions, replot, run_analysis
from attncmp.analyze.render import FigureJob, FigureRenderer

from ._stores import study_store

FAST = {"n_boot": 200, "examples": 2, "quiet": True}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    store = study_store(root / "store.h5", n=12, n_heads=2, n_layers=1, max_nodes=10, max_tokens=20)
    return run_analysis([store], root / "analysis", AnalysisOptions(**FAST))


def test_workers_draw_the_same_files_as_one_process(analysed, tmp_path):
    outs = {}
    for w in (1, 2):
        d = tmp_path / f"w{w}"
        shutil.copytree(analysed.save_dir, d)
        for f in d.glob("*.png"):
            f.unlink()
        outs[w] = replot(d, workers=w)
    names1 = sorted(p.name for p in outs[1].files if p.suffix == ".png")
    names2 = sorted(p.name for p in outs[2].files if p.suffix == ".png")
    assert names1 == names2 and "attention_heatmap_example_2.png" in names1
    assert len(names1) >= 6, names1
    differ = [
        n
        for n in names1
        if (tmp_path / "w1" / n).read_bytes() != (tmp_path / "w2" / n).read_bytes()
    ]
    assert not differ, differ
    assert outs[1].summary["figures"] == outs[2].summary["figures"]


def _boom(*, stem, formats):
    raise ValueError("no data\nfor this figure")


def _write(text, *, stem, formats):
    paths = []
    for f in formats:
        p = stem.with_name(stem.name + "." + f)
        p.write_text(text)
        paths.append(p)
    return paths


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_figure_is_reported_and_the_others_are_drawn(tmp_path, workers):
    with FigureRenderer(formats=("png", "svg"), workers=workers) as r:
        r.submit(FigureJob("figure a", _write, tmp_path / "a", ("x",)))
        r.submit(FigureJob("figure b", _boom, tmp_path / "b"))
        r.submit(FigureJob("figure c", _write, tmp_path / "c", ("y",)))
        res = r.results()
    assert [x.name for x in res] == ["figure a", "figure b", "figure c"]
    assert res[0].paths == [tmp_path / "a.png", tmp_path / "a.svg"] and res[0].error is None
    assert res[1].paths is None and res[1].error == "ValueError: no data for this figure"
    assert (tmp_path / "c.svg").read_text() == "y"


def test_figure_workers_follow_the_engine_jobs_convention():
    from attncmp.analyze.render import available_cores, figure_workers

    assert figure_workers(None) == figure_workers(0) == available_cores()  # 0: every core
    assert figure_workers(1) == 1 and figure_workers(3) == 3
    assert FigureRenderer(formats=("png",), workers=0).workers == available_cores()


def test_analysis_start_up_does_not_load_matplotlib():
    """`attncmp analyze` reaches its first chunk without matplotlib (figures import it where they
    are drawn, in the worker processes)."""
    code = (
        "import sys, attncmp.analyze.outputs, attncmp.analyze.table, attncmp.analyze.heatmap; "
        "sys.exit(1 if 'matplotlib' in sys.modules else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr or "matplotlib was imported"
