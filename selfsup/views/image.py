"""Batched image augmentations ("views") for self-supervised learning.

Every function takes a float batch ``x`` of shape ``[B, C, H, W]`` with values in
``[0, 1]`` (C = 1 grayscale or C = 3 RGB) and works on the whole batch at once on
``x.device`` in ``x.dtype``: there is no Python loop over samples. All
randomness comes from the ``generator`` argument (a ``torch.Generator`` on the
same device as ``x``), so the same seed gives the same views. Each call draws a
fixed number of random tensors whose shapes depend only on the arguments and the
batch shape, never on the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BLUR_MIN_SIZE",
    "ImageAugment",
    "all_rotations",
    "blur_p_for",
    "color_jitter",
    "gaussian_blur",
    "horizontal_flip",
    "random_grayscale",
    "random_resized_crop",
    "rotate90",
    "solarize",
    "to_float",
]

BLUR_MIN_SIZE = 64  # Gaussian blur only above this side: a 3 px kernel with sigma up to 2 erases a 28 px image

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2
_CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop


def to_float(x: Tensor) -> Tensor:
    """uint8 images -> float32 in [0, 1]; float images pass through unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255)
    if not x.is_floating_point():
        raise TypeError(f"expected uint8 or floating point images, got {x.dtype}")
    return x


def blur_p_for(size: int, paper_p: float, override: float | bool | None = None) -> float:
    """A method's blur probability: ``override`` if set (a bool means the paper's p or 0), else the paper's
    ``paper_p`` on images above BLUR_MIN_SIZE and 0 on smaller ones."""
    if isinstance(override, bool):
        return paper_p if override else 0.0
    if override is not None:
        return float(override)
    return paper_p if size > BLUR_MIN_SIZE else 0.0


def _check(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")


def _uniform(n: int, lo: float, hi: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` samples uniform in ``[lo, hi)`` (drawn in float32), returned in x's dtype and device."""
    u = torch.rand(n, generator=generator, device=x.device)  # [n]
    return u.mul_(hi - lo).add_(lo).to(x.dtype)


def _select(x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """Per-sample Bernoulli(p) draw as a 0/1 weight in x's dtype, shaped ``[B, 1, 1, 1]``."""
    u = torch.rand(x.shape[0], generator=generator, device=x.device)  # [B]
    return (u < p).to(x.dtype).view(-1, 1, 1, 1)


def _pick(chosen: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` where ``chosen`` is 1, else ``old``; exact, as lerp returns its ends at weights 0 and 1.

    Used instead of ``torch.where``, whose CPU kernel is several times slower.
    """
    return torch.lerp(old, new, chosen)


def _gray(x: Tensor) -> Tensor:
    """Luma of an RGB batch ``[B, 3, H, W]`` -> ``[B, 1, H, W]``."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


# --------------------------------------------------------------------------- geometry


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop a random box from each sample and resize it to ``size x size``.

    The box is drawn like torchvision's ``RandomResizedCrop``: area fraction
    uniform in ``scale``, aspect ratio log-uniform in ``ratio``, rounded to whole
    pixels; of ten tries per sample the first that fits is used, otherwise a
    centre crop with the ratio clipped to ``ratio``. All boxes are resampled with
    one bilinear ``grid_sample`` (align_corners=False, edges replicated). With
    probability ``flip_p`` a sample is also flipped horizontally, folded into the
    same affine matrix.

    x: [B, C, H, W] -> [B, C, size, size]
    """
    _check(x)
    B, C, H, W = x.shape
    dev, n = x.device, _CROP_ATTEMPTS
    # Box geometry in float32 whatever x's dtype, for exact integer rounding.
    u = torch.rand(B, n, 2, generator=generator, device=dev)  # [B, n, 2]
    area = H * W * (scale[0] + (scale[1] - scale[0]) * u[..., 0])  # [B, n]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])  # [B, n]
    w = torch.sqrt(area * aspect).round()  # [B, n]
    h = torch.sqrt(area / aspect).round()  # [B, n]
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)  # [B, n]
    first = ok.to(torch.uint8).argmax(1, keepdim=True)  # [B, 1] first box that fits
    w = w.gather(1, first).squeeze(1)  # [B]
    h = h.gather(1, first).squeeze(1)  # [B]

    # Fallback (no try fits): the whole image, cropped centrally to the allowed ratio.
    in_ratio = W / H
    if in_ratio < min(ratio):
        fw, fh = W, round(W / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(H * max(ratio)), H
    else:
        fw, fh = W, H
    any_ok = ok.any(1)  # [B]
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))

    # Top-left corner: uniform integer in [0, H - h] x [0, W - w]; centred for fallback.
    v = torch.rand(B, 2, generator=generator, device=dev)  # [B, 2]
    top = torch.minimum((v[:, 0] * (H - h + 1)).floor(), H - h)  # [B]
    left = torch.minimum((v[:, 1] * (W - w + 1)).floor(), W - w)  # [B]
    top = torch.where(any_ok, top, torch.full_like(top, (H - fh) // 2))
    left = torch.where(any_ok, left, torch.full_like(left, (W - fw) // 2))

    # Normalised coordinates (align_corners=False): pixel edge e maps to 2e/W - 1.
    sx = w / W  # [B]
    sy = h / H  # [B]
    cx = (2 * left + w) / W - 1  # [B]
    cy = (2 * top + h) / H - 1  # [B]
    flip = torch.rand(B, generator=generator, device=dev) < flip_p  # [B]
    sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([sx, zero, cx, zero, sy, cy], dim=1).view(B, 2, 3).to(x.dtype)  # [B, 2, 3]
    grid = F.affine_grid(theta, [B, C, size, size], align_corners=False)  # [B, size, size, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def horizontal_flip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each sample left-right with probability ``p``.

    x: [B, C, H, W] -> [B, C, H, W]
    """
    _check(x)
    return _pick(_select(x, p, generator), x.flip(-1), x)


def rotate90(x: Tensor, k: Tensor) -> Tensor:
    """Rotate sample ``b`` by ``k[b] * 90`` degrees counter-clockwise.

    Same convention as ``torch.rot90(x[b], k[b], dims=(-2, -1))``. Done as one
    gather with a precomputed source-pixel map per rotation; images must be square.

    x: [B, C, H, W], k: LongTensor [B] -> [B, C, H, W]
    """
    _check(x)
    B, C, H, W = x.shape
    if H != W:
        raise ValueError(f"rotate90 needs square images, got {H}x{W}")
    if k.shape != (B,):
        raise ValueError(f"k must have shape [{B}], got {tuple(k.shape)}")
    pix = torch.arange(H * W, device=x.device).view(H, W)  # [H, W]
    maps = torch.stack([torch.rot90(pix, r, dims=(0, 1)).reshape(-1) for r in range(4)])  # [4, H*W]
    src = maps[k.to(device=x.device, dtype=torch.long).remainder(4)]  # [B, H*W]
    out = x.reshape(B, C, H * W).gather(2, src.unsqueeze(1).expand(B, C, H * W))  # [B, C, H*W]
    return out.view(B, C, H, W)


def all_rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """Every sample in all four rotations, RotNet's training batch.

    Rotation-major order: ``views[r * B + b]`` is ``x[b]`` rotated by ``r * 90``
    degrees counter-clockwise and ``labels[r * B + b] == r``.

    x: [B, C, H, W] -> (views [4B, C, H, W], labels LongTensor [4B])
    """
    _check(x)
    B, _, H, W = x.shape
    if H != W:
        raise ValueError(f"all_rotations needs square images, got {H}x{W}")
    views = torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])  # [4B, C, H, W]
    labels = torch.arange(4, device=x.device).repeat_interleave(B)  # [4B]
    return views, labels


# --------------------------------------------------------------------------- colour


def _rotate_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Shift hue by ``shift`` (fraction of a turn) through HSV, batched.

    A hue shift keeps V = max and chroma C = max - min of each pixel, so only the
    hue is computed. Written with cheap elementwise kernels (no bool ``where``,
    ``minimum`` or full-size ``remainder``, which are slow on CPU).

    x: [B, 3, H, W] in [0, 1], shift: [B] -> [B, 3, H, W]
    """
    r, g, b = x.unbind(1)  # each [B, H, W]
    maxc = x.amax(1)  # [B, H, W]  V
    chroma = maxc - x.amin(1)  # [B, H, W]  C = V * S
    inv = chroma.clamp_min(torch.finfo(x.dtype).tiny).reciprocal_()  # grays: C = 0, any hue works
    is_r = (r == maxc).to(x.dtype)  # 0/1 weights select exactly through lerp
    is_g = (g == maxc).to(x.dtype)
    # Hue in sixths of a turn (red 0, green 2, blue 4) from the sector of the largest channel;
    # tied largest channels give the same hue modulo 6.
    hue = torch.lerp(torch.lerp(r - g + 4 * chroma, b - r + 2 * chroma, is_g), g - b, is_r)  # hue * C
    hue = hue.mul_(inv).add_(6 * shift.view(-1, 1, 1)).remainder_(6).unsqueeze(1)  # [B, 1, H, W] in [0, 6)
    # Channel n peaks at hue 2n: it equals V within circular distance d <= 1, V - C at d >= 2, linear between.
    centre = torch.tensor([0.0, 2.0, 4.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    ramp = (hue - centre).abs_().sub_(3).abs_()  # [B, 3, H, W]  3 - d, with d in [0, 3]
    ramp = ramp.neg_().add_(2).clamp_(0, 1)  # clamp(d - 1, 0, 1)
    return ramp.mul_(chroma.unsqueeze(1)).neg_().add_(maxc.unsqueeze(1))  # V - C * ramp


def color_jitter(
    x: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random brightness, contrast, saturation and hue, like torchvision's ColorJitter.

    Per-sample factors: brightness/contrast/saturation uniform in
    ``[max(0, 1 - v), 1 + v]``, hue shift uniform in ``[-hue, hue]`` (fraction of
    a turn). The four operations run in one random order per call, each clamped
    to ``[0, 1]``; a strength of 0 skips that operation. Each sample is jittered
    with probability ``p`` and otherwise returned unchanged. For C == 1 only
    brightness and contrast apply. Contrast blends with the per-sample mean of
    the grayscale image, saturation with the grayscale image.

    Choosing the order reads a 4-element tensor back to the host (one small sync on CUDA).

    x: [B, C, H, W] -> [B, C, H, W]
    """
    _check(x)
    B, C = x.shape[:2]
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    rgb = C == 3
    strengths = [brightness, contrast, saturation if rgb else 0.0, hue if rgb else 0.0]
    order = torch.randperm(4, generator=generator, device=x.device).tolist()
    factors = [
        _uniform(B, max(0.0, 1 - v), 1 + v, x, generator).view(-1, 1, 1, 1) if v > 0 else None  # [B, 1, 1, 1]
        for v in strengths[:3]
    ]
    shift = _uniform(B, -hue, hue, x, generator) if strengths[3] > 0 else None  # [B]
    chosen = _select(x, p, generator)  # [B, 1, 1, 1] 0/1

    out = x
    for op in order:
        if op == 3:
            if shift is not None:
                out = _rotate_hue(out, shift).clamp_(0, 1)
            continue
        f = factors[op]
        if f is None:
            continue
        if op == 0:  # brightness: blend with black
            out = (out * f).clamp_(0, 1)
        elif op == 1:  # contrast: blend with the mean gray level
            mean = (_gray(out) if rgb else out).mean(dim=(-3, -2, -1), keepdim=True)  # [B, 1, 1, 1]
            out = torch.lerp(mean, out, f).clamp_(0, 1)
        else:  # saturation: blend with the grayscale image
            out = torch.lerp(_gray(out), out, f).clamp_(0, 1)
    return _pick(chosen, out, x)


def random_grayscale(x: Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> Tensor:
    """Replace each RGB sample with probability ``p`` by its luma (0.299 R + 0.587 G + 0.114 B).

    The gray image is repeated over the 3 channels; a no-op for C == 1.

    x: [B, C, H, W] -> [B, C, H, W]
    """
    _check(x)
    if x.shape[1] == 1:
        return x
    return _pick(_select(x, p, generator), _gray(x), x)  # gray [B, 1, H, W] broadcasts over channels


def solarize(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """With probability ``p`` per sample, invert the pixels >= 0.5 (PIL's solarize at 128).

    x: [B, C, H, W] in [0, 1] -> [B, C, H, W]
    """
    _check(x)
    return _pick(_select(x, p, generator), torch.where(x >= 0.5, 1 - x, x), x)


# --------------------------------------------------------------------------- blur


def _default_kernel_size(h: int, w: int) -> int:
    k = int(0.1 * min(h, w))
    k += 1 - k % 2  # odd
    return min(max(k, 3), 2 * min(h, w) - 1)  # reflect padding needs k // 2 < side


def gaussian_blur(
    x: Tensor,
    p: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gaussian blur with a per-sample sigma uniform in ``sigma``, applied with probability ``p``.

    Separable: a horizontal then a vertical pass, each one grouped convolution
    over all ``B * C`` planes, on a reflect-padded batch (as torchvision's
    ``gaussian_blur``). ``kernel_size`` defaults to about 10% of the shorter image
    side, made odd and at least 3 (3 for 32px, 7 for 64px, 23 for 224px).

    x: [B, C, H, W] -> [B, C, H, W]
    """
    _check(x)
    B, C, H, W = x.shape
    k = _default_kernel_size(H, W) if kernel_size is None else int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {k}")
    s = _uniform(B, sigma[0], sigma[1], x, generator)  # [B]
    chosen = _select(x, p, generator)  # [B, 1, 1, 1]
    half = k // 2
    t = torch.linspace(-half, half, k, device=x.device, dtype=x.dtype)  # [k]
    kern = torch.exp(-0.5 * (t / s.unsqueeze(1)) ** 2)  # [B, k]
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(C, dim=0)  # [B*C, k]
    planes = F.pad(x.reshape(1, B * C, H, W), (half, half, half, half), mode="reflect")  # [1, BC, H+2h, W+2h]
    planes = F.conv2d(planes, kern.view(B * C, 1, 1, k), groups=B * C)  # [1, BC, H+2h, W]
    planes = F.conv2d(planes, kern.view(B * C, 1, k, 1), groups=B * C)  # [1, BC, H, W]
    return _pick(chosen, planes.view(B, C, H, W), x)


# --------------------------------------------------------------------------- pipeline


@dataclass
class ImageAugment:
    """SimCLR-style view pipeline: crop + flip, colour jitter, grayscale, blur.

    ``jitter_strength`` is SimCLR's ``s``: brightness, contrast and saturation
    ``0.8 * s``, hue ``0.2 * s``. Calling it on a batch ``[B, C, H, W]`` (uint8
    or float in [0, 1]) returns one float view per sample, ``[B, C, size, size]``
    in [0, 1]; call it twice with the same generator for two views.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter_strength: float = 0.5  # SimCLR's s: brightness/contrast/saturation 0.8*s, hue 0.2*s
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0  # SimCLR uses 0.5 on ImageNet; off for small images

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x: uint8 or float [B, C, H, W] -> float [B, C, size, size] in [0, 1]."""
        x = to_float(x)
        out = random_resized_crop(x, self.size, scale=self.scale, flip_p=self.flip_p, generator=generator)
        s = self.jitter_strength
        if s > 0 and self.jitter_p > 0:
            out = color_jitter(out, 0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), p=self.jitter_p, generator=generator)
        if self.grayscale_p > 0:
            out = random_grayscale(out, p=self.grayscale_p, generator=generator)
        if self.blur_p > 0:
            out = gaussian_blur(out, p=self.blur_p, generator=generator)
        return out
