"""Chemistry-aware sub-word tokenizer for molecule names (Hugging Face ``tokenizers``).

Design (why not a trained BPE/WordPiece/Unigram vocabulary): the library's trainers, run on the
~510 training names, learn whole-word pieces that cross morpheme boundaries ("trifluoromethyl",
"dichlorodibenzo", "benza" + "mid" + "e"), so "chloro"/"fluoro" often never become tokens of their
own and name fragments could not be aligned with atoms. Instead the vocabulary is built from the
training names as

    special tokens + every character seen in the training names + those curated chemistry
    morphemes (:data:`CHEMISTRY_FRAGMENTS`) that occur in the training names,

and applied by the library's ``Unigram`` model with fixed scores (no training): Viterbi picks the
segmentation with the highest total log-score, every morpheme scores :data:`FRAGMENT_SCORE` and
every single character :data:`CHAR_SCORE`, so a word is cut into the fewest morphemes and single
characters are used only where no morpheme fits. Pieces read the same anywhere in a word (no
continuation prefix). A pre-tokenizer first splits on whitespace and isolates every non-letter
character (digits, hyphens, commas, brackets...). Hence::

    "2-chloro"        -> "2", "-", "chloro"
    "trifluoromethyl" -> "tri", "fluoro", "methyl"

Letters that no morpheme covers fall back to single characters; a word with a character never seen
in training becomes one ``[UNK]``. ``encode`` adds ``[CLS] ... [SEP]``; ``[PAD]`` has id 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CHEMISTRY_FRAGMENTS", "SPECIAL_TOKENS", "Encoding", "NameTokenizer"]

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)
FORMAT = "attncmp-name-tokenizer"
FORMAT_VERSION = 1
DEFAULT_MAX_LENGTH = 128
# Unigram log-scores: Viterbi maximises the sum, so a name is cut into the fewest morphemes, and a
# single-character piece costs as much as ten morphemes (used only where no morpheme fits).
FRAGMENT_SCORE = -1.0
CHAR_SCORE = -10.0

# Curated morphemes of organic nomenclature. Viterbi prefers the fewest pieces, so a longer entry
# (e.g. "methyl") wins over its prefix plus the rest ("meth" + "yl").
CHEMISTRY_FRAGMENTS = (
    # halogens, nitrogen/oxygen/sulfur/phosphorus groups
    "fluoro", "chloro", "bromo", "iodo", "chloride", "bromide", "iodide", "fluoride",
    "nitro", "nitroxy", "nitrile", "nitrate", "nitrite", "nitroso", "cyano", "carbonitrile",
    "amino", "amine", "amide", "imine", "imide", "anilino", "aniline", "azo", "azine", "azole",
    "hydrazine", "ammonia", "urea",
    "hydroxy", "oxy", "oxo", "oxide", "oxane", "oxirane", "epoxy", "peroxy",
    "methoxy", "ethoxy", "propoxy", "butoxy", "phenoxy", "acetoxy",
    "thio", "thiol", "thiolane", "thiophene", "sulfanyl", "sulfonyl", "sulfinyl", "sulfide",
    "sulfone", "sulfon", "sulfur", "sulfate", "sulfo", "sulf", "mercapto", "thioxo", "thioyl",
    "phospho", "phosphate", "phosphane", "phosphino", "phosphoryl", "phosph",
    # carbon chains and rings
    "meth", "eth", "prop", "but", "pent", "hex", "hept", "oct", "non", "dec", "undec", "dodec",
    "methyl", "ethyl", "propyl", "butyl", "pentyl", "hexyl", "heptyl", "octyl", "nonyl", "decyl",
    "methylene", "ethylene", "ethenyl", "vinyl", "allyl", "isopropyl", "isobutyl", "isopentyl",
    "tert", "sec", "iso", "neo", "cyclo", "spiro", "bicyclo",
    "benz", "benzo", "benzene", "benzyl", "benzoyl", "phen", "phenyl", "phenol", "toluene",
    "xylene", "cresol", "styrene", "tolyl", "anisole", "salicyl", "benzhydryl", "phthal",
    "naphth", "naphthalen", "naphthalene", "naphthyl", "anthracen", "anthracene", "anthra",
    "phenanthren", "phenanthrene", "quinone", "quin", "uracil", "glycol", "glycer", "profen",
    "pyr", "pyridin", "pyridine", "pyridyl", "pyrazine", "pyridazin", "pyrimidin", "pyrrol",
    "pyrrolidin", "pyrrolidine", "pyran", "azin",
    "piperidine", "piperazine", "morpholine", "furan", "indol", "indane", "quinolin", "azetidine",
    "imidazol", "pyrazol", "triazin", "dioxin", "dioxane", "dioxol",
    # suffixes and infixes
    "ane", "ene", "yne", "an", "en", "yn", "yl", "ylidene", "dien", "diene", "triene", "buta",
    "ol", "diol", "triol", "al", "one", "dione", "oic", "oate", "ate", "ic", "ide", "ite", "ine",
    "acid", "ester", "ether", "anhydride", "aldehyde", "ketone", "alcohol", "carboxylic",
    "carboxylate", "carbox", "carbonyl", "carbamate", "carbon", "formyl", "formate", "acetyl",
    "acetate", "acetic", "aceto", "acet", "carbaldehyde", "carbo", "carb", "form", "oyl", "imid",
    "propion", "butyr", "cyan", "hydro", "hydrogen", "dihydro",
    # multipliers
    "mono", "bi", "di", "tri", "tetr", "tetra", "penta", "hexa", "hepta", "octa", "bis", "tris",
    # descriptors
    "ortho", "meta", "para", "cis", "trans",
)  # fmt: skip


@dataclass(frozen=True)
class Encoding:
    """One tokenised name, aligned position by position."""

    tokens: list[str]  # [n_tokens] token strings, incl. [CLS] and [SEP]
    ids: list[int]  # [n_tokens] vocabulary ids
    special: list[bool]  # [n_tokens] True for [CLS]/[SEP] (added tokens); False for [UNK]
    char_spans: list[tuple[int, int]]  # [n_tokens] (start, end) in the name; (0, 0) for specials

    def __len__(self) -> int:
        return len(self.ids)


def _build_hf_tokenizer(vocab: list[tuple[str, float]], max_length: int):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

    pieces = [(token, score) for token, score in vocab]
    unk_id = [t for t, _ in vocab].index(UNK)
    tok = Tokenizer(models.Unigram(pieces, unk_id=unk_id, byte_fallback=False))
    ids = {t: i for i, (t, _) in enumerate(vocab)}
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"[^A-Za-z]"), behavior="isolated"),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])],
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.enable_truncation(max_length)
    return tok


class NameTokenizer:
    """Tokenizer for molecule names; build with :meth:`train`, persist with :meth:`to_json`."""

    def __init__(self, hf_tokenizer, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self._tok = hf_tokenizer
        self.max_length = int(max_length)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        names: Iterable[str],
        *,
        fragments: Iterable[str] = CHEMISTRY_FRAGMENTS,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> NameTokenizer:
        """Build the vocabulary from training names (deterministic for the same inputs).

        Vocabulary order: special tokens, the sorted characters of the names (whitespace
        excluded), then the ``fragments`` that occur in at least one name, in the given order.
        """
        names = list(names)
        if not names:
            raise ValueError("`names` is empty: need at least one training name")
        if max_length < 3:
            raise ValueError(f"`max_length` must be >= 3, got {max_length}")
        scores: dict[str, float] = {token: 0.0 for token in SPECIAL_TOKENS}
        for ch in sorted({ch for name in names for ch in name if not ch.isspace()}):
            scores.setdefault(ch, CHAR_SCORE)
        corpus = "\n".join(names)
        for frag in fragments:
            if frag in corpus:
                scores.setdefault(frag, FRAGMENT_SCORE)
        return cls(_build_hf_tokenizer(list(scores.items()), max_length), max_length)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_json(self) -> str:
        """A JSON string that :meth:`from_json` turns back into an identical tokenizer."""
        return json.dumps(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "max_length": self.max_length,
                "hf_tokenizer": json.loads(self._tok.to_str()),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, s: str) -> NameTokenizer:
        from tokenizers import Tokenizer

        try:
            payload = json.loads(s)
            if payload.get("format") != FORMAT:
                raise ValueError(f"format is {payload.get('format')!r}, expected {FORMAT!r}")
            if payload.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {payload.get('format_version')!r}")
            hf = Tokenizer.from_str(json.dumps(payload["hf_tokenizer"]))
            return cls(hf, int(payload["max_length"]))
        except Exception as exc:  # json, KeyError, the library's own parse errors
            raise ValueError(f"not a serialised attncmp name tokenizer: {exc}") from None

    # -- use ----------------------------------------------------------------------------------
    def encode(self, name: str) -> Encoding:
        """Tokenise one name: ``[CLS]`` pieces ``[SEP]`` (truncated to ``max_length``)."""
        enc = self._tok.encode(name)
        # The Unigram model reports an unknown piece by its surface text; name it [UNK] so that
        # tokens[i] is always the vocabulary entry of ids[i].
        return Encoding(
            tokens=[
                t if i != self.unk_id else UNK for t, i in zip(enc.tokens, enc.ids, strict=True)
            ],
            ids=list(enc.ids),
            special=[bool(s) for s in enc.special_tokens_mask],
            char_spans=[(int(a), int(b)) for a, b in enc.offsets],
        )

    def tokenize(self, name: str) -> list[str]:
        """The pieces of ``name`` without special tokens."""
        enc = self.encode(name)
        return [t for t, s in zip(enc.tokens, enc.special, strict=True) if not s]

    def id_to_token(self, i: int) -> str:
        token = self._tok.id_to_token(int(i))
        if token is None:
            raise IndexError(f"token id {i} out of range (vocab_size={self.vocab_size})")
        return token

    def get_vocab(self) -> dict[str, int]:
        return dict(self._tok.get_vocab(with_added_tokens=True))

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def pad_id(self) -> int:
        return int(self._tok.token_to_id(PAD))

    @property
    def unk_id(self) -> int:
        return int(self._tok.token_to_id(UNK))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameTokenizer) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"NameTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"
