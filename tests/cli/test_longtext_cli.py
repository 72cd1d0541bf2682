"""`plot text`, `plot heatmap` into new directories, `store merge` into a new directory, and the
text views written beside every heatmap example by `analyze`."""

from __future__ import annotations

import pytest
from attncmp import cli
from attncmp.store import open_store
from click.testing import CliRunner

from tests.analyze._stores import long_text_store, study_store


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def long_store(tmp_path_factory):
    return long_text_store(tmp_path_factory.mktemp("cli_long") / "long.h5")


def test_plot_text_and_heatmap_create_missing_directories(long_store, tmp_path):
    out = tmp_path / "plots" / "deeper" / "t.png"
    r = run("plot", "text", long_store, "--id", "s0000", "--group", "Si", "--node", "3",
            "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out) and out.stat().st_size > 10_000
    hm = tmp_path / "plots2" / "h.png"
    r = run("plot", "heatmap", long_store, "--id", "s0001", "--out", hm)
    assert r.exit_code == 0, r.output
    assert hm.stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--id", "NOPE"], "NOPE"),
        (["--id", "s0000", "--group", "Xx"], "no node has the label 'Xx'"),
        (["--id", "s0000", "--node", "500"], "`node` 500 out of range"),
    ],
)
def test_plot_text_errors_are_one_line(long_store, tmp_path, args, msg):
    r = run("plot", "text", long_store, *args, "--out", tmp_path / "x.png")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_store_merge_creates_the_output_directory(tmp_path):
    p = long_text_store(tmp_path / "a.h5")
    out = tmp_path / "merged" / "sub" / "m.h5"
    r = run("store", "merge", out, p, "-q")
    assert r.exit_code == 0, r.output
    with open_store(out) as st:
        assert st.n_samples == 2


def test_analyze_writes_a_text_view_for_every_heatmap_example(tmp_path):
    store = study_store(tmp_path / "s.h5", n=6, n_heads=2, n_layers=1, max_nodes=10, max_tokens=20)
    out = tmp_path / "new" / "out"
    r = run("analyze", store, "--save-dir", out, "--n-boot", "100", "--examples", "2", "-q")
    assert r.exit_code == 0, r.output
    for k in (1, 2):
        assert (out / f"attention_heatmap_example_{k}.png").is_file()
        assert (out / f"attention_text_example_{k}.png").stat().st_size > 5_000
    import polars as pl

    g = pl.read_csv(out / "per_group_metrics.csv")
    assert set(g["model"]) == {"full", "no_middle"} and g["sample_id"].n_unique() == 6
    one = g.filter((pl.col("sample_id") == g["sample_id"][0]) & (pl.col("model") == "full"))
    assert one["group_size"].sum() > 0 and one["group"].n_unique() == one.height


def test_analyze_strata_by_a_metadata_column(tmp_path):
    import polars as pl

    store = study_store(tmp_path / "s.h5", n=12, n_heads=1, n_layers=1, max_nodes=8, max_tokens=16)
    out = tmp_path / "out"
    r = run("analyze", store, "--save-dir", out, "--n-boot", "100", "--examples", "0", "-q",
            "--strata", "n_rings,split", "--strata", "target")  # fmt: skip
    assert r.exit_code == 0, r.output
    f = pl.read_csv(out / "strata.csv")
    assert list(dict.fromkeys(f["stratifier"])) == ["n_rings", "split", "target"]
    r = run("analyze", store, "--save-dir", out, "--strata", "colour", "-q")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "--strata 'colour' is not a stratifier of this store; choose from" in r.output
