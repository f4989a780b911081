"""metrics.jsonl, TensorBoard events, and a progress bar (a terminal) or plain lines (otherwise)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class RunLogger:
    """Rank 0 only: the trainer builds it with ``enabled=False`` on other ranks."""

    def __init__(self, run_dir: Path, total_steps: int, enabled: bool = True, log=print):
        self.enabled, self.total, self.log = enabled, total_steps, log
        self.start = time.perf_counter()
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(run_dir / "metrics.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is a dependency; tolerate its absence in stripped installs
            self._tb = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True)

    def step(self, step: int, metrics: dict[str, float], done_steps: int, samples_per_s: float) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.perf_counter() - self.start, 3), **metrics}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"train/{k}", v, step)
        remaining = (self.total - step) * (time.perf_counter() - self.start) / max(1, done_steps)
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
