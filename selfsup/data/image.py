"""What is particular to image data: its spec (shape and channel statistics) and its raw-input baseline."""

from __future__ import annotations

import numpy as np
import torch

from selfsup.data.spec import ImageSpec

STATS_SAMPLES = 10_000  # images the channel statistics are computed from (the first ones of train)
DEFAULT_FOLDER_SIZE = 64  # a folder's images are resized to this side unless all are smaller


def image_spec(train_x: np.ndarray) -> ImageSpec:
    """uint8 [N, C, H, W] -> ImageSpec with the per-channel mean and std (clamped at 1e-3) in [0, 1] units."""
    sample = torch.from_numpy(np.array(train_x[:STATS_SAMPLES])).float().div_(255)  # [n, C, H, W]
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return ImageSpec(int(train_x.shape[1]), int(train_x.shape[-1]), tuple(mean.tolist()), tuple(std.tolist()))


def raw_image_features(x: np.ndarray) -> torch.Tensor:
    """The raw-input baseline: pixels in [0, 1], flattened. uint8 [N, C, H, W] -> float [N, C*H*W]."""
    return torch.from_numpy(np.array(x)).flatten(1).float().div_(255)


__all__ = ["DEFAULT_FOLDER_SIZE", "image_spec", "raw_image_features"]
