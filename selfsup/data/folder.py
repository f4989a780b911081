"""Load a folder of image files into an :class:`ImageDataset`, decoded once and cached.

Layouts (files are searched recursively; names starting with '.' are ignored):

* ``PATH/train/<class>/...`` and ``PATH/test/<class>/...``: labelled, splits used as given;
  the class list comes from ``train`` and a class found only in ``test`` is an error.
* ``PATH/<class>/...`` with at least two class folders (every image below a direct
  sub-folder): labelled, classes are the sorted folder names, and a seeded, stratified
  ``test_fraction`` of each class is held out (at least one image per class of >= 2 images).
* anything else (flat, a single sub-folder, or images at mixed depths): unlabeled,
  no test split, no classes.

Every image is converted to 8 bit: alpha (LA, RGBA, palette transparency) is composited on
white, 16-bit data is divided by 257 (scaled by its bit depth, never clipped), CMYK/YCbCr
become RGB and EXIF orientation is applied. If every image is grayscale-like the dataset
has one channel, otherwise three (gray images are replicated).

Size: ``image_size`` if given; otherwise the images keep their own size when every one is at most
64 px on its shorter side (the largest such side is used), and larger ones are resized to 64 px.

Resizing: the centred square of side ``min(width, height)`` is resampled to
``image_size x image_size`` with an antialiased bicubic filter (Pillow's ``reduce`` first
for large downscales, JPEG DCT scaling via ``draft``). This equals resizing the shorter side
to ``image_size`` and then center-cropping.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from selfsup.data.base import Dataset, Split
from selfsup.data.cache import cache_dir, load_array, save_array
from selfsup.data.image import DEFAULT_FOLDER_SIZE, image_spec
from selfsup.data.splits import stratified_holdout
from selfsup.errors import UserError

CACHE_VERSION = 1
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS"}


def list_files(root: Path) -> list[str]:
    """Relative POSIX paths of every non-hidden file below ``root``, sorted."""
    found, seen = [], {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirnames):  # follow symlinked folders, but each real folder only once
            real = os.path.realpath(os.path.join(dirpath, d))
            if not d.startswith(".") and real not in seen:
                seen.add(real)
                kept.append(d)
        dirnames[:] = kept
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and os.path.isfile(os.path.join(dirpath, name)):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def _cache_key(root: Path, files: list[str], image_size: int | None, strict: bool, seed: int,
               test_fraction: float) -> str:  # fmt: skip
    entries = []
    for rel in files:
        st = (root / rel).stat()
        entries.append([rel, st.st_size, st.st_mtime_ns])
    payload = [CACHE_VERSION, str(root), image_size, entries, strict, seed, test_fraction]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _to_8bit(im: Image.Image) -> np.ndarray:
    """Integer or float single-channel image -> uint8 array, scaled by its bit depth."""
    data = np.asarray(im)
    if im.mode == "F":
        data = data.astype(np.float64)
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
        if lo >= 0.0 and hi <= 1.0:
            scaled = data * 255.0
        else:  # arbitrary range: stretch min..max to 0..255
            scaled = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
        return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
    if im.mode.startswith("I;16"):
        bits = 16
    else:  # mode "I": 32-bit container; trust the TIFF bit depth, else 16 bit if the values fit
        tag = getattr(im, "tag_v2", None)
        declared = tag.get(258) if tag is not None else None
        declared = declared[0] if isinstance(declared, tuple) else declared
        if declared and int(declared) <= 16:
            bits = int(declared)
        else:
            bits = 16 if data.size == 0 or int(data.max()) <= 65535 else 31
    scale = (2**bits - 1) / 255.0
    return np.clip(np.round(data.astype(np.float64) / scale), 0, 255).astype(np.uint8)


def _on_white(data: np.ndarray) -> np.ndarray:
    """Composite ``[..., colour + alpha]`` uint8 data on a white background."""
    alpha = data[..., -1:].astype(np.float32) / 255.0
    out = data[..., :-1].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _canonical(im: Image.Image) -> Image.Image:
    """Any Pillow image -> an 8-bit 'L' or 'RGB' image with alpha composited on white."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("LA", "La"):
        return Image.fromarray(_on_white(np.asarray(im.convert("LA")))[..., 0], "L")
    if mode == "I" or mode == "F" or mode.startswith("I;16"):
        return Image.fromarray(_to_8bit(im), "L")
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        return Image.fromarray(_on_white(np.asarray(im.convert("RGBA"))), "RGB")
    return im.convert("RGB")  # P, CMYK, YCbCr, RGBX, HSV, ...


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, bool, str]:
    """Returns (HxW or HxWx3 uint8 array, is_gray, error). On failure the array is None."""
    try:
        with Image.open(path) as im:
            gray = im.mode in GRAY_MODES
            if im.format == "JPEG":
                im.draft(None, (size, size))  # DCT downscale, both sides stay >= size
            im.load()
            with contextlib.suppress(Exception):  # a damaged EXIF block should not lose a readable image
                im = ImageOps.exif_transpose(im)
            im = _canonical(im)
            w, h = im.size
            if w < 1 or h < 1:
                raise ValueError("image has no pixels")
            m = min(w, h)
            box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
            out = im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)
            return np.asarray(out, dtype=np.uint8).copy(), gray, ""
    except Exception as exc:  # noqa: BLE001 - Pillow raises many exception types on corrupt data
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return None, False, reason


def _layout(
    root: str, rels: list[str], test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, list[str]]:
    """(train indices, train labels, test indices, test labels, classes) for the readable images."""
    parts = [rel.split("/") for rel in rels]
    everything = np.arange(len(rels))
    tops = {p[0] for p in parts if len(p) >= 2}
    if {"train", "test"} <= tops:
        outside = [rel for rel, p in zip(rels, parts) if len(p) < 3 or p[0] not in ("train", "test")]
        if outside:
            raise UserError(
                f"{os.path.join(root, outside[0])} lies outside {root}/train/<class>/ and {root}/test/<class>/; "
                "move every image into a class folder under train/ and test/ (or rename those folders)"
            )
        classes = sorted({p[1] for p in parts if p[0] == "train"})
        unknown = sorted({p[1] for p in parts if p[0] == "test"} - set(classes))
        if unknown:
            raise UserError(
                f"{root}/test holds class folder(s) {', '.join(unknown)} that {root}/train lacks; "
                "add training images for them or remove them from test/"
            )
        lookup = {c: i for i, c in enumerate(classes)}
        labels = np.array([lookup[p[1]] for p in parts], dtype=np.int64)
        is_test = np.array([p[0] == "test" for p in parts], dtype=bool)
    elif all(len(p) >= 2 for p in parts) and len(tops) >= 2:
        classes = sorted(tops)
        lookup = {c: i for i, c in enumerate(classes)}
        labels = np.array([lookup[p[0]] for p in parts], dtype=np.int64)
        is_test = stratified_holdout(labels, test_fraction, seed)
    else:
        return everything, None, None, None, []
    train, test = everything[~is_test], everything[is_test]
    if len(train) == 0:
        raise UserError(f"{root} has no readable training images; add images under its class folders")
    if len(test) == 0:
        return train, labels[train], None, None, classes
    return train, labels[train], test, labels[test], classes


def _skipped_line(name: str, count: int, total: int, examples: list[str]) -> str:
    shown = ", ".join(os.path.join(name, rel) for rel in examples[:3])
    return f"skipped {count} of {total} files that are not readable images, e.g. {shown}"


def _load_cached(folder: Path) -> tuple[dict, dict[str, np.ndarray | None]] | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: load_array(folder / f"{name}.npy") if name in meta["arrays"] else None for name in ARRAYS}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged cache entry: rebuild it
    return meta, arrays


def _write_cache(folder: Path, arrays: dict[str, np.ndarray | None], meta: dict) -> None:
    for name, array in arrays.items():
        if array is not None:
            save_array(folder / f"{name}.npy", array)
    tmp = folder / f"meta.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "meta.json")  # written last: its presence marks a complete entry


def _native_size(root: Path, files: list[str]) -> int:
    """The side a folder's images are cached at when none is asked for: the largest shorter side among
    them when every image is at most DEFAULT_FOLDER_SIZE (small images are not upsampled), else the
    default. Reads only the headers; unreadable files are left to the decoder to skip or report."""
    largest = 0
    for rel in files:
        try:
            with Image.open(root / rel) as im:
                side = min(im.size)
        except Exception:  # noqa: BLE001 - not an image, or damaged: the decode pass reports it
            continue
        if side > DEFAULT_FOLDER_SIZE:
            return DEFAULT_FOLDER_SIZE
        largest = max(largest, side)
    return largest or DEFAULT_FOLDER_SIZE


def load_image_folder(
    path: str | os.PathLike,
    image_size: int | None = None,
    strict: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
    log: Callable[[str], object] = print,
) -> Dataset:
    """Decode a folder of images (see the module docstring for layouts and conversions).

    Unreadable files are skipped and reported in one ``log`` line, or raise
    :class:`UserError` with ``strict=True``. Results are cached under
    ``cache_dir()/folders/<key>`` and memory-mapped on later calls; the key covers the
    folder, every file's relative path, size and mtime, and all arguments but ``log``.
    """
    name = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"image folder {name} does not exist; check the path")
    if not root.is_dir():
        raise UserError(f"{name} is not a folder; pass a folder of images (one sub-folder per class for labels)")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    root = root.resolve()
    files = list_files(root)
    if not files:
        raise UserError(_no_images(name, 0))

    folder = cache_dir() / "folders" / _cache_key(root, files, image_size, strict, seed, float(test_fraction))
    cached = _load_cached(folder)
    if cached is None and image_size is not None:  # decoded before at its native size, which is this one?
        key = _cache_key(root, files, None, strict, seed, float(test_fraction))
        native = _load_cached(cache_dir() / "folders" / key)
        cached = native if native is not None and native[0].get("size") == image_size else None
    if cached is None:
        size = _native_size(root, files) if image_size is None else image_size  # the key keeps None: scan once
        arrays, meta = _decode_all(root, name, files, size, strict, seed, float(test_fraction))
        _write_cache(folder, arrays, meta)
        cached = _load_cached(folder) or (meta, arrays)  # memory-mapped, exactly as a later call sees it
    meta, arrays = cached
    if meta["skipped"]:
        log(_skipped_line(name, meta["skipped"], meta["total"], meta["skipped_examples"]))
    a = arrays
    test = Split(a["test_x"], a["test_y"]) if a["test_x"] is not None else None
    return Dataset(name, image_spec(a["train_x"]), Split(a["train_x"], a["train_y"]), test, list(meta["classes"]))


def _no_images(name: str, unreadable: int) -> str:
    found = f" ({unreadable} unreadable files)" if unreadable else ""
    return (
        f"{name} holds no readable images{found}; add PNG/JPEG/BMP/GIF/WebP/TIFF files to it "
        "(searched recursively, hidden files ignored) or pass another folder"
    )


def _decode_all(
    root: Path, name: str, files: list[str], image_size: int, strict: bool, seed: int, test_fraction: float
) -> tuple[dict[str, np.ndarray | None], dict]:
    """Decode every file in order, then stack, label and split the readable ones."""
    workers = max(1, min(8, os.cpu_count() or 1))
    images, grays, rels, skipped = [], [], [], []
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for rel, (array, gray, error) in zip(files, pool.map(lambda r: _decode(root / r, image_size), files)):
            if array is None:
                if strict:
                    raise UserError(
                        f"{os.path.join(name, rel)} is not a readable image ({error}); "
                        "remove it or drop --strict to skip unreadable files"
                    )
                skipped.append(rel)
                continue
            images.append(array)
            grays.append(gray)
            rels.append(rel)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if not images:
        raise UserError(_no_images(name, len(skipped)))

    channels = 1 if all(grays) else 3
    train, train_y, test, test_y, classes = _layout(name, rels, test_fraction, seed)

    def stack(indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), channels, image_size, image_size), dtype=np.uint8)
        for row, i in enumerate(indices):
            array = images[i]
            out[row] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # gray broadcasts to 3
        return out

    arrays = {
        "train_x": stack(train),
        "train_y": train_y,
        "test_x": stack(test) if test is not None else None,
        "test_y": test_y,
    }
    meta = {
        "version": CACHE_VERSION,
        "size": image_size,
        "classes": classes,
        "skipped": len(skipped),
        "skipped_examples": skipped[:3],
        "total": len(files),
        "arrays": [k for k, v in arrays.items() if v is not None],
    }
    return arrays, meta
