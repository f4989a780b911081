"""The encoder contract every backbone of every modality follows."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class Features(NamedTuple):
    tokens: Tensor | None  # [B, T, D] (spatial positions, patches, frames) or None
    pooled: Tensor  # [B, D]


class ImageInput(nn.Module):
    """uint8 or [0, 1] float images -> normalized float, with the dataset's mean/std as buffers.

    Normalization lives inside the encoder so a saved encoder embeds raw images
    with nothing else to remember.
    """

    def __init__(self, channels: int, mean: float | list[float] = 0.5, std: float | list[float] = 0.25):
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).flatten().expand(channels).clone()
        s = torch.as_tensor(std, dtype=torch.float32).flatten().expand(channels).clone()
        self.register_buffer("mean", m.view(1, channels, 1, 1))
        self.register_buffer("std", s.view(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


class Encoder(nn.Module):
    """Base for encoders: ``dim`` and ``forward(x, mask=None) -> Features``.

    ``embed`` is the convenience every evaluation uses: pooled features in eval mode.
    """

    dim: int

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        was_training = self.training
        self.eval()
        out = self.forward(x).pooled
        self.train(was_training)
        return out
