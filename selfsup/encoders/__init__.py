"""Backbones behind one contract: ``dim`` and ``forward(x, mask=None) -> Features``.

Every module in this package registers its encoders when imported; they are all imported here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import torch
from torch import nn

from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.registry import ENCODERS

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def build_encoder(name: str, **kwargs) -> Encoder:
    """The registered encoder ``name``; keyword arguments it does not take (a ViT's ``patch_size``
    for a ResNet, a ResNet's ``width`` for a ViT) are dropped, and None means "its default"."""
    builder = ENCODERS.get(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return builder(**{k: v for k, v in kwargs.items() if v is not None})


def encoder_kwargs(enc_cfg) -> dict:
    """The EncoderConfig fields a builder may take."""
    return {k: getattr(enc_cfg, k) for k in ("small_stem", "width", "patch_size", "dim", "depth", "heads")}


# On CPU, channels_last convolutions train ResNets about a third faster (measured: SimCLR, width 16, 28 px,
# 2 cores), but with torch 2.14.1 on a 2-core AMD EPYC single-threaded training of a width-4 ResNet in
# channels_last corrupted the heap ("corrupted size vs. prev_size", then SIGABRT) while widths 8 and 16
# and the default layout trained cleanly; so on CPU narrow convolutions keep the default layout.
CPU_CHANNELS_LAST_MIN = 8


def use_channels_last(module: nn.Module, device: torch.device | str) -> bool:
    """Whether ``module`` (an encoder, or a model holding one) should run in channels_last on ``device``:
    on CUDA whenever it has convolutions; on CPU when every convolution has >= 8 output channels."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return False
    if torch.device(device).type == "cuda":
        return True
    return min(c.out_channels for c in convs) >= CPU_CHANNELS_LAST_MIN


__all__ = ["Encoder", "Features", "ImageInput", "build_encoder", "encoder_kwargs", "use_channels_last"]
