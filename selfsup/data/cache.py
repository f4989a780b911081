"""The decode-once cache: uint8 / int arrays saved as .npy and memory-mapped."""

from __future__ import annotations

import hashlib
import os
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


def load_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)
