"""Tokenizers for biological sequences: single residues or k-mers (DNABERT: Ji et al., Bioinformatics 2021).

A ``SeqTokenizer`` is fixed by its parameters (nothing is trained): the alphabet, ``k``, ``overlap`` and
``keep_case``. Its vocabulary, in id order:

- the specials ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` (the WordPiece family's ids and names, so the token
  layouts and masking of ``selfsup.data.tokens`` and ``selfsup.views.masking`` serve sequences unchanged);
- one token per residue letter: the core letters, then the IUPAC ambiguity codes (their own tokens), then, with
  ``keep_case`` (``data.soft_mask=keep``), the lower-case forms of both, in the same order
  (``Alphabet.residues``); ``RESIDUE_OFFSET`` is the first residue's id;
- with k > 1, every k-mer over the core letters (4^k for DNA / RNA, 20^k for proteins up to k = 3), in base
  ``|core|`` order with the first residue most significant: k-mer ``c_0 .. c_{k-1}`` (core indices) has id
  ``RESIDUE_OFFSET + len(residues) + sum c_j |core|^(k-1-j)``.

Layouts, both exact round trips for any residues:

- overlapping (stride 1, DNABERT): L residues give L tokens; token i is the k-mer ``s[i:i+k]`` when ``i + k <= L``
  and all k residues are core (upper-case), else the single-residue token of ``s[i]``. Decoding keeps the first
  residue of each token.
- non-overlapping (stride k): each chunk of k residues from the start is its k-mer when all core, else its
  residues as single tokens (the last, shorter chunk too), so the token count varies. Decoding concatenates.

Encoding is numpy over the ASCII bytes (a lookup table per byte, k-mer ids by base-|core| arithmetic), a few
million residues at a time: tens of millions of residues take seconds. Characters that are not residues of the
alphabet are ``[UNK]`` (decoded as ``?``); without ``keep_case`` lower-case residues read as upper-case.

Saved as ``RUN/tokenizer.json``: a small JSON object marked ``"selfsup_sequence_tokenizer"`` with the parameters
and the vocabulary (``load_tokenizer`` in ``selfsup.data.tokens`` recognizes it; family ``"sequence"``).
"""

from __future__ import annotations

import json
from itertools import product
from types import SimpleNamespace

import numpy as np

from selfsup.data.alphabet import get_alphabet
from selfsup.data.spec import TokenSpec
from selfsup.errors import UserError

MARKER = "selfsup_sequence_tokenizer"
FAMILY = "sequence"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # = selfsup.data.tokens.WORDPIECE_SPECIALS
PAD, UNK, CLS, SEP, MASK = range(5)
RESIDUE_OFFSET = len(SPECIALS)
MAX_K = {"dna": 8, "rna": 8, "protein": 3}  # 4^8 = 65,536 and 20^3 = 8,000 k-mers
CHUNK = 1 << 22  # residues encoded at once (bounds the temporary arrays)

__all__ = ["FAMILY", "MARKER", "RESIDUE_OFFSET", "SeqTokenizer", "is_seq_tokenizer", "token_layout"]


def token_layout(alphabet: str, k: int = 1, keep_case: bool = False) -> tuple[list[str], str, str]:
    """-> (vocabulary in id order, residue letters in id order from ``RESIDUE_OFFSET``, core letters)."""
    alph = get_alphabet(alphabet)
    residues = alph.residues(keep_case)
    kmers = ["".join(p) for p in product(alph.core, repeat=k)] if k > 1 else []
    return [*SPECIALS, *residues, *kmers], residues, alph.core


class SeqTokenizer:
    """Residue or k-mer tokens of one alphabet (see the module docstring). Duck-types the parts of a Hugging Face
    ``tokenizers.Tokenizer`` that ``selfsup.data.tokens`` uses (``to_str``, ``token_to_id``, ``get_vocab_size``,
    ``encode_batch``, ``truncation`` / ``padding``), and adds ``encode_many`` (numpy, what the token datasets call)."""

    family = FAMILY
    truncation = None
    padding = None

    def __init__(self, alphabet: str, k: int = 1, overlap: bool = True, keep_case: bool = False):
        k = int(k)
        limit = MAX_K.get(alphabet)
        if limit is None:
            get_alphabet(alphabet)  # the one-line UserError naming the alphabets
        if not 1 <= k <= limit:
            raise UserError(f"data.kmer={k} is out of range for {alphabet}: use 1 .. {limit} (--kmer)")
        self.alphabet, self.k, self.keep_case = alphabet, k, bool(keep_case)
        self.overlap = bool(overlap) or k == 1  # k = 1: both layouts are the same
        self.vocab, self.residues, self.core = token_layout(alphabet, k, self.keep_case)
        self._ids = {t: i for i, t in enumerate(self.vocab)}
        self.first_kmer = RESIDUE_OFFSET + len(self.residues)
        upper = get_alphabet(alphabet).letters
        self._single = np.full(256, UNK, dtype=np.int32)  # byte -> residue token id
        self._core = np.full(256, -1, dtype=np.int32)  # byte -> core index (-1: not a core residue)
        for i, c in enumerate(self.residues):
            self._single[ord(c)] = RESIDUE_OFFSET + i
        if not self.keep_case:
            for i, c in enumerate(upper):
                self._single[ord(c.lower())] = RESIDUE_OFFSET + i
        for i, c in enumerate(self.core):
            self._core[ord(c)] = i
            if not self.keep_case:
                self._core[ord(c.lower())] = i
        text = [t if i >= RESIDUE_OFFSET else ("?" if i == UNK else "") for i, t in enumerate(self.vocab)]
        self._text = np.array(text, dtype=object)  # id -> its residues

    @property
    def stride(self) -> int:
        return 1 if self.overlap else self.k

    def __repr__(self) -> str:
        return (f"SeqTokenizer({self.alphabet!r}, k={self.k}, overlap={self.overlap}, keep_case={self.keep_case}: "
                f"{len(self.vocab)} tokens)")  # fmt: skip

    # --- the tokenizers.Tokenizer surface selfsup uses ------------------------------------------------------
    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return len(self.vocab)

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        return dict(self._ids)

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def id_to_token(self, i: int) -> str | None:
        return self.vocab[i] if 0 <= i < len(self.vocab) else None

    def to_str(self) -> str:
        return json.dumps({MARKER: 1, "alphabet": self.alphabet, "k": self.k, "overlap": self.overlap,
                           "keep_case": self.keep_case, "vocab": self.vocab})  # fmt: skip

    @classmethod
    def from_str(cls, text: str, where: str = "the tokenizer") -> SeqTokenizer:
        try:
            data = json.loads(text)
            tok = cls(data["alphabet"], data["k"], data["overlap"], data["keep_case"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{where} is a damaged sequence tokenizer.json; pass the run's own") from None
        if data.get(MARKER) != 1 or data.get("vocab") != tok.vocab:
            raise UserError(f"{where} is a damaged sequence tokenizer.json (its vocabulary does not match its "
                            "parameters); pass the run's own")  # fmt: skip
        return tok

    def encode_batch(self, texts, add_special_tokens: bool = False) -> list:
        """Per-text encodings with ``.ids`` (as ``tokenizers``; without specials whatever ``add_special_tokens``)."""
        flat, lens = self.encode_many(texts)
        if not len(lens):
            return []
        return [SimpleNamespace(ids=part.tolist()) for part in np.split(flat, np.cumsum(lens)[:-1])]

    def encode(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        """One text's encoding with ``.ids`` (as ``tokenizers``; no specials are added)."""
        return SimpleNamespace(ids=self.encode_many([text])[0].tolist())

    # --- encoding and decoding ----------------------------------------------------------------------------
    def encode_many(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids, concatenated: (int32 [total], int64 [N] tokens per text); vectorized numpy."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
            raise UserError(f"sequence {bad} is a {type(texts[bad]).__name__}, not text; check the reader")
        chars = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        flats, lens = [], []
        start = 0
        while start < len(texts):  # whole texts, about CHUNK residues at a time
            stop = start + max(1, int(np.searchsorted(np.cumsum(chars[start:]), CHUNK, side="right")))
            # "replace": one byte per character, so byte offsets are character offsets
            buf = np.frombuffer("".join(texts[start:stop]).encode("ascii", "replace"), dtype=np.uint8)
            flat, n = self._encode_buf(buf, chars[start:stop])
            flats.append(flat)
            lens.append(n)
            start = stop
        if not lens:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        return np.concatenate(flats), np.concatenate(lens)

    def _encode_buf(self, buf: np.ndarray, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        single = self._single[buf]  # [N] residue token ids (UNK elsewhere)
        if self.k == 1:
            return single, chars.copy()
        n_all = len(buf)
        core = self._core[buf]  # [N]
        k, C = self.k, len(self.core)
        padded = np.concatenate([core, np.full(k - 1, -1, np.int32)])
        value = np.zeros(n_all, np.int32)
        bad = np.zeros(n_all, bool)
        for j in range(k):
            cj = padded[j : j + n_all]
            value = value * C + cj
            bad |= cj < 0
        ends = np.repeat(np.cumsum(chars), chars)  # [N] the end of each residue's sequence
        pos = np.arange(n_all)
        bad |= pos + k > ends
        kmer = value + self.first_kmer
        if self.overlap:
            return np.where(bad, single, kmer).astype(np.int32), chars.copy()
        off = pos - (ends - np.repeat(chars, chars))  # position within its sequence
        r = off % k
        full = ~bad[pos - r]  # the residue's chunk is one k-mer
        emit = (r == 0) | ~full
        ids = np.where((r == 0) & full, kmer, single)[emit].astype(np.int32)
        doc = np.repeat(np.arange(len(chars)), chars)
        return ids, np.bincount(doc[emit], minlength=len(chars)).astype(np.int64)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The residues of token ids (specials dropped whatever ``skip_special_tokens``, ``[UNK]`` as ``?``): the
        first residue of each token when overlapping, every residue otherwise; ``decode(encode(s).ids) == s`` for
        residues of the alphabet."""
        ids = [int(i) for i in ids]
        if not self.overlap:
            return "".join(self._text[ids])
        if not ids:
            return ""
        return "".join(t[:1] for t in self._text[ids])

    # --- the spec -----------------------------------------------------------------------------------------
    def token_spec(self, causal: bool, max_len: int) -> TokenSpec:
        """The ``TokenSpec`` of rows of ``max_len`` ids: bidirectional (``[CLS] .. [SEP]`` windows, ``[MASK]``)
        or ``causal`` (sequences packed with ``[SEP]`` as end of sequence, ``[PAD]`` after shorter rows)."""
        from selfsup.data.tokens import tokenizer_hash

        least = 2 if causal else 3
        if int(max_len) < least:
            raise UserError(f"max_len={max_len} is too small for sequence rows; use at least {least} (--max-len)")
        common = dict(vocab_size=len(self.vocab), max_len=int(max_len), pad_id=PAD, unk_id=UNK,
                      special_ids=tuple(range(RESIDUE_OFFSET)), causal=bool(causal),
                      tokenizer_hash=tokenizer_hash(self), alphabet=self.alphabet, residues=self.residues,
                      kmer=self.k, kmer_stride=self.stride)  # fmt: skip
        if causal:
            return TokenSpec(bos_id=SEP, eos_id=SEP, **common)
        return TokenSpec(cls_id=CLS, sep_id=SEP, mask_id=MASK, **common)


def is_seq_tokenizer(tok) -> bool:
    return isinstance(tok, SeqTokenizer)
