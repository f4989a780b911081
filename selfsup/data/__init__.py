"""Datasets: named ones from the registry, or a user's folder of images."""

from __future__ import annotations

from pathlib import Path

from selfsup.data import named as _named  # noqa: F401  (registers the named datasets)
from selfsup.data.base import ImageDataset
from selfsup.errors import UserError
from selfsup.registry import DATASETS

FETCHERS = {"fashion-mnist": _named.fetch_fashion_mnist}


def load_dataset(name: str, image_size: int | None = None, limit: int | None = None, strict: bool = False,
                 log=print) -> ImageDataset:  # fmt: skip
    """A registered name (``fashion-mnist``, ``digits``) or a path to a folder of images."""
    if name in DATASETS:
        ds = DATASETS.get(name)(image_size=image_size)
    elif Path(name).expanduser().exists() or "/" in name or name.startswith("."):
        from selfsup.data.folder import load_image_folder

        ds = load_image_folder(Path(name).expanduser(), image_size=image_size or 64, strict=strict, log=log)
    else:
        DATASETS.get(name)  # raises: unknown dataset, with the known names
    if limit is not None:
        if limit < 1:
            raise UserError(f"data.limit={limit} must be at least 1")
        ds.train_x = ds.train_x[:limit]
        ds.train_y = None if ds.train_y is None else ds.train_y[:limit]
    if len(ds) == 0:
        raise UserError(f"dataset {name!r} is empty; point --data at a folder with images")
    return ds


def fetch(name: str, log=print) -> None:
    """``selfsup data get NAME``: the one command allowed to reach the network."""
    if name in FETCHERS:
        FETCHERS[name](log=log)
    else:
        ds = load_dataset(name, log=log)
        log(f"{name}: {len(ds)} train images cached" + (f", {len(ds.test_x)} test" if ds.test_x is not None else ""))


__all__ = ["ImageDataset", "load_dataset", "fetch"]
