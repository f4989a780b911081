"""Momentum (EMA) copies of networks, shared by MoCo and BYOL.

A momentum copy is a deep copy whose parameters never take a gradient (``requires_grad=False``,
so ``build_optimizer`` leaves them out and DDP does not reduce them) and follow the online
network as an exponential moving average after each optimizer step:

    target <- m * target + (1 - m) * online

Only parameters are averaged. Buffers (BatchNorm running statistics) stay the copy's own: in
training mode its BatchNorm layers normalize with the statistics of the batch it sees, and the
running averages are updated from those batches, as in MoCo's key encoder and BYOL's target.
Everything lives in the module's ``state_dict``, so checkpoints and resume cover it.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that takes no gradient."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, m: float) -> None:
    """In place: every parameter of ``target`` <- m * itself + (1 - m) * the same parameter of ``online``.

    The two modules must have the same structure (``target`` made by ``momentum_copy(online)``).
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"target has {len(t_params)} parameters, online {len(o_params)}: not a momentum copy")
    if not t_params:
        return
    # lerp_(online, 1 - m) = target + (1 - m) * (online - target) = m * target + (1 - m) * online
    torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - m)


def run_length_momentum(total_steps: int, ceiling: float = 0.996, horizon: float = 25.0) -> float:
    """A momentum at most ``ceiling`` (the paper's), lowered for short runs so that the EMA's time constant
    1 / (1 - m) stays within ``horizon`` steps per ~1000 of the run: ``min(ceiling, 1 - horizon / total_steps)``.
    A copy that trails the online network by hundreds of steps stays near its random init in a short run."""
    return min(ceiling, max(0.0, 1.0 - horizon / max(1, total_steps)))


def cosine_momentum(base: float, step: int, total: int) -> float:
    """BYOL's schedule: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``.

    ``base`` at step 0, rising to 1 at ``step == total`` (clamped beyond).
    """
    progress = min(max(step, 0), total) / max(1, total)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
