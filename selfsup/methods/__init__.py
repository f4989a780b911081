"""Pretext tasks, one file each; ``build_method`` composes encoder + method from a resolved config.

Every module in this package registers its method when imported; they are all imported here.
A method class has ``modality`` (the spec kind it takes), ``Params`` (a dataclass), ``defaults``
(optimizer, lr per 256 samples, weight decay), and optionally ``default_encoder`` (else resnet18),
``eval_encoder`` (the module whose weights are evaluated; else ``encoder``), ``sync_bn`` (True: the
paper's global BatchNorm under DDP) and ``resolve_params(params, num_samples)`` (parameters that
depend on the data). It is built as ``cls(encoder, params, spec)`` and has ``views(x, generator,
lengths=None)``, ``forward(views) -> Output`` and optionally ``after_step(step, total_steps)``,
``set_word_pieces(table)`` (with ``wants_word_pieces``: whole-word masking) and ``prepare(dataset, generator,
log)`` (data-dependent state fit once before the first step of a new run, kept in buffers so a resumed run
restores it: HuBERT's k-means targets).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import torch
from torch import nn

from selfsup.config import RunConfig, from_dict
from selfsup.encoders import build_encoder
from selfsup.methods.base import Output
from selfsup.registry import METHODS

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base",) and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")


def resolve_method_params(name: str, params: dict, num_samples: int | None = None) -> dict:
    """Every field of method ``name``'s Params, checked and filled in; data-dependent ones from ``num_samples``."""
    cls = METHODS.get(name)
    p = from_dict(cls.Params, dict(params or {}), "method.params")
    hook = getattr(cls, "resolve_params", None)
    if hook is not None and num_samples is not None:
        p = hook(p, num_samples)
    return dataclasses.asdict(p)


def build_method(cfg: RunConfig, spec) -> nn.Module:
    """The method named in a resolved ``cfg`` around a fresh encoder built from ``(name, spec, params)``.

    The encoder is built first, right after the caller seeds torch, so a run's random-init baseline
    (``selfsup.runs.load_encoder(run, random_init=True)``) is exactly the encoder pretraining started from."""
    cls = METHODS.get(cfg.method.name)
    encoder = build_encoder(cfg.encoder.name or getattr(cls, "default_encoder", "resnet18"), spec, cfg.encoder.params)
    params = from_dict(cls.Params, dict(cfg.method.params), "method.params")
    return cls(encoder, params, spec)


def eval_encoder_name(method: nn.Module | type) -> str:
    return getattr(method, "eval_encoder", "encoder")


def metric_floats(metrics: dict) -> dict[str, float]:
    """A step's metrics (0-d tensors, kept on the device until a logging step) as floats: one host sync."""
    if not metrics:
        return {}
    dev = next((v.device for v in metrics.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    values = torch.stack([torch.as_tensor(v, device=dev).detach().float().reshape(()) for v in metrics.values()])
    return dict(zip(metrics, values.cpu().tolist()))


__all__ = ["Output", "build_method", "eval_encoder_name", "metric_floats", "resolve_method_params"]
