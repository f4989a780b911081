"""Inpainting (Context Encoders): block masks, the mean fill, the masked L2 loss and the decoder's shape."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.methods.inpainting import Inpainting, InpaintingParams
from selfsup.views import center_block_mask, dilate_mask, fill_masked, random_block_mask

from .conftest import image_spec


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _method(image_size: int = 28, channels: int = 1, encoder: str = "resnet18", **params) -> Inpainting:
    torch.manual_seed(0)
    kw = dict(width=8) if encoder.startswith("resnet") else dict(patch_size=4, dim=32, depth=1, heads=2)
    spec = image_spec(channels, image_size, mean=0.3, std=0.35)
    return Inpainting(build_encoder(encoder, spec, kw), InpaintingParams(**params), spec)


@pytest.mark.parametrize("size", [16, 28])
def test_center_mask_is_the_central_half_side_block(size):
    mask = center_block_mask(3, size, size, area=0.25)
    assert mask.shape == (3, 1, size, size) and mask.dtype == torch.bool
    q = size // 4
    expected = torch.zeros(size, size, dtype=torch.bool)
    expected[q : q + size // 2, q : q + size // 2] = True  # 1/4 of the area: half the side, centred
    assert all(torch.equal(m[0], expected) for m in mask)


def test_random_single_blocks_stay_in_bounds_with_the_requested_area():
    mask = random_block_mask(200, 28, 28, area=0.25, blocks=1, generator=gen(1))[:, 0]  # [B, 28, 28]
    corners = set()
    for m in mask:
        rows, cols = m.any(1).nonzero().squeeze(1), m.any(0).nonzero().squeeze(1)
        # one whole 14x14 square: a block pushed past the border would come out clipped
        assert len(rows) == len(cols) == 14 and int(m.sum()) == 196
        assert torch.equal(rows, torch.arange(rows[0], rows[0] + 14)) and torch.equal(
            cols, torch.arange(cols[0], cols[0] + 14)
        )
        corners.add((int(rows[0]), int(cols[0])))
    assert len(corners) > 50, "positions are random"
    assert {r for r, _ in corners} >= {0, 14}, "the top row can reach both borders"


def test_random_blocks_cover_at_most_the_area_and_are_reproducible():
    mask = random_block_mask(64, 28, 28, area=0.25, blocks=4, generator=gen(2))
    count = mask.flatten(1).sum(1)  # [B] 4 blocks of 7x7 = 49 pixels each, possibly overlapping
    assert count.min() >= 49 and count.max() <= 196
    assert 0.18 < count.float().mean() / 784 <= 0.25
    assert torch.equal(random_block_mask(64, 28, 28, 0.25, 4, generator=gen(2)), mask)
    assert not torch.equal(random_block_mask(64, 28, 28, 0.25, 4, generator=gen(3)), mask)


def test_fill_masked_and_dilate():
    x = torch.rand(2, 3, 8, 8, generator=gen(4))
    mask = center_block_mask(2, 8, 8)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    y = fill_masked(x, mask, mean)
    m = mask.expand_as(x)
    assert torch.equal(y[m], mean.expand_as(x)[m]) and torch.equal(y[~m], x[~m])
    grown = dilate_mask(mask, 1)
    assert int(grown[0].sum()) == 36 and bool((grown & mask).eq(mask).all())  # 4x4 block -> 6x6


@pytest.mark.parametrize("mask_kind", ["center", "random"])
def test_encoder_input_is_the_mean_inside_the_mask_and_untouched_outside(mask_kind):
    method = _method(28, mask=mask_kind)
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=gen(5))
    masked, image, mask = method.views(x, gen(6))
    assert masked.shape == image.shape == mask.shape == (8, 1, 28, 28)
    hole = mask.bool()
    assert 0 < hole.sum() <= 8 * 196
    assert bool((masked[hole] == method.encoder.input.mean.item()).all())
    assert torch.equal(masked[~hole], image[~hole])
    normalized = method.encoder.input(masked)
    assert normalized[hole].abs().max() < 1e-6, "the fill is 0 after the encoder's normalization"
    again = method.views(x, gen(6))
    assert all(torch.equal(a, b) for a, b in zip(again, (masked, image, mask)))
    if mask_kind == "center":
        assert torch.equal(hole, center_block_mask(8, 28, 28).float().bool())


def test_loss_covers_only_the_masked_region():
    method = _method(16)
    target = torch.randn(4, 1, 16, 16, generator=gen(7))
    pred = torch.randn(4, 1, 16, 16, generator=gen(8))
    mask = random_block_mask(4, 16, 16, 0.25, 2, generator=gen(9)).float()
    loss = method.forward_loss(pred, target, mask)
    reference = ((pred - target) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, reference)
    outside = pred + 5.0 * (1 - mask) * torch.randn(4, 1, 16, 16, generator=gen(10))
    assert torch.equal(method.forward_loss(outside, target, mask), loss), "pixels outside the hole do not count"
    inside = pred + 0.5 * mask
    assert not torch.allclose(method.forward_loss(inside, target, mask), loss)


def test_overlap_border_weighs_in_with_its_weight():
    method = _method(16, overlap=1, overlap_weight=10.0)
    target, pred = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    mask = center_block_mask(1, 16, 16).float()  # 8x8 hole, 1 px border ring of 36 pixels
    pred[0, 0, 3, 3] = 1.0  # a ring pixel (diagonal neighbour of the hole's corner)
    torch.testing.assert_close(method.forward_loss(pred, target, mask), torch.tensor(10.0 / (64 + 10 * 36)))
    pred[0, 0, 0, 0] = 7.0  # farther out: no weight
    torch.testing.assert_close(method.forward_loss(pred, target, mask), torch.tensor(10.0 / (64 + 10 * 36)))


@pytest.mark.parametrize("bottleneck", ["pooled", "channelwise"])
@pytest.mark.parametrize("size,channels", [(16, 1), (28, 1), (32, 3)])
def test_decoder_output_has_the_image_shape(size, channels, bottleneck):
    method = _method(size, channels, bottleneck=bottleneck)
    x = torch.randint(0, 256, (2, channels, size + 3, size + 3), dtype=torch.uint8, generator=gen(11))
    masked, image, mask = method.views(x, gen(12))
    tokens = method.encoder(masked).tokens
    assert method.grid**2 == tokens.shape[1]
    assert method.forward_decoder(tokens).shape == image.shape == (2, channels, size, size)
    out = method((masked, image, mask))
    assert torch.isfinite(out.loss) and out.embedding.shape == (2, method.encoder.dim)
    assert not out.embedding.requires_grad


def test_pooled_bottleneck_sees_only_the_pooled_features():
    method = _method(16, bottleneck="pooled").eval()
    tokens = torch.randn(2, method.grid**2, method.encoder.dim, generator=gen(15))
    shuffled = tokens[:, torch.randperm(tokens.shape[1], generator=gen(16))]  # same mean, other layout
    with torch.no_grad():
        torch.testing.assert_close(method.forward_decoder(shuffled), method.forward_decoder(tokens))
        channelwise = _method(16, bottleneck="channelwise").eval()
        assert not torch.allclose(channelwise.forward_decoder(shuffled), channelwise.forward_decoder(tokens))


@pytest.mark.parametrize("bottleneck", ["pooled", "channelwise"])
def test_decoder_takes_vit_patch_tokens(bottleneck):
    method = _method(28, encoder="vit_tiny", bottleneck=bottleneck)
    assert method.grid == 7
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=gen(13))
    masked, image, mask = method.views(x, gen(14))
    assert method.forward_decoder(method.encoder(masked).tokens).shape == (2, 1, 28, 28)


def test_unknown_mask_or_bottleneck_is_a_clear_error():
    with pytest.raises(UserError, match="mask"):
        _method(16, mask="stripes")
    with pytest.raises(UserError, match="bottleneck"):
        _method(16, bottleneck="full")
