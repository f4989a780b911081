"""Tokenizers and token datasets (selfsup.data.tokens): round trips, determinism, layouts, cache, errors."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from selfsup.data.base import Dataset, Split
from selfsup.data.spec import TextSpec
from selfsup.data.tokens import (
    EOT,
    MIN_TAIL,
    check_tokenizer,
    load_tokenizer,
    save_tokenizer,
    token_spec,
    tokenize_dataset,
    tokenizer_family,
    tokenizer_hash,
    train_tokenizer,
    word_piece_table,
)
from selfsup.errors import UserError

WORDS = ("the movie was great and the acting felt honest while a plot about two brothers kept me watching until "
         "late night but music seemed loud dull boring wonderful story characters director scene film ending "
         "beautiful terrible actors script camera").split()  # fmt: skip
PUNCT = [".", ",", "!", "?", ";"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Documents of 3..150 words with punctuation, mixed case and the odd accented or emoji character."""
    r = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [r.choice(WORDS) for _ in range(r.randint(3, 150))]
        words = [w.capitalize() if r.random() < 0.1 else w for w in words]
        words = [w + r.choice(PUNCT) if r.random() < 0.1 else w for w in words]
        if r.random() < 0.1:
            words.append(r.choice(["café", "naïve", "🙂", "Zoë"]))
        docs.append(" ".join(words))
    return docs


def text_dataset(train: list[str], test: list[str] | None = None, labelled: bool = True) -> Dataset:
    def split(texts):
        y = (np.arange(len(texts)) % 2).astype(np.int64) if labelled else None
        return Split(np.array(texts, dtype=object), y, groups={"g": np.arange(len(texts)) % 3} if labelled else {})

    test_split = None if test is None else split(test)
    return Dataset("toy", TextSpec("toy", len(train)), split(train), test_split, ["neg", "pos"])


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    return train_tokenizer(corpus(), "wordpiece", vocab_size=200, log=lambda *_: None)


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_tokenizer(corpus(), "bpe", vocab_size=400, log=lambda *_: None)


def ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


class CountingTokenizer:
    """Wraps a tokenizer and counts its encode_batch calls (the Rust class itself cannot be patched)."""

    def __init__(self, tok: Tokenizer):
        self.tok, self.calls = tok, 0

    def encode_batch(self, *args, **kwargs):
        self.calls += 1
        return self.tok.encode_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


# --- tokenizers -----------------------------------------------------------------------------------------


def test_wordpiece_special_ids_and_round_trip(wordpiece):
    assert [wordpiece.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert tokenizer_family(wordpiece) == "wordpiece"
    text = "The  MOVIE was\ngreat   and the Acting felt honest"
    assert wordpiece.decode(ids(wordpiece, text)) == " ".join(text.lower().split())
    # a word made of seen characters but never seen whole is split into ## pieces, not lost
    pieces = wordpiece.encode("brothersmusic", add_special_tokens=False).tokens
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])
    assert wordpiece.decode(ids(wordpiece, "brothersmusic")) == "brothersmusic"
    assert 1 not in ids(wordpiece, text)  # no [UNK] for plain words


def test_bpe_special_id_and_exact_byte_round_trip(bpe):
    assert bpe.token_to_id(EOT) == 0 and tokenizer_family(bpe) == "bpe"
    text = "Ünïcödé 🙂 — «quotes», x,y!?  two  spaces\n\ttab; 日本語 and The END."
    assert bpe.decode(ids(bpe, text)) == text
    assert 0 not in ids(bpe, text)  # no special token inside ordinary text


def test_same_texts_give_the_same_tokenizer_json_across_processes(tmp_path):
    """tokenizers' WordPiece trainer numbers ## pieces in hash-map order, which differs between processes."""
    texts = corpus(200, seed=1)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    here = {f: tokenizer_hash(train_tokenizer(texts, f, 300, log=lambda *_: None)) for f in ("wordpiece", "bpe")}
    again = {f: tokenizer_hash(train_tokenizer(texts, f, 300, log=lambda *_: None)) for f in ("wordpiece", "bpe")}
    assert here == again
    code = ("import json, sys; from selfsup.data.tokens import train_tokenizer, tokenizer_hash; "
            "t = json.load(open(sys.argv[1])); "
            "print(json.dumps({f: tokenizer_hash(train_tokenizer(t, f, 300, log=lambda *_: None)) "
            "for f in ('wordpiece', 'bpe')}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "texts.json")], capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_train_tokenizer_user_errors():
    with pytest.raises(UserError, match="unknown tokenizer family 'sentencepiece'"):
        train_tokenizer(["a b"], "sentencepiece")
    with pytest.raises(UserError, match="vocab_size=100 is too small for a bpe"):
        train_tokenizer(["a b"], "bpe", vocab_size=100)
    with pytest.raises(UserError, match="no text"):
        train_tokenizer(["", ""], "wordpiece")


def test_train_tokenizer_logs_one_line():
    lines = []
    tok = train_tokenizer(iter(corpus(20)), "bpe", vocab_size=300, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("trained a bpe tokenizer:") and "20 documents" in lines[0]
    assert tok.get_vocab_size() <= 300


# --- files and specs ------------------------------------------------------------------------------------


def test_save_load_round_trip_recovers_family(tmp_path, wordpiece, bpe):
    for tok, family in ((wordpiece, "wordpiece"), (bpe, "bpe")):
        path = tmp_path / family / "tokenizer.json"
        save_tokenizer(tok, path)
        assert not list(path.parent.glob("*.tmp*"))
        loaded, got = load_tokenizer(path)
        assert got == family and loaded.to_str() == tok.to_str()
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == tokenizer_hash(tok)
        assert load_tokenizer(path.parent)[1] == family  # a folder holding tokenizer.json, as a HF model folder


def test_load_tokenizer_errors_are_one_line_and_name_the_path(tmp_path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    not_json = tmp_path / "notjson.json"
    not_json.write_text("this is not json {")
    not_tok = tmp_path / "config.json"
    not_tok.write_text(json.dumps({"hidden_size": 768}))
    binary = tmp_path / "weights.json"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    unigram = tmp_path / "unigram.json"
    unigram.write_text(Tokenizer(models.Unigram([("a", -1.0), ("b", -2.0)], 0)).to_str())
    bare_wp = tmp_path / "bare.json"
    bare_wp.write_text(Tokenizer(models.WordPiece({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).to_str())
    cases = [(tmp_path / "missing.json", "does not exist"), (empty_dir, "cannot be read"),
             (not_json, "is not a tokenizer.json"), (not_tok, "is not a tokenizer.json"),
             (binary, "cannot be read"), (unigram, "is a Unigram tokenizer"),
             (bare_wp, "WordPiece tokenizer without [PAD], [CLS], [SEP], [MASK]")]  # fmt: skip
    for path, reason in cases:
        with pytest.raises(UserError) as e:
            load_tokenizer(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg and reason in msg, msg
        assert "--tokenizer PATH must point at a tokenizer.json" in msg


def test_token_spec_fields(wordpiece, bpe):
    s = token_spec(wordpiece, "wordpiece", 64)
    assert (s.pad_id, s.unk_id, s.cls_id, s.sep_id, s.mask_id) == (0, 1, 2, 3, 4)
    assert s.bos_id is None and s.eos_id is None and s.special_ids == (0, 1, 2, 3, 4)
    assert s.causal is False and s.max_len == 64 and s.vocab_size == wordpiece.get_vocab_size()
    assert s.tokenizer_hash == hashlib.sha256(wordpiece.to_str().encode()).hexdigest()[:16]
    b = token_spec(bpe, "bpe", 32)
    assert (b.pad_id, b.bos_id, b.eos_id, b.special_ids, b.causal) == (0, 0, 0, (0,), True)
    assert b.cls_id is None and b.sep_id is None and b.mask_id is None and b.unk_id is None
    assert b.vocab_size == bpe.get_vocab_size() and len(b.tokenizer_hash) == 16 and b.tokenizer_hash != s.tokenizer_hash
    with pytest.raises(UserError, match="max_len=2 is too small"):
        token_spec(wordpiece, "wordpiece", 2)
    with pytest.raises(UserError, match=r"no \[PAD\] token, so it is not a wordpiece tokenizer"):
        token_spec(bpe, "wordpiece", 32)


def test_check_tokenizer(wordpiece, bpe):
    check_tokenizer(tokenizer_hash(wordpiece), wordpiece)
    with pytest.raises(UserError) as e:
        check_tokenizer(tokenizer_hash(wordpiece), bpe, path="runs/x/tokenizer.json")
    msg = str(e.value)
    assert "\n" not in msg and "the tokenizer at runs/x/tokenizer.json does not match this run" in msg
    assert f"trained with hash {tokenizer_hash(wordpiece)}" in msg and "pass the run's tokenizer.json" in msg
    with pytest.raises(UserError, match="does not match this run"):  # rows are never made with another tokenizer
        tokenize_dataset(text_dataset(["a b"]), bpe, token_spec(wordpiece, "wordpiece", 16), "eval", log=print)


# --- token datasets -------------------------------------------------------------------------------------


def windows_doc(tok: Tokenizer, w: int, short_tail: bool) -> str:
    """A document of more than two windows whose trailing window is >= MIN_TAIL tokens (or < it)."""
    r = random.Random(3)
    words = []
    while True:
        words.append(r.choice(WORDS))
        n = len(ids(tok, " ".join(words)))
        tail = n % w
        if n > 2 * w and ((0 < tail < MIN_TAIL) if short_tail else (tail == 0 or tail >= MIN_TAIL)):
            return " ".join(words)


def test_wordpiece_pretrain_windows(wordpiece):
    max_len, w = 16, 14
    long_doc, short_tail_doc = windows_doc(wordpiece, w, False), windows_doc(wordpiece, w, True)
    docs = [long_doc, "great movie", "", short_tail_doc]
    ds = Dataset("toy", TextSpec("toy", 4), Split(np.array(docs, dtype=object), np.array([0, 1, 0, 1])),
                 Split(np.array(["a test doc"], dtype=object), np.array([1])), ["a", "b"])  # fmt: skip
    spec = token_spec(wordpiece, "wordpiece", max_len)
    out = tokenize_dataset(ds, wordpiece, spec, "pretrain", log=lambda *_: None)
    assert out.test is None and out.train.y is None and out.spec is spec and out.classes == ["a", "b"]
    x, lengths = np.asarray(out.train.x), np.asarray(out.train.lengths)
    assert x.dtype == np.int32 and x.shape[1] == max_len and lengths.dtype == np.int64
    want = [ids(wordpiece, d) for d in docs]
    k0 = -(-len(want[0]) // w)  # ceil: the long doc keeps every token
    k3 = len(want[3]) // w  # the short trailing window of the last doc is dropped
    assert len(x) == k0 + 1 + k3  # the empty doc makes no row; the 2-token doc one
    for i in range(len(x)):
        n = lengths[i]
        assert x[i, 0] == spec.cls_id and x[i, n - 1] == spec.sep_id and np.all(x[i, n:] == spec.pad_id)
        assert not np.isin(x[i, 1 : n - 1], spec.special_ids).any()
    inner = [list(x[i, 1 : lengths[i] - 1]) for i in range(len(x))]
    assert sum(inner[:k0], []) == want[0]
    assert inner[k0] == want[1]
    assert sum(inner[k0 + 1 :], []) == want[3][: k3 * w]
    assert all(len(r) == w for r in inner[k0 + 1 :])


def test_bpe_pretrain_packing(bpe):
    docs = corpus(30, seed=5)
    spec = token_spec(bpe, "bpe", 24)
    out = tokenize_dataset(text_dataset(docs, docs[:3]), bpe, spec, "pretrain", log=lambda *_: None)
    x = np.asarray(out.train.x)
    stream = sum((ids(bpe, d) + [spec.eos_id] for d in docs), [])
    assert len(x) == len(stream) // 24 and np.all(out.train.lengths == 24)
    assert x.reshape(-1).tolist() == stream[: len(x) * 24]
    assert out.test is None and out.train.y is None
    with pytest.raises(UserError, match="make no pretraining row of 4096 tokens"):
        tokenize_dataset(text_dataset(docs[:2]), bpe, token_spec(bpe, "bpe", 4096), "pretrain", log=print)


@pytest.mark.parametrize("family,windows", [("wordpiece", 1), ("bpe", 1), ("wordpiece", 3), ("bpe", 3)])
def test_eval_layout_one_row_per_document(family, windows, wordpiece, bpe):
    """One row per document: its text in consecutive windows of max_len, each window a sample of its own
    ([CLS] w [SEP], causal: w eos), every window full but the last, up to ``windows`` of them."""
    tok = wordpiece if family == "wordpiece" else bpe
    max_len = 20
    train, test = corpus(40, seed=7) + [""], corpus(10, seed=8)
    ds = text_dataset(train, test)
    spec = token_spec(tok, family, max_len)
    lines = []
    out = tokenize_dataset(ds, tok, spec, "eval", log=lines.append, windows=windows)
    cap = max_len - 2 if family == "wordpiece" else max_len - 1
    n_ids = [len(ids(tok, d)) for d in train + test]
    long, cut = sum(n > cap for n in n_ids), sum(n > cap * windows for n in n_ids)
    assert 0 < long < len(n_ids) and (windows == 1 or 0 < cut < long)
    head = f"{long} of {len(n_ids)} documents are longer than the context of {max_len} tokens"
    assert lines == [f"{head}; evaluation reads their first window (eval.windows=1)" if windows == 1 else
                     f"{head} and are read as up to {windows} windows (eval.windows); {cut} are longer than that "
                     "and cut"]  # fmt: skip
    for split, texts in ((out.train, train), (out.test, test)):
        assert split.x.shape == (len(texts), windows * max_len) and split.x.dtype == np.int32
        assert np.array_equal(split.y, np.arange(len(texts)) % 2)
        assert np.array_equal(split.groups["g"], np.arange(len(texts)) % 3)
        for row, n, text in zip(np.asarray(split.x), split.lengths, texts):
            t = ids(tok, text)[: cap * windows]
            pieces = [t[i : i + cap] for i in range(0, max(1, len(t)), cap)]
            want = sum(([spec.cls_id, *p, spec.sep_id] if family == "wordpiece" else [*p, spec.eos_id]
                        for p in pieces), [])  # fmt: skip
            assert n == len(want) and row[:n].tolist() == want and np.all(row[n:] == spec.pad_id)
            assert all(len(w) == max_len for w in np.split(np.asarray(want), range(max_len, n, max_len))[:-1])
    assert out.classes == ds.classes and out.name == ds.name


def test_eval_without_test_split_and_truncating_tokenizer(wordpiece):
    """A Hugging Face file may switch truncation on: rows still hold the first max_len tokens, not fewer."""
    tok = Tokenizer.from_str(wordpiece.to_str())
    tok.enable_truncation(5)
    docs = corpus(10, seed=9)
    out = tokenize_dataset(text_dataset(docs), tok, token_spec(tok, "wordpiece", 32), "eval", log=lambda *_: None)
    assert out.test is None and len(out.train.x) == len(docs)
    assert max(out.train.lengths) == 32 and tok.truncation is not None  # the caller's tokenizer is untouched


def test_cache_hit_incomplete_cache_and_shared_ids(tmp_path, monkeypatch, wordpiece):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    ds = text_dataset(corpus(50, seed=11), corpus(5, seed=12))
    spec = token_spec(wordpiece, "wordpiece", 32)
    tok = CountingTokenizer(wordpiece)
    first = tokenize_dataset(ds, tok, spec, "eval", log=lambda *_: None)
    assert tok.calls > 0
    calls = tok.calls
    lines = []
    second = tokenize_dataset(ds, tok, spec, "eval", log=lines.append)
    assert tok.calls == calls  # loaded, not tokenized again
    assert isinstance(second.train.x, np.memmap) and np.array_equal(second.train.x, first.train.x)
    assert np.array_equal(second.test.lengths, first.test.lengths) and len(lines) == 1 and "documents" in lines[0]
    rows = [p for p in (tmp_path / "tokens").iterdir() if p.name != "ids"]
    ids = list((tmp_path / "tokens" / "ids").iterdir())
    assert len(rows) == 1 and len(ids) == 2  # one row cache; the ids of train and of test
    # a write killed before its done marker is never trusted: rows are laid out again from the cached ids ...
    (rows[0] / "done.json").unlink()
    third = tokenize_dataset(ds, tok, spec, "eval", log=lambda *_: None)
    assert tok.calls == calls and np.array_equal(third.train.x, first.train.x) and (rows[0] / "done.json").exists()
    # ... and when the ids were not finished either, the texts are encoded again
    (rows[0] / "done.json").unlink()
    for folder in ids:
        (folder / "done.json").unlink()
    fourth = tokenize_dataset(ds, tok, spec, "eval", log=lambda *_: None)
    assert tok.calls > calls and np.array_equal(fourth.test.x, first.test.x)
    # another max_len or purpose is another row cache cut from the same ids; other texts are encoded
    calls = tok.calls
    tokenize_dataset(ds, tok, token_spec(wordpiece, "wordpiece", 24), "eval", log=lambda *_: None)
    tokenize_dataset(ds, tok, spec, "pretrain", log=lambda *_: None)
    assert tok.calls == calls
    ds.train.x[0] = ds.train.x[0] + " ending"
    tokenize_dataset(ds, tok, spec, "eval", log=lambda *_: None)
    assert tok.calls > calls
    assert len([p for p in (tmp_path / "tokens").iterdir() if p.name != "ids"]) == 4
    assert len(list((tmp_path / "tokens" / "ids").iterdir())) == 3
    assert not list(Path(tmp_path).rglob("*.tmp*"))


def test_word_piece_table_marks_the_continuations(wordpiece, bpe):
    table = word_piece_table(wordpiece)
    vocab = wordpiece.get_vocab()
    assert table.shape == (wordpiece.get_vocab_size(),) and table.any() and not table.all()
    for token, i in vocab.items():
        assert bool(table[i]) == token.startswith("##"), token
    with pytest.raises(UserError, match="wordpiece"):
        word_piece_table(bpe)


def test_whole_word_mlm_run_masks_words_whole(tmp_path, cache_root):
    """``--set method.whole_word=true`` end to end: the trainer hands the run's tokenizer to the method (its views
    raise without it), and on that tokenizer's rows every "##" piece is hidden exactly when its word is."""
    import torch
    import torch.nn.functional as F

    import selfsup
    from selfsup.methods import build_method
    from selfsup.runs import load_config

    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(corpus(120, seed=3)))
    run = selfsup.pretrain(data=str(data), method="mlm", out=str(tmp_path / "run"), budget="2steps", device="cpu",
                           max_len=32, vocab_size=120, batch_size=8, encoder_params={"dim": 32, "depth": 1, "heads": 2},
                           params={"whole_word": True}, log=lambda *a: None)  # fmt: skip
    cfg = load_config(run.path)
    assert cfg.method.params["whole_word"] is True
    tok, family = load_tokenizer(Path(run.path) / "tokenizer.json")
    method = build_method(cfg, token_spec(tok, family, 32))
    method.set_word_pieces(word_piece_table(tok))
    enc = [tok.encode(t) for t in corpus(64, seed=4)]
    rows = [e.ids[:31] + [tok.token_to_id("[SEP]")] for e in enc]
    lengths = torch.tensor([len(r) for r in rows])
    x = torch.tensor([r + [0] * (32 - len(r)) for r in rows])
    piece = torch.tensor([[t.startswith("##") for t in e.tokens[:31]] + [False] * (32 - min(31, len(e.tokens)))
                          for e in enc])  # fmt: skip
    assert piece.sum() > 200  # a small vocabulary: many words in several pieces
    _, chosen, _, _ = method.views(x, torch.Generator().manual_seed(0), lengths)
    assert torch.equal(chosen[piece], F.pad(chosen[:, :-1], (1, 0))[piece])
    assert (chosen & piece).any()
