"""Backbones behind one contract: ``dim`` and ``forward(x, mask=None) -> Features``.

Every module in this package registers its encoders when imported; they are all imported here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

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


__all__ = ["Encoder", "Features", "ImageInput", "build_encoder", "encoder_kwargs"]
