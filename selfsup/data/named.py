"""Named datasets: Fashion-MNIST (Debian files, torchvision's download) and digits."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from selfsup.data import debian
from selfsup.data.base import Dataset, Split
from selfsup.data.cache import cache_dir, load_array, save_array
from selfsup.data.image import image_spec
from selfsup.errors import UserError
from selfsup.registry import DATASETS

FMNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle boot"]  # fmt: skip
# sha256 of the decompressed IDX files (the canonical Zalando release)
FMNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_HOW_TO_GET = (
    "run `selfsup data get fashion-mnist` (it uses Debian's dataset-fashion-mnist package, "
    "`apt-get install dataset-fashion-mnist`, or torchvision's download where the internet is reachable)"
)


def _fmnist_sources() -> list[Path]:
    extra = os.environ.get("SELFSUP_FASHION_MNIST_DIR")
    dirs = [Path(extra)] if extra else []
    dirs += [DEBIAN_DIR, cache_dir() / "fashion-mnist" / "raw", cache_dir() / "FashionMNIST" / "raw"]
    return dirs


def _find_fmnist_raw() -> Path | None:
    for d in _fmnist_sources():
        if all((d / f"{name}.gz").is_file() or (d / name).is_file() for name in FMNIST_FILES):
            return d
    return None


def _read_idx(folder: Path, name: str) -> np.ndarray:
    gz, plain = folder / f"{name}.gz", folder / name
    raw = gzip.open(gz).read() if gz.is_file() else plain.read_bytes()
    if hashlib.sha256(raw).hexdigest() != FMNIST_FILES[name]:
        raise UserError(f"{gz if gz.is_file() else plain} fails its checksum; delete it and {_HOW_TO_GET}")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], antialiased bilinear, in chunks."""
    import torch
    import torch.nn.functional as F

    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.uint8)
    for i in range(0, len(x), 4096):
        t = torch.from_numpy(np.array(x[i : i + 4096])).float()
        r = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + 4096] = r.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _cached(name: str, size: int, build) -> dict[str, np.ndarray]:
    """Load ``name`` at ``size`` from the cache, or build the native arrays once and resize."""
    folder = cache_dir() / name / f"{size}px"
    keys = ("train_x", "train_y", "test_x", "test_y")
    if (folder / "done").is_file():
        return {k: load_array(folder / f"{k}.npy") for k in keys}
    arrays, native = build()
    if size != native:
        arrays = dict(arrays, train_x=_resize(arrays["train_x"], size), test_x=_resize(arrays["test_x"], size))
    for k in keys:
        save_array(folder / f"{k}.npy", arrays[k])
    (folder / "done").write_text(json.dumps({"size": size}))
    return {k: load_array(folder / f"{k}.npy") for k in keys}


def _dataset(name: str, a: dict[str, np.ndarray], classes: list[str]) -> Dataset:
    return Dataset(name, image_spec(a["train_x"]), Split(a["train_x"], a["train_y"]), Split(a["test_x"], a["test_y"]),
                   classes)  # fmt: skip


@DATASETS.register("fashion-mnist")
def fashion_mnist(image_size: int | None = None, **_) -> Dataset:
    """Zalando's Fashion-MNIST: 60,000 train / 10,000 test, 28x28 gray, 10 classes."""
    size = image_size or 28

    def build():
        raw = _find_fmnist_raw()
        if raw is None:
            raise UserError(f"Fashion-MNIST is not on this machine; {_HOW_TO_GET}")
        x_tr, y_tr = _read_idx(raw, "train-images-idx3-ubyte"), _read_idx(raw, "train-labels-idx1-ubyte")
        x_te, y_te = _read_idx(raw, "t10k-images-idx3-ubyte"), _read_idx(raw, "t10k-labels-idx1-ubyte")
        arrays = {"train_x": x_tr[:, None], "train_y": y_tr.astype(np.int64),
                  "test_x": x_te[:, None], "test_y": y_te.astype(np.int64)}  # fmt: skip
        return arrays, 28

    return _dataset("fashion-mnist", _cached("fashion-mnist", size, build), list(FMNIST_CLASSES))


@DATASETS.register("digits")
def digits(image_size: int | None = None, **_) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits; a seeded stratified 80/20 split."""
    size = image_size or 8

    def build():
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
        y = d.target.astype(np.int64)
        rng = np.random.default_rng(0)
        test = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            test[idx[: len(idx) // 5]] = True
        return {"train_x": x[~test], "train_y": y[~test], "test_x": x[test], "test_y": y[test]}, 8

    return _dataset("digits", _cached("digits", size, build), [str(i) for i in range(10)])


# ----------------------------------------------------------------------------- fetching


def fetch_fashion_mnist(log=print) -> Path:
    """The explicit data command: locate, or fetch, verify and cache Fashion-MNIST.

    Tries, in order: files already on this machine (Debian's package, the cache,
    ``$SELFSUP_FASHION_MNIST_DIR``); ``apt-get download dataset-fashion-mnist``
    unpacked without root; torchvision's canonical download.
    """
    found = _find_fmnist_raw()
    if found is None:
        found = _apt_download_fmnist(log) or _torchvision_download_fmnist(log)
    if found is None:
        raise UserError(f"could not fetch Fashion-MNIST: neither apt-get nor the internet answered; {_HOW_TO_GET}")
    ds = fashion_mnist()
    log(f"fashion-mnist: {len(ds)} train / {len(ds.test)} test images from {found}, verified and cached")
    return found


def _apt_download_fmnist(log) -> Path | None:
    if not debian.available():
        return None
    dest = cache_dir() / "fashion-mnist" / "raw"
    with tempfile.TemporaryDirectory() as tmp:
        log("fetching Debian's dataset-fashion-mnist with apt-get download ...")
        root = debian.apt_download("dataset-fashion-mnist", tmp)
        if root is None:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        for f in root.rglob("*-ubyte.gz"):
            shutil.copy(f, dest / f.name)
    return dest if _find_fmnist_raw() else None


def _torchvision_download_fmnist(log) -> Path | None:
    try:
        from torchvision.datasets import FashionMNIST

        log("fetching Fashion-MNIST with torchvision's download ...")
        FashionMNIST(str(cache_dir()), train=True, download=True)
        FashionMNIST(str(cache_dir()), train=False, download=True)
    except Exception:  # noqa: BLE001 - any failure here means "no internet"; the caller explains
        return None
    return cache_dir() / "FashionMNIST" / "raw"
