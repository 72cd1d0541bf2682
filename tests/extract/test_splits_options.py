"""Several splits pooled into one store, adapter settings (--adapter-opt) handed to the adapter's
constructor and recorded, and the adapter file's sha256 in the provenance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from attncmp.extract.adapter import adapter_source, parse_adapter_options, resolve_adapter
from attncmp.extract.engine import ExtractConfig, run_extraction
from attncmp.extract.errors import AdapterError, SelectionError
from attncmp.store import open_store

from . import toy
from .toy import ToyAdapter, one_torch_thread, save_checkpoint  # noqa: F401 - autouse fixture


class SplitlessToy(ToyAdapter):
    """The toy adapter without per-sample splits in describe(): the engine must record the split
    whose sample_ids listed each sample; takes settings through its constructor."""

    def __init__(self, scale: float = 1.0, label: str = "x", flag: bool = False) -> None:
        super().__init__()
        self.settings = {"scale": scale, "label": label, "flag": flag}

    def describe(self, batch):
        out = super().describe(batch)
        for info in out:
            info.split = None
        return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {
        "a": save_checkpoint(d / "a.pt", "dict", seed=0),
        "b": save_checkpoint(d / "b.pt", "dict", seed=1, middle=False),
    }


def _cfg(ckpts, out, **kw) -> ExtractConfig:
    kw.setdefault("batch_size", 4)
    kw.setdefault("quiet", True)
    kw.setdefault("commit_every", 0.0)
    kw.setdefault("adapter", ToyAdapter())
    return ExtractConfig(models=[("full", str(ckpts["a"])), ("nomid", str(ckpts["b"]))], out=out,
                         **kw)  # fmt: skip


@pytest.mark.parametrize("adapter", [ToyAdapter, SplitlessToy])
def test_two_splits_pool_into_one_store_each_sample_keeping_its_split(ckpts, tmp_path, adapter):
    res = run_extraction(_cfg(ckpts, tmp_path / "s.h5", split="val,test", adapter=adapter()))
    assert res.complete and res.n_selected == 6 + 14
    with open_store(res.path) as st:
        frame = st.samples_frame()
        assert st.split == "val,test"
        want = {s["id"]: s["split"] for s in toy.toy_samples()}
        assert dict(zip(frame["sample_id"], frame["split"], strict=True)) == {
            i: want[i] for i in frame["sample_id"]
        }
        assert sorted(set(frame["split"])) == ["test", "val"]


def test_pooled_splits_still_refuse_training_samples(ckpts, tmp_path):
    with pytest.raises(SelectionError, match="were used to train model"):
        run_extraction(_cfg(ckpts, tmp_path / "t.h5", split="test,train"))
    with pytest.raises(SelectionError, match="names a split twice"):
        run_extraction(_cfg(ckpts, tmp_path / "t2.h5", split="test,test"))
    assert not (tmp_path / "t.h5").exists()


def test_overlapping_splits_are_refused(ckpts, tmp_path):
    class Overlap(ToyAdapter):
        def sample_ids(self, split, root_dir):
            return ["S026", "S027"] if split == "val" else ["S027", "S028"]

    with pytest.raises(SelectionError, match="'S027' is in both split 'val' and 'test'"):
        run_extraction(_cfg(ckpts, tmp_path / "o.h5", split="val,test", adapter=Overlap()))


def test_parse_adapter_options():
    got = parse_adapter_options(["cutoff=5.0", "n=3", "flag=true", "vocab=a=b.txt", "x=", "l=[1]"])
    assert got == {"cutoff": 5.0, "n": 3, "flag": True, "vocab": "a=b.txt", "x": "", "l": "[1]"}
    for bad, msg in [(["novalue"], "expected KEY=VALUE"), (["a=1", "a=2"], "given twice"),
                     (["1x=2"], "expected KEY=VALUE")]:  # fmt: skip
        with pytest.raises(AdapterError, match=msg):
            parse_adapter_options(bad)


def test_adapter_options_reach_the_constructor_and_the_store(ckpts, tmp_path):
    out = tmp_path / "o.h5"
    res = run_extraction(
        _cfg(ckpts, out, adapter=SplitlessToy, adapter_options=["scale=0.5", "label=ab"])
    )
    with open_store(res.path) as st:
        prov = st.provenance("full")
        assert prov["adapter_options"] == {"scale": 0.5, "label": "ab"}
        assert st.config["adapter_options"] == {"scale": 0.5, "label": "ab"}
        # the adapter's source file (where its class is defined: this file) and its sha256
        src = Path(__file__).resolve()
        assert prov["adapter_file"] == str(src)
        assert prov["adapter_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    obj, _ = resolve_adapter(SplitlessToy, {"scale": 2.0, "flag": True})
    assert obj.settings == {"scale": 2.0, "label": "x", "flag": True}


def test_bad_adapter_options_are_one_line():
    with pytest.raises(AdapterError, match=r"does not take the settings \['radius'\]"):
        resolve_adapter(SplitlessToy, {"radius": 3})
    with pytest.raises(AdapterError, match="instance without a configure"):
        resolve_adapter(ToyAdapter(), {"radius": 3})
    with pytest.raises(AdapterError, match="does not take the settings"):
        resolve_adapter("reference", {"radius": 3})


def test_builtin_adapter_source_is_hashed():
    obj, _ = resolve_adapter("reference")
    src = adapter_source(obj)
    assert src["file"].endswith("reference.py")
    assert src["sha256"] == hashlib.sha256(Path(src["file"]).read_bytes()).hexdigest()


def test_cli_split_list_and_adapter_opt(ckpts, tmp_path):
    from attncmp.cli import main
    from click.testing import CliRunner

    base = ["extract", "--model", f"full={ckpts['a']}", "--model", f"nomid={ckpts['b']}",
            "--adapter", f"{toy.__file__}:ToyAdapter", "-q"]  # fmt: skip
    out = tmp_path / "new" / "cli.h5"
    r = CliRunner().invoke(main, [*base, "--split", "val,test", "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open_store(out) as st:
        assert sorted(set(st.split_column())) == ["test", "val"]
    r = CliRunner().invoke(main, [*base, "--adapter-opt", "radius=3", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "does not take the settings ['radius']" in r.output
    assert len(r.output.strip().splitlines()) == 1
