"""Reference multimodal model: graph encoder over atoms + text encoder over the molecule's name.

nanoGPT style: one file, a dataclass config, explicit attention math (fused kernels do not return
weights), shape comments. Three switchable fusion points, as in the model the tool was built for:

- **middle fusion** (``middle_fusion``): after graph layer ``middle_layer``, every node
  cross-attends over the name tokens and a learned per-node, per-channel gate adds the result to
  that node's state. Each node gets its own attention row (no single vector broadcast to all nodes).
- **fine-grained attention** (``fine_grained_attention``): after the last graph layer, node -> token
  multi-head cross-attention; the per-head weights ``[batch, heads, nodes, tokens]`` are returned.
- **global fusion** (``global_fusion``): a pooled graph vector and a pooled text vector are combined
  before the regression head (otherwise the head sees the graph vector only).

Masking: padded token columns get exactly zero weight (scores set to -inf before a float32
softmax). Padded node rows are computed like any other row (the original model returned them
unmasked) and are finite; consumers must use ``node_mask`` / ``n_nodes``.

``forward(batch)`` returns the original model's output dict::

    {"prediction": [B] (kcal/mol),
     "fine_grained_attention_weights": {"atom_to_text": [B, H, N, T]},   # if enabled
     "middle_fusion_attention": {"atom_to_text": [B, H, N, T]}}          # if enabled
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import BOND_TYPES, NODE_FEATURE_DIM, Molecule, encode_atom_features
from .errors import ReferenceInputError
from .tokenizer import Encoding, NameTokenizer

__all__ = [
    "VARIANTS",
    "Batch",
    "ReferenceConfig",
    "ReferenceModel",
    "collate",
    "variant_config",
]


@dataclass
class ReferenceConfig:
    # inputs
    node_in_dim: int = NODE_FEATURE_DIM  # one-hot atom features (data.encode_atom_features)
    n_bond_types: int = len(BOND_TYPES)  # SINGLE, DOUBLE, TRIPLE, AROMATIC
    vocab_size: int = 256  # set from the tokenizer when training
    pad_id: int = 0  # the tokenizer's [PAD] id
    max_tokens: int = 128  # learned positional embeddings; the tokenizer truncates to this
    # sizes (small: one model trains in ~1-2 min on 2 CPU cores)
    d_model: int = 64  # width of node and token states
    n_heads: int = 4  # heads of every attention (middle fusion, fine-grained, text self-attn)
    n_graph_layers: int = 4  # message-passing layers
    middle_layer: int = 2  # middle fusion sits after this many graph layers (1..n_graph_layers-1)
    n_text_layers: int = 2  # transformer encoder layers over the tokens
    dropout: float = 0.1  # on embeddings and residual branches (never on attention probabilities)
    pooling: str = "mean"  # graph/text readout: "mean" or "sum" over valid positions
    # switches
    middle_fusion: bool = True
    fine_grained_attention: bool = True
    global_fusion: bool = True

    def __post_init__(self) -> None:
        assert self.d_model % self.n_heads == 0, "d_model must be divisible by n_heads"
        assert 1 <= self.middle_layer < self.n_graph_layers or not self.middle_fusion, (
            "middle_layer must lie strictly inside the graph encoder (1..n_graph_layers-1)"
        )
        assert self.n_graph_layers >= 3, "the graph encoder needs >= 3 layers"
        assert self.pooling in ("mean", "sum"), "pooling must be 'mean' or 'sum'"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ReferenceInputError(f"unknown ReferenceConfig fields {unknown}")
        return cls(**d)


VARIANTS = {
    "full": dict(middle_fusion=True, fine_grained_attention=True, global_fusion=True),
    "no_middle": dict(middle_fusion=False, fine_grained_attention=True, global_fusion=True),
}


def variant_config(variant: str, **overrides: Any) -> ReferenceConfig:
    """Config of a named variant (``"full"`` or ``"no_middle"``), with optional field overrides."""
    if variant not in VARIANTS:
        raise ReferenceInputError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return replace(ReferenceConfig(), **{**VARIANTS[variant], **overrides})


# ---------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """A padded batch. Masks are True on valid positions."""

    ids: list[str]  # [B] sample ids
    node_feats: torch.Tensor  # [B, N, F] float32 one-hot atom features, zeros on padding
    node_mask: torch.Tensor  # [B, N] bool
    adjacency: torch.Tensor  # [B, N, N] int64 bond code: 0 none, 1 + index into BOND_TYPES
    token_ids: torch.Tensor  # [B, T] int64, pad_id on padding
    token_mask: torch.Tensor  # [B, T] bool
    targets: torch.Tensor  # [B] float32, kcal/mol
    n_nodes: torch.Tensor  # [B] int64
    n_tokens: torch.Tensor  # [B] int64
    encodings: list[Encoding] = field(default_factory=list)  # [B] the model's own tokenisation
    elements: list[list[str]] = field(default_factory=list)  # [B][n_nodes] element symbols

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: str | torch.device) -> Batch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


def collate(
    molecules: Sequence[Molecule],
    tokenizer: NameTokenizer,
    *,
    encodings: Sequence[Encoding] | None = None,
) -> Batch:
    """Pad molecules and their tokenised names into a :class:`Batch` (on the CPU).

    ``encodings`` may pass precomputed ``tokenizer.encode(m.name)`` results (same order).
    """
    if not molecules:
        raise ValueError("cannot collate an empty list of molecules")
    if encodings is None:
        encodings = [tokenizer.encode(m.name) for m in molecules]
    if len(encodings) != len(molecules):
        raise ValueError(f"{len(encodings)} encodings for {len(molecules)} molecules")
    B = len(molecules)
    N = max(m.n_atoms for m in molecules)
    T = max(len(e.ids) for e in encodings)
    node_feats = np.zeros((B, N, NODE_FEATURE_DIM), dtype=np.float32)
    node_mask = np.zeros((B, N), dtype=bool)
    adjacency = np.zeros((B, N, N), dtype=np.int64)
    token_ids = np.full((B, T), tokenizer.pad_id, dtype=np.int64)
    token_mask = np.zeros((B, T), dtype=bool)
    code = {t: i + 1 for i, t in enumerate(BOND_TYPES)}
    for b, (m, e) in enumerate(zip(molecules, encodings, strict=True)):
        n, t = m.n_atoms, len(e.ids)
        node_feats[b, :n] = encode_atom_features(m.atom_features)
        node_mask[b, :n] = True
        if len(m.bonds):
            codes = np.array([code[bt] for bt in m.bond_types], dtype=np.int64)
            adjacency[b, m.bonds[:, 0], m.bonds[:, 1]] = codes
            adjacency[b, m.bonds[:, 1], m.bonds[:, 0]] = codes
        token_ids[b, :t] = e.ids
        token_mask[b, :t] = True
    return Batch(
        ids=[m.id for m in molecules],
        node_feats=torch.from_numpy(node_feats),
        node_mask=torch.from_numpy(node_mask),
        adjacency=torch.from_numpy(adjacency),
        token_ids=torch.from_numpy(token_ids),
        token_mask=torch.from_numpy(token_mask),
        targets=torch.tensor([m.target for m in molecules], dtype=torch.float32),
        n_nodes=torch.tensor([m.n_atoms for m in molecules], dtype=torch.int64),
        n_tokens=torch.tensor([len(e.ids) for e in encodings], dtype=torch.int64),
        encodings=list(encodings),
        elements=[list(m.elements) for m in molecules],
    )


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Multi-head attention with explicit math so the per-head weights can be returned."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x_q [B, Q, D], x_kv [B, K, D], key_mask [B, K] bool (True = valid key)
        B, Q, D = x_q.shape
        K = x_kv.shape[1]
        H, Dh = self.n_heads, self.d_head
        q = self.q(x_q).view(B, Q, H, Dh).transpose(1, 2)  # [B, H, Q, Dh]
        k = self.k(x_kv).view(B, K, H, Dh).transpose(1, 2)  # [B, H, K, Dh]
        v = self.v(x_kv).view(B, K, H, Dh).transpose(1, 2)  # [B, H, K, Dh]
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(Dh)  # [B, H, Q, K] float32
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # [B, H, Q, K]; padded keys exactly 0
        # a row with no valid key at all would be NaN: make it all-zero instead
        weights = torch.where(key_mask.any(-1)[:, None, None, None], weights, 0.0)
        out = weights.to(v.dtype) @ v  # [B, H, Q, Dh] (no dropout on attention probabilities)
        out = out.transpose(1, 2).reshape(B, Q, D)  # [B, Q, D]
        return self.o(out), weights


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class GraphLayer(nn.Module):
    """Pre-norm residual message passing over bonds, one message transform per bond type."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        super().__init__()
        self.n_types = cfg.n_bond_types
        self.ln = nn.LayerNorm(cfg.d_model)
        self.message = nn.Linear(cfg.d_model, cfg.d_model * cfg.n_bond_types)
        self.update = _mlp(2 * cfg.d_model, 2 * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor, adj: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        # h [B, N, D], adj [B, N, N] bond codes, node_mask [B, N]
        B, N, D = h.shape
        x = self.ln(h)
        msg = self.message(x).view(B, N, self.n_types, D)  # [B, N_src, types, D]
        onehot = F.one_hot(adj, self.n_types + 1)[..., 1:].to(x.dtype)  # [B, N_dst, N_src, types]
        agg = torch.einsum("bijk,bjkd->bid", onehot, msg)  # [B, N_dst, D] sum over bonded atoms
        h = h + self.dropout(self.update(torch.cat([x, agg], dim=-1)))  # [B, N, D]
        return h * node_mask[..., None].to(h.dtype)  # padded nodes stay zero


class TextLayer(nn.Module):
    """Pre-norm transformer encoder block with key-padding mask."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = _mlp(cfg.d_model, 4 * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        # x [B, T, D], token_mask [B, T]
        y = self.ln1(x)
        a, _ = self.attn(y, y, token_mask)  # [B, T, D]
        x = x + self.dropout(a)
        return x + self.dropout(self.mlp(self.ln2(x)))


class MiddleFusion(nn.Module):
    """Per-node cross-attention over tokens, injected through a learned sigmoid gate."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.gate = nn.Linear(2 * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, h: torch.Tensor, text: torch.Tensor, token_mask: torch.Tensor, node_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # h [B, N, D], text [B, T, D]
        x = self.ln(h)
        ctx, weights = self.attn(x, text, token_mask)  # ctx [B, N, D] (one per node), w [B,H,N,T]
        gate = torch.sigmoid(self.gate(torch.cat([x, ctx], dim=-1)))  # [B, N, D] per node/channel
        h = h + self.dropout(gate * ctx)
        return h * node_mask[..., None].to(h.dtype), weights


def _pool(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    # x [B, L, D], mask [B, L] -> [B, D] over valid positions only
    m = mask[..., None].to(x.dtype)
    total = (x * m).sum(dim=1)
    if how == "sum":
        return total
    return total / m.sum(dim=1).clamp(min=1.0)


class ReferenceModel(nn.Module):
    """Graph + text model with switchable middle fusion, fine-grained attention, global fusion."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        # graph encoder
        self.node_in = nn.Linear(cfg.node_in_dim, D)
        self.graph_layers = nn.ModuleList([GraphLayer(cfg) for _ in range(cfg.n_graph_layers)])
        self.graph_ln = nn.LayerNorm(D)
        # text encoder
        self.tok_emb = nn.Embedding(cfg.vocab_size, D, padding_idx=cfg.pad_id)
        self.pos_emb = nn.Embedding(cfg.max_tokens, D)
        self.text_layers = nn.ModuleList([TextLayer(cfg) for _ in range(cfg.n_text_layers)])
        self.text_ln = nn.LayerNorm(D)
        # fusion
        self.middle = MiddleFusion(cfg) if cfg.middle_fusion else None
        if cfg.fine_grained_attention:
            self.fine_ln = nn.LayerNorm(D)
            self.fine = MultiHeadAttention(D, cfg.n_heads)
        else:
            self.fine_ln, self.fine = None, None
        head_in = 3 * D if cfg.global_fusion else D  # [graph, text, graph * text] or [graph]
        self.head = _mlp(head_in, D, 1)
        self.dropout = nn.Dropout(cfg.dropout)
        # target standardisation (set by training; prediction is returned in target units)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def encode_text(self, token_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        # token_ids [B, T] -> [B, T, D]
        T = token_ids.shape[1]
        assert T <= self.cfg.max_tokens, f"{T} tokens > max_tokens={self.cfg.max_tokens}"
        pos = torch.arange(T, device=token_ids.device)
        x = self.dropout(self.tok_emb(token_ids) + self.pos_emb(pos)[None])  # [B, T, D]
        for layer in self.text_layers:
            x = layer(x, token_mask)
        return self.text_ln(x)

    def forward(self, batch: Batch) -> dict[str, Any]:
        cfg = self.cfg
        node_mask, token_mask = batch.node_mask, batch.token_mask  # [B, N], [B, T]
        text = self.encode_text(batch.token_ids, token_mask)  # [B, T, D]
        h = self.node_in(batch.node_feats) * node_mask[..., None].to(text.dtype)  # [B, N, D]
        out: dict[str, Any] = {}
        for i, layer in enumerate(self.graph_layers, start=1):
            h = layer(h, batch.adjacency, node_mask)
            if self.middle is not None and i == cfg.middle_layer:
                h, w_mid = self.middle(h, text, token_mask, node_mask)  # w_mid [B, H, N, T]
                out["middle_fusion_attention"] = {"atom_to_text": w_mid}
        h = self.graph_ln(h)  # [B, N, D]
        if self.fine is not None:
            ctx, w_fine = self.fine(self.fine_ln(h), text, token_mask)  # [B,N,D], [B,H,N,T]
            h = h + self.dropout(ctx)
            out["fine_grained_attention_weights"] = {"atom_to_text": w_fine}
        g = _pool(h, node_mask, cfg.pooling)  # [B, D]
        if cfg.global_fusion:
            t = _pool(text, token_mask, cfg.pooling)  # [B, D]
            z = torch.cat([g, t, g * t], dim=-1)  # [B, 3D]
        else:
            z = g
        y = self.head(z).squeeze(-1)  # [B] standardised
        out = {"prediction": y * self.target_std + self.target_mean, **out}
        return out
