"""The harness of the throughput comparisons in this folder: selfsup beside lightly on the same model, in one run.

A comparison script says what is its own in a :class:`Comparison` (how each side builds its model and views)
and calls :func:`main`. The rest is here, the same for every comparison (benchmarks/README.md has the details):
the common flags; the Fashion-MNIST train set at 32 px as uint8 RGB; each pipeline in its own subprocess (the
script again, with a hidden ``--role``): ``lightly`` (its transform on PIL images in a ``DataLoader``),
``selfsup`` (batched views in the training process, stepped as ``selfsup.train.loop.Trainer`` steps a method)
and, where asked for, ``model-alone`` (selfsup's step on one fixed batch of views); on CPU the pipelines of a
round take turns of ``--slice`` seconds, the others stopped with SIGSTOP, and a step's time counts only the
slices its pipeline ran in; the process trees' peak RSS and PSS from /proc; the other processes' load; the
median over rounds; the table with the ratios selfsup / lightly; the JSON file.

The scripts of their own (text_throughput.py, speech_throughput.py) take from here what every benchmark shares:
the common flags and their checks, the device-dependent defaults, the summaries of quiet steps and peaks, the
Markdown table, the machine, the versions and the JSON file (procs.py has the subprocesses' side of it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import memory_method, peak_memory, run_round, timed_steps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))  # selfsup from this checkout, installed or not
LIGHTLY, SELFSUP, MODEL_ALONE = "lightly", "selfsup", "model-alone"
IMAGE_SIZE = 32
QUIET_LOAD = 0.2  # a step is "quiet" when other processes kept fewer cores than this busy during it
ENV_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")


# =============================================================================== shared by every benchmark script
# (the comparisons here, and the scripts of their own: text_throughput.py, speech_throughput.py)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parser(doc: str) -> argparse.ArgumentParser:
    """The flags' parser, the script's docstring ``doc`` its description; the first flag, ``--device``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p


def add_steps(p: argparse.ArgumentParser, cpu_steps: int, cpu_warmup: int) -> None:
    """``--steps`` and ``--warmup``, their defaults on CPU named (as :func:`resolve` gets them; 50 and 10 on CUDA)."""
    p.add_argument("--steps", type=int, help=f"timed steps per run (default {cpu_steps} on CPU, 50 on CUDA)")
    p.add_argument("--warmup", type=int, help=f"untimed steps first (default {cpu_warmup} on CPU, 10 on CUDA)")


def add_turns(p: argparse.ArgumentParser, at_once: str, threads: str = "of each pipeline's main process",
              first: str = "another pipeline") -> None:  # fmt: skip
    """``--threads``, ``--rounds`` and ``--slice``; their help says whose threads, who starts a round, what runs at
    once."""
    p.add_argument("--threads", type=int, help=f"torch threads {threads} (default: all cores)")
    p.add_argument("--rounds", type=int, default=1, help=f"rounds, each started by {first}; median reported")
    p.add_argument("--slice", type=float, help=f"on CPU, {at_once}, taking turns of this many seconds (default 5); "
                   "0: one after the other (always so on CUDA)")  # fmt: skip


def add_tail(p: argparse.ArgumentParser, out: str, out_help: str, dest: str | None = None) -> None:
    """``--seed``, ``--sample-interval``, the results file's flag ``out`` and a measured subprocess's hidden flags."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-interval", type=float, default=0.2, help="seconds between memory samples")
    p.add_argument(out, dest=dest, help=out_help)
    for hidden in ("--role", "--settings", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)


def parse_args(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """The flags; in a measured subprocess (``args.role`` set), the parent's resolved settings instead."""
    args = p.parse_args(argv)
    if args.role:
        return argparse.Namespace(**{**json.loads(args.settings), "role": args.role, "result": args.result})
    return args


def check_counts(p: argparse.ArgumentParser, args, batch: int, batch_flag: str) -> None:
    """--steps, --rounds and the batch (``batch``: its value, 1 where a default comes later) at least 1; --warmup
    and --slice at least 0."""
    if min(args.steps or 1, args.rounds, batch) < 1 or min(args.warmup or 0, args.slice or 0) < 0:
        p.error(f"--steps, --rounds and {batch_flag} must be at least 1, --warmup and --slice at least 0")


def resolve(args, cores: int, cpu_steps: int, cpu_warmup: int, **more: tuple) -> bool:
    """Device-dependent defaults: the device (auto: CUDA where there is one), --steps, --warmup, --threads (all
    ``cores``), --slice (5 s on CPU, 0 on CUDA); ``more``: other flags' (on CPU, on CUDA), for where they are
    unset (or 0). -> whether it is CUDA."""
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here")
    cuda = args.device == "cuda"
    args.steps = args.steps or (50 if cuda else cpu_steps)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else cpu_warmup)
    args.threads = args.threads or cores
    for name, (on_cpu, on_cuda) in more.items():
        setattr(args, name, getattr(args, name) or (on_cuda if cuda else on_cpu))
    if cuda or not hasattr(signal, "SIGSTOP"):  # a stopped process's GPU work goes on: no slices
        args.slice = 0.0
    args.slice = 5.0 if args.slice is None else args.slice
    return cuda


def write_result(args, result: dict) -> int:
    """A measured subprocess's last act: its result, where the parent reads it."""
    Path(args.result).write_text(json.dumps(result))
    return 0


def settings(args, *leave_out: str) -> dict:
    """The resolved flags, but a measured subprocess's own and ``leave_out``."""
    return {k: v for k, v in vars(args).items() if k not in ("role", "settings", "result", *leave_out)}


def command(script: str, args, *leave_out: str) -> list[str]:
    """What starts a measured subprocess of ``script`` (procs adds ``--role`` and ``--result``): its settings."""
    return [sys.executable, str(Path(script).resolve()), "--settings", json.dumps(settings(args, *leave_out))]


def rotated(roles: list[str], r: int) -> list[str]:
    """The order of round ``r``: each round another pipeline goes first."""
    return roles[r % len(roles) :] + roles[: r % len(roles)]


def quiet_rate(rs: list[dict], amounts: Callable[[dict], list] | None = None) -> tuple[float | None, int]:
    """What the steps of all rounds did per second over those during which other processes left the CPUs alone
    (fewer than QUIET_LOAD cores busy); their number. ``amounts(r)``: each step's (default: its batch)."""
    n = t = steps = 0
    for r in rs:
        each = amounts(r) if amounts else [r["batch_size"]] * r["steps"]
        for a, dt, load in zip(each, r["step_seconds"], r.get("step_other_load_cores") or [None] * r["steps"]):
            if load is not None and load < QUIET_LOAD:
                n, t, steps = n + a, t + dt, steps + 1
    return (n / t if t else None), steps


def peak(rs: list[dict], key: str):
    return max((r.get(key) or 0) for r in rs) or None


def other_load(rs: list[dict]) -> float | None:
    """The most cores that other processes kept busy over the timed steps of a round."""
    loads = [r["other_load_cores"] for r in rs if r.get("other_load_cores") is not None]
    return max(loads) if loads else None


def load_and_memory(rs: list[dict], children: bool = False) -> dict:
    """A side's other load and peak memory over its rounds, as text_throughput.py and speech_throughput.py report
    them (``children``: with the largest loader worker's peak RSS)."""
    out = {"other_load_cores": other_load(rs), "peak_rss_bytes": peak(rs, "tree_peak_rss_bytes"),
           "peak_pss_bytes": peak(rs, "tree_peak_pss_bytes"),
           "main_peak_rss_bytes": peak(rs, "ru_maxrss_self_bytes")}  # fmt: skip
    if children:
        out["children_peak_rss_bytes"] = peak(rs, "ru_maxrss_children_bytes")
    return {**out, "cuda_max_allocated_bytes": peak(rs, "cuda_max_allocated_bytes")}


def mib(b) -> str:
    return "-" if not b else f"{b / 2**20:,.0f} MiB"


def load_columns(rate: str, cuda: bool) -> list[str]:
    """The table's columns of the other load and the quiet steps' ``rate`` (none on CUDA)."""
    return [] if cuda else ["other load (cores)", f"{rate}, quiet steps (other load < {QUIET_LOAD:g})"]


def print_markdown(cols: list[str], rows: list[list[str]], left: int = 1) -> None:
    """``rows`` under ``cols`` as a Markdown table, after an empty line; the first ``left`` columns left-aligned."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "| " + " | ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) + " |"  # noqa: E501 # fmt: skip
    print("\n" + line(cols))
    print("|" + "|".join("-" * (w + 1) + ("-" if i < left else ":") for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(line(r))


def machine_info(device: str, cores: int) -> dict:
    """The CPU, its ``cores``, the GPU on CUDA; ``name``: the GPU's, or the CPU's with the cores."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = None
    if device == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(0)
    return {"cpu": cpu, "cores": cores, "gpu": gpu, "name": gpu or f"{cpu}, {cores} cores"}


def versions(*packages: str) -> dict:
    """Python's version and the installed ``packages``' (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def environment(keys=ENV_KEYS) -> dict:
    return {k: os.environ.get(k) for k in keys}


class Wall:
    """The wall time of the measured runs, from its making to ``stop()``, and the load average before and after."""

    def __init__(self):
        self.load_before, self._t0 = os.getloadavg(), time.perf_counter()

    def stop(self) -> None:
        self.seconds, self.load_after = time.perf_counter() - self._t0, os.getloadavg()

    def note(self) -> str:
        return f"load average {self.load_before[0]:.2f} before, {self.load_after[0]:.2f} after; {self.seconds:.0f} s"

    def report(self) -> dict:
        return {"load_average_before": self.load_before, "load_average_after": self.load_after, "wall_s": self.seconds}


def write_report(report: dict, out: str | None, name: str) -> None:
    """The JSON file: ``out``, or benchmarks/results/<name>.json."""
    path = Path(out) if out else ROOT / "benchmarks" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results written to {path}")


@dataclass
class LightlyModel:
    """lightly's side: ``model(views) -> loss`` on the batched list of views that ``transform`` makes of a PIL image."""

    model: Any  # nn.Module
    transform: Callable
    before_step: Callable[[], None] | None = None  # e.g. MoCo's momentum update, before each step


@dataclass
class Comparison:
    name: str  # results file: benchmarks/results/<name>_<device>.json
    doc: str  # the script's docstring: --help; its first line up to ":" titles the output
    model: str  # what both sides train; formatted with the settings (``{decoder_dim}``)
    transform: str  # lightly's transform, named in the table
    optimizer: tuple[str, float, float]  # build_optimizer's name, lr per 256 images, weight decay
    lightly: Callable[[Context], LightlyModel]
    selfsup: Callable[[Context], Any]  # -> a selfsup method: views(x, generator), forward(views) -> Output
    cpu_steps: int = 10  # default timed steps on CPU (50 on CUDA)
    cuda_batch_size: int = 128  # default batch on CUDA (128 on CPU)
    model_alone: bool = False  # a third pipeline: selfsup's step on one fixed batch of views
    arguments: Callable[[argparse.ArgumentParser], None] | None = None  # the comparison's own flags

    @property
    def title(self) -> str:
        return self.doc.split(":", 1)[0]

    def labels(self) -> dict[str, str]:
        return {LIGHTLY: f"lightly (DataLoader + {self.transform})", SELFSUP: "selfsup (batched views in-process)",
                MODEL_ALONE: "model alone (fixed views, no augmentation)"}  # fmt: skip


def resnet18(spec):
    """The backbone of the ResNet comparisons, on both sides: selfsup's ResNet-18 at width 64, CIFAR stem."""
    from selfsup.encoders import build_encoder

    return build_encoder("resnet18", spec, {"width": 64, "small_stem": True})


class Context:
    """What a side's builder gets: ``args``, ``device``, ``spec`` (of the RGB images) and ``lightly_spec`` (of
    lightly's views, which its transforms normalize already: the encoder's own normalization is the identity)."""

    def __init__(self, args):
        import numpy as np
        import torch

        from selfsup.data import ImageSpec, load_dataset

        self.args, self.device = args, torch.device(args.device)
        ds = load_dataset("fashion-mnist", image_size=IMAGE_SIZE, log=lambda s: print(s, file=sys.stderr))
        gray = ds.spec  # one channel
        self.spec = ImageSpec(3, gray.size, gray.mean * 3, gray.std * 3)
        self.lightly_spec = ImageSpec(3, gray.size, (0.0,) * 3, (1.0,) * 3)
        self._gray = np.array(ds.train.x)  # uint8 [N, 1, S, S]
        self.num_samples = len(self._gray)

    def take_images(self, hwc: bool = False):
        """The images as uint8 RGB [N, 3, S, S], or [N, S, S, 3] for PIL; one copy, once per process."""
        import numpy as np

        g, self._gray = self._gray, None
        g = g.transpose(0, 2, 3, 1) if hwc else g
        shape = (*g.shape[:3], 3) if hwc else (g.shape[0], 3, *g.shape[2:])
        return np.ascontiguousarray(np.broadcast_to(g, shape))


def _log(role: str, text: str) -> None:
    log(f"  [{role}] {text}")


# =============================================================================== the two sides (in a subprocess)


@dataclass
class Side:
    batch: Callable[[int], Any]  # step i -> its views on the device
    step: Callable[[Any, int], Any]  # (views, step i) -> loss: forward, backward, optimizer step
    channels_last: bool
    close: Callable[[], None] = lambda: None  # joins loader workers
    transform_cpu: Callable[[], float] | None = None  # CPU seconds of lightly's transform on one batch


class _PILImages:
    """uint8 HWC images handed to a transform as PIL images, as an image-folder dataset would."""

    def __init__(self, hwc, transform):
        self.hwc, self.transform = hwc, transform

    def __len__(self) -> int:
        return len(self.hwc)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.hwc[i]))  # a list of views


def _prepare(cmp: Comparison, model, ctx: Context, channels_last: bool | None = None):
    """-> (model on the device, in channels_last where ``selfsup.precision`` says so; whether it is; its optimizer;
    what a step calls: the model, or ``torch.compile`` of it with --compile)."""
    import torch

    from selfsup.precision import channels_last_for, to_channels_last
    from selfsup.train.optim import build_optimizer

    model = model.to(ctx.device)
    cl = channels_last_for(model, ctx.device, channels_last)
    if cl:
        to_channels_last(model)
    name, lr_per_256, weight_decay = cmp.optimizer
    opt = build_optimizer(model, name, lr_per_256 * ctx.args.batch_size / 256, weight_decay)
    return model, cl, opt, torch.compile(model) if ctx.args.compile else model


def _lightly_side(cmp: Comparison, ctx: Context) -> Side:
    import torch
    from torch.utils.data import DataLoader

    from selfsup.precision import as_channels_last, autocast

    args, device = ctx.args, ctx.device
    side = cmp.lightly(ctx)
    hwc = ctx.take_images(hwc=True)
    loader = DataLoader(_PILImages(hwc, side.transform), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")  # fmt: skip
    keep = args.lightly_channels_last or device.type == "cuda"
    _, cl, opt, train = _prepare(cmp, side.model, ctx, None if keep else False)
    state = {"loader": loader, "batches": iter(loader)}
    del loader  # held by ``state`` alone: ``close`` ends the persistent workers

    def batch(i):
        try:
            views = next(state["batches"])
        except StopIteration:
            state["batches"] = iter(state["loader"])
            views = next(state["batches"])
        views = [v.to(device, non_blocking=True) for v in views]
        return [as_channels_last(v) for v in views] if cl else views

    def step(views, i):
        if side.before_step is not None:
            side.before_step()
        with autocast(device):
            loss = train(views)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def transform_cpu() -> float:  # the work lightly's workers do per batch, in one process
        from PIL import Image

        torch.set_num_threads(1)
        for j in range(16):  # the first calls in a process are slower
            side.transform(Image.fromarray(hwc[j]))
        c0 = time.process_time()
        for j in range(args.batch_size):
            side.transform(Image.fromarray(hwc[j % len(hwc)]))
        return time.process_time() - c0

    def close() -> None:
        state.clear()
        gc.collect()  # the loader and its iterator refer to each other

    return Side(batch, step, cl, close=close, transform_cpu=transform_cpu)


def _selfsup_side(cmp: Comparison, ctx: Context) -> Side:
    """The method stepped as the Trainer steps it: the uint8 set as one tensor (on the GPU under CUDA), a seeded
    permutation per epoch, views under no_grad from a per-step generator, channels_last, bf16 autocast on CUDA,
    the finite check of the loss and the gradient norm, ``after_step``."""
    import torch

    from selfsup.precision import as_channels_last

    args, device = ctx.args, ctx.device
    method, cl, opt, train = _prepare(cmp, cmp.selfsup(ctx), ctx)
    data = torch.from_numpy(ctx.take_images()).to(device)  # uint8 [N, 3, S, S]
    n, b = len(data), args.batch_size
    perm: dict[int, Any] = {}

    def batch(i):
        epoch, pos = divmod(i, n // b)
        if epoch not in perm:
            perm.clear()
            perm[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        idx = perm[epoch][pos * b : (pos + 1) * b].to(device)
        g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + i)
        with torch.no_grad():
            views = method.views(data[idx], g)
        return tuple(as_channels_last(v) for v in views) if cl else views

    return Side(batch, trainer_step(method, train, opt, device, args.warmup + args.steps), cl)


def trainer_step(method, train, opt, device, total: int):
    """A selfsup method's step as ``selfsup.train.loop.Trainer`` takes it: ``step(views, i) -> loss`` -- forward
    (``train``: the method or its ``torch.compile``) under autocast, backward, the finite check of the loss and the
    gradient norm, the optimizer step, ``after_step(i, total)`` where the method has one."""
    import torch

    from selfsup.precision import autocast

    after_step = getattr(method, "after_step", None)

    def step(views, i):
        with autocast(device):
            loss = train(views).loss
        loss.backward()
        grads = [p.grad for p in method.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if not bool(torch.isfinite(loss.detach()) & torch.isfinite(norm)):  # the Trainer's one host sync
            raise RuntimeError(f"loss or gradients not finite at step {i}")
        opt.step()
        opt.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(i, total)
        return loss.detach()

    return step


def _run_role(cmp: Comparison, args) -> dict:
    """A measured subprocess: build one pipeline, run warm-up + timed steps, report monotonic step marks."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ctx = Context(args)
    side = (_lightly_side if args.role == LIGHTLY else _selfsup_side)(cmp, ctx)
    fixed = args.model_only or args.role == MODEL_ALONE
    views0 = side.batch(0) if fixed else None
    _log(args.role, f"built on {ctx.device}; {args.threads} threads, batch {args.batch_size}")
    # the spans: getting the views, i.e. the loader's wait (lightly) or making them (selfsup)
    marks, spans, loss = timed_steps((lambda i: views0) if fixed else side.batch, side.step, args, ctx.device,
                                     lambda: _log(args.role, f"warm-up done ({args.warmup} steps)"))  # fmt: skip
    threads = torch.get_num_threads()
    side.close()  # joins the persistent workers, so RUSAGE_CHILDREN covers them
    return {"role": args.role, "batch_size": args.batch_size, "steps": args.steps, "step_marks": marks,
            "data_spans": spans, "final_loss": float(loss.float()), "threads": threads,
            "workers": args.workers if args.role == LIGHTLY else 0, "channels_last": side.channels_last,
            "autocast": "bf16" if ctx.device.type == "cuda" else None, "fixed_views": fixed,
            "transform_cpu_s_per_batch": side.transform_cpu() if side.transform_cpu else None,
            **peak_memory(ctx.device, vmhwm=False)}  # fmt: skip


# =============================================================================== summary, table, JSON


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per pipeline: the median over the rounds; memory: the largest peak seen."""
    out: dict[str, Any] = {}
    for role, rs in runs.items():
        costs = [r["transform_cpu_s_per_batch"] for r in rs if r.get("transform_cpu_s_per_batch") is not None]
        quiet, quiet_steps = quiet_rate(rs)
        out[role] = {
            "images_per_s": statistics.median(r["images_per_s"] for r in rs),
            "images_per_s_rounds": [round(r["images_per_s"], 2) for r in rs],
            "images_per_s_median_step": statistics.median(
                r["batch_size"] / statistics.median(r["step_seconds"]) for r in rs
            ),
            "views_seconds_per_step": statistics.median(statistics.mean(r["views_seconds"]) for r in rs),
            "transform_cpu_s_per_batch": statistics.median(costs) if costs else None,
            "other_load_cores": other_load(rs),
            "images_per_s_quiet": quiet,
            "quiet_steps": quiet_steps,
            "tree_peak_rss_bytes": peak(rs, "tree_peak_rss_bytes"),
            "tree_peak_pss_bytes": peak(rs, "tree_peak_pss_bytes"),
            "main_peak_rss_bytes": peak(rs, "ru_maxrss_self_bytes"),
            "cuda_max_allocated_bytes": peak(rs, "cuda_max_allocated_bytes"),
        }
    s, lt = out[SELFSUP], out[LIGHTLY]
    out["ratio_selfsup_over_lightly"] = s["images_per_s"] / lt["images_per_s"]
    out["ratio_median_step"] = s["images_per_s_median_step"] / lt["images_per_s_median_step"]
    q = (s["images_per_s_quiet"], lt["images_per_s_quiet"])
    out["ratio_quiet_steps"] = q[0] / q[1] if all(q) else None
    return out


def print_table(summary: dict, labels: dict[str, str], cuda: bool) -> None:
    roles = [r for r in (LIGHTLY, SELFSUP, MODEL_ALONE) if r in summary]
    ceiling = summary[MODEL_ALONE]["images_per_s"] if MODEL_ALONE in summary else None
    cols = ["pipeline", "images/s", "by median step"] + (["of model alone"] if ceiling else []) + ["views, ms/step"]
    cols += load_columns("images/s", cuda)
    cols += ["peak RSS (tree)", "peak PSS (tree)", "peak RSS (main)"] + (["CUDA max allocated"] if cuda else [])
    rows = []
    for role in roles:
        s = summary[role]
        load, quiet = s["other_load_cores"], s["images_per_s_quiet"]
        rows.append([labels[role], f"{s['images_per_s']:.1f}", f"{s['images_per_s_median_step']:.1f}",
                     *([f"{100 * s['images_per_s'] / ceiling:.0f}%"] if ceiling else []),
                     f"{1e3 * s['views_seconds_per_step']:.0f}",
                     *([] if cuda else ["-" if load is None else f"{load:.2f}",
                                        "- (none)" if quiet is None else f"{quiet:.1f} ({s['quiet_steps']} steps)"]),
                     mib(s["tree_peak_rss_bytes"]), mib(s["tree_peak_pss_bytes"]), mib(s["main_peak_rss_bytes"]),
                     *([mib(s["cuda_max_allocated_bytes"])] if cuda else [])])  # fmt: skip
    print_markdown(cols, rows)
    quiet = summary["ratio_quiet_steps"]
    print(f"\nselfsup / lightly = {summary['ratio_selfsup_over_lightly']:.2f}x over all timed steps, "
          f"{summary['ratio_median_step']:.2f}x by the median step"
          + ("" if cuda or quiet is None else f", {quiet:.2f}x over the quiet steps"))  # fmt: skip
    cost = summary[LIGHTLY]["transform_cpu_s_per_batch"]
    spent = "" if cost is None else (f"; lightly's transform costs {1e3 * cost:.0f} ms of CPU per batch in one "
                                     "process, which its workers spend on the cores the model uses")  # fmt: skip
    print(
        "views, ms/step: the training loop's time getting a batch of views (lightly: waiting for its loader; "
        f"selfsup: making them){spent}"
    )


# =============================================================================== flags and the whole run


CPU_WARMUP = 2  # default warm-up steps on CPU


def _parse(cmp: Comparison, argv) -> argparse.Namespace:
    p = parser(cmp.doc)
    p.add_argument("--batch-size", type=int, help=f"default 128 on CPU, {cmp.cuda_batch_size} on CUDA")
    add_steps(p, cmp.cpu_steps, CPU_WARMUP)
    p.add_argument("--workers", type=int, help="lightly's DataLoader workers (default 2 on CPU, min(8, cores) on CUDA)")
    add_turns(p, "run the pipelines at once")
    p.add_argument("--model-only", action="store_true", help="every side trains on one fixed batch of its views")
    p.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    p.add_argument("--lightly-channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="lightly's model in channels_last on CPU too, as selfsup's (default: on)")  # fmt: skip
    add_tail(p, "--json", f"default benchmarks/results/{cmp.name}_<device>.json", dest="json_out")
    if cmp.arguments:
        cmp.arguments(p)
    args = parse_args(p, argv)
    if not args.role:
        check_counts(p, args, args.batch_size or 1, "--batch-size")
    return args


def _resolve(cmp: Comparison, args, cores: int) -> None:
    """Device-dependent defaults."""
    cuda = resolve(args, cores, cmp.cpu_steps, CPU_WARMUP, batch_size=(128, cmp.cuda_batch_size))
    args.workers = args.workers if args.workers is not None else (min(8, cores) if cuda else 2)


def _run_rounds(cmp: Comparison, args) -> dict[str, list[dict]]:
    cmd = command(sys.argv[0], args, "json_out")
    roles = [LIGHTLY, SELFSUP] + ([MODEL_ALONE] if cmp.model_alone and not args.model_only else [])
    runs: dict[str, list[dict]] = {role: [] for role in roles}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for res in run_round(rotated(roles, r), cmd, args, Path(tmp)):
                runs[res["role"]].append(res)
    return runs


def main(cmp: Comparison, argv=None) -> int:
    args = _parse(cmp, argv)
    if args.role:  # a measured subprocess
        return write_result(args, _run_role(cmp, args))
    cores = usable_cores()
    _resolve(cmp, args, cores)
    from selfsup.data import load_dataset

    load_dataset("fashion-mnist", image_size=IMAGE_SIZE)  # build the decode cache once, outside the timings
    machine, model = machine_info(args.device, cores)["name"], cmp.model.format(**vars(args))
    wall = Wall()
    print(f"{cmp.title} on {machine}: {model}, batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed "
          f"steps, {args.threads} torch threads, {args.workers} lightly workers"
          f"{', fixed views' if args.model_only else ''}{', torch.compile' if args.compile else ''}; load average "
          f"{wall.load_before[0]:.2f}; " + (f"the runs take turns of {args.slice:g} s" if args.slice else
                                           "one run after the other"), flush=True)  # fmt: skip
    runs = _run_rounds(cmp, args)
    wall.stop()
    summary = summarize(runs)
    print(f"\n{cmp.title}, {machine}: {model}, batch {args.batch_size}, median of {args.rounds} round(s)")
    print_table(summary, cmp.labels(), args.device == "cuda")
    print(f"memory of each pipeline's process tree (main + loader workers): {memory_method(runs[SELFSUP][0], args)}; "
          f"{wall.note()} in all")  # fmt: skip
    report = {"machine": machine, "device": args.device, "cores": cores,
              "versions": versions("torch", "torchvision", "lightly", "selfsup", "pillow"),
              "settings": settings(args, "json_out"), "model": model, "environment": environment(),
              **wall.report(), "harness_cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), "summary": summary,
              "runs": runs}  # fmt: skip
    write_report(report, args.json_out, f"{cmp.name}_{args.device}")
    return 0
