"""DINO: self-distillation with no labels.

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021 (arXiv:2104.14294).

A student (encoder + DINO head) and a teacher of the same architecture see different
crops of an image. The teacher is an exponential moving average (EMA) of the student
and gets no gradient. Multi-crop: two global crops and several small local crops per
image; the teacher sees only the global crops, the student sees all of them. Over
every pair (teacher global crop i, student crop v) with v != i the student minimises
the cross-entropy H(P_t(i), P_s(v)), where
  P_t = softmax((g_t(x) - c) / tau_t)    (centered with c, sharpened by a low tau_t)
  P_s = softmax(g_s(x) / tau_s).
The center c is an EMA (momentum 0.9) of the mean teacher output, all-reduced across
ranks under DDP. Centering alone collapses to uniform and sharpening alone to one
dimension; together they avoid collapse without a predictor or negatives.

DINO head: 3-layer MLP (hidden 2048, GELU), a 256-d bottleneck that is L2-normalised,
then a weight-normalised linear layer without bias to K = 65536 outputs whose norm
is fixed to 1 (the released code's ``norm_last_layer``): the logits are cosines.

Paper hyperparameters (ViT): AdamW, lr 0.0005 x BatchSize/256 with 10 warm-up epochs
then cosine, weight decay cosine 0.04 -> 0.4, batch 1024, student tau_s 0.1, teacher
tau_t linear warm-up 0.04 -> 0.07 over the first 30 epochs, teacher momentum 0.996
-> 1 by cosine, center momentum 0.9; crops: 2 global 224 px (scale 0.4-1) and 8-10
local 96 px (scale 0.05-0.4), flip, colour jitter (0.4, 0.4, 0.2, 0.1; p=0.8),
grayscale (p=0.2), Gaussian blur (p=1.0 / 0.1 on the two global crops, 0.5 on
local ones), solarization (p=0.2, second global crop only).

Defaults here differ for 28 px images, small encoders and short budgets on a CPU (their
measurements: docs/method-defaults.md):
- K = 256 prototypes, hidden 512, bottleneck 128: 65536 prototypes is for 1.3M images.
- BatchNorm in the head MLP (the released code's ``use_bn_in_head``): a random-init
  convnet maps all images to nearly the same direction (mean cosine 0.9), so without it
  the centered teacher is almost uniform and short runs collapse to the uniform
  distribution (teacher entropy -> log K).
- Teacher temperature 0.02 throughout (the released code's default is 0.04; the paper's warm-up
  to 0.07 is ``warmup_teacher_temp=0.04 teacher_temp=0.07``): sharpening must outweigh centering in a
  short run, and at 0.04 (batches of 64) the centered teacher drifted to the uniform distribution
  (teacher entropy -> log K, the ``teacher_entropy`` metric) after about a hundred steps.
- Teacher momentum 0.99 (not 0.996): with a few hundred steps a 0.996 teacher barely leaves its
  random init. Lower (a run-length rule like BYOL's, 0.63-0.9) made the teacher follow the student
  too closely and the features collapsed (docs/method-defaults.md).
- 4 local crops (not 8-10) to keep the step cheap, at ``local_size`` = image_size x
  96/224 (12 px at 28 px; a multiple of a ViT's patch size).
- Gaussian blur off at 64 px and below (a 3 px kernel erases most of a 28 px image);
  solarization kept (p=0.2 on the second global crop). For one-channel images the
  colour jitter reduces to brightness and contrast, and grayscale is a no-op.
- SGD with momentum, lr 1.0 x BatchSize/256, weight decay 1e-4. The released ResNet-50
  recipe is SGD, lr 0.03, weight decay 1e-4, global crops 0.14-1, local 0.05-0.14;
  the lr is raised for short runs (0.3 gained much less in the first steps);
  ``--optimizer adamw --lr 0.0005`` gives the ViT recipe.
- The released code freezes the last layer for the first epoch; not done here.
- Evaluation uses the teacher's encoder (``eval_encoder``), as the paper: its BatchNorm statistics come
  from global crops only, where the student's mix global and local ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed as D
from selfsup.methods._momentum import cosine_momentum, ema_update_, momentum_copy
from selfsup.methods.base import Output
from selfsup.registry import METHODS
from selfsup.views import ImageAugment, blur_p_for, solarize, to_float


@dataclass
class DINOParams:
    out_dim: int = 256  # K, the number of prototypes (paper 65536)
    hidden_dim: int = 512  # head MLP width (paper 2048)
    bottleneck_dim: int = 128  # L2-normalised bottleneck (paper 256)
    head_bn: bool = True  # BatchNorm in the head MLP (the released code's use_bn_in_head)
    n_local: int = 4  # local crops per image (paper 8-10)
    local_size: int | None = None  # None: round(image_size * 96 / 224)
    global_scale_min: float = 0.4
    local_scale_min: float = 0.05
    local_scale_max: float = 0.4
    student_temp: float = 0.1
    teacher_temp: float = 0.02  # tau_t after the warm-up (paper 0.07; released code 0.04)
    warmup_teacher_temp: float = 0.02  # tau_t at the start (paper 0.04)
    teacher_temp_warmup: float = 0.3  # fraction of the steps of linear tau_t warm-up
    momentum: float = 0.99  # teacher EMA momentum at the start, cosine to 1 (paper 0.996)
    center_momentum: float = 0.9
    jitter_strength: float = 0.5  # SimCLR's s: brightness/contrast 0.4, as DINO's jitter
    solarize_p: float = 0.2  # second global crop
    blur: bool | None = None  # None: the paper's blur above 64 px, off for small images


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> cosine logits against K unit-norm prototypes.

    The last layer is weight normalisation with its gain fixed to 1, written out so the
    state dict holds one plain tensor ``last_layer.weight`` [K, bottleneck]."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for d_in in (in_dim, hidden_dim):
            layers += [nn.Linear(d_in, hidden_dim), *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, h: Tensor) -> Tensor:
        z = F.normalize(self.mlp(h), dim=-1)  # [N, bottleneck]
        return F.linear(z, F.normalize(self.last_layer.weight, dim=-1))  # [N, K] in [-1, 1]


def dino_loss(student_logits: Tensor, teacher_probs: Tensor, student_temp: float) -> Tensor:
    """Mean over pairs (teacher crop i, student crop v), v != i, of H(P_t(i), P_s(v)).

    student_logits [V, B, K] (the first crops are the global ones), teacher_probs [G, B, K], G <= V.
    """
    logp = F.log_softmax(student_logits.float() / student_temp, dim=-1)  # [V, B, K]
    G, V = teacher_probs.shape[0], logp.shape[0]
    others = logp.sum(0, keepdim=True) - logp[:G]  # [G, B, K] sum over v != i of log P_s(v)
    return -(teacher_probs * others).sum(-1).mean(-1).sum() / (G * (V - 1))


@METHODS.register("dino")
class DINO(nn.Module):
    modality = "image"
    collapse_advice = "lower the lr or raise method.teacher_temp"
    Params = DINOParams
    defaults = {"optimizer": "sgd", "lr": 1.0, "weight_decay": 1e-4,  # lr per 256 images
                "cpu_batch_size": 64}  # on a CPU, many small steps: 256 buys ~60 steps in 2 minutes
    eval_encoder = "teacher_encoder"  # the paper evaluates the teacher (its BN statistics come from global crops)

    def __init__(self, encoder: nn.Module, params: DINOParams, spec):
        super().__init__()
        p = self.params = params
        self.encoder = encoder
        self.head = DINOHead(encoder.dim, p.out_dim, p.hidden_dim, p.bottleneck_dim, p.head_bn)
        self.teacher_encoder = momentum_copy(encoder)
        self.teacher_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, p.out_dim))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # after_step calls so far
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))  # 0: not known yet
        image_size = spec.size
        blur = blur_p_for(image_size, 1.0, p.blur) > 0
        patch = getattr(encoder, "patch_size", 1)  # a ViT sees whole patches: local crops are a multiple of its patch
        self.local_size = p.local_size or max(patch, round(image_size * 96 / 224 / patch) * patch)
        common = dict(jitter_strength=p.jitter_strength, flip_p=0.5, jitter_p=0.8, grayscale_p=0.2)
        g_scale = (p.global_scale_min, 1.0)
        self.global1 = ImageAugment(size=image_size, scale=g_scale, blur_p=1.0 if blur else 0.0, **common)
        self.global2 = ImageAugment(size=image_size, scale=g_scale, blur_p=0.1 if blur else 0.0, **common)
        self.local = ImageAugment(size=self.local_size, scale=(p.local_scale_min, p.local_scale_max),
                                  blur_p=0.5 if blur else 0.0, **common)  # fmt: skip

    # ------------------------------------------------------------------ views
    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, ...]:
        """x uint8 [B, C, H, W] -> 2 global crops [B, C, S, S], then n_local crops [B, C, s, s]."""
        x = to_float(x)
        g1 = self.global1(x, generator)
        g2 = solarize(self.global2(x, generator), self.params.solarize_p, generator)
        return (g1, g2, *(self.local(x, generator) for _ in range(self.params.n_local)))

    # ------------------------------------------------------------------ schedules
    def teacher_temperature(self, step: int | None = None, total: int | None = None) -> float:
        """tau_t at ``step`` of ``total`` (default: the steps done so far): linear warm-up from
        warmup_teacher_temp to teacher_temp over the first teacher_temp_warmup of the steps, then
        constant. Until the total is known (before the first step) it is warmup_teacher_temp."""
        p = self.params
        step = int(self.steps_done) if step is None else step
        total = int(self.total_steps) if total is None else total
        warm = p.teacher_temp_warmup * total
        frac = min(1.0, step / warm) if warm > 0 else float(total > 0)
        return p.warmup_teacher_temp + (p.teacher_temp - p.warmup_teacher_temp) * frac

    def teacher_momentum(self, step: int, total: int) -> float:
        """Cosine from ``momentum`` at step 0 to 1 at the last step."""
        return cosine_momentum(self.params.momentum, step, total)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int | None) -> None:
        """EMA of the student into the teacher (parameters only; the teacher's BN statistics are its own)."""
        total = int(total_steps) if total_steps else 0  # None while the trainer times a few steps
        m = self.teacher_momentum(step, total) if total else self.params.momentum
        ema_update_(self.teacher_encoder, self.encoder, m)
        ema_update_(self.teacher_head, self.head, m)
        self.steps_done.fill_(step + 1)
        self.total_steps.fill_(total)

    # ------------------------------------------------------------------ forward
    def forward_student(self, crops: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """Same-size crops go through the encoder together. -> (pooled [2B, D], logits [V, B, K])."""
        B = crops[0].shape[0]
        h_global = self.encoder(torch.cat(crops[:2])).pooled  # [2B, D]
        h = h_global if len(crops) == 2 else torch.cat([h_global, self.encoder(torch.cat(crops[2:])).pooled])
        return h_global, self.head(h).view(len(crops), B, -1)  # [V, B, K]

    @torch.no_grad()
    def forward_teacher(self, crops: tuple[Tensor, ...]) -> Tensor:
        """Global crops only -> raw teacher logits [2, B, K]."""
        B = crops[0].shape[0]
        return self.teacher_head(self.teacher_encoder(torch.cat(crops[:2])).pooled).view(2, B, -1).float()

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """c <- m c + (1 - m) mean of the teacher outputs over the global batch (all ranks)."""
        batch_center = D.all_reduce_mean(teacher_logits.reshape(-1, teacher_logits.shape[-1]).mean(0, keepdim=True))
        self.center.mul_(self.params.center_momentum).add_(batch_center, alpha=1 - self.params.center_momentum)

    def forward(self, batch: tuple[Tensor, ...]) -> Output:
        h_global, student_logits = self.forward_student(batch)
        teacher_logits = self.forward_teacher(batch)  # [2, B, K]
        teacher_logp = F.log_softmax((teacher_logits - self.center) / self.teacher_temperature(), dim=-1)
        teacher_probs = teacher_logp.exp()  # [2, B, K] centered and sharpened
        loss = dino_loss(student_logits, teacher_probs, self.params.student_temp)
        self.update_center(teacher_logits)
        entropy = -(teacher_probs * teacher_logp).sum(-1).mean()  # each teacher crop is in V - 1 pairs
        metrics = {"teacher_entropy": entropy.detach(), "kl": loss.detach() - entropy.detach()}
        return Output(loss, metrics, h_global[: batch[0].shape[0]].detach())
