"""MAE training throughput: selfsup's MAE beside lightly's MAE built from its torchvision-based modules.

Both sides pretrain the same shape of model on Fashion-MNIST (32 px, replicated to RGB): a ViT-Tiny encoder
(192-d, 12 blocks, 3 heads, MLP 768, 4 px patches -> 64 patches), mask ratio 0.75 (16 visible patches + the
class token go through the encoder), a decoder of the same size on both sides (default: selfsup's, 128-d x 2
blocks x 4 heads, MLP 512, fixed sine-cosine positions), per-patch normalized pixel targets, MSE on the masked
patches, AdamW (selfsup's ``build_optimizer("adamw")``: betas (0.9, 0.95), weight decay 0.05 on weights only,
lr 1.5e-4 x B/256), batch 128.

* lightly  -- ``MaskedVisionTransformerTorchvision`` around torchvision's ``VisionTransformer``, ``MAEDecoder``,
  ``utils.random_token_mask`` / ``set_at_index`` / ``get_at_index`` / ``patchify`` / ``normalize_mean_var``, as
  lightly's MAE example; views from ``MAETransform`` (random resized crop 0.2-1, bicubic, + flip) on PIL images
  in a ``DataLoader`` (``--workers`` processes).
* selfsup  -- ``selfsup.methods.mae.MAE`` on a ``vit_tiny`` encoder: the whole uint8 dataset is one tensor on the
  device; views (crop + flip + mask, from a seeded generator) are made batched in the training process, as the
  Trainer does.

Each side runs in its own subprocess (its peak memory is its own). The two go in lockstep: this process
tells one of them to run a step, waits, then the other, alternating which goes first (A B B A ...), so that
a shared machine whose speed drifts slows both alike. images/s = images over the summed time of the timed
steps. On CUDA: bf16 autocast on both sides, ``--compile`` wraps each side's training module in
``torch.compile``; each step ends with a device synchronize.

    python benchmarks/mae_throughput.py                  # ~1-2 min on 2 CPU cores
    python benchmarks/mae_throughput.py --device cuda --compile
    python benchmarks/mae_throughput.py --model-only     # one fixed batch of views: the models' compute alone
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
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .` too
SIDES = ("lightly", "selfsup")
IMAGE_SIZE, PATCH, DIM, DEPTH, HEADS, MASK_RATIO = 32, 4, 192, 12, 3, 0.75
LR_PER_256, WEIGHT_DECAY = 1.5e-4, 0.05


def machine_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


# =============================================================================== one side (a subprocess)


def _images():
    """Fashion-MNIST train images as uint8 RGB [N, 3, 32, 32]."""
    import numpy as np

    from selfsup.data import load_dataset

    ds = load_dataset("fashion-mnist", image_size=IMAGE_SIZE, log=lambda s: print(s, file=sys.stderr))
    return np.ascontiguousarray(np.repeat(np.asarray(ds.train_x), 3, axis=1))


def _lightly_side(args, images, device):
    """lightly's MAE: (model, step_input) where step_input() gives the next batch of views."""
    import numpy as np
    import torch
    from lightly.models import utils
    from lightly.models.modules import MAEDecoder, MaskedVisionTransformerTorchvision
    from lightly.transforms import MAETransform
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision.models.vision_transformer import VisionTransformer

    class LightlyMAE(nn.Module):
        def __init__(self):
            super().__init__()
            vit = VisionTransformer(image_size=IMAGE_SIZE, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS,
                                    hidden_dim=DIM, mlp_dim=4 * DIM)  # fmt: skip
            self.backbone = MaskedVisionTransformerTorchvision(vit=vit)
            self.seq_len = vit.seq_length  # 1 + 64
            self.mask_token = nn.Parameter(torch.zeros(1, 1, args.decoder_dim))
            self.decoder = MAEDecoder(seq_length=self.seq_len, num_layers=args.decoder_depth,
                                      num_heads=args.decoder_heads, embed_input_dim=DIM, hidden_dim=args.decoder_dim,
                                      mlp_dim=4 * args.decoder_dim, out_dim=PATCH**2 * 3)  # fmt: skip
            self.criterion = nn.MSELoss()

        def forward(self, images):
            B = images.shape[0]
            idx_keep, idx_mask = utils.random_token_mask((B, self.seq_len), MASK_RATIO, device=images.device)
            x = self.backbone.encode(images, idx_keep=idx_keep)  # [B, 1 + 16, D]
            x = self.decoder.embed(x)
            full = utils.repeat_token(self.mask_token, (B, self.seq_len))
            full = utils.set_at_index(full, idx_keep, x.type_as(full))
            pred = self.decoder.predict(utils.get_at_index(self.decoder.decode(full), idx_mask))
            target = utils.get_at_index(utils.patchify(images, PATCH), idx_mask - 1)  # no class token in patches
            return self.criterion(pred.float(), utils.normalize_mean_var(target).float())

    class PILImages(Dataset):
        def __init__(self, hwc, transform):
            self.hwc, self.transform = hwc, transform

        def __len__(self):
            return len(self.hwc)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.hwc[i]))[0]

    transform = MAETransform(input_size=IMAGE_SIZE, min_scale=0.2)
    hwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    t0 = time.process_time()
    for i in range(args.batch_size):  # the per-batch CPU cost the loader workers pay
        transform(Image.fromarray(hwc[i]))
    transform_cpu = time.process_time() - t0
    loader = DataLoader(PILImages(hwc, transform), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")  # fmt: skip
    batches = iter(())

    def step_input():
        nonlocal batches
        try:
            x = next(batches)
        except StopIteration:
            batches = iter(loader)
            x = next(batches)
        return x.to(device, non_blocking=True)

    return LightlyMAE().to(device), step_input, {"transform_cpu_s_per_batch": transform_cpu}


def _selfsup_side(args, images, device):
    import torch

    from selfsup.config import RunConfig
    from selfsup.methods import build_method
    from selfsup.train.loop import channel_stats

    cfg = RunConfig()
    cfg.method.name, cfg.encoder.name, cfg.encoder.patch_size = "mae", "vit_tiny", PATCH
    cfg.method.params = {"mask_ratio": MASK_RATIO, "decoder_dim": args.decoder_dim,
                         "decoder_depth": args.decoder_depth, "decoder_heads": args.decoder_heads}  # fmt: skip
    mean, std = channel_stats(images)
    method = build_method(cfg, 3, IMAGE_SIZE, mean, std).to(device)
    data = torch.from_numpy(images).to(device)
    state = {"step": 0, "perm": torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))}

    def step_input():
        i = state["step"]
        pos = i % (len(data) // args.batch_size)
        idx = state["perm"][pos * args.batch_size : (pos + 1) * args.batch_size].to(device)
        g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + i)
        state["step"] += 1
        with torch.no_grad():
            return method.views(data[idx], g)

    return method, step_input, {}


def run_side(args) -> None:
    """A subprocess: build one side, then run one training step per 'step' line on stdin."""
    import torch

    from selfsup.train.optim import build_optimizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    images = _images()
    build = _lightly_side if args.role == "lightly" else _selfsup_side
    model, step_input, extra = build(args, images, device)
    del images
    if args.model_only:  # one fixed batch of views: the model's compute alone
        fixed = step_input()
        step_input = lambda: fixed  # noqa: E731
    opt = build_optimizer(model, "adamw", LR_PER_256 * args.batch_size / 256, WEIGHT_DECAY)
    train = torch.compile(model) if args.compile else model
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    print("ready", flush=True)
    times, views_times, loss = [], [], None
    for line in sys.stdin:
        if line.strip() != "step":
            break
        sync()
        t0 = time.perf_counter()
        batch = step_input()
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = train(batch).loss if args.role == "selfsup" else train(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t2 = time.perf_counter()
        times.append(t2 - t0)
        views_times.append(t1 - t0)
        print(f"{t2 - t0:.6f}", flush=True)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: KiB on Linux
    out = {"role": args.role, "step_seconds": times, "views_seconds": views_times, "trainable_params": params,
           "final_loss": float(loss.detach().float()) if loss is not None else None,
           "ru_maxrss_self_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
           "ru_maxrss_children_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
           "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None, **extra}  # fmt: skip
    print("RESULT " + json.dumps(out), flush=True)


# =============================================================================== the harness


def _spawn(args, role: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--device", args.device, "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--threads", str(args.threads), "--seed", str(args.seed),
           "--decoder-dim", str(args.decoder_dim), "--decoder-depth", str(args.decoder_depth),
           "--decoder-heads", str(args.decoder_heads)] + (["--compile"] if args.compile else []) + \
        (["--model-only"] if args.model_only else [])  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def _expect(proc: subprocess.Popen, role: str) -> str:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the {role} side exited early (exit status {proc.wait()}); see its messages above")
    return line.strip()


def run_lockstep(args) -> dict:
    procs = {role: _spawn(args, role) for role in SIDES}
    for role, p in procs.items():
        if _expect(p, role) != "ready":
            raise SystemExit(f"the {role} side did not start")
    for i in range(args.warmup + args.steps):
        order = SIDES if i % 2 == 0 else SIDES[::-1]  # A B, B A, ...: drift hits both alike
        for role in order:
            procs[role].stdin.write("step\n")
            procs[role].stdin.flush()
            _expect(procs[role], role)
        print(f"  step {i + 1}/{args.warmup + args.steps}{' (warm-up)' if i < args.warmup else ''}", file=sys.stderr)
    results = {}
    for role, p in procs.items():
        p.stdin.write("quit\n")
        p.stdin.flush()
        line = _expect(p, role)
        while not line.startswith("RESULT "):
            line = _expect(p, role)
        results[role] = json.loads(line.removeprefix("RESULT "))
        p.wait()
    return results


def summarize(args, results: dict) -> dict:
    out = {}
    for role, r in results.items():
        timed = r["step_seconds"][args.warmup :]
        views = r["views_seconds"][args.warmup :]
        out[role] = {"images_per_s": args.batch_size * len(timed) / sum(timed),
                     "images_per_s_median_step": args.batch_size / statistics.median(timed),
                     "median_step_s": statistics.median(timed), "views_ms_per_step": 1000 * statistics.mean(views),
                     "peak_rss_main_bytes": r["ru_maxrss_self_bytes"],
                     "peak_rss_largest_child_bytes": r["ru_maxrss_children_bytes"],  # loader workers, helpers
                     "cuda_max_allocated_bytes": r["cuda_max_allocated_bytes"],
                     "trainable_params": r["trainable_params"], "final_loss": r["final_loss"]}  # fmt: skip
    out["ratio_selfsup_over_lightly"] = out["selfsup"]["images_per_s"] / out["lightly"]["images_per_s"]
    out["ratio_median_step"] = out["lightly"]["median_step_s"] / out["selfsup"]["median_step_s"]
    return out


def main(argv=None) -> None:
    from selfsup.methods.mae import MAEParams

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, help="timed steps per side (default 8 on CPU, 50 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 2 on CPU, 10 on CUDA)")
    p.add_argument("--workers", type=int, help="lightly's DataLoader workers (default 2 on CPU, min(8, cores) on CUDA)")
    p.add_argument("--threads", type=int, help="torch threads per side (default: all cores)")
    p.add_argument("--compile", action="store_true", help="torch.compile each side's training module")
    p.add_argument("--model-only", action="store_true", help="train on one fixed batch of views (no view making)")
    p.add_argument("--decoder-dim", type=int, default=MAEParams.decoder_dim)
    p.add_argument("--decoder-depth", type=int, default=MAEParams.decoder_depth)
    p.add_argument("--decoder-heads", type=int, default=MAEParams.decoder_heads)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="results file (default benchmarks/results/mae_<device>.json)")
    p.add_argument("--role", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.threads = args.threads or cores
    args.workers = args.workers if args.workers is not None else (min(8, cores) if cuda else 2)
    if args.role:
        return run_side(args)
    args.steps = args.steps or (50 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)

    import lightly
    import torch
    import torchvision

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = run_lockstep(args)
    wall = time.perf_counter() - t0
    summary = summarize(args, results)
    report = {"machine": machine_name(args.device), "device": args.device, "cores": cores,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "torchvision": torchvision.__version__, "lightly": lightly.__version__},
              "settings": {k: v for k, v in vars(args).items() if k not in ("role", "json")},
              "model": f"ViT-Tiny ({DIM}-d x {DEPTH} x {HEADS} heads), {IMAGE_SIZE} px RGB, patch {PATCH}, mask "
                       f"{MASK_RATIO}, decoder {args.decoder_dim}-d x {args.decoder_depth} x {args.decoder_heads}",
              "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "wall_s": wall,
              "summary": summary, "runs": results}  # fmt: skip
    path = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"mae_{args.device.split(':')[0]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))

    mib = 2**20
    print(f"\n{report['machine']} | {report['model']} | batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'side':<10}{'images/s':>10}{'step s (median)':>17}{'views ms':>10}{'peak RSS':>12}{'cuda peak':>12}")
    for role in SIDES:
        s = summary[role]
        cuda_peak = f"{s['cuda_max_allocated_bytes'] / mib:,.0f} MiB" if s["cuda_max_allocated_bytes"] else "-"
        print(f"{role:<10}{s['images_per_s']:>10.1f}{s['median_step_s']:>17.3f}{s['views_ms_per_step']:>10.1f}"
              f"{s['peak_rss_main_bytes'] / mib:>8,.0f} MiB{cuda_peak:>12}")  # fmt: skip
    print(f"selfsup / lightly = {summary['ratio_selfsup_over_lightly']:.2f}x over all timed steps, "
          f"{summary['ratio_median_step']:.2f}x by the median step   (load average before "
          f"{load_before[0]:.2f}, after {report['load_average_after'][0]:.2f}; results: {path})")  # fmt: skip


if __name__ == "__main__":
    main()
