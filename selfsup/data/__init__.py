"""Datasets: named ones from the registry, or a user's folder of images.

``load_dataset`` returns a :class:`Dataset` (splits, labels, lengths, groups and a spec);
``raw_features`` is each modality's raw-input baseline for the probes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from selfsup.data import named as _named  # noqa: F401  (registers the named datasets)
from selfsup.data.base import Dataset, SequenceLabels, Split
from selfsup.data.image import image_spec, raw_image_features
from selfsup.data.spec import ImageSpec, spec_from_dict, spec_to_dict
from selfsup.data.splits import balanced_subset, stratified_holdout, validation_split
from selfsup.errors import UserError
from selfsup.registry import DATASETS

FETCHERS = {"fashion-mnist": _named.fetch_fashion_mnist}


def load_dataset(name: str, image_size: int | None = None, limit: int | None = None, strict: bool = False,
                 log=print) -> Dataset:  # fmt: skip
    """A registered name (``fashion-mnist``, ``digits``) or a path to a folder of images.

    ``limit`` keeps the first N training samples (the spec's statistics are those of the kept ones)."""
    if name in DATASETS:
        ds = DATASETS.get(name)(image_size=image_size)
    elif Path(name).expanduser().exists() or "/" in name or name.startswith("."):
        from selfsup.data.folder import load_image_folder

        ds = load_image_folder(Path(name).expanduser(), image_size=image_size, strict=strict, log=log)
    else:
        DATASETS.get(name)  # raises: unknown dataset, with the known names
    if limit is not None:
        if limit < 1:
            raise UserError(f"data.limit={limit} must be at least 1")
        ds.train = ds.train.head(limit)
        ds.spec = image_spec(ds.train.x)
    if len(ds) == 0:
        raise UserError(f"dataset {name!r} is empty; point --data at a folder with images")
    return ds


def raw_features(spec, x, lengths: np.ndarray | None = None) -> torch.Tensor:
    """The raw-input baseline of a modality as float features [N, D] (pixels for images)."""
    if isinstance(spec, ImageSpec):
        return raw_image_features(x)
    raise NotImplementedError(f"no raw-input baseline for {spec.kind} data yet")


def fetch(name: str, log=print) -> None:
    """``selfsup data get NAME``: the one command allowed to reach the network."""
    if name in FETCHERS:
        FETCHERS[name](log=log)
    else:
        ds = load_dataset(name, log=log)
        test = f", {len(ds.test)} test" if ds.test is not None else ""
        log(f"{name}: {len(ds)} train samples cached{test}")


__all__ = ["Dataset", "ImageSpec", "SequenceLabels", "Split", "balanced_subset", "fetch", "image_spec",
           "load_dataset", "raw_features", "spec_from_dict", "spec_to_dict", "stratified_holdout",
           "validation_split"]  # fmt: skip
