"""MoCo v2 training throughput: selfsup's ``moco`` method vs the same model built from lightly's parts.

Both pipelines train MoCo v2 on Fashion-MNIST (32 px, replicated to RGB) with the same settings: selfsup's
CIFAR-stem ResNet-18 (width 64) as the backbone, a 512-512-128 MLP head without BatchNorm, a momentum copy of
both (m = 0.99), a queue of 4096 negatives, InfoNCE at temperature 0.2, SGD (selfsup's
``build_optimizer("sgd")``, lr 0.03 x B/256, weight decay 1e-4), no blur (32 px):

* lightly -- as lightly's MoCo example: ``MoCoProjectionHead(512, 512, 128)``, ``deactivate_requires_grad`` /
  ``update_momentum`` on deep copies of backbone and head, ``NTXentLoss(temperature=0.2, memory_bank_size=(4096,
  128))``, and ``MoCoV2Transform(input_size=32, gaussian_blur=0.0)`` on PIL images in a ``DataLoader``.
* selfsup -- ``selfsup.methods.moco.MoCo`` stepped as the Trainer steps it (batched views in the training
  process, ``after_step`` for the momentum update), with its defaults otherwise: in one process its keys go
  through the momentum encoder as 8 permuted sub-batches (shuffle BN), which lightly's example does not do.

The runs, timing, memory, table and JSON are ``harness.py``'s (see benchmarks/README.md).

    python benchmarks/moco_throughput.py                       # CPU or CUDA, whichever is there
    python benchmarks/moco_throughput.py --device cuda --compile
"""

from __future__ import annotations

import copy
import sys

from harness import Comparison, LightlyModel, main, resnet18
from torch import nn

PROJ_HIDDEN, PROJ_DIM, QUEUE, TEMPERATURE, MOMENTUM = 512, 128, 4096, 0.2, 0.99
MODEL = (f"ResNet-18 (CIFAR stem, width 64), 32 px Fashion-MNIST as RGB, head {PROJ_HIDDEN}-{PROJ_DIM}, queue {QUEUE}, "
         f"T {TEMPERATURE}, m {MOMENTUM}")  # fmt: skip


class LightlyMoCo(nn.Module):
    """lightly's MoCo example: ``forward(views)`` -> the loss of the query view against the key view."""

    def __init__(self, backbone):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(backbone.dim, PROJ_HIDDEN, PROJ_DIM)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=TEMPERATURE, memory_bank_size=(QUEUE, PROJ_DIM))

    def update_momentum(self) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=MOMENTUM)
        update_momentum(self.projection_head, self.projection_head_momentum, m=MOMENTUM)

    def forward(self, views):
        x_query, x_key = views
        query = self.projection_head(self.backbone(x_query).pooled)
        key = self.projection_head_momentum(self.backbone_momentum(x_key).pooled).detach()
        return self.criterion(query, key)


def build_lightly(ctx) -> LightlyModel:
    from lightly.transforms import MoCoV2Transform

    model = LightlyMoCo(resnet18(ctx.lightly_spec))
    return LightlyModel(model, MoCoV2Transform(input_size=ctx.spec.size, gaussian_blur=0.0), model.update_momentum)


def build_selfsup(ctx):
    from selfsup.methods.moco import MoCo, MoCoParams

    params = MoCoParams(queue_size=QUEUE, momentum=MOMENTUM, temperature=TEMPERATURE, proj_hidden=PROJ_HIDDEN,
                        proj_dim=PROJ_DIM, jitter_strength=0.5, crop_scale_min=0.2, blur_p=0.0)  # fmt: skip
    return MoCo(resnet18(ctx.spec), MoCo.resolve_params(params, ctx.num_samples), ctx.spec)


COMPARISON = Comparison("moco", __doc__, MODEL, "MoCoV2Transform", ("sgd", 0.03, 1e-4), build_lightly, build_selfsup,
                        cpu_steps=6)  # fmt: skip

if __name__ == "__main__":
    sys.exit(main(COMPARISON))
