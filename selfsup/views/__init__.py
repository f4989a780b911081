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

__all__ = [
    "ImageAugment",
    "all_rotations",
    "color_jitter",
    "gaussian_blur",
    "horizontal_flip",
    "random_grayscale",
    "random_resized_crop",
    "rotate90",
]
