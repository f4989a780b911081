"""Tests for selfsup.views: batched, generator-driven image augmentations."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from selfsup.views import (
    ImageAugment,
    all_rotations,
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    random_grayscale,
    random_resized_crop,
    rotate90,
)
from selfsup.views.image import _rotate_hue


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 6, c: int = 3, h: int = 16, w: int = 16, seed: int = 123) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed))


# Each entry: name -> callable(x, generator) with all randomness switched on.
AUGS = {
    "crop": lambda x, g: random_resized_crop(x, 12, flip_p=0.5, generator=g),
    "flip": lambda x, g: horizontal_flip(x, 0.5, g),
    "jitter": lambda x, g: color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g),
    "gray": lambda x, g: random_grayscale(x, 0.5, g),
    "blur": lambda x, g: gaussian_blur(x, p=0.5, generator=g),
    "pipeline": lambda x, g: ImageAugment(size=12, blur_p=0.5)(x, g),
}


@pytest.mark.parametrize("name", sorted(AUGS))
@pytest.mark.parametrize("c", [1, 3])
def test_shape_range_and_determinism(name: str, c: int) -> None:
    x = images(c=c)
    fn = AUGS[name]
    with torch.no_grad():
        a = fn(x, gen(1))
        b = fn(x, gen(1))
        d = fn(x, gen(2))
    size = 12 if name in ("crop", "pipeline") else 16
    assert a.shape == (6, c, size, size)
    assert a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    if not (name == "gray" and c == 1):  # grayscale is a no-op for one channel
        assert not torch.equal(a, d)


@pytest.mark.parametrize("name", sorted(AUGS))
def test_batch_of_one(name: str) -> None:
    out = AUGS[name](images(b=1), gen(0))
    assert out.shape[0] == 1


def test_crop_full_box_is_identity_and_flip() -> None:
    x = images(c=3, h=16, w=16)
    same = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen(0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, generator=gen(0))
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)


def test_crop_box_matches_integer_crop() -> None:
    # Half-area square boxes resized back to the box size (no scaling) must equal an integer crop.
    x = images(b=8, c=1, h=16, w=16)
    out = random_resized_crop(x, 8, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=gen(3))  # 8x8 boxes
    for b in range(8):
        hits = [
            (i, j)
            for i in range(9)
            for j in range(9)
            if torch.allclose(out[b], x[b, :, i : i + 8, j : j + 8], atol=1e-5)
        ]
        assert len(hits) == 1


def test_crop_upsamples_and_keeps_constant_images() -> None:
    x = torch.full((4, 3, 10, 10), 0.3)
    out = random_resized_crop(x, 32, generator=gen(0))
    torch.testing.assert_close(out, torch.full((4, 3, 32, 32), 0.3))


def test_crop_fallback_for_impossible_ratio() -> None:
    # A 4:1 image with ratio fixed at 1 cannot fit area 1.0: falls back to a centred square.
    x = torch.arange(4 * 16, dtype=torch.float32).view(1, 1, 4, 16) / 64
    out = random_resized_crop(x, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen(0))
    torch.testing.assert_close(out, x[..., 6:10], atol=1e-5, rtol=0)


def test_horizontal_flip_per_sample() -> None:
    x = images(b=64)
    out = horizontal_flip(x, 0.5, gen(0))
    flipped = [torch.equal(out[b], x[b].flip(-1)) for b in range(64)]
    kept = [torch.equal(out[b], x[b]) for b in range(64)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54
    assert torch.equal(horizontal_flip(x, 0.0, gen(0)), x)
    assert torch.equal(horizontal_flip(x, 1.0, gen(0)), x.flip(-1))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate90_single_k(k: int) -> None:
    x = images(b=3, c=3, h=7, w=7)
    out = rotate90(x, torch.full((3,), k, dtype=torch.long))
    assert torch.equal(out, torch.rot90(x, k, dims=(-2, -1)))


def test_rotate90_mixed_k() -> None:
    x = images(b=8, c=1, h=5, w=5)
    k = torch.tensor([0, 1, 2, 3, 3, 2, 1, 5])
    out = rotate90(x, k)
    for b in range(8):
        assert torch.equal(out[b], torch.rot90(x[b], int(k[b]), dims=(-2, -1)))


def test_all_rotations_labels_match_content() -> None:
    x = images(b=5, c=3, h=6, w=6)
    views, labels = all_rotations(x)
    assert views.shape == (20, 3, 6, 6)
    assert labels.dtype == torch.long
    assert sorted(labels.tolist()) == sorted([0, 1, 2, 3] * 5)
    for i in range(20):
        b = i % 5
        assert torch.equal(views[i], torch.rot90(x[b], int(labels[i]), dims=(-2, -1)))
    assert torch.equal(rotate90(x.repeat(4, 1, 1, 1), labels), views)


@pytest.mark.parametrize("c", [1, 3])
def test_brightness_only_is_per_sample_scale(c: int) -> None:
    x = 0.05 + 0.45 * images(b=16, c=c)  # max 0.5 * 1.4 < 1: no clipping
    out = color_jitter(x, brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0, generator=gen(0))
    ratio = out / x  # [B, C, H, W]
    f = ratio.flatten(1).mean(1)  # [B]
    torch.testing.assert_close(ratio, f.view(-1, 1, 1, 1).expand_as(ratio), atol=1e-5, rtol=1e-5)
    assert (f >= 0.6 - 1e-6).all() and (f <= 1.4 + 1e-6).all()
    assert f.std() > 0.01  # factors differ between samples
    torch.testing.assert_close(out, (x * f.view(-1, 1, 1, 1)).clamp(0, 1))


def test_brightness_clamps_at_one() -> None:
    x = torch.full((8, 3, 4, 4), 0.9)
    out = color_jitter(x, brightness=0.9, contrast=0, saturation=0, hue=0, p=1.0, generator=gen(0))
    assert out.max() <= 1 and (out == 1).any()


def test_contrast_and_saturation_reference() -> None:
    x = images(b=4, c=3, h=8, w=8)
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # [B, 1, H, W]
    out = color_jitter(x, brightness=0, contrast=0.5, saturation=0, hue=0, p=1.0, generator=gen(5))
    mean = luma.mean(dim=(1, 2, 3), keepdim=True)
    # Recover each factor from one pixel, then check every pixel follows f*x + (1-f)*mean.
    f = ((out - mean) / (x - mean))[:, 0, 0, 0].view(-1, 1, 1, 1)
    torch.testing.assert_close(out, (f * x + (1 - f) * mean).clamp(0, 1), atol=1e-5, rtol=1e-4)
    assert ((f > 0.5 - 1e-4) & (f < 1.5 + 1e-4)).all()
    out = color_jitter(x, brightness=0, contrast=0, saturation=0.5, hue=0, p=1.0, generator=gen(6))
    f = ((out - luma) / (x - luma))[:, 0, 0, 0].view(-1, 1, 1, 1)
    torch.testing.assert_close(out, (f * x + (1 - f) * luma).clamp(0, 1), atol=1e-5, rtol=1e-4)


def test_hue_jitter_matches_torchvision_per_sample() -> None:
    x = images(b=6, c=3, h=8, w=8)
    x[:, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # pure red, hue 0: its new hue is the sample's shift
    out = color_jitter(x, brightness=0, contrast=0, saturation=0, hue=0.3, p=1.0, generator=gen(0))
    shifts = []
    for b in range(6):
        h = colorsys.rgb_to_hsv(*out[b, :, 0, 0].tolist())[0]
        shift = h if h < 0.5 else h - 1
        assert abs(shift) <= 0.3 + 1e-5
        torch.testing.assert_close(out[b], TF.adjust_hue(x[b], shift), atol=1e-4, rtol=0)
        shifts.append(shift)
    assert max(shifts) - min(shifts) > 0.05  # shifts differ between samples
    # Hue only rotates: value (max channel) is unchanged.
    torch.testing.assert_close(out.amax(1), x.amax(1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shift", [0.0, 0.1, -0.25, 0.5])
def test_hue_rotation_matches_torchvision_adjust_hue(shift: float) -> None:
    x = images(b=4, c=3, h=6, w=6)
    # Grays, black, white, ties between the largest channels and pure primaries.
    special = torch.tensor(
        [[0.5, 0.5, 0.5], [0, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0], [0.2, 0.2, 0.9]]
    )
    x[0, :, 0, :6] = special[:6].T
    x[1, :, 0, :3] = special[6:].T
    out = _rotate_hue(x, torch.full((4,), shift))
    ref = torch.stack([TF.adjust_hue(img, shift) for img in x])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_jitter_p_selects_subset() -> None:
    x = images(b=64)
    out = color_jitter(x, p=0.5, generator=gen(0))
    unchanged = (out == x).flatten(1).all(1)
    assert 10 < int(unchanged.sum()) < 54
    assert torch.equal(color_jitter(x, p=0.0, generator=gen(0)), x)


def test_grayscale_luma() -> None:
    x = images(b=32, c=3)
    out = random_grayscale(x, 0.5, gen(0))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # [B, H, W]
    n_gray = 0
    for b in range(32):
        if torch.equal(out[b], x[b]):
            continue
        n_gray += 1
        for ch in range(3):
            torch.testing.assert_close(out[b, ch], luma[b], atol=1e-6, rtol=0)
    assert 4 < n_gray < 28
    all_gray = random_grayscale(x, 1.0, gen(0))
    torch.testing.assert_close(all_gray, luma.unsqueeze(1).expand(-1, 3, -1, -1), atol=1e-6, rtol=0)
    # torchvision rounds the red weight to 0.2989, hence the looser tolerance.
    torch.testing.assert_close(all_gray[0], TF.rgb_to_grayscale(x[0], num_output_channels=3), atol=2e-4, rtol=0)
    one = images(c=1)
    assert torch.equal(random_grayscale(one, 1.0, gen(0)), one)


def test_blur_constant_mean_and_noise_variance() -> None:
    const = torch.full((4, 3, 20, 20), 0.37)
    torch.testing.assert_close(gaussian_blur(const, p=1.0, generator=gen(0)), const)
    noise = images(b=4, c=3, h=32, w=32)
    out = gaussian_blur(noise, p=1.0, sigma=(1.0, 2.0), generator=gen(0))
    assert (out.var(dim=(1, 2, 3)) < 0.5 * noise.var(dim=(1, 2, 3))).all()
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), noise.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)


@pytest.mark.parametrize("c", [1, 3])
def test_blur_matches_torchvision(c: int) -> None:
    x = images(b=2, c=c, h=20, w=24)
    sigma = 1.3
    out = gaussian_blur(x, p=1.0, sigma=(sigma, sigma), kernel_size=7, generator=gen(0))
    ref = TF.gaussian_blur(x[1], kernel_size=[7, 7], sigma=[sigma, sigma])
    torch.testing.assert_close(out[1], ref, atol=1e-5, rtol=0)


def test_blur_default_kernel_and_p_zero() -> None:
    x = images(b=4, h=64, w=64)
    assert torch.equal(gaussian_blur(x, p=0.0, generator=gen(0)), x)
    # Default kernel for 64px is 7 (odd number near 6.4).
    out = gaussian_blur(x, p=1.0, sigma=(1.0, 1.0), generator=gen(0))
    torch.testing.assert_close(out[0], TF.gaussian_blur(x[0], [7, 7], [1.0, 1.0]), atol=1e-5, rtol=0)


def test_pipeline_uint8_and_float_agree() -> None:
    x8 = (images(b=4, c=3, h=20, w=20) * 255).round().to(torch.uint8)
    aug = ImageAugment(size=16, blur_p=0.5)
    a = aug(x8, gen(7))
    b = aug(x8.float() / 255, gen(7))
    assert a.dtype == torch.float32 and a.shape == (4, 3, 16, 16)
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_pipeline_no_randomness_is_identity() -> None:
    x = images(b=3, c=3, h=16, w=16)
    aug = ImageAugment(size=16, scale=(1.0, 1.0), flip_p=0.0, jitter_strength=0.0, grayscale_p=0.0, blur_p=0.0)
    # Ratio is still random in (3/4, 4/3); with scale 1 only ratio 1 fits, others fall back to the full image.
    torch.testing.assert_close(aug(x, gen(0)), x, atol=1e-5, rtol=0)


def test_large_batch_runs_without_per_sample_loop() -> None:
    x = torch.rand(256, 3, 32, 32, generator=gen(0))
    aug = ImageAugment(size=32, blur_p=0.5)
    with torch.no_grad():
        out = aug(x, gen(1))
        views, labels = all_rotations(x)
        rot = rotate90(x, labels[:256])
    assert out.shape == (256, 3, 32, 32) and torch.isfinite(out).all()
    assert views.shape == (1024, 3, 32, 32) and rot.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_and_device() -> None:
    x = images(b=8, c=3, h=32, w=32).cuda()
    aug = ImageAugment(size=24, blur_p=0.5)
    a = aug(x, torch.Generator(device="cuda").manual_seed(0))
    b = aug(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device == x.device and torch.equal(a, b)
    views, labels = all_rotations(x)
    assert torch.equal(rotate90(x.repeat(4, 1, 1, 1), labels), views)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        random_resized_crop(torch.rand(3, 8, 8), 4, generator=gen(0))
    with pytest.raises(ValueError):
        rotate90(torch.rand(2, 1, 4, 6), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        all_rotations(torch.rand(2, 1, 4, 6))
    with pytest.raises(ValueError):
        gaussian_blur(images(), p=1.0, kernel_size=4, generator=gen(0))


def test_crop_aspect_and_area_statistics() -> None:
    # Crops of a horizontal ramp: a 32px box resampled to 8px spans 28 input pixels centre to centre.
    h = w = 64
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(512, 1, h, w).contiguous()
    out = random_resized_crop(ramp, 8, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=gen(0))
    span = out[:, 0, 0, -1] - out[:, 0, 0, 0]  # (box width - box width / 8) / (w - 1)
    expected = (32 - 32 / 8) / (w - 1)
    torch.testing.assert_close(span, torch.full_like(span, expected), atol=1e-4, rtol=0)
    assert math.isclose(float(out[:, 0, 0, 0].min()), 0.0, abs_tol=0.05)
