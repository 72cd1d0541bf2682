"""The three attention capture helpers, each on a real module."""

from __future__ import annotations

import math

import pytest
import torch
from attncmp.extract.capture import capture_mha, get_key_path, stack_cross_attentions
from attncmp.extract.errors import CaptureError, KeyPathError
from torch import nn

from .toy import SAMPLES, ToyDictModel, ToyMHAModel, collate, one_torch_thread  # noqa: F401


def _batch(ids=("S026", "S027", "S028")):
    return collate([SAMPLES[i] for i in ids])


# ---------------------------------------------------------------------------------------------
# 1. key path
# ---------------------------------------------------------------------------------------------
def test_key_path_reads_the_original_models_output() -> None:
    torch.manual_seed(0)
    model = ToyDictModel().eval()
    b = _batch()
    out = model(b)
    att = get_key_path(out, "fine_grained_attention_weights.atom_to_text")
    assert att is out["fine_grained_attention_weights"]["atom_to_text"]
    assert att.shape == (3, 2, b["elem"].shape[1], b["tok"].shape[1])  # [B, H, N, T]


def test_key_path_miss_lists_the_keys_that_exist() -> None:
    out = {"prediction": 1, "fine_grained_attention_weights": {"atom_to_text": 2}}
    with pytest.raises(KeyPathError) as e:
        get_key_path(out, "fine_grained_attention_weights.atom_to_txt")
    msg = str(e.value)
    assert "'atom_to_txt' not found under fine_grained_attention_weights" in msg
    assert "['atom_to_text']" in msg and "\n" not in msg
    with pytest.raises(KeyPathError, match=r"keys there: \['prediction', 'fine_grained"):
        get_key_path(out, "middle_fusion_attention.atom_to_text")


def test_key_path_follows_attributes_indices_and_reports_none() -> None:
    class Out:
        def __init__(self) -> None:
            self.cross_attentions = (torch.zeros(1), torch.ones(1))
            self.attentions = None

    assert get_key_path(Out(), "cross_attentions.1").item() == 1.0
    assert get_key_path({"a": [0, {"b": 5}]}, ["a", "1", "b"]) == 5
    with pytest.raises(KeyPathError, match="'attentions' is None"):
        get_key_path(Out(), "attentions.0")
    with pytest.raises(KeyPathError, match=r"'7' not found under cross_attentions .*\['0', '1'\]"):
        get_key_path(Out(), "cross_attentions.7")


# ---------------------------------------------------------------------------------------------
# 2. hooks on nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------
def _manual_mha(attn: nn.MultiheadAttention, q, k, key_padding_mask) -> torch.Tensor:
    """Per-head weights [B, H, Q, K] computed by hand from the module's parameters."""
    E, H = attn.embed_dim, attn.num_heads
    w_q, w_k, _ = attn.in_proj_weight.split(E)
    b_q, b_k, _ = attn.in_proj_bias.split(E)
    B, Q, _ = q.shape
    K = k.shape[1]
    qq = (q @ w_q.T + b_q).view(B, Q, H, E // H).transpose(1, 2)  # [B, H, Q, Dh]
    kk = (k @ w_k.T + b_k).view(B, K, H, E // H).transpose(1, 2)  # [B, H, K, Dh]
    s = qq @ kk.transpose(-1, -2) / math.sqrt(E // H)  # [B, H, Q, K]
    s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(s, dim=-1)


def test_capture_mha_records_per_head_weights_without_changing_the_model() -> None:
    torch.manual_seed(0)
    model = ToyMHAModel(layers=2).eval()
    b = _batch()
    args = (b["elem"], b["node_mask"], b["tok"], b["token_mask"])
    hooks_before = {
        n: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for n, m in model.named_modules()
    }
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(*args)
        # record the inputs of the first cross layer to recompute its weights by hand
        seen = {}
        h0 = model.cross[0].register_forward_pre_hook(
            lambda m, a, kw: seen.update(q=a[0], k=a[1], kpm=kw["key_padding_mask"]),
            with_kwargs=True,
        )
        with capture_mha(model, "cross.*") as cap:
            pred = model(*args)
        h0.remove()
    assert cap.names == ["cross.0", "cross.1"]  # the self-attention is not selected
    att = cap.stacked()
    B, N, T = 3, b["elem"].shape[1], b["tok"].shape[1]
    assert att.shape == (B, 2, 2, N, T)  # [B, L, H, Q, K]
    torch.testing.assert_close(
        att[:, 0],
        _manual_mha(model.cross[0], seen["q"], seen["k"], seen["kpm"]),
        atol=1e-5,
        rtol=1e-5,
    )
    # the model computes the same thing, and is unchanged afterwards
    torch.testing.assert_close(pred, ref, atol=1e-6, rtol=1e-6)
    hooks_after = {
        n: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for n, m in model.named_modules()
    }
    assert hooks_after == hooks_before
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(model(*args), ref)


def test_capture_mha_returns_what_the_caller_asked_for() -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        out_avg, w_avg = attn(x, x, x)  # default: averaged weights
        with capture_mha(attn, "") as cap:  # the root module has the empty name
            out2, w2 = attn(x, x, x)  # caller wants averaged weights -> still gets them
            out3, w3 = attn(x, x, x, None, False)  # positional need_weights=False -> None
    torch.testing.assert_close(w2, w_avg)
    torch.testing.assert_close(out2, out_avg)
    assert w3 is None
    torch.testing.assert_close(out3, out_avg)
    per_head = cap.weights[""]
    assert len(per_head) == 2 and per_head[0].shape == (2, 4, 5, 5)
    torch.testing.assert_close(per_head[0].mean(1), w_avg)


def test_capture_mha_hooks_are_removed_when_the_forward_fails() -> None:
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(RuntimeError):
        with capture_mha(attn, lambda name, m: True):
            attn(torch.randn(1, 3, 8), torch.randn(1, 4, 7), torch.randn(1, 4, 7))  # bad dims
    assert not attn._forward_hooks and not attn._forward_pre_hooks


def test_capture_mha_no_match_lists_the_modules() -> None:
    model = ToyMHAModel(layers=1)
    with pytest.raises(CaptureError, match=r"matches 'decoder\.\*'.*\['cross\.0', 'self_attn'\]"):
        with capture_mha(model, "decoder.*"):
            pass
    with capture_mha(model, "cross.*") as cap:
        pass
    with pytest.raises(CaptureError, match="was not called"):
        cap.stacked()


# ---------------------------------------------------------------------------------------------
# 3. Hugging Face cross_attentions
# ---------------------------------------------------------------------------------------------
def test_stack_cross_attentions_from_a_random_bert_decoder() -> None:
    pytest.importorskip("transformers")
    from .toy import ToyBert

    torch.manual_seed(0)
    model = ToyBert().eval()
    b = _batch()
    with torch.no_grad():
        _, out = model(b["elem"], b["node_mask"], b["tok"], b["token_mask"])
    att = stack_cross_attentions(out.cross_attentions)
    B, N, T = 3, b["elem"].shape[1], b["tok"].shape[1]
    assert att.shape == (B, 2, 2, T, N)  # [B, L, H, Q=tokens, K=nodes]
    for layer in range(2):
        assert torch.equal(att[:, layer], out.cross_attentions[layer])
    # padded node keys get no weight; valid rows sum to 1
    assert torch.all(att.masked_select(~b["node_mask"][:, None, None, None, :]) == 0)
    torch.testing.assert_close(att.sum(-1), torch.ones(B, 2, 2, T))
    with pytest.raises(CaptureError, match="output_attentions=True"):
        stack_cross_attentions(None)
    with pytest.raises(CaptureError, match="eager"):
        stack_cross_attentions((att[:, 0], None))
