"""MoCo v2 training throughput: selfsup's ``moco`` method vs the same model built from lightly's parts.

Both pipelines train MoCo v2 on Fashion-MNIST (32 px, replicated to RGB) with the same settings: selfsup's
CIFAR-stem ResNet-18 (width 64) as the backbone, a 512-512-128 MLP head without BatchNorm, a momentum copy of
both (m = 0.99), a queue of 4096 negatives, InfoNCE at temperature 0.2, SGD (selfsup's
``build_optimizer("sgd")``), batch 128, no blur (32 px):

* lightly  -- written as lightly's MoCo example does it: ``MoCoProjectionHead(512, 512, 128)``,
  ``deactivate_requires_grad`` / ``update_momentum`` on deep copies of backbone and head,
  ``NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))``, and ``MoCoV2Transform(input_size=32,
  gaussian_blur=0.0)`` on PIL images in a ``DataLoader`` (``--workers`` processes, shuffle, drop_last,
  persistent workers).
* selfsup  -- ``selfsup.methods.moco.MoCo`` stepped the way ``selfsup.train.loop.Trainer`` steps it: the uint8
  dataset as one tensor on the device, batched views made in the training process from a seeded generator,
  channels_last, the finite-loss check, ``after_step`` for the momentum update.

Each pipeline runs in its own subprocess, one after the other (``--rounds N`` alternates the order and
reports the median), so that each has the machine to itself and its peak memory is its own. This process
samples the memory of each subprocess tree (main process + loader workers) and the CPU time that other
processes took during the timed steps ("other load"): on a shared machine the numbers are only as good as
that column says.

    python benchmarks/moco_throughput.py                       # CPU or CUDA, whichever is there
    python benchmarks/moco_throughput.py --device cuda --compile
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
LABELS = {"lightly": "lightly (DataLoader + MoCoV2Transform)", "selfsup": "selfsup moco (batched views in-process)"}
IMAGE_SIZE, WIDTH, PROJ_HIDDEN, PROJ_DIM = 32, 64, 512, 128
QUEUE, TEMPERATURE, MOMENTUM = 4096, 0.2, 0.99
LR_PER_256, WEIGHT_DECAY = 0.03, 1e-4  # MoCo v2's SGD settings
RESULT_PREFIX = "RESULT "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# =============================================================================== the measured subprocess


def _proc_ticks(pid: int | str) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc; just ``pid`` elsewhere)."""
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


def _busy_ticks() -> int:
    """CPU time used by every process on the machine, in clock ticks (0 without /proc)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except OSError:
        return 0
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def _load_images():
    """Fashion-MNIST train images, uint8 [N, 1, 32, 32], in RAM."""
    import numpy as np

    from selfsup.data import load_dataset

    ds = load_dataset("fashion-mnist", image_size=IMAGE_SIZE, log=lambda s: print(s, file=sys.stderr))
    return np.array(ds.train_x)


def _encoder(mean, std):
    from selfsup.encoders.resnet import ResNetEncoder

    return ResNetEncoder(18, in_channels=3, image_size=IMAGE_SIZE, small_stem=True, width=WIDTH, mean=mean, std=std)


def _lightly_step(args, images, device, autocast, lr):
    """lightly's MoCo v2, as its example writes it; returns step(i) -> loss."""
    import copy

    import numpy as np
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import MoCoV2Transform
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from selfsup.train.optim import build_optimizer

    class PILImages(Dataset):
        """uint8 HWC RGB images handed to the transform as PIL images, as an image-folder dataset would."""

        def __init__(self, hwc, transform):
            self.hwc, self.transform = hwc, transform

        def __len__(self):
            return len(self.hwc)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.hwc[i]))  # [query view, key view]

    class LightlyMoCo(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.projection_head = MoCoProjectionHead(backbone.dim, PROJ_HIDDEN, PROJ_DIM)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)

        def forward(self, x):
            return self.projection_head(self.backbone(x).pooled)

        def forward_momentum(self, x):
            return self.projection_head_momentum(self.backbone_momentum(x).pooled).detach()

    n = len(images)
    rgb = np.ascontiguousarray(np.broadcast_to(images.transpose(0, 2, 3, 1), (n, IMAGE_SIZE, IMAGE_SIZE, 3)))
    transform = MoCoV2Transform(input_size=IMAGE_SIZE, gaussian_blur=0.0)
    loader = DataLoader(PILImages(rgb, transform), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")  # fmt: skip
    # lightly's transform normalizes (ImageNet statistics): the encoder's own normalization is the identity
    model = LightlyMoCo(_encoder(0.0, 1.0)).to(device).to(memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=TEMPERATURE, memory_bank_size=(QUEUE, PROJ_DIM)).to(device)
    optimizer = build_optimizer(model, "sgd", lr, WEIGHT_DECAY)
    query_fn = torch.compile(model) if args.compile else model
    state = {"batches": iter(loader)}

    def step(i):
        try:
            x_query, x_key = next(state["batches"])
        except StopIteration:
            state["batches"] = iter(loader)
            x_query, x_key = next(state["batches"])
        x_query = x_query.to(device, non_blocking=True, memory_format=torch.channels_last)
        x_key = x_key.to(device, non_blocking=True, memory_format=torch.channels_last)
        update_momentum(model.backbone, model.backbone_momentum, m=MOMENTUM)
        update_momentum(model.projection_head, model.projection_head_momentum, m=MOMENTUM)
        with autocast():
            query = query_fn(x_query)
            key = model.forward_momentum(x_key)
            loss = criterion(query, key)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def close():
        state.pop("batches")  # joins the persistent workers, so RUSAGE_CHILDREN covers them

    return step, close


def _selfsup_step(args, images, device, autocast, lr):
    """selfsup's MoCo stepped as the Trainer steps it; returns step(i) -> loss."""
    import torch

    from selfsup.methods.moco import MoCo, MoCoParams
    from selfsup.train.loop import channel_stats
    from selfsup.train.optim import build_optimizer

    n, b = len(images), args.batch_size
    mean, std = channel_stats(images)  # as the Trainer: the encoder normalizes with the dataset's statistics
    params = MoCoParams(queue_size=QUEUE, momentum=MOMENTUM, temperature=TEMPERATURE, proj_hidden=PROJ_HIDDEN,
                        proj_dim=PROJ_DIM, jitter_strength=0.5, crop_scale_min=0.2, blur_p=0.0)  # fmt: skip
    method = MoCo(_encoder(mean, std), params, IMAGE_SIZE, num_samples=n).to(device)
    method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, "sgd", lr, WEIGHT_DECAY)
    model = torch.compile(method) if args.compile else method
    data = torch.from_numpy(images).expand(-1, 3, -1, -1).contiguous().to(device)  # uint8 [N, 3, 32, 32]
    steps_per_epoch = n // b
    perm: dict[int, torch.Tensor] = {}

    def step(i):
        epoch, pos = divmod(i, steps_per_epoch)  # the Trainer's _indices + _views
        if epoch not in perm:
            perm.clear()
            perm[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        idx = perm[epoch][pos * b : (pos + 1) * b].to(device)
        g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + i)
        with torch.no_grad():
            views = method.views(data[idx], g)
        views = tuple(v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for v in views)
        with autocast():
            out = model(views)
        out.loss.backward()
        loss = out.loss.detach()
        if not torch.isfinite(loss):  # the Trainer's guard
            raise RuntimeError(f"loss became {loss.item()} at step {i}")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(i, args.warmup + args.steps)
        return loss

    return step, lambda: None


def run_pipeline(args) -> dict:
    """Body of a measured subprocess: build one pipeline, run warm-up + timed steps, report."""
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)  # noqa: E731
    lr = LR_PER_256 * args.batch_size / 256
    images = _load_images()
    torch.manual_seed(args.seed)
    build = _lightly_step if args.role == "lightly" else _selfsup_step
    step, close = build(args, images, device, autocast, lr)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    for i in range(args.warmup):
        step(i)
    sync()
    print(f"  [{args.role}] warm-up done ({args.warmup} steps)", file=sys.stderr, flush=True)
    busy0, tree0, t0 = _busy_ticks(), sum(_proc_ticks(p) for p in _tree(os.getpid())), time.perf_counter()
    step_seconds, loss = [], None
    for i in range(args.warmup, args.warmup + args.steps):
        s = time.perf_counter()
        loss = step(i)
        step_seconds.append(time.perf_counter() - s)  # host time; on CUDA only the total is exact
    sync()
    seconds = time.perf_counter() - t0
    busy1, tree1 = _busy_ticks(), sum(_proc_ticks(p) for p in _tree(os.getpid()))
    other = max(0.0, ((busy1 - busy0) - (tree1 - tree0)) / CLOCK_TICKS / seconds) if busy1 else None
    close()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "role": args.role,
        "images_per_s": args.batch_size * args.steps / seconds,
        "seconds": seconds,
        "step_seconds": step_seconds,
        "final_loss": float(loss.float()),
        "other_load_cores": other,
        "threads": torch.get_num_threads(),
        "workers": args.workers if args.role == "lightly" else 0,
        "main_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "largest_worker_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
        "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
    }


# =============================================================================== orchestration and report


def _tree_rss(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0) * 1024
        except OSError:
            continue
    return total


def measure(role: str, base_cmd: list[str]) -> dict:
    """Run one pipeline in a subprocess; sample its process tree's RSS meanwhile."""
    print(f"-> {LABELS[role]}", flush=True)
    proc = subprocess.Popen(base_cmd + ["--role", role], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.2)
    stdout = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"the {role} run failed (exit {proc.returncode})")
    line = next(s for s in reversed(stdout.splitlines()) if s.startswith(RESULT_PREFIX))
    r = json.loads(line[len(RESULT_PREFIX) :])
    r["tree_peak_rss_bytes"] = max(peak, r["main_peak_rss_bytes"])
    load = "" if r["other_load_cores"] is None else f"; other processes kept {r['other_load_cores']:.2f} cores busy"
    print(f"   {r['images_per_s']:.1f} images/s ({r['seconds']:.1f} s for {len(r['step_seconds'])} steps{load})")
    return r


def _machine(device: str, cores: int) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {cores} cores"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "lightly", "selfsup", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _mib(b) -> str:
    return "-" if not b else f"{b / 2**20:,.0f} MiB"


def print_table(summary: dict, cuda: bool) -> None:
    cols = ["pipeline", "images/s", "other load (cores)", "peak RSS (tree)", "peak RSS (main)"]
    cols += ["CUDA max allocated"] if cuda else []
    rows = []
    for role in PIPELINES:
        s = summary[role]
        load = "-" if s["other_load_cores"] is None else f"{s['other_load_cores']:.2f}"
        row = [LABELS[role], f"{s['images_per_s']:.1f}", load, _mib(s["tree_peak_rss_bytes"]),
               _mib(s["main_peak_rss_bytes"])] + ([_mib(s["cuda_max_allocated_bytes"])] if cuda else [])  # fmt: skip
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: "| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) + " |"  # noqa: E501, E731 # fmt: skip
    print()
    print(fmt(cols))
    print("|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(fmt(r))
    print(f"\nselfsup / lightly throughput: {summary['ratio_selfsup_over_lightly']:.2f}x")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 6 on CPU, 50 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 on CPU, 10 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="lightly's loader workers (default 2 on CPU, 8 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per main process (default: all cores)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of the two runs (alternating order); median reported")
    p.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", default=None, help="default benchmarks/results/moco_<device>.json")
    p.add_argument("--role", choices=PIPELINES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role:  # a measured subprocess
        print(RESULT_PREFIX + json.dumps(run_pipeline(args)), flush=True)
        return 0

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here")
    cuda = args.device == "cuda"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.steps = args.steps or (50 if cuda else 6)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.workers = args.workers if args.workers is not None else (min(8, cores) if cuda else 2)
    args.threads = args.threads or cores
    json_out = Path(args.json_out) if args.json_out else ROOT / "benchmarks" / "results" / f"moco_{args.device}.json"

    from selfsup.data import load_dataset

    load_dataset("fashion-mnist", image_size=IMAGE_SIZE)  # build the decode cache once, outside the timings
    base_cmd = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--batch-size",
                str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup), "--workers",
                str(args.workers), "--threads", str(args.threads), "--seed", str(args.seed)]  # fmt: skip
    base_cmd += ["--compile"] if args.compile else []
    machine = _machine(args.device, cores)
    load_before = os.getloadavg()
    print(f"MoCo v2 throughput on {machine}: ResNet-18 (CIFAR stem, width {WIDTH}), {IMAGE_SIZE}px Fashion-MNIST "
          f"as RGB, batch {args.batch_size}, queue {QUEUE}, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{args.threads} torch threads, {args.workers} lightly workers"
          f"{', bf16 autocast' if cuda else ''}{', torch.compile' if args.compile else ''}; "
          f"load average {load_before[0]:.2f}", flush=True)  # fmt: skip

    runs: dict[str, list[dict]] = {role: [] for role in PIPELINES}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for role in PIPELINES if r % 2 == 0 else PIPELINES[::-1]:
            runs[role].append(measure(role, base_cmd))
    load_after = os.getloadavg()
    summary: dict = {}
    for role, rs in runs.items():
        loads = [r["other_load_cores"] for r in rs if r["other_load_cores"] is not None]
        summary[role] = {
            "images_per_s": statistics.median(r["images_per_s"] for r in rs),
            "images_per_s_rounds": [round(r["images_per_s"], 2) for r in rs],
            "other_load_cores": max(loads) if loads else None,
            "tree_peak_rss_bytes": max(r["tree_peak_rss_bytes"] for r in rs),
            "main_peak_rss_bytes": max(r["main_peak_rss_bytes"] for r in rs),
            "cuda_max_allocated_bytes": max((r["cuda_max_allocated_bytes"] or 0) for r in rs) or None,
        }
    summary["ratio_selfsup_over_lightly"] = summary["selfsup"]["images_per_s"] / summary["lightly"]["images_per_s"]
    print_table(summary, cuda)
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{time.perf_counter() - t0:.0f} s in all")  # fmt: skip
    report = {
        "machine": machine,
        "device": args.device,
        "cores": cores,
        "versions": _versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("role", "json_out")},
        "model": f"MoCo v2: ResNetEncoder(18, small_stem=True, width={WIDTH}), {IMAGE_SIZE}px RGB, head "
        f"{PROJ_HIDDEN}-{PROJ_DIM}, queue {QUEUE}, T {TEMPERATURE}, m {MOMENTUM}",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "summary": summary,
        "runs": runs,
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results written to {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
