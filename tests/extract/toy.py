"""Tiny real models and one adapter for the extraction tests (CPU, milliseconds per batch).

Three model kinds, one per capture method:

- ``dict``: graph + text in the original style; ``forward(batch)`` returns
  ``{"prediction": [B], "fine_grained_attention_weights": {"atom_to_text": [B, H, N, T]}}`` with the
  padded atom rows left unmasked (captured by key path);
- ``mha``: node -> token cross-attention built from ``torch.nn.MultiheadAttention`` layers that
  ask for no weights (captured by forward hooks);
- ``bert``: a randomly initialised Hugging Face BERT decoder with ``add_cross_attention=True``;
  tokens attend over node embeddings (captured from ``cross_attentions``).

Samples are generated from a seed (no files); ``root_dir`` is ignored. Checkpoints are plain dicts
(``torch.load(weights_only=True)`` reads them) and record the training split.

Test hooks (environment): ``ATTNCMP_TOY_KILL_AT=k`` SIGKILLs the process in the k-th
``make_batch`` call; ``ATTNCMP_TOY_SLOW=s`` sleeps ``s`` seconds per ``make_batch``.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from attncmp.extract.adapter import ForwardOutput, SampleInfo
from attncmp.extract.capture import capture_mha, get_key_path, stack_cross_attentions
from attncmp.extract.checkpoint import load_torch_checkpoint
from attncmp.store import SiteSpec
from torch import nn

ELEMENTS = ["C", "N", "O", "F", "Cl"]
WORDS = ["methyl", "ethyl", "chloro", "fluoro", "benz", "ol", "one", "di", "tri", "amine"]
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[EOS]", *WORDS]
TOK = {t: i for i, t in enumerate(VOCAB)}
N_SAMPLES = 40
SPLIT = {"train": (0, 20), "val": (20, 26), "test": (26, 40)}
D, HEADS = 16, 2


def toy_samples(n: int = N_SAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        n_atoms = int(rng.integers(2, 9))
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 6))))
        split = next(k for k, (a, b) in SPLIT.items() if a <= i < b)
        out.append(
            {
                "id": f"S{i:03d}",
                "elements": [str(e) for e in rng.choice(ELEMENTS, size=n_atoms)],
                "tokens": ["[CLS]", *[str(w) for w in words], "[SEP]"],
                "target": float(rng.normal()),
                "split": split,
            }
        )
    return out


SAMPLES = {s["id"]: s for s in toy_samples()}


def gold_of(sample: dict[str, Any]) -> np.ndarray:
    el, tok = sample["elements"], sample["tokens"]
    g = np.zeros((len(el), len(tok)), dtype=bool)
    for a, e in enumerate(el):
        for t, w in enumerate(tok):
            g[a, t] = (e, w) in {("Cl", "chloro"), ("F", "fluoro")}
    return g


def collate(samples: list[dict[str, Any]], eos: bool = False) -> dict[str, Any]:
    B = len(samples)
    N = max(len(s["elements"]) for s in samples)
    toks = [s["tokens"] + (["[EOS]"] if eos else []) for s in samples]
    T = max(len(t) for t in toks)
    elem = torch.zeros(B, N, dtype=torch.long)
    node_mask = torch.zeros(B, N, dtype=torch.bool)
    tok = torch.zeros(B, T, dtype=torch.long)
    token_mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (s, t) in enumerate(zip(samples, toks, strict=True)):
        elem[b, : len(s["elements"])] = torch.tensor([ELEMENTS.index(e) for e in s["elements"]])
        node_mask[b, : len(s["elements"])] = True
        tok[b, : len(t)] = torch.tensor([TOK[w] for w in t])
        token_mask[b, : len(t)] = True
    return {"elem": elem, "node_mask": node_mask, "tok": tok, "token_mask": token_mask}


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class ToyDictModel(nn.Module):
    """Original style: returns the output dict with per-head node -> token attention."""

    def __init__(self, middle: bool = True, broken: str = "") -> None:
        super().__init__()
        self.middle, self.broken = middle, broken
        self.node = nn.Embedding(len(ELEMENTS), D)
        self.tok = nn.Embedding(len(VOCAB), D)
        self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.mid = nn.Linear(D, D)
        self.head = nn.Linear(D, 1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        h = self.node(batch["elem"])  # [B, N, D]
        t = self.tok(batch["tok"])  # [B, T, D]
        B, N, _ = h.shape
        T = t.shape[1]
        if self.middle:
            tm = batch["token_mask"][..., None].float()
            pooled = (t * tm).sum(1) / tm.sum(1)  # [B, D] over valid tokens
            h = h + torch.tanh(self.mid(pooled))[:, None]  # [B, N, D] broadcast to every node
        q = self.q(h).view(B, N, HEADS, D // HEADS).transpose(1, 2)  # [B, H, N, Dh]
        k = self.k(t).view(B, T, HEADS, D // HEADS).transpose(1, 2)  # [B, H, T, Dh]
        v = self.v(t).view(B, T, HEADS, D // HEADS).transpose(1, 2)  # [B, H, T, Dh]
        s = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)  # [B, H, N, T]
        if self.broken != "unmasked":
            s = s.masked_fill(~batch["token_mask"][:, None, None, :], float("-inf"))
        w = torch.softmax(s, dim=-1)  # padded atom rows are left as computed (finite)
        if self.broken == "nan":
            w = w.clone()
            w[0, 0, 0, 0] = float("nan")
        ctx = (w @ v).transpose(1, 2).reshape(B, N, D)  # [B, N, D]
        m = batch["node_mask"][..., None].float()
        pred = self.head(((h + ctx) * m).sum(1) / m.sum(1)).squeeze(-1)  # [B]
        return {"prediction": pred, "fine_grained_attention_weights": {"atom_to_text": w}}


class ToyMHAModel(nn.Module):
    """Node -> token cross-attention from nn.MultiheadAttention layers (asks for no weights)."""

    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.node = nn.Embedding(len(ELEMENTS), D)
        self.tok = nn.Embedding(len(VOCAB), D)
        self.cross = nn.ModuleList(
            [nn.MultiheadAttention(D, HEADS, batch_first=True) for _ in range(layers)]
        )
        self.self_attn = nn.MultiheadAttention(D, HEADS, batch_first=True)  # not captured
        self.head = nn.Linear(D, 1)

    def forward(self, elem, node_mask, tok, token_mask) -> torch.Tensor:
        h = self.node(elem)  # [B, N, D]
        t = self.tok(tok)  # [B, T, D]
        t = t + self.self_attn(t, t, t, key_padding_mask=~token_mask)[0]  # averaged weights unused
        for attn in self.cross:
            a, _ = attn(h, t, t, key_padding_mask=~token_mask, need_weights=False)  # [B, N, D]
            h = h + a
        m = node_mask[..., None].float()
        return self.head((h * m).sum(1) / m.sum(1)).squeeze(-1)  # [B]


class ToyBert(nn.Module):
    """A random BERT decoder whose tokens cross-attend over node embeddings."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=D,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            intermediate_size=2 * D,
            max_position_embeddings=32,
            is_decoder=True,
            add_cross_attention=True,
            attn_implementation="eager",
        )
        self.node = nn.Embedding(len(ELEMENTS), D)
        self.bert = BertModel(cfg)
        self.head = nn.Linear(D, 1)

    def forward(self, elem, node_mask, tok, token_mask):
        enc = self.node(elem)  # [B, N, D]
        out = self.bert(
            input_ids=tok,
            attention_mask=token_mask.long(),
            encoder_hidden_states=enc,
            encoder_attention_mask=node_mask.long(),
            output_attentions=True,
        )
        m = token_mask[..., None].float()
        pred = self.head((out.last_hidden_state * m).sum(1) / m.sum(1)).squeeze(-1)
        return pred, out


def build(kind: str, cfg: dict[str, Any]) -> nn.Module:
    if kind == "dict":
        return ToyDictModel(middle=cfg.get("middle", True), broken=cfg.get("broken", ""))
    if kind == "mha":
        return ToyMHAModel(layers=cfg.get("layers", 2))
    if kind == "bert":
        return ToyBert()
    raise ValueError(kind)


def save_checkpoint(path: Path, kind: str = "dict", seed: int = 0, **cfg: Any) -> Path:
    torch.manual_seed(seed)
    model = build(kind, cfg)
    ids = [s["id"] for s in toy_samples()]
    split = {k: ids[a:b] for k, (a, b) in SPLIT.items()}
    torch.save(
        {"kind": kind, "config": cfg, "state_dict": model.state_dict(), "split": split}, path
    )
    return path


# ---------------------------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------------------------
class Handle:
    def __init__(self, model: nn.Module, kind: str, cfg: dict[str, Any], split: dict) -> None:
        self.model, self.kind, self.cfg, self.split = model, kind, cfg, split


class ToyAdapter:
    """Adapter for all three toy kinds (the kind is read from the checkpoint)."""

    name = "toy"
    has_gold = True
    meta_columns = [("n_words", "int"), ("family", "str")]
    target_names = ("target",)

    def __init__(self) -> None:
        self.calls = 0

    def load_model(self, path: str, device: Any, trust_checkpoint: bool) -> Handle:
        ckpt = load_torch_checkpoint(path, "cpu", trust_checkpoint)
        model = build(ckpt["kind"], ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
        return Handle(model.to(device).eval(), ckpt["kind"], ckpt["config"], ckpt["split"])

    def model_info(self, h: Handle) -> dict[str, Any]:
        return {"kind": h.kind, **h.cfg}

    def training_ids(self, h: Handle) -> set[str]:
        return set(h.split["train"])

    def sites(self, h: Handle) -> list[SiteSpec]:
        if h.kind == "dict":
            return [SiteSpec("atom_to_text", "nodes", "tokens", 1, HEADS)]
        if h.kind == "mha":
            return [SiteSpec("cross", "nodes", "tokens", h.cfg.get("layers", 2), HEADS)]
        return [SiteSpec("cross", "tokens", "nodes", 2, HEADS)]

    def sample_ids(self, split: str, root_dir: str | None) -> list[str]:
        return [s["id"] for s in toy_samples() if s["split"] == split]

    def make_batch(self, ids: list[str], root_dir: str | None) -> dict[str, Any]:
        self.calls += 1
        if os.environ.get("ATTNCMP_TOY_KILL_AT") == str(self.calls):
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("ATTNCMP_TOY_SLOW"):
            time.sleep(float(os.environ["ATTNCMP_TOY_SLOW"]))
        samples = [SAMPLES[i] for i in ids]
        return {**collate(samples), "samples": samples}

    def describe(self, batch: dict[str, Any]) -> list[SampleInfo]:
        return [
            SampleInfo(
                id=s["id"],
                node_labels=s["elements"],
                tokens=s["tokens"],
                special=[t.startswith("[") for t in s["tokens"]],
                target=s["target"],
                split=s["split"],
                meta={"n_words": len(s["tokens"]) - 2, "family": s["elements"][0]},
                gold=gold_of(s),
            )
            for s in batch["samples"]
        ]

    def forward(self, h: Handle, batch: dict[str, Any], device: Any) -> ForwardOutput:
        if h.cfg.get("eos"):  # this variant's own tokenisation appends [EOS]
            batch = {k: v.to(device) for k, v in collate(batch["samples"], eos=True).items()}
        args = (batch["elem"], batch["node_mask"], batch["tok"], batch["token_mask"])
        if h.kind == "dict":
            out = h.model(batch)
            att = get_key_path(out, "fine_grained_attention_weights.atom_to_text")
            pred = out["prediction"]
        elif h.kind == "mha":
            with capture_mha(h.model, "cross.*") as cap:
                pred = h.model(*args)
            att = cap.stacked()  # [B, L, H, N, T]
        else:
            pred, out = h.model(*args)
            att = stack_cross_attentions(out.cross_attentions)  # [B, L, H, T, N]
        name = self.sites(h)[0].name
        return ForwardOutput(
            attention={name: att},
            predictions=pred,
            node_mask=batch["node_mask"],
            token_mask=batch["token_mask"],
        )


# ---------------------------------------------------------------------------------------------
# helpers for comparing stores
# ---------------------------------------------------------------------------------------------
def store_digest(path: str | Path) -> dict[str, Any]:
    """Every dataset's content and the root attributes (minus the creation time) of a store."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(visit)
        out["@root"] = {k: str(v) for k, v in f.attrs.items() if k != "created"}
        for m in f["models"]:
            out[f"@provenance/{m}"] = str(f["models"][m].attrs["provenance"])
    return out


def assert_same_store(a: str | Path, b: str | Path) -> None:
    da, db = store_digest(a), store_digest(b)
    assert sorted(da) == sorted(db)
    for k in da:
        if isinstance(da[k], np.ndarray):
            assert da[k].dtype == db[k].dtype, k
            assert np.array_equal(da[k], db[k], equal_nan=da[k].dtype.kind == "f"), k
        else:
            assert da[k] == db[k], k


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread is fastest (and fair under `pytest -n 2` on 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
