"""Speech pretraining throughput: selfsup's tera beside a plain PyTorch (s3prl-style) pipeline of the same model.

Both sides train the same network from the same initial weights: TERA (selfsup ``tera``, its ``SpecHead`` and
L1 loss at the altered positions) on selfsup's ``speech_transformer`` (``--size``: tiny on CPU, base on CUDA),
on the same clips (seeded permutations of the synth-speech train clips), with the same
optimizer (selfsup's ``build_optimizer("adamw")``, TERA's lr per 256 utterances and weight decay), the same
memory format (``selfsup.precision.channels_last_for``) and bf16 autocast on CUDA. What differs is the input
pipeline:

* selfsup -- stepped as ``selfsup.train.loop.Trainer`` steps a method: its batches grouped by length as the
  Trainer groups tera's (``selfsup.data.batching.length_grouped``: 50 batches of the permutation sorted by length
  at a time, the batches shuffled), the clips of a step zero-padded into
  one float batch [B, T] + lengths (``Waveforms.batch``), moved to the device, ``TERA.views(x, generator,
  lengths)`` under no_grad (log-mel, per-utterance normalization and all three alterations, batched on the
  device, no per-utterance Python), forward, backward, the finite check of the loss and the gradient norm, step.
* baseline -- the way s3prl's TERA pretraining feeds its model: a ``torch.utils.data.DataLoader`` over
  utterances whose ``__getitem__`` computes that utterance's log-mel (the same ``LogMel`` front end, called on
  the one clip, which also normalizes it) and builds its TERA alterations in numpy (round(0.15 F / 7) distinct
  runs of 7 frames, zeroed with probability 0.8, replaced by other runs of the utterance 0.1, kept 0.1; one band
  of 0..20% of the mel bins zeroed; Gaussian noise of std 0.2 with probability 0.15), and a ``collate_fn``
  that pads the frames, the clean targets and the altered-position masks; ``--workers`` loader processes
  (one pipeline per value). Then the plain model's forward on the pre-made frames (``TERA.reconstruct``:
  ``encode_frames`` + the head, and ``masked_l1``), backward, ``clip_grad_norm_`` at 5 (TERA's configuration)
  with a finite check, step. Its batches are random, as a DataLoader with ``shuffle=True`` draws them.
* two more pipelines split the difference: ``selfsup-random``, selfsup on the random batches
  (``train.group_by_length=false``), and ``baseline-grouped``, the baseline fed selfsup's grouped batches.

Each pipeline runs in its own subprocess (benchmarks/procs.py: peak RSS and PSS of its process tree from /proc,
the other processes' load; on CPU the pipelines take turns of ``--slice`` seconds, the others stopped).
Reported: frames/s (valid 10 ms log-mel frames of the clips per second over the timed steps: 1 + samples // 160
per clip, padding not counted), the share of valid frames in the padded batches, the ratio selfsup / each
other pipeline (the headline: against the fastest baseline on random batches), peak memory, the machine and the
versions.
Without synth-speech in selfsup's cache (``selfsup data get synth-speech``), or with ``--synthetic``, the clips
are synthetic harmonic "voices", flagged as such in the output.

    python benchmarks/speech_throughput.py --device cpu                 # results/speech_cpu.json
    python benchmarks/speech_throughput.py --device cpu --rounds 3      # the median of 3 rounds
    python benchmarks/speech_throughput.py --device cuda --compile      # untested: no GPU where it was written
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness
from procs import memory_method, peak_memory, run_round, timed_steps

SELFSUP, BASELINE = "selfsup", "baseline"
SELFSUP_RANDOM, GROUPED = "selfsup-random", "-grouped"  # selfsup on random batches; a baseline fed grouped batches
SIZES = ("tiny", "small", "base")
CLIP_NORM = 5.0  # TERA's released configuration (gradient_clipping), as s3prl's runner applies it
SYNTHETIC_CLIPS = 256  # at most this many distinct synthetic clips (the order wraps around them)
CPU_STEPS, CPU_WARMUP = 15, 3  # the defaults on CPU (50 and 10 on CUDA)


def _workers_of(role: str) -> int:
    return int(role.split("-w", 1)[1]) if role.startswith(BASELINE) else 0


def _grouped(role: str) -> bool:
    """Whether the role trains on length-grouped batches (selfsup's default for tera) or random ones."""
    return role == SELFSUP or GROUPED in role


def _label(role: str) -> str:
    if role == SELFSUP:
        return "selfsup tera (batched views in-process, batches grouped by length)"
    if role == SELFSUP_RANDOM:
        return "selfsup tera, random batches (train.group_by_length=false)"
    w = _workers_of(role)
    batches = "selfsup's grouped batches" if _grouped(role) else "random batches"
    return f"baseline (DataLoader, per-utterance features, {w} worker{'' if w == 1 else 's'}, {batches})"


# =============================================================================== the data (in the parent)


def _synthetic_clips(n: int, seed: int):
    """``n`` harmonic 'voices' of 1-5.6 s (synth-speech's range) at 16 kHz: 12 harmonics of a gliding pitch
    (90-260 Hz) under a 3-6 Hz syllable-like loudness wave, plus a little noise; int16 Waveforms."""
    import numpy as np

    from selfsup.data.audio import SAMPLE_RATE, Waveforms, to_int16

    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        t = np.arange(int(rng.integers(16_000, 90_000))) / SAMPLE_RATE
        f0, glide = rng.uniform(90, 260), rng.uniform(-60, 60)
        phase = 2 * np.pi * (f0 * t + 0.5 * glide * t * t / max(t[-1], 1e-3))
        voice = sum(np.sin(h * phase) / h for h in range(1, 13))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
        clips.append(to_int16(0.15 * voice * envelope + 0.002 * rng.standard_normal(len(t))))
    return Waveforms.from_clips(clips)


def _prepare_data(args, folder: Path) -> dict:
    """The clips both sides train on and their two orders, written to ``folder`` (synthetic clips too where
    needed): ``batch x (warmup + steps)`` positions of seeded permutations of the clips, one epoch after the
    other if the set is small: as they are (``order.npy``: random batches, what a DataLoader with shuffle
    draws) and grouped by length as selfsup's Trainer groups tera's batches (``order_grouped.npy``,
    ``selfsup.data.batching.length_grouped``)."""
    import numpy as np
    import torch

    from selfsup.data.batching import length_grouped
    from selfsup.data.spec import AudioSpec
    from selfsup.errors import UserError

    need, clips, note = args.batch * (args.warmup + args.steps), None, "--synthetic" if args.synthetic else None
    if not args.synthetic:
        try:
            from selfsup.data.named_speech import synth_speech_splits

            clips = synth_speech_splits()["train"].x
        except UserError as e:
            note = f"synth-speech is not cached ({e})"
    folder.mkdir(parents=True, exist_ok=True)
    if clips is not None:
        source, clips_folder = f"synth-speech train ({len(clips)} clips)", None
    else:
        harness.log(f"SYNTHETIC clips (harmonic voices): {note}")
        clips = _synthetic_clips(min(need, SYNTHETIC_CLIPS), args.seed)
        np.save(folder / "audio.npy", clips.flat)
        np.save(folder / "offsets.npy", clips.offsets)
        source, clips_folder = f"synthetic harmonic voices ({len(clips)} clips)", str(folder)
    spec, rng, epochs = AudioSpec(), np.random.default_rng(args.seed), []
    lengths = clips.lengths
    if args.max_seconds:
        lengths = np.minimum(lengths, int(args.max_seconds * spec.sample_rate))
    while len(epochs) * len(clips) < need:
        epochs.append(torch.from_numpy(rng.permutation(len(clips))))
    g = torch.Generator().manual_seed(args.seed)
    grouped = [length_grouped(e, lengths, args.batch, g) for e in epochs]
    share = {}
    for name, order in (("order", epochs), ("order_grouped", grouped)):
        order = torch.cat(order).numpy()[:need].astype(np.int64)
        np.save(folder / f"{name}.npy", order)
        frames = (1 + lengths[order] // spec.hop).reshape(-1, args.batch)
        share[name] = float(frames.sum() / (frames.max(1) * args.batch).sum())
    mean = lengths[np.load(folder / "order.npy")].mean()
    return {"source": source, "synthetic": clips_folder is not None, "synthetic_reason": note,
            "clips_folder": clips_folder, "folder": str(folder), "clips_available": len(clips),
            "clips_used": need, "distinct_clips_used": min(need, len(clips)),
            "mean_clip_seconds": float(mean / spec.sample_rate), "valid_frame_share": share["order"],
            "valid_frame_share_grouped": share["order_grouped"]}  # fmt: skip


# =============================================================================== the two sides (in a subprocess)


def _load_clips(data: dict):
    import numpy as np

    from selfsup.data.audio import Waveforms

    if data["clips_folder"]:
        f = Path(data["clips_folder"])
        return Waveforms(np.load(f / "audio.npy", mmap_mode="r"), np.load(f / "offsets.npy"))
    from selfsup.data.named_speech import synth_speech_splits

    return synth_speech_splits()["train"].x


def _build(args, device):
    """The same TERA model on both sides: seeded, built as the Trainer builds a method (``build_method``);
    channels_last where ``selfsup.precision`` says so; its AdamW."""
    import torch

    from selfsup.config import EncoderConfig, MethodConfig, RunConfig
    from selfsup.data.spec import AudioSpec
    from selfsup.methods import build_method
    from selfsup.precision import channels_last_for, to_channels_last
    from selfsup.train.optim import build_optimizer

    spec = AudioSpec()
    torch.manual_seed(args.seed)
    cfg = RunConfig(encoder=EncoderConfig("speech_transformer", {"size": args.size}), method=MethodConfig("tera"))
    method = build_method(cfg, spec).to(device)
    cl = channels_last_for(method, device)
    if cl:
        to_channels_last(method)
    d = type(method).defaults
    lr_per_256 = d["lr"] if device.type == "cuda" else d.get("cpu_lr", d["lr"])
    opt = build_optimizer(method, d["optimizer"], lr_per_256 * args.batch / 256, d["weight_decay"])
    return spec, method, opt, cl


def _selfsup_side(args, device, clips, order):
    import torch

    spec, method, opt, cl = _build(args, device)
    train = torch.compile(method) if args.compile else method
    b, crop = args.batch, int(args.max_seconds * spec.sample_rate) if args.max_seconds else None

    def batch(i):
        x, lengths = clips.batch(order[i * b : (i + 1) * b])  # [B, longest] float32, lengths [B]
        if crop:
            x, lengths = x[:, :crop], lengths.clamp_max(crop)
        x, lengths = x.to(device, non_blocking=True), lengths.to(device)
        g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + i)
        with torch.no_grad():
            return method.views(x, g, lengths)

    step = harness.trainer_step(method, train, opt, device, args.warmup + args.steps)
    return method, cl, opt, batch, step, lambda: None, None


class _Utterances:
    """s3prl-style: one utterance per item, its features and its TERA alterations computed here (in a loader
    worker, or in the training process with 0 workers). Item ``j`` is position ``j`` of the shared order."""

    def __init__(self, clips, order, spec, params, crop: int | None, seed: int):
        from selfsup.encoders.speech import LogMel

        self.clips, self.order, self.params, self.crop, self.seed = clips, order, params, crop, seed
        self.logmel = LogMel(spec)  # the encoder's front end (no parameters), here on one clip at a time

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int):
        import numpy as np
        import torch

        clip = self.clips[int(self.order[j])]
        clip = clip[: self.crop] if self.crop else clip
        wave = torch.from_numpy(np.asarray(clip, dtype=np.float32) * (1.0 / 32768.0))
        with torch.no_grad():
            frames, _ = self.logmel(wave[None])  # [1, F, M], normalized over the clip
        clean = frames[0].numpy()
        altered, where = self.alter(clean, np.random.default_rng((self.seed, j)))
        return torch.from_numpy(altered), torch.from_numpy(clean), torch.from_numpy(where)

    def alter(self, clean, rng):
        """One utterance's TERA alterations in numpy: -> (altered frames [F, M], positions the loss reads)."""
        import numpy as np

        p, (F, M) = self.params, clean.shape
        out, where = clean.copy(), np.zeros((F, M), dtype=bool)
        runs = int(round(F * p.mask_prob / p.mask_span)) if F > p.mask_span else 0
        if runs:
            span = np.arange(p.mask_span)
            rows = (rng.choice(F - p.mask_span + 1, runs, replace=False)[:, None] + span).ravel()
            dice = rng.random()
            if dice < p.zero_p:
                out[rows] = 0.0
            elif dice < p.zero_p + p.random_p:  # other runs of the same utterance
                src = (rng.choice(F - p.mask_span + 1, runs, replace=False)[:, None] + span).ravel()
                out[rows] = clean[src]
            where[rows] = True
        widest = int(p.freq_mask * M)
        if widest:
            width = int(rng.integers(0, widest + 1))
            start = int(rng.integers(0, M - width + 1))
            out[:, start : start + width] = 0.0
            where[:, start : start + width] = True
        if rng.random() < p.noise:
            out += rng.normal(0.0, p.noise_std, size=out.shape).astype(np.float32)
        return out, where


def _pad(items):
    """collate_fn: pad the utterances' altered frames, clean frames and masks to the longest; frame lengths."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    altered, clean, where = zip(*items)
    lengths = torch.tensor([len(a) for a in altered], dtype=torch.long)
    return (pad_sequence(altered, batch_first=True), pad_sequence(clean, batch_first=True),
            pad_sequence(where, batch_first=True), lengths)  # fmt: skip


def _baseline_side(args, device, clips, order, workers: int):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from selfsup.methods.tera import masked_l1
    from selfsup.precision import autocast

    spec, method, opt, cl = _build(args, device)

    class Plain(nn.Module):
        """The model as a plain training loop calls it: altered frames in, the L1 at the altered positions out."""

        def __init__(self, tera):
            super().__init__()
            self.tera = tera

        def forward(self, altered, clean, where, lengths):
            pred, _ = self.tera.reconstruct(altered, lengths)
            return masked_l1(pred, clean, where)

    plain = Plain(method)
    train = torch.compile(plain) if args.compile else plain
    b, crop = args.batch, int(args.max_seconds * spec.sample_rate) if args.max_seconds else None
    data = _Utterances(clips, order, spec, method.params, crop, args.seed)
    batches = [list(range(i * b, (i + 1) * b)) for i in range(args.warmup + args.steps)]
    loader = DataLoader(data, batch_sampler=batches, collate_fn=_pad, num_workers=workers,
                        pin_memory=device.type == "cuda")  # fmt: skip
    state = {"batches": iter(loader)}
    del loader  # held by the iterator alone: ``close`` ends the workers

    def batch(i):
        return tuple(t.to(device, non_blocking=True) for t in next(state["batches"]))

    def step(inputs, i):
        with autocast(device):
            loss = train(*inputs)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(method.parameters(), CLIP_NORM)
        if not bool(torch.isfinite(loss.detach()) & torch.isfinite(norm)):
            raise RuntimeError(f"loss or gradients not finite at step {i}")
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def close() -> None:
        state.clear()
        gc.collect()

    def feature_cpu() -> float:  # the per-utterance work of one batch, in one process at one thread
        torch.set_num_threads(1)
        for j in range(4):  # the first calls in a process are slower
            data[j]
        c0 = time.process_time()
        _pad([data[j] for j in range(b)])
        return time.process_time() - c0

    return method, cl, opt, batch, step, close, feature_cpu


def _run_role(args) -> dict:
    """A measured subprocess: build one side, run warm-up + timed steps, report monotonic step marks."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    device, cuda = torch.device(args.device), args.device == "cuda"
    clips = _load_clips(args.data)
    order = np.load(Path(args.data["folder"]) / ("order_grouped.npy" if _grouped(args.role) else "order.npy"))
    workers = _workers_of(args.role)
    if args.role in (SELFSUP, SELFSUP_RANDOM):
        method, cl, opt, batch, step, close, feature_cpu = _selfsup_side(args, device, clips, order)
    else:
        method, cl, opt, batch, step, close, feature_cpu = _baseline_side(args, device, clips, order, workers)
    params = sum(p.numel() for p in method.parameters())
    harness.log(f"  [{args.role}] built on {device}: {params:,} parameters, {args.threads} threads, batch {args.batch}")
    marks, spans, loss = timed_steps(batch, step, args, device)  # the spans: selfsup's views, the loader's wait
    hop, rate = method.encoder.spec.hop, method.encoder.spec.sample_rate
    b, crop = args.batch, int(args.max_seconds * rate) if args.max_seconds else None
    frames, padded = [], []  # of each timed step: valid frames, and frames with the padding
    for i in range(args.warmup, args.warmup + args.steps):
        lens = clips.lengths[order[i * b : (i + 1) * b]]
        lens = np.minimum(lens, crop) if crop else lens
        frames.append(int((1 + lens // hop).sum()))
        padded.append(int(b * (1 + lens.max() // hop)))
    threads = torch.get_num_threads()
    close()  # joins the loader workers, so RUSAGE_CHILDREN covers them
    return {"role": args.role, "batch_size": b, "steps": args.steps, "step_marks": marks,
            "data_spans": spans, "step_frames": frames, "step_padded_frames": padded,
            "final_loss": float(loss.float()), "threads": threads, "workers": workers, "params": params,
            "channels_last": cl, "lr": opt.param_groups[0]["lr"], "autocast": "bf16" if cuda else None,
            "compile": args.compile, "feature_cpu_s_per_batch": feature_cpu() if feature_cpu else None,
            **peak_memory(device)}  # fmt: skip


# =============================================================================== summary, table, JSON


def _summarize_side(rs: list[dict]) -> dict:
    quiet, quiet_steps = harness.quiet_rate(rs, lambda r: r["step_frames"])
    costs = [r["feature_cpu_s_per_batch"] for r in rs if r.get("feature_cpu_s_per_batch") is not None]
    return {
        "frames_per_s": statistics.median(sum(r["step_frames"]) / r["seconds"] for r in rs),
        "frames_per_s_rounds": [round(sum(r["step_frames"]) / r["seconds"], 1) for r in rs],
        "frames_per_s_median_step": statistics.median(
            statistics.median(n / dt for n, dt in zip(r["step_frames"], r["step_seconds"])) for r in rs
        ),
        "frames_per_s_quiet": quiet,
        "quiet_steps": quiet_steps,
        "utterances_per_s": statistics.median(r["images_per_s"] for r in rs),  # procs counts batch rows
        "valid_frame_share": sum(sum(r["step_frames"]) for r in rs) / sum(sum(r["step_padded_frames"]) for r in rs),
        "batch_ms_per_step": 1e3 * statistics.median(statistics.mean(r["views_seconds"]) for r in rs),
        "feature_cpu_s_per_batch": statistics.median(costs) if costs else None,
        **harness.load_and_memory(rs, children=True),
        "final_loss": rs[-1]["final_loss"],
        "workers": rs[0]["workers"],
        "params": rs[0]["params"],
        "lr": rs[0]["lr"],
        "channels_last": rs[0]["channels_last"],
    }


def summarize(runs: dict[str, list[dict]]) -> dict:
    sides = {role: _summarize_side(rs) for role, rs in runs.items()}
    a, ratios = sides[SELFSUP], {}
    for role, s in sides.items():
        if role == SELFSUP:
            continue
        q = (a["frames_per_s_quiet"], s["frames_per_s_quiet"])
        ratios[role] = {"all_steps": a["frames_per_s"] / s["frames_per_s"],
                        "median_step": a["frames_per_s_median_step"] / s["frames_per_s_median_step"],
                        "quiet_steps": q[0] / q[1] if all(q) else None,
                        "peak_pss": (a["peak_pss_bytes"] / s["peak_pss_bytes"]
                                     if a["peak_pss_bytes"] and s["peak_pss_bytes"] else None)}  # fmt: skip
    plain = [r for r in sides if r.startswith(BASELINE) and not _grouped(r)]  # what a plain DataLoader draws
    fastest = max(plain, key=lambda r: sides[r]["frames_per_s"])
    return {"sides": sides, "ratios_selfsup_over_baseline": ratios, "fastest_baseline": fastest,
            "ratio_selfsup_over_fastest_baseline": ratios[fastest]["all_steps"]}  # fmt: skip


def print_table(summary: dict, cuda: bool) -> None:
    cols = ["pipeline", "frames/s", "by median step", "utterances/s", "valid frames", "batch, ms/step"]
    cols += harness.load_columns("frames/s", cuda)
    cols += ["peak RSS (tree)", "peak PSS (tree)", "peak RSS (main)"] + (["CUDA max allocated"] if cuda else [])
    cols += ["final loss"]
    rows = []
    for role, s in summary["sides"].items():
        load, quiet = s["other_load_cores"], s["frames_per_s_quiet"]
        rows.append([_label(role), f"{s['frames_per_s']:,.0f}", f"{s['frames_per_s_median_step']:,.0f}",
                     f"{s['utterances_per_s']:.1f}", f"{100 * s['valid_frame_share']:.0f}%",
                     f"{s['batch_ms_per_step']:.0f}",
                     *([] if cuda else ["-" if load is None else f"{load:.2f}",
                                        "- (none)" if quiet is None else f"{quiet:,.0f} ({s['quiet_steps']} steps)"]),
                     harness.mib(s["peak_rss_bytes"]), harness.mib(s["peak_pss_bytes"]),
                     harness.mib(s["main_peak_rss_bytes"]),
                     *([harness.mib(s["cuda_max_allocated_bytes"])] if cuda else []),
                     f"{s['final_loss']:.3f}"])  # fmt: skip
    harness.print_markdown(cols, rows)
    print()
    for role, q in summary["ratios_selfsup_over_baseline"].items():
        cost = summary["sides"][role]["feature_cpu_s_per_batch"]
        print(f"selfsup / {_label(role)} = {q['all_steps']:.2f}x over all timed steps, {q['median_step']:.2f}x by "
              f"the median step" + ("" if cuda or q["quiet_steps"] is None else
                                    f", {q['quiet_steps']:.2f}x over the quiet steps")
              + ("" if cost is None else f"; its per-utterance features + masks cost {1e3 * cost:.0f} ms of CPU "
                 "per batch in one process at one thread"))  # fmt: skip
    if not cuda:
        r = summary["ratio_selfsup_over_fastest_baseline"]
        print(f"against the fastest baseline ({summary['fastest_baseline']}): {r:.2f}x; the target on CPU is "
              f">= 1.5x: {'met' if r >= 1.5 else 'NOT met'}")  # fmt: skip


# =============================================================================== flags and the whole run


def _parse(argv) -> argparse.Namespace:
    p = harness.parser(__doc__)
    p.add_argument("--size", choices=SIZES, help="speech_transformer size on both sides (default tiny on CPU, "
                   "base on CUDA)")  # fmt: skip
    p.add_argument("--batch", type=int, default=32, help="utterances per step (default 32, TERA's)")
    harness.add_steps(p, CPU_STEPS, CPU_WARMUP)
    p.add_argument("--workers", help="the baseline's DataLoader workers, comma-separated: one baseline pipeline "
                   "each (default 0,1 on CPU, min(8, cores) on CUDA)")  # fmt: skip
    p.add_argument("--max-seconds", type=float, default=0.0, help="crop every clip to this many seconds on both "
                   "sides (default 0: whole clips, as the Trainer takes them)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    p.add_argument("--synthetic", action="store_true", help="synthetic clips even where synth-speech is cached")
    harness.add_turns(p, "the pipelines run at once")
    harness.add_tail(p, "--out", "results JSON (default benchmarks/results/speech_<device>.json)")
    args = harness.parse_args(p, argv)
    if args.role:  # a measured subprocess
        return args
    harness.check_counts(p, args, args.batch, "--batch")
    if args.max_seconds < 0:
        p.error("--max-seconds must be 0 (whole clips) or more")
    if args.workers is not None:
        try:
            args.workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
        except ValueError:
            p.error("--workers takes comma-separated integers, e.g. 0,1")
        if not args.workers or min(args.workers) < 0:
            p.error("--workers takes comma-separated integers of 0 or more, e.g. 0,1")
    return args


def _run(args, tmp: Path) -> dict[str, list[dict]]:
    cmd = harness.command(__file__, args, "out")
    roles = [SELFSUP, SELFSUP_RANDOM] + [f"{BASELINE}-w{w}" for w in args.workers]
    roles.append(f"{BASELINE}{GROUPED}-w{min(args.workers)}")
    runs: dict[str, list[dict]] = {role: [] for role in roles}
    for r in range(args.rounds):
        order = harness.rotated(roles, r)
        print(f"round {r + 1}: " + (f"{', '.join(order)} taking turns of {args.slice:g} s" if args.slice
                                    else "one after the other"), flush=True)  # fmt: skip
        for res in run_round(order, cmd, args, tmp, "utterances/s"):  # procs's "images/s" counts utterances
            runs[res["role"]].append(res)
    return runs


def main(argv=None) -> int:
    args = _parse(argv)
    if args.role:  # a measured subprocess
        return harness.write_result(args, _run_role(args))
    cores = harness.usable_cores()
    harness.resolve(args, cores, CPU_STEPS, CPU_WARMUP, size=("tiny", "base"), workers=([0, 1], [min(8, cores)]))
    machine = harness.machine_info(args.device, cores)
    with tempfile.TemporaryDirectory(prefix="speech-throughput-") as tmp:
        args.data = _prepare_data(args, Path(tmp) / "data")  # outside the timings
        d = args.data
        print(f"data: {d['source']}{' [SYNTHETIC]' if d['synthetic'] else ''}; {d['clips_used']} clips used "
              f"({d['distinct_clips_used']} distinct), {d['mean_clip_seconds']:.2f} s on average"
              f"{f' (cropped to {args.max_seconds:g} s)' if args.max_seconds else ''}; "
              f"{100 * d['valid_frame_share']:.0f}% of the padded frames valid in random batches, "
              f"{100 * d['valid_frame_share_grouped']:.0f}% in batches grouped by length")  # fmt: skip
        model = f"tera on speech_transformer {args.size}, 80-bin log-mel, batch {args.batch}"
        wall = harness.Wall()
        print(f"Speech pretraining throughput on {machine['name']}: {model}, {args.warmup} warm-up + {args.steps} "
              f"timed steps, {args.threads} torch threads, baseline workers {','.join(map(str, args.workers))}"
              f"{', torch.compile' if args.compile else ''}{', bf16 autocast' if args.device == 'cuda' else ', fp32'}"
              f"; load average {wall.load_before[0]:.2f}", flush=True)  # fmt: skip
        runs = _run(args, Path(tmp))
    wall.stop()
    summary = summarize(runs)
    print(f"\nSpeech pretraining throughput, {machine['name']}: {model}, median of {args.rounds} round(s)")
    print_table(summary, args.device == "cuda")
    print(f"frames/s: valid 10 ms log-mel frames per second (padding not counted); batch, ms/step: making the views "
          f"(selfsup) or waiting for the loader (baseline) in the training process; memory of each pipeline's process "
          f"tree (main + loader workers): {memory_method(runs[SELFSUP][0], args)}; "
          f"{wall.note()}")  # fmt: skip
    if args.data["synthetic"]:
        print("NOTE: synthetic clips were used; run `selfsup data get synth-speech` for the real corpus")
    report = {"machine": machine, "device": args.device, "versions": harness.versions("torch", "numpy", "selfsup"),
              "settings": harness.settings(args, "out", "data"), "model": model,
              "data": {k: v for k, v in args.data.items() if k not in ("folder", "clips_folder")},
              "environment": harness.environment(),
              **wall.report(), "summary": summary, "runs": runs}  # fmt: skip
    harness.write_report(report, args.out, f"speech_{args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
