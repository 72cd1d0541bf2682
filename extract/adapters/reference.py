"""Built-in adapter for the reference model (``--adapter reference``).

Capture method 1 (key path): the model returns the original output dict, and the adapter reads
``fine_grained_attention_weights.atom_to_text`` (site ``atom_to_text``) and, for variants with
middle fusion, ``middle_fusion_attention.atom_to_text`` (site ``middle_fusion``; stored only when
every variant has it). Sample ids, the split and the tokenizer come from the checkpoints: the first
checkpoint's recorded split decides which ids a ``--split`` holds, each checkpoint's recorded
training ids are refused unless allowed, and token strings are the model's own tokenisation. Gold
node-token masks come from name fragments (:func:`extract.reference.gold.gold_mask`). Each sample
records its split (``val``/``test``...; ``valid`` is accepted for ``val``) and its
``sample_type`` (halogenated / aromatic / other, :func:`extract.reference.data.sample_type`), so
``attncmp analyze --strata sample_type`` compares the models per type.

``--root-dir`` may point at a directory holding another ``freesolv_graphs.json.gz`` in the shipped
format; by default the embedded FreeSolv data is used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from attncmp.store import SiteSpec

from ..adapter import ForwardOutput, SampleInfo
from ..capture import get_key_path
from ..errors import AdapterError, CheckpointLoadError, SelectionError

__all__ = ["ReferenceAdapter", "ReferenceBatch"]

FINE_KEY = "fine_grained_attention_weights.atom_to_text"
MIDDLE_KEY = "middle_fusion_attention.atom_to_text"
DATA_NAME = "freesolv_graphs.json.gz"


@dataclass
class ReferenceBatch:
    """Molecules, their encodings by the first checkpoint's tokenizer, and the padded batch."""

    molecules: list[Any]  # [B] extract.reference.data.Molecule
    encodings: list[Any]  # [B] extract.reference.tokenizer.Encoding
    batch: Any  # extract.reference.model.Batch (padded, CPU until .to(device))

    def to(self, device: Any) -> ReferenceBatch:
        return replace(self, batch=self.batch.to(device))


@dataclass
class _Handle:
    loaded: Any  # extract.reference.train.LoadedReference
    path: str
    same_tokenizer: bool  # tokenises exactly like the first checkpoint


class ReferenceAdapter:
    """Adapter for checkpoints written by ``attncmp train`` (:mod:`extract.reference`)."""

    name = "reference"
    has_gold = True
    meta_columns = (("name", "str"), ("smiles", "str"), ("sample_type", "str"))
    #: other spellings of the checkpoint's split names (``--split valid,test``)
    SPLIT_ALIASES = {"valid": "val", "validation": "val", "training": "train"}
    target_names = ("target",)  # experimental hydration free energy, kcal/mol

    def __init__(self) -> None:
        self._first: _Handle | None = None
        self._molecules: dict[str, Any] | None = None
        self._root: str | None = None
        self._split_of: dict[str, str] | None = None  # sample id -> recorded split (describe)

    # -- models -------------------------------------------------------------------------------
    def load_model(self, checkpoint_path: str, device: Any, trust_checkpoint: bool) -> _Handle:
        from ..reference.errors import ReferenceModelError
        from ..reference.train import load_checkpoint

        try:
            loaded = load_checkpoint(
                checkpoint_path, str(device), trust_checkpoint=trust_checkpoint
            )
        except ReferenceModelError as exc:
            hint = ""
            if "not an attncmp reference checkpoint" in str(exc):
                hint = " (for your own models pass --adapter package.module:object)"
            raise CheckpointLoadError(f"{exc}{hint}") from exc
        same = self._first is None or loaded.tokenizer == self._first.loaded.tokenizer
        handle = _Handle(loaded=loaded, path=str(checkpoint_path), same_tokenizer=same)
        if self._first is None:
            self._first = handle
        return handle

    def model_info(self, h: _Handle) -> dict[str, Any]:
        ck = h.loaded.checkpoint
        return {
            "variant": ck.get("variant"),
            "config": ck.get("config"),
            "format": ck.get("format"),
            "format_version": ck.get("format_version"),
            "seed": ck.get("seed"),
            "split_seed": ck.get("split_seed"),
            "split_sizes": {k: len(v) for k, v in ck.get("split", {}).items()},
            "metrics": ck.get("metrics"),
            "tokenizer_vocab_size": h.loaded.tokenizer.vocab_size,
        }

    def training_ids(self, h: _Handle) -> set[str]:
        return set(h.loaded.split.get("train", []))

    def sites(self, h: _Handle) -> list[SiteSpec]:
        cfg = h.loaded.config
        sites = []
        if cfg.fine_grained_attention:
            sites.append(
                SiteSpec(
                    "atom_to_text",
                    "nodes",
                    "tokens",
                    n_layers=1,
                    n_heads=cfg.n_heads,
                    description=f"fine-grained node -> token cross-attention ({FINE_KEY})",
                )
            )
        if cfg.middle_fusion:
            sites.append(
                SiteSpec(
                    "middle_fusion",
                    "nodes",
                    "tokens",
                    n_layers=1,
                    n_heads=cfg.n_heads,
                    description=f"middle-fusion node -> token attention ({MIDDLE_KEY})",
                )
            )
        return sites

    # -- data ---------------------------------------------------------------------------------
    def _data(self, root_dir: str | None) -> dict[str, Any]:
        if self._molecules is None or self._root != root_dir:
            from ..reference.data import load_freesolv

            path = None
            if root_dir is not None:
                path = Path(root_dir) / DATA_NAME
                if not path.is_file():
                    raise AdapterError(
                        f"--root-dir {root_dir}: no {DATA_NAME} there; omit --root-dir to use the "
                        "embedded FreeSolv data"
                    )
            self._molecules = {m.id: m for m in load_freesolv(path)}
            self._root = root_dir
        return self._molecules

    def _need_first(self) -> _Handle:
        if self._first is None:
            raise AdapterError("reference adapter: load_model() must be called before data access")
        return self._first

    def sample_ids(self, split: str, root_dir: str | None) -> list[str]:
        recorded = self._need_first().loaded.split
        data = self._data(root_dir)
        split = self.SPLIT_ALIASES.get(split, split) if split not in recorded else split
        if split == "all":
            return sorted(data)
        if split not in recorded:
            raise SelectionError(
                f"split {split!r} is not recorded in the checkpoint; choose one of "
                f"{sorted(recorded)} or 'all'"
            )
        missing = [i for i in recorded[split] if i not in data]
        if missing:
            raise SelectionError(
                f"the checkpoint's {split!r} split names sample {missing[0]!r}, which the data "
                "does not have; use the data the model was trained on"
            )
        return sorted(recorded[split])

    def make_batch(self, ids: list[str], root_dir: str | None) -> ReferenceBatch:
        from ..reference.model import collate

        tok = self._need_first().loaded.tokenizer
        data = self._data(root_dir)
        mols = [data[i] for i in ids]
        encs = [tok.encode(m.name) for m in mols]
        return ReferenceBatch(
            molecules=mols, encodings=encs, batch=collate(mols, tok, encodings=encs)
        )

    def describe(self, rb: ReferenceBatch) -> list[SampleInfo]:
        from ..reference.data import sample_type
        from ..reference.gold import gold_mask

        if self._split_of is None:  # built once, not per batch (all ids of the checkpoint)
            self._split_of = {
                i: k for k, ids in self._need_first().loaded.split.items() for i in ids
            }
        split_of = self._split_of
        return [
            SampleInfo(
                id=m.id,
                node_labels=list(m.elements),
                tokens=list(e.tokens),
                special=list(e.special),
                target=float(m.target),
                split=split_of.get(m.id, "unassigned"),
                meta={"name": m.name, "smiles": m.smiles, "sample_type": sample_type(m)},
                gold=gold_mask(m, e),
            )
            for m, e in zip(rb.molecules, rb.encodings, strict=True)
        ]

    # -- forward ------------------------------------------------------------------------------
    def forward(self, h: _Handle, rb: ReferenceBatch, device: Any) -> ForwardOutput:
        from ..reference.model import collate

        batch = rb.batch
        if not h.same_tokenizer:  # this checkpoint tokenises with its own vocabulary
            encs = [h.loaded.tokenizer.encode(m.name) for m in rb.molecules]
            for m, mine, first in zip(rb.molecules, encs, rb.encodings, strict=True):
                if list(mine.tokens) != list(first.tokens):
                    raise AdapterError(
                        f"sample {m.id!r}: checkpoint {h.path} tokenises its name differently "
                        f"from the first checkpoint ({mine.tokens} vs {first.tokens}); train both "
                        "variants with the same split seed so they share a tokenizer"
                    )
            batch = collate(rb.molecules, h.loaded.tokenizer, encodings=encs).to(device)
        out = h.loaded.model(batch)
        attention = {"atom_to_text": get_key_path(out, FINE_KEY)}  # [B, H, N, T]
        if h.loaded.config.middle_fusion:
            attention["middle_fusion"] = get_key_path(out, MIDDLE_KEY)  # [B, H, N, T]
        return ForwardOutput(
            attention=attention,
            predictions=out["prediction"],  # [B] kcal/mol
            n_nodes=batch.n_nodes,
            n_tokens=batch.n_tokens,
        )
