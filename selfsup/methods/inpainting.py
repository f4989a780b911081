"""Inpainting: Context Encoders: Feature Learning by Inpainting.

Pathak, Krahenbuhl, Donahue, Darrell, Efros, CVPR 2016 (arXiv:1604.07379).

A region of each image is hidden (filled with the dataset mean, i.e. 0 after the encoder's
input normalization); the encoder sees the rest, a decoder reconstructs the image from the
encoder's token grid, and an L2 loss on the hidden pixels only trains both (no adversarial
term). The decoder: a bottleneck joins the encoder to it, then a 1x1 convolution across
channels and stride-2 transposed convolutions up to the image size. The paper's bottleneck
is a channel-wise fully-connected layer over the grid positions (each channel mixes
information from the whole grid without the cost of a full fc): ``bottleneck="channelwise"``.
Works for any encoder whose tokens form a square grid (ResNet feature maps, ViT patch
tokens).

Paper hyperparameters: 128x128 images (227 for the AlexNet used in feature learning), masks
covering 1/4 of the image: the central block (half the side), random blocks (several
smaller, possibly overlapping blocks) or random regions (segmentation-mask shapes, best for
features); masked pixels filled with the mean; the decoder predicts a region slightly larger
than the hole, overlapping the context by a few pixels (7 px in the paper, 4 px in its
released code) whose loss weighs 10x more; L2 plus an adversarial loss (weights 0.999 /
0.001) for inpainting, L2 alone in the feature-learning comparisons; Adam (lr 2e-4 in the
released code), batch 64-128.

Defaults here differ for 28 px images, short budgets and a CPU:
* ``mask="random"``: 4 random blocks each covering 1/16 of the image (up to 1/4 together).
  On Fashion-MNIST the central block lies inside the garment almost always, so filling it is
  mostly predicting a flat texture; scattered blocks hide edges and parts as well and teach
  more about shape.
* No overlap border by default (``overlap=0``; set e.g. 1 px with ``overlap_weight`` 10): at
  28 px the paper's border would be a quarter of the hole, and the L2 on the hole alone
  trained the better features here.
* ``bottleneck="pooled"``: the decoder starts from the encoder's pooled vector (one linear
  layer to a D x g x g grid), not from its token grid. The features a probe reads are the
  pooled ones, so the pooled vector alone must carry what the reconstruction needs; from the
  token grid the encoder can pass the picture around its pooling (docs/method-defaults.md).
* AdamW, lr 6e-3 x BatchSize/256, weight decay 5e-4, warm-up + cosine (the trainer's
  schedule), instead of Adam at 2e-4: a short budget needs the larger step.
* The target is the normalized image (the encoder's own input units), so the loss scale does
  not depend on the dataset's contrast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.registry import METHODS
from selfsup.views import random_resized_crop, to_float
from selfsup.views.masking import center_block_mask, dilate_mask, fill_masked, random_block_mask

MASKS = ("center", "random")
BOTTLENECKS = ("pooled", "channelwise")


@dataclass
class InpaintingParams:
    mask: str = "random"  # "center" | "random"
    mask_area: float = 0.25  # fraction of the image hidden (random blocks: at most this, they may overlap)
    blocks: int = 4  # random mask: number of blocks, each mask_area / blocks of the image
    overlap: int = 0  # pixels of context around the hole also reconstructed
    overlap_weight: float = 10.0  # loss weight of those pixels relative to the hole's
    crop_scale_min: float = 0.8
    decoder_width: int | None = None  # channels entering the up-convolutions; None: the encoder's dim
    bottleneck: str = "pooled"  # "pooled" | "channelwise": what joins the encoder to the decoder (see the docstring)


class ChannelwiseFC(nn.Module):
    """The paper's channel-wise fully-connected layer: each channel is a linear map over the n grid
    positions, channels are not mixed. [B, D, n] -> [B, D, n]"""

    def __init__(self, channels: int, positions: int):
        super().__init__()
        bound = 1 / math.sqrt(positions)
        self.weight = nn.Parameter(torch.empty(channels, positions, positions).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(channels, positions))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bdn,dnm->bdm", x, self.weight) + self.bias


def _token_grid(encoder: nn.Module, channels: int, image_size: int) -> int:
    """Side of the encoder's square token grid at ``image_size`` (a ViT's ``grid``, else one probe forward)."""
    g = getattr(encoder, "grid", None)
    if g is None:
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            tokens = encoder(torch.zeros(1, channels, image_size, image_size)).tokens
        encoder.train(was_training)
        if tokens is None:
            raise UserError("method inpainting needs an encoder that returns tokens (a ResNet or a ViT)")
        n = tokens.shape[1]
        g = math.isqrt(n)
        if g * g != n:
            raise UserError(f"method inpainting needs a square token grid; the encoder gives {n} tokens")
    return int(g)


@METHODS.register("inpainting")
class Inpainting(nn.Module):
    modality = "image"
    Params = InpaintingParams
    defaults = {"optimizer": "adamw", "lr": 6e-3, "weight_decay": 5e-4}  # lr per 256 images

    def __init__(self, encoder: nn.Module, params: InpaintingParams, spec):
        super().__init__()
        if params.mask not in MASKS:
            raise UserError(f"method.params.mask={params.mask!r} must be one of: {', '.join(MASKS)}")
        if params.bottleneck not in BOTTLENECKS:
            raise UserError(f"method.params.bottleneck={params.bottleneck!r} must be one of: {', '.join(BOTTLENECKS)}")
        if not 0 < params.mask_area < 1:
            raise UserError(f"method.params.mask_area={params.mask_area} must be a fraction in (0, 1)")
        image_size, channels = spec.size, spec.channels
        self.encoder, self.params, self.size = encoder, params, image_size
        self.grid = _token_grid(encoder, channels, image_size)
        width = params.decoder_width or encoder.dim
        n = self.grid * self.grid
        if params.bottleneck == "pooled":  # [B, D] -> [B, D * g*g]
            self.bottleneck = nn.Linear(encoder.dim, encoder.dim * n)
        else:  # [B, D, g*g] -> [B, D, g*g]
            self.bottleneck = ChannelwiseFC(encoder.dim, n)
        self.mix = nn.Sequential(nn.Conv2d(encoder.dim, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True))
        ups, c = [], width
        for _ in range(max(0, math.ceil(math.log2(image_size / self.grid)))):  # 4 -> 8 -> 16 -> 32 at 28 px
            out = max(16, c // 2)
            ups += [nn.ConvTranspose2d(c, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            c = out
        self.up = nn.Sequential(*ups, nn.Conv2d(c, channels, 3, padding=1))

    def make_mask(self, batch: int, generator, device) -> Tensor:
        """bool [B, 1, S, S], True where pixels are hidden."""
        p, s = self.params, self.size
        if p.mask == "center":
            return center_block_mask(batch, s, s, p.mask_area, device=device)
        return random_block_mask(batch, s, s, p.mask_area, p.blocks, generator=generator, device=device)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> (input with the hole at the mean, full image, float mask), each [B, ., S, S]."""
        x = to_float(x)
        image = random_resized_crop(x, self.size, scale=(self.params.crop_scale_min, 1.0), flip_p=0.5,
                                    generator=generator)  # fmt: skip
        mask = self.make_mask(x.shape[0], generator, x.device)  # [B, 1, S, S]
        return fill_masked(image, mask, self.encoder.input.mean), image, mask.to(image.dtype)

    def forward_decoder(self, tokens: Tensor, pooled: Tensor | None = None) -> Tensor:
        """tokens [B, g*g, D] (and pooled [B, D], default their mean) -> reconstruction [B, C, S, S]
        in the encoder's normalized units."""
        B, n, D = tokens.shape
        if self.params.bottleneck == "pooled":
            h = self.bottleneck(tokens.mean(1) if pooled is None else pooled)  # [B, D * g*g]
        else:
            h = self.bottleneck(tokens.transpose(1, 2))  # [B, D, g*g]
        h = self.mix(h.reshape(B, D, self.grid, self.grid))  # [B, W, g, g]
        out = self.up(h)  # [B, C, >= S, >= S]
        if out.shape[-1] != self.size:
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return out

    def forward_loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Weighted mean squared error over the hole (weight 1) and its ``overlap`` border (``overlap_weight``).

        pred, target: [B, C, S, S]; mask: [B, 1, S, S] (1 inside the hole)."""
        hole = mask > 0.5
        weight = hole.to(pred.dtype)
        if self.params.overlap > 0:
            ring = dilate_mask(hole, self.params.overlap) & ~hole
            weight = weight + self.params.overlap_weight * ring.to(pred.dtype)  # [B, 1, S, S]
        err = (pred.float() - target.float()).pow(2).mean(1, keepdim=True)  # [B, 1, S, S] over channels
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    def forward(self, batch: tuple[Tensor, Tensor, Tensor]) -> Output:
        masked, image, mask = batch
        feats = self.encoder(masked)
        pred = self.forward_decoder(feats.tokens, feats.pooled)  # [B, C, S, S]
        target = self.encoder.input(image)  # normalized pixels, no parameters
        loss = self.forward_loss(pred, target, mask)
        return Output(loss, {}, feats.pooled.detach())
