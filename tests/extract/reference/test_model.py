"""Reference model: output shapes, attention masking, per-node middle fusion, padding invariance."""

from __future__ import annotations

import pytest
import torch
from attncmp.extract.reference.data import load_freesolv
from attncmp.extract.reference.model import ReferenceModel, collate, variant_config
from attncmp.extract.reference.tokenizer import NameTokenizer


@pytest.fixture(scope="module")
def mols():
    return {m.name: m for m in load_freesolv()}


@pytest.fixture(scope="module")
def tok(mols):
    return NameTokenizer.train(list(mols))


def _model(tok, variant="full", **kw):
    torch.manual_seed(0)
    cfg = variant_config(variant, vocab_size=tok.vocab_size, pad_id=tok.pad_id, **kw)
    return ReferenceModel(cfg).eval()


NAMES = ["ammonia", "trichloro(nitro)methane", "2,3-dichlorodibenzo-p-dioxin", "ethanol"]


@pytest.mark.parametrize("variant", ["full", "no_middle"])
def test_output_shapes(mols, tok, variant):
    batch = collate([mols[n] for n in NAMES], tok)
    B, N, T = len(NAMES), int(batch.n_nodes.max()), int(batch.n_tokens.max())
    assert batch.node_feats.shape[:2] == (B, N) and batch.token_ids.shape == (B, T)
    with torch.no_grad():
        out = _model(tok, variant)(batch)
    assert out["prediction"].shape == (B,)
    assert out["fine_grained_attention_weights"]["atom_to_text"].shape == (B, 4, N, T)
    if variant == "full":
        assert out["middle_fusion_attention"]["atom_to_text"].shape == (B, 4, N, T)
    else:
        assert "middle_fusion_attention" not in out


def test_switches_remove_sites(mols, tok):
    batch = collate([mols[n] for n in NAMES], tok)
    with torch.no_grad():
        out = _model(tok, "full", fine_grained_attention=False, global_fusion=False)(batch)
    assert set(out) == {"prediction", "middle_fusion_attention"}
    assert torch.isfinite(out["prediction"]).all()


def test_collate_adjacency_and_masks(mols, tok):
    mol = mols["trichloro(nitro)methane"]
    batch = collate([mols["ammonia"], mol], tok)
    adj = batch.adjacency[1]
    assert torch.equal(adj, adj.T)
    assert int((adj > 0).sum()) == 2 * len(mol.bonds)
    assert batch.node_mask.sum(1).tolist() == [1, mol.n_atoms] == batch.n_nodes.tolist()
    assert batch.token_mask.sum(1).tolist() == batch.n_tokens.tolist()
    assert (batch.token_ids[~batch.token_mask] == tok.pad_id).all()
    assert batch.to("cpu").ids == batch.ids


@pytest.mark.parametrize("site", ["fine_grained_attention_weights", "middle_fusion_attention"])
def test_padded_tokens_get_exactly_zero_weight(mols, tok, site):
    batch = collate([mols[n] for n in NAMES], tok)
    with torch.no_grad():
        w = _model(tok)(batch)[site]["atom_to_text"]  # [B, H, N, T]
    assert w.dtype == torch.float32
    assert torch.isfinite(w).all()  # padded node rows too
    for b in range(len(NAMES)):
        n, t = int(batch.n_nodes[b]), int(batch.n_tokens[b])
        assert (w[b, :, :, t:] == 0).all()  # exactly zero, every row incl. padded nodes
        rows = w[b, :, :n, :t].sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-6, rtol=0)


def test_middle_fusion_is_per_node(mols, tok):
    mol = mols["trichloro(nitro)methane"]  # C N O O Cl Cl Cl
    batch = collate([mol], tok)
    with torch.no_grad():
        w = _model(tok)(batch)["middle_fusion_attention"]["atom_to_text"][0]  # [H, N, T]
    carbon, nitrogen = w[:, 0], w[:, 1]
    assert (carbon - nitrogen).abs().max() > 1e-3  # different nodes, different rows
    # and the rows are not all identical across the molecule
    assert (w - w[:, :1]).abs().amax(dim=(0, 2)).gt(1e-4).sum() >= mol.n_atoms - 1


def test_padding_does_not_change_a_sample(mols, tok):
    model = _model(tok)
    alone = collate([mols["ethanol"]], tok)
    padded = collate([mols["ethanol"], mols["2,3-dichlorodibenzo-p-dioxin"]], tok)
    with torch.no_grad():
        a, p = model(alone), model(padded)
    torch.testing.assert_close(a["prediction"][0], p["prediction"][0], atol=1e-5, rtol=1e-5)
    n, t = int(alone.n_nodes[0]), int(alone.n_tokens[0])
    for site in ("fine_grained_attention_weights", "middle_fusion_attention"):
        wa = a[site]["atom_to_text"][0, :, :n, :t]
        wp = p[site]["atom_to_text"][0, :, :n, :t]
        torch.testing.assert_close(wa, wp, atol=1e-6, rtol=1e-5)


def test_bad_variant():
    with pytest.raises(ValueError, match="no_middle"):
        variant_config("nope")
