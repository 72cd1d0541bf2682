"""Gold atom-token masks, hand-checked on real FreeSolv molecules."""

from __future__ import annotations

import numpy as np
import pytest
from attncmp.extract.reference.data import load_freesolv
from attncmp.extract.reference.gold import gold_mask
from attncmp.extract.reference.tokenizer import NameTokenizer


@pytest.fixture(scope="module")
def mols():
    return {m.name: m for m in load_freesolv()}


@pytest.fixture(scope="module")
def tok(mols):
    return NameTokenizer.train(list(mols))


def _gold_pairs(mol, enc):
    mask = gold_mask(mol, enc)
    assert mask.shape == (mol.n_atoms, len(enc.tokens)) and mask.dtype == bool
    assert not mask[:, [i for i, s in enumerate(enc.special) if s]].any()
    return {
        (f"{mol.elements[a]}{a}", enc.tokens[t]) for a, t in zip(*np.nonzero(mask), strict=True)
    }


def test_chloro(mols, tok):
    mol = mols["1-chlorohexane"]  # CCCCCCCl -> Cl is atom 6
    enc = tok.encode(mol.name)
    assert _gold_pairs(mol, enc) == {("Cl6", "chloro")}


def test_nitro_and_chloro(mols, tok):
    mol = mols["trichloro(nitro)methane"]  # C([N+](=O)[O-])(Cl)(Cl)Cl
    enc = tok.encode(mol.name)
    assert mol.elements == ["C", "N", "O", "O", "Cl", "Cl", "Cl"]
    assert _gold_pairs(mol, enc) == {
        ("N1", "nitro"), ("O2", "nitro"), ("O3", "nitro"),
        ("Cl4", "chloro"), ("Cl5", "chloro"), ("Cl6", "chloro"),
    }  # fmt: skip


def test_nitro_on_ring_ignores_other_oxygens(mols, tok):
    mol = mols["methyl 4-nitrobenzoate"]  # COC(=O)c1ccc(cc1)[N+](=O)[O-]
    enc = tok.encode(mol.name)
    pairs = _gold_pairs(mol, enc)
    assert {a for a, _ in pairs} == {"N10", "O11", "O12"}  # not the ester O1, O3
    assert {t for _, t in pairs} == {"nitro"}


def test_trifluoromethyl_maps_fluoro_to_all_f(mols, tok):
    mol = mols["trifluoromethylbenzene"]
    enc = tok.encode(mol.name)
    assert enc.tokens == ["[CLS]", "tri", "fluoro", "methyl", "benzene", "[SEP]"]
    mask = gold_mask(mol, enc)
    f_atoms = [i for i, e in enumerate(mol.elements) if e == "F"]
    assert len(f_atoms) == 3
    assert np.flatnonzero(mask[:, 2]).tolist() == f_atoms
    assert mask.sum() == 3


def test_nitrate_nitrile_and_chloride(mols, tok):
    mol = mols["butyl nitrate"]  # CCCCO[N+](=O)[O-]
    enc = tok.encode(mol.name)
    assert _gold_pairs(mol, enc) == {
        ("O4", "nitrate"),
        ("N5", "nitrate"),
        ("O6", "nitrate"),
        ("O7", "nitrate"),
    }
    mol = mols["benzonitrile"]
    pairs = _gold_pairs(mol, tok.encode(mol.name))
    assert pairs == {("C6", "nitrile"), ("N7", "nitrile")}  # c1ccc(cc1)C#N
    mol = mols["methanesulfonyl chloride"]
    assert _gold_pairs(mol, tok.encode(mol.name)) == {("Cl4", "chloride")}


def test_no_gold_without_fragment_or_atoms(mols, tok):
    mol = mols["9H-fluorene"]  # no fluorine, and "fluor..." is no gold token
    assert not gold_mask(mol, tok.encode(mol.name)).any()
    mol = mols["heptachlor"]  # has Cl, but the trade name has no 'chloro' fragment
    assert not gold_mask(mol, tok.encode(mol.name)).any()
    # a lexicon token with no matching atoms gives an empty column, not an error
    mask = gold_mask(mols["ethane"], ["[CLS]", "chloro", "ethane", "[SEP]"])
    assert mask.shape == (2, 4) and not mask.any()
