"""The dataset contract every modality follows: splits of samples, labels, lengths, groups and a spec.

A sample's array type belongs to its modality (uint8 images ``[N, C, H, W]``, token ids, and ragged int16
waveforms in ``audio.Waveforms``). Labels live beside the samples, never inside them, so
pretraining cannot see them. Nothing outside ``data/`` and ``views/`` looks at what a sample is:
the rest of the library uses ``len``, ``take``, ``head``, ``y``, ``lengths``, ``groups`` and the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SequenceLabels:
    """One label sequence per sample (e.g. a CTC transcript), stored flat with offsets:
    sample i's labels are ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray  # int64 [total]
    offsets: np.ndarray  # int64 [N + 1], offsets[0] == 0, non-decreasing

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.int64)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0:
            raise ValueError("SequenceLabels.offsets must be 1-d and start at 0")
        if np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != len(self.values):
            raise ValueError("SequenceLabels.offsets must be non-decreasing and end at len(values)")

    @classmethod
    def from_lists(cls, sequences: list) -> SequenceLabels:
        lengths = [len(s) for s in sequences]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if sequences else np.zeros(0)
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, idx: np.ndarray) -> SequenceLabels:
        return SequenceLabels.from_lists([self[int(i)] for i in np.asarray(idx)])


def _take(a, idx: np.ndarray):
    if a is None:
        return None
    if isinstance(a, SequenceLabels):
        return a.take(idx)
    return np.asarray(a[idx])


@dataclass
class Split:
    """One split: samples ``x`` (``len(x) == N``), labels ``y`` (class ids [N] or ``SequenceLabels``, or
    None), ``lengths`` [N] for variable-length samples (None: all the same length), and ``groups``:
    per-sample attributes such as speaker or accent (each an array [N]) for audits."""

    x: Any
    y: np.ndarray | SequenceLabels | None = None
    lengths: np.ndarray | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx) -> Split:
        """The samples at ``idx`` (an index array), loaded into memory, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        x = self.x[idx]
        x = x if getattr(x, "ragged", False) else np.asarray(x)  # a ragged container (audio.Waveforms) stays one
        return Split(x, _take(self.y, idx), _take(self.lengths, idx),
                     {k: np.asarray(v)[idx] for k, v in self.groups.items()})  # fmt: skip

    def head(self, n: int) -> Split:
        """The first ``n`` samples; memory-mapped arrays stay memory-mapped."""
        y = self.y.take(np.arange(min(n, len(self.y)))) if isinstance(self.y, SequenceLabels) else (
            None if self.y is None else self.y[:n])  # fmt: skip
        return Split(self.x[:n], y, None if self.lengths is None else self.lengths[:n],
                     {k: v[:n] for k, v in self.groups.items()})  # fmt: skip


@dataclass
class Dataset:
    """A named dataset: its ``spec``, a ``train`` split (pretraining reads only its samples) and an
    optional labelled ``test`` split; ``classes`` names the class ids of ``y``. The validation split
    is carved from labelled train by evaluation (``selfsup.data.splits.stratified_holdout``)."""

    name: str
    spec: Any
    train: Split
    test: Split | None = None
    classes: list[str] = field(default_factory=list)
    tokenizer: Any = None  # token rows: the tokenizers.Tokenizer that made them

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labelled(self) -> bool:
        return self.train.y is not None and self.test is not None and self.test.y is not None

    def __len__(self) -> int:
        return len(self.train)

    # read-only shortcuts for the common single-array case
    @property
    def train_x(self):
        return self.train.x

    @property
    def train_y(self):
        return self.train.y

    @property
    def test_x(self):
        return None if self.test is None else self.test.x

    @property
    def test_y(self):
        return None if self.test is None else self.test.y


__all__ = ["Dataset", "SequenceLabels", "Split"]
