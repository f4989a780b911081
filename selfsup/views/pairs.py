"""Segment pairs for BERT's next-sentence prediction (NSP) and ALBERT's sentence-order prediction (SOP).

One builder for both tasks, batched and generator-driven like ``selfsup.views.masking``: every random draw
comes from the passed ``torch.Generator`` on the batch's device, with a shape that depends only on the batch
shape, so the same seed gives the same pairs and a row gets a new pairing every time it is seen.

Input rows are pretraining rows of a wordpiece tokenizer (``selfsup.data.tokens``): ``[CLS] window [SEP]``
then padding, ``ids [B, T]`` with ``lengths [B]``. A row's content is what lies between its leading
``[CLS]`` and its trailing ``[SEP]`` (a row without them: everything up to its length). Each row's content
is split at a uniformly drawn point into two consecutive non-empty segments A (before) and B (after), and
the row becomes ``[CLS] first [SEP] second [SEP]`` then padding, at the same width T:

- ``nsp``: for half the rows (drawn per row), B is replaced by a run of tokens of the same length as B
  taken at a random place in another row of the batch (a uniformly drawn nonzero offset), so that true and
  random pairs have the same length statistics. Label 0 = B is the continuation, 1 = B is random
  (Hugging Face's ``next_sentence_label`` convention). Rows of a batch are shuffled windows of the whole
  corpus: the other row comes from the same document only with probability about (w - 1) / (N - 1), for a
  document of w windows among N rows, and even then it is another (non-overlapping) window, never the text
  that follows A. A batch of one row, or a row whose chosen other row has no content, keeps its true B.
- ``sop``: for half the rows, the two segments are swapped (``[CLS] B [SEP] A [SEP]``). Label 0 = in order,
  1 = swapped (``sentence_order_label`` in Hugging Face's ALBERT).

A pair holds at most T - 3 content tokens; a longer one is cut as BERT's ``truncate_seq_pair``: one token
at a time from the longer segment (B on a tie). Local choice: A is cut at its front and B at its back, so
the tokens on either side of the middle ``[SEP]`` stay the true junction. Rows with fewer than 2 content
tokens cannot be split: they become ``[CLS] content [SEP]`` with label -100 (ignored by the loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

PAIR_MODES = ("nsp", "sop")
MIN_PAIR_LEN = 5  # [CLS] A [SEP] B [SEP] with one token each
IGNORE = -100  # the label of a row too short to split (cross_entropy's ignore_index)

__all__ = ["IGNORE", "MIN_PAIR_LEN", "PAIR_MODES", "make_pairs"]


def _uniform_int(u: Tensor, n: Tensor) -> Tensor:
    """Integers uniform in 0 .. n - 1 (0 where n <= 0) from uniform draws u in [0, 1). u, n: [B] -> [B] long."""
    n = n.clamp(min=1)
    return torch.minimum((u * n).long(), n - 1)  # the min guards against u * n rounding up to n in float32


def make_pairs(ids: Tensor, lengths: Tensor | None, spec, generator: torch.Generator | None = None,
               mode: str = "nsp") -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Pretraining rows -> segment pairs for ``mode`` ("nsp" or "sop"), on ``ids``' device.

    ids [B, T] ``[CLS] content [SEP] pad..``, lengths [B] or None (no padding) ->
    (pairs long [B, T] ``[CLS] first [SEP] second [SEP] pad..``, new lengths long [B],
    labels long [B]: 0 true / in order, 1 random / swapped, -100 for rows too short to split)."""
    if mode not in PAIR_MODES:
        raise ValueError(f"mode must be one of {', '.join(PAIR_MODES)}, got {mode!r}")
    if spec.cls_id is None or spec.sep_id is None:
        raise ValueError("segment pairs need a spec with cls_id and sep_id")
    B, T = ids.shape
    if T < MIN_PAIR_LEN:
        raise ValueError(f"segment pairs need rows of at least {MIN_PAIR_LEN} tokens, got {T}")
    dev = ids.device
    ids = ids.long()
    rows = torch.arange(B, device=dev)  # [B]
    if lengths is None:
        lengths = torch.full((B,), T, device=dev, dtype=torch.long)
    lengths = lengths.to(dev).long().clamp(0, T)  # [B]

    # content: [start, start + n) of each row
    last = ids[rows, (lengths - 1).clamp(min=0)]  # [B]
    start = ((ids[:, 0] == spec.cls_id) & (lengths > 0)).long()  # [B] 1 after a leading [CLS]
    end = lengths - ((last == spec.sep_id) & (lengths > start)).long()  # [B] before a trailing [SEP]
    n = (end - start).clamp(min=0)  # [B] content tokens
    ok = n >= 2  # [B] rows that can be split

    u = torch.rand(B, 4, generator=generator, device=dev)  # split, flip, other row, place in the other row
    k = 1 + _uniform_int(u[:, 0], n - 1)  # [B] A = content[:k], B = content[k:], both non-empty where ok
    flip = ok & (u[:, 1] < 0.5)  # [B] random B (nsp) / swapped (sop)
    a_len, b_len = k, n - k  # [B]
    b_row, b_start = rows, start + k  # [B] where B's tokens are read: row and first position
    if mode == "nsp":
        other = (rows + 1 + _uniform_int(u[:, 2], torch.full_like(n, B - 1))) % B  # [B] another row (itself if B == 1)
        flip &= (other != rows) & (n[other] > 0)
        take = torch.minimum(b_len, n[other])  # [B] as long as the true B where the other row has the tokens
        place = _uniform_int(u[:, 3], n[other] - take + 1)  # [B] offset of the run in the other row's content
        b_row = torch.where(flip, other, rows)
        b_start = torch.where(flip, start[other] + place, b_start)
        b_len = torch.where(flip, take, b_len)

    # truncate_seq_pair's result in closed form: the longer is cut first, then both in turn (B on a tie)
    budget = T - 3
    a_cut = torch.minimum(a_len, (budget - b_len).clamp(min=(budget + 1) // 2))  # [B]
    b_cut = torch.minimum(b_len, budget - a_cut)  # [B]
    a_start = start + k - a_cut  # [B] A loses tokens at its front, B at its back

    swap = flip if mode == "sop" else torch.zeros_like(flip)
    f_row, f_start, f_len = (torch.where(swap, b_row, rows), torch.where(swap, b_start, a_start),
                             torch.where(swap, b_cut, a_cut))  # fmt: skip
    s_row, s_start, s_len = (torch.where(swap, rows, b_row), torch.where(swap, a_start, b_start),
                             torch.where(swap, a_cut, b_cut))  # fmt: skip
    # rows too short to split: [CLS] content [SEP]
    f_row, f_start, f_len = torch.where(ok, f_row, rows), torch.where(ok, f_start, start), torch.where(ok, f_len, n)
    s_len = torch.where(ok, s_len, 0)
    new_len = torch.where(ok, f_len + s_len + 3, n + 2)  # [B]

    # gather every output position from (row, position) of the input: [B, T]
    p = torch.arange(T, device=dev)[None]  # [1, T]
    f_len2, s_end = f_len[:, None], (f_len + 2 + s_len)[:, None]  # [B, 1]
    in_first = (p >= 1) & (p <= f_len2)  # [B, T]
    src_row = torch.where(in_first, f_row[:, None], s_row[:, None])  # [B, T]
    src_pos = torch.where(in_first, f_start[:, None] + p - 1, s_start[:, None] + p - f_len2 - 2)  # [B, T]
    out = ids[src_row, src_pos.clamp(0, T - 1)]  # [B, T]
    out = torch.where(p == 0, spec.cls_id, out)
    out = torch.where((p == f_len2 + 1) | ((p == s_end) & ok[:, None]), spec.sep_id, out)
    out = torch.where(p >= new_len[:, None], spec.pad_id, out)
    labels = torch.where(ok, flip.long(), IGNORE)  # [B]
    return out, new_len, labels
