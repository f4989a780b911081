"""Masks shared by every masked-prediction method: token masks (MAE's patches; masked LM's tokens,
masked frames and masked sequences next) and pixel block masks (inpainting, Pathak et al., CVPR 2016).

Token masks are boolean ``[B, N]``, pixel masks boolean ``[B, 1, H, W]``; True = hidden. Batched and
generator-driven like ``selfsup.views.image``: every random draw comes from the passed
``torch.Generator`` and has a shape that depends only on the arguments and the batch shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["block_side", "center_block_mask", "corrupt_tokens", "dilate_mask", "fill_masked", "hide_covering",
           "random_block_mask", "random_token_mask", "select_spans", "select_tokens", "visible_count",
           "word_starts"]  # fmt: skip


def visible_count(n: int, mask_ratio: float) -> int:
    """Tokens left visible of ``n`` at ``mask_ratio``: ``int(n * (1 - mask_ratio))``, as MAE's reference code."""
    return int(n * (1 - mask_ratio))


def random_token_mask(batch: int, n: int, n_visible: int, generator: torch.Generator | None = None, device=None,
                      lengths: Tensor | None = None) -> Tensor:  # fmt: skip
    """Per-sample random masking with exactly ``n - n_visible`` masked tokens per row: bool [B, N], True = masked.

    As MAE's reference code: uniform noise per token, the ``n_visible`` lowest are kept. With ``lengths``
    [B], padding positions (``>= length``) get noise 2 so they are masked first-last: they are never
    kept while real tokens remain (callers choose ``n_visible`` below the shortest length)."""
    if not 0 < n_visible <= n:
        raise ValueError(f"n_visible must be in 1..{n}, got {n_visible}")
    noise = torch.rand(batch, n, generator=generator, device=device)  # [B, N]
    if lengths is not None:
        pad = torch.arange(n, device=noise.device)[None] >= lengths.to(noise.device)[:, None]  # [B, N]
        noise = noise.masked_fill(pad, 2.0)
    keep = noise.argsort(dim=1)[:, :n_visible]  # [B, n_visible]
    return torch.ones(batch, n, dtype=torch.bool, device=noise.device).scatter_(1, keep, False)


def block_side(side: int, area: float) -> int:
    """The side of a square block covering about ``area`` of a ``side x side`` image (at least 1 pixel)."""
    if not 0 < area <= 1:
        raise ValueError(f"the masked area is a fraction in (0, 1], got {area}")
    return min(side, max(1, round(side * math.sqrt(area))))


def _boxes(top: Tensor, left: Tensor, height: int, width: int, h: int, w: int) -> Tensor:
    """Union of the boxes ``[top, top + h) x [left, left + w)`` per sample.

    top, left: [B, n] -> bool [B, 1, height, width]
    """
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top.unsqueeze(-1)) & (rows < (top + h).unsqueeze(-1))  # [B, n, H]
    in_cols = (cols >= left.unsqueeze(-1)) & (cols < (left + w).unsqueeze(-1))  # [B, n, W]
    return (in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)).any(1, keepdim=True)  # [B, 1, H, W]


def center_block_mask(batch: int, height: int, width: int, area: float = 0.25, device=None) -> Tensor:
    """The central block covering ``area`` of the image: half the side for the paper's 1/4.

    -> bool [batch, 1, height, width]
    """
    h, w = block_side(height, area), block_side(width, area)
    top = torch.full((batch, 1), (height - h) // 2, device=device)
    left = torch.full((batch, 1), (width - w) // 2, device=device)
    return _boxes(top, left, height, width, h, w)


def random_block_mask(
    batch: int,
    height: int,
    width: int,
    area: float = 0.25,
    blocks: int = 4,
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """``blocks`` square blocks, each covering ``area / blocks`` of the image, at random places.

    Each block lies wholly inside the image (top-left corner uniform over the valid
    positions); blocks may overlap, so together they cover at most ``area`` (the paper's
    "random block" masks: several smaller, possibly overlapping blocks covering up to 1/4).

    -> bool [batch, 1, height, width]
    """
    if blocks < 1:
        raise ValueError(f"blocks must be at least 1, got {blocks}")
    h, w = block_side(height, area / blocks), block_side(width, area / blocks)
    u = torch.rand(batch, blocks, 2, generator=generator, device=device)  # [B, n, 2]
    top = torch.minimum((u[..., 0] * (height - h + 1)).floor(), torch.tensor(float(height - h), device=device))
    left = torch.minimum((u[..., 1] * (width - w + 1)).floor(), torch.tensor(float(width - w), device=device))
    return _boxes(top.long(), left.long(), height, width, h, w)


def fill_masked(x: Tensor, mask: Tensor, value: Tensor | float) -> Tensor:
    """``value`` (e.g. the dataset mean, [1, C, 1, 1]) inside the mask, ``x`` outside.

    x: [B, C, H, W], mask: bool [B, 1, H, W] -> [B, C, H, W]
    """
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return torch.lerp(x, value.expand_as(x), mask.to(x.dtype))  # exact at weights 0 and 1


def dilate_mask(mask: Tensor, pixels: int) -> Tensor:
    """Grow a mask by ``pixels`` in every direction (a square structuring element).

    mask: bool [B, 1, H, W] -> bool [B, 1, H, W]
    """
    if pixels <= 0:
        return mask
    grown = F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown > 0


def word_starts(ids: Tensor, continues: Tensor, special_ids) -> Tensor:
    """Where each word begins, for whole-word masking: a token that is not a word-piece continuation (``##`` in
    WordPiece), or one that follows a special token or the row's start (a window may open mid-word).

    ids [B, T] (long), continues bool [V] -> bool [B, T]"""
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype, device=ids.device))
    after_special = F.pad(special[:, :-1], (1, 0), value=True)  # (a special token is never a "##" piece)
    return ~continues.to(ids.device)[ids] | after_special


def select_tokens(ids: Tensor, prob: float, special_ids, lengths: Tensor | None = None,
                  generator: torch.Generator | None = None, span: int = 1,
                  starts: Tensor | None = None, fit_runs: bool = False) -> Tensor:  # fmt: skip
    """Positions a masked-prediction objective predicts: each ordinary token (not special, not padding) with
    probability ``prob``, independently (BERT; RoBERTa's dynamic masking draws anew at every call). With
    ``span`` > 1, each drawn position starts a run of ``span`` tokens (k-mer tokens, whose neighbours would
    give the answer away); the start probability is ``prob / span`` so about ``prob`` of the tokens are hidden.
    ``fit_runs`` (with ``span`` > 1; DNABERT's k-mer masking): runs start at ordinary tokens only, and a run that
    would cross the end of its row's ordinary tokens is moved back to end at the last one, so every run hides
    exactly ``span`` tokens when the row has that many (without it, a run is cut at special tokens and padding).
    With ``starts`` (bool [B, T], ``word_starts``), whole words: each word is drawn once, with probability
    ``prob``, and all its pieces are predicted together (BERT's whole-word masking), so about ``prob`` of the
    tokens are hidden and a word is never half visible.

    ids [B, T] -> bool [B, T], True = predicted; at least one position in a batch that has an ordinary token."""
    B, T = ids.shape
    eligible = ~torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype, device=ids.device))
    if lengths is not None:
        eligible &= torch.arange(T, device=ids.device)[None] < lengths.to(ids.device)[:, None]
    u = torch.rand(B, T, generator=generator, device=ids.device)
    chosen = u < prob / span
    if fit_runs and span > 1:
        chosen = _fit_runs(chosen & eligible, eligible, span)
    if starts is not None:
        if span > 1:
            raise ValueError("whole-word masking and span masking do not combine; choose one")
        pos = torch.arange(T, device=ids.device).expand(B, T)
        first = torch.where(starts.to(ids.device), pos, torch.zeros_like(pos)).cummax(1).values  # [B, T]
        chosen = chosen.gather(1, first)  # each piece takes the draw of its word's first piece
    if span > 1:
        runs = F.pad(chosen.float()[:, None], (span - 1, 0))  # [B, 1, T + span - 1]
        chosen = F.max_pool1d(runs, span, stride=1)[:, 0] > 0  # t is hidden if a run started in t-span+1 .. t
    chosen &= eligible
    # a batch where nothing was drawn predicts its eligible token with the lowest draw (never an empty loss);
    # done without a branch, so without a host sync
    first = u.masked_fill(~eligible, 2.0).flatten().argmin()
    chosen.view(-1)[first] |= ~chosen.any() & eligible.view(-1)[first]
    return chosen


def _fit_runs(start: Tensor, eligible: Tensor, span: int) -> Tensor:
    """Run starts [B, T] moved back so that each run of ``span`` ends at or before its row's last eligible position
    (and starts at or after its first one)."""
    B, T = start.shape
    pos = torch.arange(T, device=start.device).expand(B, T)
    last = torch.where(eligible, pos, torch.full_like(pos, -1)).amax(1, keepdim=True)  # [B, 1]
    first = torch.where(eligible, pos, torch.full_like(pos, T)).amin(1, keepdim=True)  # [B, 1]
    latest = torch.maximum(last - span + 1, first).clamp(0, T - 1)  # [B, 1] the last start that fits
    moved = torch.minimum(pos, latest)
    return torch.zeros(B, T, device=start.device).scatter_add_(1, moved, start.float()) > 0


def hide_covering(chosen: Tensor, wide: Tensor, span: int) -> Tensor:
    """``chosen`` with every wide token (an overlapping k-mer, covering its own position and the ``span`` - 1 after
    it) that covers a chosen narrow token's position (a single residue) chosen too, so that no chosen residue can
    be read off a visible k-mer beside it (the single-residue tokens near ambiguity codes and at a sequence's end).
    chosen, wide bool [B, T] -> bool [B, T]."""
    narrow = (chosen & ~wide).float()[:, None]  # [B, 1, T]
    ahead = F.max_pool1d(F.pad(narrow, (0, span - 1)), span, stride=1)[:, 0] > 0  # a chosen narrow token in t..t+span-1
    return chosen | (wide & ahead)


def select_spans(lengths: Tensor, T: int, prob: float, span: int, generator: torch.Generator | None = None) -> Tensor:
    """Runs of ``span`` consecutive positions hiding about ``prob`` of each row's first ``lengths`` positions, never
    one past them: ``select_tokens``'s span mode over a row with no special tokens (masked frames: Mockingjay,
    TERA). Runs start independently and may overlap, so the start probability is raised to ``1 - (1 - prob) **
    (1 / span)`` per position for about ``prob`` of the positions to be hidden (runs that reach the end of a row
    are cut there). lengths [B] -> bool [B, T], True = hidden; at least one position in a batch."""
    if not 0 < prob < 1 or span < 1:
        raise ValueError(f"select_spans needs 0 < prob < 1 and span >= 1, got {prob} and {span}")
    start = 1 - (1 - prob) ** (1 / span)
    ids = torch.zeros(lengths.shape[0], T, dtype=torch.long, device=lengths.device)
    return select_tokens(ids, start * span, (), lengths, generator, span)


def random_ordinary(shape, vocab_size: int, special_ids, generator: torch.Generator | None, device) -> Tensor:
    """Uniform random ids [shape] over the vocabulary without the special ids, wherever they sit (0-4 for our
    WordPiece, 0 for our BPE, the last id 50256 in GPT-2's): a draw over the V - S ordinary ids, shifted past
    each special id in increasing order."""
    specials = sorted({int(i) for i in special_ids if 0 <= int(i) < vocab_size})
    if len(specials) >= vocab_size:
        raise ValueError("the vocabulary has no ordinary token to draw")
    r = torch.randint(0, vocab_size - len(specials), shape, generator=generator, device=device)
    for sid in specials:
        r = r + (r >= sid).to(r.dtype)
    return r


def corrupt_tokens(ids: Tensor, chosen: Tensor, mask_id: int, vocab_size: int, special_ids,
                   generator: torch.Generator | None = None, mask_p: float = 0.8, random_p: float = 0.1) -> Tensor:
    """BERT's corruption of the chosen positions: ``mask_p`` become ``mask_id``, ``random_p`` a random ordinary
    token, the rest keep theirs (80 / 10 / 10). ids [B, T], chosen bool [B, T] -> corrupted ids [B, T]."""
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    rand = random_ordinary(ids.shape, vocab_size, special_ids, generator, ids.device).to(ids.dtype)
    out = torch.where(chosen & (u < mask_p), torch.as_tensor(mask_id, dtype=ids.dtype, device=ids.device), ids)
    return torch.where(chosen & (u >= mask_p) & (u < mask_p + random_p), rand, out)
