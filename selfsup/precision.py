"""One place for how a model runs on a device: autocast precision and memory format.

- bf16 autocast on CUDA (``precision="auto"``), fp32 elsewhere; ``"bf16"`` / ``"fp32"`` force it.
- channels_last for convnets (modules with at least two convolutions; a ViT's single patch convolution
  does not make it one): always on CUDA; on CPU only when every convolution of the module that is
  converted has at least 8 output channels. On CPU, channels_last trains ResNets
  about a third faster (SimCLR, width 16, 28 px, 2 cores), but with torch 2.14.1 on a 2-core AMD EPYC,
  single-threaded training of a width-4 ResNet in channels_last corrupted the heap ("corrupted size vs.
  prev_size", then SIGABRT) while widths 8 and 16 and the default layout trained cleanly. The check
  looks at the whole module that is converted (a method with its decoder, a classifier), not only its
  encoder: inpainting's 1-channel output convolution is such a case.

The trainer, feature extraction and fine-tuning all call ``channels_last_for`` and ``autocast``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

CPU_CHANNELS_LAST_MIN = 8


def channels_last_for(module: nn.Module, device: torch.device | str, requested: bool | None = None) -> bool:
    """Whether ``module`` runs in channels_last on ``device``; ``requested`` (train.channels_last) wins if set."""
    if requested is not None:
        return bool(requested)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if len(convs) < 2:
        return False
    if torch.device(device).type == "cuda":
        return True
    return min(c.out_channels for c in convs) >= CPU_CHANNELS_LAST_MIN


def to_channels_last(module: nn.Module) -> nn.Module:
    return module.to(memory_format=torch.channels_last)


def as_channels_last(x: Tensor) -> Tensor:
    """A 4-d batch in channels_last; anything else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """bf16 on CUDA under ``auto``; None means fp32 (no autocast)."""
    device = torch.device(device)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, precision: str = "auto"):
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


__all__ = ["as_channels_last", "autocast", "autocast_dtype", "channels_last_for", "to_channels_last"]
