"""End-to-end fine-tuning: a copy of the encoder plus a linear head, trained on the labelled subset.

The recipe follows MAE's fine-tuning (He et al. 2022, appendix A.3) scaled down to small
images and CPUs: AdamW (betas 0.9/0.999), linear warm-up then cosine decay, weight decay on
weights only (not on biases, norm scales, ``cls_token`` or ``pos_embed``), light augmentation
(random resized crop, scale 0.5-1, and horizontal flip) and optional layer-wise learning-rate
decay (BEiT, Bao et al. 2022; MAE uses 0.75 for ViT-B, 0.65 for ViT-L/H). Run on a
random-init encoder the same recipe is the supervised-from-scratch baseline.

Layer ids for the decay come from parameter names: the input and embedding parameters
(``input``, ``stem``, ``patch_embed``, ``cls_token``, ``pos_embed``) are layer 0, ResNet stage
``layers.{i}`` or transformer block ``blocks.{i}`` is layer i + 1, and the rest (final ``norm``,
the head) is the top layer T = L + 1 for L stages or blocks. Layer l trains at
``lr * layer_decay ** (T - l)``: the head at the full rate, each layer below it ``layer_decay``
times slower.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import local_device
from selfsup.encoders import Encoder, use_channels_last
from selfsup.registry import EVALUATIONS
from selfsup.train.optim import warmup_cosine
from selfsup.views.image import random_resized_crop

WARMUP = 0.1  # fraction of the fine-tuning steps spent in linear warm-up
CROP_SCALE = (0.5, 1.0)
_EMBEDDING = {"input", "stem", "patch_embed", "cls_token", "pos_embed", "dist_token", "mask_token"}
_NO_DECAY = {"cls_token", "pos_embed", "dist_token", "mask_token"}
_STACK = re.compile(r"^(?:layers|blocks)\.(\d+)(?:\.|$)")


def _strip(name: str) -> str:
    return name.removeprefix("encoder.")


def num_layers(names: Iterable[str]) -> int:
    """L: how many ResNet stages (``layers.{i}``) or transformer blocks (``blocks.{i}``) the names hold."""
    ids = [int(m.group(1)) for n in names if (m := _STACK.match(_strip(n)))]
    return max(ids) + 1 if ids else 0


def layer_id(name: str, layers: int) -> int:
    """0 for input/embedding parameters, i + 1 for ``layers.{i}`` / ``blocks.{i}``, ``layers + 1`` for the rest."""
    name = _strip(name)
    if name.split(".")[0] in _EMBEDDING:
        return 0
    m = _STACK.match(name)
    return int(m.group(1)) + 1 if m else layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Optimizer groups, one per (layer, decays-or-not), each with an ``lr_scale`` of
    ``layer_decay ** (top - layer)`` and the parameter ``names`` it holds.

    Names may carry an ``encoder.`` prefix (a classifier wrapping the encoder).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layers = num_layers(n for n, _ in named)
    top = layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named:
        lid = layer_id(name, layers)
        decays = p.ndim > 1 and _strip(name).split(".")[0] not in _NO_DECAY
        g = groups.setdefault((lid, decays), {"params": [], "names": [], "layer_id": lid,
                                              "weight_decay": weight_decay if decays else 0.0,
                                              "lr_scale": layer_decay ** (top - lid)})  # fmt: skip
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class Classifier(nn.Module):
    """An encoder and a linear head on its pooled features: uint8 or [0, 1] images -> logits [B, C]."""

    def __init__(self, encoder: Encoder, num_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.dim, num_classes)
        with torch.no_grad():  # small init, as MAE's fine-tuning head (std 2e-5 there; 0.01 for short runs)
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * 0.01)
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x).pooled)  # [B, C]


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.array(x))


def finetune(encoder: Encoder, train_x, train_y, num_classes: int, *, epochs: int = 10, lr: float = 3e-3,
             weight_decay: float = 0.05, layer_decay: float = 1.0, batch_size: int = 64, min_steps: int = 100,
             max_steps: int | None = None, seed: int = 0, device: str = "auto", log=None) -> Classifier:  # fmt: skip
    """Fine-tune a deep copy of ``encoder`` with a new linear head; ``encoder`` itself is left untouched.

    train_x: uint8 images [N, C, H, W] (array or tensor); train_y: class ids [N].
    Steps: ``epochs`` passes over the N images at ``batch_size``, at least ``min_steps`` (so a
    1%-label subset still trains) and at most ``max_steps`` (None: no cap). Returns the
    classifier in eval mode, on ``device``.
    """
    dev = local_device(device)
    x_all = _as_tensor(train_x).to(dev)
    y_all = _as_tensor(train_y).long().to(dev)
    n, size = x_all.shape[0], x_all.shape[-1]
    bs = min(batch_size, max(2, n))  # BatchNorm needs two samples; tiny subsets repeat across the batch
    steps = max(min_steps, epochs * math.ceil(n / bs))
    steps = min(steps, max_steps) if max_steps else steps
    if log is not None:
        log(f"  fine-tuning on {n} images: {steps} steps of {bs}")
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout / drop-path, if the encoder has them
        g_cpu = torch.Generator().manual_seed(seed)
        model = Classifier(copy.deepcopy(encoder), num_classes, g_cpu).to(dev).train()
        channels_last = use_channels_last(model, dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        groups = param_groups(model, weight_decay, layer_decay)
        fused = dev.type == "cuda" or None
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused)
        g_dev = torch.Generator(dev).manual_seed(seed + 1)
        order = torch.empty(0, dtype=torch.long)
        warmup = int(WARMUP * steps)
        for step in range(steps):
            while len(order) < bs:  # a stream of seeded permutations, epoch after epoch
                order = torch.cat([order, torch.randperm(n, generator=g_cpu)])
            idx, order = order[:bs].to(dev), order[bs:]
            with torch.no_grad():
                xb = x_all[idx].float().div_(255)
                xb = random_resized_crop(xb, size, scale=CROP_SCALE, flip_p=0.5, generator=g_dev)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
            scale = warmup_cosine(step, steps, warmup)
            for group in opt.param_groups:
                group["lr"] = lr * scale * group["lr_scale"]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = F.cross_entropy(model(xb).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, test_x, test_y, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (uint8 images -> logits) on the test split."""
    dev = next(model.parameters()).device
    channels_last = use_channels_last(model, dev)
    x, y = _as_tensor(test_x), _as_tensor(test_y).long()
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            pred = model(xb).argmax(1).cpu()
        correct += (pred == y[i : i + batch_size]).sum().item()
    return correct / max(1, len(x))


@EVALUATIONS.register("finetune")
def finetune_accuracy(encoder: Encoder, train_x, train_y, test_x, test_y, num_classes: int, **kw) -> float:
    """Fine-tune a copy of ``encoder`` on the labelled images (see ``finetune`` for the keywords), then score
    it on the test split. Run on the random-init encoder, this is supervised training from scratch."""
    known = ("epochs", "lr", "weight_decay", "layer_decay", "batch_size", "min_steps", "max_steps", "seed",
             "device", "log")  # fmt: skip
    model = finetune(encoder, train_x, train_y, num_classes, **{k: v for k, v in kw.items() if k in known})
    return classifier_accuracy(model, test_x, test_y)


finetune_accuracy.needs_encoder = True  # evaluate() passes the encoder and uint8 images, not frozen features
