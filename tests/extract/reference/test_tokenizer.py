"""Name tokenizer: chemically sensible pieces, special tokens, JSON round trip."""

from __future__ import annotations

import pytest
from attncmp.extract.reference.data import load_freesolv
from attncmp.extract.reference.tokenizer import NameTokenizer


@pytest.fixture(scope="module")
def tok() -> NameTokenizer:
    return NameTokenizer.train([m.name for m in load_freesolv()])


def test_required_examples(tok):
    assert tok.tokenize("2-chloro") == ["2", "-", "chloro"]
    assert tok.tokenize("trifluoromethyl") == ["tri", "fluoro", "methyl"]


@pytest.mark.parametrize(
    "name, pieces",
    [
        ("1,1,1-trichloroethane", "1 , 1 , 1 - tri chloro eth ane"),
        ("pentanenitrile", "pent ane nitrile"),
        ("hexan-1-ol", "hex an - 1 - ol"),
        ("4-nitrophenol", "4 - nitro phenol"),
        ("1,2-bis(trifluoromethyl)benzene", "1 , 2 - bis ( tri fluoro methyl ) benzene"),
        ("methanesulfonyl chloride", "meth ane sulfonyl chloride"),
        ("2-(nitrooxy)ethan-1-ol", "2 - ( nitro oxy ) eth an - 1 - ol"),
    ],
)
def test_chemical_pieces(tok, name, pieces):
    assert tok.tokenize(name) == pieces.split()


def test_encode_adds_specials_and_spans(tok):
    enc = tok.encode("2-chloropropane")
    assert enc.tokens == ["[CLS]", "2", "-", "chloro", "prop", "ane", "[SEP]"]
    assert enc.special == [True, False, False, False, False, False, True]
    assert len(enc.ids) == len(enc.tokens) == len(enc.char_spans)
    name = "2-chloropropane"
    pieces = [name[a:b] for (a, b), s in zip(enc.char_spans, enc.special, strict=True) if not s]
    assert pieces == enc.tokens[1:-1]
    assert tok.id_to_token(tok.pad_id) == "[PAD]" and tok.pad_id == 0
    assert all(0 <= i < tok.vocab_size for i in enc.ids)


def test_unseen_character_is_unknown_not_crash():
    tok = NameTokenizer.train(["ethane", "chloromethane"])
    enc = tok.encode("ethane-ß")
    assert "[UNK]" in enc.tokens and enc.tokens[0] == "[CLS]"


def test_json_round_trip(tok):
    s = tok.to_json()
    back = NameTokenizer.from_json(s)
    assert back == tok and back.to_json() == s
    assert back.vocab_size == tok.vocab_size
    for name in ["2,3-dichlorodibenzo-p-dioxin", "N,N-dimethylformamide", "ethion"]:
        assert back.encode(name) == tok.encode(name)
    with pytest.raises(ValueError, match="tokenizer"):
        NameTokenizer.from_json('{"format": "something else"}')


def test_training_is_deterministic_and_uses_training_names_only():
    a = NameTokenizer.train(["chloroethane", "bromomethane"])
    b = NameTokenizer.train(["chloroethane", "bromomethane"])
    assert a.to_json() == b.to_json()
    vocab = a.get_vocab()
    assert "chloro" in vocab and "bromo" in vocab and "fluoro" not in vocab
