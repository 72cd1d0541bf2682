"""`attncmp view`: explorer.html from an analysis directory or a store alone."""

from __future__ import annotations

import json
import re

import pytest
from attncmp.cli import main
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from click.testing import CliRunner


def _data(path):
    page = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S)
    n_blobs = len(re.findall(r'type="application/x-attncmp-sample"', page))
    return json.loads(m.group(1)), n_blobs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("view")
    return write_synthetic_store(d / "store.h5", synthetic_spec(10, has_gold=True))


def test_view_store_alone(store, tmp_path):
    out = tmp_path / "x.html"
    r = CliRunner().invoke(main, ["view", str(store), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert re.fullmatch(rf"{re.escape(str(out))}: 10 samples, [\d.]+ MiB\n", r.output)
    data, n = _data(out)
    assert (data["n_samples"], n, data["analysed"]) == (10, 10, False)


def test_view_caps_the_embedded_samples(store, tmp_path):
    out = tmp_path / "x.html"
    args = ["view", str(store), "--out", str(out), "--max-samples", "3", "--seed", "5", "-q"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "attention of 3: the examples + a seeded random selection" in r.output
    data, n = _data(out)
    assert (len(data["samples"]), n, data["seed"]) == (10, 3, 5)


def test_view_analysis_dir_uses_its_store_and_writes_inside(store, tmp_path):
    from attncmp.analyze.outputs import AnalysisOptions, run_analysis

    save = tmp_path / "analysis"
    run_analysis([store], save, AnalysisOptions(quiet=True, n_boot=100, heads="mean"))
    (save / "explorer.html").unlink()
    r = CliRunner().invoke(main, ["view", str(save)])
    assert r.exit_code == 0, r.output
    data, n = _data(save / "explorer.html")
    assert data["analysed"] and data["report_html"] and n == 10
    assert "explorer: 10 samples, attention of 10 embedded" in r.stderr


def test_view_errors_are_one_line(store, tmp_path):
    r = CliRunner().invoke(main, ["view", str(tmp_path)])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "no summary.json" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(
        main, ["view", str(store), "--site", "nope", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 1 and "not an attention site" in r.output, r.output
    not_a_store = tmp_path / "x.h5"
    not_a_store.write_text("hello")
    r = CliRunner().invoke(main, ["view", str(not_a_store), "--out", str(tmp_path / "y.html")])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
