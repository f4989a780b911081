"""The encoder contract every backbone of every modality follows.

``forward(x, mask=None, lengths=None) -> Features(tokens, pooled, lengths)``: ``tokens`` [B, T, D]
(spatial positions, patches, frames or tokens; None if an encoder has none), ``pooled`` [B, D] and
``lengths`` [B] (valid tokens per sample; None when every sample has all T). Pooling ignores padding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class Features(NamedTuple):
    tokens: Tensor | None  # [B, T, D] or None
    pooled: Tensor  # [B, D]
    lengths: Tensor | None = None  # [B] valid tokens per sample; None: all T are valid


def padding_mask(lengths: Tensor, T: int) -> Tensor:
    """bool [B, T], True at valid positions (``t < lengths[b]``)."""
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]


def masked_mean(tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Mean over the valid tokens: tokens [B, T, D], lengths [B] or None -> [B, D]."""
    if lengths is None:
        return tokens.mean(1)
    valid = padding_mask(lengths.to(tokens.device), tokens.shape[1]).to(tokens.dtype).unsqueeze(-1)  # [B, T, 1]
    return (tokens * valid).sum(1) / valid.sum(1).clamp_min(1)


def token_sample(tokens: Tensor, lengths: Tensor | None = None, n: int = 256) -> Tensor:
    """Up to ``n`` valid tokens of the batch, evenly spaced over its valid positions in order (no random
    numbers): tokens [B, T, D] -> [min(n, valid), D]. What a frame-level method's collapse monitor reads: a
    mean over hundreds of frames is narrow around the batch's mean spectrum while every frame is still distinct."""
    flat = tokens.detach().flatten(0, 1)  # [B * T, D], a view: only the chosen rows are copied (every step)
    if lengths is None:
        pos = torch.arange(len(flat), device=flat.device)
    else:
        pos = padding_mask(lengths.to(tokens.device), tokens.shape[1]).flatten().nonzero().squeeze(1)
    if len(pos) > n:
        pos = pos[torch.linspace(0, len(pos) - 1, n, device=flat.device).long()]
    return flat[pos]


class ImageInput(nn.Module):
    """uint8 or [0, 1] float images -> normalized float, with the dataset's mean/std as buffers.

    The image encoders' front end: normalization lives inside the encoder, so a saved encoder embeds
    raw images with nothing else to remember.
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
    """Base for encoders: ``dim`` and ``forward(x, mask=None, lengths=None) -> Features``.

    ``embed`` is the convenience every evaluation uses: pooled features in eval mode.
    """

    dim: int

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Features:
        raise NotImplementedError  # pragma: no cover - abstract

    @torch.no_grad()
    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        was_training = self.training
        self.eval()
        out = self.forward(x, lengths=lengths).pooled
        self.train(was_training)
        return out
