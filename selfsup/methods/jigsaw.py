"""Jigsaw: Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles.

Noroozi, Favaro, ECCV 2016 (arXiv:1603.09246).

Each image is cut into a 3x3 grid of cells; one tile is cropped at a random offset inside
each cell, so the gaps between tiles vary and edges do not line up. The nine tiles are put
in the order of a permutation drawn from a fixed set, every tile goes through the same
encoder (the paper's "context-free network": shared weights, one tile at a time; here the
nine tiles of the batch are one encoder batch), the tile features are concatenated in the
shuffled order and an MLP classifies which permutation of the set was applied
(cross-entropy). The permutation set is a registered int64 buffer (``permutations``), so it
is saved in the run's checkpoint with the weights.

Paper hyperparameters (ImageNet): images resized to 256, a random 225x225 crop cut into
75x75 cells with one 64x64 tile per cell; each tile normalized to its own mean and standard
deviation; colour shortcuts (chromatic aberration) countered with grayscale images and a
per-channel spatial jitter of the tiles of up to 2 px; 1000 permutations from the greedy
maximal-Hamming-distance algorithm; shared AlexNet-style layers per
tile with a 512-d fc6, concatenation, fc7 4096, fc8 over the permutation indices; SGD,
lr 0.01, batch 256, 350k iterations.

Defaults here differ for 28 px images, short budgets and a CPU:
* Tiles are cut from the crop upsampled ``canvas_scale`` = 3x (cells of 28 px, tiles of 24 px,
  each showing a third of the image side at 3x). At the native 28 px a tile is 8 px; the
  ResNet's last stage then works on a 1x1 map, where its 3x3 kernels only ever train their
  centre taps, while the whole 28 px images it embeds afterwards give it 4x4 maps. 8 px tiles
  did not reliably beat a random-init encoder, 16 px tiles (2x) barely, 24 px tiles (3x, last
  stage at 3x3) do (docs/method-defaults.md). A puzzle costs about 7 whole images. For a ViT
  the tile is rounded down to a multiple of its patch size.
* 100 permutations instead of 1000: a 100-way head learns within a few hundred steps. The
  greedy rule ranks candidates by their distance to the nearest chosen permutation first and
  the paper's summed distance second: the same average distance as the paper's rule alone
  (8.08), minimum pairwise distance 6 instead of 2 (``maximal_hamming_permutations``).
* The crop keeps 60-100% of the image (the paper's 225 of 256 px keeps 77%).
* Per-tile normalization is off by default (``tile_norm``): on these grayscale images with a
  black background, standardizing every tile shifts the encoder's input statistics away
  from the whole images it embeds afterwards; with it (8 px tiles) the encoder ended worse
  than at random init.
* The channel jitter is 1 px (the paper's 2 px on 64 px tiles, scaled to 24 px) and the
  grayscale mix (``grayscale_p``) is 0.3; both only apply to RGB images.
* The head is one MLP (9 x D -> 1024 -> permutations) on the encoder's pooled tile features;
  a shared per-tile fc layer before the concatenation (the paper's fc6, ``tile_fc``) made
  the features worse (8 px tiles), so it is off by default.
* SGD with Nesterov momentum, lr 0.3 x BatchSize/256 (the paper: 0.01 at 256 for 350k
  iterations), warm-up + cosine, on batches of 32 puzzles on a CPU: a short run needs the larger
  step (0.1 solved the puzzle as well but its features fell below a random init's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import UserError
from selfsup.methods.base import Output, mlp_head
from selfsup.registry import METHODS
from selfsup.views import random_grayscale, random_resized_crop, to_float
from selfsup.views.jigsaw import jigsaw_tiles, maximal_hamming_permutations, normalize_tiles, shuffle_tiles

GRID = 3  # 3x3 tiles, as the paper


@dataclass
class JigsawParams:
    num_permutations: int = 100
    permutation_seed: int = 0
    canvas_scale: float = 3.0  # tiles are cut from the crop resized to canvas_scale x image_size
    tile_fraction: float = 0.85  # tile side / cell side (the paper: 64 / 75)
    crop_scale_min: float = 0.6
    tile_norm: bool = False
    channel_jitter: int = 1  # RGB only
    grayscale_p: float = 0.3  # RGB only
    head_hidden: int = 1024
    tile_fc: int = 0  # > 0: a shared per-tile fc layer (the paper's fc6) of this width before the concatenation


@METHODS.register("jigsaw")
class Jigsaw(nn.Module):
    modality = "image"
    Params = JigsawParams
    defaults = {"optimizer": "sgd", "lr": 0.3, "weight_decay": 5e-4,  # lr per 256 puzzles
                "cpu_batch_size": 32}  # a puzzle costs ~7 images: 256 puzzles take ~6 s a step on 2 cores

    def __init__(self, encoder: nn.Module, params: JigsawParams, spec):
        super().__init__()
        self.encoder, self.params = encoder, params
        if not 2 <= params.num_permutations <= 362880:
            raise UserError(f"method.params.num_permutations={params.num_permutations} must be in 2..362880 (9!)")
        cell = max(1, round(params.canvas_scale * spec.size / GRID))
        self.canvas = GRID * cell
        self.tile = min(cell, max(1, round(params.tile_fraction * cell)))
        patch = getattr(encoder, "patch_size", 1)  # a ViT sees whole patches: tiles are a multiple of its patch
        if self.tile % patch:
            self.tile = max(patch, self.tile // patch * patch)
            if self.tile > cell:
                raise UserError(f"jigsaw cells of {cell} px are smaller than the encoder's {patch} px patches; "
                                "use a smaller --patch-size or a larger method.canvas_scale")  # fmt: skip
        perms = maximal_hamming_permutations(params.num_permutations, GRID * GRID, params.permutation_seed)
        self.register_buffer("permutations", perms)  # [P, 9] int64, saved with the checkpoint
        d = encoder.dim
        self.tile_head = nn.Identity()
        if params.tile_fc > 0:
            d = params.tile_fc
            self.tile_head = nn.Sequential(nn.Linear(encoder.dim, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(True))
        self.head = mlp_head(GRID * GRID * d, params.head_hidden, params.num_permutations)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """x uint8 [B, C, H, W] -> (tiles [9B, C, t, t], sample-major in shuffled order; labels [B])."""
        x = to_float(x)
        p = self.params
        canvas = random_resized_crop(x, self.canvas, scale=(p.crop_scale_min, 1.0), flip_p=0.5, generator=generator)
        rgb = canvas.shape[1] == 3
        if rgb and p.grayscale_p > 0:
            canvas = random_grayscale(canvas, p.grayscale_p, generator)
        tiles = jigsaw_tiles(canvas, self.tile, GRID, p.channel_jitter if rgb else 0, generator)  # [B, 9, C, t, t]
        if p.tile_norm:
            tiles = normalize_tiles(tiles, self.encoder.input.mean, self.encoder.input.std)
        labels = torch.randint(len(self.permutations), (x.shape[0],), generator=generator, device=x.device)  # [B]
        return shuffle_tiles(tiles, self.permutations, labels).flatten(0, 1), labels

    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        tiles, labels = batch
        B = labels.shape[0]
        h = self.encoder(tiles).pooled  # [9B, D]
        logits = self.head(self.tile_head(h).view(B, -1))  # [B, 9D] in shuffled order -> [B, P]
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return Output(loss, {"perm_acc": acc}, h.view(B, GRID * GRID, -1).mean(1).detach())
