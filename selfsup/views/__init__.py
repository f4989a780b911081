"""Batched, generator-driven data augmentation ("views") for self-supervised learning."""

from selfsup.views.image import (
    ImageAugment,
    all_rotations,
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    random_grayscale,
    random_resized_crop,
    rotate90,
)
from selfsup.views.jigsaw import (
    all_permutations,
    jigsaw_tiles,
    maximal_hamming_permutations,
    min_hamming_distance,
    normalize_tiles,
    shuffle_tiles,
)
from selfsup.views.masking import block_side, center_block_mask, dilate_mask, fill_masked, random_block_mask

__all__ = [
    "ImageAugment",
    "all_rotations",
    "color_jitter",
    "gaussian_blur",
    "horizontal_flip",
    "random_grayscale",
    "random_resized_crop",
    "rotate90",
    # jigsaw puzzles
    "all_permutations",
    "jigsaw_tiles",
    "maximal_hamming_permutations",
    "min_hamming_distance",
    "normalize_tiles",
    "shuffle_tiles",
    # block masks
    "block_side",
    "center_block_mask",
    "dilate_mask",
    "fill_masked",
    "random_block_mask",
]
