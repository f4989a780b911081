"""Tests for selfsup.data.folder: layouts, image modes, resizing, bad files and the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from selfsup.data.folder import load_image_folder
from selfsup.errors import UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))


def _save(path: Path, im: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kwargs)
    return path


def _solid(colour, size=(12, 10), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


class Log(list):
    def __call__(self, line):
        self.append(line)


COLOURS = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}


def test_class_folders_give_labels_and_stratified_split(tmp_path):
    root = tmp_path / "data"
    for cls, n in {"a": 10, "b": 5, "c": 1}.items():
        for i in range(n):
            _save(root / cls / f"{i}.png", _solid(COLOURS[cls]))
    ds = load_image_folder(root, image_size=8, test_fraction=0.2, seed=3)
    assert ds.classes == ["a", "b", "c"]
    assert ds.name == str(root)
    assert ds.train_x.shape == (13, 3, 8, 8) and ds.test_x.shape == (3, 3, 8, 8)
    assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    assert np.bincount(ds.train_y, minlength=3).tolist() == [8, 4, 1]
    assert np.bincount(ds.test_y, minlength=3).tolist() == [2, 1, 0]
    for x, y in [(ds.train_x, ds.train_y), (ds.test_x, ds.test_y)]:
        centre = x[:, :, 4, 4]
        expected = np.array([COLOURS["abc"[k]] for k in y])
        assert np.abs(centre.astype(int) - expected).max() <= 1
    # a different seed gives the same per-class sizes
    other = load_image_folder(root, image_size=8, test_fraction=0.2, seed=4)
    assert np.bincount(other.test_y, minlength=3).tolist() == [2, 1, 0]
    none = load_image_folder(root, image_size=8, test_fraction=0.0)
    assert none.test_x is None and none.test_y is None and len(none) == 16


def test_train_test_layout_is_honoured(tmp_path):
    root = tmp_path / "data"
    for split, n in [("train", 3), ("test", 2)]:
        for cls in ("cat", "dog"):
            for i in range(n):
                _save(root / split / cls / f"{i}.png", _solid(COLOURS["a" if cls == "cat" else "b"]))
    _save(root / "train" / "dog" / "deeper" / "x.png", _solid(COLOURS["b"]))
    ds = load_image_folder(root, image_size=6)
    assert ds.classes == ["cat", "dog"]
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ds.test_y.tolist() == [0, 0, 1, 1]
    assert ds.test_x.shape == (4, 3, 6, 6)

    _save(root / "test" / "eel" / "0.png", _solid(COLOURS["c"]))
    with pytest.raises(UserError, match="eel"):
        load_image_folder(root, image_size=6)


def test_flat_and_unstructured_folders_are_unlabeled(tmp_path):
    flat = tmp_path / "flat"
    for i in range(3):
        _save(flat / f"{i}.png", _solid((i, i, i), mode="RGB"))
    ds = load_image_folder(flat, image_size=4)
    assert ds.train_y is None and ds.test_x is None and ds.classes == [] and len(ds) == 3

    mixed = tmp_path / "mixed"
    _save(mixed / "top.png", _solid((1, 2, 3)))
    _save(mixed / "sub" / "deep.png", _solid((1, 2, 3)))
    _save(mixed / "other" / "deep.png", _solid((1, 2, 3)))
    ds = load_image_folder(mixed, image_size=4)
    assert ds.train_y is None and ds.classes == [] and len(ds) == 3


def test_train_test_folders_without_classes_is_an_error(tmp_path):
    root = tmp_path / "data"
    _save(root / "train" / "0.png", _solid((0, 0, 0)))
    _save(root / "test" / "0.png", _solid((0, 0, 0)))
    with pytest.raises(UserError, match="class folder"):
        load_image_folder(root, image_size=4)


def _palette(transparent: bool) -> Image.Image:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([10, 200, 30, 250, 5, 5] + [0, 0, 0] * 254)
    im.paste(1, (0, 0, 8, 4))  # top half index 1, bottom half index 0
    if transparent:
        im.info["transparency"] = 0
    return im


def _decode_one(tmp_path, name, im, size=8, **save_kwargs):
    root = tmp_path / name
    _save(root / f"img{Path(name).suffix or '.png'}", im, **save_kwargs)
    return load_image_folder(root, image_size=size).train_x


def test_gray_modes_give_one_channel(tmp_path):
    x = _decode_one(tmp_path, "l", _solid(100, mode="L"))
    assert x.shape == (1, 1, 8, 8) and (x == 100).all()

    la = Image.merge("LA", [Image.new("L", (8, 8), 40), Image.new("L", (8, 8), 0)])
    assert (_decode_one(tmp_path, "la", la) == 255).all()  # transparent -> white

    for value, want in [(65535, 255), (257 * 100, 100), (0, 0)]:
        x = _decode_one(tmp_path, f"i16_{value}", Image.fromarray(np.full((8, 8), value, np.uint16)))
        assert x.shape == (1, 1, 8, 8) and (x == want).all(), (value, x.min(), x.max())

    big_endian = Image.fromarray(np.full((8, 8), 257 * 200, ">u2"))
    assert big_endian.mode == "I;16B"
    root = tmp_path / "i16b"
    _save(root / "img.tif", big_endian)
    assert (load_image_folder(root, image_size=8).train_x == 200).all()

    root = tmp_path / "i32"
    _save(root / "img.tif", Image.fromarray(np.full((8, 8), 65535, np.int32)))
    assert (load_image_folder(root, image_size=8).train_x == 255).all()

    bits = Image.fromarray(np.tile(np.array([[True, False]]), (8, 4)))
    assert bits.mode == "1"
    x = _decode_one(tmp_path, "onebit", bits, size=8)
    assert x.shape == (1, 1, 8, 8) and x[0, 0, 4, 0] > 200 and x[0, 0, 4, 1] < 60


def test_colour_modes_give_three_channels(tmp_path):
    x = _decode_one(tmp_path, "rgb", _solid((10, 20, 30), size=(8, 8)))
    assert x.shape == (1, 3, 8, 8) and x[0, :, 3, 3].tolist() == [10, 20, 30]

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4] = (200, 0, 0, 0)  # fully transparent -> white
    rgba[4:] = (255, 0, 0, 128)  # half transparent red on white
    x = _decode_one(tmp_path, "rgba", Image.fromarray(rgba, "RGBA"))
    assert (x[0, :, :3] == 255).all()
    assert x[0, 0, 6, 3] == 255 and abs(int(x[0, 1, 6, 3]) - 127) <= 2 and abs(int(x[0, 2, 6, 3]) - 127) <= 2

    x = _decode_one(tmp_path, "pal", _palette(transparent=False))
    assert x[0, :, 1, 4].tolist() == [250, 5, 5] and x[0, :, 6, 4].tolist() == [10, 200, 30]
    x = _decode_one(tmp_path, "paltr", _palette(transparent=True))
    assert x[0, :, 1, 4].tolist() == [250, 5, 5] and x[0, :, 6, 4].tolist() == [255, 255, 255]

    cmyk = _decode_one(tmp_path, "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 0, 0, 0)))
    assert cmyk.shape == (1, 3, 8, 8) and cmyk.min() >= 250


def test_exif_orientation_is_applied(tmp_path):
    data = np.zeros((20, 40), np.uint8)
    data[:, 20:] = 255  # stored wide: left black, right white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: left becomes top
    x = _decode_one(tmp_path, "rot.jpg", Image.fromarray(data), size=16, exif=exif, quality=95)
    assert x.shape == (1, 1, 16, 16)
    assert x[0, 0, :6].mean() < 30 and x[0, 0, -6:].mean() > 225


def test_mixed_gray_and_colour_folder_gives_three_channels(tmp_path):
    root = tmp_path / "data"
    _save(root / "0.png", _solid(77, mode="L"))
    _save(root / "1.png", Image.fromarray(np.full((8, 8), 65535, np.uint16)))
    _save(root / "2.png", _solid((1, 2, 3)))
    x = load_image_folder(root, image_size=5).train_x
    assert x.shape == (3, 3, 5, 5)
    assert (x[0] == 77).all() and (x[1] == 255).all() and x[2, :, 2, 2].tolist() == [1, 2, 3]


def test_large_non_square_image_is_resized_and_centre_cropped(tmp_path):
    wide = np.zeros((500, 1200, 3), np.uint8)
    wide[:, :290] = (255, 0, 0)
    wide[:, 290:910] = (0, 255, 0)  # the centre crop is columns 350..850
    wide[:, 910:] = (0, 0, 255)
    root = tmp_path / "data"
    _save(root / "wide.png", Image.fromarray(wide))
    _save(root / "tall.jpg", Image.fromarray(wide.transpose(1, 0, 2).copy()), quality=95)
    x = load_image_folder(root, image_size=32).train_x
    assert x.shape == (2, 3, 32, 32)
    for img in x:  # only the green middle survives the centre crop
        assert img[1].min() > 200 and img[0].max() < 40 and img[2].max() < 40


def test_corrupt_files_are_skipped_and_logged(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        _save(root / f"good{i}.png", _solid((i, 0, 0)))
    (root / "a.txt").write_text("not an image")
    png = (root / "good0.png").read_bytes()
    (root / "b.png").write_bytes(png[: len(png) // 2])
    (root / "c.jpg").write_bytes(b"")
    (root / ".hidden.txt").write_text("ignored")
    (root / ".git").mkdir()
    (root / ".git" / "junk").write_text("ignored")
    log = Log()
    ds = load_image_folder(root, image_size=4, log=log)
    assert len(ds) == 3
    names = ", ".join(os.path.join(str(root), name) for name in ("a.txt", "b.png", "c.jpg"))
    assert log == [f"skipped 3 of 6 files that are not readable images, e.g. {names}"]
    with pytest.raises(UserError, match=r"a\.txt.*remove it or drop --strict"):
        load_image_folder(root, image_size=4, strict=True, log=log)


def test_empty_missing_and_unreadable_folders_raise(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_text("x")
    with pytest.raises(UserError, match="holds no readable images") as err:
        load_image_folder(empty)
    assert str(empty) in str(err.value)

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="holds no readable images"):
        load_image_folder(junk, log=Log())

    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="does not exist") as err:
        load_image_folder(missing)
    assert str(missing) in str(err.value)

    a_file = tmp_path / "file.png"
    _save(a_file, _solid((0, 0, 0)))
    with pytest.raises(UserError, match="not a folder"):
        load_image_folder(a_file)


def test_second_load_uses_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for cls in ("x", "y"):
        for i in range(3):
            _save(root / cls / f"{i}.png", _solid(COLOURS["a" if cls == "x" else "b"]))
    (root / "x" / "broken.png").write_bytes(b"\x89PNG garbage")
    first_log, second_log = Log(), Log()
    first = load_image_folder(root, image_size=8, log=first_log)

    real_open = PIL.Image.open
    opened = []

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    second = load_image_folder(root, image_size=8, log=second_log)
    assert opened == []  # served from the cache, nothing decoded
    assert isinstance(second.train_x, np.memmap)
    assert second.classes == first.classes == ["x", "y"]
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert second_log == first_log and len(first_log) == 1

    # a changed file (new size and mtime) means a new cache key, so decoding happens again
    _save(root / "y" / "0.png", _solid((0, 0, 255), size=(30, 20)))
    stamp = (root / "y" / "0.png").stat().st_mtime_ns + 5_000_000_000
    os.utime(root / "y" / "0.png", ns=(stamp, stamp))
    third = load_image_folder(root, image_size=8, log=Log())
    assert len(opened) == 7
    both = np.concatenate([third.train_x, third.test_x])
    assert (both[:, 2, 4, 4] == 255).sum() == 1  # the new blue image is there


def test_other_formats_decode(tmp_path):
    root = tmp_path / "data"
    _save(root / "a.bmp", _solid((10, 20, 30)))
    _save(root / "b.gif", _palette(transparent=False))
    _save(root / "c.webp", _solid((5, 250, 5), size=(8, 8)), lossless=True)
    frames = [_solid((255, 0, 0)), _solid((0, 0, 255))]
    _save(root / "d.gif", frames[0], save_all=True, append_images=frames[1:])  # first frame is used
    x = load_image_folder(root, image_size=8).train_x
    assert x[:, :, 6, 4].tolist() == [[10, 20, 30], [10, 200, 30], [5, 250, 5], [255, 0, 0]]


def test_small_images_keep_their_own_size(tmp_path):
    """No --image-size: images of at most 64 px are not upsampled (the largest shorter side is used);
    a folder with larger images is resized to 64 px. The native-size cache serves a later explicit size."""
    small = tmp_path / "small"
    for i, side in enumerate((12, 20, 16)):
        _save(small / f"{i}.png", _solid(i * 40, size=(side + 3, side), mode="L"))
    ds = load_image_folder(small)
    assert ds.train_x.shape == (3, 1, 20, 20) and ds.spec.size == 20
    big = tmp_path / "big"
    _save(big / "a.png", _solid((10, 20, 30), size=(100, 80)))
    _save(big / "b.png", _solid((10, 20, 30), size=(30, 30)))
    assert load_image_folder(big).train_x.shape == (2, 3, 64, 64)
    before = sorted((Path(os.environ["SELFSUP_CACHE"]) / "folders").iterdir())
    again = load_image_folder(small, image_size=20)  # what a resumed run asks for: no second decode
    assert np.array_equal(np.asarray(again.train_x), np.asarray(ds.train_x))
    assert sorted((Path(os.environ["SELFSUP_CACHE"]) / "folders").iterdir()) == before
