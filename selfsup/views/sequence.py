"""Views of biological sequences, made in batches on the device from token rows: crops, point mutations and
reverse complements at the residue level, then tokens again.

``SeqCodec(spec)`` reads the vocabulary's layout from a sequence ``TokenSpec`` (``alphabet``, ``residues``,
``kmer``, ``kmer_stride``; ``selfsup.data.seq_tokens``) and holds its tables as buffers (they follow the method
to its device). Residue rows are long ``[B, N]``: the index of each residue in ``spec.residues`` (an unknown
character is index ``len(residues)``), -1 after the row's ``n`` residues.

- ``to_residues``: token rows (``[CLS] .. [SEP]`` or bare, padded after ``lengths``) -> the residues they cover:
  the first residue of each token and every residue of the last one (overlapping k-mers: a window's last
  k-mer reaches k - 1 residues past its start), or every residue of every token (non-overlapping);
- ``encode``: residues -> tokens by the tokenizer's own rules (``SeqTokenizer``: a k-mer where all k residues are
  core, else single residues), vectorized over the batch; ``rows`` lays them out as ``[CLS] .. [SEP]``;
- ``crop``: a contiguous sub-sequence of a random fraction of each row's residues; ``mutate``: point mutations,
  a share of the residues replaced by a different core residue (case kept); ``reverse_complement`` (DNA / RNA).

Every random draw comes from the passed generator with a shape that depends only on the batch's shape, as the
other views of ``selfsup.views``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.alphabet import get_alphabet
from selfsup.data.seq_tokens import CLS, PAD, RESIDUE_OFFSET, SEP, UNK, token_layout
from selfsup.errors import UserError

__all__ = ["SeqCodec"]


class SeqCodec(nn.Module):
    """Token rows <-> residue rows of one sequence spec, and the residue-level views (see the module docstring)."""

    def __init__(self, spec):
        super().__init__()
        if not getattr(spec, "alphabet", ""):
            raise UserError("sequence views need sequence tokens (FASTA / FASTQ data, or CSV / TSV with a sequence "
                            "column); this run's tokens are text")  # fmt: skip
        alph = get_alphabet(spec.alphabet)
        self.k, self.stride = int(spec.kmer), int(spec.kmer_stride)
        keep_case = len(spec.residues) > len(alph.letters)
        vocab, residues, core = token_layout(spec.alphabet, self.k, keep_case)
        if residues != spec.residues or len(vocab) != spec.vocab_size:
            raise UserError("the run's spec does not match its sequence tokenizer's layout; the run folder may be "
                            "damaged")  # fmt: skip
        R, C, U = len(residues), len(core), len(alph.letters)
        self.R, self.C, self.U, self.first_kmer = R, C, U, RESIDUE_OFFSET + R
        self.has_complement = alph.complement is not None
        # token id -> its residues [V, k] (-1 past its width; an unknown character is residue R)
        spelled = torch.full((len(vocab), self.k), -1, dtype=torch.long)
        spelled[UNK, 0] = R
        spelled[RESIDUE_OFFSET : self.first_kmer, 0] = torch.arange(R)
        if self.k > 1:
            value = torch.arange(C**self.k)
            for j in range(self.k):  # digits in base C, most significant first; core c is residue c
                spelled[self.first_kmer :, j] = value // C ** (self.k - 1 - j) % C
        index = {c: i for i, c in enumerate(residues)}
        core_of = torch.full((R + 1,), -1, dtype=torch.long)  # residue -> core index (-1: not in a k-mer)
        core_of[:C] = torch.arange(C)
        base_of = core_of.clone()  # ... in either case (mutations keep a soft-masked residue's case)
        if keep_case:
            base_of[U : U + C] = torch.arange(C)
        lower = torch.zeros(R + 1, dtype=torch.long)  # residue -> U for lower-case ones (the offset of their case)
        lower[U:R] = U
        comp = torch.arange(R + 1)
        if self.has_complement:
            comp[:R] = torch.tensor([index[alph.complement_of(c)] for c in residues])
        tables = {"spelled": spelled, "core_of": core_of, "base_of": base_of, "lower": lower, "comp": comp}
        for name, t in tables.items():
            self.register_buffer(name, t, persistent=False)

    # ------------------------------------------------------------------ tokens <-> residues
    def to_residues(self, ids: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Token rows [B, T] -> (residues [B, N] long, -1 after ``n``; n [B]): every residue the row's tokens
        cover (specials dropped)."""
        ids = ids.long()
        B, T = ids.shape
        k = self.k
        pos = torch.arange(T, device=ids.device)
        ordinary = (ids >= RESIDUE_OFFSET) | (ids == UNK)
        if lengths is not None:
            ordinary &= pos[None] < lengths.to(ids.device)[:, None]
        spelled = self.spelled[ids]  # [B, T, k]
        keep = ordinary[..., None] & (spelled >= 0)
        if self.stride == 1 and k > 1:  # the first residue of each token, and all of the last one's
            last = torch.where(ordinary, pos, -1).amax(1)  # [B]
            first_only = torch.arange(k, device=ids.device) == 0
            keep &= first_only[None, None] | (pos[None, :, None] == last[:, None, None])
        keep, spelled = keep.flatten(1), spelled.flatten(1)  # [B, T k]
        n = keep.sum(1)
        width = T + k - 1 if self.stride == 1 else T * k
        return _compact(spelled, keep, width), n

    def encode(self, res: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        """Residues [B, N] (the first ``n`` of each row) -> (token ids [B, N], ``[PAD]`` after ``count``; count [B]),
        laid out as ``SeqTokenizer`` does."""
        B, N = res.shape
        pos = torch.arange(N, device=res.device)[None]
        inside = pos < n[:, None]
        r = res.clamp(min=0)
        single = torch.where(r == self.R, UNK, RESIDUE_OFFSET + r)
        if self.k == 1:
            return torch.where(inside, single, PAD), n
        k, C = self.k, self.C
        core = torch.where(inside, self.core_of[r], -1)  # [B, N]
        value = torch.zeros_like(core)
        bad = pos + k > n[:, None]
        for j in range(k):
            cj = F.pad(core[:, j:], (0, j), value=-1)
            value = value * C + cj
            bad = bad | (cj < 0)
        kmer = self.first_kmer + value
        if self.stride == 1:
            return torch.where(inside, torch.where(bad, single, kmer), PAD), n
        rem = pos % k
        full = (~bad).gather(1, (pos - rem).expand(B, N))  # the residue's chunk is one k-mer
        emit = ((rem == 0) | ~full) & inside
        tokens = torch.where((rem == 0) & full, kmer, single)
        out = _compact(tokens, emit, N)
        return torch.where(out < 0, PAD, out), emit.sum(1)

    @staticmethod
    def rows(tokens: Tensor, count: Tensor, width: int) -> tuple[Tensor, Tensor]:
        """Tokens [B, N] (``count`` each) -> (``[CLS] tokens [SEP]`` rows [B, width], ``[PAD]`` after; lengths [B]),
        the tokens cut to ``width - 2``."""
        B, N = tokens.shape
        cap = width - 2
        c = count.clamp(max=cap)
        body = F.pad(tokens[:, :cap], (1, max(0, cap - N) + 1), value=PAD)  # [B, width]
        pos = torch.arange(width, device=tokens.device)[None]
        out = torch.where(pos <= c[:, None], body, PAD)
        out = torch.where(pos == 0, CLS, out)
        return torch.where(pos == c[:, None] + 1, SEP, out), c + 2

    # ------------------------------------------------------------------ residue-level views
    def crop(self, res: Tensor, n: Tensor, generator, scale: tuple[float, float] = (0.5, 1.0), min_len: int = 8,
             max_len: int | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """A contiguous sub-sequence of each row: a fraction uniform in ``scale`` of its residues (at least
        ``min_len``, or the whole row when shorter; at most ``max_len``), at a uniform place."""
        B, N = res.shape
        u = torch.rand(B, 2, generator=generator, device=res.device)
        m = ((scale[0] + (scale[1] - scale[0]) * u[:, 0]) * n).round().long()
        m = torch.maximum(m, n.clamp(max=min_len))
        m = torch.minimum(m, n if max_len is None else n.clamp(max=max_len))
        start = torch.minimum((u[:, 1] * (n - m + 1)).long(), n - m)  # [B]
        pos = torch.arange(N, device=res.device)[None]
        out = res.gather(1, (start[:, None] + pos).clamp(max=N - 1))
        return torch.where(pos < m[:, None], out, -1), m

    def mutate(self, res: Tensor, n: Tensor, generator, rate: float = 0.05) -> Tensor:
        """Point mutations: each of a row's residues with probability ``rate`` becomes a different core residue
        (uniform; an ambiguity code or unknown character any core residue), in its case."""
        u = torch.rand(2, *res.shape, generator=generator, device=res.device)
        pos = torch.arange(res.shape[1], device=res.device)[None]
        hit = (u[0] < rate) & (pos < n[:, None])
        r = res.clamp(min=0)
        was = self.base_of[r]  # [B, N] -1: not a core residue in either case
        c = torch.where(was >= 0, (u[1] * (self.C - 1)).long(), (u[1] * self.C).long()).clamp(max=self.C - 1)
        c = c + ((was >= 0) & (c >= was)).long()  # skip the residue's own
        return torch.where(hit, c + self.lower[r], res)

    def reverse_complement(self, res: Tensor, n: Tensor, flip: Tensor | None = None) -> Tensor:
        """The reverse complement of each row's first ``n`` residues (of the rows where ``flip`` [B] is True)."""
        if not self.has_complement:
            raise UserError("reverse complements are for DNA and RNA; set --set method.rc_p=0 for proteins")
        N = res.shape[1]
        pos = torch.arange(N, device=res.device)[None]
        back = res.gather(1, (n[:, None] - 1 - pos).clamp(0, N - 1))
        rc = torch.where(pos < n[:, None], self.comp[back.clamp(min=0)], -1)
        return rc if flip is None else torch.where(flip[:, None], rc, res)


def _compact(values: Tensor, keep: Tensor, width: int) -> Tensor:
    """The kept entries of each row [B, M] moved to its front, in order: [B, width], -1 after them."""
    B, M = values.shape
    target = torch.where(keep, keep.long().cumsum(1) - 1, width)  # dropped entries go to a spare column
    out = torch.full((B, width + 1), -1, dtype=values.dtype, device=values.device)
    return out.scatter_(1, target.clamp(max=width), torch.where(keep, values, -1))[:, :width]
