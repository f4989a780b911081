"""Named datasets: Fashion-MNIST from local files (verified, cached), digits."""

import gzip
import shutil

import numpy as np
import pytest

import selfsup.data.named as named
from selfsup.data import fetch, load_dataset
from selfsup.errors import UserError

from .conftest import require_fmnist


def test_fashion_mnist_decodes_and_caches(cache_root):
    require_fmnist()
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == np.uint8 and isinstance(ds.train_x, np.memmap)
    assert np.bincount(ds.train_y).tolist() == [6000] * 10 and ds.num_classes == 10
    small = load_dataset("fashion-mnist", image_size=16, limit=100)
    assert small.train_x.shape == (100, 1, 16, 16) and small.train_y.shape == (100,)
    assert (cache_root / "fashion-mnist" / "16px" / "done").is_file()
    # the resize keeps the picture: the mean brightness is close to the original's
    assert abs(small.train_x.mean() - ds.train_x[:100].mean()) < 2.0


def test_bad_checksum_and_missing_files(tmp_path, monkeypatch):
    source = require_fmnist()
    bad = tmp_path / "fm"
    bad.mkdir()
    for f in source.glob("*.gz"):
        shutil.copy(f, bad / f.name)
    with gzip.open(bad / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00" * 100)
    monkeypatch.setattr(named, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("SELFSUP_FASHION_MNIST_DIR", str(bad))
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz fails its checksum"):
        load_dataset("fashion-mnist")
    monkeypatch.setenv("SELFSUP_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="selfsup data get fashion-mnist"):
        load_dataset("fashion-mnist")


def test_data_get_works_offline_from_local_files(tmp_path, monkeypatch):
    require_fmnist()
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(named, "_apt_download_fmnist", lambda log: pytest.fail("no network when files are local"))
    lines = []
    fetch("fashion-mnist", log=lines.append)
    assert "60000 train / 10000 test" in lines[-1]


def test_digits():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8) and len(ds) + len(ds.test_x) == 1797
    assert ds.train_x.max() == 255
    assert set(np.unique(ds.test_y)) == set(range(10))


def test_dataset_carries_a_spec():
    ds = load_dataset("digits")
    spec = ds.spec
    assert (spec.kind, spec.channels, spec.size) == ("image", 1, 8)
    x = np.asarray(ds.train.x[:10000], dtype=np.float64) / 255
    assert spec.mean[0] == pytest.approx(x.mean(), abs=1e-4) and spec.std[0] == pytest.approx(x.std(), rel=1e-2)
    limited = load_dataset("digits", limit=100)
    assert len(limited) == 100 and limited.spec.mean[0] == pytest.approx(np.asarray(ds.train.x[:100]).mean() / 255,
                                                                         abs=1e-4)  # fmt: skip
