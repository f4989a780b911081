"""Vision Transformer (ViT) behind the Encoder contract.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (arXiv:2010.11929). Presets as in
DeiT (Touvron et al. 2021) and MAE: ``vit_tiny`` 192-d x 12 blocks x 3 heads, ``vit_small`` 384-d x
12 x 6 heads, MLP ratio 4, pre-norm blocks, LayerNorm eps 1e-6. ``dim``, ``depth`` and ``heads``
override a preset; with ``dim`` set and ``heads`` left out, heads keep 64 channels (dim // 64, at least 1).

Choices here:

* Patches: a ``patch_size`` x ``patch_size`` stride-``patch_size`` convolution (``patch_embed``);
  16 px above 64 px inputs, else 4 px (a 28 px Fashion-MNIST image is 7x7 patches, a 32 px one 8x8).
* Position embedding: fixed 2-D sine-cosine (``pos_embed``, a buffer, not learned), as MAE uses it;
  half the channels encode the patch row, half the column; the class token's is zero. At an input
  resolution other than ``image_size`` the patch grid is resampled bicubically (as DINO does for
  its local crops), so the same weights embed 96 px crops and 224 px images.
* Masking: ``forward(x, mask)`` takes ``mask`` bool [B, N], True = masked, the same count per row;
  masked patches are dropped before the blocks (MAE), so they see 1 + N_visible tokens.
* Output: ``tokens`` are the visible patch tokens after the final norm (no class token) and
  ``pooled`` is their mean. MAE's loss is on patch tokens only, so their mean is the usual kNN /
  linear-probe feature for it (MAE's fine-tuning code also averages by default); contrastive
  methods train it directly. The class token is still there, attended to by every patch, for
  methods that want it (``forward_features`` returns it first).
* Initialization as MAE's reference code: xavier-uniform linears (the patch convolution too,
  seen as a linear), class token N(0, 0.02), LayerNorms at 1 / 0.
* Parameter names: ``patch_embed``, ``cls_token``, ``blocks.{i}.*``, ``norm`` (layer-wise lr decay
  in fine-tuning keys on ``blocks.{i}``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.errors import UserError
from selfsup.registry import ENCODERS

PRESETS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6)}  # dim, depth, heads


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


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [3, B, h, T, d]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, h, T, d]
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

    def forward(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, T, D]
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


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


def keep_visible(x: Tensor, mask: Tensor) -> Tensor:
    """Drop the masked tokens: x [B, N, D], mask bool [B, N] (True = masked, the same count per row)
    -> [B, N_visible, D], visible tokens in their original (row-major patch) order."""
    B, N, D = x.shape
    if mask.shape != (B, N) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool [{B}, {N}], got {mask.dtype} {tuple(mask.shape)}")
    visible = ~mask
    n, most = torch.stack(torch.aminmax(visible.sum(1))).tolist()  # one host sync for both checks
    if n == 0 or n != most:
        raise ValueError("mask must leave the same, non-zero number of visible patches in every row")
    return x[visible].view(B, n, D)


class VisionTransformer(Encoder):
    def __init__(self, in_channels: int = 3, image_size: int = 224, patch_size: int = 16, dim: int = 192,
                 depth: int = 12, heads: int = 3, mean: float | list[float] = 0.5,
                 std: float | list[float] = 0.25):  # fmt: skip
        super().__init__()
        if image_size % patch_size:
            raise UserError(f"encoder.patch_size={patch_size} does not divide the image size {image_size}; "
                            f"pass a divisor of {image_size} with --patch-size (or change --image-size)")  # fmt: skip
        if dim % heads:
            raise UserError(f"encoder.heads={heads} does not divide encoder.dim={dim}; "
                            f"pass --set encoder.heads=N with N a divisor of {dim}")  # fmt: skip
        self.dim, self.depth, self.heads = dim, depth, heads
        self.patch_size, self.image_size = patch_size, image_size
        self.grid = image_size // patch_size  # patches per side
        self.num_patches = self.grid**2
        self.input = ImageInput(in_channels, mean, std)
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, self.grid))  # [1, 1 + N, D], fixed
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_weights(self)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    # ------------------------------------------------------------------ pieces methods reuse
    def patch_grid(self, x: Tensor) -> tuple[int, int]:
        """Patches per side (rows, columns) of an image batch [B, C, H, W]."""
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"input {H}x{W} is not a multiple of the patch size {p}")
        return H // p, W // p

    def patchify(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] -> patches [B, N, p*p*C] (row-major patches; pixels row, column, channel)."""
        B, C = x.shape[:2]
        gh, gw = self.patch_grid(x)
        p = self.patch_size
        x = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1)  # [B, gh, gw, p, p, C]
        return x.reshape(B, gh * gw, p * p * C)

    def unpatchify(self, patches: Tensor, gh: int, gw: int | None = None) -> Tensor:
        """Inverse of ``patchify``: [B, gh*gw, p*p*C] -> [B, C, gh*p, gw*p]."""
        gw = gh if gw is None else gw
        B, p = patches.shape[0], self.patch_size
        C = patches.shape[2] // (p * p)
        x = patches.reshape(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)  # [B, C, gh, p, gw, p]
        return x.reshape(B, C, gh * p, gw * p)

    def position_embedding(self, gh: int, gw: int) -> Tensor:
        """[1, 1 + gh*gw, D]: the stored embedding, resampled bicubically when the grid differs."""
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patches.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)  # [1, D, g, g]
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)  # [1, D, gh, gw]
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, self.dim)], dim=1)

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Images [B, C, H, W] (uint8 or [0, 1] float) -> [B, 1 + N_visible, D] after the final norm,
        class token first, then the visible patches in row-major order."""
        gh, gw = self.patch_grid(x)
        pos = self.position_embedding(gh, gw).to(x.device)  # [1, 1 + N, D]
        h = self.patch_embed(self.input(x)).flatten(2).transpose(1, 2)  # [B, N, D]
        h = h + pos[:, 1:]
        if mask is not None:
            h = keep_visible(h, mask)  # [B, N_visible, D]
        cls = (self.cls_token + pos[:, :1]).expand(h.shape[0], -1, -1)  # [B, 1, D]
        h = torch.cat([cls, h], dim=1)  # [B, 1 + N_visible, D]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:
        h = self.forward_features(x, mask)  # [B, 1 + N_visible, D]
        tokens = h[:, 1:]  # [B, N_visible, D]
        return Features(tokens=tokens, pooled=tokens.mean(1))


def _build(name: str, in_channels: int, image_size: int, patch_size: int | None, dim: int | None,
           depth: int | None, heads: int | None, mean, std) -> VisionTransformer:  # fmt: skip
    p_dim, p_depth, p_heads = PRESETS[name]
    if heads is None:  # the preset's heads; for another width, heads of 64 channels as both presets
        heads = p_heads if dim is None or dim == p_dim else max(1, dim // 64)
    patch = patch_size if patch_size is not None else (16 if image_size > 64 else 4)
    return VisionTransformer(in_channels, image_size, patch, dim or p_dim, depth or p_depth, heads, mean, std)


@ENCODERS.register("vit_tiny")
def vit_tiny(in_channels: int = 3, image_size: int = 224, patch_size: int | None = None, dim: int | None = None,
             depth: int | None = None, heads: int | None = None, mean: float | list[float] = 0.5,
             std: float | list[float] = 0.25) -> VisionTransformer:  # fmt: skip
    """ViT-Tiny: 192-d, 12 blocks, 3 heads (5.5 M parameters at patch 16)."""
    return _build("vit_tiny", in_channels, image_size, patch_size, dim, depth, heads, mean, std)


@ENCODERS.register("vit_small")
def vit_small(in_channels: int = 3, image_size: int = 224, patch_size: int | None = None, dim: int | None = None,
              depth: int | None = None, heads: int | None = None, mean: float | list[float] = 0.5,
              std: float | list[float] = 0.25) -> VisionTransformer:  # fmt: skip
    """ViT-Small: 384-d, 12 blocks, 6 heads (22 M parameters at patch 16)."""
    return _build("vit_small", in_channels, image_size, patch_size, dim, depth, heads, mean, std)
