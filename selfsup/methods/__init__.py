"""Pretext tasks, one file each; ``build_method`` composes encoder + method from a config."""

from __future__ import annotations

import dataclasses

from torch import nn

from selfsup.config import RunConfig, from_dict
from selfsup.encoders import build_encoder
from selfsup.methods import rotation as _rotation  # noqa: F401  (registers)
from selfsup.methods import simclr as _simclr  # noqa: F401  (registers)
from selfsup.methods.base import Output
from selfsup.registry import METHODS


def build_method(cfg: RunConfig, channels: int, image_size: int, mean=0.5, std=0.25) -> nn.Module:
    """The method named in ``cfg`` around a fresh encoder; fills in the method's default params."""
    cls = METHODS.get(cfg.method.name)
    params = from_dict(cls.Params, cfg.method.params, "method.params")
    cfg.method.params = dataclasses.asdict(params)
    encoder = build_encoder(cfg.encoder.name, in_channels=channels, image_size=image_size,
                            small_stem=cfg.encoder.small_stem, width=cfg.encoder.width, mean=mean, std=std)  # fmt: skip
    return cls(encoder, params, image_size)


__all__ = ["Output", "build_method"]
