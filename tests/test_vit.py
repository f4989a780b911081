"""The ViT encoder: shapes, presets, token dropping, position-embedding resampling, patchify, errors."""

import math

import pytest
import torch

from selfsup.encoders import build_encoder, resolve_encoder_params
from selfsup.encoders.transformer import sincos_2d
from selfsup.encoders.vit import VisionTransformer
from selfsup.errors import UserError

from .conftest import image_spec


def small_vit(image_size=28, in_channels=1, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    args = dict(dim=32, depth=2, heads=2, patch_size=4)
    return build_encoder("vit_tiny", image_spec(in_channels, image_size), {**args, **kw}).eval()


def images(n=3, side=28, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)


def random_mask(batch, n, keep, seed=0):
    """bool [batch, n], True = masked, exactly ``keep`` visible per row, different rows."""
    g = torch.Generator().manual_seed(seed)
    keep_ids = torch.rand(batch, n, generator=g).argsort(1)[:, :keep]
    return torch.ones(batch, n, dtype=torch.bool).scatter_(1, keep_ids, False)


def test_shapes_and_attributes():
    enc = small_vit()
    assert (enc.dim, enc.patch_size, enc.grid, enc.num_patches) == (32, 4, 7, 49)  # 28 px -> 7x7 patches of 4 px
    out = enc(images())
    assert out.tokens.shape == (3, 49, 32) and out.pooled.shape == (3, 32)
    assert torch.allclose(out.pooled, out.tokens.mean(1)), "pooled is the mean of the patch tokens"
    x = torch.rand(3, 1, 28, 28)  # [0, 1] floats work as uint8 do
    assert torch.allclose(enc(x).pooled, enc((x * 255).round().to(torch.uint8)).pooled, atol=0.05)


def test_presets_names_and_defaults():
    paper = {"dim": 192, "depth": 12}  # the preset; left open on a CPU, the CPU size is chosen (below)
    tiny = build_encoder("vit_tiny", image_spec(3, 96), paper)
    small = build_encoder("vit_small", image_spec(3, 32), {"dim": 384, "depth": 12, "patch_size": 4})
    assert (tiny.dim, len(tiny.transformer.blocks), tiny.heads, tiny.patch_size, tiny.grid) == (192, 12, 3, 16, 6)
    assert (small.dim, len(small.transformer.blocks), small.heads, small.patch_size, small.grid) == (384, 12, 6, 4, 8)
    names = dict(tiny.named_parameters())
    assert {"patch_embed.weight", "cls_token", "transformer.blocks.0.attn.qkv.weight",
            "transformer.blocks.11.mlp.2.weight", "transformer.norm.weight"} <= set(names)  # fmt: skip
    assert "pos_embed" in dict(tiny.named_buffers()) and "pos_embed" not in names, "fixed sin-cos, not learned"
    assert tiny.pos_embed.shape == (1, 1 + 36, 192)
    assert small_vit(dim=64, heads=None).heads == 1, "other widths keep 64-channel heads"
    # sizes left open are chosen for the device: the paper's on a GPU, half width and depth on a CPU
    gpu, note_gpu = resolve_encoder_params("vit_tiny", image_spec(1, 28), {}, "cuda")
    cpu, note_cpu = resolve_encoder_params("vit_tiny", image_spec(1, 28), {}, "cpu")
    assert gpu == {"patch_size": 4, "dim": 192, "depth": 12, "heads": 3} and note_gpu is None
    assert cpu == {"patch_size": 7, "dim": 96, "depth": 6, "heads": 1} and "--set encoder.dim" in note_cpu
    from selfsup.encoders.vit import default_patch

    assert [default_patch(s, "cpu") for s in (8, 16, 28, 32, 64, 96, 224)] == [2, 4, 7, 8, 16, 16, 16]
    assert [default_patch(s, "cuda") for s in (28, 64, 224)] == [4, 4, 16]
    # a ResNet's fields are an error for a ViT, not silently dropped
    with pytest.raises(UserError, match="'width'.*known fields: depth, dim, heads, patch_size"):
        build_encoder("vit_tiny", image_spec(1, 16), {"width": 8, "depth": 1})


def test_all_false_mask_equals_no_mask():
    enc = small_vit()
    x = images()
    a, b = enc(x), enc(x, torch.zeros(3, 49, dtype=torch.bool))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)


def test_masked_tokens_are_dropped_not_zeroed():
    enc = small_vit()
    seen = []
    enc.transformer.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    mask = random_mask(3, 49, keep=12)
    x = images()
    out = enc(x, mask)
    assert seen == [(3, 1 + 12, 32)], "the blocks see the class token and the 12 visible patches only"
    assert out.tokens.shape == (3, 12, 32) and out.pooled.shape == (3, 32)

    # Pixels under masked patches cannot matter; under a visible patch they do.
    patch_is_masked = mask.view(3, 1, 7, 1, 7, 1).expand(3, 1, 7, 4, 7, 4).reshape(3, 1, 28, 28)
    noise = images(seed=1)
    y = torch.where(patch_is_masked, noise, x)
    assert torch.equal(enc(y, mask).tokens, out.tokens)
    z = torch.where(patch_is_masked, x, noise)
    assert not torch.allclose(enc(z, mask).tokens, out.tokens)

    # Dropping is not the same as zeroing: visible tokens equal a model that never saw the others.
    full = enc(x).tokens
    assert not torch.allclose(full[~mask].view(3, 12, 32), out.tokens, atol=1e-3)


def test_mask_must_keep_the_same_count_per_row():
    enc = small_vit()
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, :5] = True
    with pytest.raises(ValueError, match="same"):
        enc(images(2), mask)
    with pytest.raises(ValueError, match="bool"):
        enc(images(2), torch.zeros(2, 48, dtype=torch.bool))


def test_sincos_reference_values():
    dim, grid = 16, 3
    emb = sincos_2d(dim, grid)[0]  # [1 + 9, 16]
    assert torch.equal(emb[0], torch.zeros(dim)), "class token: no position"
    r, c = 2, 1
    row = emb[1 + r * grid + c]
    omega = [1 / 10000 ** (k / 4) for k in range(4)]
    ref = [math.sin(r * w) for w in omega] + [math.cos(r * w) for w in omega]
    ref += [math.sin(c * w) for w in omega] + [math.cos(c * w) for w in omega]
    assert torch.allclose(row, torch.tensor(ref), atol=1e-6)


def test_position_embedding_interpolates():
    enc = small_vit()
    assert enc.position_embedding(7, 7) is enc.pos_embed, "the native grid is used as stored"
    small = enc.position_embedding(4, 5)
    assert small.shape == (1, 1 + 20, 32) and torch.equal(small[:, 0], enc.pos_embed[:, 0])
    # Separable resampling keeps the structure: row channels constant along a row, column channels down a column.
    grid = small[0, 1:].view(4, 5, 32)
    assert torch.allclose(grid[:, :, :16], grid[:, :1, :16].expand(4, 5, 16), atol=1e-6)
    assert torch.allclose(grid[:, :, 16:], grid[:1, :, 16:].expand(4, 5, 16), atol=1e-6)
    # The lowest-frequency channel (sin(p * 1e-4 ... ) ~ linear in p) is resampled to the new centres.
    rows = grid[:, 0, 7]  # sin of the lowest frequency of the row half: ~ row * omega
    omega = 1 / 10000 ** (7 / 8)
    centres = (torch.arange(4) + 0.5) * 7 / 4 - 0.5  # align_corners=False: the new patch centres on the old grid
    assert torch.allclose(rows, torch.sin(centres * omega), atol=0.15 * omega)
    assert rows[0] < rows[1] < rows[2] < rows[3]
    # The forward pass uses it at another input size: 16 px -> 4x4 patches, 40 px -> 10x10.
    assert enc(images(side=16)).tokens.shape == (3, 16, 32)
    assert enc(images(side=40), random_mask(3, 100, keep=25)).tokens.shape == (3, 25, 32)
    with pytest.raises(ValueError, match="patch size"):
        enc(images(side=30))


def test_patchify_order_and_roundtrip():
    enc = small_vit(in_channels=3, image_size=8, patch_size=4)
    x = torch.rand(2, 3, 8, 12)
    patches = enc.patchify(x)  # [2, 2*3, 4*4*3]
    assert patches.shape == (2, 6, 48)
    r, c = 1, 2  # patch (row 1, column 2) is number 1 * 3 + 2
    ref = x[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(0, 2, 3, 1).reshape(2, 48)  # pixel row, col, channel
    assert torch.equal(patches[:, r * 3 + c], ref)
    assert torch.equal(enc.unpatchify(patches, 2, 3), x)


def test_config_errors_name_the_field():
    spec = image_spec(1, 28)
    with pytest.raises(UserError, match="encoder.patch_size"):
        build_encoder("vit_tiny", spec, {"patch_size": 5})
    with pytest.raises(UserError, match="encoder.heads"):
        build_encoder("vit_tiny", spec, {"dim": 64, "heads": 3})
    with pytest.raises(UserError, match="encoder.dim"):
        build_encoder("vit_tiny", spec, {"dim": 6, "heads": 1})


def test_every_parameter_gets_a_gradient():
    enc = small_vit().train()
    out = enc(images(), random_mask(3, 49, keep=12))
    out.pooled.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
