"""Backbones behind one contract: ``dim`` and ``forward(x, mask=None) -> Features``."""

from __future__ import annotations

from selfsup.encoders import resnet as _resnet  # noqa: F401  (registers resnet18, resnet50)
from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.registry import ENCODERS


def build_encoder(name: str, **kwargs) -> Encoder:
    return ENCODERS.get(name)(**kwargs)


__all__ = ["Encoder", "Features", "ImageInput", "build_encoder"]
