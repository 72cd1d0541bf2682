"""Worked example: an attncmp adapter for a model in the *original* style.

The model here stands in for the user's own code: a graph + text model whose ``forward(batch)``
returns a dict with ``out["fine_grained_attention_weights"]["atom_to_text"]`` of shape
``[batch, heads, atoms, tokens]`` (padded atom rows left unmasked, padded token columns zero), and
whose checkpoints pickle an ``argparse.Namespace`` of hyper-parameters, as research code often
does (so they need ``--trust-checkpoint``). The adapter is the ~30 lines in
:class:`OriginalStyleAdapter`; nothing in the model is edited.

Try it::

    python examples/original_style_adapter.py /tmp/example        # data + two checkpoints
    attncmp extract --adapter examples/original_style_adapter.py:OriginalStyleAdapter \\
        --model full=/tmp/example/full.pt --model no_middle=/tmp/example/no_middle.pt \\
        --root-dir /tmp/example/data --trust-checkpoint --out /tmp/example/attention_store.h5

Data layout (``--root-dir``): ``samples.csv`` with columns ``id, split, elements, text, target``
(elements space-separated, e.g. ``C C O Cl``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attncmp.extract.adapter import ForwardOutput, SampleInfo
from attncmp.extract.capture import get_key_path
from attncmp.extract.checkpoint import load_torch_checkpoint
from attncmp.store import SiteSpec
from torch import nn

ELEMENTS = ["C", "N", "O", "S", "F", "Cl", "Br"]
VOCAB_SIZE = 512  # hashed word vocabulary
CLS, SEP = "[CLS]", "[SEP]"


# =============================================================================================
# The user's model (unchanged by attncmp)
# =============================================================================================
class OriginalStyleModel(nn.Module):
    """Atoms (element embeddings + one message-passing step) attend over text tokens."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        d, self.heads, self.middle = args.d_model, args.n_heads, args.middle_fusion
        self.atom = nn.Embedding(len(ELEMENTS), d)
        self.word = nn.Embedding(VOCAB_SIZE, d)
        self.msg = nn.Linear(d, d)
        self.mid = nn.Linear(d, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.head = nn.Linear(2 * d, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        atoms, amask = batch["atoms"], batch["atom_mask"]  # [B, N], [B, N]
        words, wmask = batch["words"], batch["word_mask"]  # [B, T], [B, T]
        h = self.atom(atoms)  # [B, N, D]
        am = amask[..., None].float()
        h = h + torch.relu(self.msg((h * am).sum(1, keepdim=True) / am.sum(1, keepdim=True)))
        t = self.word(words)  # [B, T, D]
        wm = wmask[..., None].float()
        text = (t * wm).sum(1) / wm.sum(1)  # [B, D]
        if self.middle:  # middle fusion: the pooled text vector is added to every atom
            h = h + torch.tanh(self.mid(text))[:, None]
        B, N, D = h.shape
        T, H = t.shape[1], self.heads
        q = self.q(h).view(B, N, H, D // H).transpose(1, 2)  # [B, H, N, Dh]
        k = self.k(t).view(B, T, H, D // H).transpose(1, 2)  # [B, H, T, Dh]
        v = self.v(t).view(B, T, H, D // H).transpose(1, 2)  # [B, H, T, Dh]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D // H)  # [B, H, N, T]
        w = torch.softmax(s.masked_fill(~wmask[:, None, None, :], float("-inf")), dim=-1)
        ctx = (w @ v).transpose(1, 2).reshape(B, N, D)  # padded atom rows: computed, unmasked
        graph = ((h + ctx) * am).sum(1) / am.sum(1)  # [B, D]
        pred = self.head(torch.cat([graph, text], -1)).squeeze(-1)  # [B]
        return {"prediction": pred, "fine_grained_attention_weights": {"atom_to_text": w}}


def tokenize(text: str) -> list[str]:
    return [CLS, *text.split(), SEP]


def read_samples(root_dir: str | Path) -> list[dict[str, Any]]:
    with open(Path(root_dir) / "samples.csv", newline="") as f:
        return list(csv.DictReader(f))


def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    atoms = [[ELEMENTS.index(e) for e in r["elements"].split()] for r in rows]
    words = [[zlib.crc32(w.encode()) % VOCAB_SIZE for w in tokenize(r["text"])] for r in rows]
    B, N, T = len(rows), max(map(len, atoms)), max(map(len, words))
    out = {
        "atoms": torch.zeros(B, N, dtype=torch.long),
        "atom_mask": torch.zeros(B, N, dtype=torch.bool),
        "words": torch.zeros(B, T, dtype=torch.long),
        "word_mask": torch.zeros(B, T, dtype=torch.bool),
    }
    for b, (a, w) in enumerate(zip(atoms, words, strict=True)):
        out["atoms"][b, : len(a)], out["atom_mask"][b, : len(a)] = torch.tensor(a), True
        out["words"][b, : len(w)], out["word_mask"][b, : len(w)] = torch.tensor(w), True
    return out


# =============================================================================================
# The adapter: all that connects this model to `attncmp extract`
# =============================================================================================
class OriginalStyleAdapter:
    def load_model(self, checkpoint_path, device, trust_checkpoint):
        ckpt = load_torch_checkpoint(checkpoint_path, "cpu", trust_checkpoint)
        model = OriginalStyleModel(ckpt["args"])
        model.load_state_dict(ckpt["model"])
        return {"model": model.to(device).eval(), "args": ckpt["args"], "train": ckpt["train_ids"]}

    def training_ids(self, handle):  # refuse samples the model was trained on
        return set(handle["train"])

    def model_info(self, handle):  # recorded in the store's provenance
        return vars(handle["args"])

    def sites(self, handle):
        return [SiteSpec("atom_to_text", "nodes", "tokens", n_heads=handle["args"].n_heads)]

    def sample_ids(self, split, root_dir):
        return [r["id"] for r in read_samples(root_dir) if r["split"] == split]

    def make_batch(self, ids, root_dir):
        rows = {r["id"]: r for r in read_samples(root_dir)}
        batch = [rows[i] for i in ids]
        return {"rows": batch, **collate(batch)}

    def describe(self, batch):
        return [
            SampleInfo(
                id=r["id"],
                node_labels=r["elements"].split(),
                tokens=tokenize(r["text"]),
                special=[t in (CLS, SEP) for t in tokenize(r["text"])],
                target=float(r["target"]),
                split=r["split"],
            )
            for r in batch["rows"]
        ]

    def forward(self, handle, batch, device):
        out = handle["model"](batch)
        att = get_key_path(out, "fine_grained_attention_weights.atom_to_text")  # [B, H, N, T]
        return ForwardOutput(
            attention={"atom_to_text": att},
            predictions=out["prediction"],
            node_mask=batch["atom_mask"],
            token_mask=batch["word_mask"],
        )


# =============================================================================================
# Demo data and checkpoints for trying the example
# =============================================================================================
WORDS = "methyl ethyl chloro bromo fluoro hydroxy amino oxo benzene propane ol one".split()


def write_demo_data(root_dir: str | Path, n: int = 40, seed: int = 0) -> Path:
    """``samples.csv`` with ``n`` random molecules-with-text (first 60% train, then val, test)."""
    rng = np.random.default_rng(seed)
    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "elements", "text", "target"])
        for i in range(n):
            split = "train" if i < 0.6 * n else ("val" if i < 0.7 * n else "test")
            elements = " ".join(rng.choice(ELEMENTS, size=int(rng.integers(2, 12))))
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 8))))
            w.writerow([f"M{i:04d}", split, elements, text, f"{rng.normal():.4f}"])
    return root


def save_demo_checkpoint(path: str | Path, root_dir: str | Path, middle_fusion: bool, seed: int):
    """An untrained checkpoint in the original style (pickled ``argparse.Namespace``)."""
    torch.manual_seed(seed)
    args = argparse.Namespace(d_model=32, n_heads=4, middle_fusion=middle_fusion)
    model = OriginalStyleModel(args)
    train = [r["id"] for r in read_samples(root_dir) if r["split"] == "train"]
    torch.save({"args": args, "model": model.state_dict(), "train_ids": train}, path)
    return Path(path)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "original_style_example")
    data = write_demo_data(out / "data")
    save_demo_checkpoint(out / "full.pt", data, middle_fusion=True, seed=0)
    save_demo_checkpoint(out / "no_middle.pt", data, middle_fusion=False, seed=1)
    print(
        "attncmp extract --adapter examples/original_style_adapter.py:OriginalStyleAdapter "
        f"--model full={out / 'full.pt'} --model no_middle={out / 'no_middle.pt'} "
        f"--root-dir {data} --trust-checkpoint --out {out / 'attention_store.h5'}"
    )
