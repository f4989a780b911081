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

Each pipeline runs in its own subprocess (so its peak memory is its own), the two alternately; this
process samples the memory of each subprocess tree (main process + DataLoader workers) while it runs.

    python benchmarks/simclr_throughput.py                       # CPU or CUDA, whichever is there
    python benchmarks/simclr_throughput.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
LR_PER_256, MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 5e-4  # SGD; build_optimizer("sgd") uses momentum 0.9 (Nesterov)
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
    per_step = [b - a for a, b in zip(marks[:-1], marks)]
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
    # the Trainer normalizes inside the encoder with the dataset's channel statistics
    gray = images[:10_000].astype(np.float32) / 255
    mean, std = float(gray.mean()), max(float(gray.std()), 1e-3)
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
            try:
                x0, x1 = next(batches)
            except StopIteration:
                batches = iter(loader)
                x0, x1 = next(batches)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x0 = x0.to(device, non_blocking=True, memory_format=fmt)
            x1 = x1.to(device, non_blocking=True, memory_format=fmt)
            with autocast():
                loss = compiled(x0, x1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

    else:
        from selfsup.methods.simclr import SimCLR, SimCLRParams

        params = SimCLRParams(
            temperature=TEMPERATURE, proj_hidden=PROJ_HIDDEN, proj_dim=PROJ_DIM, jitter_strength=0.5, blur_p=0.0
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
            views = fixed if fixed is not None else make_views(i)
            with autocast():
                out = model(views)
            out.loss.backward()
            loss = out.loss.detach()
            if not torch.isfinite(loss):  # the Trainer's guard (a host sync per step on CUDA)
                raise RuntimeError(f"loss became {loss.item()} at step {i}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

    log(
        f"built on {device}; {args.threads} threads, batch {B}"
        + (f", {args.workers} loader workers" if args.role == "lightly" else "")
    )
    timing = _train(step, args.warmup, args.steps, _Timer(device), log)
    if args.role == "lightly":
        del batches, loader  # joins the persistent workers, so RUSAGE_CHILDREN covers them
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
        **_memory_report(device),
    }
    return result


# =============================================================================== memory of a process tree


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


def _cpu_jiffies(pid: int | str) -> int:
    """utime + stime of one process, in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _busy_jiffies() -> int:
    """CPU time spent by every process on the machine (all cores), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


class TreeSampler:
    """Samples, from /proc (Linux), a process and its descendants: their memory, and the CPU load of
    every *other* process on the machine, so that a result taken on a busy machine is recognised as such.

    Memory: peak of the summed RSS and of the summed PSS. RSS counts pages shared between the main process
    and its forked DataLoader workers (libraries, the dataset array) once per process; PSS splits each
    shared page between the processes mapping it, so the PSS sum is what the whole pipeline occupies.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.enabled = os.path.isdir(f"/proc/{pid}")
        self.rss = self.pss = 0
        self.max_procs = 0
        self.cpu: list[tuple[float, int, int]] = []  # (monotonic time, machine busy ticks, ours)

    def sample(self, with_pss: bool = True) -> None:
        """Add one sample; reading PSS (smaps_rollup) costs milliseconds per process, RSS microseconds."""
        if not self.enabled:
            return
        rss = pss = 0
        pids = _tree(self.pid)
        for p in pids:
            rss += _read_kib(f"/proc/{p}/status", "VmRSS:") or 0
            if with_pss:
                pss += _read_kib(f"/proc/{p}/smaps_rollup", "Pss:") or 0
        self.rss, self.pss = max(self.rss, rss * 1024), max(self.pss, pss * 1024)
        self.max_procs = max(self.max_procs, len(pids))
        ours = sum(_cpu_jiffies(p) for p in pids) + _cpu_jiffies("self")  # the sampler's own time is ours
        self.cpu.append((time.monotonic(), _busy_jiffies(), ours))

    def other_load(self, t0: float, t1: float) -> float | None:
        """Mean number of cores that other processes kept busy between t0 and t1 (monotonic)."""

        def at(t):  # linear interpolation of (busy, ours) at time t
            for (ta, ba, oa), (tb, bb, ob) in zip(self.cpu, self.cpu[1:]):
                if ta <= t <= tb:
                    w = (t - ta) / (tb - ta) if tb > ta else 0.0
                    return ba + w * (bb - ba), oa + w * (ob - oa)
            return None

        a, b = at(t0), at(t1)
        if a is None or b is None or t1 <= t0:
            return None
        return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / CLOCK_TICKS / (t1 - t0))


def measure(role: str, args, base_cmd: list[str]) -> dict:
    """Run one pipeline in a subprocess, sampling its process tree's memory until it exits."""
    cmd = base_cmd + ["--role", role]
    print(f"-> {LABELS[role]}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    mem = TreeSampler(proc.pid)
    last_pss = 0.0
    while proc.poll() is None:
        now = time.perf_counter()
        with_pss = now - last_pss >= PSS_INTERVAL
        mem.sample(with_pss)
        last_pss = now if with_pss else last_pss
        time.sleep(args.sample_interval)
    stdout = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{role} run failed (exit {proc.returncode})")
    line = next(s for s in reversed(stdout.splitlines()) if s.startswith(RESULT_PREFIX))
    result = json.loads(line[len(RESULT_PREFIX) :])
    result["wall_s_subprocess"] = time.perf_counter() - t0
    if mem.enabled:
        result.update(
            tree_peak_rss_bytes=max(mem.rss, result["ru_maxrss_self_bytes"]),
            tree_peak_pss_bytes=mem.pss,
            tree_max_processes=mem.max_procs,
            memory_method="/proc sampling",
        )
        marks = result["step_marks"]
        steps_load = [mem.other_load(a, b) for a, b in zip(marks[:-1], marks[1:])]
        result["other_load_cores"] = mem.other_load(marks[0], marks[-1])
        result["step_other_load_cores"] = steps_load
        quiet = [dt for dt, load in zip(result["step_seconds"], steps_load) if load is not None and load < QUIET_LOAD]
        result["quiet_steps"] = len(quiet)
        result["images_per_s_quiet"] = result["batch_size"] * len(quiet) / sum(quiet) if quiet else None
    else:  # no /proc: getrusage's main-process peak plus the largest child's peak
        result.update(
            tree_peak_rss_bytes=result["ru_maxrss_self_bytes"] + result["ru_maxrss_children_bytes"],
            memory_method="getrusage(SELF) + getrusage(CHILDREN)",
        )
    load = result.get("other_load_cores")
    print(
        f"   {result['images_per_s']:.1f} images/s  ({result['seconds']:.1f} s for {result['steps']} steps"
        + ("" if load is None else f"; other processes kept {load:.2f} cores busy")
        + ")",
        flush=True,
    )
    return result


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


def _quiet_rate(rs: list[dict]) -> float | None:
    """images/s over the steps of all rounds during which other processes left the CPUs alone."""
    n = t = 0
    for r in rs:
        for dt, load in zip(r["step_seconds"], r.get("step_other_load_cores") or []):
            if load is not None and load < QUIET_LOAD:
                n, t = n + r["batch_size"], t + dt
    return n / t if t else None


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
            "other_load_cores": max((r.get("other_load_cores") or 0.0) for r in rs),
            "quiet_steps": sum(r.get("quiet_steps", 0) for r in rs),
            "images_per_s_quiet": _quiet_rate(rs),
            "tree_peak_rss_bytes": max(r["tree_peak_rss_bytes"] for r in rs),
            "tree_peak_pss_bytes": max((r.get("tree_peak_pss_bytes") or 0) for r in rs) or None,
            "main_peak_rss_bytes": max(r["ru_maxrss_self_bytes"] for r in rs),
            "cuda_max_allocated_bytes": max((r.get("cuda_max_allocated_bytes") or 0) for r in rs) or None,
        }
    return out


def _quiet_cell(s: dict) -> str:
    rate = s["images_per_s_quiet"]
    return "- (none)" if rate is None else f"{rate:.1f} ({s['quiet_steps']} steps)"


def print_table(summary: dict, device: str) -> None:
    ceiling = summary[MODEL_ALONE]["images_per_s"]
    cpu = device == "cpu"  # on CUDA the host-side step times are launch times, not step times
    quiet = f"images/s, quiet steps (other load < {QUIET_LOAD:g})"
    cols = ["pipeline", "images/s", "of model alone"] + (["other load (cores)", quiet] if cpu else [])
    cols += ["peak RSS (tree)", "peak PSS (tree)", "peak RSS (main)"] + ([] if cpu else ["CUDA max allocated"])
    rows = []
    for role in (*PIPELINES, MODEL_ALONE):
        s = summary[role]
        row = [
            LABELS[role],
            f"{s['images_per_s']:.1f}",
            f"{100 * s['images_per_s'] / ceiling:.0f}%",
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
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of lightly/selfsup (default 1)")
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
        f"{args.workers} lightly workers; load average {load_before[0]:.2f}",
        flush=True,
    )

    runs: dict[str, list[dict]] = {role: [] for role in (*PIPELINES, MODEL_ALONE)}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = PIPELINES if r % 2 == 0 else PIPELINES[::-1]  # alternate which goes first
        for role in order:
            runs[role].append(measure(role, args, base_cmd))
    runs[MODEL_ALONE].append(measure(MODEL_ALONE, args, base_cmd))
    load_after = os.getloadavg()

    summary = summarize(runs)
    print_table(summary, device)
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
