"""SimCLR training throughput: selfsup's in-process batched views vs lightly's standard DataLoader pipeline.

Both pipelines train the same network on Fashion-MNIST (32 px, replicated to RGB): selfsup's CIFAR-stem
ResNet-18 (width 64) as the backbone, SGD (selfsup's ``build_optimizer("sgd")``, lr 0.06 x B/256, weight decay
5e-4), one forward pass over the concatenated pair of views. What differs is how the views are made, the
projection head and the loss:

* lightly -- ``SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)`` on PIL images in a
  ``DataLoader``, ``SimCLRProjectionHead(512, 512, 128)``, ``NTXentLoss(temperature=0.5)``.
* selfsup -- ``SimCLR`` (``mlp_head`` + ``nt_xent``, temperature 0.5) with two batched views per step made in
  the training process from the uint8 dataset, crops of 8-100% and jitter 0.5 as lightly's transform.
* model alone -- selfsup's step on one fixed batch of views: the compute bound both pipelines approach.

The runs, timing, memory, table and JSON are ``harness.py``'s (see benchmarks/README.md).

    python benchmarks/simclr_throughput.py                       # CPU or CUDA, whichever is there
    python benchmarks/simclr_throughput.py --rounds 3            # the median of 3 rounds
    python benchmarks/simclr_throughput.py --device cuda --compile
"""

from __future__ import annotations

import sys

import torch
from harness import Comparison, LightlyModel, main, resnet18
from torch import nn

PROJ_HIDDEN, PROJ_DIM, TEMPERATURE = 512, 128, 0.5
MODEL = f"ResNet-18 (CIFAR stem, width 64), 32 px Fashion-MNIST as RGB, head {PROJ_HIDDEN}-{PROJ_DIM}, T {TEMPERATURE}"


class LightlySimCLR(nn.Module):
    """lightly's SimCLR example, with both views through the backbone as one batch (as selfsup's)."""

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, criterion: nn.Module):
        super().__init__()
        self.backbone, self.projection_head, self.criterion = backbone, projection_head, criterion

    def forward(self, views):
        z0, z1 = self.projection_head(self.backbone(torch.cat(views)).pooled).chunk(2)  # [B, 128] each
        return self.criterion(z0, z1)


def build_lightly(ctx) -> LightlyModel:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    backbone = resnet18(ctx.lightly_spec)
    head = SimCLRProjectionHead(backbone.dim, PROJ_HIDDEN, PROJ_DIM)
    model = LightlySimCLR(backbone, head, NTXentLoss(temperature=TEMPERATURE))
    return LightlyModel(model, SimCLRTransform(input_size=ctx.spec.size, cj_strength=0.5, gaussian_blur=0.0))


def build_selfsup(ctx):
    from selfsup.methods.simclr import SimCLR, SimCLRParams

    # the views of SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0): crops of 8-100%
    # (selfsup's default is 20%), jitter strength 0.5, no blur
    params = SimCLRParams(temperature=TEMPERATURE, proj_hidden=PROJ_HIDDEN, proj_dim=PROJ_DIM, jitter_strength=0.5,
                          crop_scale_min=0.08, blur_p=0.0)  # fmt: skip
    return SimCLR(resnet18(ctx.spec), params, ctx.spec)


COMPARISON = Comparison("simclr", __doc__, MODEL, "SimCLRTransform", ("sgd", 0.06, 5e-4), build_lightly, build_selfsup,
                        cpu_steps=10, cuda_batch_size=512, model_alone=True)  # fmt: skip

if __name__ == "__main__":
    sys.exit(main(COMPARISON))
