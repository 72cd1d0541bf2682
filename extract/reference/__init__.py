"""Reference model and embedded data for the attncmp demo (DESIGN.md section 7).

Embedded FreeSolv molecules (heavy-atom graphs + names, :mod:`.data`), a chemistry-aware name
tokenizer (:mod:`.tokenizer`), gold atom-token alignments from name fragments (:mod:`.gold`), a
small pure-torch graph + text model with switchable middle fusion, fine-grained attention and global
fusion (:mod:`.model`), and its training / checkpoint code (:mod:`.train`).

Importing this package is light: torch and tokenizers are loaded only when a name that needs them
is first accessed (e.g. ``extract.reference.train_variant``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CheckpointError, ReferenceModelError

_LAZY = {
    "Molecule": "data",
    "load_freesolv": "data",
    "make_split": "data",
    "Encoding": "tokenizer",
    "NameTokenizer": "tokenizer",
    "gold_mask": "gold",
    "Batch": "model",
    "ReferenceConfig": "model",
    "ReferenceModel": "model",
    "collate": "model",
    "variant_config": "model",
    "LoadedReference": "train",
    "TrainResult": "train",
    "load_checkpoint": "train",
    "train_variant": "train",
}

__all__ = ["CheckpointError", "ReferenceModelError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
