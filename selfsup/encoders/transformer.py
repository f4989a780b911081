"""The one transformer of the library: pre-norm blocks on ``scaled_dot_product_attention``, a key-padding
mask from ``lengths``, a causal flag, and MAE-style dropping of masked tokens. The ViT uses it now; the
text, speech and sequence encoders use the same module.

Blocks as in ViT / GPT-2 / BERT-style pre-norm models: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``,
MLP ratio 4 with GELU, LayerNorm eps 1e-6; a final LayerNorm after the stack. Initialization as MAE's
reference code (xavier-uniform linears, zero biases, LayerNorm 1 / 0). Parameter names
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.0,mlp.2}`` and ``norm`` (layer-wise lr decay in fine-tuning
keys on ``blocks.{i}``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.base import padding_mask
from selfsup.errors import UserError


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """positions [M] -> [M, dim]: sin of dim/2 frequencies 1/10000^(k/(dim/2)), then their cos."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))  # [dim/2]
    angles = positions.double()[:, None] * omega[None]  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sine-cosine position embedding [1, (1 +) grid*grid, dim] (row-major patches).

    The first dim/2 channels encode the row, the last dim/2 the column; a class token gets zeros."""
    if dim % 4:
        raise UserError(f"encoder.dim={dim} must be a multiple of 4 (2-D sine-cosine position embedding); "
                        "pass --set encoder.dim=N with N a multiple of 4")  # fmt: skip
    pos = torch.arange(grid)
    rows, cols = pos.repeat_interleave(grid), pos.repeat(grid)  # [grid*grid] each
    emb = torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1)  # [grid*grid, dim]
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb])
    return emb.float().unsqueeze(0)


def init_weights(module: nn.Module) -> None:
    """MAE's initialization: xavier-uniform linears with zero bias, LayerNorm 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def attention_mask(lengths: Tensor | None, T: int, causal: bool, device) -> Tensor | None:
    """bool [B or 1, 1, T, T] (True = may attend) for key padding and/or causality; None for neither."""
    mask = None
    if lengths is not None:
        mask = padding_mask(lengths.to(device), T)[:, None, None, :]  # [B, 1, 1, T]
    if causal:
        tri = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]  # [1, 1, T, T]
        mask = tri if mask is None else mask & tri
    return mask


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise UserError(f"encoder.heads={heads} does not divide encoder.dim={dim}; "
                            f"pass --set encoder.heads=N with N a divisor of {dim}")  # fmt: skip
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """x [B, T, D]; attn_mask bool broadcastable to [B, h, T, T] (True = attend) -> [B, T, D]."""
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [3, B, h, T, d]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask,
                                             is_causal=causal and attn_mask is None)  # [B, h, T, d]
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); MLP ratio 4, GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask, causal)  # [B, T, D]
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` pre-norm blocks and a final LayerNorm over token embeddings [B, T, D].

    ``lengths`` [B] masks padded keys (positions ``>= lengths[b]``; their outputs are computed but
    meaningless); ``causal`` lets position t attend to positions <= t only.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim, self.depth, self.heads = dim, depth, heads
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_weights(self)

    def forward(self, h: Tensor, lengths: Tensor | None = None, causal: bool = False) -> Tensor:
        mask = attention_mask(lengths, h.shape[1], causal and lengths is not None, h.device)
        for block in self.blocks:
            h = block(h, mask, causal and lengths is None)
        return self.norm(h)


def keep_visible(x: Tensor, mask: Tensor) -> Tensor:
    """Drop the masked tokens: x [B, N, D], mask bool [B, N] (True = masked, the same count per row)
    -> [B, N_visible, D], visible tokens in their original order."""
    B, N, D = x.shape
    if mask.shape != (B, N) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool [{B}, {N}], got {mask.dtype} {tuple(mask.shape)}")
    visible = ~mask
    n, most = torch.stack(torch.aminmax(visible.sum(1))).tolist()  # one host sync for both checks
    if n == 0 or n != most:
        raise ValueError("mask must leave the same, non-zero number of visible tokens in every row")
    return x[visible].view(B, n, D)


__all__ = ["Attention", "Block", "Transformer", "attention_mask", "init_weights", "keep_visible", "sincos_1d",
           "sincos_2d"]  # fmt: skip
