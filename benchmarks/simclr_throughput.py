"""SimCLR training throughput: selfsup's in-process batched views vs lightly's standard DataLoader pipeline.

Both pipelines train the same network on Fashion-MNIST (32 px, replicated to RGB): selfsup's CIFAR-stem
ResNet-18 (width 64) as the backbone, SGD (selfsup's ``build_optimizer("sgd")``), one forward pass over the
concatenated pair of views. What differs is only how the views are made, the projection head and the loss:

* lightly  -- ``SimCLRTransform`` on PIL images in a ``DataLoader`` (``--workers`` processes, shuffle,
  drop_last, persistent workers), ``SimCLRProjectionHead(512, 512, 128)``, ``NTXentLoss(temperature=0.5)``.
* selfsup  -- the whole uint8 dataset as one tensor on the device, two batched views per step from
  ``SimCLR.views`` in the training process (no worker processes), channels_last, ``mlp_head`` + ``nt_xent``:
  the training step of ``selfsup.train.loop.Trainer``.
* model alone -- selfsup's step on one fixed batch of views (no augmentation, no data loading): the
  compute bound both pipelines approach.

Each pipeline runs in its own subprocess (so its peak memory is its own). On CPU the three subprocesses
start together and take turns of ``--slice`` seconds (the others are stopped with SIGSTOP meanwhile, their
DataLoader workers included), so that a machine whose speed drifts -- a shared VM -- slows them equally;
each step is timed over the slices its pipeline ran in. ``--slice 0`` runs them one after the other (always
so on CUDA). This process samples the memory of each subprocess tree (main process + DataLoader workers) and
the CPU time other processes take meanwhile ("other load"), and prints a table.

    python benchmarks/simclr_throughput.py                       # CPU or CUDA, whichever is there
    python benchmarks/simclr_throughput.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("lightly", "selfsup")
MODEL_ALONE = "model-alone"
LABELS = {
    "lightly": "lightly (DataLoader + SimCLRTransform)",
    "selfsup": "selfsup (batched views in-process)",
    MODEL_ALONE: "model alone (fixed views, no augmentation)",
}
IMAGE_SIZE, WIDTH, PROJ_HIDDEN, PROJ_DIM, TEMPERATURE = 32, 64, 512, 128, 0.5
LR_PER_256, WEIGHT_DECAY = 0.06, 5e-4  # SGD; build_optimizer("sgd") uses momentum 0.9 (Nesterov)
RESULT_PREFIX = "RESULT "
ENV_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
QUIET_LOAD = 0.2  # a step is "quiet" when other processes used fewer cores than this meanwhile
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PSS_INTERVAL = 2.0  # seconds between PSS samples (RSS: every --sample-interval)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# =============================================================================== the measured subprocesses


def _load_images():
    """Fashion-MNIST train images, uint8 [N, 1, 32, 32], read into RAM (as the Trainer does for small sets)."""
    import numpy as np

    from selfsup.data import load_dataset

    ds = load_dataset("fashion-mnist", image_size=IMAGE_SIZE, log=lambda s: print(s, file=sys.stderr))
    return np.array(ds.train_x)


def _encoder(mean, std):
    from selfsup.encoders.resnet import ResNetEncoder

    return ResNetEncoder(18, in_channels=3, image_size=IMAGE_SIZE, small_stem=True, width=WIDTH, mean=mean, std=std)


class _Timer:
    """Wall time of the timed steps; on CUDA the device is synchronized at both ends."""

    def __init__(self, device):
        self.device = device

    def now(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _train(step_fn, warmup: int, steps: int, timer: _Timer, log) -> dict:
    """Run ``warmup`` then ``steps`` calls of ``step_fn`` (which returns the loss tensor); time the latter."""
    for i in range(warmup):
        step_fn(i)
    log(f"warm-up done ({warmup} steps)")
    t0 = timer.now()
    marks = [time.monotonic()]  # system-wide clock: the parent matches steps with its CPU-load samples
    loss = None
    for i in range(warmup, warmup + steps):
        loss = step_fn(i)
        marks.append(time.monotonic())  # host-side; on CUDA only the total below is meaningful
    t1 = timer.now()
    per_step = [b - a for a, b in zip(marks[:-1], marks[1:])]
    return {
        "seconds": t1 - t0,
        "step_seconds": per_step,
        "step_marks": marks,
        "final_loss": float(loss.detach().float()),
    }


def _memory_report(device) -> dict:
    import torch

    ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    out = {"ru_maxrss_self_bytes": ru_self * scale, "ru_maxrss_children_bytes": ru_children * scale}
    if device.type == "cuda":
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return out


def run_pipeline(args) -> dict:
    """Body of a measured subprocess: build one pipeline, train warm-up + timed steps, report."""
    import numpy as np
    import torch

    from selfsup.train.loop import channel_stats
    from selfsup.train.optim import build_optimizer

    def log(text: str) -> None:
        print(f"  [{args.role}] {text}", file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def autocast():  # bf16 on CUDA for both sides, as the Trainer's precision="auto"; off on CPU
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    channels_last = cuda or args.role != "lightly" or args.lightly_channels_last
    B = args.batch_size
    lr = LR_PER_256 * B / 256
    images = _load_images()  # uint8 [N, 1, 32, 32]
    n = len(images)
    mean, std = channel_stats(images)  # as the Trainer: the encoder normalizes with the dataset's statistics
    torch.manual_seed(args.seed)

    if args.role == "lightly":
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform
        from PIL import Image
        from torch import nn
        from torch.utils.data import DataLoader, Dataset

        class PILImages(Dataset):
            """uint8 HWC RGB images handed to the transform as PIL images, as an image-folder dataset would."""

            def __init__(self, hwc, transform):
                self.hwc, self.transform = hwc, transform

            def __len__(self):
                return len(self.hwc)

            def __getitem__(self, i):
                return self.transform(Image.fromarray(self.hwc[i]))  # [view1, view2]

        class LightlySimCLR(nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder
                self.projection_head = SimCLRProjectionHead(encoder.dim, PROJ_HIDDEN, PROJ_DIM)
                self.criterion = NTXentLoss(temperature=TEMPERATURE)

            def forward(self, x0, x1):
                z = self.projection_head(self.encoder(torch.cat([x0, x1])).pooled)  # [2B, 128]
                z0, z1 = z.chunk(2)
                return self.criterion(z0, z1)

        rgb = np.ascontiguousarray(np.broadcast_to(images.transpose(0, 2, 3, 1), (n, IMAGE_SIZE, IMAGE_SIZE, 3)))
        del images
        transform = SimCLRTransform(input_size=IMAGE_SIZE, cj_strength=0.5, gaussian_blur=0.0)
        loader = DataLoader(
            PILImages(rgb, transform),
            batch_size=B,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            pin_memory=cuda,
        )
        # lightly's transform already normalizes (ImageNet statistics): the encoder's own input
        # normalization is set to the identity, which costs the same as selfsup's.
        model = LightlySimCLR(_encoder(0.0, 1.0)).to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, "sgd", lr, WEIGHT_DECAY)
        compiled = torch.compile(model) if args.compile else model
        batches = iter(loader)

        def step(i):
            nonlocal batches
            t = time.monotonic()
            try:
                x0, x1 = next(batches)
            except StopIteration:
                batches = iter(loader)
                x0, x1 = next(batches)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x0 = x0.to(device, non_blocking=True, memory_format=fmt)
            x1 = x1.to(device, non_blocking=True, memory_format=fmt)
            data_spans.append((t, time.monotonic()))  # waiting for the loader
            with autocast():
                loss = compiled(x0, x1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

    else:
        from selfsup.methods.simclr import SimCLR, SimCLRParams

        # the same views as SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0): crops of
        # 8-100% of the image (selfsup's own default is 20%), jitter strength 0.5, no blur
        params = SimCLRParams(
            temperature=TEMPERATURE,
            proj_hidden=PROJ_HIDDEN,
            proj_dim=PROJ_DIM,
            jitter_strength=0.5,
            crop_scale_min=0.08,
            blur_p=0.0,
        )
        method = SimCLR(_encoder(mean, std), params, IMAGE_SIZE).to(device)
        method.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(method, "sgd", lr, WEIGHT_DECAY)
        model = torch.compile(method) if args.compile else method
        data = torch.from_numpy(images).expand(-1, 3, -1, -1).contiguous()  # uint8 [N, 3, 32, 32]
        del images
        data = data.to(device)  # the Trainer keeps a dataset this small on the GPU
        steps_per_epoch = n // B

        perm_cache: dict[int, torch.Tensor] = {}

        def make_views(i):
            # the Trainer's _indices + _views: one seeded permutation per epoch, views under no_grad
            epoch, pos = divmod(i, steps_per_epoch)
            if epoch not in perm_cache:
                perm_cache.clear()
                perm_cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
            idx = perm_cache[epoch][pos * B : (pos + 1) * B].to(device)
            g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + i)
            with torch.no_grad():
                views = method.views(data[idx], g)
            return tuple(v.contiguous(memory_format=torch.channels_last) for v in views)

        fixed = make_views(0) if args.role == MODEL_ALONE else None

        def step(i):
            t = time.monotonic()
            views = fixed if fixed is not None else make_views(i)
            data_spans.append((t, time.monotonic()))  # making the views
            with autocast():
                out = model(views)
            out.loss.backward()
            loss = out.loss.detach()
            if not torch.isfinite(loss):  # the Trainer's guard (a host sync per step on CUDA)
                raise RuntimeError(f"loss became {loss.item()} at step {i}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

    data_spans: list[tuple[float, float]] = []  # (monotonic start, end) of getting each step's views
    log(
        f"built on {device}; {args.threads} threads, batch {B}"
        + (f", {args.workers} loader workers" if args.role == "lightly" else "")
    )
    timing = _train(step, args.warmup, args.steps, _Timer(device), log)
    extra = {}
    if args.role == "lightly":
        del batches, loader  # joins the persistent workers, so RUSAGE_CHILDREN covers them
        # what the workers spend per batch: the transform of B images in one process (CPU time, so
        # that being stopped by the harness does not count)
        torch.set_num_threads(1)
        for j in range(16):  # the first calls in a process are slower
            transform(Image.fromarray(rgb[j]))
        c0 = time.process_time()
        for j in range(B):
            transform(Image.fromarray(rgb[j]))
        extra["transform_cpu_s_per_batch"] = time.process_time() - c0
    result = {
        "role": args.role,
        "images_per_s": B * args.steps / timing["seconds"],
        "batch_size": B,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "workers": args.workers if args.role == "lightly" else 0,
        "channels_last": channels_last,
        "autocast": "bf16" if cuda else None,
        "compile": args.compile,
        **timing,
        "data_spans": data_spans[args.warmup :],
        **extra,
        **_memory_report(device),
    }
    return result


# =============================================================================== running and watching the subprocesses


def _read_kib(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _cpu_ticks(pid: int | str) -> int | None:
    """utime + stime of one process, in clock ticks (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _busy_ticks() -> int:
    """CPU time spent by every process on the machine (all cores), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


class Measured:
    """One pipeline's subprocess, in its own session so that it and its DataLoader workers can be
    stopped and continued together; the memory of its process tree, sampled from /proc (Linux).

    Memory: peak of the summed RSS and of the summed PSS. RSS counts pages shared between the main
    process and its forked workers (libraries, the dataset array) once per process; PSS splits each
    shared page between the processes mapping it, so the PSS sum is what the pipeline occupies.
    """

    def __init__(self, role: str, cmd: list[str]):
        self.role = role
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
        self.pid = self.proc.pid
        self.on_proc = os.path.isdir(f"/proc/{self.pid}")
        self.rss = self.pss = self.max_procs = 0
        self.running: list[tuple[float, float]] = []  # (monotonic start, end) of the slices it ran in
        self.t0 = time.perf_counter()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def sample(self, with_pss: bool, ticks: dict[int, int]) -> None:
        """Add one memory sample; record the CPU ticks of every process of the tree in ``ticks``.

        Reading PSS (smaps_rollup) costs milliseconds per process, RSS microseconds.
        """
        if not self.on_proc or not self.alive():
            return
        rss = pss = 0
        pids = _tree(self.pid)
        for p in pids:
            rss += _read_kib(f"/proc/{p}/status", "VmRSS:") or 0
            if with_pss:
                pss += _read_kib(f"/proc/{p}/smaps_rollup", "Pss:") or 0
            t = _cpu_ticks(p)
            if t is not None:
                ticks[p] = max(t, ticks.get(p, 0))
        self.rss, self.pss = max(self.rss, rss * 1024), max(self.pss, pss * 1024)
        self.max_procs = max(self.max_procs, len(pids))

    def result(self) -> dict:
        stdout = self.proc.stdout.read()
        self.proc.wait()
        if self.proc.returncode != 0:
            raise SystemExit(f"the {self.role} run failed (exit {self.proc.returncode})")
        line = next(s for s in reversed(stdout.splitlines()) if s.startswith(RESULT_PREFIX))
        r = json.loads(line[len(RESULT_PREFIX) :])
        r["wall_s_subprocess"] = time.perf_counter() - self.t0
        if self.on_proc:
            r.update(tree_peak_rss_bytes=max(self.rss, r["ru_maxrss_self_bytes"]), tree_peak_pss_bytes=self.pss)
            r.update(tree_max_processes=self.max_procs, memory_method="/proc sampling")
        else:  # no /proc: getrusage's main-process peak plus the largest child's peak
            r["tree_peak_rss_bytes"] = r["ru_maxrss_self_bytes"] + r["ru_maxrss_children_bytes"]
            r["memory_method"] = "getrusage(SELF) + getrusage(CHILDREN)"
        return r


class CpuLog:
    """The machine's busy CPU time and ours (the measured trees and this process), over time, so that
    a step can be checked for other processes' load."""

    def __init__(self):
        self.on = os.path.isfile("/proc/stat")
        self.points: list[tuple[float, int, int]] = []  # (monotonic time, machine busy ticks, our ticks)

    def add(self, ticks: dict[int, int]) -> None:
        if self.on:
            own = _cpu_ticks("self") or 0
            self.points.append((time.monotonic(), _busy_ticks(), sum(ticks.values()) + own))

    def _at(self, t: float):
        pts = self.points
        for (ta, ba, oa), (tb, bb, ob) in zip(pts, pts[1:]):
            if ta <= t <= tb:
                w = (t - ta) / (tb - ta) if tb > ta else 0.0
                return ba + w * (bb - ba), oa + w * (ob - oa)
        return None

    def other_load(self, segments: list[tuple[float, float]]) -> float | None:
        """Mean number of cores that other processes kept busy during ``segments`` (monotonic times)."""
        foreign = seconds = 0.0
        for a, b in segments:
            pa, pb = self._at(a), self._at(b)
            if pa is None or pb is None:
                return None
            foreign += (pb[0] - pa[0]) - (pb[1] - pa[1])
            seconds += b - a
        return max(0.0, foreign / CLOCK_TICKS / seconds) if seconds > 0 else None


def _overlap(a: float, b: float, running: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of [a, b] during which the pipeline was running (not stopped)."""
    return [(max(a, s), min(b, e)) for s, e in running if min(b, e) > max(a, s)]


def _ran(a: float, b: float, running: list[tuple[float, float]]) -> float:
    """Seconds of [a, b] during which the pipeline was running."""
    return sum(e - s for s, e in _overlap(a, b, running))


def run_together(roles: list[str], args, base_cmd: list[str], slice_s: float | None) -> list[dict]:
    """Run the pipelines in ``roles`` to completion and return their results.

    With ``slice_s``, all start at once but only one runs at a time: each in turn is continued for
    ``slice_s`` seconds while the others are stopped (SIGSTOP to the whole process tree), so they share
    the machine's drifting speed fairly. A pipeline's step times then count only the slices it ran in.
    Without it, ``roles`` must be a single pipeline.
    """
    ticks: dict[int, int] = {}
    cpu = CpuLog()
    group = []
    for role in roles:
        print(f"-> {LABELS[role]}", flush=True)
        m = Measured(role, base_cmd + ["--role", role])
        if slice_s is not None:
            m.signal(signal.SIGSTOP)
        group.append(m)
    last_pss, turn = 0.0, 0
    try:
        while any(m.alive() for m in group):
            m = group[turn % len(group)]
            turn += 1
            if not m.alive():
                continue
            m.signal(signal.SIGCONT)
            start = time.monotonic()
            while m.alive() and (slice_s is None or time.monotonic() - start < slice_s):
                now = time.perf_counter()
                with_pss = now - last_pss >= PSS_INTERVAL
                last_pss = now if with_pss else last_pss
                for x in group:
                    x.sample(with_pss and x is m, ticks)
                cpu.add(ticks)
                time.sleep(args.sample_interval)
            if slice_s is not None:
                m.signal(signal.SIGSTOP)
            m.running.append((start, time.monotonic()))
    finally:  # never leave a stopped process behind
        for m in group:
            m.signal(signal.SIGCONT)
            if m.alive() and sys.exc_info()[0] is not None:
                m.signal(signal.SIGKILL)
    results = []
    for m in group:
        r = m.result()
        marks = r["step_marks"]
        steps = [(a, b) for a, b in zip(marks[:-1], marks[1:])]
        spans = r.pop("data_spans")
        r["data_seconds"] = [b - a for a, b in spans]
        if slice_s is not None:  # a step's time: only while the pipeline was running
            r["step_seconds"] = [_ran(a, b, m.running) for a, b in steps]
            r["data_seconds"] = [_ran(a, b, m.running) for a, b in spans]
            r["seconds"] = sum(r["step_seconds"])
            r["images_per_s"] = r["batch_size"] * r["steps"] / r["seconds"]
        if cpu.on:
            r["other_load_cores"] = cpu.other_load(_overlap(marks[0], marks[-1], m.running))
            r["step_other_load_cores"] = [cpu.other_load(_overlap(a, b, m.running)) for a, b in steps]
        r["slice_s"] = slice_s
        load = r.get("other_load_cores")
        print(
            f"   {LABELS[m.role]}: {r['images_per_s']:.1f} images/s ({r['seconds']:.1f} s for {r['steps']} steps"
            + ("" if load is None else f"; other processes kept {load:.2f} cores busy")
            + ")",
            flush=True,
        )
        results.append(r)
    return results


# =============================================================================== orchestration and report


def _mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MiB"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "lightly", "selfsup", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _quiet(rs: list[dict]) -> tuple[float | None, int]:
    """images/s over the steps of all rounds during which other processes left the CPUs alone, and their number."""
    n = t = steps = 0
    for r in rs:
        for dt, load in zip(r["step_seconds"], r.get("step_other_load_cores") or []):
            if load is not None and load < QUIET_LOAD:
                n, t, steps = n + r["batch_size"], t + dt, steps + 1
    return (n / t if t else None), steps


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Median images/s over the rounds of each pipeline; memory: the largest peak seen."""
    out = {}
    for role, rs in runs.items():
        out[role] = {
            "images_per_s": statistics.median(r["images_per_s"] for r in rs),
            "images_per_s_rounds": [round(r["images_per_s"], 2) for r in rs],
            # robust to a burst of load from other processes: the batch over the median step time
            "images_per_s_median_step": statistics.median(
                r["batch_size"] / statistics.median(r["step_seconds"]) for r in rs
            ),
            # time the training loop spent getting each step's views: waiting for the loader (lightly) or
            # making them (selfsup); on CUDA, host time (the kernels are queued, not finished)
            "views_seconds_per_step": statistics.median(statistics.mean(r["data_seconds"]) for r in rs),
            "transform_cpu_s_per_batch": statistics.median(r.get("transform_cpu_s_per_batch", 0.0) for r in rs),
            "other_load_cores": max((r.get("other_load_cores") or 0.0) for r in rs),
            "images_per_s_quiet": _quiet(rs)[0],
            "quiet_steps": _quiet(rs)[1],
            "tree_peak_rss_bytes": max(r["tree_peak_rss_bytes"] for r in rs),
            "tree_peak_pss_bytes": max((r.get("tree_peak_pss_bytes") or 0) for r in rs) or None,
            "main_peak_rss_bytes": max(r["ru_maxrss_self_bytes"] for r in rs),
            "cuda_max_allocated_bytes": max((r.get("cuda_max_allocated_bytes") or 0) for r in rs) or None,
        }
    return out


def _quiet_cell(s: dict) -> str:
    rate = s["images_per_s_quiet"]
    return "- (none)" if rate is None else f"{rate:.1f} ({s['quiet_steps']} steps)"


def print_table(summary: dict, device: str, batch: int) -> None:
    ceiling = summary[MODEL_ALONE]["images_per_s"]
    cpu = device == "cpu"  # on CUDA the host-side step times are launch times, not step times
    quiet = f"images/s, quiet steps (other load < {QUIET_LOAD:g})"
    cols = ["pipeline", "images/s", "of model alone", "views, ms/step"]
    cols += ["other load (cores)", quiet] if cpu else []
    cols += ["peak RSS (tree)", "peak PSS (tree)", "peak RSS (main)"] + ([] if cpu else ["CUDA max allocated"])
    rows = []
    for role in (*PIPELINES, MODEL_ALONE):
        s = summary[role]
        row = [
            LABELS[role],
            f"{s['images_per_s']:.1f}",
            f"{100 * s['images_per_s'] / ceiling:.0f}%",
            f"{1e3 * s['views_seconds_per_step']:.0f}",
            *([f"{s['other_load_cores']:.2f}", _quiet_cell(s)] if cpu else []),
            _mib(s["tree_peak_rss_bytes"]),
            _mib(s["tree_peak_pss_bytes"]),
            _mib(s["main_peak_rss_bytes"]),
            *([] if cpu else [_mib(s["cuda_max_allocated_bytes"])]),
        ]
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: (
        "| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) + " |"
    )
    print()
    print(fmt(cols))
    print("|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(fmt(r))
    ratio = summary["selfsup"]["images_per_s"] / summary["lightly"]["images_per_s"]
    line = f"\nselfsup / lightly throughput: {ratio:.2f}x"
    q = [summary[r]["images_per_s_quiet"] for r in PIPELINES]
    if cpu and all(q):
        line += f"; over the quiet steps: {q[1] / q[0]:.2f}x"
    print(line)
    step_ms = 1e3 * summary[MODEL_ALONE]["images_per_s"] ** -1 * batch
    print(
        f"views, ms/step: the training loop's time getting a batch of views (lightly: waiting for the loader; "
        f"selfsup: making them), against {step_ms:.0f} ms for a model-alone step. lightly's workers spend "
        f"{1e3 * summary['lightly']['transform_cpu_s_per_batch']:.0f} ms of CPU per batch on SimCLRTransform "
        f"(one process), on the cores the model uses."
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 128 on CPU, 512 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 10 on CPU, 50 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default 2 on CPU, 10 on CUDA)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="lightly's DataLoader workers (default 2 on CPU, min(8, cores) on CUDA)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads of each pipeline's main process (default: all cores)"
    )
    p.add_argument("--rounds", type=int, default=1, help="rounds of the three runs; the median is reported")
    p.add_argument(
        "--slice",
        type=float,
        default=None,
        help="on CPU, run the three at once taking turns of this many seconds (default 5); 0: one after the other",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    p.add_argument(
        "--lightly-channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last model on the lightly side on CPU too (default: on, the same as selfsup)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-interval", type=float, default=0.2, help="seconds between memory samples")
    p.add_argument(
        "--json", dest="json_out", default=None, help="results file (default benchmarks/results/simclr_<device>.json)"
    )
    p.add_argument("--role", choices=[*PIPELINES, MODEL_ALONE], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 0) or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1, --warmup at least 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role:  # a measured subprocess
        result = run_pipeline(args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here")
    args.device = device
    cores = available_cores()
    args.batch_size = args.batch_size or (512 if device == "cuda" else 128)
    args.steps = args.steps or (50 if device == "cuda" else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if device == "cuda" else 2)
    args.workers = args.workers if args.workers is not None else (2 if device == "cpu" else min(8, cores))
    args.threads = args.threads or cores
    if device == "cuda" or not hasattr(signal, "SIGSTOP"):  # a stopped process's GPU work goes on: no slicing
        args.slice = 0.0
    args.slice = 5.0 if args.slice is None else args.slice
    json_out = Path(args.json_out) if args.json_out else ROOT / "benchmarks" / "results" / f"simclr_{device}.json"

    from selfsup.data import load_dataset

    load_dataset("fashion-mnist", image_size=IMAGE_SIZE)  # build the decode cache once, outside the timings

    base_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--device",
        device,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--lightly-channels-last" if args.lightly_channels_last else "--no-lightly-channels-last",
    ]
    if args.compile:
        base_cmd.append("--compile")
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"{_cpu_name()}, {cores} cores"
    load_before = os.getloadavg()
    print(
        f"SimCLR throughput on {machine}: ResNet-18 (CIFAR stem, width {WIDTH}), {IMAGE_SIZE}px Fashion-MNIST as RGB, "
        f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, {args.threads} torch threads, "
        f"{args.workers} lightly workers; load average {load_before[0]:.2f}; "
        + (f"the three runs take turns of {args.slice:g} s" if args.slice else "one run after the other"),
        flush=True,
    )

    runs: dict[str, list[dict]] = {role: [] for role in (*PIPELINES, MODEL_ALONE)}
    t0 = time.perf_counter()
    roles = [*PIPELINES, MODEL_ALONE]
    for r in range(args.rounds):
        order = roles[r % 3 :] + roles[: r % 3]  # each round another goes first
        if args.slice:  # all three at once, taking turns on the CPUs
            results = run_together(order, args, base_cmd, args.slice)
        else:  # one after the other
            results = [run_together([role], args, base_cmd, None)[0] for role in order]
        for res in results:
            runs[res["role"]].append(res)
    load_after = os.getloadavg()

    summary = summarize(runs)
    print_table(summary, device, args.batch_size)
    how = runs["selfsup"][0]["memory_method"]
    if how == "/proc sampling":
        how += f" (RSS every {args.sample_interval}s, PSS every {PSS_INTERVAL:g}s; PSS splits shared pages)"
    print(
        f"memory of each pipeline's process tree (main + loader workers): {how}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {time.perf_counter() - t0:.0f} s in all"
    )

    report = {
        "machine": machine,
        "device": device,
        "cores": cores,
        "versions": _versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("role", "json_out")},
        "model": f"selfsup ResNetEncoder(18, small_stem=True, width={WIDTH}), {IMAGE_SIZE}px RGB",
        "environment": {k: os.environ.get(k) for k in ENV_KEYS},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "harness_cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),  # this process's own user + system
        "ratio_selfsup_over_lightly": summary["selfsup"]["images_per_s"] / summary["lightly"]["images_per_s"],
        "summary": summary,
        "runs": runs,
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results written to {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
