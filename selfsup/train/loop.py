"""The pretraining loop: budget, precision, DDP, accumulation, checkpoint/resume, logging, guards.

Determinism: the batch order depends only on (seed, epoch) and the views' random
numbers only on (seed, step, rank, micro-batch), so a resumed run needs nothing
but the weights, the optimizer state and the step to continue exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import copy
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.flop_counter import FlopCounterMode

from selfsup import distributed as D
from selfsup.config import RunConfig, parse_budget, save_yaml
from selfsup.data import load_dataset
from selfsup.errors import TrainingDiverged, UserError
from selfsup.encoders import use_channels_last
from selfsup.methods import build_method
from selfsup.train.checkpoint import latest_checkpoint, load_trainer_state, load_weights, save_checkpoint
from selfsup.train.log import RunLogger, fmt_duration
from selfsup.train.monitor import collapse_stats, collapse_warning
from selfsup.train.optim import build_optimizer, warmup_cosine

CALIBRATION_STEPS = 3  # real steps timed to turn a duration budget into a step count (the first is a warm-up)


@dataclass
class Run:
    path: Path
    config: RunConfig


def channel_stats(x: np.ndarray, limit: int = 10_000) -> tuple[list[float], list[float]]:
    sample = torch.from_numpy(np.array(x[:limit])).float().div_(255)  # [n, C, H, W]
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def _seed_for(*parts: int) -> int:
    h = 0x9E3779B9
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return h


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False, log=print):
        self.cfg, self.log = cfg, log
        t = cfg.train
        self.device = D.local_device(t.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"train.device={t.device!r} but CUDA is not available here; use --device cpu")
        D.init_from_env(self.device)
        self.rank, self.world = D.rank(), D.world_size()
        self.run_dir = Path(cfg.out)
        self._prepare_run_dir(resume)

        ds = load_dataset(cfg.data.name, cfg.data.image_size, cfg.data.limit, cfg.data.strict, log=self._say)
        cfg.data.image_size = ds.image_size
        self.n = len(ds)
        self._set_batch(t)
        mean, std = channel_stats(ds.train_x)
        torch.manual_seed(t.seed)
        self.method = build_method(cfg, ds.channels, ds.image_size, mean, std, num_samples=self.n)
        defaults = self.method.defaults
        t.optimizer = t.optimizer or defaults["optimizer"]
        t.lr = t.lr if t.lr is not None else defaults["lr"] * t.batch_size / 256
        t.weight_decay = t.weight_decay if t.weight_decay is not None else defaults["weight_decay"]
        self.channels_last = t.channels_last if t.channels_last is not None else (
            cfg.encoder.name.startswith("resnet") and use_channels_last(self.method.encoder, self.device))
        self.method.to(self.device)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if t.sync_bn and self.world > 1:
            self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.optimizer = build_optimizer(self.method, t.optimizer, t.lr, t.weight_decay)
        self.autocast_dtype = torch.bfloat16 if (t.precision == "bf16" or (
            t.precision == "auto" and self.device.type == "cuda")) else None  # fmt: skip

        keep_on_device = self.device.type == "cuda" and ds.train_x.nbytes < 8 * 2**30
        small = ds.train_x.nbytes < 4 * 2**30  # smaller sets live in RAM; larger stay memory-mapped
        x = torch.from_numpy(np.array(ds.train_x) if small else np.asarray(ds.train_x))
        self.data = x.to(self.device) if keep_on_device else x
        self._perm_cache: tuple[int, torch.Tensor] | None = None

        self.start_step = 0
        if resume:
            self._load_checkpoint()
        self.model = self.method
        if self.world > 1:
            self.model = DDP(self.method, device_ids=[self.device] if self.device.type == "cuda" else None)
        if t.compile:
            self.model = torch.compile(self.model)

    # ------------------------------------------------------------------ set-up
    def _say(self, text: str) -> None:
        if self.rank == 0:
            self.log(text)

    def _prepare_run_dir(self, resume: bool) -> None:
        has_run = latest_checkpoint(self.run_dir) is not None
        if resume and not has_run:
            raise UserError(f"{self.run_dir} has no checkpoint to resume from; start it without --resume")
        if not resume and has_run:
            raise UserError(f"{self.run_dir} already holds a run; continue it with --resume {self.run_dir} "
                            "or choose another --out")  # fmt: skip
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def _set_batch(self, t) -> None:
        unit = self.world * t.accumulate
        if t.batch_size > self.n:
            t.batch_size = max(unit, self.n // unit * unit)
            self._say(f"note: only {self.n} images; train.batch_size lowered to {t.batch_size}")
        if t.batch_size % unit:
            raise UserError(f"train.batch_size={t.batch_size} must divide evenly over {self.world} process(es) "
                            f"x {t.accumulate} accumulation step(s)")  # fmt: skip
        self.micro = t.batch_size // unit
        self.steps_per_epoch = self.n // t.batch_size

    def _load_checkpoint(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        self.method.load_state_dict(load_weights(ckpt))
        state = load_trainer_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_step = int(state["step"])
        self._say(f"resuming {self.run_dir} from {ckpt.name} (step {self.start_step}/{self.cfg.train.steps})")

    # ------------------------------------------------------------------ one step
    def _indices(self, step: int) -> torch.Tensor:
        """This rank's image indices for ``step``: [world * accumulate * micro] -> this rank's share."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(_seed_for(self.cfg.train.seed, epoch))
            self._perm_cache = (epoch, torch.randperm(self.n, generator=g))
        bs = self.cfg.train.batch_size
        idx = self._perm_cache[1][pos * bs : (pos + 1) * bs]
        share = bs // self.world
        return idx[self.rank * share : (self.rank + 1) * share]

    def _views(self, step: int, micro: int, idx: torch.Tensor):
        x = self.data[idx.to(self.data.device)].to(self.device, non_blocking=True)
        g = torch.Generator(self.device).manual_seed(_seed_for(self.cfg.train.seed, step, self.rank, micro))
        with torch.no_grad():
            views = self.method.views(x, g)
        if self.channels_last:
            views = tuple(v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for v in views)
        return views

    def _counted_step(self, step: int, lr: float):
        """``_step`` under torch.utils.flop_counter: the forward + backward FLOPs of one optimizer step
        (all micro-batches, this rank). A compiled model is counted through the eager module, which
        computes the same thing."""
        compiled, model = self.cfg.train.compile, self.model
        if compiled:
            self.model = self.method if self.world == 1 else model._orig_mod
        try:
            with FlopCounterMode(display=False) as counter:
                result = self._step(step, lr)
        finally:
            self.model = model
        self.flops_per_step = int(counter.get_total_flops()) * self.world
        return result

    def _step(self, step: int, lr: float):
        """Forward/backward over the micro-batches, then one optimizer step. Returns (loss, out)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = self._indices(step)
        total, first = torch.zeros((), device=self.device), None
        acc = self.cfg.train.accumulate
        for m in range(acc):
            views = self._views(step, m, idx[m * self.micro : (m + 1) * self.micro])
            sync = contextlib.nullcontext() if (m == acc - 1 or self.world == 1) else self.model.no_sync()
            with sync, torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                      enabled=self.autocast_dtype is not None):  # fmt: skip
                out = self.model(views)
                (out.loss / acc).backward()
            total += out.loss.detach() / acc
            first = out if first is None else first
        total = D.all_reduce_mean(total)
        if not torch.isfinite(total):  # never step on a NaN: the weights stay as they were
            self.optimizer.zero_grad(set_to_none=True)
            return total, first
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        hook = getattr(self.method, "after_step", None)
        if hook is not None:  # while a duration budget is timed, the run's length is not known yet:
            hook(step, self.cfg.train.steps or CALIBRATION_STEPS)  # the timed steps stand in for it
        return total, first

    # ------------------------------------------------------------------ budget
    def _resolve_steps(self) -> int:
        t = self.cfg.train
        if t.steps is not None:  # resumed runs and explicit configs
            return t.steps
        b = parse_budget(t.budget)
        if b.kind == "steps":
            return int(b.value)
        if b.kind == "epochs":
            return max(1, int(b.value) * self.steps_per_epoch)
        return self._calibrate(b.value)

    def _calibrate(self, seconds: float) -> int:
        """Time three real steps (the first is a warm-up), put the weights back, size the run to the budget."""
        model_state = copy.deepcopy(self.method.state_dict())
        opt_state = copy.deepcopy(self.optimizer.state_dict())
        t0 = time.perf_counter()
        self._step(0, 0.0)
        t1 = time.perf_counter()
        for step in range(1, CALIBRATION_STEPS):
            self._step(step, 0.0)
        per_step = torch.tensor((time.perf_counter() - t1) / (CALIBRATION_STEPS - 1))
        if self.world > 1:
            torch.distributed.all_reduce(per_step, op=torch.distributed.ReduceOp.MAX)
        self.method.load_state_dict(model_state)
        self.optimizer.load_state_dict(opt_state)
        left = max(0.0, seconds - (time.perf_counter() - t0))
        steps = max(1, int(left / float(per_step)))
        self._say(f"budget {fmt_duration(seconds)}: {float(per_step):.2f} s/step -> {steps} steps "
                  f"({steps / self.steps_per_epoch:.2f} epochs of {self.n} images)")  # fmt: skip
        return steps

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Run:
        cfg, t = self.cfg, self.cfg.train
        t.steps = self._resolve_steps()
        if self.rank == 0:
            save_yaml(cfg, self.run_dir / "config.yaml")
        every = parse_budget(t.checkpoint_every, "train.checkpoint_every")
        logger = RunLogger(self.run_dir, t.steps, enabled=self.rank == 0, log=self.log)
        warmup = int(t.warmup * t.steps)
        self.method.train()
        start, last_ckpt_time, last_ckpt_step = time.perf_counter(), time.perf_counter(), self.start_step
        window_t, window_n, warned = time.perf_counter(), 0, 0
        self.flops_per_step = None
        for step in range(self.start_step, t.steps):
            lr = t.lr * warmup_cosine(step, t.steps, warmup)
            loss, out = (self._counted_step if step == self.start_step else self._step)(step, lr)
            if not torch.isfinite(loss):
                logger.close()
                last = latest_checkpoint(self.run_dir)
                kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
                raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1}; {kept}; "
                                       "lower train.lr (--lr) or use --precision fp32")  # fmt: skip
            window_n += t.batch_size
            done = step + 1
            if done % t.log_every == 0 or done == t.steps or step == self.start_step:
                rate = window_n / max(1e-9, time.perf_counter() - window_t)
                metrics = {"loss": loss.item(), "lr": lr, "samples_per_s": rate, **out.metrics}
                if out.embedding is not None:
                    metrics.update(collapse_stats(out.embedding))
                    warning = collapse_warning(metrics)
                    if warning and warned % 10 == 0:
                        logger.message(warning)
                    warned += bool(warning)
                logger.step(done, metrics, done - self.start_step, rate)
                window_t, window_n = time.perf_counter(), 0
            due = (
                (time.perf_counter() - last_ckpt_time >= every.value)
                if every.kind == "time"
                else (done - last_ckpt_step >= every.value * (self.steps_per_epoch if every.kind == "epochs" else 1))
            )
            if due and done < t.steps:
                self._save(done)
                last_ckpt_time, last_ckpt_step = time.perf_counter(), done
        self._save(t.steps)
        self._write_cost(time.perf_counter() - start, t.steps - self.start_step)
        logger.close()
        if D.is_dist():
            torch.distributed.barrier()
        return Run(self.run_dir, cfg)

    def _save(self, step: int) -> None:
        if self.rank == 0:
            save_checkpoint(self.run_dir, step, self.method, {"step": step, "optimizer": self.optimizer.state_dict()},
                            keep=self.cfg.train.keep_checkpoints)  # fmt: skip
        if D.is_dist():
            torch.distributed.barrier()

    def _write_cost(self, seconds: float, steps: int) -> None:
        if self.rank != 0:
            return
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        samples = steps * self.cfg.train.batch_size
        flops = None if self.flops_per_step is None else self.flops_per_step * steps
        cost = {"wall_s": round(seconds, 2), "steps": steps, "samples": samples,
                "samples_per_s": round(samples / max(seconds, 1e-9), 2), "peak_memory_bytes": int(peak),
                "flops": flops, "flops_per_step": self.flops_per_step,
                "flops_per_sample": None if flops is None else round(self.flops_per_step / self.cfg.train.batch_size),
                "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "world_size": self.world, "cpu_threads": torch.get_num_threads()}  # fmt: skip
        (self.run_dir / "cost.json").write_text(json.dumps(cost, indent=1))


def pretrain(cfg: RunConfig, resume: bool = False, log=print) -> Run:
    cfg.validate()
    return Trainer(cfg, resume=resume, log=log).fit()
