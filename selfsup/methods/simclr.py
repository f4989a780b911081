"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations.

Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv:2002.05709).

Two random views of each image go through the encoder f and a projection head g
(2-layer MLP, 128-d output); NT-Xent pulls the two views of an image together and
pushes the other 2(N-1) views of the batch away. Under DDP the negatives are
gathered from every rank with gradient (``selfsup.losses.nt_xent``).

Paper hyperparameters: LARS, lr = 0.3 x BatchSize/256, weight decay 1e-6,
10 warm-up epochs then cosine decay, temperature 0.1 (large batches) / 0.5
(CIFAR-10, appendix B.9), batch 256-8192; views: random resized crop
(scale 0.08-1) + flip, colour jitter (s=1 ImageNet, 0.5 CIFAR; p=0.8), grayscale
(p=0.2), Gaussian blur (p=0.5, ImageNet only).

Defaults here are scaled to small images, small batches and short budgets (their measurements:
docs/method-defaults.md): SGD with momentum (LARS pays off only for very large batches;
``--optimizer lars --lr 0.3`` gives the paper's), lr 1.0 x BatchSize/256 (a short run needs the
larger step), temperature 0.2 (between the paper's 0.1 for large batches and 0.5 for CIFAR), and
crops of at least 20% of the image (8% of a 28 px image is a 2x2 .. 8x8 patch with nothing left
to match). On a CPU the batch is 128 (256 on a GPU): a short CPU budget buys twice the steps, and 128
learned more than 256 or 64 in 2 minutes on validation. Under DDP, BatchNorm is synchronized over the
ranks (the paper's global BN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.losses import nt_xent
from selfsup.methods.base import Output, mlp_head
from selfsup.registry import METHODS
from selfsup.views import ImageAugment, blur_p_for


@dataclass
class SimCLRParams:
    temperature: float = 0.2
    proj_hidden: int | None = None  # None: the encoder's dim
    proj_dim: int = 128
    jitter_strength: float = 0.5
    crop_scale_min: float = 0.2
    blur_p: float | None = None  # None: 0.5 above 64 px, off for small images


@METHODS.register("simclr")
class SimCLR(nn.Module):
    modality = "image"
    collapse_advice = "lower the lr or raise method.temperature"
    Params = SimCLRParams
    defaults = {"optimizer": "sgd", "lr": 1.0, "weight_decay": 1e-6,  # lr per 256 images
                "cpu_batch_size": 128}  # on a CPU, twice the steps of 256 in a budget learned more (validation)
    sync_bn = True  # the paper's global BN: under DDP, BatchNorm statistics over every rank's batch

    def __init__(self, encoder: nn.Module, params: SimCLRParams, spec):
        super().__init__()
        self.encoder, self.params = encoder, params
        self.projector = mlp_head(encoder.dim, params.proj_hidden or encoder.dim, params.proj_dim)
        blur = blur_p_for(spec.size, 0.5, params.blur_p)
        self.augment = ImageAugment(size=spec.size, scale=(params.crop_scale_min, 1.0),
                                    jitter_strength=params.jitter_strength, blur_p=blur)  # fmt: skip

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> two float views [B, C, S, S]."""
        return self.augment(x, generator), self.augment(x, generator)

    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        v1, v2 = batch
        h = self.encoder(torch.cat([v1, v2])).pooled  # [2B, D]
        z = self.projector(h)  # [2B, 128]
        z1, z2 = z.chunk(2)
        loss = nt_xent(z1, z2, self.params.temperature)
        return Output(loss, {}, h[: v1.shape[0]].detach())
