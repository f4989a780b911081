"""The pretraining loop: budget, precision, DDP, accumulation, checkpoint/resume, logging, guards.

``pretrain(cfg)`` loads the data, resolves the config once (``selfsup.config.resolve``), builds the
method and hands both to the :class:`Trainer`, which never writes into the config. A duration budget
is turned into a step count by timing real steps on rank 0 (broadcast to every rank); the config with
that count is written to ``config.yaml`` before step 1, with ``encoder.json`` beside it. The first
steps of a fresh process run slower than later ones (measured: a fifth to a third, for the first twenty
or so steps), so a duration budget is planned twice: the timed steps fix the first plan and the warm-up
length; at a quarter of the first plan (no earlier than the end of warm-up, no later than the first time
checkpoint, which waits for it) the count is re-planned at the pace of the steps since half that point,
the rest of the cosine spread over the steps left, and ``config.yaml`` rewritten with the first plan and
the step of the re-plan. A machine whose load changes later (another job starts or ends) would still miss the
budget, so the pace since the last re-plan or check is checked again at half and three quarters of the plan in
force, and the run re-planned the same way when its finish would miss the budget by more than 5% of it
(``train.first_plan`` / ``train.replanned_at`` list every re-plan); ``--config RUN/config.yaml`` repeats the
run exactly.

Determinism: the batch order depends only on (seed, epoch) and the views' random numbers only on
(seed, step, rank, micro-batch), so a resumed run needs nothing but the weights, the optimizer state
and the step to continue exactly where an uninterrupted run would be. Ragged inputs (audio clips) under
``train.group_by_length`` (the method's choice: tera and hubert) reorder each epoch's permutation into
batches of similar lengths (``selfsup.data.batching``), from the same seed.

Groups (``selfsup.data.groups``): ``data.pretrain_groups`` resamples the loaded training split to the given
shares of one attribute at its own size, seeded by ``train.seed``, before the data is prepared (a resumed run
reads the same fields from config.yaml and resamples the same way); ``data.balance_by`` makes each epoch's
batch order a seeded draw with replacement (``torch.multinomial``) weighted so that every value of the
attribute is drawn equally often, in place of the permutation.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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
from selfsup import runs
from selfsup.config import RunConfig, parse_budget, resolve
from selfsup.data import load_configured, prepare
from selfsup.data.batching import GROUP_BATCHES, length_grouped, padded_sizes, padding_fraction
from selfsup.data.groups import balanced_weights, check_groups, parse_group_shares, resample_split
from selfsup.errors import TrainingDiverged, UserError
from selfsup.fmt import fmt_duration
from selfsup.methods import build_method, eval_encoder_name, metric_floats
from selfsup.precision import as_channels_last, autocast_dtype, channels_last_for, to_channels_last
from selfsup.registry import METHODS
from selfsup.schedule import as_plans, plan_at
from selfsup.train.log import RunLogger, write_cost
from selfsup.train.monitor import DEFAULT_ADVICE, CollapseWatch, collapse_stats
from selfsup.train.optim import build_optimizer, warmup_cosine

CALIBRATION_STEPS = 3  # at least this many real steps are timed to size a duration budget (the first is a warm-up)
CALIBRATION_SHARE = 0.03  # ... and more, up to this share of the budget: two steps misjudged a run by 20%
CALIBRATION_MAX = 30
MIN_USEFUL_STEPS = 50  # a budget that buys fewer steps than this says so
REPLAN_SHARE = 0.25  # a duration budget is re-planned at this share of its first plan ...
REPLAN_MIN_STEPS = 8  # ... when that is at least this many steps
CHECK_SHARES = (0.5, 0.75)  # then checked again at these shares of the plan in force: a machine whose load changes
CHECK_TOLERANCE = 0.05  # ... is re-planned when the pace since the last check misses the budget by this share of it
PREPARE_TAG = -1  # seeds method.prepare's generator with (seed, -1): no step's views use it
GROUPS_TAG = -2  # seeds data.pretrain_groups' resampling with (seed, -2)


@dataclass
class Run:
    path: Path
    config: RunConfig


def _seed_for(*parts: int) -> int:
    h = 0x9E3779B9
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return h


class Trainer:
    """Trains ``method`` on ``dataset`` as the resolved ``cfg`` says; rank 0 alone writes into ``run_dir``."""

    def __init__(self, cfg: RunConfig, method: nn.Module, dataset, device: torch.device, resume: bool = False,
                 log=print):  # fmt: skip
        self.cfg, self.log, self.device = cfg, log, device
        t = cfg.train
        self.rank, self.world = D.rank(), D.world_size()
        self.run_dir = Path(cfg.out)
        self.n = len(dataset)
        self.micro = t.batch_size // (self.world * t.accumulate)
        self.steps_per_epoch = self.n // t.batch_size
        self.spec = dataset.spec
        self.channels_last = channels_last_for(method, device, t.channels_last)
        method.to(device)
        if self.channels_last:
            to_channels_last(method)
        if t.sync_bn and self.world > 1:  # PyTorch's SyncBatchNorm on GPUs; our global BN where it is refused (CPU)
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method) if device.type == "cuda" else \
                D.convert_global_bn(method)  # fmt: skip
        self.method = method
        self.optimizer = build_optimizer(method, t.optimizer, t.lr, t.weight_decay)
        self.autocast_dtype = autocast_dtype(device, t.precision)

        split = dataset.train
        self.ragged = getattr(split.x, "ragged", False)  # e.g. audio clips: batches padded as they are drawn
        if self.ragged:
            self.data, self.lengths = split.x, None
        else:
            keep_on_device = device.type == "cuda" and split.x.nbytes < 8 * 2**30
            small = split.x.nbytes < 4 * 2**30  # smaller sets live in RAM; larger stay memory-mapped
            x = torch.from_numpy(np.array(split.x) if small else np.asarray(split.x))
            self.data = x.to(device) if keep_on_device else x
            self.lengths = None if split.lengths is None else torch.from_numpy(np.array(split.lengths)).to(device)
        self._perm_cache: tuple[int, torch.Tensor] | None = None
        self._weights = self._balance_weights(split)  # [N] float64, or None: a permutation per epoch
        # clip lengths [N] when batches are grouped by length (ragged inputs, train.group_by_length), else None
        self._group_lengths = split.x.lengths if self.ragged and t.group_by_length else None
        if self._group_lengths is not None:
            plain = self._epoch_order(0, grouped=False)
            self._say(f"batches grouped by length ({GROUP_BATCHES} batches sorted at a time): padding "
                      f"{padding_fraction(plain, self._group_lengths, t.batch_size):.0%} of a random batch -> "
                      f"{padding_fraction(self._epoch_order(0), self._group_lengths, t.batch_size):.0%}; "
                      "--set train.group_by_length=false for random batches")  # fmt: skip

        self.start_step = 0
        self.cost = {"wall_s": 0.0, "calibration_s": 0.0, "steps": 0, "samples": 0, "peak_memory_bytes": 0,
                     "segments": 0}  # fmt: skip
        if resume:
            self._load_checkpoint()
        elif hasattr(method, "prepare"):  # data-dependent set-up before step 1 (HuBERT's k-means targets), seeded;
            # kept in the method's buffers, so a resumed run restores it from its checkpoint instead
            g = torch.Generator().manual_seed(_seed_for(t.seed, PREPARE_TAG))
            method.prepare(dataset, g, self._say)
        self.model = method
        if self.world > 1:
            self.model = DDP(method, device_ids=[device] if device.type == "cuda" else None)
        if t.compile:
            self.model = torch.compile(self.model)

    # ------------------------------------------------------------------ set-up
    def _say(self, text: str) -> None:
        if self.rank == 0:
            self.log(text)

    def _balance_weights(self, split) -> torch.Tensor | None:
        """``data.balance_by``'s sampling weights [N] over the split the run trains on (one over the count of each
        sample's value), or None."""
        attr = self.cfg.data.balance_by
        if attr is None:
            return None
        if attr not in split.groups:
            raise UserError(f"--balance-by {attr}: the {len(split)} rows {self.cfg.method.name} pretrains on are made "
                            f"from the data (e.g. packed token windows) and carry no {attr}; leave --balance-by out "
                            "for this data")  # fmt: skip
        check_groups(split, attr, "--balance-by")
        values, counts = np.unique(np.asarray(split.groups[attr]).astype(str), return_counts=True)
        self._say(f"balance_by: {attr} ({len(values)} values, {counts.min()} to {counts.max()} samples each), "
                  "each value drawn equally often (with replacement)")  # fmt: skip
        return torch.from_numpy(balanced_weights(split.groups[attr]))

    def _load_checkpoint(self) -> None:
        ckpt = runs.latest_checkpoint(self.run_dir)
        try:
            self.method.load_state_dict(runs.load_weights(ckpt))
        except RuntimeError as e:
            raise UserError(f"{ckpt} does not match the run's config.yaml ({str(e).splitlines()[0]}); "
                            "the run folder is inconsistent: start a new run") from None  # fmt: skip
        state = runs.load_trainer_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_step = int(state["step"])
        self.cost.update(state.get("cost", {}))
        if self.rank == 0:
            runs.truncate_metrics(self.run_dir, self.start_step)  # rows after the checkpoint are logged again
        self._say(f"resuming {self.run_dir} from {ckpt.name} (step {self.start_step}/{self.cfg.train.steps})")

    # ------------------------------------------------------------------ one step
    def _indices(self, step: int) -> torch.Tensor:
        """This rank's sample indices for ``step``: [world * accumulate * micro] -> this rank's share. An epoch's
        order is a seeded permutation, or with ``data.balance_by`` a seeded weighted draw of N with replacement."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, self._epoch_order(epoch))  # [N]
        bs = self.cfg.train.batch_size
        idx = self._perm_cache[1][pos * bs : (pos + 1) * bs]
        share = bs // self.world
        return idx[self.rank * share : (self.rank + 1) * share]

    def _epoch_order(self, epoch: int, grouped: bool = True) -> torch.Tensor:
        """The samples of ``epoch`` in order [N]: a seeded permutation (or weighted draw), its batches grouped by
        length where ``train.group_by_length`` asks (``selfsup.data.batching``)."""
        g = torch.Generator().manual_seed(_seed_for(self.cfg.train.seed, epoch))
        order = torch.randperm(self.n, generator=g) if self._weights is None else torch.multinomial(
            self._weights, self.n, replacement=True, generator=g)  # fmt: skip
        if grouped and self._group_lengths is not None:
            order = length_grouped(order, self._group_lengths, self.cfg.train.batch_size, g)
        return order

    def _padded_sizes(self, total: int) -> np.ndarray:
        """Ragged inputs: each of the steps [0, total)'s input size with its padding, every micro-batch's rows x
        its longest clip summed over the ranks and accumulation steps (the batches are a function of the seed
        and the epoch) -> int64 [total]."""
        per, bs = self.steps_per_epoch, self.cfg.train.batch_size
        sizes = [padded_sizes(self._epoch_order(epoch)[: per * bs], self.data.lengths, self.micro).view(per, -1).sum(1)
                 for epoch in range((total + per - 1) // per)]  # fmt: skip
        return torch.cat(sizes)[:total].numpy()

    def _views(self, step: int, micro: int, idx: torch.Tensor):
        if self.ragged:
            x, lengths = self.data.batch(idx.numpy())  # [B, longest], lengths [B]
            x, lengths = x.to(self.device, non_blocking=True), lengths.to(self.device)
        else:
            x = self.data[idx.to(self.data.device)].to(self.device, non_blocking=True)
            lengths = None if self.lengths is None else self.lengths[idx.to(self.lengths.device)]
        g = torch.Generator(self.device).manual_seed(_seed_for(self.cfg.train.seed, step, self.rank, micro))
        with torch.no_grad():
            views = self.method.views(x, g, lengths) if lengths is not None else self.method.views(x, g)
        if self.channels_last:
            views = tuple(as_channels_last(v) for v in views)
        return views

    def _counted_step(self, step: int, lr: float, total: int):
        """``_step`` under torch.utils.flop_counter: the forward + backward FLOPs of one optimizer step
        (all micro-batches, this rank). A compiled model is counted through the eager module, which
        computes the same thing."""
        compiled, model = self.cfg.train.compile, self.model
        if compiled:
            self.model = self.method if self.world == 1 else model._orig_mod
        try:
            with FlopCounterMode(display=False) as counter:
                result = self._step(step, lr, total)
        finally:
            self.model = model
        self.cost["flops_per_step"] = int(counter.get_total_flops()) * self.world
        self.cost["flops_step"] = step  # ragged inputs: the other steps are scaled by their padded size
        return result

    def _step(self, step: int, lr: float, total: int):
        """Forward/backward over the micro-batches, then one optimizer step unless the loss or the gradients
        are not finite. Returns (loss, out, grad_norm, finite); ``finite`` is the step's one host sync."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = self._indices(step)
        loss, first = torch.zeros((), device=self.device), None
        acc = self.cfg.train.accumulate
        for m in range(acc):
            views = self._views(step, m, idx[m * self.micro : (m + 1) * self.micro])
            sync = contextlib.nullcontext() if (m == acc - 1 or self.world == 1) else self.model.no_sync()
            with sync, torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                      enabled=self.autocast_dtype is not None):  # fmt: skip
                out = self.model(views)
                (out.loss / acc).backward()
            loss += out.loss.detach() / acc
            first = out if first is None else first
        loss = D.all_reduce_mean(loss)
        grads = [p.grad for p in self.method.parameters() if p.grad is not None]  # all-reduced under DDP
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else loss * 0
        finite = bool(torch.isfinite(loss) & torch.isfinite(grad_norm))
        if not finite:  # never step on a NaN: the weights stay as they were
            self.optimizer.zero_grad(set_to_none=True)
            return loss, first, grad_norm, False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        hook = getattr(self.method, "after_step", None)
        if hook is not None:
            hook(step, total)
        return loss, first, grad_norm, True

    # ------------------------------------------------------------------ budget
    def _broadcast_int(self, value: int) -> int:
        """rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def _calibrate(self, seconds: float) -> int:
        """Time real steps (a warm-up, then at least two and up to 3% of the budget), put the weights back,
        size the run to what is left of the budget. The count is rank 0's, broadcast: every rank runs exactly
        the same steps."""
        model_state = copy.deepcopy(self.method.state_dict())
        opt_state = copy.deepcopy(self.optimizer.state_dict())
        t0 = time.perf_counter()
        self._step(0, 0.0, CALIBRATION_MAX)  # the timed steps stand in for the run's length in after_step hooks
        t1 = time.perf_counter()
        timed = 0
        while timed < CALIBRATION_STEPS - 1 or self._broadcast_int(int(  # rank 0's clock decides: ranks step together
                time.perf_counter() - t1 < CALIBRATION_SHARE * seconds and timed < CALIBRATION_MAX - 1)):  # fmt: skip
            self._step(timed + 1, 0.0, CALIBRATION_MAX)
            timed += 1
        per_step = (time.perf_counter() - t1) / timed
        self._budget = (t0, seconds)  # the budget's clock starts with the timed steps
        self.method.load_state_dict(model_state)
        self.optimizer.load_state_dict(opt_state)
        elapsed = time.perf_counter() - t0
        steps = self._broadcast_int(max(1, int(max(0.0, seconds - elapsed) / per_step)))
        self.cost["calibration_s"] += round(elapsed, 3)
        self._say(f"budget {fmt_duration(seconds)}: {per_step:.2f} s/step -> {steps} steps "
                  f"({steps / max(1, self.steps_per_epoch):.3g} epochs of {self.n} training samples)")  # fmt: skip
        return steps

    def _total_steps(self) -> int:
        t = self.cfg.train
        if t.steps is not None:
            return t.steps
        b = parse_budget(t.budget)
        if b.kind != "time":
            raise ValueError("the config is not resolved: train.steps is open for a step or epoch budget")
        steps = self._calibrate(b.value)
        if steps < MIN_USEFUL_STEPS:
            e = self.cfg.encoder
            self._say(f"WARNING: the {t.budget} budget buys only {steps} steps of {self.cfg.method.name} with "
                      f"{e.name} {_size(e.params)} at batch {t.batch_size} on this {self.device.type}, too few to "
                      f"learn much (aim for {MIN_USEFUL_STEPS}+); use a longer --budget, a smaller encoder "
                      f"(--width / --set encoder.dim=...) or a smaller --batch-size")  # fmt: skip
        return steps

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Run:
        t = self.cfg.train
        self._budget = None
        total = self.total = self._total_steps()
        warmup = t.warmup_steps if t.warmup_steps is not None else int(t.warmup * total)
        cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(t, steps=total, warmup_steps=warmup))
        # a short plan (a quarter under REPLAN_MIN_STEPS steps) is re-planned at that step, if it comes before the end
        replan_at = max(warmup, int(REPLAN_SHARE * total), REPLAN_MIN_STEPS) if self._budget is not None else None
        replan_at = replan_at if replan_at is not None and replan_at < total else None
        first_plan, replanned_at = as_plans(t.first_plan, t.replanned_at)  # as config.yaml says: --config repeats it
        check_at = None  # the next later check of the budget (after the first re-plan)
        if self.rank == 0 and self.start_step == 0:
            runs.save_config(self.run_dir, cfg)
            runs.write_encoder_json(self.run_dir, cfg.encoder.name, self.spec, cfg.encoder.params,
                                    eval_encoder_name(self.method))  # fmt: skip
        every = parse_budget(t.checkpoint_every, "train.checkpoint_every")
        logger = RunLogger(self.run_dir, total, enabled=self.rank == 0, log=self.log, start_step=self.start_step,
                           time_offset=self.cost["wall_s"])  # fmt: skip
        self.method.train()
        start = time.perf_counter()
        self._segment_start, self._segment_step = start, self.start_step
        last_ckpt_time, last_ckpt_step = start, self.start_step
        window_t, window_n = start, 0
        watch = CollapseWatch(getattr(self.method, "collapse_advice", DEFAULT_ADVICE))
        try:
            step, since = self.start_step, None
            while step < self.total:
                lr = t.lr * warmup_cosine(step, self.total, warmup, first_plan, replanned_at)
                run_step = self._counted_step if step == self.start_step else self._step
                hook_total = plan_at(step, self.total, first_plan, replanned_at)  # the length the hooks were given
                loss, out, grad_norm, finite = run_step(step, lr, hook_total)
                if not finite:
                    self._diverged(step, loss, grad_norm)
                window_n += t.batch_size
                done = step + 1
                if done % t.log_every == 0 or done == self.total or step == self.start_step:
                    rate = window_n / max(1e-9, time.perf_counter() - window_t)
                    metrics = {"loss": float(loss), "lr": lr, "grad_norm": float(grad_norm), "samples_per_s": rate,
                               **metric_floats(out.metrics)}  # fmt: skip
                    if out.embedding is not None:
                        stats = collapse_stats(out.embedding)
                        metrics.update(stats)
                        line = watch.observe(stats)
                        if line:
                            logger.message(line)
                    logger.step(done, metrics, done - self.start_step, rate)
                    window_t, window_n = time.perf_counter(), 0
                if replan_at is not None and done == replan_at // 2:
                    since = (done, time.perf_counter())
                due = done < self.total and self._checkpoint_due(every, done, last_ckpt_time, last_ckpt_step)
                if replan_at is not None and (done == replan_at or (due and done >= max(warmup, REPLAN_MIN_STEPS))):
                    replan_at = None
                    cfg = self._replan(cfg, done, since, first_plan, replanned_at)
                    logger.total, since = self.total, (done, time.perf_counter())
                    check_at = self._next_check(done)
                elif check_at is not None and done == check_at:
                    cfg = self._replan(cfg, done, since, first_plan, replanned_at, CHECK_TOLERANCE)
                    logger.total, since = self.total, (done, time.perf_counter())
                    check_at = self._next_check(done)
                if due and replan_at is None:
                    self._save(done)
                    last_ckpt_time, last_ckpt_step = time.perf_counter(), done
                step += 1
            self._save(self.total)
        finally:
            logger.close()
        self._write_cost()
        if D.is_dist():
            torch.distributed.barrier()
        return Run(self.run_dir, cfg)

    def _next_check(self, done: int) -> int | None:
        """The next step before the end at one of ``CHECK_SHARES`` of the plan in force, at least half of
        ``REPLAN_MIN_STEPS`` steps after ``done``: a pace timed over one or two steps is noise."""
        gap = max(1, REPLAN_MIN_STEPS // 2)
        at = [int(share * self.total) for share in CHECK_SHARES]
        later = [step for step in at if done + gap <= step < self.total]
        return later[0] if later else None

    def _replan(self, cfg: RunConfig, done: int, since: tuple[int, float] | None, plans: list[int],
                steps: list[int], tolerance: float | None = None) -> RunConfig:  # fmt: skip
        """Size the rest of the run to what is left of the budget at the pace of the steps ``since`` (the
        first steps of a process are slower), on rank 0's clock, and rewrite config.yaml with the new count and
        ``plans`` / ``steps`` (updated in place) extended by the count before and this step. With a
        ``tolerance`` (a later check), a pace whose finish misses the budget by at most that share of it
        changes nothing."""
        (t0, seconds), now = self._budget, time.perf_counter()
        start_step, start_time = since if since is not None and since[0] < done else (
            self.start_step, self._segment_start)  # fmt: skip
        per_step = (now - start_time) / max(1, done - start_step)
        left = seconds - (now - t0)
        within = tolerance is not None and abs((self.total - done) * per_step - left) <= tolerance * seconds
        total = self._broadcast_int(self.total if within else done + max(1, int(left / per_step)))
        if tolerance is not None and total == self.total:
            return cfg
        plans.append(self.total)
        steps.append(done)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=total, first_plan=list(plans),
                                                                 replanned_at=list(steps)))  # fmt: skip
        if total != self.total:
            self._say(f"re-planned at step {done}: {per_step:.2f} s/step -> {total} steps (was {self.total})")
        if total < MIN_USEFUL_STEPS <= self.total:
            self._say(f"WARNING: at this pace the {cfg.train.budget} budget buys only {total} steps, too few to learn "
                      f"much (aim for {MIN_USEFUL_STEPS}+); is another job using the {self.device.type}? A longer "
                      "--budget or a quieter machine helps")  # fmt: skip
        self.total = total
        if self.rank == 0:
            runs.save_config(self.run_dir, cfg)
        return cfg

    def _diverged(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor):
        last = runs.latest_checkpoint(self.run_dir)
        kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
        what = (f"loss became {loss.item()}" if not torch.isfinite(loss)
                else f"gradients became non-finite (norm {grad_norm.item()}, loss {loss.item():.4f})")  # fmt: skip
        raise TrainingDiverged(f"{what} at step {step + 1}; {kept}; "
                               "lower train.lr (--lr) or use --precision fp32")  # fmt: skip

    def _checkpoint_due(self, every, done: int, last_time: float, last_step: int) -> bool:
        """Whether to save after step ``done``. A duration is rank 0's clock, broadcast, so every rank
        reaches the save (and its barrier) at the same step."""
        if every.kind != "time":
            per = self.steps_per_epoch if every.kind == "epochs" else 1
            return done - last_step >= every.value * per
        return bool(self._broadcast_int(int(time.perf_counter() - last_time >= every.value)))

    def _segment_cost(self, step: int) -> dict:
        """Cumulative cost up to ``step``: earlier segments (from the checkpoint) plus this one."""
        c = dict(self.cost)
        steps = step - self._segment_step
        c["wall_s"] = round(c["wall_s"] + time.perf_counter() - self._segment_start, 3)
        c["steps"] = c["steps"] + steps
        c["samples"] = c["samples"] + steps * self.cfg.train.batch_size
        c["peak_memory_bytes"] = max(c["peak_memory_bytes"], _peak_memory(self.device))
        c["segments"] = c["segments"] + 1
        return c

    def _save(self, step: int) -> None:
        if self.rank == 0:
            state = {"step": step, "optimizer": self.optimizer.state_dict(), "cost": self._segment_cost(step)}
            runs.save_checkpoint(self.run_dir, step, self.method, state, keep=self.cfg.train.keep_checkpoints)
        if D.is_dist():
            torch.distributed.barrier()

    def _write_cost(self) -> None:
        if self.rank != 0:
            return
        c = self._segment_cost(self.total)
        if self.ragged and c.get("flops_per_step") and c.get("flops_step") is not None:
            # a step's FLOPs grow with its padded input (rows x longest clip): scaled from the counted step
            sizes = self._padded_sizes(self.total)
            c["flops"] = int(c["flops_per_step"]) * int(sizes.sum()) // int(sizes[c["flops_step"]])  # Python ints:
            # the product passes int64's range on a run of a few hundred steps
        write_cost(self.run_dir, c, self.cfg.train.batch_size, self.device, self.world, self.channels_last)


def _size(params: dict) -> str:
    keys = [k for k in ("width", "dim", "depth") if params.get(k) is not None]
    return ", ".join(f"{k} {params[k]}" for k in keys)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder; choose another --out")
    has_run = runs.latest_checkpoint(run_dir) is not None
    if resume and not has_run:
        raise UserError(f"{run_dir} has no checkpoint to resume from; start it without --resume")
    if not resume and has_run:
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                        "or choose another --out")  # fmt: skip


def _check_group_fields(data) -> None:
    """``data.pretrain_groups`` and ``data.balance_by`` well formed, before anything is loaded."""
    if data.pretrain_groups is not None:
        parse_group_shares(data.pretrain_groups)
    attr = data.balance_by
    if attr is not None and (not isinstance(attr, str) or not attr.strip() or any(c in attr for c in "=:,")):
        raise UserError(f"--balance-by {attr!r}: name one group attribute (e.g. --balance-by accent)")


def _check_balance_by(ds, attr: str | None) -> None:
    """``data.balance_by`` names a group of the loaded data (text and sequences: bidirectional token windows carry
    their document's groups; packed causal rows carry none, which the trainer refuses in one line)."""
    if attr is None:
        return
    check_groups(ds.train, attr, "--balance-by")


def _resample_groups(ds, cfg: RunConfig, say):
    """``ds`` with its training split resampled to ``data.pretrain_groups`` (seeded by train.seed), saying so."""
    if cfg.data.pretrain_groups is None:
        return ds
    train, line = resample_split(ds.train, cfg.data.pretrain_groups, _seed_for(cfg.train.seed, GROUPS_TAG))
    say(line)
    return dataclasses.replace(ds, train=train)


def pretrain(cfg: RunConfig, resume: bool = False, log=print) -> Run:
    """Resolve ``cfg`` against its data and this device, then train; ``resume`` continues the run in ``cfg.out``
    (a finished run is left untouched)."""
    cfg.validate()
    _check_group_fields(cfg.data)
    device = D.local_device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device={cfg.train.device!r} but CUDA is not available here; use --device cpu")
    D.init_from_env(device)
    say = log if D.rank() == 0 else (lambda s: None)
    run_dir = Path(cfg.out)
    if resume and runs.is_finished(run_dir):
        say(f"{run_dir} finished at step {cfg.train.steps}; nothing to resume (evaluate it with `selfsup eval`)")
        return Run(run_dir, cfg)
    _check_run_dir(run_dir, resume)
    ds = load_configured(cfg.data, cfg.data.limit, log=say)
    _check_balance_by(ds, cfg.data.balance_by)
    ds = _resample_groups(ds, cfg, say)
    ds = prepare.for_pretraining(ds, cfg, METHODS.get(cfg.method.name), run_dir, device.type, resume, say)
    notes: list[str] = []
    resolved = resolve(cfg, ds, device.type, D.world_size(), notes)
    for line in notes:
        say(line)
    if D.rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh start where a run died before its first checkpoint: no stale rows
            runs.truncate_metrics(run_dir, 0)
    torch.manual_seed(resolved.train.seed)
    method = build_method(resolved, ds.spec)
    if getattr(method, "wants_word_pieces", False):  # whole-word masking reads the tokenizer's word pieces
        from selfsup.data.tokens import word_piece_table

        method.set_word_pieces(word_piece_table(ds.tokenizer))
    return Trainer(resolved, method, ds, device, resume=resume, log=log).fit()
