"""Embedded FreeSolv molecules for the reference model (no RDKit needed at runtime).

FreeSolv: experimental hydration free energies (kcal/mol) of 642 small neutral molecules.
D. L. Mobley and J. P. Guthrie, "FreeSolv: a database of experimental and calculated hydration free
energies, with input files", J. Comput.-Aided Mol. Des. 28, 711-720 (2014).

The SMILES were converted once, at development time, with RDKit (``scripts/convert_freesolv.py``)
into heavy-atom graphs shipped as ``data/freesolv_graphs.json.gz``. Each molecule's text is its name
(the ``iupac`` column, sometimes a common or trade name); its target is ``expt``. Sample ids are
``FS0000`` .. ``FS0641``, the row index in the source CSV.

Raw atom features (integer-valued, stored as float32), one column each, see :data:`FEATURE_NAMES`:
atomic number, heavy-atom degree, formal charge, total hydrogens, aromatic flag, hybridization
(index into :data:`HYBRIDIZATIONS`), ring flag.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ReferenceModelError

__all__ = [
    "BOND_TYPES",
    "DATA_FILE",
    "FEATURE_NAMES",
    "HYBRIDIZATIONS",
    "NODE_FEATURE_DIM",
    "Molecule",
    "encode_atom_features",
    "load_freesolv",
    "make_split",
    "SAMPLE_TYPES",
    "sample_type",
]

DATA_FILE = Path(__file__).resolve().parent / "data" / "freesolv_graphs.json.gz"
FORMAT = "attncmp-freesolv-graphs"
FORMAT_VERSION = 1
FEATURE_NAMES = (
    "atomic_num",
    "degree",
    "formal_charge",
    "num_hs",
    "is_aromatic",
    "hybridization",
    "in_ring",
)
HYBRIDIZATIONS = ("S", "SP", "SP2", "SP3", "SP3D", "SP3D2", "OTHER")
BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")


# One-hot encoding of the raw features for the model (see :func:`encode_atom_features`).
ELEMENT_VOCAB = ("C", "N", "O", "S", "P", "F", "Cl", "Br", "I")  # + one "other" slot
_ATOMIC_NUMS = (6, 7, 8, 16, 15, 9, 17, 35, 53)
MAX_DEGREE = 5  # degrees 0..5, higher clipped
MAX_HS = 4  # hydrogens 0..4, higher clipped
CHARGES = (-1, 0, 1)  # + one "other" slot
NODE_FEATURE_DIM = (
    len(ELEMENT_VOCAB)
    + 1
    + MAX_DEGREE
    + 1
    + len(CHARGES)
    + 1
    + MAX_HS
    + 1
    + 1
    + len(HYBRIDIZATIONS)
    + 1
)


def encode_atom_features(raw: np.ndarray) -> np.ndarray:
    """One-hot encode raw atom features ``[n, 7]`` into model inputs ``[n, NODE_FEATURE_DIM]``.

    Blocks: element (9 + other), degree (0..5), formal charge (-1, 0, +1, other), hydrogens
    (0..4), aromatic flag, hybridization (7), ring flag. Output dtype float32.
    """
    raw = np.asarray(raw).reshape(-1, len(FEATURE_NAMES)).astype(np.int64)
    n = raw.shape[0]
    blocks = []

    def one_hot(index: np.ndarray, size: int) -> np.ndarray:
        out = np.zeros((n, size), dtype=np.float32)
        out[np.arange(n), index] = 1.0
        return out

    def one_hot_of(values: np.ndarray, vocabulary: Sequence[int]) -> np.ndarray:
        """One column per vocabulary entry plus a last one for anything else."""
        lookup = {v: i for i, v in enumerate(vocabulary)}
        other = len(vocabulary)
        index = np.array([lookup.get(v, other) for v in values], dtype=np.int64)
        return one_hot(index, other + 1)

    blocks.append(one_hot_of(raw[:, 0], _ATOMIC_NUMS))
    blocks.append(one_hot(np.clip(raw[:, 1], 0, MAX_DEGREE), MAX_DEGREE + 1))
    blocks.append(one_hot_of(raw[:, 2], CHARGES))
    blocks.append(one_hot(np.clip(raw[:, 3], 0, MAX_HS), MAX_HS + 1))
    blocks.append(raw[:, 4:5].astype(np.float32))
    blocks.append(one_hot(np.clip(raw[:, 5], 0, len(HYBRIDIZATIONS) - 1), len(HYBRIDIZATIONS)))
    blocks.append(raw[:, 6:7].astype(np.float32))
    out = np.concatenate(blocks, axis=1)
    assert out.shape == (n, NODE_FEATURE_DIM), out.shape
    return out


@dataclass(frozen=True, eq=False)
class Molecule:
    """One FreeSolv molecule as a heavy-atom graph plus its name and target."""

    id: str  # "FS0000" .. "FS0641": row index in the source CSV
    name: str  # the text the model reads (IUPAC or common name)
    smiles: str
    target: float  # experimental hydration free energy, kcal/mol
    elements: list[str]  # [n_atoms] element symbols, RDKit atom order
    atom_features: np.ndarray  # [n_atoms, len(FEATURE_NAMES)] float32, raw integer values
    bonds: np.ndarray  # [n_bonds, 2] int64 atom index pairs (i < j)
    bond_types: list[str]  # [n_bonds] each one of BOND_TYPES

    @property
    def n_atoms(self) -> int:
        return len(self.elements)


SAMPLE_TYPES = ("halogenated", "aromatic", "other")
HALOGENS = frozenset({"F", "Cl", "Br", "I"})


def sample_type(m: Molecule) -> str:
    """The molecule's type for per-type comparisons (recorded as the ``sample_type`` metadata):
    ``halogenated`` (any F, Cl, Br or I atom), else ``aromatic`` (any aromatic atom), else
    ``other``. On the 642 FreeSolv molecules: 175 / 177 / 290."""
    if HALOGENS.intersection(m.elements):
        return "halogenated"
    if m.atom_features.shape[0] and bool(np.any(m.atom_features[:, 4] > 0)):
        return "aromatic"
    return "other"


@lru_cache(maxsize=4)
def _read_payload(path: str) -> dict[str, Any]:
    try:
        payload = json.loads(gzip.decompress(Path(path).read_bytes()).decode("utf-8"))
    except (OSError, ValueError, EOFError) as exc:
        raise ReferenceModelError(
            f"{path}: cannot read the embedded FreeSolv file ({exc}); reinstall attncmp or "
            "regenerate it with `python scripts/convert_freesolv.py`"
        ) from None
    if payload.get("format") != FORMAT or payload.get("format_version") != FORMAT_VERSION:
        raise ReferenceModelError(
            f"{path}: not an {FORMAT} v{FORMAT_VERSION} file; regenerate it with "
            "`python scripts/convert_freesolv.py`"
        )
    return payload


def load_freesolv(path: str | Path | None = None) -> list[Molecule]:
    """Load all 642 embedded FreeSolv molecules (ordered by id).

    Parameters
    ----------
    path : optional
        Another file in the same format (default: the shipped ``data/freesolv_graphs.json.gz``).
    """
    payload = _read_payload(str(Path(path) if path is not None else DATA_FILE))
    n_features = len(FEATURE_NAMES)
    molecules = []
    for m in payload["molecules"]:
        features = np.asarray(m["features"], dtype=np.float32).reshape(-1, n_features)
        bonds = np.asarray(m["bonds"], dtype=np.int64).reshape(-1, 2)
        molecules.append(
            Molecule(
                id=m["id"],
                name=m["name"],
                smiles=m["smiles"],
                target=float(m["target"]),
                elements=list(m["elements"]),
                atom_features=features,
                bonds=bonds,
                bond_types=list(m["bond_types"]),
            )
        )
    return molecules


def make_split(
    ids: list[str], seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[str]]:
    """Fixed, seeded random split of ``ids`` into ``train``/``val``/``test``.

    The ids are sorted first, so the result depends only on the set of ids, ``seed`` and
    ``fractions``; it is deterministic across runs and platforms (numpy PCG64). Sizes are
    ``round(n * f_train)``, ``round(n * f_val)``, and the rest. Each list is returned sorted.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"`fractions` must be three non-negative numbers summing to 1, got {fractions}"
        )
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise ValueError("`ids` contains duplicates")
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n_train = int(round(len(unique) * fractions[0]))
    n_val = int(round(len(unique) * fractions[1]))
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }
