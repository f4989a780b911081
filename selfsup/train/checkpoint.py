"""Checkpoints that a crash or kill never corrupts.

Layout: ``RUN/checkpoints/step-000123/{model.safetensors, trainer.pt}`` and a
``RUN/checkpoints/latest`` file naming the newest complete one. A checkpoint is
written into a temporary folder, flushed, renamed into place, and only then is
``latest`` replaced (itself written to a temporary file and renamed).
``trainer.pt`` holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``; weights are safetensors.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.errors import UserError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, trainer_state: dict, keep: int = 2) -> Path:
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(state_tensors(model), str(tmp / "model.safetensors"))
    torch.save(trainer_state, tmp / "trainer.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p != final)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "model.safetensors").is_file() else None


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(ckpt / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - a damaged file is a user-facing problem
        raise UserError(f"{ckpt / 'model.safetensors'} cannot be read ({type(e).__name__}); "
                        "delete that checkpoint folder to fall back to an older one") from None  # fmt: skip


def load_trainer_state(ckpt: Path) -> dict:
    return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
