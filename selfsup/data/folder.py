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

Groups (per-sample attributes for ``selfsup audit``): a ``groups.csv`` in the folder root, header
``file,<attr1>,<attr2>...`` and one row per image, ``file`` being its path relative to the root with forward
slashes (``train/cat/1.png``); each attribute becomes ``split.groups[attr]`` (strings). groups.csv is not an image
and is not read as one. It is read at every load (:func:`folder_groups`, shared with audio folders), so editing
it takes effect at once without decoding the images again; every mistake in it is a one-line error naming
groups.csv, the line and the fix.
"""

from __future__ import annotations

import contextlib
import csv
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
from selfsup.data.text import csv_rows
from selfsup.errors import UserError

CACHE_VERSION = 2  # 2: meta.json lists the files of each split (for groups.csv) and the skipped ones
GROUPS_FILE = "groups.csv"  # per-file groups in a folder's root: file,<attr1>,<attr2>...
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS"}


def data_files(root: Path) -> list[str]:
    """``list_files`` without the folder's ``groups.csv`` (metadata, never a sample)."""
    return [f for f in list_files(root) if f != GROUPS_FILE]


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


def _groups_error(path: Path, line: int | None, what: str) -> UserError:
    return UserError(f"{path}{f' line {line}' if line else ''} {what}")


def _groups_header(path: Path, rows) -> tuple[list[str], int]:
    """(the column names, the index of ``file``) of groups.csv's header row."""
    first = next(rows, None)
    if first is None:
        raise _groups_error(path, None, "is empty; write a header row file,<attr1>,... and one row per file")
    line, header = first[0], [c.strip() for c in first[1]]
    if "file" not in header:
        shown = ", ".join(repr(c) for c in header[:20])
        raise _groups_error(path, line, f"has no 'file' column (it has: {shown}); make the header row "
                            "file,<attr1>,<attr2>... with file the path relative to the folder")  # fmt: skip
    attrs = [c for c in header if c != "file"]
    if not attrs or any(not c for c in header) or len(set(header)) < len(header):
        raise _groups_error(path, line, "needs a header row file,<attr1>,<attr2>... of distinct, non-empty names "
                            f"(it has: {', '.join(repr(c) for c in header[:20])})")  # fmt: skip
    return header, header.index("file")


def folder_groups(root: Path, files: list[str], skipped: list[str] = (), what: str = "image"
                  ) -> dict[str, np.ndarray]:  # fmt: skip
    """``root/groups.csv`` -> {attr: str array [len(files)]}, in the order of ``files`` (the samples read, by
    relative POSIX path); {} when the folder has none. ``skipped``: files dropped as unreadable (a row naming one
    is an error that says so). Every file must have exactly one row; every mistake is a one-line UserError."""
    path = root / GROUPS_FILE
    if not path.is_file():
        return {}
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}); save it as UTF-8 CSV: file,<attr1>,... one row per file") \
            from None  # fmt: skip
    index = {rel: i for i, rel in enumerate(files)}
    dropped, seen = set(skipped), {}
    try:
        rows = csv_rows(text)
        header, i_file = _groups_header(path, rows)
        values = {c: [""] * len(files) for c in header if c != "file"}
        for line, row in rows:
            if len(row) != len(header):
                raise _groups_error(path, line, f"has {len(row)} fields and the header {len(header)}; give every row "
                                    "one value per column (quote a value that holds a comma)")  # fmt: skip
            rel = row[i_file].strip().replace("\\", "/").removeprefix("./")
            if rel in seen:
                raise _groups_error(path, line, f"names {rel!r} again (first on line {seen[rel]}); keep one row "
                                    "per file")  # fmt: skip
            seen[rel] = line
            if rel not in index:
                raise _groups_error(path, line, _not_a_sample(rel, files, dropped, what))
            for column, cell in zip(header, row):
                if column != "file":
                    if not cell.strip():
                        raise _groups_error(path, line, f"has no value for {column!r}; fill it in (every file needs "
                                            "a value for every attribute)")  # fmt: skip
                    values[column][index[rel]] = cell.strip()
    except csv.Error as e:
        raise _groups_error(path, None, f"is not valid CSV ({e}); fix the quoting") from None
    missing = [rel for rel in files if rel not in seen]
    if missing:
        more = f" and {len(missing) - 1} more {what} files" if len(missing) > 1 else ""
        raise _groups_error(path, None, f"has no row for {missing[0]!r}{more}; add one row per {what} file "
                            f"({missing[0]},<attr1>,...)")  # fmt: skip
    return {c: np.array(v, dtype=str) for c, v in values.items()}


def _not_a_sample(rel: str, files: list[str], dropped: set[str], what: str) -> str:
    """Why a groups.csv row naming ``rel`` names no sample, and the fix."""
    if rel in dropped:
        return (f"names {rel!r}, which was skipped when the folder was read (see the 'skipped' line); remove the "
                "row or fix the file")  # fmt: skip
    same = [f for f in files if f.rsplit("/", 1)[-1] == rel.rsplit("/", 1)[-1]]
    hint = f" (did you mean {same[0]!r}?)" if len(same) == 1 else ""
    return (f"names {rel!r}, which is not an {what} file of the folder{hint}; write each file's path relative to "
            "the folder with forward slashes, or remove the row")  # fmt: skip


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
    A ``groups.csv`` in the root gives ``split.groups`` (read at every load: see the module docstring).
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
    files = data_files(root)
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
    kept = meta["train_files"] + meta["test_files"]
    groups = folder_groups(root, kept, meta["skipped_files"], "image")
    n = len(meta["train_files"])
    train = Split(a["train_x"], a["train_y"], groups={k: v[:n] for k, v in groups.items()})
    test = Split(a["test_x"], a["test_y"], groups={k: v[n:] for k, v in groups.items()}) \
        if a["test_x"] is not None else None  # fmt: skip
    return Dataset(name, image_spec(a["train_x"]), train, test, list(meta["classes"]))


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
        "skipped_files": skipped,
        "train_files": [rels[i] for i in train],
        "test_files": [rels[i] for i in test] if test is not None else [],
        "total": len(files),
        "arrays": [k for k, v in arrays.items() if v is not None],
    }
    return arrays, meta
