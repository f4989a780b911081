"""MAE training throughput: selfsup's MAE beside lightly's MAE built from its torchvision-based modules.

Both sides pretrain the same shape of model on Fashion-MNIST (32 px, replicated to RGB): a ViT-Tiny encoder
(192-d, 12 blocks, 3 heads, MLP 768, 4 px patches -> 64 patches), mask ratio 0.75 (16 visible patches + the
class token go through the encoder), a decoder of the same size on both sides (default: selfsup's, 128-d x 2
blocks x 4 heads, MLP 512), per-patch normalized pixel targets, MSE on the masked patches, AdamW (selfsup's
``build_optimizer("adamw")``: betas (0.9, 0.95), weight decay 0.05 on weights only, lr 1.5e-4 x B/256):

* lightly -- ``MaskedVisionTransformerTorchvision`` around torchvision's ``VisionTransformer``, ``MAEDecoder``,
  ``utils.random_token_mask`` / ``set_at_index`` / ``get_at_index`` / ``patchify`` / ``normalize_mean_var``, as
  lightly's MAE example (timm is not installed, so its ``*TIMM`` modules are out); views from
  ``MAETransform(input_size=32, min_scale=0.2)`` (bicubic crop + flip) on PIL images in a ``DataLoader``.
* selfsup -- ``MAE`` on a ``vit_tiny`` encoder; views (crop + flip + mask, from the step's generator) batched
  in the training process, as the Trainer makes them.

The runs, timing, memory, table and JSON are ``harness.py``'s (see benchmarks/README.md).

    python benchmarks/mae_throughput.py                  # CPU or CUDA, whichever is there
    python benchmarks/mae_throughput.py --model-only     # one fixed batch of views: the models' compute alone
    python benchmarks/mae_throughput.py --device cuda --compile
"""

from __future__ import annotations

import sys

import torch
from harness import Comparison, LightlyModel, main
from torch import nn

PATCH, DIM, DEPTH, HEADS, MASK_RATIO = 4, 192, 12, 3, 0.75
MODEL = (f"ViT-Tiny ({DIM}-d x {DEPTH} x {HEADS} heads), 32 px Fashion-MNIST as RGB, patch {PATCH}, mask {MASK_RATIO}, "
         "decoder {decoder_dim}-d x {decoder_depth} x {decoder_heads} heads")  # fmt: skip


class LightlyMAE(nn.Module):
    """lightly's MAE example on torchvision's ViT: ``forward(views)`` -> the loss on the masked patches."""

    def __init__(self, image_size: int, decoder_dim: int, decoder_depth: int, decoder_heads: int):
        from lightly.models.modules import MAEDecoder, MaskedVisionTransformerTorchvision
        from torchvision.models.vision_transformer import VisionTransformer

        super().__init__()
        vit = VisionTransformer(image_size=image_size, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS,
                                hidden_dim=DIM, mlp_dim=4 * DIM)  # fmt: skip
        self.backbone = MaskedVisionTransformerTorchvision(vit=vit)
        self.seq_len = vit.seq_length  # 1 + 64
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = MAEDecoder(seq_length=self.seq_len, num_layers=decoder_depth, num_heads=decoder_heads,
                                  embed_input_dim=DIM, hidden_dim=decoder_dim, mlp_dim=4 * decoder_dim,
                                  out_dim=PATCH**2 * 3)  # fmt: skip
        self.criterion = nn.MSELoss()

    def forward(self, views):
        from lightly.models import utils

        (images,) = views
        B = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask((B, self.seq_len), MASK_RATIO, device=images.device)
        x = self.decoder.embed(self.backbone.encode(images, idx_keep=idx_keep))  # [B, 1 + 16, d]
        full = utils.repeat_token(self.mask_token, (B, self.seq_len))
        full = utils.set_at_index(full, idx_keep, x.type_as(full))  # encoded tokens among the mask tokens
        pred = self.decoder.predict(utils.get_at_index(self.decoder.decode(full), idx_mask))
        target = utils.get_at_index(utils.patchify(images, PATCH), idx_mask - 1)  # no class token among patches
        return self.criterion(pred.float(), utils.normalize_mean_var(target).float())


def build_lightly(ctx) -> LightlyModel:
    from lightly.transforms import MAETransform

    a = ctx.args
    model = LightlyMAE(ctx.spec.size, a.decoder_dim, a.decoder_depth, a.decoder_heads)
    return LightlyModel(model, MAETransform(input_size=ctx.spec.size, min_scale=0.2))


def build_selfsup(ctx):
    from selfsup.encoders import build_encoder
    from selfsup.methods.mae import MAE, MAEParams

    a = ctx.args
    encoder = build_encoder("vit_tiny", ctx.spec, {"patch_size": PATCH, "dim": DIM, "depth": DEPTH, "heads": HEADS})
    params = MAEParams(mask_ratio=MASK_RATIO, decoder_dim=a.decoder_dim, decoder_depth=a.decoder_depth,
                       decoder_heads=a.decoder_heads, crop_scale_min=0.2)  # fmt: skip
    return MAE(encoder, params, ctx.spec)


def decoder_arguments(p) -> None:
    from selfsup.methods.mae import MAEParams

    p.add_argument("--decoder-dim", type=int, default=MAEParams.decoder_dim, help="both sides' decoder width")
    p.add_argument("--decoder-depth", type=int, default=MAEParams.decoder_depth, help="decoder blocks")
    p.add_argument("--decoder-heads", type=int, default=MAEParams.decoder_heads, help="decoder attention heads")


COMPARISON = Comparison("mae", __doc__, MODEL, "MAETransform", ("adamw", 1.5e-4, 0.05), build_lightly, build_selfsup,
                        cpu_steps=8, arguments=decoder_arguments)  # fmt: skip

if __name__ == "__main__":
    sys.exit(main(COMPARISON))
