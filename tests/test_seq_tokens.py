"""Sequence tokenizers (selfsup.data.seq_tokens): layouts and round trips, the token datasets and cache they share with
text (selfsup.data.tokens), the run's tokenizer (selfsup.data.prepare), and k-mer masking for mlm."""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from selfsup.config import RunConfig
from selfsup.data import prepare, tokens
from selfsup.data.alphabet import get_alphabet
from selfsup.data.base import Dataset, Split
from selfsup.data.seq_tokens import CLS, MASK, PAD, RESIDUE_OFFSET, SEP, UNK, SeqTokenizer
from selfsup.data.spec import SeqSpec, TextSpec, TokenSpec, spec_from_dict, spec_to_dict
from selfsup.data.text import string_array
from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.methods.mlm import MLM, MLMParams
from selfsup.views.masking import select_spans, select_tokens

CONFIGS = [(a, k, ov) for a in ("dna", "rna", "protein") for k in (1, 3, 6) for ov in (True, False)
           if not (a == "protein" and k > 3)]  # fmt: skip


def random_seqs(alphabet: str, n: int, seed: int = 0, keep_case: bool = False, ambiguous: float = 0.05,
                lengths=(0, 40)) -> list[str]:  # fmt: skip
    """Sequences of the alphabet's residues: mostly core, some ambiguity codes, lower-case runs when keep_case."""
    alph = get_alphabet(alphabet)
    r = random.Random(seed)
    out = []
    for _ in range(n):
        s = [r.choice(alph.ambiguous) if r.random() < ambiguous else r.choice(alph.core)
             for _ in range(r.randint(*lengths))]  # fmt: skip
        if keep_case and len(s) > 4 and r.random() < 0.5:
            a = r.randrange(len(s) - 3)
            s[a : a + 3] = [c.lower() for c in s[a : a + 3]]
        out.append("".join(s))
    return out


def reference(tok: SeqTokenizer, s: str) -> list[int]:
    """The layout's rules, one residue at a time (what the numpy encoder must equal)."""
    k, core = tok.k, set(tok.core)

    def kmer_ok(i):
        return k > 1 and i + k <= len(s) and all(c in core for c in s[i : i + k])

    single = [tok.token_to_id(c if tok.keep_case else c.upper()) for c in s]
    if tok.overlap:
        return [tok.token_to_id(s[i : i + k]) if kmer_ok(i) else single[i] for i in range(len(s))]
    out = []
    for i in range(0, len(s), k):
        out += [tok.token_to_id(s[i : i + k])] if kmer_ok(i) else single[i : i + k]
    return out


def parts(tok, texts):
    flat, lens = tok.encode_many(texts)
    return [p.tolist() for p in np.split(flat, np.cumsum(lens)[:-1])] if len(lens) else []


def seq_dataset(train: list[str], test: list[str] | None = None, alphabet: str = "dna", name: str = "seqs") -> Dataset:
    def split(seqs):
        return Split(string_array(seqs), (np.arange(len(seqs)) % 2).astype(np.int64))

    return Dataset(name, SeqSpec(name, alphabet, len(train)), split(train), None if test is None else split(test),
                   ["a", "b"])  # fmt: skip


# --- the tokenizer -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alphabet,k,overlap", CONFIGS)
@pytest.mark.parametrize("keep_case", [False, True])
def test_round_trip_and_layout_equal_the_rules_one_residue_at_a_time(alphabet, k, overlap, keep_case):
    tok = SeqTokenizer(alphabet, k, overlap, keep_case)
    seqs = random_seqs(alphabet, 120, seed=k, keep_case=keep_case) + ["", "A", "AC"[: k - 1]]
    got = parts(tok, seqs)
    for s, ids in zip(seqs, got):
        assert ids == reference(tok, s), s
        assert tok.decode(ids) == s
        if overlap or k == 1:
            assert len(ids) == len(s)
    lower = [s for s in seqs if any(c.islower() for c in s)]
    assert bool(lower) == keep_case


def test_vocabulary_layout_and_specials():
    tok = SeqTokenizer("dna", 3)
    vocab = tok.get_vocab()
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (PAD, UNK, CLS, SEP, MASK) == (0, 1, 2, 3, 4)
    assert tok.residues == "ACGTNRYKMSWBDHV" and vocab["A"] == RESIDUE_OFFSET and vocab["N"] == RESIDUE_OFFSET + 4
    assert tok.get_vocab_size() == 5 + 15 + 64 and vocab["AAA"] == tok.first_kmer and vocab["TTT"] == 83
    assert vocab["CGT"] == tok.first_kmer + 1 * 16 + 2 * 4 + 3  # base |core|, first residue most significant
    assert SeqTokenizer("dna", 3, keep_case=True).residues == "ACGTNRYKMSWBDHV" + "acgtnrykmswbdhv"
    assert SeqTokenizer("protein", 1).get_vocab_size() == 5 + 26
    assert SeqTokenizer("dna", 1, overlap=False).overlap  # k = 1: one layout, one hash
    assert tokens.tokenizer_hash(SeqTokenizer("dna", 1, False)) == tokens.tokenizer_hash(SeqTokenizer("dna", 1))
    # ambiguity codes and soft-masked residues are single tokens, never part of a k-mer; other characters [UNK]
    assert [tok.id_to_token(i) for i in tok.encode("ACGNACGT").ids] == ["ACG", "C", "G", "N", "ACG", "CGT", "G", "T"]
    assert tok.encode("AC*").ids == [5, 6, UNK] and tok.decode([CLS, 5, UNK, SEP, PAD]) == "A?"
    assert tok.encode("acgt").ids == tok.encode("ACGT").ids  # without keep_case lower case reads as upper case


def test_unknown_alphabets_and_k_out_of_range_are_one_line_errors():
    for args in (("protein", 4), ("dna", 0), ("dna", 9)):
        with pytest.raises(UserError, match="data.kmer") as e:
            SeqTokenizer(*args)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not an alphabet"):
        SeqTokenizer("klingon")
    with pytest.raises(UserError, match="not text"):
        SeqTokenizer("dna").encode_many(["ACGT", None])


def test_encoding_is_vectorized_fast_enough_for_a_genome_corpus():
    tok = SeqTokenizer("dna", 6)
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), 2000, p=[0.249, 0.25, 0.25, 0.25, 0.001])) for _ in range(100)] * 20
    start = time.perf_counter()
    flat, lens = tok.encode_many(seqs)  # 4 M residues: ~0.15 s on a quiet CPU core
    assert time.perf_counter() - start < 8.0
    assert len(flat) == 4_000_000 and (lens == 2000).all() and flat.dtype == np.int32


def test_encode_batch_matches_encode_many():
    tok = SeqTokenizer("rna", 3, overlap=False)
    seqs = random_seqs("rna", 20)
    assert [e.ids for e in tok.encode_batch(seqs, add_special_tokens=False)] == parts(tok, seqs)
    assert tok.encode_batch([]) == []


# --- files, family, spec ----------------------------------------------------------------------------------


def test_tokenizer_json_round_trips_and_is_recognized(tmp_path):
    tok = SeqTokenizer("dna", 4, overlap=False, keep_case=True)
    path = tmp_path / "tokenizer.json"
    tokens.save_tokenizer(tok, path)
    data = json.loads(path.read_text())
    assert data["selfsup_sequence_tokenizer"] == 1 and data["vocab"] == tok.vocab
    assert (data["alphabet"], data["k"], data["overlap"], data["keep_case"]) == ("dna", 4, False, True)
    back, family = tokens.load_tokenizer(tmp_path)  # a folder holding one loads too
    assert family == "sequence" == tokens.tokenizer_family(back)
    assert back.to_str() == tok.to_str() and tokens.tokenizer_hash(back) == tokens.tokenizer_hash(tok)
    data["vocab"][7] = "Z"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="damaged"):
        tokens.load_tokenizer(path)
    with pytest.raises(UserError, match="wordpiece"):
        tokens.word_piece_table(tok)


def test_token_specs_bidirectional_and_causal_and_old_specs_still_load():
    tok = SeqTokenizer("dna", 6)
    bi = tokens.token_spec(tok, "wordpiece", 64)
    assert (bi.pad_id, bi.cls_id, bi.sep_id, bi.mask_id, bi.unk_id, bi.causal) == (PAD, CLS, SEP, MASK, UNK, False)
    assert bi.special_ids == (0, 1, 2, 3, 4) and bi.vocab_size == tok.get_vocab_size()
    assert (bi.alphabet, bi.residues, bi.kmer, bi.kmer_stride) == ("dna", tok.residues, 6, 1)
    causal = tokens.token_spec(tok, "bpe", 64)
    assert causal.causal and causal.eos_id == SEP and causal.pad_id == PAD and causal.mask_id is None
    assert tokens.token_spec(SeqTokenizer("dna", 3, False), "wordpiece", 64).kmer_stride == 3
    assert spec_from_dict(spec_to_dict(bi)) == bi
    old = {k: v for k, v in spec_to_dict(bi).items() if k not in ("alphabet", "residues", "kmer", "kmer_stride")}
    assert spec_from_dict(old).kmer == 1 and spec_from_dict(old).alphabet == ""  # an encoder.json from before
    with pytest.raises(UserError, match="max_len"):
        tokens.token_spec(tok, "wordpiece", 2)


# --- token datasets ---------------------------------------------------------------------------------------


def test_pretraining_windows_causal_packing_and_evaluation_windows():
    tok = SeqTokenizer("dna", 3)
    seqs = random_seqs("dna", 30, seed=1, lengths=(5, 70))
    spec = tokens.token_spec(tok, "wordpiece", 16)
    ds = tokens.tokenize_dataset(seq_dataset(seqs, seqs[:10]), tok, spec, "pretrain", log=lambda s: None)
    x, lengths = np.asarray(ds.train.x), np.asarray(ds.train.lengths)
    assert ds.spec is spec and ds.tokenizer is tok and ds.train.y is None
    assert (x[:, 0] == CLS).all() and (x[np.arange(len(x)), lengths - 1] == SEP).all()
    body = np.concatenate([x[i, 1 : lengths[i] - 1] for i in range(len(x))])
    assert not np.isin(body, [PAD, CLS, SEP, MASK]).any()
    ids = parts(tok, seqs)
    assert x[0, 1:15].tolist() == ids[0][:14]  # the first window of the first sequence
    causal = tokens.token_spec(tok, "bpe", 16)
    packed = tokens.tokenize_dataset(seq_dataset(seqs), tok, causal, "pretrain", log=lambda s: None)
    stream = np.asarray(packed.train.x).reshape(-1)
    assert (np.asarray(packed.train.lengths) == 16).all()
    assert stream[: len(ids[0]) + 1].tolist() == ids[0] + [SEP]  # each sequence ends with [SEP] (eos)
    ev = tokens.tokenize_dataset(seq_dataset(seqs, seqs[:10]), tok, spec, "eval", log=lambda s: None, windows=3)
    assert ev.train.x.shape == (30, 48) and ev.test.x.shape == (10, 48) and (ev.train.y == np.arange(30) % 2).all()
    long = int(np.argmax([len(i) for i in ids]))
    row = np.asarray(ev.train.x[long]).reshape(3, 16)
    assert row[0, 0] == CLS and row[0, 15] == SEP and row[0, 1:15].tolist() == ids[long][:14]


def test_the_token_cache_serves_a_second_call_without_encoding(monkeypatch):
    tok = SeqTokenizer("protein", 2)
    seqs = random_seqs("protein", 25, seed=3, lengths=(10, 50))
    spec = tokens.token_spec(tok, "wordpiece", 32)
    first = tokens.tokenize_dataset(seq_dataset(seqs, alphabet="protein"), tok, spec, "pretrain", log=lambda s: None)
    monkeypatch.setattr(SeqTokenizer, "encode_many", lambda self, texts: pytest.fail("encoded again"))
    again = tokens.tokenize_dataset(seq_dataset(seqs, alphabet="protein"), tok, spec, "pretrain", log=lambda s: None)
    assert np.array_equal(np.asarray(first.train.x), np.asarray(again.train.x))
    other = tokens.token_spec(tok, "wordpiece", 24)  # another max_len reuses the split's ids
    assert tokens.tokenize_dataset(seq_dataset(seqs, alphabet="protein"), tok, other, "pretrain",
                                   log=lambda s: None).train.x.shape[1] == 24  # fmt: skip


# --- the run's tokenizer ------------------------------------------------------------------------------------


def seq_cfg(**data) -> RunConfig:
    cfg = RunConfig()
    cfg.method.name = "mlm"
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def method(family="wordpiece", **extra):
    return SimpleNamespace(tokenizer_family=family, **{"raw_kinds": ("text", "sequence"), **extra})


def test_prepare_builds_saves_and_reloads_the_run_tokenizer(tmp_path):
    run = tmp_path / "run"
    ds = seq_dataset(random_seqs("dna", 40, lengths=(20, 90)))
    out = prepare.for_pretraining(ds, seq_cfg(kmer=4, kmer_overlap=False, soft_mask="keep", max_len=32), method(),
                                  run, "cpu", log=lambda s: None)  # fmt: skip
    saved, family = tokens.load_tokenizer(run / "tokenizer.json")
    assert family == "sequence" and (saved.k, saved.overlap, saved.keep_case) == (4, False, True)
    assert out.spec.kmer == 4 and out.spec.kmer_stride == 4 and out.spec.max_len == 32 and not out.spec.causal
    # resuming reads the saved tokenizer, whatever the config says now
    again = prepare.for_pretraining(ds, seq_cfg(kmer=1, max_len=32), method(), run, "cpu", resume=True,
                                    log=lambda s: None)  # fmt: skip
    assert again.spec == out.spec
    causal = prepare.for_pretraining(ds, seq_cfg(kmer=2, max_len=32), method("bpe"), tmp_path / "gpt", "cpu",
                                     log=lambda s: None)  # fmt: skip
    assert causal.spec.causal and (np.asarray(causal.train.lengths) == 32).all()
    ev = prepare.for_evaluation(seq_dataset(random_seqs("dna", 10), random_seqs("dna", 4)), run, out.spec,
                                log=lambda s: None, windows=2)  # fmt: skip
    assert ev.train.x.shape == (10, 64) and ev.spec == out.spec


def test_prepare_errors_are_one_line(tmp_path):
    run = tmp_path / "run"
    ds = seq_dataset(random_seqs("dna", 20, lengths=(20, 40)))
    spec = prepare.for_pretraining(ds, seq_cfg(max_len=32), method(), run, "cpu", log=lambda s: None).spec
    protein = seq_dataset(random_seqs("protein", 10), random_seqs("protein", 4), "protein", "prot")
    with pytest.raises(UserError, match="reads dna and prot holds protein") as e:
        prepare.for_evaluation(protein, run, spec, log=lambda s: None)
    text = Dataset("txt", TextSpec("txt", 2), Split(string_array(["a b", "c d"]), np.array([0, 1])),
                   Split(string_array(["a", "d"]), np.array([0, 1])), ["x", "y"])  # fmt: skip
    with pytest.raises(UserError, match="pretrained on sequences and txt holds text"):
        prepare.for_evaluation(text, run, spec, log=lambda s: None)
    with pytest.raises(UserError, match="takes sequence data and txt holds text"):
        prepare.for_pretraining(text, seq_cfg(), method(raw_kinds=("sequence",)), tmp_path / "t", "cpu")
    with pytest.raises(UserError, match="does not take sequence data"):
        prepare.for_pretraining(ds, seq_cfg(), SimpleNamespace(), tmp_path / "x", "cpu")
    with pytest.raises(UserError, match="reads dna and prot holds protein"):
        prepare.for_pretraining(protein, seq_cfg(), method(), run, "cpu", resume=True, log=lambda s: None)
    for err in (e.value,):
        assert "\n" not in str(err)


# --- masking overlapping k-mers -----------------------------------------------------------------------------


def kmer_rows(k: int, n: int = 64, T: int = 40, seed: int = 0, ambiguous: float = 0.04):
    """[CLS] tokens [SEP] rows of random DNA (ambiguity codes included), padded; a few shorter than k, and every
    eighth a window cut from a longer sequence (ending in k-mers that reach past the row, as pretraining windows)."""
    tok = SeqTokenizer("dna", k)
    spec = tokens.token_spec(tok, "wordpiece", T)
    seqs = random_seqs("dna", n, seed=seed, ambiguous=ambiguous, lengths=(1, T - 2))
    seqs[:4] = ["ACGTAC"[: max(1, k - 1)], "A", "ACGNT", "ACGTACGTAC"]
    seqs[4::8] = random_seqs("dna", len(seqs[4::8]), seed=seed + 1, ambiguous=ambiguous, lengths=(T, 2 * T))
    x = torch.full((n, T), PAD, dtype=torch.long)
    lengths = torch.zeros(n, dtype=torch.long)
    for i, ids in enumerate(p[: T - 2] for p in parts(tok, seqs)):
        x[i, : len(ids) + 2] = torch.tensor([CLS, *ids, SEP])
        lengths[i] = len(ids) + 2
    return x, lengths, spec


def recoverable(ids: torch.Tensor, chosen: torch.Tensor, first_kmer: int, k: int) -> torch.Tensor:
    """bool [B, T]: chosen tokens every residue of which is covered by some unchosen token of the row (so its
    identity can be read off its visible neighbours). Token t covers residue positions t .. t + width - 1."""
    B, T = ids.shape
    width = torch.where(ids >= first_kmer, k, 1)
    ordinary = ids >= RESIDUE_OFFSET
    out = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        for t in torch.nonzero(chosen[b]).flatten().tolist():
            hidden_somewhere = False
            for p in range(t, t + int(width[b, t])):
                covers = [j for j in range(max(0, p - k + 1), min(p + 1, T)) if ordinary[b, j] and j + width[b, j] > p]
                if all(chosen[b, j] for j in covers):
                    hidden_somewhere = True
            out[b, t] = not hidden_somewhere
    return out


@pytest.mark.parametrize("k", [3, 6])
def test_mlm_masks_overlapping_kmers_so_none_can_be_read_off_its_neighbours(k):
    x, lengths, spec = kmer_rows(k, seed=k)
    m = MLM(build_encoder("text_transformer", spec, {"dim": 32, "depth": 1, "heads": 1}), MLMParams(), spec)
    assert m.span == k  # from the spec
    g = torch.Generator().manual_seed(k)
    for _ in range(5):
        _, chosen, ids, _ = m.views(x, g, lengths)
        assert not (chosen & (ids < RESIDUE_OFFSET)).any()  # never [CLS] / [SEP] / padding
        assert not recoverable(ids, chosen, m.first_kmer, k).any()
    # the test can fail: single-token masking (an explicit mask_span wins) leaves most masked k-mers readable
    one = MLM(build_encoder("text_transformer", spec, {"dim": 32, "depth": 1, "heads": 1}), MLMParams(mask_span=1),
              spec)  # fmt: skip
    _, chosen, ids, _ = one.views(x, g, lengths)
    assert one.span == 1 and recoverable(ids, chosen, one.first_kmer, k).float().sum() > 0.5 * chosen.sum()


def test_fit_runs_hide_exactly_span_tokens_and_about_mask_prob_of_them():
    k = 6
    x, lengths, spec = kmer_rows(k, n=400, T=130, seed=1, ambiguous=0.0)
    g = torch.Generator().manual_seed(0)
    ordinary = x >= RESIDUE_OFFSET
    shares = []
    for _ in range(10):
        chosen = select_tokens(x, 0.15, spec.special_ids, lengths, g, span=k, fit_runs=True)
        shares.append((chosen.sum() / ordinary.sum()).item())
        assert not (chosen & ~ordinary).any()
        # runs of hidden tokens: every maximal run is at least k long when its row has k ordinary tokens
        for b in range(40):
            row = chosen[b].tolist()
            runs, cur = [], 0
            for v in row + [False]:
                if v:
                    cur += 1
                elif cur:
                    runs.append(cur)
                    cur = 0
            if ordinary[b].sum() >= k:
                assert all(r >= k for r in runs), (b, row)
    assert abs(np.mean(shares) - 0.15) < 0.02, shares
    # the test can fail: without fit_runs, runs are cut at [CLS] and [SEP]
    cut = select_tokens(x, 0.15, spec.special_ids, lengths, g, span=k)
    assert any(0 < int(cut[b, 1 : 1 + k].sum()) < k or 0 < int(cut[b, lengths[b] - 1 - k : lengths[b] - 1].sum()) < k
               for b in range(len(x)))  # fmt: skip


def test_mlm_mask_rate_with_kmers_is_about_mask_prob():
    x, lengths, spec = kmer_rows(3, n=300, T=100, seed=2)
    m = MLM(build_encoder("text_transformer", spec, {"dim": 32, "depth": 1, "heads": 1}), MLMParams(), spec)
    g = torch.Generator().manual_seed(1)
    ordinary = (x >= RESIDUE_OFFSET).sum()
    share = np.mean([(m.views(x, g, lengths)[1].sum() / ordinary).item() for _ in range(10)])
    assert abs(share - 0.15) < 0.025, share


def test_tera_spans_and_text_masking_are_unchanged_by_the_kmer_option():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    lengths = torch.tensor([50, 80, 17])
    a = select_spans(lengths, 80, 0.15, 7, g1)
    ids = torch.zeros(3, 80, dtype=torch.long)
    b = select_tokens(ids, (1 - (1 - 0.15) ** (1 / 7)) * 7, (), lengths, g2, 7)
    assert torch.equal(a, b)
    text = TokenSpec(vocab_size=100, max_len=20, pad_id=0, cls_id=2, sep_id=3, mask_id=4, unk_id=1,
                     special_ids=(0, 1, 2, 3, 4))  # fmt: skip
    m = MLM(build_encoder("text_transformer", text, {"dim": 32, "depth": 1, "heads": 1}), MLMParams(), text)
    assert m.span == 1 and m.first_kmer is None
