"""MAE: the encoder sees only visible patches, the loss covers only masked ones, targets, reproducible masks."""

import pytest
import torch

from selfsup.errors import UserError
from selfsup.methods.mae import normalize_patches

from .conftest import make_method


def make_mae(image_size=32, channels=1, encoder="vit_tiny", **params):
    size = {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4} if encoder.startswith("vit") else {"width": 8}
    params = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, **params}
    return make_method("mae", channels, image_size, encoder=encoder, encoder_params=size, **params)


def uint8_images(n=4, side=36, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)


def test_encoder_sees_only_the_visible_quarter():
    mae = make_mae()  # 32 px, 4 px patches: 64 patches, 16 visible
    assert mae.encoder.num_patches == 64 and mae.len_keep == 16
    seen = []
    mae.encoder.transformer.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    imgs, mask = mae.views(uint8_images(), torch.Generator().manual_seed(0))
    out = mae((imgs, mask))
    assert seen == [1 + 16], "class token + 25% of the 64 patches"
    assert out.embedding.shape == (4, 32) and not out.embedding.requires_grad
    assert torch.isfinite(out.loss)


def test_loss_covers_only_masked_patches():
    mae = make_mae()
    imgs, mask = mae.views(uint8_images(), torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = mae.forward_decoder(mae.forward_encoder(imgs, mask).tokens, mask)  # [4, 64, 16]
        loss = mae.forward_loss(imgs, pred, mask)
        target = mae.targets(imgs)
        ref = (pred - target).pow(2).mean(-1)[mask].mean()  # reference: MSE averaged over masked patches
        assert torch.allclose(loss, ref, rtol=1e-5)
        b, visible, masked = 2, (~mask[2]).nonzero()[0, 0], mask[2].nonzero()[0, 0]
        bumped = pred.clone()
        bumped[b, visible] += 5.0
        assert torch.equal(mae.forward_loss(imgs, bumped, mask), loss), "visible patches do not count"
        bumped = pred.clone()
        bumped[b, masked] += 5.0
        assert mae.forward_loss(imgs, bumped, mask) > loss + 1e-3, "masked patches do"


def test_per_patch_normalized_targets():
    mae = make_mae(channels=3)
    imgs = torch.rand(2, 3, 32, 32)
    target = mae.targets(imgs)  # [2, 64, 4*4*3]
    assert target.shape == (2, 64, 48)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 64), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(2, 64), atol=1e-3)
    # Reference: the encoder-normalized pixels of patch (row 3, column 5), normalized on their own.
    x = mae.encoder.input(imgs)
    patch = x[:, :, 12:16, 20:24].permute(0, 2, 3, 1).reshape(2, 48)
    ref = (patch - patch.mean(1, keepdim=True)) / (patch.var(1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(target[:, 3 * 8 + 5], ref, atol=1e-5)
    flat = torch.zeros(1, 1, 48)
    assert torch.equal(normalize_patches(flat), flat), "a flat patch (black background) stays 0"
    raw = make_mae(channels=3, norm_pix_loss=False).targets(imgs)
    assert torch.allclose(raw[:, 3 * 8 + 5], patch)


def test_mask_is_per_sample_and_reproducible():
    mae = make_mae()
    x = uint8_images(8)
    a_img, a_mask = mae.views(x, torch.Generator().manual_seed(7))
    b_img, b_mask = mae.views(x, torch.Generator().manual_seed(7))
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    assert a_mask.dtype == torch.bool and a_mask.shape == (8, 64)
    assert torch.equal(a_mask.sum(1), torch.full((8,), 48)), "75% masked in every row"
    assert len({tuple(r.tolist()) for r in a_mask}) == 8, "each image its own mask"
    _, c_mask = mae.views(x, torch.Generator().manual_seed(8))
    assert not torch.equal(a_mask, c_mask)
    assert a_img.shape == (8, 1, 32, 32) and 0 <= a_img.min() and a_img.max() <= 1


def test_decoder_puts_visible_tokens_back_in_place():
    mae = make_mae(decoder_depth=0)  # no decoder blocks: no mixing between positions
    mask = mae.random_mask(3, torch.Generator().manual_seed(0))
    latent = torch.randn(3, 16, 32)
    with torch.no_grad():
        pred = mae.forward_decoder(latent, mask)
        moved = latent.clone()
        moved[:, 0] += 1.0  # the first visible token in row-major patch order
        changed = (mae.forward_decoder(moved, mask) - pred).abs().sum(-1) > 0  # [3, 64]
    first_visible = (~mask).int().argmax(1)
    assert torch.equal(changed, torch.nn.functional.one_hot(first_visible, 64).bool())


def test_needs_a_vit_and_valid_params():
    with pytest.raises(UserError, match="method mae needs a ViT encoder; use --encoder vit_tiny or vit_small"):
        make_mae(encoder="resnet18")
    with pytest.raises(UserError, match="method.mask_ratio"):
        make_mae(mask_ratio=0.999)
    with pytest.raises(UserError, match="method.decoder_dim"):
        make_mae(decoder_dim=30, decoder_heads=4)
