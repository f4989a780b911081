"""MAE: Masked Autoencoders Are Scalable Vision Learners.

He, Chen, Xie, Li, Dollar, Girshick, CVPR 2022 (arXiv:2111.06377).

Each image is cut into patches and a random 75% of them is masked per sample. The ViT encoder
sees only the visible 25% (masked tokens are dropped, not replaced); a light decoder gets the
encoded visible tokens back in place among shared, learned mask tokens, adds its own fixed
sine-cosine position embedding, and predicts every patch's pixels. The loss is the mean squared
error on the masked patches only, against per-patch normalized pixels (norm_pix_loss).

Paper hyperparameters (ImageNet, ViT-B/L/H with 16 px patches at 224 px): mask ratio 0.75,
AdamW with lr = 1.5e-4 x BatchSize/256 (base lr), weight decay 0.05, betas (0.9, 0.95), batch
4096, 800-1600 epochs with 40 warm-up epochs then cosine decay; decoder 512-d x 8 blocks
(16 heads); norm_pix_loss on; views: random resized crop (scale 0.2-1) + horizontal flip only.

Defaults here differ for short budgets, 28 px images and a CPU:
* decoder 128-d x 2 blocks x 4 heads: at 49 patches (28 px, 4 px patches) a 512 x 8 decoder costs
  several times the ViT-Tiny encoder it trains (which sees 12 tokens); the paper's ablation (Table 1)
  finds a 1-block decoder still fine-tunes well.
* lr 1.5e-3 x BatchSize/256 (10x the paper's base lr) for a few hundred steps instead of 1600
  epochs; the Trainer warms up for its own fraction of the steps, not 40 epochs. Smaller ViTs
  than ViT-Tiny take a larger lr (measurements: docs/method-defaults.md).
* On 28 px images, 7 px patches (``--patch-size 7``: 16 patches, 4 visible) learn faster in short
  budgets than the default 4 px ones; the end-to-end test uses them.
* The decoder decodes the patch tokens only; the reference code also passes it the class token,
  which is dropped from the prediction anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.encoders.transformer import Transformer, init_weights, sincos_2d
from selfsup.encoders.vit import VisionTransformer
from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.registry import METHODS
from selfsup.views import ImageAugment, random_token_mask, visible_count


@dataclass
class MAEParams:
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    crop_scale_min: float = 0.2


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalized pixels (the paper's norm_pix_loss): [B, N, P] -> (x - mean) / sqrt(var + eps)
    over each patch's P values, with the unbiased variance as the reference code."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


@METHODS.register("mae")
class MAE(nn.Module):
    modality = "image"
    Params = MAEParams
    defaults = {"optimizer": "adamw", "lr": 1.5e-3, "weight_decay": 0.05}  # lr per 256 images
    default_encoder = "vit_tiny"

    def __init__(self, encoder: nn.Module, params: MAEParams, spec):
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise UserError("method mae needs a ViT encoder; use --encoder vit_tiny or vit_small")
        self.encoder, self.params = encoder, params
        n = encoder.num_patches
        self.len_keep = visible_count(n, params.mask_ratio)  # visible patches per image, as the reference code
        if not 0 < params.mask_ratio < 1 or not 0 < self.len_keep < n:
            raise UserError(f"method.mask_ratio={params.mask_ratio} must leave between 1 and {n - 1} of the "
                            f"{n} patches visible; use a value like 0.75")  # fmt: skip
        d = params.decoder_dim
        if d % params.decoder_heads or d % 4:
            raise UserError(f"method.decoder_dim={d} must be a multiple of 4 and of method.decoder_heads="
                            f"{params.decoder_heads}; use e.g. decoder_dim=128, decoder_heads=4")  # fmt: skip
        self.decoder_embed = nn.Linear(encoder.dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("decoder_pos_embed", sincos_2d(d, encoder.grid, cls_token=False))  # [1, N, d] fixed
        self.decoder = Transformer(d, params.decoder_depth, params.decoder_heads)  # blocks + final norm
        self.decoder_pred = nn.Linear(d, encoder.patch_size**2 * spec.channels)  # pixels of one patch
        for m in (self.decoder_embed, self.decoder_pred):
            init_weights(m)
        nn.init.normal_(self.mask_token, std=0.02)
        self.augment = ImageAugment(size=spec.size, scale=(params.crop_scale_min, 1.0), jitter_strength=0.0,
                                    jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # fmt: skip

    # ------------------------------------------------------------------ views
    def random_mask(self, batch: int, generator: torch.Generator | None, device=None) -> Tensor:
        """Per-sample random masking: bool [B, N], True = masked, exactly N - len_keep per row.

        Like the reference code: uniform noise per patch, the len_keep lowest are kept."""
        return random_token_mask(batch, self.encoder.num_patches, self.len_keep, generator, device)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> (float view [B, C, S, S] in [0, 1], mask bool [B, N])."""
        imgs = self.augment(x, generator)
        return imgs, self.random_mask(x.shape[0], generator, x.device)

    # ------------------------------------------------------------------ the paper's three parts
    def forward_encoder(self, imgs: Tensor, mask: Tensor):
        """-> Features: tokens [B, len_keep, D] of the visible patches, pooled [B, D]."""
        return self.encoder(imgs, mask)

    def forward_decoder(self, latent: Tensor, mask: Tensor) -> Tensor:
        """Visible tokens [B, len_keep, D] + mask [B, N] -> predicted pixels [B, N, p*p*C]."""
        B, N = mask.shape
        vis = self.decoder_embed(latent)  # [B, len_keep, d]
        h = self.mask_token.to(vis.dtype).expand(B, N, -1).clone()  # [B, N, d]
        h[~mask] = vis.reshape(-1, vis.shape[-1])  # visible tokens back in place (row-major order)
        return self.decoder_pred(self.decoder(h + self.decoder_pos_embed))  # [B, N, p*p*C]

    def targets(self, imgs: Tensor) -> Tensor:
        """Reconstruction targets [B, N, p*p*C]: the encoder's normalized input pixels, per patch;
        per-patch normalized when norm_pix_loss."""
        target = self.encoder.patchify(self.encoder.input(imgs))
        return normalize_patches(target) if self.params.norm_pix_loss else target

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error per patch, averaged over the masked patches only."""
        per_patch = (pred.float() - self.targets(imgs).float()).pow(2).mean(dim=-1)  # [B, N]
        m = mask.to(per_patch.dtype)
        return (per_patch * m).sum() / m.sum()

    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        imgs, mask = batch
        feats = self.forward_encoder(imgs, mask)
        pred = self.forward_decoder(feats.tokens, mask)
        loss = self.forward_loss(imgs, pred, mask)
        return Output(loss, {}, feats.pooled.detach())
