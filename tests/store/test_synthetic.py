"""The one synthetic-store generator (:mod:`attncmp.store.synthetic`): deterministic per sample
whatever the batching or sharding, the planted effect goes the stated way, molecule gold cells are
the halogen / nitro fragments of the atoms the name implies, crystal texts have their species,
and the options a store is written with are the ones it holds."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest
from attncmp.store import SiteSpec, open_store
from attncmp.store.synthetic import (
    STUDY,
    SynthOptions,
    study_sites,
    synthetic_batch,
    synthetic_spec,
    write_synthetic_store,
)

SITES = (
    SiteSpec("atom_to_text", n_layers=2, n_heads=3),
    SiteSpec("pool", "single", "tokens", n_heads=2),
    SiteSpec("text_pool", "nodes", "single"),
)
_HALO = {"chloro": "Cl", "fluoro": "F", "bromo": "Br", "iodo": "I"}
_MULT = {"di": 2, "tri": 3}


def _samples(batch):
    """Split a FlatBatch back into per-sample pieces (independently of the generator)."""
    out, nn, nt = [], batch.n_nodes, batch.n_tokens
    no, to = np.concatenate([[0], np.cumsum(nn)]), np.concatenate([[0], np.cumsum(nt)])
    go = 0
    for i in range(len(batch)):
        g = None
        if batch.gold_present is not None and batch.gold_present[i]:
            size = int(nn[i] * nt[i])
            g = batch.gold[go : go + size].reshape(nn[i], nt[i])
            go += size
        out.append(
            {
                "labels": batch.node_labels[no[i] : no[i + 1]],
                "tokens": batch.tokens[to[i] : to[i + 1]],
                "special": batch.special[to[i] : to[i + 1]],
                "gold": g,
                "target": batch.targets[i],
            }
        )
    return out


def _attention(batch, spec, model, site_name):
    """Per-sample [L, H, Q, K] blocks of one model and site."""
    site = next(s for s in spec.sites if s.name == site_name)
    size = {"nodes": batch.n_nodes, "tokens": batch.n_tokens, "single": np.ones(len(batch), int)}
    q, k = size[site.query_axis], size[site.key_axis]
    ends = np.cumsum(site.n_layers * site.n_heads * q * k)
    flat = batch.attention[model][site_name]
    return [
        b.reshape(site.n_layers, site.n_heads, qi, ki)
        for b, qi, ki in zip(np.split(flat, ends[:-1]), q, k, strict=True)
    ]


def _entropy(a):
    return -(a * np.log(np.where(a > 0, a, 1.0))).sum(-1)


@pytest.mark.parametrize("kind", ["words", "molecule", "crystal"])
def test_a_sample_is_the_same_whatever_the_batch_or_shard(kind):
    spec = synthetic_spec(9, sites=SITES, has_gold=True)
    opt = replace(STUDY, kind=kind, shared_base=0.5, sharpness={"full": 1.5})
    whole = synthetic_batch(spec, spec.selection_ids, opt)
    ones = [synthetic_batch(spec, [i], opt) for i in reversed(spec.selection_ids)][::-1]
    shard = replace(spec, shard_index=1, shard_count=3)
    part = synthetic_batch(shard, spec.selection_ids[3:6], opt)
    for k, one in enumerate(ones):
        assert _samples(one)[0]["tokens"] == _samples(whole)[k]["tokens"]
        for m in ("full", "no_middle"):
            for s in SITES:
                np.testing.assert_array_equal(
                    _attention(one, spec, m, s.name)[0], _attention(whole, spec, m, s.name)[k]
                )
        if 3 <= k < 6:
            np.testing.assert_array_equal(
                _attention(part, spec, "full", "atom_to_text")[k - 3],
                _attention(whole, spec, "full", "atom_to_text")[k],
            )
    other = synthetic_batch(spec, spec.selection_ids, replace(opt, seed=1))
    assert not np.array_equal(other.targets, whole.targets)


def test_written_in_batches_or_shards_the_store_holds_the_same_samples(tmp_path):
    spec = synthetic_spec(10, sites=SITES, has_gold=True, dtype="float32", compression="lzf")
    a = write_synthetic_store(tmp_path / "a.h5", spec, kind="crystal", batch_size=3)
    parts = [
        write_synthetic_store(
            tmp_path / f"p{i}.h5",
            replace(spec, shard_index=i, shard_count=2),
            kind="crystal",
            batch_size=4,
        )  # fmt: skip
        for i in range(2)
    ]
    with open_store(a) as sa, open_store(parts) as sp:
        assert sa.ids == sp.ids and len(sa.ids) == 10
        for sid in sa.ids:
            assert sa.sample(sid).tokens == sp.sample(sid).tokens
            np.testing.assert_array_equal(
                sa.attention("no_middle", "atom_to_text", sid),
                sp.attention("no_middle", "atom_to_text", sid),
            )
            np.testing.assert_array_equal(sa.gold(sid), sp.gold(sid))
    with h5py.File(a) as f:  # the spec's dtype and compression are what was written
        ds = f["models/full/attention/atom_to_text/data"]
        assert ds.dtype == np.float32 and ds.compression == "lzf"


def test_rows_are_distributions_and_length_one_keys_are_one():
    spec = synthetic_spec(8, sites=SITES)
    b = synthetic_batch(spec, spec.selection_ids, sink=1.0, head_bias=1.0, head_spread=0.5)
    for m in ("full", "no_middle"):
        for a in _attention(b, spec, m, "atom_to_text") + _attention(b, spec, m, "pool"):
            np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
            assert (a >= 0).all()
        for a in _attention(b, spec, m, "text_pool"):
            assert (a == 1.0).all()


def test_sharpness_concentrates_that_model_and_equal_options_are_a_null():
    spec = synthetic_spec(60, sites=SITES[:1])
    sharp = synthetic_batch(spec, spec.selection_ids, nodes=(2, 6), tokens=(8, 16),
                            sharpness={"full": 2.0})  # fmt: skip
    null = synthetic_batch(spec, spec.selection_ids, nodes=(2, 6), tokens=(8, 16))

    def diffs(batch):  # per sample: mean row entropy of no_middle minus full
        full = _attention(batch, spec, "full", "atom_to_text")
        nm = _attention(batch, spec, "no_middle", "atom_to_text")
        return np.array(
            [_entropy(b).mean() - _entropy(a).mean() for a, b in zip(full, nm, strict=True)]
        )

    d = diffs(sharp)
    assert (d > 0).mean() > 0.9  # the sharper model has lower entropy in nearly every sample
    d0 = diffs(null)
    assert abs(d0.mean()) < 3 * d0.std(ddof=1) / np.sqrt(len(d0))  # no systematic difference
    assert 0.2 < (d0 > 0).mean() < 0.8


def test_identical_rows_shared_base_and_noise():
    spec = synthetic_spec(20, sites=SITES[:1])
    ids = spec.selection_ids
    b = synthetic_batch(spec, ids, nodes=(3, 6), identical_rows=("no_middle",))
    for a in _attention(b, spec, "no_middle", "atom_to_text"):
        np.testing.assert_array_equal(a, np.broadcast_to(a[:, :, :1], a.shape))
    assert any(not np.allclose(a, a[:, :, :1]) for a in _attention(b, spec, "full", "atom_to_text"))

    def model_corr(batch):  # correlation of the two models' row-centred log weights (logits)
        def logits(m):
            la = [np.log(a) for a in _attention(batch, spec, m, "atom_to_text")]
            return np.concatenate([(x - x.mean(-1, keepdims=True)).ravel() for x in la])

        return np.corrcoef(logits("full"), logits("no_middle"))[0, 1]

    kw = dict(nodes=(3, 6), tokens=(6, 12))
    assert model_corr(synthetic_batch(spec, ids, shared_base=2.0, **kw)) > 0.5
    assert abs(model_corr(synthetic_batch(spec, ids, **kw))) < 0.1
    nb = synthetic_batch(spec, ids, noise={"full": 0.0, "no_middle": 2.0})
    np.testing.assert_array_equal(nb.predictions["full"], nb.targets)
    assert np.std(nb.predictions["no_middle"] - nb.targets) > 1.0


def test_molecule_gold_links_each_fragment_to_the_atoms_the_name_implies():
    spec = synthetic_spec(40, sites=study_sites(1, 2), has_gold=True)
    b = synthetic_batch(spec, spec.selection_ids, STUDY)
    n_halo = 0
    for s in _samples(b):
        toks, labels, gold = s["tokens"], s["labels"], s["gold"]
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
        assert s["special"].tolist() == [t in ("[CLS]", "[SEP]") for t in toks]
        # atoms of each halogen from the name: multiplier before the fragment, else 1
        want: dict[str, int] = {}
        for j, t in enumerate(toks):
            if t in _HALO:
                want[_HALO[t]] = want.get(_HALO[t], 0) + _MULT.get(toks[j - 1], 1)
        for el in set(_HALO.values()):
            assert labels.count(el) == want.get(el, 0), (toks, labels)
        for i, j in zip(*np.nonzero(gold), strict=True):
            t = toks[j]
            assert (t in _HALO and labels[i] == _HALO[t]) or (t == "nitro" and labels[i] in "NO")
        for i, el in enumerate(labels):
            if el in _HALO.values():  # every halogen atom points at its fragment(s)
                n_halo += 1
                assert {toks[j] for j in np.flatnonzero(gold[i])} == {
                    t for t in toks if _HALO.get(t) == el
                }
        if "nitro" in toks:
            assert gold[:, toks.index("nitro")].sum() == 3
    assert n_halo > 20


def test_align_puts_mass_on_the_gold_tokens():
    spec = synthetic_spec(30, sites=study_sites(1, 2, extra=False), has_gold=True)
    mass = {}
    for align in (0.0, 2.5):
        b = synthetic_batch(spec, spec.selection_ids, STUDY, align=align)
        atts = _attention(b, spec, "full", "atom_to_text")
        per = [(a * s["gold"]).sum(-1)[..., s["gold"].any(1)].mean()
               for a, s in zip(atts, _samples(b), strict=True) if s["gold"].any()]  # fmt: skip
        mass[align] = np.mean(per)
    assert mass[2.5] > 2 * mass[0.0]


def test_crystal_texts_have_repeated_and_singleton_species():
    spec = synthetic_spec(4, sites=SITES[:1], has_gold=True)
    b = synthetic_batch(spec, spec.selection_ids, kind="crystal", nodes=(40, 40),
                        tokens=(300, 300))  # fmt: skip
    for s in _samples(b):
        labels, toks = s["labels"], s["tokens"]
        assert len(labels) == 40 and len(toks) == 300
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
        assert labels.count("O") == 24 and labels.count("Si") == labels.count("Mn") == 1
        assert any(t.startswith("##") for t in toks)  # WordPiece continuation pieces
        for j, t in enumerate(toks[:-2]):
            if t in ("Mg", "O", "Mn", "Si"):
                assert toks[j + 1].startswith("##") and toks[j + 1][-1] in "+-⁺⁻"
        want = np.array([[lab == t for t in toks] for lab in labels]) & ~s["special"]
        np.testing.assert_array_equal(s["gold"], want)
        assert s["gold"].any()


def test_words_specials_and_gold_presence():
    spec = synthetic_spec(12, sites=SITES[:1], has_gold=True)
    b = synthetic_batch(spec, spec.selection_ids, tokens=(1, 6))
    assert b.gold_present.tolist() == [k % 2 == 0 for k in range(12)]
    for s in _samples(b):
        t = len(s["tokens"])
        assert s["special"].tolist() == (
            [True] + [False] * (t - 2) + [True] if t >= 3 else [False] * t
        )
    one = synthetic_batch(spec, spec.selection_ids, tokens=(5, 5), n_special=1)
    assert all(s["special"].tolist() == [True, False, False, False, False] for s in _samples(one))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="`kind` must be one of words, molecule, crystal"):
        SynthOptions(kind="protein")
    with pytest.raises(ValueError, match="`nodes`"):
        SynthOptions(nodes=(5, 2))
    spec = synthetic_spec(2, sites=SITES[:1])
    with pytest.raises(ValueError, match="no molecule name with 30-30 atoms"):
        synthetic_batch(spec, spec.selection_ids, kind="molecule", nodes=(30, 30), tokens=(4, 4))
    with pytest.raises(ValueError, match=r"`sharpness` names models \['ful'\]"):
        synthetic_batch(spec, spec.selection_ids, sharpness={"ful": 2.0})
    with pytest.raises(ValueError, match="`meta` columns must be among"):
        synthetic_spec(2, meta=("colour",))
