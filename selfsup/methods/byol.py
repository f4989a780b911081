"""BYOL: Bootstrap Your Own Latent.

Grill, Strub, Altche, Tallec, Richemond, Buchatskaya, Doersch, Avila Pires, Guo, Gheshlaghi Azar,
Piot, Kavukcuoglu, Munos, Valko, NeurIPS 2020 (arXiv:2006.07733).

An online network (encoder, projector g, predictor q) predicts the projection that a target
network -- an exponential moving average of the online encoder and projector, without gradient --
gives of the other view. With p = q(g(f(v))) and z' = g'(f'(v')) L2-normalized, each direction costs
||p - z'||^2 = 2 - 2 cos(p, z'); the loss is the sum over both directions (the paper's
L + L~), averaged over the batch. No negatives: the predictor and the slowly moving target keep
the representation from collapsing. After each optimizer step the target follows the online
network with tau rising from ``base_momentum`` to 1 on a cosine schedule over the run
(``after_step``): tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2.

Paper hyperparameters (ImageNet, ResNet-50): LARS, lr 0.2 x BatchSize/256, weight decay 1.5e-6
(biases and BatchNorm excluded), batch 4096, 10 warm-up epochs then cosine, 300-1000 epochs;
tau_base 0.996; projector and predictor MLPs 2048-4096-256 and 256-4096-256 with BatchNorm;
asymmetric views: random resized crop (0.08-1) + flip, colour jitter (brightness 0.4, contrast 0.4,
saturation 0.2, hue 0.1) p 0.8, grayscale p 0.2, then Gaussian blur p 1.0 / 0.1 and solarization
p 0 / 0.2 for the first / second view.

Defaults here differ for short budgets, 28 px images and CPUs (their measurements: docs/method-defaults.md):

- tau_base follows the run length, ``min(0.996, 1 - 100 / total_steps)``: the paper's 0.996 from 25000
  steps on, 0.9 at 1000, 0.78 at 450, 0 (SimSiam's stop-gradient target) at 100 or fewer. A target that
  trails the online network by hundreds of steps stays near its random init in a short run. (The paper's
  fixed tau = 0 collapsed over 300 epochs; here tau still rises to 1.) BYOL starts slowly: very short
  runs do not reliably beat a random init, whatever tau_base.
- SGD with momentum at lr 1.6 x BatchSize/256 (0.4 at the CPU batch of 64), weight decay 1.5e-6 as the
  paper. At 0.8 x B/256 a 2-minute CPU run of ~240 steps ended below a random init on validation (the
  loss fell fast, the features did not follow); 1.6 beat it and 3.2 did less well. LARS pays off only
  for very large batches; ``--optimizer lars --lr 0.2`` gives the paper's.
- MLP hidden width 4x the encoder's dim (4096 = 2 x 2048 in the paper, but a width-8 ResNet's dim is 64;
  a wider MLP learned no more), output 256 as the paper.
- Crops of at least 20% of the image (8% of a 28 px image is a 2x2 .. 8x8 patch) and no blur on images of
  64 px or less (a 3x3 kernel with sigma up to 2 erases 28 px images).
- Solarization is kept for RGB images and skipped for 1-channel ones: there it turns the bright garment
  or digit into the dark background, a change of shape rather than of colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.methods._momentum import cosine_momentum, ema_update_, momentum_copy, run_length_momentum
from selfsup.methods.base import Output, mlp_head
from selfsup.registry import METHODS
from selfsup.views import (
    blur_p_for,
    color_jitter,
    gaussian_blur,
    random_grayscale,
    random_resized_crop,
    solarize,
    to_float,
)


@dataclass
class BYOLParams:
    base_momentum: float | None = None  # tau_base, rising to 1 over the run; None: default_base_momentum(steps)
    proj_hidden: int | None = None  # None: 4x the encoder's dim
    proj_dim: int = 256
    pred_hidden: int | None = None  # None: as proj_hidden
    crop_scale_min: float = 0.2
    blur_p1: float | None = None  # None: 1.0 above 64 px, off for small images
    blur_p2: float | None = None  # None: 0.1 above 64 px, off for small images
    solarize_p2: float | None = None  # None: 0.2 for RGB, off for 1 channel (view 1 never solarizes)


def default_base_momentum(total_steps: int) -> float:
    """The paper's tau_base of 0.996, lowered for short runs so that the target's time constant
    1 / (1 - tau) stays within ~10% of the run: ``min(0.996, 1 - 100 / total_steps)``."""
    return run_length_momentum(total_steps, 0.996, horizon=100)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z); p, z [B, d]."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


@METHODS.register("byol")
class BYOL(nn.Module):
    modality = "image"
    Params = BYOLParams
    defaults = {"optimizer": "sgd", "lr": 1.6, "weight_decay": 1.5e-6,  # lr per 256 images
                "cpu_batch_size": 64}  # BYOL starts slowly: on a CPU, many small steps learn more in minutes

    def __init__(self, encoder: nn.Module, params: BYOLParams, spec):
        super().__init__()
        self.encoder, self.params, self.image_size = encoder, params, spec.size
        hidden = params.proj_hidden or 4 * encoder.dim
        self.projector = mlp_head(encoder.dim, hidden, params.proj_dim)
        self.predictor = mlp_head(params.proj_dim, params.pred_hidden or hidden, params.proj_dim)
        self.target_encoder = momentum_copy(self.encoder)
        self.target_projector = momentum_copy(self.projector)
        self.blur = (blur_p_for(spec.size, 1.0, params.blur_p1), blur_p_for(spec.size, 0.1, params.blur_p2))

    def _view(self, x: Tensor, generator, blur_p: float, solarize_p: float) -> Tensor:
        out = random_resized_crop(x, self.image_size, scale=(self.params.crop_scale_min, 1.0), flip_p=0.5,
                                  generator=generator)  # fmt: skip
        out = color_jitter(out, 0.4, 0.4, 0.2, 0.1, p=0.8, generator=generator)
        out = random_grayscale(out, p=0.2, generator=generator)
        if blur_p > 0:
            out = gaussian_blur(out, p=blur_p, generator=generator)
        if solarize_p > 0:
            out = solarize(out, solarize_p, generator=generator)
        return out

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> two float views [B, C, S, S] from BYOL's two view distributions."""
        x = to_float(x)
        sol = self.params.solarize_p2 if self.params.solarize_p2 is not None else (0.2 if x.shape[1] == 3 else 0.0)
        return self._view(x, generator, self.blur[0], 0.0), self._view(x, generator, self.blur[1], sol)

    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        v1, v2 = batch
        b = v1.shape[0]
        x = torch.cat([v1, v2])  # [2B, C, S, S]
        h = self.encoder(x).pooled  # [2B, D]
        p1, p2 = self.predictor(self.projector(h)).chunk(2)  # [B, d] each
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_encoder(x).pooled).chunk(2)  # [B, d] each
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return Output(loss, {}, h[:b].detach())

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """The target follows the online network with tau = cosine_momentum(base, step, total)."""
        base = self.params.base_momentum
        tau = cosine_momentum(default_base_momentum(total_steps) if base is None else base, step, total_steps)
        ema_update_(self.target_encoder, self.encoder, tau)
        ema_update_(self.target_projector, self.projector, tau)
