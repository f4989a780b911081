"""Tokenizers and token datasets for text: train or load a tokenizer, turn raw texts into int32 id rows.

Two tokenizer families (Hugging Face ``tokenizers``, saved as one ``tokenizer.json``):

- ``wordpiece`` for bidirectional models (MLM, ELECTRA, NSP/SOP): BERT's recipe (Devlin et al. 2019):
  ``BertNormalizer`` (lower case, accents stripped), ``BertPreTokenizer``, WordPiece with the ``##``
  continuing prefix, specials ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``; trainer settings those of
  ``BertWordPieceTokenizer`` (min frequency 2, at most 1000 alphabet characters).
- ``bpe`` for causal models (GPT): GPT-2's byte-level BPE (Radford et al. 2019): the ``ByteLevel``
  pre-tokenizer without a prefix space, all 256 bytes in the alphabet (no unknown token, exact round
  trip), one special ``<|endoftext|>=0`` that serves as end of text, start and padding.

The family is not stored beside the file: it is read back from tokenizer.json itself (a WordPiece model
is ``wordpiece``; a BPE model with ``<|endoftext|>`` is ``bpe``), so a Hugging Face ``bert-base-uncased``
or ``gpt2`` tokenizer.json loads as well; special ids are always looked up by their token. A third family,
``sequence``, is the residue / k-mer tokenizer of biological sequences (``selfsup.data.seq_tokens``: nothing
to train, its own small JSON); it goes through the same layouts and cache: ``_encode`` takes any tokenizer
with a numpy ``encode_many`` instead of ``encode_batch``, and ``token_spec`` gives it the layout of the
method's family (``wordpiece``: bidirectional rows, ``bpe``: causal packed rows).

Determinism: ``tokenizers``' WordPiece trainer numbers the ``##`` characters in hash-map order, which
changes the vocabulary from one process to the next. Here the alphabet is chosen in Python (most
frequent characters, ties by code point) and every ``##c`` is given to the trainer up front, so the same
texts give the same tokenizer.json bytes. The byte-level BPE trainer is deterministic as it is.

Layouts (rows ``int32 [N, max_len]``, padded with ``pad_id`` after ``lengths[i]`` tokens):

- pretraining, wordpiece: each document cut into consecutive windows of ``max_len - 2`` tokens, each
  row ``[CLS] window [SEP]``; a trailing window of fewer than 8 tokens is dropped unless it is the whole
  document. bpe: documents joined with ``<|endoftext|>`` after each one and packed into rows of exactly
  ``max_len`` tokens (GPT-2's packing; the last partial row is dropped).
- groups (``split.groups``, per-document attributes): a bidirectional pretraining window carries its document's
  groups (the rows' document indices are cached as ``train_doc.npy``); packed causal rows mix documents, so causal
  pretraining drops the groups. Evaluation keeps one row per document, so its groups stay as they are.
- evaluation: one row per document, labels kept: ``[CLS] first max_len - 2 tokens [SEP]`` (wordpiece) or
  the first ``max_len - 1`` tokens then ``<|endoftext|>`` (bpe: a causal model's pooled feature is its last
  real token, which has then read the whole row).

Token rows are cached under ``cache_dir()/tokens/<key>/`` (key: the tokenizer, purpose, max_len and the
texts) and memory-mapped; each split's ids before any layout under ``cache_dir()/tokens/ids/<key>/`` (key:
the tokenizer and the texts), so evaluation after pretraining, or at another max_len, does not encode the
texts again. A ``done.json`` marker written last makes a killed write invisible.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from selfsup.data.base import Dataset, Split
from selfsup.data.cache import cache_dir, load_array, save_array
from selfsup.data.spec import TokenSpec
from selfsup.errors import UserError

FAMILIES = ("wordpiece", "bpe")
PURPOSES = ("pretrain", "eval")
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EOT = "<|endoftext|>"
LIMIT_ALPHABET = 1000  # BertWordPieceTokenizer's default
MIN_FREQUENCY = 2
MIN_TAIL = 8  # a trailing pretraining window shorter than this is dropped (unless it is the whole document)
BATCH = 1000  # documents per training batch / encode_batch call
ROW_BLOCK = 4096  # rows built at once (bounds the gather index's memory)
LAYOUT_VERSION = 1  # part of the cache key: bump when a layout changes
_FIX = "--tokenizer PATH must point at a tokenizer.json written by selfsup or Hugging Face tokenizers"
_SEQ_MARKER = '"selfsup_sequence_tokenizer"'  # = selfsup.data.seq_tokens.MARKER, as it opens the JSON

__all__ = ["EOT", "FAMILIES", "WORDPIECE_SPECIALS", "check_tokenizer", "load_tokenizer", "save_tokenizer",
           "token_spec", "tokenize_dataset", "tokenizer_family", "tokenizer_hash", "train_tokenizer",
           "word_piece_table"]  # fmt: skip


# --- training ---------------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], family: str, vocab_size: int = 8192, log=print) -> Tokenizer:
    """A new ``family`` tokenizer ("wordpiece" or "bpe") with at most about ``vocab_size`` tokens, trained on
    ``texts`` (any iterable of str, e.g. a raw text split's ``x``) in batches; the same texts give the same
    tokenizer.json bytes."""
    if family not in FAMILIES:
        raise UserError(f"unknown tokenizer family {family!r}; use one of {', '.join(FAMILIES)}")
    least = 257 if family == "bpe" else 32  # bpe: 256 bytes + <|endoftext|>
    if int(vocab_size) < least:
        raise UserError(f"vocab_size={vocab_size} is too small for a {family} tokenizer; use at least {least}")
    texts = list(texts)
    if not texts or not any(texts):
        raise UserError("there is no text to train a tokenizer on; point --data at documents with text")
    start = time.perf_counter()
    tok = _train_wordpiece(texts, int(vocab_size)) if family == "wordpiece" else _train_bpe(texts, int(vocab_size))
    log(f"trained a {family} tokenizer: {tok.get_vocab_size()} tokens from {len(texts)} documents "
        f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
    return tok


def _batches(texts: list[str]):
    for i in range(0, len(texts), BATCH):
        yield texts[i : i + BATCH]


def _alphabet(normed: list[str]) -> list[str]:
    """The ``LIMIT_ALPHABET`` most frequent non-space characters of the (normalized) texts, ties broken by
    code point, returned sorted: chosen here rather than by the trainer, whose ties fall in hash-map order."""
    counts = np.zeros(0x110000, dtype=np.int64)
    for batch in _batches(normed):
        codes = np.frombuffer("".join(batch).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        counts += np.bincount(codes, minlength=0x110000)
    chars = [int(c) for c in np.flatnonzero(counts) if not chr(c).isspace()]
    chars.sort(key=lambda c: (-counts[c], c))
    return sorted(chr(c) for c in chars[:LIMIT_ALPHABET])


def _train_wordpiece(texts: list[str], vocab_size: int) -> Tokenizer:
    normalizer = normalizers.BertNormalizer(lowercase=True)
    normed = [normalizer.normalize_str(t) for t in texts]  # once: the trainer below gets normalized text
    alphabet = _alphabet(normed)
    scratch = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    scratch.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # every "##c" listed up front gets a fixed id (the trainer would number them in hash-map order)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, show_progress=False,
        special_tokens=[*WORDPIECE_SPECIALS, *("##" + c for c in alphabet)],
        initial_alphabet=alphabet, limit_alphabet=len(alphabet), continuing_subword_prefix="##")  # fmt: skip
    scratch.train_from_iterator(_batches(normed), trainer, length=len(normed))
    # rebuilt from the vocabulary so that only the five real specials are special tokens
    tok = Tokenizer(models.WordPiece(vocab=scratch.get_vocab(), unk_token="[UNK]", continuing_subword_prefix="##"))
    _wordpiece_pipeline(tok)
    return tok


def _wordpiece_pipeline(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(WORDPIECE_SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    # for other users of the file (transformers); selfsup encodes without specials and adds its own
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )


def _train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=MIN_FREQUENCY,
        show_progress=False,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_batches(texts), trainer, length=len(texts))
    return tok


# --- files, family, spec --------------------------------------------------------------------------------


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write ``tok`` as tokenizer.json atomically (its sha256 is then ``tokenizer_hash(tok)``'s full digest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(tok.to_str(), encoding="utf-8")
    os.replace(tmp, path)


def load_tokenizer(path: str | Path) -> tuple[Tokenizer, str]:
    """-> (tokenizer, family) from a tokenizer.json (or a folder holding one, as a Hugging Face model folder
    does); a missing, unreadable or foreign file is a one-line UserError naming it."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"tokenizer {path} does not exist; {_FIX}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"tokenizer {path} cannot be read ({type(e).__name__}); {_FIX}") from None
    if _SEQ_MARKER in text[:200]:  # selfsup's sequence tokenizer (its JSON opens with the marker)
        from selfsup.data.seq_tokens import SeqTokenizer

        return SeqTokenizer.from_str(text, where=f"tokenizer {path}"), "sequence"
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"tokenizer {path} is not a tokenizer.json ({reason}); {_FIX}") from None
    return tok, tokenizer_family(tok, where=f"tokenizer {path}")


def tokenizer_family(tok: Tokenizer, where: str = "the tokenizer") -> str:
    """The family read from the tokenizer itself: "wordpiece" (a WordPiece model with BERT's five specials)
    or "bpe" (a BPE model with ``<|endoftext|>``), or "sequence" (``selfsup.data.seq_tokens``); anything else is
    a UserError naming ``where``."""
    if getattr(tok, "family", None) == "sequence":
        return "sequence"
    kind = type(tok.model).__name__
    if kind == "WordPiece":
        missing = [t for t in WORDPIECE_SPECIALS if tok.token_to_id(t) is None]
        if missing:
            raise UserError(f"{where} is a WordPiece tokenizer without {', '.join(missing)}; {_FIX}")
        return "wordpiece"
    if kind == "BPE":
        if tok.token_to_id(EOT) is None:
            raise UserError(f"{where} is a BPE tokenizer without {EOT} (GPT-2 style byte-level BPE needs it); {_FIX}")
        return "bpe"
    raise UserError(f"{where} is a {kind} tokenizer; selfsup reads WordPiece (BERT) or byte-level BPE (GPT-2) "
                    f"ones; {_FIX}")  # fmt: skip


def tokenizer_hash(tok: Tokenizer) -> str:
    """16 hex digits of the sha256 of the tokenizer's JSON (the bytes ``save_tokenizer`` writes)."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()[:16]


def token_spec(tok: Tokenizer, family: str, max_len: int) -> TokenSpec:
    """The ``TokenSpec`` of rows of ``max_len`` ids made by ``tok`` (of ``family``; a sequence tokenizer's rows are
    laid out as the method's family: ``bpe`` causal, ``wordpiece`` bidirectional)."""
    if getattr(tok, "family", None) == "sequence" and family in FAMILIES:
        return tok.token_spec(causal=family == "bpe", max_len=max_len)
    if family not in FAMILIES:
        raise UserError(f"unknown tokenizer family {family!r}; use one of {', '.join(FAMILIES)}")
    least = 3 if family == "wordpiece" else 2  # [CLS] token [SEP]; token <|endoftext|>
    if int(max_len) < least:
        raise UserError(f"max_len={max_len} is too small for a {family} tokenizer; use at least {least} (--max-len)")

    def need(token: str) -> int:
        i = tok.token_to_id(token)
        if i is None:
            raise UserError(f"the tokenizer has no {token} token, so it is not a {family} tokenizer; {_FIX}")
        return int(i)

    common = dict(vocab_size=tok.get_vocab_size(with_added_tokens=True), max_len=int(max_len),
                  tokenizer_hash=tokenizer_hash(tok))  # fmt: skip
    if family == "wordpiece":
        pad, unk, cls, sep, mask = (need(t) for t in WORDPIECE_SPECIALS)
        return TokenSpec(pad_id=pad, cls_id=cls, sep_id=sep, mask_id=mask, unk_id=unk,
                         special_ids=tuple(sorted({pad, unk, cls, sep, mask})), causal=False, **common)  # fmt: skip
    eot = need(EOT)
    return TokenSpec(pad_id=eot, bos_id=eot, eos_id=eot, special_ids=(eot,), causal=True, **common)


def check_tokenizer(spec_hash: str, tok: Tokenizer, path: str | Path | None = None) -> None:
    """A one-line UserError unless ``tok`` is the tokenizer a run was trained with (its spec's hash)."""
    have = tokenizer_hash(tok)
    if spec_hash and have != spec_hash:
        where = f"the tokenizer at {path}" if path is not None else "the tokenizer given"
        raise UserError(f"{where} does not match this run (trained with hash {spec_hash}, this one has {have}); "
                        "pass the run's tokenizer.json")  # fmt: skip


def word_piece_table(tok: Tokenizer) -> torch.Tensor:
    """bool [V]: True for the ids that continue a word (WordPiece's ``##`` pieces), for whole-word masking."""
    if tokenizer_family(tok) != "wordpiece":
        raise UserError("whole-word masking needs a wordpiece tokenizer; drop --set method.whole_word")
    table = torch.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=torch.bool)
    ids = [i for t, i in tok.get_vocab(with_added_tokens=True).items() if t.startswith("##") and len(t) > 2]
    table[ids] = True
    return table


# --- token datasets -------------------------------------------------------------------------------------


def tokenize_dataset(ds: Dataset, tok: Tokenizer, spec: TokenSpec, purpose: str, log=print,
                     windows: int = 1) -> Dataset:  # fmt: skip
    """A raw text dataset as token rows for ``purpose``: "pretrain" (train split only, no labels, documents
    windowed, each window with its document's groups, or packed, without groups: a packed row mixes documents)
    or "eval" (train and test, one row per document, labels and groups kept; a document
    longer than the context is read as up to ``windows`` windows of ``spec.max_len`` tokens, one after the
    other in its row: see ``_doc_windows``). Rows are memory-mapped from the cache; a second call with the
    same inputs does not tokenize again."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
    if windows < 1:
        raise UserError(f"eval.windows={windows} must be at least 1 (1 reads each document's first window only)")
    windows = windows if purpose == "eval" else 1
    check_tokenizer(spec.tokenizer_hash, tok)
    splits = {"train": ds.train} if purpose == "pretrain" or ds.test is None else {"train": ds.train, "test": ds.test}
    digest = hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
    texts = {name: _texts_hash(split.x) for name, split in splits.items()}
    folder = cache_dir() / "tokens" / _cache_key(digest, spec, purpose, texts, windows)
    cached = _load_cached(folder, splits, spec, purpose, windows)
    if cached is None:
        ids = {name: _ids(tok, digest, texts[name], split.x, f"{ds.name}'s {name} split")
               for name, split in splits.items()}  # fmt: skip
        _build(folder, spec, purpose, ids, ds.name, windows)
        cached = _load_cached(folder, splits, spec, purpose, windows)
        if cached is None:  # pragma: no cover - only when the cache folder is not writable as a cache
            raise UserError(f"the token cache {folder} could not be read back; check SELFSUP_CACHE")
    arrays, meta = cached
    log(_summary(meta, spec, purpose, windows))
    if purpose == "pretrain":
        doc = None if spec.causal else load_array(folder / "train_doc.npy")
        groups = {} if doc is None else {k: np.asarray(v)[doc] for k, v in ds.train.groups.items()}
        return Dataset(ds.name, spec, Split(arrays["train"][0], None, arrays["train"][1], groups), None, ds.classes,
                       tokenizer=tok)  # fmt: skip
    out = {name: Split(arrays[name][0], split.y, arrays[name][1], dict(split.groups)) for name, split in splits.items()}
    return Dataset(ds.name, spec, out["train"], out.get("test"), ds.classes, tokenizer=tok)


def _summary(meta: dict, spec: TokenSpec, purpose: str, windows: int) -> str:
    docs = "sequences" if spec.alphabet else "documents"
    if purpose == "eval":
        long = meta.get("long", meta["cut"])
        if windows == 1:
            return (f"{long} of {meta['docs']} {docs} are longer than the context of {spec.max_len} tokens; "
                    f"evaluation reads their first window (eval.windows=1)")  # fmt: skip
        return (f"{long} of {meta['docs']} {docs} are longer than the context of {spec.max_len} tokens and "
                f"are read as up to {windows} windows (eval.windows); {meta['cut']} are longer than that and cut")
    return f"pretraining on {meta['rows']} rows of {spec.max_len} tokens from {meta['docs']} {docs}"


def _plain(tok: Tokenizer) -> Tokenizer:
    """``tok`` without truncation or padding (a Hugging Face file may set them); a copy when it does."""
    if tok.truncation is None and tok.padding is None:
        return tok
    tok = Tokenizer.from_str(tok.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def _texts_hash(x) -> str:
    h = hashlib.sha256()
    h.update(len(x).to_bytes(8, "little"))
    for t in x:
        b = str(t).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _cache_key(digest: str, spec: TokenSpec, purpose: str, texts: dict[str, str], windows: int) -> str:
    parts = {"layout": LAYOUT_VERSION, "tokenizer": digest, "purpose": purpose, "max_len": spec.max_len,
             "causal": spec.causal, "texts": texts, "windows": windows}  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _load_cached(folder: Path, splits: dict[str, Split], spec: TokenSpec, purpose: str, windows: int):
    """-> ({split: (x, lengths)}, meta) when ``folder`` holds a complete cache, else None."""
    try:
        meta = json.loads((folder / "done.json").read_text())
        arrays = {name: (load_array(folder / f"{name}_x.npy"), load_array(folder / f"{name}_lengths.npy"))
                  for name in splits}  # fmt: skip
    except (OSError, ValueError):
        return None
    if purpose == "pretrain" and not spec.causal and not (folder / "train_doc.npy").is_file():
        return None  # written before windows kept their document's index: lay it out again
    for name, (x, lengths) in arrays.items():
        rows_ok = purpose == "pretrain" or len(x) == len(splits[name])
        if x.ndim != 2 or x.shape[1] != spec.max_len * windows or len(lengths) != len(x) or not rows_ok:
            return None
    return arrays, meta


def _write_done(folder: Path, meta: dict) -> None:
    """The marker that makes ``folder`` a cache the next call trusts: written last, atomically."""
    tmp = folder / f"done.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "done.json")


def _ids(tok: Tokenizer, digest: str, text_hash: str, texts, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Every document's ids (see ``_encode``), cached per (tokenizer, texts): pretraining and evaluation rows,
    at any max_len, are then cut from one encoding of a split."""
    folder = cache_dir() / "tokens" / "ids" / hashlib.sha256(f"{digest} {text_hash}".encode()).hexdigest()[:32]
    try:
        json.loads((folder / "done.json").read_text())
        flat, lens = load_array(folder / "flat.npy"), load_array(folder / "lens.npy")
        if len(lens) == len(texts) and int(lens.sum()) == len(flat):
            return flat, lens
    except (OSError, ValueError):
        pass
    flat, lens = _encode(_plain(tok), texts, where)
    save_array(folder / "flat.npy", flat)
    save_array(folder / "lens.npy", lens)
    _write_done(folder, {"docs": len(lens)})
    return flat, lens


def _build(folder: Path, spec: TokenSpec, purpose: str, ids: dict[str, tuple], name: str, windows: int) -> dict:
    """Lay out every split's ids as rows into ``folder``; ``done.json`` (the counts for the log line) is last."""
    meta = {"docs": 0, "cut": 0, "long": 0, "rows": 0}
    for split_name, (flat, lens) in ids.items():
        if purpose == "pretrain":
            if spec.causal:
                x, lengths = _pack(flat, lens, spec)
            else:
                x, lengths, doc = _windows(flat, lens, spec)
                save_array(folder / f"{split_name}_doc.npy", doc)
            if len(x) == 0:
                raise UserError(f"{name}'s {len(lens)} documents make no pretraining row of {spec.max_len} tokens; "
                                "add text or lower --max-len")  # fmt: skip
        else:
            x, lengths, long, cut = _doc_windows(flat, lens, spec, windows)
            meta["long"] += long
            meta["cut"] += cut
        meta["docs"] += len(lens)
        meta["rows"] += len(x)
        save_array(folder / f"{split_name}_x.npy", x)
        save_array(folder / f"{split_name}_lengths.npy", lengths)
    _write_done(folder, meta)
    return meta


def _encode(tok: Tokenizer, texts, where: str) -> tuple[np.ndarray, np.ndarray]:
    """All documents' ids, concatenated: (int32 [total], int64 [N] tokens per document)."""
    if hasattr(tok, "encode_many"):  # a sequence tokenizer: vectorized numpy over all the texts
        return tok.encode_many(texts)
    flats, lens = [], []
    for i in range(0, len(texts), BATCH):
        try:
            encodings = tok.encode_batch(list(texts[i : i + BATCH]), add_special_tokens=False)
        except TypeError:
            raise UserError(f"{where} holds a sample that is not text near document {i}; check the reader") from None
        ids = [e.ids for e in encodings]
        n = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flats.append(np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(n.sum())))
        lens.append(n)
    if not lens:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(flats), np.concatenate(lens)


def _rows(flat: np.ndarray, starts: np.ndarray, counts: np.ndarray, spec: TokenSpec, first: int | None,
          last: int | None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Rows ``[first] flat[start : start + count] [last] pad..``: (int32 [R, max_len], int64 [R] lengths)."""
    r = len(starts)
    x = np.full((r, spec.max_len), spec.pad_id, dtype=np.int32)
    off = 0 if first is None else 1
    if first is not None:
        x[:, 0] = first
    for b in range(0, r, ROW_BLOCK):
        s, c = starts[b : b + ROW_BLOCK], counts[b : b + ROW_BLOCK]
        width = int(c.max(initial=0))
        cols = np.arange(width)
        valid = cols[None, :] < c[:, None]  # [b, width]
        x[b : b + ROW_BLOCK, off : off + width][valid] = flat[(s[:, None] + cols[None, :])[valid]]
    lengths = counts.astype(np.int64) + off
    if last is not None:
        x[np.arange(r), lengths] = last
        lengths += 1
    return x, lengths


def _windows(flat: np.ndarray, lens: np.ndarray, spec: TokenSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bidirectional pretraining: every document cut into windows of max_len - 2 tokens, ``[CLS] w [SEP]``.
    -> (rows, lengths, int64 [R] the document of each row)."""
    w = spec.max_len - 2
    k = (lens + w - 1) // w  # windows per document (0 for an empty one)
    tail = lens - (k - 1) * w
    k = k - ((k > 1) & (tail < min(MIN_TAIL, w)))  # a short trailing window is dropped
    doc = np.repeat(np.arange(len(lens)), k)
    j = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)  # window index within its document
    doc_start = np.cumsum(lens) - lens
    starts = doc_start[doc] + j * w
    counts = np.minimum(w, lens[doc] - j * w)
    return (*_rows(flat, starts, counts, spec, spec.cls_id, spec.sep_id), doc.astype(np.int64))


def _pack(flat: np.ndarray, lens: np.ndarray, spec: TokenSpec) -> tuple[np.ndarray, np.ndarray]:
    """Causal pretraining: documents joined with eos after each one, packed into full rows of max_len."""
    total = int(lens.sum()) + len(lens)
    stream = np.empty(total, dtype=np.int32)
    is_eos = np.zeros(total, dtype=bool)
    is_eos[np.cumsum(lens + 1) - 1] = True
    stream[is_eos] = spec.eos_id
    stream[~is_eos] = flat
    rows = total // spec.max_len
    x = stream[: rows * spec.max_len].reshape(rows, spec.max_len)
    return x, np.full(rows, spec.max_len, dtype=np.int64)


def _doc_windows(flat: np.ndarray, lens: np.ndarray, spec: TokenSpec, windows: int
                 ) -> tuple[np.ndarray, np.ndarray, int, int]:  # fmt: skip
    """Evaluation: one row of ``windows * max_len`` tokens per document, its text cut into consecutive windows
    laid out as samples of their own (``[CLS] w [SEP]``; causal: ``w eos``), every window full but the last,
    then padding; ``lengths`` counts the valid tokens of the row, so window j holds ``clamp(length - j *
    max_len, 0, max_len)`` of them (what ``TextTransformer`` reads). -> (x, lengths, documents longer than one
    window, documents longer than ``windows`` windows and cut)."""
    L = spec.max_len
    cap = L - 1 if spec.causal else L - 2  # text tokens per window
    k = np.clip((lens + cap - 1) // cap, 1, windows)  # windows per document (an empty one has one)
    doc = np.repeat(np.arange(len(lens)), k)
    j = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)  # window index within its document
    starts = (np.cumsum(lens) - lens)[doc] + j * cap
    counts = np.clip(lens[doc] - j * cap, 0, cap)
    first, last = (None, spec.eos_id) if spec.causal else (spec.cls_id, spec.sep_id)
    rows, row_len = _rows(flat, starts, counts, spec, first, last)
    x = np.full((len(lens), windows, L), spec.pad_id, dtype=np.int32)
    x[doc, j] = rows
    lengths = np.zeros(len(lens), dtype=np.int64)
    np.add.at(lengths, doc, row_len)  # every window but the last is full (L)
    return x.reshape(len(lens), windows * L), lengths, int((lens > cap).sum()), int((lens > cap * windows).sum())
