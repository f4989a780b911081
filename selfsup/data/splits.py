"""Seeded, class-stratified splits: the test hold-out of a labelled folder, the validation split that
evaluation carves from labelled train, and the nested label fractions (1%, 10%, 100%) of the probes."""

from __future__ import annotations

import numpy as np

VALIDATION_FRACTION = 0.1  # of the labelled training split, per class (EvalConfig.val_fraction)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out samples: ``round(fraction * n_c)`` of each class c (at least one, and
    at least one left in) for classes of two or more samples; seeded, the classes in sorted order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return out
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        n = min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        out[rng.permutation(idx)[:n]] = True
    return out


def validation_split(labels: np.ndarray, fraction: float = VALIDATION_FRACTION, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(pool indices, validation indices) of a labelled training split: a seeded, class-stratified
    ``fraction`` goes to validation, the rest is the labelled pool the label fractions are drawn from."""
    held = stratified_holdout(labels, fraction, seed + 7919)  # its own stream, apart from other seeded draws
    return np.flatnonzero(~held), np.flatnonzero(held)


def balanced_subset(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Seeded, class-balanced indices: ``round(fraction * n_c)`` (at least 1) of each class c.

    The per-class order is fixed by the seed, so smaller fractions are subsets of larger ones.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        picked.append(idx[: max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(picked))


__all__ = ["VALIDATION_FRACTION", "balanced_subset", "stratified_holdout", "validation_split"]
