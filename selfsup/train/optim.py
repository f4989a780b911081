"""Optimizers the papers use (the warm-up + cosine schedule is ``selfsup.schedule``)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.schedule import warmup_cosine  # noqa: F401  (re-exported for the loop)


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as SimCLR uses it: SGD with momentum whose per-layer step is
    scaled by trust * ||w|| / ||g + wd w||. Biases and norm parameters (``lars=False``
    groups) get neither the adaptation nor weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust: float = 1e-3):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), group["trust"] * w_norm / g_norm, 1.0)
                    g = g.mul(ratio)
                buf = self.state[p].get("momentum")
                if buf is None:
                    buf = self.state[p]["momentum"] = g.clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])


def _split_decay(model: nn.Module) -> tuple[list, list]:
    """Weights of convs/linears decay; biases and norm scales (1-d) do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = _split_decay(model)
    if name == "lars":
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars": False}]
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "adamw":
        fused = all(p.is_cuda for p in decay + no_decay) or None
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused)
    raise UserError(f"train.optimizer={name!r}; choose sgd, lars or adamw")
