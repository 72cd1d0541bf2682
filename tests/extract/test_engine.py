"""The extraction engine end to end with real (tiny) modules and real stores, in process."""

from __future__ import annotations

import errno
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from attncmp.extract.adapter import ForwardOutput, resolve_adapter
from attncmp.extract.engine import (
    INVALID_META_COLUMN,
    ExtractConfig,
    _attention_stats,
    flat_attention_stats,
    gather_valid,
    parse_shard,
    run_extraction,
    select_samples,
    shard_path,
)
from attncmp.extract.errors import (
    AdapterError,
    AttentionShapeError,
    CheckpointLoadError,
    ExtractError,
    InvalidAttentionError,
    LengthMismatchError,
    SelectionError,
    StoreWriteError,
)
from attncmp.store import StoreConfigMismatch, StoreWriter, open_store
from attncmp.store.validate import validate_store

from .toy import (  # noqa: F401 - one_torch_thread is an autouse fixture
    SAMPLES,
    ToyAdapter,
    assert_same_store,
    build,
    collate,
    one_torch_thread,
    save_checkpoint,
)

TEST_IDS = [f"S{i:03d}" for i in range(26, 40)]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {
        "dict_a": save_checkpoint(d / "dict_a.pt", "dict", seed=0),
        "dict_b": save_checkpoint(d / "dict_b.pt", "dict", seed=1, middle=False),
        "dict_eos": save_checkpoint(d / "dict_eos.pt", "dict", seed=1, eos=True),
        "dict_nan": save_checkpoint(d / "dict_nan.pt", "dict", seed=1, broken="nan"),
        "dict_unmasked": save_checkpoint(d / "dict_unm.pt", "dict", seed=1, broken="unmasked"),
        "mha_a": save_checkpoint(d / "mha_a.pt", "mha", seed=0),
        "mha_b": save_checkpoint(d / "mha_b.pt", "mha", seed=1),
    }


def _cfg(ckpts, out, a="dict_a", b="dict_b", **kw) -> ExtractConfig:
    kw.setdefault("batch_size", 4)
    kw.setdefault("quiet", True)
    kw.setdefault("adapter", ToyAdapter())
    kw.setdefault("commit_every", 0.0)  # one commit per batch: crash tests count batches
    return ExtractConfig(
        models=[("full", str(ckpts[a])), ("no_middle", str(ckpts[b]))], out=out, **kw
    )


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mask", "index", "slices", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gather_valid_concatenates_each_samples_valid_block(method: str, dtype) -> None:
    rng = np.random.default_rng(0)
    B, L, H, Qp, Kp = 5, 2, 3, 7, 9
    att = torch.from_numpy(rng.random((B, L, H, Qp, Kp)).astype(np.float32)).to(dtype)
    att = att.transpose(3, 4).contiguous().transpose(3, 4)  # a strided (non-C-order) view too
    nq = np.array([7, 1, 3, 5, 2])
    nk = np.array([2, 9, 9, 1, 4])
    flat = gather_valid(att, nq, nk, method=method)
    want = torch.cat([att[b, :, :, : nq[b], : nk[b]].reshape(-1) for b in range(B)])
    assert flat.dtype == dtype
    assert torch.equal(flat, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_flat_attention_stats_equal_the_device_statistics(dtype) -> None:
    """The CPU path's host statistics (from the gathered store-dtype weights) flag exactly what
    the device statistics of the padded tensor flag, with the same values."""
    rng = np.random.default_rng(1)
    B, L, H, Qp, Kp = 9, 2, 3, 6, 8
    x = rng.random((B, L, H, Qp, Kp)).astype(np.float32)
    att = torch.softmax(torch.from_numpy(x) * 4, dim=-1)
    nq = np.array([6, 1, 3, 5, 2, 6, 4, 2, 3])
    nk = np.array([8, 8, 3, 1, 4, 8, 5, 2, 7])
    # renormalise each sample's valid rows, then plant problems in valid positions
    for b in range(B):
        blk = att[b, :, :, : nq[b], : nk[b]]
        att[b, :, :, : nq[b], : nk[b]] = blk / blk.sum(-1, keepdim=True)
    att[1, 0, 1, 0, 3] = float("nan")
    att[2, 1, 2, 2, 0] = float("inf")
    att[3, 0, 0, 4, 0] = -0.25
    att[4, 1, 0, 1, 1] += 0.3
    att[6, 0, 2, 3, 4] = float("-inf")
    att[7, :, :, :, :] = 0.0  # rows of zeros: |sum - 1| = 1
    att[0, 0, 0, 5, 7] = float("nan")  # the last valid weight of sample 0 (6 x 8)
    att[2, 0, 0, 5, 7] = float("nan")  # padding of sample 2 (3 x 3): must not count
    a = att.to(dtype)
    nq_t, nk_t = torch.from_numpy(nq), torch.from_numpy(nk)
    dev = _attention_stats(a, nq_t, nk_t).numpy()
    host = flat_attention_stats(gather_valid(a, nq, nk, method="mask").numpy(), L * H, nq, nk)
    assert host.shape == (B, 3) and host.dtype == np.float32
    np.testing.assert_array_equal(host[:, 0], dev[:, 0])  # non-finite flags
    np.testing.assert_allclose(host[:, 1], dev[:, 1], rtol=1e-5, atol=1e-6)  # max |sum - 1|
    neg = dev[:, 2] < 0  # the device minimum includes padded zeros; negatives are the same
    np.testing.assert_array_equal(host[:, 2] < 0, neg)
    np.testing.assert_allclose(host[neg, 2], dev[neg, 2])
    assert host[0, 0] == 1 and host[1, 0] == 1 and host[2, 0] == 1 and host[6, 0] == 1
    assert host[3, 2] == pytest.approx(-0.25, abs=1e-3) and host[6, 2] == -1.0
    assert host[4, 1] == pytest.approx(0.3, abs=1e-3) and host[7, 1] == 1.0
    assert host[5, 0] == 0 and host[5, 1] < 1e-2 and host[5, 2] >= 0


def test_select_samples_is_seeded_ordered_and_explicit() -> None:
    ids = [f"x{i}" for i in range(50)]
    a = select_samples(ids, 10, seed=3, split="test")
    assert a == select_samples(ids, 10, seed=3, split="test")
    assert a != select_samples(ids, 10, seed=4, split="test")
    assert a == sorted(a, key=ids.index) and len(set(a)) == 10
    assert select_samples(ids, None, 0, "test") == ids
    with pytest.raises(SelectionError, match="--num-samples 51 but split 'test' has only 50"):
        select_samples(ids, 51, 0, "test")


def test_shards_parse_from_flag_or_torchrun_env() -> None:
    assert parse_shard("1/4") == (1, 4)
    assert parse_shard(None, {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    assert parse_shard(None, {}) == (0, 1)
    with pytest.raises(ExtractError, match="expected i/n"):
        parse_shard("1-4")
    with pytest.raises(ExtractError, match="0 <= i < n"):
        parse_shard("4/4")
    assert shard_path("out/a.h5", 1, 2).name == "a.shard-01-of-02.h5"
    assert shard_path("out/a.h5", 0, 1).name == "a.h5"


# ---------------------------------------------------------------------------------------------
# capture methods end to end: padding never reaches the store
# ---------------------------------------------------------------------------------------------
def _direct(kind_ckpt: Path, ids: list[str]):
    """The model's own padded output on one batch of all ``ids`` (other padding than the run)."""
    ad = ToyAdapter()
    h = ad.load_model(str(kind_ckpt), torch.device("cpu"), False)
    with torch.no_grad():
        out = ad.forward(h, ad.make_batch(ids, None), torch.device("cpu"))
    return next(iter(out.attention.values())), out.predictions


@pytest.mark.parametrize("kind", ["dict", "mha", "bert"])
def test_each_capture_method_stores_exactly_the_valid_region(kind, ckpts, tmp_path) -> None:
    if kind == "bert":
        pytest.importorskip("transformers")
        a = save_checkpoint(tmp_path / "bert_a.pt", "bert", seed=0)
        b = save_checkpoint(tmp_path / "bert_b.pt", "bert", seed=1)
    else:
        a, b = ckpts[f"{kind}_a"], ckpts[f"{kind}_b"]
    out = tmp_path / "s.h5"
    res = run_extraction(
        ExtractConfig(
            models=[("a", str(a)), ("b", str(b))],
            adapter=ToyAdapter(),
            out=out,
            batch_size=4,
            dtype="float32",
            quiet=True,
        )
    )
    assert res.n_committed == res.n_planned == len(TEST_IDS) and res.n_written == len(TEST_IDS)
    report = validate_store(out)  # the store package's own validator agrees
    assert report.ok, report.summary()
    padded = {m: _direct(p, TEST_IDS) for m, p in (("a", a), ("b", b))}
    with open_store(out) as st:
        assert st.ids == TEST_IDS
        (site,) = st.sites()
        info = st.sites()[site]
        for j, sid in enumerate(TEST_IDS):
            s = SAMPLES[sid]
            n_nodes, n_tokens = len(s["elements"]), len(s["tokens"])
            nq, nk = (n_tokens, n_nodes) if kind == "bert" else (n_nodes, n_tokens)
            assert (info.query_axis, info.key_axis) == (
                ("tokens", "nodes") if kind == "bert" else ("nodes", "tokens")
            )
            for m in ("a", "b"):
                att, pred = padded[m]
                if att.dim() == 4:
                    att = att[:, None]
                stored = st.attention(m, site, sid)  # [L, H, nq, nk]
                assert stored.shape == (info.n_layers, info.n_heads, nq, nk)
                np.testing.assert_allclose(stored, att[j, :, :, :nq, :nk].numpy(), atol=1e-6)
                np.testing.assert_allclose(st.prediction_array(m)[j, 0], pred[j].item(), atol=1e-5)
            smp = st.sample(sid, with_attention=False)
            assert smp.node_labels == s["elements"] and smp.tokens == s["tokens"]
            assert smp.special.tolist() == [t.startswith("[") for t in s["tokens"]]
            assert smp.gold is not None and smp.gold.shape == (n_nodes, n_tokens)
            assert smp.split == "test" and smp.meta["n_words"] == n_tokens - 2
        prov = st.provenance("a")
        assert len(prov["checkpoint_sha256"]) == 64 and prov["adapter"] == "toy"
        assert prov["config"]["kind"] == kind and prov["versions"]["torch"] == torch.__version__
        assert st.config["split"] == "test" and st.selection_seed == 0


def test_padded_rows_exist_in_the_model_output_but_not_in_the_store(ckpts, tmp_path) -> None:
    """The original model leaves padded atom rows unmasked: they are finite, non-zero rows that a
    careless consumer would count. The store's size is exactly the sum of the valid blocks."""
    att, _ = _direct(ckpts["dict_a"], TEST_IDS)  # [B, H, N, T]
    nn_ = np.array([len(SAMPLES[i]["elements"]) for i in TEST_IDS])
    nt = np.array([len(SAMPLES[i]["tokens"]) for i in TEST_IDS])
    j = int(np.argmin(nn_))
    assert att[j, :, nn_[j] :, : nt[j]].abs().sum() > 0  # padded rows carry weight
    run_extraction(_cfg(ckpts, tmp_path / "s.h5", dtype="float32"))
    with open_store(tmp_path / "s.h5") as st:
        ch = st.read_site("atom_to_text", np.arange(len(TEST_IDS)))
        assert ch.blocks["full"].data.size == int((2 * nn_ * nt).sum())


# ---------------------------------------------------------------------------------------------
# guarantees
# ---------------------------------------------------------------------------------------------
def test_length_mismatch_names_the_sample_and_the_variants(ckpts, tmp_path) -> None:
    with pytest.raises(LengthMismatchError) as e:
        run_extraction(_cfg(ckpts, tmp_path / "s.h5", b="dict_eos"))
    msg = str(e.value)
    assert "sample 'S026'" in msg and "full has" in msg and "no_middle has" in msg
    assert "\n" not in msg


def test_training_samples_are_refused_unless_allowed(ckpts, tmp_path) -> None:
    with pytest.raises(SelectionError, match=r"used to train model 'full'.*--allow-training"):
        run_extraction(_cfg(ckpts, tmp_path / "a.h5", split="train"))
    assert not (tmp_path / "a.h5").exists()
    res = run_extraction(
        _cfg(ckpts, tmp_path / "b.h5", split="train", num_samples=5, allow_training_samples=True)
    )
    with open_store(res.path) as st:
        assert st.split_column() == ["train"] * 5
        assert st.config["allow_training_samples"] is True
        assert st.config["training_samples_selected"] == {"full": 5, "no_middle": 5}


def test_a_different_configuration_refuses_to_append(ckpts, tmp_path) -> None:
    out = tmp_path / "s.h5"
    run_extraction(_cfg(ckpts, out, num_samples=6))
    before = open_store(out)
    n = before.n_samples
    before.close()
    with pytest.raises(StoreConfigMismatch, match="dtype"):
        run_extraction(_cfg(ckpts, out, num_samples=6, dtype="float32"))
    with pytest.raises(StoreConfigMismatch, match="seed"):
        run_extraction(_cfg(ckpts, out, num_samples=6, seed=1))
    with pytest.raises(StoreConfigMismatch, match="sha256"):
        run_extraction(_cfg(ckpts, out, num_samples=6, b="dict_eos"))
    with open_store(out) as st:
        assert st.n_samples == n
    again = run_extraction(_cfg(ckpts, out, num_samples=6))  # same config: nothing left to do
    assert again.n_written == 0 and again.complete


class _CrashAt(ToyAdapter):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def make_batch(self, ids, root_dir):
        if self.calls + 1 == self.at:
            raise RuntimeError("simulated crash")
        return super().make_batch(ids, root_dir)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_after_an_error_continues_and_matches_an_uninterrupted_run(
    prefetch, ckpts, tmp_path
) -> None:
    whole = tmp_path / "whole.h5"
    # the same adapter class as the crashed run (it never crashes at 0): the provenance records
    # the adapter's source file and its sha256, which the resumed store keeps from its first run
    run_extraction(_cfg(ckpts, whole, adapter=_CrashAt(0)))
    out = tmp_path / "resumed.h5"
    with pytest.raises(AdapterError, match=r"make_batch\(\) failed: RuntimeError: simulated crash"):
        run_extraction(_cfg(ckpts, out, adapter=_CrashAt(3), prefetch=prefetch))
    with open_store(out) as st:
        assert st.n_samples == 8  # the two batches computed before the error are committed
    res = run_extraction(_cfg(ckpts, out, prefetch=prefetch, commit_every=60.0))
    assert res.resumed_from == 8 and res.n_written == len(TEST_IDS) - 8
    assert_same_store(whole, out)


def test_invalid_attention_fails_by_default_and_is_recorded_with_warn(ckpts, tmp_path) -> None:
    with pytest.raises(InvalidAttentionError) as e:
        run_extraction(_cfg(ckpts, tmp_path / "a.h5", b="dict_nan"))
    assert "sample 'S026', model 'no_middle', site 'atom_to_text': NaN/Inf" in str(e.value)
    with pytest.raises(InvalidAttentionError, match="rows not summing to 1"):
        run_extraction(_cfg(ckpts, tmp_path / "b.h5", b="dict_unmasked"))
    res = run_extraction(_cfg(ckpts, tmp_path / "c.h5", b="dict_unmasked", on_invalid="warn"))
    assert res.complete and res.invalid
    with open_store(res.path) as st:
        col = dict(zip(st.ids, st.meta_column(INVALID_META_COLUMN), strict=True))
    assert set(res.invalid) == {k for k, v in col.items() if v}
    assert all(v.startswith("no_middle/atom_to_text: rows not summing") for v in col.values() if v)


def test_out_of_disk_space_is_one_line_and_keeps_committed_samples(
    ckpts, tmp_path, monkeypatch
) -> None:
    real = StoreWriter.append
    calls = {"n": 0}

    def append(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, batch)

    monkeypatch.setattr(StoreWriter, "append", append)
    out = tmp_path / "s.h5"
    with pytest.raises(StoreWriteError) as e:
        run_extraction(_cfg(ckpts, out))
    msg = str(e.value)
    assert "No space left on device" in msg and "4 committed samples are preserved" in msg
    assert "re-run the same command" in msg and "\n" not in msg
    monkeypatch.setattr(StoreWriter, "append", real)
    with open_store(out) as st:
        assert st.n_samples == 4
    assert run_extraction(_cfg(ckpts, out)).complete


def test_shards_are_disjoint_blocks_that_together_equal_one_run(ckpts, tmp_path) -> None:
    single = run_extraction(_cfg(ckpts, tmp_path / "one.h5", dtype="float32"))
    paths = [
        run_extraction(_cfg(ckpts, tmp_path / "s.h5", dtype="float32", shard=f"{i}/2")).path
        for i in range(2)
    ]
    assert [p.name for p in paths] == ["s.shard-00-of-02.h5", "s.shard-01-of-02.h5"]
    with open_store(paths[0]) as a, open_store(paths[1]) as b:
        assert not set(a.ids) & set(b.ids) and a.ids + b.ids == TEST_IDS
    with open_store(paths) as both, open_store(single.path) as one:
        assert both.ids == one.ids
        for sid in one.ids:
            np.testing.assert_allclose(
                both.attention("full", "atom_to_text", sid),
                one.attention("full", "atom_to_text", sid),
                atol=1e-6,
            )


# ---------------------------------------------------------------------------------------------
# adapter and checkpoint errors: one line each
# ---------------------------------------------------------------------------------------------
def test_adapter_resolution_errors_are_one_line() -> None:
    cases = [
        ("no_such_pkg.mod:Adapter", "module 'no_such_pkg.mod' is not importable"),
        ("tests.extract.toy:Nope", "has no attribute 'Nope'"),
        ("tests.extract.toy:ToyDictModel", "lacks required method(s) load_model, sites"),
        ("missing/file.py:A", "file missing/file.py does not exist"),
        ("justaname", "expected 'reference', 'package.module:object'"),
    ]
    for spec, want in cases:
        with pytest.raises(AdapterError) as e:
            resolve_adapter(spec)
        assert want in str(e.value) and "\n" not in str(e.value), spec
    obj, label = resolve_adapter("tests.extract.toy:ToyAdapter")
    assert isinstance(obj, ToyAdapter) and label == "tests.extract.toy:ToyAdapter"


@dataclass
class _Broken(ToyAdapter):
    mode: str = "shape"

    def __post_init__(self) -> None:
        super().__init__()

    def forward(self, h, batch, device):
        out = super().forward(h, batch, device)
        if self.mode == "shape":
            return ForwardOutput(
                {"atom_to_text": out.attention["atom_to_text"].transpose(-1, -2)}, out.predictions
            )
        if self.mode == "preds":
            return ForwardOutput(out.attention, out.predictions[:-1])
        if self.mode == "site":
            return ForwardOutput({"other": out.attention["atom_to_text"]}, out.predictions)
        if self.mode == "describe":
            return out
        raise ValueError("boom\nsecond line")

    def describe(self, batch):
        infos = super().describe(batch)
        if self.mode == "describe":  # re-tokenised differently from the model: [SEP] lost
            for i in infos:
                i.tokens, i.special, i.gold = i.tokens[:-1], i.special[:-1], i.gold[:, :-1]
        return infos


@pytest.mark.parametrize(
    "mode, err, want",
    [
        ("shape", AttentionShapeError, "site 'atom_to_text': attention has shape [4, 1, 2, "),
        ("preds", AttentionShapeError, "predictions have shape [3], expected [4]"),
        ("site", AttentionShapeError, "returned no attention for site 'atom_to_text'"),
        ("raise", AdapterError, "forward() for model 'full' failed: ValueError: boom"),
        ("describe", LengthMismatchError, "describe() must use the model's own tokenisation"),
    ],
)
def test_adapter_returning_bad_output_is_one_clear_line(mode, err, want, ckpts, tmp_path) -> None:
    with pytest.raises(err) as e:
        run_extraction(_cfg(ckpts, tmp_path / "s.h5", adapter=_Broken(mode)))
    assert want in str(e.value) and "\n" not in str(e.value)


class PickledConfig:  # stands in for the original checkpoints' pickled config object
    def __init__(self) -> None:
        self.middle = True


def test_pickled_checkpoints_need_trust_checkpoint(ckpts, tmp_path) -> None:
    torch.manual_seed(0)
    p = tmp_path / "pickled.pt"
    torch.save(
        {
            "kind": "dict",
            "config": {},
            "state_dict": build("dict", {}).state_dict(),
            "split": {"train": []},
            "pickled_config": PickledConfig(),
        },
        p,
    )
    cfg = ExtractConfig(
        models=[("full", str(p)), ("no_middle", str(ckpts["dict_b"]))],
        adapter=ToyAdapter(),
        out=tmp_path / "s.h5",
        quiet=True,
    )
    with pytest.raises(CheckpointLoadError) as e:
        run_extraction(cfg)
    assert "model 'full'" in str(e.value) and "--trust-checkpoint" in str(e.value)
    assert not (tmp_path / "s.h5").exists()
    cfg.trust_checkpoint = True
    res = run_extraction(cfg)
    with open_store(res.path) as st:
        assert st.provenance("full")["trust_checkpoint"] is True
        assert st.config["trust_checkpoint"] is True


def test_missing_and_corrupt_checkpoints_are_one_line(ckpts, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(pickle.dumps("not a zip")[:5])
    for path, want in [(tmp_path / "nope.pt", "does not exist"), (bad, "cannot be loaded")]:
        cfg = ExtractConfig(
            models=[("full", str(path)), ("b", str(ckpts["dict_b"]))],
            adapter=ToyAdapter(),
            out=tmp_path / "s.h5",
            quiet=True,
        )
        with pytest.raises(CheckpointLoadError) as e:
            run_extraction(cfg)
        assert want in str(e.value) and "model 'full'" in str(e.value)
        assert "\n" not in str(e.value)


def test_collate_pads_with_valid_positions_first() -> None:
    b = collate([SAMPLES["S026"], SAMPLES["S027"]])
    assert b["node_mask"].sum(1).tolist() == [len(SAMPLES[i]["elements"]) for i in ("S026", "S027")]


def test_progress_bar_and_torchrun_environment(ckpts, tmp_path, monkeypatch) -> None:
    import io

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    stream = io.StringIO()
    before = torch.random.get_rng_state()
    res = run_extraction(_cfg(ckpts, tmp_path / "s.h5", quiet=False, progress_stream=stream))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert res.path.name == "s.shard-01-of-02.h5" and res.shard == (1, 2)
    with open_store(res.path) as st:
        assert st.ids == TEST_IDS[7:]
    last = stream.getvalue().strip().splitlines()[-1]
    assert "7/7 samples" in last and "samples/s" in last and "ETA" in last
    summary = res.summary()
    for part in (
        "extracted 7 samples shard 1/2",
        "2 models (full, no_middle)",
        "1 site (atom_to_text)",
        " s (",
        "KiB",
    ):
        assert part in summary, summary
