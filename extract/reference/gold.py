"""Gold atom-token alignments from name fragments (partial ground truth for attention).

A token is gold for an atom when the token is a name fragment that unambiguously denotes that atom.
The lexicon is deliberately conservative; a fragment maps to atoms only through the molecule's
own graph, so a fragment whose atoms are absent gives an empty column (never a guess).

==========================================  ==================================================
token(s)                                    gold atoms
==========================================  ==================================================
``fluoro``, ``fluoride``                    every F atom
``chloro``, ``chloride``                    every Cl atom
``bromo``, ``bromide``                      every Br atom
``iodo``, ``iodide``                        every I atom
``nitro``                                   each nitro N (an N bonded to >= 2 terminal O, i.e.
                                            O with no other heavy neighbour) and those O atoms
``nitrate``, ``nitroxy``                    each nitrate group -O-NO2: an N bonded to 3 O, and
                                            those three O atoms
``nitrile``, ``carbonitrile``, ``cyano``    each C#N group: the N triple-bonded to a C, and it
==========================================  ==================================================

Locants are not resolved: in "2,4-dichloro..." both ``chloro`` tokens (there is one, after "di")
point at every Cl atom, and "trifluoromethyl" -> token ``fluoro`` -> all F atoms. Fragments left out
on purpose because they are ambiguous in names: ``thio`` (thiol S, thioxo S, thiophene ring S,
thioether), ``oxy``/``hydroxy``/``ol`` (which O?), ``amine``/``amino`` (which N?), trade-name stems
such as ``chlor`` in "heptachlor" (not tokens of their own). Special tokens ([CLS], [SEP], [PAD],
[UNK]) are never gold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Molecule

__all__ = ["GOLD_LEXICON", "gold_atoms", "gold_mask"]

# token -> rule name (see module docstring)
GOLD_LEXICON: dict[str, str] = {
    "fluoro": "F",
    "fluoride": "F",
    "chloro": "Cl",
    "chloride": "Cl",
    "bromo": "Br",
    "bromide": "Br",
    "iodo": "I",
    "iodide": "I",
    "nitro": "nitro",
    "nitrate": "nitrate",
    "nitroxy": "nitrate",
    "nitrile": "nitrile",
    "carbonitrile": "nitrile",
    "cyano": "nitrile",
}
_SPECIAL = frozenset({"[CLS]", "[SEP]", "[PAD]", "[UNK]"})


def _neighbours(molecule: Molecule) -> list[list[tuple[int, str]]]:
    nbrs: list[list[tuple[int, str]]] = [[] for _ in range(molecule.n_atoms)]
    for (i, j), btype in zip(molecule.bonds.tolist(), molecule.bond_types, strict=True):
        nbrs[i].append((j, btype))
        nbrs[j].append((i, btype))
    return nbrs


def gold_atoms(molecule: Molecule, rule: str) -> list[int]:
    """Sorted indices of the atoms that a lexicon rule (``"F"``, ``"nitro"``...) denotes."""
    elements = molecule.elements
    if rule in ("F", "Cl", "Br", "I"):
        return [i for i, e in enumerate(elements) if e == rule]
    nbrs = _neighbours(molecule)
    atoms: set[int] = set()
    if rule == "nitro":
        for i, e in enumerate(elements):
            if e != "N":
                continue
            terminal_o = [j for j, _ in nbrs[i] if elements[j] == "O" and len(nbrs[j]) == 1]
            if len(terminal_o) >= 2:
                atoms.update([i, *terminal_o])
    elif rule == "nitrate":
        for i, e in enumerate(elements):
            oxygens = [j for j, _ in nbrs[i] if elements[j] == "O"]
            if e == "N" and len(oxygens) == 3:
                atoms.update([i, *oxygens])
    elif rule == "nitrile":
        for i, e in enumerate(elements):
            carbons = [j for j, t in nbrs[i] if elements[j] == "C" and t == "TRIPLE"]
            if e == "N" and carbons:
                atoms.update([i, *carbons])
    else:
        raise ValueError(f"unknown gold rule {rule!r}; known: {sorted(set(GOLD_LEXICON.values()))}")
    return sorted(atoms)


def gold_mask(molecule: Molecule, encoding) -> np.ndarray:
    """Boolean gold alignment ``[n_atoms, n_tokens]`` between a molecule and its tokenised name.

    Parameters
    ----------
    molecule : Molecule
    encoding : Encoding or sequence of str
        The model's own tokenisation (columns follow it exactly, [CLS]/[SEP] included; they are
        never gold).

    Returns
    -------
    numpy.ndarray of bool, shape ``[n_atoms, n_tokens]``; ``mask[a, t]`` is True when token ``t``
    denotes atom ``a`` per :data:`GOLD_LEXICON`.
    """
    tokens: Sequence[str] = encoding if _is_token_list(encoding) else encoding.tokens
    special = [t in _SPECIAL for t in tokens]
    if not _is_token_list(encoding):
        special = [s or bool(f) for s, f in zip(special, encoding.special, strict=True)]
    mask = np.zeros((molecule.n_atoms, len(tokens)), dtype=bool)
    cache: dict[str, list[int]] = {}
    for col, (token, is_special) in enumerate(zip(tokens, special, strict=True)):
        rule = GOLD_LEXICON.get(token)
        if rule is None or is_special:
            continue
        if rule not in cache:
            cache[rule] = gold_atoms(molecule, rule)
        mask[cache[rule], col] = True
    return mask


def _is_token_list(obj) -> bool:
    return isinstance(obj, Sequence) and not isinstance(obj, str)
