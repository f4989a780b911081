"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016): permutation sets, tiles with gaps, shuffling.

A puzzle cuts a square canvas into a ``grid x grid`` array of cells and takes one
``tile x tile`` crop at a random offset inside each cell, so the gaps between
tiles vary and neighbouring edges do not line up (no shortcut through edge
continuity). Tiles are then put in the order of a permutation drawn from a fixed
set, and a network classifies which permutation it was.

Batched and generator-driven like ``selfsup.views.image``: no Python loop over
samples, every random draw comes from the passed ``torch.Generator`` and has a
shape that depends only on the arguments and the batch shape.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "all_permutations",
    "jigsaw_tiles",
    "maximal_hamming_permutations",
    "min_hamming_distance",
    "normalize_tiles",
    "shuffle_tiles",
]


@functools.lru_cache(maxsize=2)
def _all_permutations(n: int) -> np.ndarray:
    flat = itertools.chain.from_iterable(itertools.permutations(range(n)))
    return np.fromiter(flat, dtype=np.int8, count=n * math.factorial(n)).reshape(-1, n)


def all_permutations(n: int = 9) -> Tensor:
    """Every permutation of ``0..n-1`` in lexicographic order, int8 ``[n!, n]`` (362880 rows for n = 9)."""
    if not 1 <= n <= 10:
        raise ValueError(f"all_permutations enumerates n! rows; n must be in 1..10, got {n}")
    return torch.from_numpy(_all_permutations(n).copy())


def maximal_hamming_permutations(size: int, pieces: int = 9, seed: int = 0) -> Tensor:
    """A greedy maximal-Hamming-distance permutation set (the paper's Algorithm 1), int64 ``[size, pieces]``.

    As in the paper: start from one permutation drawn at random out of all ``pieces!``, then
    repeatedly add the not yet chosen permutation farthest from the chosen ones. The paper
    ranks candidates by their Hamming distance summed over the chosen set (``1^T D``); alone,
    that rule reaches an average distance of 8.08 for 100 permutations of 9 (the paper's
    figure) but leaves near-duplicates, minimum distance 2, no better than a random set.
    Here candidates are ranked by their distance to the nearest chosen permutation first
    and by the paper's summed distance second, which keeps the average (8.08) and lifts the
    minimum to 6 for 100 permutations (5 for 1000). Remaining ties are broken at random.

    All draws come from ``torch.Generator().manual_seed(seed)``: same seed, same set.
    About a second for 100 permutations of 9 pieces, ten for 1000.
    """
    cand = _all_permutations(pieces).T.copy()  # [pieces, N] int8, one row per position
    n = cand.shape[1]
    if not 1 <= size <= n:
        raise ValueError(f"a permutation set of {pieces} pieces holds 1..{n} permutations, got {size}")
    g = torch.Generator().manual_seed(seed)
    nearest = np.full(n, pieces, dtype=np.int64)  # [N] distance to the nearest chosen permutation
    total = np.zeros(n, dtype=np.int64)  # [N] distance summed over the chosen set
    chosen = [int(torch.randint(n, (1,), generator=g))]
    for _ in range(size - 1):
        p = cand[:, chosen[-1]]
        dist = np.zeros(n, dtype=np.int64)
        for i in range(pieces):
            dist += cand[i] != p[i]
        np.minimum(nearest, dist, out=nearest)
        total += dist
        key = nearest * (pieces * size + 1) + total  # nearest first, then the sum
        key[chosen] = -1
        ties = np.flatnonzero(key == key.max())
        chosen.append(int(ties[int(torch.randint(len(ties), (1,), generator=g))]))
    return torch.from_numpy(cand[:, chosen].T.astype(np.int64))


def min_hamming_distance(perms: Tensor) -> int:
    """Smallest Hamming distance between two different rows of ``perms`` [P, n] (P >= 2)."""
    d = (perms.unsqueeze(0) != perms.unsqueeze(1)).sum(-1)  # [P, P]
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def jigsaw_tiles(
    x: Tensor,
    tile: int,
    grid: int = 3,
    channel_jitter: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cut each image into ``grid x grid`` cells and crop one ``tile x tile`` tile per cell.

    The canvas side must be a multiple of ``grid``; ``cell = side // grid``. Each tile's
    top-left corner is uniform over the integer offsets ``0..cell - tile`` inside its cell
    (``tile == cell``: the tiles are exactly the cells). ``channel_jitter`` > 0 moves each
    colour channel of a tile by a further -j..j pixels (kept inside the cell), the paper's
    guard against chromatic aberration as a cue; it draws nothing when 0.

    Tiles come in cell order, row-major: ``tiles[:, r * grid + c]`` is cut from cell (r, c).

    x: [B, C, S, S] -> [B, grid * grid, C, tile, tile]
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected a batch of square images [B, C, S, S], got shape {tuple(x.shape)}")
    B, C, S, _ = x.shape
    if S % grid:
        raise ValueError(f"the canvas side {S} is not a multiple of the grid {grid}")
    cell, K, dev = S // grid, grid * grid, x.device
    if not 1 <= tile <= cell:
        raise ValueError(f"tile must be in 1..{cell} (the cell side), got {tile}")
    span = cell - tile  # largest offset inside a cell
    u = torch.rand(B, K, 1, 2, generator=generator, device=dev)  # [B, K, 1, 2]
    off = torch.minimum((u * (span + 1)).floor(), torch.tensor(float(span), device=dev))  # [B, K, 1, 2]
    if channel_jitter > 0:
        v = torch.rand(B, K, C, 2, generator=generator, device=dev)  # [B, K, C, 2]
        shift = (v * (2 * channel_jitter + 1)).floor() - channel_jitter
        off = (off + shift).clamp(0, span)  # [B, K, C, 2]
    off = off.long().expand(B, K, C, 2)
    k = torch.arange(K, device=dev)
    corner = torch.stack([k // grid, k % grid], dim=1).mul(cell).view(1, K, 1, 2)  # [1, K, 1, 2] cell origins
    start = corner + off  # [B, K, C, 2]
    ar = torch.arange(tile, device=dev)
    rows = (start[..., 0, None] + ar).unsqueeze(-1)  # [B, K, C, t, 1]
    cols = (start[..., 1, None] + ar).unsqueeze(-2)  # [B, K, C, 1, t]
    b = torch.arange(B, device=dev).view(B, 1, 1, 1, 1)
    c = torch.arange(C, device=dev).view(1, 1, C, 1, 1)
    return x[b, c, rows, cols]  # [B, K, C, t, t]


def shuffle_tiles(tiles: Tensor, permutations: Tensor, labels: Tensor) -> Tensor:
    """Put sample b's tiles in the order of permutation ``labels[b]``.

    ``out[b, i] = tiles[b, permutations[labels[b], i]]``: position i shows the tile of cell p_i.

    tiles: [B, K, ...], permutations: [P, K], labels: [B] -> [B, K, ...]
    """
    order = permutations.to(tiles.device)[labels]  # [B, K]
    idx = torch.arange(tiles.shape[0], device=tiles.device).unsqueeze(1)  # [B, 1]
    return tiles[idx, order]


def normalize_tiles(tiles: Tensor, mean: Tensor | float, std: Tensor | float, eps: float = 0.05) -> Tensor:
    """Give every tile its own zero mean and unit std, expressed in the encoder's input units.

    The paper normalizes each tile independently so that adjacent tiles cannot be matched by
    their low-level statistics. Here the result is ``mean + std * (tile - m) / max(s, eps)``
    with ``m, s`` the tile's own mean and std over its channels and pixels, so after the
    encoder's ``(x - mean) / std`` input normalization a tile is exactly standardized.
    ``eps`` (in [0, 1] pixel units) keeps flat tiles, e.g. plain background, from being
    blown up to noise.

    tiles: [B, K, C, t, t]; mean, std: scalars or [1, C, 1, 1] -> [B, K, C, t, t]
    """
    m = tiles.mean(dim=(-3, -2, -1), keepdim=True)  # [B, K, 1, 1, 1]
    s = tiles.std(dim=(-3, -2, -1), keepdim=True).clamp_min(eps)
    mean = torch.as_tensor(mean, dtype=tiles.dtype, device=tiles.device).reshape(-1, 1, 1)  # [C or 1, 1, 1]
    std = torch.as_tensor(std, dtype=tiles.dtype, device=tiles.device).reshape(-1, 1, 1)
    return (tiles - m) / s * std + mean
