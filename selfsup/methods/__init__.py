"""Pretext tasks, one file each; ``build_method`` composes encoder + method from a config.

Every module in this package registers its method when imported; they are all imported here.
A method class has ``modality``, ``Params`` (a dataclass), ``defaults`` (optimizer, lr per 256
samples, weight decay), optionally ``default_encoder`` (else resnet18), ``views(x, generator)``,
``forward(views) -> Output`` and optionally ``after_step(step, total_steps)``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

from torch import nn

from selfsup.config import RunConfig, from_dict
from selfsup.encoders import build_encoder, encoder_kwargs
from selfsup.methods.base import Output
from selfsup.registry import METHODS

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base",) and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")


def resolve_encoder_name(cfg: RunConfig) -> str:
    """Fill in ``encoder.name`` from the method's default when the config leaves it open."""
    if cfg.encoder.name is None:
        cls = METHODS.get(cfg.method.name)
        cfg.encoder.name = getattr(cls, "default_encoder", "resnet18")
    return cfg.encoder.name


def build_method(cfg: RunConfig, channels: int, image_size: int, mean=0.5, std=0.25,
                 num_samples: int | None = None) -> nn.Module:  # fmt: skip
    """The method named in ``cfg`` around a fresh encoder; fills in the method's default params.

    ``num_samples`` (the training set's size) reaches methods whose constructor takes it
    (MoCo caps its queue to it)."""
    cls = METHODS.get(cfg.method.name)
    params = from_dict(cls.Params, cfg.method.params, "method.params")
    cfg.method.params = dataclasses.asdict(params)
    encoder = build_encoder(resolve_encoder_name(cfg), in_channels=channels, image_size=image_size,
                            mean=mean, std=std, **encoder_kwargs(cfg.encoder))  # fmt: skip
    extra = {"num_samples": num_samples} if "num_samples" in inspect.signature(cls).parameters else {}
    return cls(encoder, params, image_size, **extra)


__all__ = ["Output", "build_method", "resolve_encoder_name"]
