"""Vision Transformer (ViT) behind the Encoder contract.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (arXiv:2010.11929). Presets as in
DeiT (Touvron et al. 2021) and MAE: ``vit_tiny`` 192-d x 12 blocks x 3 heads, ``vit_small`` 384-d x
12 x 6 heads, MLP ratio 4, pre-norm blocks, LayerNorm eps 1e-6 (``selfsup.encoders.transformer``).
``dim``, ``depth`` and ``heads`` override a preset; with ``dim`` set and ``heads`` left out, heads keep
64 channels (dim // 64, at least 1). Left unset on a CPU, ``dim`` and ``depth`` are the CPU size
(half the width, half the depth: ``vit_tiny`` 96-d x 6 blocks, ``vit_small`` 192-d x 6), so that a
budget of minutes trains hundreds of steps; on a GPU the preset.

Choices here:

* Patches: a ``patch_size`` x ``patch_size`` stride-``patch_size`` convolution (``patch_embed``);
  on a GPU 16 px above 64 px inputs, else 4 px (a 28 px Fashion-MNIST image is 7x7 patches); on a CPU
  a 4x4 grid for small images (``default_patch``).
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
* Parameter names: ``patch_embed``, ``cls_token``, ``transformer.blocks.{i}.*``, ``transformer.norm``
  (layer-wise lr decay in fine-tuning keys on ``blocks.{i}``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.spec import ImageSpec
from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.encoders.transformer import Transformer, keep_visible, sincos_2d
from selfsup.errors import UserError
from selfsup.registry import ENCODERS

PRESETS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6)}  # dim, depth, heads (the papers')
CPU_PRESETS = {"vit_tiny": (96, 6), "vit_small": (192, 6)}  # dim, depth on a CPU


@dataclass
class ViTParams:
    patch_size: int | None = None  # None: GPU 16 above 64 px, else 4; CPU: a 4x4 grid for small images (28 px: 7)
    dim: int | None = None  # None: the preset's (192 / 384) on a GPU, half of it on a CPU
    depth: int | None = None  # None: 12 on a GPU, 6 on a CPU
    heads: int | None = None  # None: the preset's; for another dim, dim // 64 (at least 1)
    SHOWN = ("dim", "depth", "patch_size")  # what tables print of the size

    def resolve(self, spec: ImageSpec, device_type: str, name: str = "vit_tiny") -> ViTParams:
        p_dim, p_depth, p_heads = PRESETS[name]
        c_dim, c_depth = (p_dim, p_depth) if device_type == "cuda" else CPU_PRESETS[name]
        dim = self.dim if self.dim is not None else c_dim
        depth = self.depth if self.depth is not None else c_depth
        heads = self.heads if self.heads is not None else (p_heads if dim == p_dim else max(1, dim // 64))
        patch = self.patch_size if self.patch_size is not None else default_patch(spec.size, device_type)
        for key, value in (("patch_size", patch), ("dim", dim), ("depth", depth), ("heads", heads)):
            if value < 1:
                raise UserError(f"encoder.{key}={value} must be a positive integer")
        if spec.size % patch:
            raise UserError(f"encoder.patch_size={patch} does not divide the image size {spec.size}; "
                            f"pass a divisor of {spec.size} with --patch-size (or change --image-size)")  # fmt: skip
        if dim % heads:
            raise UserError(f"encoder.heads={heads} does not divide encoder.dim={dim}; "
                            f"pass --set encoder.heads=N with N a divisor of {dim}")  # fmt: skip
        return ViTParams(patch, dim, depth, heads)

    def size_note(self, name: str, device_type: str) -> str | None:
        if device_type == "cuda" or (self.dim is not None and self.depth is not None):
            return None
        dim, depth = CPU_PRESETS[name]
        p_dim, p_depth, _ = PRESETS[name]
        return (f"encoder: {name} at {dim}-d x {depth} blocks for a CPU (the paper's {p_dim}-d x {p_depth}); "
                "set --set encoder.dim=N encoder.depth=N to choose another")  # fmt: skip


def default_patch(size: int, device_type: str) -> int:
    """The patch side when none is set. On a GPU, 16 above 64 px and 4 below (a 28 px image is 7x7
    patches). On a CPU, the largest divisor of the side up to 16 that leaves a grid of at least 4x4
    (28 px -> 7, 32 -> 8, 64 -> 16, 224 -> 16): 16 patches instead of 49 make each step several times
    cheaper, and MAE learned far more in minutes with them (docs/method-defaults.md)."""
    if device_type == "cuda":
        return 16 if size > 64 else 4
    return max([p for p in range(1, min(16, size // 4) + 1) if size % p == 0] or [1])


class VisionTransformer(Encoder):
    def __init__(self, spec: ImageSpec, patch_size: int = 16, dim: int = 192, depth: int = 12, heads: int = 3):
        super().__init__()
        in_channels, image_size = spec.channels, spec.size
        if image_size % patch_size:
            raise UserError(f"encoder.patch_size={patch_size} does not divide the image size {image_size}; "
                            f"pass a divisor of {image_size} with --patch-size (or change --image-size)")  # fmt: skip
        self.dim, self.depth, self.heads = dim, depth, heads
        self.patch_size, self.image_size = patch_size, image_size
        self.grid = image_size // patch_size  # patches per side
        self.num_patches = self.grid**2
        self.input = ImageInput(in_channels, list(spec.mean), list(spec.std))
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, self.grid))  # [1, 1 + N, D], fixed
        self.transformer = Transformer(dim, depth, heads)
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
        return self.transformer(torch.cat([cls, h], dim=1))  # [B, 1 + N_visible, D]

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Features:
        if lengths is not None:
            raise ValueError("a ViT takes whole images: no lengths")
        h = self.forward_features(x, mask)  # [B, 1 + N_visible, D]
        tokens = h[:, 1:]  # [B, N_visible, D]
        return Features(tokens=tokens, pooled=tokens.mean(1))


def _builder(name: str):
    def build(spec: ImageSpec, params: ViTParams) -> VisionTransformer:
        return VisionTransformer(spec, params.patch_size, params.dim, params.depth, params.heads)

    dim, depth, heads = PRESETS[name]
    build.Params, build.spec_kind, build.preset = ViTParams, "image", name
    build.__doc__ = f"{name}: {dim}-d, {depth} blocks, {heads} heads (the preset; see ViTParams for the CPU size)."
    return build


ENCODERS.register("vit_tiny")(_builder("vit_tiny"))
ENCODERS.register("vit_small")(_builder("vit_small"))
