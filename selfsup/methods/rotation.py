"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations.

Gidaris, Singh, Komodakis, ICLR 2018 (arXiv:1803.07728).

Every image of the batch is shown in all four rotations (0, 90, 180, 270 degrees)
-- the paper found this better than one random rotation per image -- and a head on
the pooled features classifies which rotation was applied (cross-entropy, 4 classes).

Paper hyperparameters (CIFAR-10): SGD, momentum 0.9, Nesterov, weight decay 5e-4,
lr 0.1 dropped x0.2 at epochs 30, 60, 80 (here: warm-up + cosine), batch 128 images
(x4 rotations); random crops and horizontal flips before rotating.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.methods.base import Output, mlp_head
from selfsup.registry import METHODS
from selfsup.views import ImageAugment, all_rotations


@dataclass
class RotationParams:
    head_hidden: int | None = None  # None: the encoder's dim
    crop_scale_min: float = 0.5


@METHODS.register("rotation")
class Rotation(nn.Module):
    modality = "image"
    Params = RotationParams
    defaults = {"optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4,  # lr per 256 images (0.1 at 128)
                "batch_size": 128}  # the paper's 128 images, each in 4 rotations: 512 views per step

    def __init__(self, encoder: nn.Module, params: RotationParams, spec):
        super().__init__()
        self.encoder, self.params = encoder, params
        self.head = mlp_head(encoder.dim, params.head_hidden or encoder.dim, 4)
        self.augment = ImageAugment(size=spec.size, scale=(params.crop_scale_min, 1.0), jitter_strength=0.0,
                                    jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # fmt: skip

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> ([4B, C, S, S] rotated views, [4B] rotation labels)."""
        return all_rotations(self.augment(x, generator))

    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        x, target = batch
        h = self.encoder(x).pooled  # [4B, D]
        logits = self.head(h)  # [4B, 4]
        loss = F.cross_entropy(logits.float(), target)
        acc = (logits.detach().argmax(1) == target).float().mean()
        return Output(loss, {"rot_acc": acc}, h.detach())
