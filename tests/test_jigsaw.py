"""Jigsaw puzzles: the permutation set, tiles with gaps, shuffling, and the method's views and state."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file, save_file

from selfsup.encoders import build_encoder
from selfsup.methods.jigsaw import Jigsaw, JigsawParams
from selfsup.runs import state_tensors
from selfsup.views import jigsaw_tiles, maximal_hamming_permutations, normalize_tiles, shuffle_tiles

from .conftest import image_spec


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pairwise_hamming(perms: torch.Tensor) -> list[int]:
    """Reference: the Hamming distance of every pair of rows, written out."""
    rows = perms.tolist()
    return [sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(rows, 2)]


@pytest.fixture(scope="module")
def perms100() -> torch.Tensor:
    return maximal_hamming_permutations(100, seed=0)


def test_permutation_set_size_rows_and_determinism(perms100):
    assert perms100.shape == (100, 9) and perms100.dtype == torch.int64
    assert torch.equal(perms100.sort(dim=1).values, torch.arange(9).expand(100, 9)), "each row permutes 0..8"
    assert len({tuple(r) for r in perms100.tolist()}) == 100, "rows are unique"
    small = maximal_hamming_permutations(12, seed=3)
    assert small.shape == (12, 9) and len({tuple(r) for r in small.tolist()}) == 12
    assert torch.equal(maximal_hamming_permutations(12, seed=3), small), "same seed, same set"
    assert not torch.equal(maximal_hamming_permutations(12, seed=4), small)
    with pytest.raises(ValueError):
        maximal_hamming_permutations(0)


def test_permutation_set_is_farther_apart_than_random_sets(perms100):
    d = pairwise_hamming(perms100)
    g = gen(7)
    random_mins, random_means = [], []
    for _ in range(5):
        rand = torch.stack([torch.randperm(9, generator=g) for _ in range(100)])
        dr = pairwise_hamming(rand)
        random_mins.append(min(dr))
        random_means.append(sum(dr) / len(dr))
    assert min(d) > max(random_mins), (min(d), random_mins)
    assert sum(d) / len(d) > max(random_means), "the paper's summed-distance criterion: a larger average too"


def test_tiles_with_zero_jitter_are_the_cells_and_reassemble():
    x = torch.rand(4, 3, 27, 27, generator=gen(1))
    tiles = jigsaw_tiles(x, tile=9, generator=gen(2))  # tile == cell: no room for gaps
    assert tiles.shape == (4, 9, 3, 9, 9)
    for r in range(3):
        for c in range(3):
            assert torch.equal(tiles[:, 3 * r + c], x[:, :, 9 * r : 9 * r + 9, 9 * c : 9 * c + 9])
    same = shuffle_tiles(tiles, torch.arange(9).unsqueeze(0), torch.zeros(4, dtype=torch.long))  # identity
    rows = [torch.cat(list(same[:, 3 * r : 3 * r + 3].unbind(1)), dim=-1) for r in range(3)]  # [B, C, 9, 27]
    assert torch.equal(torch.cat(rows, dim=-2), x)


def _offset_in_cell(tile: torch.Tensor, cell: torch.Tensor) -> list[tuple[int, int]]:
    t, s = tile.shape[-1], cell.shape[-1]
    return [
        (i, j) for i in range(s - t + 1) for j in range(s - t + 1) if torch.equal(cell[..., i : i + t, j : j + t], tile)
    ]


def test_tiles_are_random_crops_inside_their_cells():
    x = torch.rand(6, 1, 30, 30, generator=gen(3))
    tiles = jigsaw_tiles(x, tile=7, generator=gen(4))  # cells of 10 px, offsets 0..3
    offsets = set()
    for b in range(6):
        for k in range(9):
            r, c = divmod(k, 3)
            hits = _offset_in_cell(tiles[b, k], x[b, :, 10 * r : 10 * r + 10, 10 * c : 10 * c + 10])
            assert len(hits) == 1
            offsets.add(hits[0])
    assert len(offsets) > 4, "the gaps vary, so tile edges do not line up"
    assert torch.equal(jigsaw_tiles(x, tile=7, generator=gen(4)), tiles), "same generator, same tiles"
    assert not torch.equal(jigsaw_tiles(x, tile=7, generator=gen(5)), tiles)


def test_channel_jitter_moves_channels_within_the_cell():
    x = torch.rand(4, 3, 30, 30, generator=gen(6))
    tiles = jigsaw_tiles(x, tile=6, channel_jitter=2, generator=gen(7))
    differ = 0
    for b in range(4):
        for k in range(9):
            r, c = divmod(k, 3)
            cell = x[b, :, 10 * r : 10 * r + 10, 10 * c : 10 * c + 10]
            found = [_offset_in_cell(tiles[b, k, ch], cell[ch]) for ch in range(3)]
            assert all(len(f) == 1 for f in found)
            differ += len({f[0] for f in found}) > 1
    assert differ > 0, "some tiles have their colour channels shifted against each other"


def test_shuffled_tiles_follow_the_permutation(perms100):
    x = torch.rand(5, 1, 24, 24, generator=gen(8))
    tiles = jigsaw_tiles(x, tile=6, generator=gen(9))
    labels = torch.tensor([0, 17, 42, 99, 17])
    out = shuffle_tiles(tiles, perms100, labels)
    for b in range(5):
        for i in range(9):
            assert torch.equal(out[b, i], tiles[b, perms100[labels[b], i]])
    assert not torch.equal(out, tiles)


def test_normalize_tiles_standardizes_each_tile_in_encoder_units():
    tiles = torch.rand(2, 9, 1, 8, 8, generator=gen(10)) * 0.5 + 0.2
    tiles[0, 3] = 0.0  # a flat background tile
    mean, std = torch.tensor([0.3]).view(1, 1, 1, 1), torch.tensor([0.35]).view(1, 1, 1, 1)
    z = (normalize_tiles(tiles, mean, std) - 0.3) / 0.35  # what the encoder's input layer makes of it
    flat = z.flatten(2)
    torch.testing.assert_close(flat[1].mean(-1), torch.zeros(9), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat[1].std(-1), torch.ones(9), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat[0, 3], torch.zeros(64), atol=1e-6, rtol=0)  # flat tile -> the mean, not noise


def _method(image_size: int = 27, **params) -> Jigsaw:
    torch.manual_seed(0)
    spec = image_spec(1, image_size, mean=0.3, std=0.3)
    return Jigsaw(build_encoder("resnet18", spec, {"width": 8}), JigsawParams(**params), spec)


def test_method_views_labels_index_the_permutation_set():
    # Nine cells of distinct constant grays: every tile tells which cell it came from.
    method = _method(27, num_permutations=20, canvas_scale=1.0, tile_fraction=1.0, crop_scale_min=1.0)
    assert method.tile == 9 and method.canvas == 27
    values = torch.arange(9, dtype=torch.uint8) * 25 + 20  # cell k has gray 20 + 25k
    img = values.view(3, 3).repeat_interleave(9, 0).repeat_interleave(9, 1)  # [27, 27]
    x = img.expand(16, 1, 27, 27).contiguous()
    tiles, labels = method.views(x, gen(11))
    assert tiles.shape == (16 * 9, 1, 9, 9) and labels.shape == (16,) and labels.dtype == torch.long
    assert 0 <= labels.min() and labels.max() < 20 and len(labels.unique()) > 1
    cell_of = (tiles.view(16, 9, -1).median(-1).values * 255 - 20).div(25).round().long()  # [16, 9]
    mirror = torch.tensor([2, 1, 0, 5, 4, 3, 8, 7, 6])  # cell index after a horizontal flip
    flipped = 0
    for b in range(16):
        p = method.permutations[labels[b]]
        assert torch.equal(cell_of[b], p) or torch.equal(cell_of[b], mirror[p])
        flipped += not torch.equal(cell_of[b], p)
    assert 0 < flipped < 16, "images are flipped at random before cutting"
    again, labels2 = method.views(x, gen(11))
    assert torch.equal(again, tiles) and torch.equal(labels2, labels)


def test_method_permutation_buffer_is_saved_and_restored(tmp_path):
    method = _method(28, num_permutations=30, permutation_seed=5)
    state = method.state_dict()
    assert "permutations" in state and state["permutations"].dtype == torch.int64
    assert torch.equal(state["permutations"], maximal_hamming_permutations(30, seed=5))
    save_file(state_tensors(method), str(tmp_path / "model.safetensors"))
    other = _method(28, num_permutations=30, permutation_seed=6)
    assert not torch.equal(other.permutations, method.permutations)
    other.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert torch.equal(other.permutations, method.permutations), "the checkpoint brings its permutation set"


def test_method_forward_depends_on_tile_order():
    method = _method(28, num_permutations=10)
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=gen(12))
    tiles, labels = method.views(x, gen(13))
    assert tiles.shape == (8 * 9, 1, method.tile, method.tile) and labels.shape == (8,)
    out = method((tiles, labels))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and 0.0 <= out.metrics["perm_acc"] <= 1.0
    assert out.embedding.shape == (8, method.encoder.dim)
    method.eval()
    with torch.no_grad():
        h = method.encoder(tiles).pooled.view(8, -1)
        swapped = tiles.view(8, 9, *tiles.shape[1:])[:, [1, 0, 2, 3, 4, 5, 6, 7, 8]].flatten(0, 1)
        h_swapped = method.encoder(swapped).pooled.view(8, -1)
        assert not torch.allclose(method.head(h), method.head(h_swapped)), "features are concatenated in order"
