"""torch.distributed helpers: process group set-up from torchrun's environment, gathers."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    if is_dist() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)


def local_device(requested: str) -> torch.device:
    """``auto`` picks this rank's GPU (LOCAL_RANK) when CUDA is there, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        requested = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return torch.device(requested)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each copy's gradient back to the rank that owns it."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: Tensor) -> Tensor:
    """[B, ...] on each rank -> [world * B, ...], rank order; gradients flow to every rank."""
    return _GatherWithGrad.apply(x) if world_size() > 1 else x


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    if world_size() > 1:
        x = x.detach().clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= world_size()
    return x
