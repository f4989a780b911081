"""End-to-end fine-tuning: a copy of the encoder plus the task's head, trained on the labelled subset.

The recipe follows MAE's fine-tuning (He et al. 2022, appendix A.3) scaled down to small
images and CPUs: AdamW (betas 0.9/0.999), linear warm-up then cosine decay, weight decay on
weights only (not on biases, norm scales, ``cls_token`` or ``pos_embed``), the modality's light
augmentation (``selfsup.views.finetune_augment``; images: random resized crop, scale 0.5-1, and
horizontal flip) and optional layer-wise learning-rate
decay (BEiT, Bao et al. 2022; MAE uses 0.75 for ViT-B, 0.65 for ViT-L/H). Run on a
random-init encoder the same recipe is the supervised-from-scratch baseline.

``probe_first`` is LP-FT (Kumar et al., ICLR 2022): the head starts from a logistic regression fit on the
frozen encoder's features of the training subset (L2 ``PROBE_L2``, the standardization folded into the
weights), so the first steps refine a working classifier instead of pushing a random head's gradients
through the pretrained features.

Layer ids for the decay come from parameter names: the input and embedding parameters
(``input``, ``stem``, ``patch_embed``, ``cls_token``, ``pos_embed``) are layer 0, ResNet stage
``layers.{i}`` or transformer block ``blocks.{i}`` (at any depth of the name, e.g.
``transformer.blocks.{i}``) is layer i + 1, and the rest (final ``norm``,
the head) is the top layer T = L + 1 for L stages or blocks. Layer l trains at
``lr * layer_decay ** (T - l)``: the head at the full rate, each layer below it ``layer_decay``
times slower.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from selfsup.data.base import SequenceLabels
from selfsup.distributed import local_device
from selfsup.encoders import Encoder
from selfsup.precision import as_channels_last, autocast, channels_last_for, to_channels_last
from selfsup.schedule import warmup_cosine

WARMUP = 0.1  # fraction of the fine-tuning steps spent in linear warm-up
PROBE_L2 = 1e-3  # LP-FT's head: the L2 strength of its logistic regression (the middle of the linear probe's grid)
_EMBEDDING = {"input", "stem", "patch_embed", "cls_token", "pos_embed", "dist_token", "mask_token", "embed"}
_NO_DECAY = {"cls_token", "pos_embed", "dist_token", "mask_token"}
_STACK = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)(?:\.|$)")


def _strip(name: str) -> str:
    return name.removeprefix("encoder.")


def num_layers(names: Iterable[str]) -> int:
    """L: how many ResNet stages (``layers.{i}``) or transformer blocks (``blocks.{i}``) the names hold."""
    ids = [int(m.group(1)) for n in names if (m := _STACK.search(_strip(n)))]
    return max(ids) + 1 if ids else 0


def layer_id(name: str, layers: int) -> int:
    """0 for input/embedding parameters, i + 1 for ``layers.{i}`` / ``blocks.{i}``, ``layers + 1`` for the rest."""
    name = _strip(name)
    if name.split(".")[0] in _EMBEDDING:
        return 0
    m = _STACK.search(name)
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
    """An encoder and a task's head: samples -> predictions. The head reads the pooled features (logits [B, C]
    for classify), or the whole ``Features`` when it says so with ``reads_features = True`` (CTC: per-token
    logits and their lengths)."""

    def __init__(self, encoder: Encoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: Tensor, lengths: Tensor | None = None):
        feats = self.encoder(x, lengths=lengths) if lengths is not None else self.encoder(x)
        return self.head(feats) if getattr(self.head, "reads_features", False) else self.head(feats.pooled)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.array(x))


class _Batches:
    """Training samples and targets on the device, gathered a batch at a time: arrays and tensors (plus
    ``lengths``), or a ragged container such as audio ``Waveforms`` (padded per batch by its ``batch``);
    class ids, or ``SequenceLabels`` (a task's loss takes the batch's ``SequenceLabels``)."""

    def __init__(self, x, y, lengths, dev: torch.device):
        self.dev, self.ragged = dev, getattr(x, "ragged", False)
        self.x = x if self.ragged else _as_tensor(x).to(dev)
        self.sequences = isinstance(y, SequenceLabels)
        self.y = y if self.sequences else _as_tensor(y).to(dev)
        self.lengths = None if lengths is None or self.ragged else _as_tensor(lengths).to(dev)
        self.n = len(x) if self.ragged else self.x.shape[0]

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor | None, object]:
        """CPU indices [b] -> (x [b, ...], lengths [b] or None, targets)."""
        if self.ragged:
            xb, lb = (t.to(self.dev) for t in self.x.batch(idx.numpy()))
        else:
            xb = self.x[idx.to(self.dev)]
            lb = None if self.lengths is None else self.lengths[idx.to(self.dev)]
        yb = self.y.take(idx.numpy()) if self.sequences else self.y[idx.to(self.dev)]
        return xb, lb, yb


@torch.no_grad()
def _probe_head(model: Classifier, x_all, y_all: Tensor, len_all: Tensor | None, num_outputs: int,
                batch_size: int, device: torch.device | None = None) -> None:  # fmt: skip
    """LP-FT's first stage: ``model.head`` (a Linear) set to the linear probe's classifier on the frozen features."""
    from selfsup.evaluate.features import extract_features
    from selfsup.evaluate.protocols import linear_head

    device = str(device if device is not None else x_all.device)
    feats = extract_features(model.encoder, x_all, batch_size, device, lengths=len_all)
    weight, bias = linear_head(feats, y_all, num_outputs, PROBE_L2)
    model.head.weight.copy_(weight.to(model.head.weight))
    model.head.bias.copy_(bias.to(model.head.bias))
    model.train()


def _weights(sample_weights, n: int) -> Tensor:
    """``sample_weights`` as a float64 tensor [n], checked: one finite non-negative weight per sample, not all 0."""
    w = torch.as_tensor(np.asarray(sample_weights, dtype=np.float64))
    if w.shape != (n,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"sample_weights must be {n} finite non-negative weights, not all zero (got shape "
                         f"{tuple(w.shape)})")  # fmt: skip
    return w


def finetune(encoder: Encoder, train_x, train_y, task, num_outputs: int, augment: Callable | None = None, *,
             epochs: int = 10, lr: float = 3e-3, weight_decay: float = 0.05, layer_decay: float = 1.0,
             batch_size: int = 64, min_steps: int = 100, max_steps: int | None = None, seed: int = 0,
             device: str = "auto", log=None, lengths=None, probe_first: bool = False,
             sample_weights: np.ndarray | None = None) -> Classifier:  # fmt: skip
    """Fine-tune a deep copy of ``encoder`` with ``task``'s head and loss; ``encoder`` itself is left untouched.

    train_x: samples [N, ...] (array or tensor; or a ragged container such as audio ``Waveforms``), ``lengths`` [N]
    for padded samples; train_y: targets [N] (class ids, or ``SequenceLabels`` for a sequence task);
    ``augment(x, generator)`` the
    modality's training augmentation. Steps: ``epochs`` passes over the N samples at ``batch_size``, at
    least ``min_steps`` (so a 1%-label subset still trains) and at most ``max_steps`` (None: no cap).
    ``probe_first``: LP-FT, the head fit on the frozen features first (a linear head only).
    ``sample_weights`` [N] (non-negative, e.g. ``selfsup.data.groups.balanced_weights``): each epoch's N samples are
    drawn with replacement by these weights (seeded as the permutations are) instead of a permutation.
    Returns the model in eval mode, on ``device``.
    """
    dev = local_device(device)
    data = _Batches(train_x, train_y, lengths, dev)
    n = data.n
    weights = None if sample_weights is None else _weights(sample_weights, n)  # [N] float64
    bs = min(batch_size, max(2, n))  # BatchNorm needs two samples; tiny subsets repeat across the batch
    steps = max(min_steps, epochs * math.ceil(n / bs))
    steps = min(steps, max_steps) if max_steps else steps
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout / drop-path, if the encoder has them
        g_cpu = torch.Generator().manual_seed(seed)
        model = Classifier(copy.deepcopy(encoder), task.head(encoder.dim, num_outputs, g_cpu)).to(dev).train()
        if probe_first and isinstance(model.head, nn.Linear) and not data.sequences:
            _probe_head(model, data.x, data.y, data.lengths, num_outputs, max(bs, 256), dev)
        channels_last = channels_last_for(model, dev)
        if channels_last:
            to_channels_last(model)
        groups = param_groups(model, weight_decay, layer_decay)
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=dev.type == "cuda" or None)
        g_dev = torch.Generator(dev).manual_seed(seed + 1)
        order = torch.empty(0, dtype=torch.long)
        warmup, start, shown = int(WARMUP * steps), time.perf_counter(), 0
        for step in range(steps):
            while len(order) < bs:  # a stream of seeded permutations (or weighted draws), epoch after epoch
                epoch = torch.randperm(n, generator=g_cpu) if weights is None else torch.multinomial(
                    weights, n, replacement=True, generator=g_cpu)  # fmt: skip
                order = torch.cat([order, epoch])
            idx, order = order[:bs], order[bs:]
            with torch.no_grad():
                xb, lb, yb = data(idx)
                xb = augment(xb, g_dev) if augment is not None else xb
                if channels_last:
                    xb = as_channels_last(xb)
            scale = warmup_cosine(step, steps, warmup)
            for group in opt.param_groups:
                group["lr"] = lr * scale * group["lr_scale"]
            with autocast(dev):
                loss = task.loss(model(xb, lb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            quarter = 4 * (step + 1) // steps
            if log is not None and quarter > shown:
                shown = quarter
                spent = time.perf_counter() - start
                log(f"  fine-tuning on {n} samples: step {step + 1}/{steps} of {bs} "
                    f"({spent:.0f} s, {spent * (steps - step - 1) / (step + 1):.0f} s left)")  # fmt: skip
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x, batch_size: int = 512, lengths=None) -> Tensor | list[Tensor]:
    """The model's outputs over ``x`` [N, ...] (padded after ``lengths`` [N], if given; or a ragged container
    such as audio ``Waveforms``) in batches (float32, CPU): a tensor [N, ...], or, for a model that returns
    (padded outputs [B, T, ...], lengths [B]) (a CTC head), a list of each sample's valid outputs [T_i, ...]."""
    dev = next(model.parameters()).device
    channels_last = channels_last_for(model, dev)
    ragged = getattr(x, "ragged", False)
    x = x if ragged else _as_tensor(x)
    model.eval()
    out, per_sample = [], False
    for i in range(0, len(x), batch_size):
        if ragged:
            xb, lb = (t.to(dev) for t in x[i : i + batch_size].batch())
        else:
            xb = x[i : i + batch_size].to(dev)
            lb = None if lengths is None else _as_tensor(lengths)[i : i + batch_size].to(dev)
        if channels_last:
            xb = as_channels_last(xb)
        with autocast(dev):
            y = model(xb, lb)
        if isinstance(y, tuple):  # (padded outputs, lengths): each sample's valid part
            per_sample = True
            out += [o[: int(n)].float().cpu() for o, n in zip(y[0], y[1].tolist())]
        else:
            out.append(y.float().cpu())
    if per_sample:
        return out
    return torch.cat(out) if out else torch.zeros(0)


__all__ = ["Classifier", "finetune", "layer_id", "num_layers", "param_groups", "predict"]
