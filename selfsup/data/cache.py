"""The decode-once cache: uint8 / int arrays saved as .npy and memory-mapped."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """``$SELFSUP_CACHE`` or ``~/.cache/selfsup``."""
    root = os.environ.get("SELFSUP_CACHE") or Path.home() / ".cache" / "selfsup"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_array(path: Path, array: np.ndarray) -> None:
    """Write atomically so a killed process never leaves a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
    os.replace(tmp, path)


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write a cache into: renamed to ``final`` when the block ends
    without an error (dropped if another process finished ``final`` first), removed on any error or kill
    signal, so a cache folder is whole or absent."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-tmp", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is not
        yield tmp
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)
