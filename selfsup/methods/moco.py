"""MoCo v2: Momentum Contrast with an MLP head and stronger views.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020 (arXiv:1911.05722); Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
Learning" (MoCo v2, arXiv:2003.04297).

A query encoder f_q (encoder + MLP projection head) embeds one view; a key encoder f_k, a momentum
copy of f_q that never takes a gradient, embeds the other. InfoNCE scores each query against its
own key (the positive) and a queue of K keys from earlier steps (the negatives):

    loss = -log exp(q.k+ / T) / (exp(q.k+ / T) + sum_queue exp(q.k- / T))    (q, k L2-normalized)

After the loss is computed the step's keys are enqueued (oldest out), so a step's keys are never
negatives for themselves; after each optimizer step f_k <- m f_k + (1 - m) f_q (``after_step``).
Under DDP the keys of all ranks are gathered before they are enqueued, so every rank holds the same
queue, and "shuffle BN" hides the positive pair from BatchNorm: the key images of all ranks are
gathered, permuted with one permutation shared by the ranks, each rank encodes its slice, and the
keys are put back in order. In a single process the same leak (MoCo sec. 3.3) is blocked by emulating
it, as MoCo's own single-GPU demo does: the key batch is permuted and encoded in ``bn_splits``
sub-batches, each with its own BatchNorm statistics, then put back in order, so a key is normalized
with a random set of images other than its query's batch statistics. ``train.sync_bn`` is the
alternative under DDP (then set ``shuffle_bn: false`` to save the gather of the key images).

Paper hyperparameters (ImageNet, ResNet-50): K = 65536 (4096 in the authors' CIFAR-10 demo), m = 0.999,
T = 0.07 (v1) / 0.2 (v2), MLP
head 2048-2048-128 without BatchNorm (v2), SGD lr 0.03 x BatchSize/256, momentum 0.9, weight decay
1e-4, batch 256, cosine schedule (v2), 200-800 epochs; views (v2): random resized crop (0.2-1),
colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur (sigma 0.1-2) p 0.5,
horizontal flip; asymmetric loss (one query view, one key view per image).

Defaults here differ for short budgets, 28 px images and CPUs (their measurements: docs/method-defaults.md):

- m = 0.99: at 0.999 the key encoder stays near its random init for the first hundreds of steps; 0.9
  made the keys too noisy.
- SGD lr 0.5 x BatchSize/256 (a short run needs a larger step than the paper's 0.03); weight decay
  1e-4 as the paper.
- K = 4096, as the authors' CIFAR-10 demo: a queue of 65536 keys takes a short run longer to fill
  than the run lasts, and until then it is mostly the random unit vectors it starts from. K is
  capped at half the training-set size (``resolve_params``): 65536 keys of 4096 images would hold
  each image 16 times, and at K = N a query meets its own stale key among the negatives from the
  second epoch on. Short runs like smaller queues, whose keys are fresher and which fill sooner (the
  queue starts as random unit vectors); set ``queue_size`` for such runs.
- No blur on images of 64 px or less (a 3x3 kernel with sigma up to 2 erases 28 px images).
- The loss is asymmetric, as in v2. ``symmetric: true`` adds the swapped pair (MoCo v3's form) and
  enqueues the keys of both views, at twice the compute per step; in short runs it learned no more,
  so under a time budget the asymmetric loss gets more done.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed as D
from selfsup.methods._momentum import ema_update_, momentum_copy
from selfsup.methods.base import Output, mlp_head
from selfsup.registry import METHODS
from selfsup.views import ImageAugment, blur_p_for


@dataclass
class MoCoParams:
    queue_size: int = 4096  # K (the paper's 65536 is for ImageNet; 4096 as MoCo's CIFAR demo); at most half the data
    momentum: float = 0.99  # m of the key encoder's EMA (paper 0.999)
    temperature: float = 0.2
    proj_hidden: int | None = None  # None: the encoder's dim
    proj_dim: int = 128
    head_bn: bool = False  # v2's head has no BatchNorm
    symmetric: bool = False
    shuffle_bn: bool = True  # under DDP: across ranks; in one process: permuted sub-batches of the keys
    bn_splits: int = 8  # one process: key sub-batches (MoCo's single-GPU demo: 8), at least 8 images each
    jitter_strength: float = 0.5  # brightness/contrast/saturation 0.4, hue 0.1 (v2)
    crop_scale_min: float = 0.2
    blur_p: float | None = None  # None: 0.5 above 64 px, off for small images


@METHODS.register("moco")
class MoCo(nn.Module):
    modality = "image"
    collapse_advice = "lower the lr or raise method.temperature"
    Params = MoCoParams
    defaults = {"optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-4}  # lr per 256 images

    @staticmethod
    def resolve_params(params: MoCoParams, num_samples: int) -> MoCoParams:
        """K capped at half the training set: at K = N each query meets its own (stale) key among the
        negatives from the second epoch on."""
        return dataclasses.replace(params, queue_size=max(1, min(params.queue_size, num_samples // 2)))

    def __init__(self, encoder: nn.Module, params: MoCoParams, spec):
        super().__init__()
        self.encoder, self.params = encoder, params
        hidden = params.proj_hidden or encoder.dim
        self.projector = mlp_head(encoder.dim, hidden, params.proj_dim, batch_norm=params.head_bn)
        self.key_encoder = momentum_copy(self.encoder)
        self.key_projector = momentum_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(params.queue_size, params.proj_dim), dim=1))  # [K, d]
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next row to write
        blur = blur_p_for(spec.size, 0.5, params.blur_p)
        self.augment = ImageAugment(size=spec.size, scale=(params.crop_scale_min, 1.0),
                                    jitter_strength=params.jitter_strength, blur_p=blur)  # fmt: skip

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> (query view, key view) float [B, C, S, S], a seed [1] for shuffle BN across
        ranks and a permutation [B] of the key batch for shuffle BN in one process."""
        q, k = self.augment(x, generator), self.augment(x, generator)
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=x.device)
        perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
        return q, k, seed, perm

    # ------------------------------------------------------------------ the two encoders
    def query(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """-> (encoder features h [B, D], normalized query q [B, d] in float32)."""
        h = self.encoder(x).pooled  # [B, D]
        return h, F.normalize(self.projector(h).float(), dim=1)

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        """Normalized keys of the momentum encoder, x [B, C, S, S] -> [B, d] float32."""
        return F.normalize(self.key_projector(self.key_encoder(x).pooled).float(), dim=1)

    def bn_groups(self, batch: int) -> int:
        """Key sub-batches in one process: ``bn_splits``, fewer when that would leave under 8 images each."""
        return max(1, min(self.params.bn_splits, batch // 8))

    @torch.no_grad()
    def split_keys(self, x: Tensor, perm: Tensor) -> Tensor:
        """Shuffle BN in one process: keys of x [B, ...] encoded as ``bn_groups`` sub-batches of the permuted
        batch (BatchNorm statistics per sub-batch), returned in the original order [B, d]."""
        k_perm = torch.cat([self.key(chunk) for chunk in x[perm].chunk(self.bn_groups(x.shape[0]))])  # row i: perm[i]
        k = torch.empty_like(k_perm)
        k[perm] = k_perm  # unshuffle
        return k

    @torch.no_grad()
    def keys(self, x: Tensor, seed: Tensor, perm: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> (this rank's keys [B, d], all ranks' keys [world * B, d] in rank order), with shuffle BN."""
        world, r, b = D.world_size(), D.rank(), x.shape[0]
        if not (self.params.shuffle_bn and self.training) or (world == 1 and perm is None):
            k = self.key(x)
            return k, D.gather(k)
        if world == 1:
            k = self.split_keys(x, perm)
            return k, k
        x_all = D.gather(x)  # [N, C, S, S]
        g = torch.Generator(device=x.device).manual_seed(int(D.gather(seed)[0]))  # rank 0's seed, on every rank
        perm = torch.randperm(x_all.shape[0], generator=g, device=x.device)  # [N], the same on every rank
        k_shuffled = D.gather(self.key(x_all[perm[r * b : (r + 1) * b]]))  # row i: key of image perm[i]
        k_all = torch.empty_like(k_shuffled)
        k_all[perm] = k_shuffled  # unshuffle
        return k_all[r * b : (r + 1) * b], k_all

    # ------------------------------------------------------------------ loss and queue
    def contrastive_loss(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """InfoNCE of queries q [B, d] against their keys k [B, d] and the queue; -> (loss, logits [B, 1 + K])."""
        l_pos = (q * k).sum(1, keepdim=True)  # [B, 1]
        l_neg = q @ self.queue.clone().T  # [B, K]; a copy, as the queue is written before backward
        logits = torch.cat([l_pos, l_neg], dim=1) / self.params.temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is column 0
        return F.cross_entropy(logits, target), logits

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write keys [n, d] at the pointer (wrapping around), oldest first out; advance the pointer."""
        size = self.queue.shape[0]
        keys = keys[-size:]  # more keys than rows: only the newest fit
        idx = (torch.arange(keys.shape[0], device=keys.device) + self.queue_ptr) % size  # [n]
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def forward(self, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> Output:
        v1, v2, seed, perm = batch
        h1, q1 = self.query(v1)
        k2, k2_all = self.keys(v2, seed, perm)
        loss, logits = self.contrastive_loss(q1, k2)
        new_keys = [k2_all]
        if self.params.symmetric:
            _, q2 = self.query(v2)
            k1, k1_all = self.keys(v1, seed + 1, perm.flip(0))
            loss = (loss + self.contrastive_loss(q2, k1)[0]) / 2
            new_keys.append(k1_all)
        if self.training:
            self.enqueue(torch.cat(new_keys))  # after the loss: this step's keys are not its own negatives
        acc = (logits.detach().argmax(1) == 0).float().mean()
        return Output(loss, {"moco_acc": acc}, h1.detach())

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """The key encoder follows the query encoder: f_k <- m f_k + (1 - m) f_q."""
        ema_update_(self.key_encoder, self.encoder, self.params.momentum)
        ema_update_(self.key_projector, self.projector, self.params.momentum)
