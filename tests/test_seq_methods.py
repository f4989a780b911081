"""Sequence views (selfsup.views.sequence) and the sequence methods: seq-contrastive's views and loss, mlm / gpt /
seq-contrastive trained end to end from a FASTA file (and resumed), and a short learning run on synthetic families."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import selfsup
from selfsup.data import tokens
from selfsup.data.alphabet import get_alphabet
from selfsup.data.seq_tokens import CLS, PAD, RESIDUE_OFFSET, SEP, SeqTokenizer
from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.methods.seq_contrastive import SeqContrastive, SeqContrastiveParams
from selfsup.views.sequence import SeqCodec
from tests.conftest import die_after_save
from tests.test_seq_tokens import CONFIGS, parts, random_seqs

T = 48
TINY = {"dim": 32, "depth": 1, "heads": 1}


def setup(alphabet="dna", k=1, overlap=True, keep_case=False, T=T):
    tok = SeqTokenizer(alphabet, k, overlap, keep_case)
    spec = tokens.token_spec(tok, "wordpiece", T)
    return tok, spec, SeqCodec(spec)


def rows(tok, seqs, T=T):
    """[CLS] ids [SEP] rows of whole sequences (at most T - 2 tokens each), padded."""
    x = torch.full((len(seqs), T), PAD, dtype=torch.long)
    lengths = torch.zeros(len(seqs), dtype=torch.long)
    for i, ids in enumerate(parts(tok, seqs)):
        assert len(ids) <= T - 2
        x[i, : len(ids) + 2] = torch.tensor([CLS, *ids, SEP])
        lengths[i] = len(ids) + 2
    return x, lengths


def letters(spec, res, n) -> list[str]:
    table = spec.residues + "?"
    return ["".join(table[j] for j in r[: int(m)].tolist()) for r, m in zip(res, n)]


def revcomp(alphabet, s):
    alph = get_alphabet(alphabet)
    return "".join(alph.complement_of(c) for c in reversed(s))


# --- the codec ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alphabet,k,overlap", CONFIGS)
@pytest.mark.parametrize("keep_case", [False, True])
def test_rows_to_residues_and_back_and_torch_encoding_equals_the_tokenizer(alphabet, k, overlap, keep_case):
    tok, spec, c = setup(alphabet, k, overlap, keep_case)
    seqs = random_seqs(alphabet, 50, seed=k, keep_case=keep_case, lengths=(0, T - 2)) + ["AC#*"]
    x, lengths = rows(tok, seqs)
    res, n = c.to_residues(x, lengths)
    assert letters(spec, res, n)[:-1] == seqs[:-1] and letters(spec, res, n)[-1] == "AC??"  # unknown characters
    ids, count = c.encode(res, n)
    assert [ids[i, : count[i]].tolist() for i in range(len(seqs))] == parts(tok, seqs)
    assert (ids[torch.arange(ids.shape[1])[None] >= count[:, None]] == PAD).all()
    back, back_len = c.rows(ids, count, T)
    assert torch.equal(back, x) and torch.equal(back_len, lengths)


def test_a_window_of_a_long_sequence_keeps_the_residues_of_its_last_kmer():
    tok, spec, c = setup("dna", 6)
    s = random_seqs("dna", 1, seed=4, lengths=(200, 200))[0]
    ids = parts(tok, [s])[0][10:30]  # a window: 20 tokens from residue 10, the last a 6-mer reaching residue 34
    x = torch.tensor([[CLS, *ids, SEP]])
    res, n = c.to_residues(x)
    expected = s[10:35] if tok.vocab[ids[-1]] == s[29:35] else s[10:30]
    assert letters(spec, res, n) == [expected]


@pytest.mark.parametrize("alphabet,k", [("dna", 1), ("dna", 3), ("dna", 6), ("rna", 4)])
@pytest.mark.parametrize("keep_case", [False, True])
def test_the_reverse_complement_twice_is_the_identity(alphabet, k, keep_case):
    tok, spec, c = setup(alphabet, k, True, keep_case)
    seqs = random_seqs(alphabet, 40, seed=7, keep_case=keep_case, ambiguous=0.2, lengths=(0, T - 2))
    x, lengths = rows(tok, seqs)
    res, n = c.to_residues(x, lengths)
    rc = c.reverse_complement(res, n)
    assert letters(spec, rc, n) == [revcomp(alphabet, s) for s in seqs]
    assert torch.equal(c.reverse_complement(rc, n), res)
    twice, lt = c.rows(*c.encode(c.reverse_complement(rc, n), n), T)
    assert torch.equal(twice, x) and torch.equal(lt, lengths)
    flip = torch.arange(len(seqs)) % 2 == 0
    some = c.reverse_complement(res, n, flip)
    assert torch.equal(some[~flip], res[~flip]) and torch.equal(some[flip], rc[flip])
    with pytest.raises(UserError, match="DNA and RNA"):
        setup("protein")[2].reverse_complement(res, n)


def test_crops_are_contiguous_subsequences_of_the_asked_size():
    tok, spec, c = setup("dna", 3)
    seqs = random_seqs("dna", 200, seed=2, lengths=(0, T - 2))
    x, lengths = rows(tok, seqs)
    res, n = c.to_residues(x, lengths)
    g = torch.Generator().manual_seed(0)
    crop, m = c.crop(res, n, g, (0.5, 0.8), min_len=8, max_len=30)
    for s, sub, size in zip(seqs, letters(spec, crop, m), m.tolist()):
        assert sub in s and len(sub) == size
        n_s = len(s)
        lo, hi = (min(30, n_s, max(8, round(f * n_s))) for f in (0.5, 0.8))
        assert lo - 1 <= size <= hi + 1 and size <= min(30, n_s)
    assert (crop[torch.arange(crop.shape[1])[None] >= m[:, None]] == -1).all()
    starts = [s.find(sub) for s, sub in zip(seqs, letters(spec, crop, m)) if len(s) > 30]
    assert len(set(starts)) > 5  # at random places


def test_mutations_change_about_rate_of_the_residues_to_other_core_residues_in_their_case():
    tok, spec, c = setup("dna", 1, keep_case=True)
    seqs = random_seqs("dna", 300, seed=3, keep_case=True, ambiguous=0.1, lengths=(T - 2, T - 2))
    x, lengths = rows(tok, seqs)
    res, n = c.to_residues(x, lengths)
    g = torch.Generator().manual_seed(1)
    out = c.mutate(res, n, g, 0.05)
    changed = out != res
    assert abs(changed.float().mean().item() - 0.05) < 0.006
    before, after = "".join(letters(spec, res, n)), "".join(letters(spec, out, n))
    for a, b in zip(before, after):
        if a != b:
            assert b.upper() in "ACGT" and a.isupper() == b.isupper()
    protein = setup("protein")[2]
    p = torch.randint(0, 20, (50, 100), generator=g)
    assert abs((protein.mutate(p, torch.full((50,), 100), g, 0.2) != p).float().mean().item() - 0.2) < 0.02


# --- seq-contrastive ---------------------------------------------------------------------------------------------


def method(alphabet="dna", k=3, overlap=True, **params):
    tok, spec, _ = setup(alphabet, k, overlap)
    torch.manual_seed(0)
    return tok, SeqContrastive(build_encoder("text_transformer", spec, TINY), SeqContrastiveParams(**params), spec)


@pytest.mark.parametrize("alphabet,k,overlap", [("dna", 1, True), ("dna", 6, True), ("rna", 3, False),
                                                ("protein", 2, True)])  # fmt: skip
def test_views_are_two_valid_rows_per_sequence_and_deterministic(alphabet, k, overlap):
    tok, m = method(alphabet, k, overlap)
    seqs = random_seqs(alphabet, 16, seed=5, lengths=(3, T - 2))
    x, lengths = rows(tok, seqs)
    ids, lv = m.views(x, torch.Generator().manual_seed(9), lengths)
    assert ids.shape == (32, T) and lv.shape == (32,)
    assert (ids[:, 0] == CLS).all() and (ids[torch.arange(32), lv - 1] == SEP).all()
    assert (ids[torch.arange(T)[None] >= lv[:, None]] == PAD).all()
    body = [ids[i, 1 : lv[i] - 1] for i in range(32)]
    assert all(((b >= RESIDUE_OFFSET) | (b == 1)).all() for b in body)
    again, la = m.views(x, torch.Generator().manual_seed(9), lengths)
    assert torch.equal(again, ids) and torch.equal(la, lv)
    other, _ = m.views(x, torch.Generator().manual_seed(10), lengths)
    assert not torch.equal(other, ids)
    out = m(m.views(x, torch.Generator().manual_seed(9), lengths))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.embedding.shape == (16, m.encoder.dim)
    assert 0 <= out.metrics["contrastive_acc"] <= 1


def test_views_of_a_sequence_are_its_mutated_crops_maybe_reverse_complemented():
    tok, m = method("dna", 1, mutation_rate=0.0)
    seqs = random_seqs("dna", 64, seed=6, ambiguous=0.0, lengths=(30, T - 2))
    x, lengths = rows(tok, seqs)
    ids, lv = m.views(x, torch.Generator().manual_seed(2), lengths)
    flipped = 0
    for i, s in enumerate(seqs * 2):
        v = tok.decode(ids[i, : lv[i]].tolist())
        assert len(v) >= min(len(s), 8) and (v in s or revcomp("dna", v) in s)
        flipped += v not in s
    assert 30 < flipped < 100  # about half of the 128 views


def test_seq_contrastive_needs_sequence_tokens():
    text = tokens.token_spec(SeqTokenizer("dna"), "wordpiece", T)
    text = type(text)(vocab_size=100, max_len=T, pad_id=0, cls_id=2, sep_id=3, mask_id=4, special_ids=(0, 1, 2, 3, 4))
    with pytest.raises(UserError, match="sequence"):
        SeqContrastive(build_encoder("text_transformer", text, TINY), SeqContrastiveParams(), text)
    with pytest.raises(UserError, match="crop_min"):
        method(crop_min=0.0)


# --- end to end -----------------------------------------------------------------------------------------------------


def fasta(path, n=60, seed=0):
    r = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            s = "".join(r.choice("ACGT") for _ in range(r.randint(40, 160)))
            if i % 5 == 0:
                s = s[:10] + "NNRY" + s[10:].lower()  # ambiguity codes, soft-masked residues
            f.write(f">seq{i} test\n{s[:60]}\n{s[60:]}\n")
    return path


@pytest.mark.parametrize("method_name,kmer", [("mlm", 3), ("gpt", 1), ("seq-contrastive", 4)])
def test_sequence_methods_pretrain_from_fasta_and_resume(tmp_path, monkeypatch, method_name, kmer):
    restore_save = die_after_save(monkeypatch, 2)  # killed after its step-2 checkpoint
    out = tmp_path / "run"
    lines: list[str] = []
    args = dict(data=str(fasta(tmp_path / "x.fa")), method=method_name, budget="4steps", checkpoint_every="2steps",
                batch_size=8, device="cpu", seed=1, out=out, max_len=64, kmer=kmer, soft_mask="keep",
                encoder_params=TINY, log=lines.append)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        selfsup.pretrain(**args)
    saved, family = tokens.load_tokenizer(out / "tokenizer.json")
    assert family == "sequence" and saved.k == kmer and saved.keep_case
    spec = json.loads((out / "encoder.json").read_text())["spec"]
    assert spec["kmer"] == kmer and spec["alphabet"] == "dna" and spec["causal"] == (method_name == "gpt")
    restore_save()
    selfsup.pretrain(resume=out, log=lines.append)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in metrics if "loss" in r]
    assert steps[-1] == 4 and all(np.isfinite(r["loss"]) for r in metrics if "loss" in r)
    assert (out / "checkpoints" / "step-000004").is_dir()
    assert not any("collaps" in line for line in lines), lines
    if method_name == "gpt":  # a causal sequence run continues a prompt, in residues
        text = selfsup.generate(out, prompt="ACGTac", max_tokens=5, seed=0)[0]
        assert text.startswith("ACGTac") and 6 <= len(text) <= 11 and set(text) <= set(saved.residues + "?")


# --- learning -------------------------------------------------------------------------------------------------------

FAMILIES, SEQS, ANCESTOR = 20, 2000, 120
MARGIN = 0.15  # accuracy the pretrained encoder must gain over random init at 10% of the labels
SETTINGS = dict(method="seq-contrastive", budget="300steps", device="cpu", kmer=6, max_len=128, batch_size=32,
                encoder_params={"dim": 64, "depth": 2, "heads": 2}, seed=0)  # fmt: skip


def family_csv(path, seed: int = 0) -> None:
    """Sequences of FAMILIES families: each family's members are random crops (60 .. 100%) of its random ancestor
    with 8% substitutions, read from either strand. Random-init features see little beyond the k-mer composition,
    which two crops of an ancestor share only in part; views that crop, mutate and reverse-complement are what
    tells members of a family apart from the rest."""
    r = random.Random(seed)
    ancestors = ["".join(r.choice("ACGT") for _ in range(ANCESTOR)) for _ in range(FAMILIES)]
    lines = ["sequence,label"]
    for _ in range(SEQS):
        f = r.randrange(FAMILIES)
        m = r.randint(int(0.6 * ANCESTOR), ANCESTOR)
        start = r.randint(0, ANCESTOR - m)
        s = "".join(c if r.random() > 0.08 else r.choice("ACGT") for c in ancestors[f][start : start + m])
        lines.append(f"{revcomp('dna', s) if r.random() < 0.5 else s},f{f}")
    path.write_text("\n".join(lines) + "\n")


def test_seq_contrastive_beats_random_init_on_sequence_families(tmp_path, cache_root):
    data = tmp_path / "families.csv"  # labelled: selfsup holds out a stratified 20% as its test split
    family_csv(data)
    out = tmp_path / "run"
    selfsup.pretrain(data=str(data), out=out, log=lambda s: None, **SETTINGS)
    rows_ = selfsup.evaluate(out, protocol="knn,linear", labels="10%", log=lambda s: None)
    acc = {(r["protocol"], r["encoder"]): r["value"] for r in rows_ if r["split"] == "val"}  # settings chosen on val
    print({k: round(v, 4) for k, v in sorted(acc.items())})
    for proto in ("knn", "linear"):
        assert acc[(proto, "pretrained")] > acc[(proto, "random_init")] + MARGIN, acc
    assert acc[("knn", "pretrained")] > acc[("knn", "raw")], acc  # the k-mer spectrum's neighbours
