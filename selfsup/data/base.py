"""The dataset contract shared by every image source."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageDataset:
    """Decoded images, kept as uint8 ``[N, C, H, W]`` (memory-mapped where cached).

    Labels live beside the images, never inside them, so pretraining cannot
    see them. ``test_*`` is None for data without a held-out split.
    """

    name: str
    train_x: np.ndarray  # uint8 [N, C, H, W]
    train_y: np.ndarray | None  # int64 [N]
    test_x: np.ndarray | None = None  # uint8 [M, C, H, W]
    test_y: np.ndarray | None = None  # int64 [M]
    classes: list[str] = field(default_factory=list)
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # optional attributes per sample

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.train_x.shape[0])
