"""The texts and structures of synthetic samples (numpy only): node labels, the model's own token
pieces, which tokens are special, and the gold alignment mask (node x token) where the text gives
one. Used by :mod:`store.synthetic`, which adds attention, targets and predictions.

Three kinds:

* ``"words"``: random element labels and a text of repeating name fragments ("meth", "yl",
  "chloro", ...) between [CLS] and [SEP]; gold cells are random (one token for about half of the
  nodes). Sizes are drawn uniformly from the given ranges; the cheapest kind, for tests of the
  format and for benchmarks.
* ``"molecule"``: FreeSolv-like molecules, IUPAC-like names tokenised as the reference model
  does ("[CLS]", "2", ",", "3", "-", "di", "chloro", "eth", "ane", "[SEP]"); the atoms are those
  the name implies (carbons of the stems, the halogens of the substituents, N and O of nitro and
  of the suffix) in random order. Gold cells link each halogen fragment to its atoms and
  "nitro" to its N and O atoms (design section 7). Sizes follow from the name; names outside the
  ranges are drawn again.
* ``"crystal"``: crystal-like cells (many repeated O, the singletons Si and Mn, Mg filling the
  rest) described by robocrystallographer-like texts in WordPiece pieces ("Mg" + "##²⁺",
  "2" + "##." + "##09"); gold cells link each atom to the element pieces of its species.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "SampleText", "sample_text", "default_sizes"]

KINDS = ("words", "molecule", "crystal")

_ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "H")
_WORDS = ("meth", "yl", "chloro", "benz", "ene", "ol", "amine", "prop", "an", "one", "fluoro")

# molecules: fragment -> element, stem -> carbons, suffix -> heteroatoms, multiplier prefixes
_HALO = {"chloro": "Cl", "fluoro": "F", "bromo": "Br", "iodo": "I"}
_STEMS = {"meth": 1, "eth": 2, "prop": 3, "but": 4, "pent": 5, "hex": 6, "benz": 6, "hept": 7}
_SUFFIX = {
    "an": [],
    "ane": [],
    "ol": ["O"],
    "al": ["O"],
    "one": ["O"],
    "oic": ["O", "O"],
    "amine": ["N"],
    "ene": [],
    "nitrile": ["N"],
}
_MULT = {1: [], 2: ["di"], 3: ["tri"]}
_MAX_DRAWS = 10_000  # names drawn for one molecule before the size ranges are called impossible

# crystals (robocrystallographer-like, WordPiece pieces): species -> charge piece
_SPECIES = {"Mg": "##²⁺", "O": "##²⁻", "Mn": "##³⁺", "Si": "##⁴⁺"}
_FILLER = (
    "is bonded to",
    "equivalent",
    "atoms to form",
    "octahedra that share corners with",
    "tetrahedra",
    "and",
    "edges with",
    "the corner - sharing octahedral tilt angles are",
    "a",
    "distorted",
    "bent",
    "geometry",
    "There are",
    "inequivalent sites",
    "In the first site",
)

_DEFAULT_SIZES = {
    "words": ((1, 6), (1, 9)),
    "molecule": ((2, 24), (4, 40)),
    "crystal": ((1, 6), (1, 9)),
}


@dataclass(frozen=True)
class SampleText:
    """One sample's structure and text: ``labels`` (one per node), ``tokens`` (the model's
    pieces), ``special`` (bool per token), ``gold`` (bool ``[n_nodes, n_tokens]``; all False
    where the kind has no alignment for the sample)."""

    labels: list[str]
    tokens: list[str]
    special: np.ndarray
    gold: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.labels)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def default_sizes(kind: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ``(nodes, tokens)`` inclusive size ranges a kind uses when none are given."""
    _check_kind(kind)
    return _DEFAULT_SIZES[kind]


def sample_text(
    kind: str,
    rng: np.random.Generator,
    nodes: tuple[int, int],
    tokens: tuple[int, int],
    *,
    n_special: int = 2,
) -> SampleText:
    """Draw one sample of ``kind`` with ``rng``; node and token counts within the inclusive
    ranges ``nodes`` and ``tokens``. ``n_special`` (``"words"`` only): special tokens, [CLS]
    first and [SEP] last, in texts of at least three tokens (the other kinds always have both)."""
    _check_kind(kind)
    if kind == "molecule":
        return _molecule(rng, nodes, tokens)
    n = int(rng.integers(nodes[0], nodes[1] + 1))
    t = int(rng.integers(tokens[0], tokens[1] + 1))
    if kind == "crystal":
        return _crystal(rng, n, t)
    return _words(rng, n, t, n_special)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(KINDS)}; got {kind!r}")


def _words(rng: np.random.Generator, n: int, t: int, n_special: int) -> SampleText:
    special = np.zeros(t, dtype=bool)
    if t >= 3:
        special[0] = n_special >= 1
        special[-1] = n_special >= 2
    start = int(rng.integers(0, len(_WORDS)))
    toks = [_WORDS[(start + j) % len(_WORDS)] for j in range(t)]
    if special[0]:
        toks[0] = "[CLS]"
    if special[-1]:
        toks[-1] = "[SEP]"
    labels = [_ELEMENTS[j] for j in rng.integers(0, len(_ELEMENTS), n)]
    gold = np.zeros((n, t), dtype=bool)
    has = np.flatnonzero(rng.random(n) < 0.5)
    gold[has, rng.integers(0, t, size=len(has))] = True
    return SampleText(labels, toks, special, gold)


def _molecule(
    rng: np.random.Generator, nodes: tuple[int, int], tokens: tuple[int, int]
) -> SampleText:
    for _ in range(_MAX_DRAWS):
        toks, atoms, halo_cols = _iupac_name(rng)
        if nodes[0] <= len(atoms) <= nodes[1] and tokens[0] <= len(toks) <= tokens[1]:
            break
    else:
        raise ValueError(
            f"no molecule name with {nodes[0]}-{nodes[1]} atoms and {tokens[0]}-{tokens[1]} "
            f"tokens in {_MAX_DRAWS} draws; widen `nodes` / `tokens` (names have at least 4 "
            "tokens and 1 atom)"
        )
    perm = rng.permutation(len(atoms))
    atoms = [atoms[i] for i in perm]
    special = np.array([x.startswith("[") for x in toks])
    gold = np.zeros((len(atoms), len(toks)), dtype=bool)
    for col, el in halo_cols:
        gold[[i for i, a in enumerate(atoms) if a == el], col] = True
    nitro = [i for i, x in enumerate(toks) if x == "nitro"]
    if nitro:
        gold[[i for i, a in enumerate(atoms) if a in ("N", "O")][:3], nitro[0]] = True
    return SampleText(atoms, toks, special, gold)


def _iupac_name(rng: np.random.Generator) -> tuple[list[str], list[str], list[tuple[int, str]]]:
    """Tokens of one IUPAC-like name, the atoms it implies (unordered), and the columns of its
    halogen fragments with their element."""
    toks = ["[CLS]"]
    atoms: list[str] = []
    halo_cols: list[tuple[int, str]] = []
    for _ in range(int(rng.integers(0, 4))):  # substituents, e.g. "2,3-dichloro"
        frag = str(rng.choice(list(_HALO)))
        k = int(rng.integers(1, 4))
        locs = sorted(rng.choice(np.arange(1, 9), size=k, replace=False).tolist())
        for j, loc in enumerate(locs):
            if j:
                toks.append(",")
            toks.append(str(loc))
        toks.append("-")
        toks += _MULT[k]
        halo_cols.append((len(toks), _HALO[frag]))
        toks.append(frag)
        atoms += [_HALO[frag]] * k
    if rng.random() < 0.3:
        toks += ["4", "-", "nitro"]
        atoms += ["N", "O", "O"]
    for _ in range(int(rng.integers(1, 3))):
        stem = str(rng.choice(list(_STEMS)))
        toks.append(stem)
        atoms = ["C"] * _STEMS[stem] + atoms
        if rng.random() < 0.3:
            toks.append("yl")
    suffix = str(rng.choice(list(_SUFFIX)))
    toks.append(suffix)
    atoms += _SUFFIX[suffix]
    toks.append("[SEP]")
    return toks, atoms, halo_cols


def _crystal(rng: np.random.Generator, n: int, t: int) -> SampleText:
    """Element labels with many repeats and singletons (60 % O, one Si, one Mn, Mg for the rest),
    a text of ``t`` pieces with [CLS]/[SEP], gold on the element pieces of each atom's species."""
    order = list(_SPECIES)
    n_o = max(1, (3 * n) // 5)
    labels = ["O"] * n_o + ["Si"] * (n >= 3) + ["Mn"] * (n >= 4)
    labels = (["Mg"] * (n - len(labels)) + labels)[:n]
    toks = ["[CLS]"]
    while len(toks) < t - 1:
        r = rng.random()
        if r < 0.12:
            el = order[int(rng.integers(0, len(order)))]
            toks += [el, _SPECIES[el]]
        elif r < 0.2:
            toks += [str(int(rng.integers(1, 4))), "##.", f"##{int(rng.integers(0, 99)):02d}"]
        else:
            toks += _FILLER[int(rng.integers(0, len(_FILLER)))].split()
    toks = toks[: t - 1] + ["[SEP]"] if t > 1 else ["[CLS]"]
    special = np.array([x in ("[CLS]", "[SEP]") for x in toks])
    gold = (
        np.array(labels, dtype=object)[:, None] == np.array(toks, dtype=object)[None, :]
    ) & ~special
    return SampleText(labels, toks, special, gold)
