"""What every method returns, and small pieces methods compose (no deep base classes)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class Output(NamedTuple):
    loss: Tensor  # scalar
    metrics: dict[str, Tensor]  # 0-d tensors, detached; turned into floats only at logging steps (no host sync)
    embedding: Tensor | None = None  # [B, D'] representation for the collapse monitor (the encoder's pooled features,
    # or the space the loss spreads where those narrow while healthy: speaker-contrastive's projection; a sample
    # of the frame tokens for the frame-level speech methods, tera and hubert: ``encoders.base.token_sample``)


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True) -> nn.Sequential:
    """Linear -> (BN) -> ReLU -> Linear: SimCLR's projection head g(.)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)
