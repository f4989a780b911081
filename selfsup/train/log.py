"""metrics.jsonl, TensorBoard events, a progress bar (a terminal) or plain lines (otherwise), cost.json."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from selfsup.fmt import fmt_duration


class RunLogger:
    """Rank 0 only: the trainer builds it with ``enabled=False`` on other ranks.

    A resumed run starts at ``start_step``: TensorBoard drops its events after that step (the trainer has
    already cut ``metrics.jsonl`` there), and ``time`` continues from ``time_offset`` seconds."""

    def __init__(self, run_dir: Path, total_steps: int, enabled: bool = True, log=print, start_step: int = 0,
                 time_offset: float = 0.0):  # fmt: skip
        self.enabled, self.total, self.log = enabled, total_steps, log
        self.start, self.offset, self.first = time.perf_counter(), time_offset, start_step
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(run_dir / "metrics.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboard is a dependency; tolerate its absence in stripped installs
            self._tb = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def step(self, step: int, metrics: dict[str, float], done_steps: int, samples_per_s: float) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        row = {"step": step, "time": round(self.offset + elapsed, 3), **metrics}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"train/{k}", v, step)
        remaining = (self.total - step) * elapsed / max(1, done_steps)
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", samples_s=f"{samples_per_s:.0f}")
            self._bar.refresh()
        else:
            self.log(f"step {step}/{self.total}  loss {metrics.get('loss', float('nan')):.4f}  "
                     f"{samples_per_s:.1f} samples/s  ETA {fmt_duration(remaining)}")  # fmt: skip

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            self.log(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._jsonl.close()


def write_cost(run_dir: Path, c: dict, batch_size: int, device: torch.device, world: int, channels_last: bool) -> None:
    """``cost.json``: the whole run's figures, summed over its resumed segments.

    ``wall_s`` is time spent in training steps and checkpoints; ``calibration_s`` the time spent timing
    steps to size a duration budget (part of the budget, not of ``wall_s``). ``flops``: one step counted by
    torch's FLOP counter times the steps, or (ragged inputs, ``c["flops"]``) scaled by each step's padded
    input size."""
    from selfsup.runs import atomic_write_text

    per_step = c.get("flops_per_step")
    flops = c.get("flops") or (None if per_step is None else per_step * c["steps"])
    per_step = None if flops is None else round(flops / max(1, c["steps"]))  # the mean step (ragged inputs vary)
    cost = {"wall_s": round(c["wall_s"], 2), "calibration_s": round(c.get("calibration_s", 0.0), 2),
            "steps": c["steps"], "samples": c["samples"],
            "samples_per_s": round(c["samples"] / max(c["wall_s"], 1e-9), 2),
            "peak_memory_bytes": int(c["peak_memory_bytes"]), "flops": flops, "flops_per_step": per_step,
            "flops_per_sample": None if per_step is None else round(per_step / batch_size),
            "segments": c["segments"], "channels_last": channels_last,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "world_size": world, "cpu_threads": torch.get_num_threads()}  # fmt: skip
    atomic_write_text(run_dir / "cost.json", json.dumps(cost, indent=1))
