"""Watching the pipelines of a comparison run in their own subprocesses (Linux /proc): each process tree's peak
RSS and PSS, the CPU time of other processes during each step, and on CPU the turns of ``--slice`` seconds
(the other pipelines stopped with SIGSTOP) over which a pipeline's step times are counted; and what a measured
subprocess reports of its own memory. Used by harness.py, text_throughput.py and speech_throughput.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PSS_INTERVAL = 2.0  # seconds between PSS samples (smaps_rollup costs milliseconds per process)
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
KIB = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux


def _read_kib(path: str, key: str) -> int:
    try:
        with open(path) as f:
            return next((int(line.split()[1]) for line in f if line.startswith(key)), 0)
    except (OSError, ValueError):
        return 0


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
    """utime + stime of one process, in clock ticks (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _busy_ticks() -> int:
    """CPU time that every process on the machine has used (all cores), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


class _Pipeline:
    """One pipeline's subprocess, in its own session so that it and its loader workers stop and continue
    together; the peak summed RSS and PSS of its process tree. RSS counts the pages that forked workers share
    with the main process once per process; PSS splits them, so the PSS sum is what the pipeline occupies."""

    def __init__(self, role: str, cmd: list[str], result: Path):
        self.role, self.result_file = role, result
        self.proc = subprocess.Popen(cmd + ["--role", role, "--result", str(result)], cwd=ROOT,
                                     start_new_session=True)  # fmt: skip
        self.on_proc = os.path.isdir(f"/proc/{self.proc.pid}")
        self.rss = self.pss = self.max_procs = 0
        self.running: list[tuple[float, float]] = []  # (monotonic start, end) of the slices it ran in

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def sample(self, with_pss: bool, ticks: dict[int, int]) -> None:
        """One memory sample; the CPU ticks of every process of the tree go into ``ticks``."""
        if not self.on_proc or not self.alive():
            return
        pids = _tree(self.proc.pid)
        self.rss = max(self.rss, 1024 * sum(_read_kib(f"/proc/{p}/status", "VmRSS:") for p in pids))
        if with_pss:
            self.pss = max(self.pss, 1024 * sum(_read_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
        self.max_procs = max(self.max_procs, len(pids))
        for p in pids:
            t = _cpu_ticks(p)
            if t is not None:
                ticks[p] = max(t, ticks.get(p, 0))

    def result(self) -> dict:
        if self.proc.wait() != 0:
            raise SystemExit(f"the {self.role} run failed (exit {self.proc.returncode}); see its messages above")
        r = json.loads(self.result_file.read_text())
        if self.on_proc:
            r.update(tree_peak_rss_bytes=max(self.rss, r["ru_maxrss_self_bytes"]), tree_peak_pss_bytes=self.pss,
                     tree_max_processes=self.max_procs, memory_method="/proc sampling")  # fmt: skip
        else:  # no /proc: the main process's peak plus the largest child's
            r.update(tree_peak_rss_bytes=r["ru_maxrss_self_bytes"] + r["ru_maxrss_children_bytes"],
                     memory_method="getrusage(SELF) + getrusage(CHILDREN)")  # fmt: skip
        return r


class _CpuLog:
    """The machine's busy CPU time and ours (the measured trees and this process) over time."""

    def __init__(self):
        self.on = os.path.isfile("/proc/stat")
        self.points: list[tuple[float, int, int]] = []  # (monotonic time, machine busy ticks, our ticks)

    def add(self, ticks: dict[int, int]) -> None:
        if self.on:
            self.points.append((time.monotonic(), _busy_ticks(), sum(ticks.values()) + (_cpu_ticks("self") or 0)))

    def _at(self, t: float):
        for (ta, ba, oa), (tb, bb, ob) in zip(self.points, self.points[1:]):
            if ta <= t <= tb:
                w = (t - ta) / (tb - ta) if tb > ta else 0.0
                return ba + w * (bb - ba), oa + w * (ob - oa)
        return None

    def other_load(self, segments: list[tuple[float, float]]) -> float | None:
        """Mean number of cores that other processes kept busy during ``segments``."""
        foreign = seconds = 0.0
        for a, b in segments:
            pa, pb = self._at(a), self._at(b)
            if pa is None or pb is None:
                return None
            foreign += (pb[0] - pa[0]) - (pb[1] - pa[1])
            seconds += b - a
        return max(0.0, foreign / TICKS / seconds) if seconds > 0 else None


def _overlap(a: float, b: float, running: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of [a, b] during which the pipeline ran (was not stopped)."""
    return [(max(a, s), min(b, e)) for s, e in running if min(b, e) > max(a, s)]


def _ran(a: float, b: float, running: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in _overlap(a, b, running))


def run_pipelines(roles: list[str], cmd: list[str], args, tmp: Path) -> list[dict]:
    """Run ``roles`` to completion. With ``--slice``, all start at once and each in turn runs for a slice while
    the others are stopped; otherwise ``roles`` is one pipeline. Step times count only the slices a pipeline ran."""
    ticks: dict[int, int] = {}
    cpu, sliced = _CpuLog(), len(roles) > 1
    group = [_Pipeline(role, cmd, tmp / f"{role}.json") for role in roles]
    if sliced:
        for m in group:
            m.signal(signal.SIGSTOP)
    last_pss, turn = float("-inf"), 0
    try:
        while any(m.alive() for m in group):
            m, turn = group[turn % len(group)], turn + 1
            if not m.alive():
                continue
            m.signal(signal.SIGCONT)
            start = time.monotonic()
            while m.alive() and (not sliced or time.monotonic() - start < args.slice):
                with_pss = time.monotonic() - last_pss >= PSS_INTERVAL
                last_pss = time.monotonic() if with_pss else last_pss
                for x in group:
                    x.sample(with_pss and x is m, ticks)
                cpu.add(ticks)
                time.sleep(args.sample_interval)
            if sliced:
                m.signal(signal.SIGSTOP)
            m.running.append((start, time.monotonic()))
    finally:  # never leave a stopped process behind
        for m in group:
            m.signal(signal.SIGCONT)
            if sys.exc_info()[0] is not None:
                m.signal(signal.SIGKILL)
    return [_timed(m.result(), m.running, cpu, args.slice if sliced else None) for m in group]


def _timed(r: dict, running: list[tuple[float, float]], cpu: _CpuLog, slice_s) -> dict:
    """Step and views times over the slices the pipeline ran in; the other load during each step."""
    marks = r["step_marks"]
    steps = list(zip(marks[:-1], marks[1:]))
    r["step_seconds"] = [_ran(a, b, running) for a, b in steps]
    r["views_seconds"] = [_ran(a, b, running) for a, b in r.pop("data_spans")]
    r["seconds"] = sum(r["step_seconds"])
    r["images_per_s"] = r["batch_size"] * r["steps"] / r["seconds"]
    r["slice_s"] = slice_s
    if cpu.on:
        r["other_load_cores"] = cpu.other_load(_overlap(marks[0], marks[-1], running))
        r["step_other_load_cores"] = [cpu.other_load(_overlap(a, b, running)) for a, b in steps]
    load = r.get("other_load_cores")
    print(f"   {r['role']}: {r['images_per_s']:.1f} images/s ({r['seconds']:.1f} s for {r['steps']} steps"
          + ("" if load is None else f"; other processes kept {load:.2f} cores busy") + ")", flush=True)  # fmt: skip
    return r


def run_round(roles: list[str], cmd: list[str], args, tmp: Path, unit: str | None = None) -> list[dict]:
    """One round of ``roles``: all at once in turns of ``--slice`` seconds, else one after the other; their results.
    ``unit``: what the lines printed per run count, in place of "images/s" (then printed once the round is done)."""
    groups = [roles] if args.slice else [[role] for role in roles]
    if unit is None:
        return [res for group in groups for res in run_pipelines(group, cmd, args, tmp)]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return [res for group in groups for res in run_pipelines(group, cmd, args, tmp)]
    finally:
        print(printed.getvalue().replace("images/s", unit), end="", flush=True)


def memory_method(r: dict, args) -> str:
    """How a run's memory was measured (and how often, where sampled)."""
    how = r["memory_method"]
    every = f" (RSS every {args.sample_interval:g} s, PSS every {PSS_INTERVAL:g} s)" if how == "/proc sampling" else ""
    return how + every


# =============================================================================== in a measured subprocess


def timed_steps(batch, step, args, device, warmed=None) -> tuple[list[float], list[tuple[float, float]], Any]:
    """``args.warmup`` + ``args.steps`` steps of ``step(batch(i), i)`` on ``device`` (a ``torch.device``; synchronized
    after each step on CUDA) -> the ``step_marks`` and ``data_spans`` that :func:`run_pipelines` reads (on the
    system-wide monotonic clock: the parent matches them with its samples) and the last loss. The marks: the start
    of the timed steps and the end of each; the spans: (start, end) of each timed step's ``batch(i)``. ``warmed``:
    called once the warm-up is done."""
    import torch

    cuda = device.type == "cuda"
    marks, spans, loss = [], [], None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if warmed is not None:
                warmed()
            marks.append(time.monotonic())
        t = time.monotonic()
        inputs = batch(i)
        spans.append((t, time.monotonic()))
        loss = step(inputs, i)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            marks.append(time.monotonic())
    return marks, spans[args.warmup :], loss


def own_peak_rss() -> tuple[int, str]:
    """This process's peak RSS. ``ru_maxrss`` does not do: Linux carries it over exec from the parent's memory
    at fork (here the parent's, which may have held a corpus or trained tokenizers), while ``VmHWM`` belongs
    to the process's own address space."""
    try:
        with open("/proc/self/status") as f:
            kib = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
        if kib is not None:
            return kib * 1024, "VmHWM"
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB, "ru_maxrss"


def peak_memory(device, vmhwm: bool = True) -> dict:
    """A measured subprocess's memory at its end, under the keys :class:`_Pipeline` reads: its own peak RSS
    (``own_peak_rss``, or ``ru_maxrss`` alone where not ``vmhwm``), the largest of its children that have been
    waited for (join the loader workers first), CUDA's max allocated on ``device`` (a ``torch.device``)."""
    import torch

    cuda = device.type == "cuda"
    if vmhwm:
        rss, source = own_peak_rss()
        out = {"ru_maxrss_self_bytes": rss, "ru_maxrss_self_source": source}
    else:
        out = {"ru_maxrss_self_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB}
    return {**out, "ru_maxrss_children_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * KIB,
            "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None}  # fmt: skip
