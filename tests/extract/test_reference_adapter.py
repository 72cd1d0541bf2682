"""The built-in reference adapter end to end on two tiny trained reference variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from attncmp.cli import main
from attncmp.extract.adapters.reference import ReferenceAdapter
from attncmp.extract.engine import ExtractConfig, run_extraction
from attncmp.extract.errors import CheckpointLoadError, SelectionError
from attncmp.extract.reference.gold import gold_mask
from attncmp.extract.reference.train import load_checkpoint, train_variant
from attncmp.store import open_store
from click.testing import CliRunner

from .toy import one_torch_thread  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("refckpt")
    kw = dict(epochs=1, quiet=True, max_train_samples=32, d_model=32, n_heads=2)
    return {v: train_variant(v, out=d / f"{v}.pt", **kw).checkpoint for v in ("full", "no_middle")}


def _cfg(ckpts, out, **kw) -> ExtractConfig:
    kw.setdefault("quiet", True)
    return ExtractConfig(
        models=[("full", str(ckpts["full"])), ("no_middle", str(ckpts["no_middle"]))],
        adapter="reference",
        out=out,
        **kw,
    )


def test_reference_extraction_stores_the_models_own_view(ckpts, tmp_path) -> None:
    res = run_extraction(
        _cfg(ckpts, tmp_path / "s.h5", num_samples=6, batch_size=4, dtype="float32", seed=5)
    )
    # middle fusion exists only in the full model: not comparable, recorded as skipped
    assert res.sites == ["atom_to_text"] and res.skipped_sites == {"full": ["middle_fusion"]}
    loaded = {v: load_checkpoint(p) for v, p in ckpts.items()}
    full = loaded["full"]
    test_ids = full.split["test"]
    with open_store(res.path) as st:
        assert st.n_samples == 6 and set(st.ids) <= set(test_ids)
        assert st.selection_seed == 5 and st.config["num_samples"] == 6
        mols = {m.id: m for m in full.samples("test")}
        batch = full.collate([mols[i] for i in st.ids])
        for v, lr in loaded.items():
            with torch.no_grad():
                out = lr.model(batch)
            att = out["fine_grained_attention_weights"]["atom_to_text"]  # [B, H, N, T]
            np.testing.assert_allclose(st.prediction_array(v)[:, 0], out["prediction"], atol=1e-5)
            for j, sid in enumerate(st.ids):
                n, t = int(batch.n_nodes[j]), int(batch.n_tokens[j])
                stored = st.attention(v, "atom_to_text", sid)
                assert stored.shape == (1, 2, n, t)
                np.testing.assert_allclose(stored[0], att[j, :, :n, :t], atol=1e-5)
        for sid in st.ids:
            smp = st.sample(sid, with_attention=False)
            enc = full.tokenizer.encode(mols[sid].name)
            assert smp.tokens == enc.tokens and smp.special.tolist() == enc.special
            assert smp.node_labels == mols[sid].elements
            np.testing.assert_array_equal(smp.gold, gold_mask(mols[sid], enc))
            assert smp.split == "test" and smp.meta["name"] == mols[sid].name
            assert smp.target[0] == pytest.approx(mols[sid].target)
        prov = st.provenance("no_middle")
        assert prov["config"]["variant"] == "no_middle" and prov["adapter"] == "reference"
        assert prov["config"]["config"]["middle_fusion"] is False


def test_reference_training_samples_and_unknown_splits(ckpts, tmp_path) -> None:
    with pytest.raises(SelectionError, match=r"selected samples .* were used to train model"):
        run_extraction(_cfg(ckpts, tmp_path / "a.h5", split="train"))
    with pytest.raises(SelectionError, match=r"split 'dev' is not recorded.*\['test', 'train'"):
        run_extraction(_cfg(ckpts, tmp_path / "b.h5", split="dev"))
    res = run_extraction(
        _cfg(ckpts, tmp_path / "c.h5", split="all", num_samples=3, allow_training_samples=True)
    )
    assert res.complete


def test_reference_checkpoint_errors_are_one_line(ckpts, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    cfg = ExtractConfig(
        models=[("full", str(bad)), ("no_middle", str(ckpts["no_middle"]))],
        adapter=ReferenceAdapter(),
        out=tmp_path / "s.h5",
        quiet=True,
    )
    with pytest.raises(CheckpointLoadError) as e:
        run_extraction(cfg)
    assert "not an attncmp reference checkpoint" in str(e.value) and "\n" not in str(e.value)


def test_cli_original_spelling_with_the_reference_adapter(ckpts, tmp_path) -> None:
    save = tmp_path / "attention_comparison"
    args = [
        "extract", "--checkpoint_full", str(ckpts["full"]),
        "--checkpoint_no_middle", str(ckpts["no_middle"]),
        "--save_dir", str(save), "--num_samples", "4", "--batch_size", "2",
    ]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "extracted 4 samples" in r.output and "2 models (full, no_middle)" in r.output
    with open_store(save / "attention_store.h5") as st:
        assert st.models == ["full", "no_middle"] and st.baseline == "full"
        assert st.n_samples == 4


def test_reference_pools_valid_and_test_with_sample_types(ckpts, tmp_path) -> None:
    from attncmp.extract.reference.data import load_freesolv, sample_type

    res = run_extraction(_cfg(ckpts, tmp_path / "vt.h5", split="valid,test", batch_size=64))
    full = load_checkpoint(ckpts["full"])
    want = {i: "val" for i in full.split["val"]} | {i: "test" for i in full.split["test"]}
    mols = {m.id: m for m in load_freesolv()}
    with open_store(res.path) as st:
        f = st.samples_frame()
        assert dict(zip(f["sample_id"], f["split"], strict=True)) == want  # each keeps its split
        types = dict(zip(f["sample_id"], f["meta_sample_type"], strict=True))
    assert types == {i: sample_type(mols[i]) for i in want}
    assert set(types.values()) == {"halogenated", "aromatic", "other"}
    # the types mean what they say
    for i, t in types.items():
        halo = bool({"F", "Cl", "Br", "I"} & set(mols[i].elements))
        assert (t == "halogenated") == halo
        if t == "other":
            assert not mols[i].atom_features[:, 4].any()
