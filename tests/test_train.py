"""The loop: resume after a kill reaches the same weights; NaN stops the run and keeps the checkpoint."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import selfsup
import selfsup.methods  # noqa: F401  (registers)
import selfsup.train.loop as loop
from selfsup.errors import TrainingDiverged, UserError
from selfsup.registry import METHODS
from selfsup.runs import latest_checkpoint

from .conftest import die_after_save, run_env

TINY = dict(data="digits", method="simclr", width=8, batch_size=32, device="cpu", seed=3)


def final_weights(run_dir):
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


def test_run_folder_contents(tmp_path):
    run = selfsup.pretrain(out=tmp_path / "r", budget="4steps", **TINY, log=lambda s: None)
    assert (run.path / "config.yaml").is_file()
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and "loss" in rows[-1] and "emb_erank" in rows[-1]
    assert list((run.path / "tensorboard").glob("events.out.tfevents*"))
    cost = json.loads((run.path / "cost.json").read_text())
    assert cost["steps"] == 4 and cost["samples"] == 4 * 32
    trainer = torch.load(latest_checkpoint(run.path) / "trainer.pt", weights_only=True)
    assert trainer["step"] == 4
    resolved = selfsup.build_config(run.path / "config.yaml")
    assert resolved.train.steps == 4 and resolved.train.optimizer == "sgd" and resolved.train.lr > 0
    assert resolved.method.params["temperature"] == 0.2  # defaults written out in full
    enc = selfsup.load_encoder(run.path)
    assert enc.embed(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, enc.dim)
    info = json.loads((run.path / "encoder.json").read_text())
    assert info["builder"] == "resnet18" and info["params"] == {"width": 8, "small_stem": True}
    assert info["spec"]["kind"] == "image" and info["spec"]["size"] == 8 and info["weights"] == "encoder"


@pytest.mark.parametrize("method", [m for m, cls in METHODS.items() if cls.modality == "image"])
def test_duration_budget_works_for_every_method(method, tmp_path):
    """A duration budget times real steps before the run's length is known: hooks such as BYOL's and
    DINO's momentum schedules must cope with that, and the timed steps must leave no trace."""
    small = dict(TINY, method=method, batch_size=16)
    if getattr(METHODS.get(method), "default_encoder", "resnet18").startswith("vit"):
        small.pop("width")
        small.update(encoder__dim=32, encoder__depth=2)
    lines = []
    run = selfsup.pretrain(out=tmp_path / "r", budget="1s", **small, log=lines.append)
    train = selfsup.build_config(run.path / "config.yaml").train
    steps = train.steps
    assert isinstance(steps, int) and steps >= 1
    warned = [line for line in lines if line.startswith("WARNING: the 1s budget buys only")]
    planned = train.first_plan[0] if train.first_plan else steps  # the warning judges the first plan
    assert bool(warned) == (planned < 50), lines  # a budget too short to learn much says so, with the fix
    assert not warned or "--budget" in warned[0]
    assert json.loads((run.path / "cost.json").read_text())["steps"] == steps
    assert torch.load(latest_checkpoint(run.path) / "trainer.pt", weights_only=True)["step"] == steps


def test_channels_last_only_where_it_is_safe():
    """channels_last for convnets, but not on CPU for narrow convolutions (heap corruption, selfsup.precision),
    judged on the whole module that is converted: inpainting's 1-channel output conv keeps its method in NCHW."""
    from selfsup.encoders import build_encoder
    from selfsup.precision import channels_last_for

    from .conftest import image_spec, make_method

    spec = image_spec(1, 28)
    narrow = build_encoder("resnet18", image_spec(1, 8), {"width": 4})
    assert channels_last_for(build_encoder("resnet18", spec, {"width": 8}), "cpu")
    assert not channels_last_for(narrow, "cpu") and channels_last_for(narrow, "cuda")
    assert not channels_last_for(torch.nn.Linear(2, 2), "cuda")
    inpainting = make_method("inpainting", image_size=16)
    assert channels_last_for(inpainting.encoder, "cpu") and not channels_last_for(inpainting, "cpu")
    assert channels_last_for(make_method("simclr", image_size=16), "cpu")
    assert channels_last_for(narrow, "cpu", requested=True)  # train.channels_last decides when set


def test_same_seed_same_weights(tmp_path):
    a = selfsup.pretrain(out=tmp_path / "a", budget="3steps", **TINY, log=lambda s: None)
    b = selfsup.pretrain(out=tmp_path / "b", budget="3steps", **TINY, log=lambda s: None)
    c = selfsup.pretrain(out=tmp_path / "c", budget="3steps", **{**TINY, "seed": 4}, log=lambda s: None)
    wa, wb, wc = final_weights(a.path), final_weights(b.path), final_weights(c.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    steps = 30
    args = ["--data", "digits", "--method", "simclr", "--width", "8", "--batch-size", "32", "--device", "cpu",
            "--seed", "3", "--budget", f"{steps}steps", "--checkpoint-every", "3steps"]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "selfsup", "pretrain", *args, "--out", str(ref)], check=True,
                   env=run_env(), capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "selfsup", "pretrain", *args, "--out", str(killed)],
                            env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(killed) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = int(latest_checkpoint(killed).name.split("-")[1])
    assert 0 < stopped_at < steps, "the kill should land mid-run"
    r = subprocess.run([sys.executable, "-m", "selfsup", "pretrain", "--resume", str(killed)], env=run_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming {killed}" in r.stdout
    w_ref, w_res = final_weights(ref), final_weights(killed)
    assert latest_checkpoint(killed).name == f"step-{steps:06d}"
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import selfsup.methods.simclr as simclr

    calls = {"n": 0}
    real = simclr.nt_xent

    def flaky(z1, z2, t):
        calls["n"] += 1
        loss = real(z1, z2, t)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(simclr, "nt_xent", flaky)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="step 5.*step-000004"):
        selfsup.pretrain(out=out, budget="10steps", checkpoint_every="2steps", **TINY, log=lambda s: None)
    assert latest_checkpoint(out).name == "step-000004"
    assert all(torch.isfinite(v.float()).all() for v in final_weights(out).values())


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import selfsup.runs as ck

    out = tmp_path / "crash"
    selfsup.pretrain(out=out, budget="2steps", **TINY, log=lambda s: None)
    before = final_weights(out)

    def broken_save(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken_save)
    model = selfsup.load_encoder(out)
    with pytest.raises(OSError):
        ck.save_checkpoint(out, 99, model, {"step": 99})
    assert latest_checkpoint(out).name == "step-000002"
    after = final_weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_existing_run_needs_resume(tmp_path):
    selfsup.pretrain(out=tmp_path / "r", budget="1steps", **TINY, log=lambda s: None)
    with pytest.raises(UserError, match="--resume"):
        selfsup.pretrain(out=tmp_path / "r", budget="1steps", **TINY, log=lambda s: None)
    with pytest.raises(UserError, match="not a run folder"):
        selfsup.pretrain(resume=tmp_path / "none")


def test_accumulation_keeps_the_batch(tmp_path):
    run = selfsup.pretrain(out=tmp_path / "a", budget="2steps", accumulate=2, **TINY, log=lambda s: None)
    cost = json.loads((run.path / "cost.json").read_text())
    assert cost["samples"] == 2 * 32
    with pytest.raises(UserError, match="batch_size=30 must divide"):
        selfsup.pretrain(out=tmp_path / "b", budget="1steps", accumulate=4, **{**TINY, "batch_size": 30})


def test_config_yaml_is_the_resolved_config_written_before_step_one(tmp_path, monkeypatch):
    """resolve() fills every field once; the trainer writes that config before step 1 and never writes into it."""
    import copy

    import selfsup.methods.simclr as simclr
    from selfsup import runs
    from selfsup.config import resolve
    from selfsup.data import load_dataset
    from selfsup.methods import build_method
    from selfsup.train.loop import Trainer

    cfg = selfsup.build_config(out=str(tmp_path / "r"), budget="3steps", **TINY)
    ds = load_dataset("digits")
    resolved = resolve(cfg, ds)
    assert resolved.encoder.name == "resnet18" and resolved.train.steps == 3 and resolved.train.lr > 0
    assert resolved.method.params["temperature"] == 0.2 and cfg.train.lr is None  # cfg itself untouched
    seen = []
    real_forward = simclr.SimCLR.forward

    def forward(self, batch):
        seen.append((tmp_path / "r" / "config.yaml").is_file() and (tmp_path / "r" / "encoder.json").is_file())
        return real_forward(self, batch)

    monkeypatch.setattr(simclr.SimCLR, "forward", forward)
    before = copy.deepcopy(resolved)
    (tmp_path / "r").mkdir()
    torch.manual_seed(resolved.train.seed)
    trainer = Trainer(resolved, build_method(resolved, ds.spec), ds, torch.device("cpu"), log=lambda s: None)
    run = trainer.fit()
    assert resolved == before, "the trainer wrote into the config"
    assert seen and all(seen), "config.yaml and encoder.json exist before step 1"
    assert runs.load_config(run.path) == resolved == run.config


def test_resuming_a_finished_run_touches_nothing(tmp_path):
    run = selfsup.pretrain(out=tmp_path / "r", budget="4steps", **TINY, log=lambda s: None).path
    files = sorted(p for p in run.rglob("*") if p.is_file())
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    lines = []
    selfsup.pretrain(resume=run, log=lines.append)
    assert "nothing to resume" in lines[-1]
    assert sorted(p for p in run.rglob("*") if p.is_file()) == files
    assert all((p.stat().st_mtime_ns, p.read_bytes()) == stamps[p] for p in files)


def test_resume_keeps_cost_cumulative_and_metrics_unrepeated(tmp_path, monkeypatch):
    """A run stopped after its step-4 checkpoint (rows logged up to step 6) and resumed: cost.json covers all
    10 steps, and metrics.jsonl has each step once."""
    out = tmp_path / "r"
    restore_save = die_after_save(monkeypatch, 6)  # a kill after the step-6 rows were logged, before its checkpoint
    args = dict(out=out, budget="10steps", checkpoint_every="2steps", log=lambda s: None, **{**TINY, "seed": 5})
    with pytest.raises(KeyboardInterrupt):
        selfsup.pretrain(**args, **{"train__log_every": 1})
    (out / "checkpoints" / "latest").write_text("step-000004\n")  # as if killed before step 6 was saved
    restore_save()
    selfsup.pretrain(resume=out, log=lambda s: None)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 10 and 5 in steps
    cost = json.loads((out / "cost.json").read_text())
    assert cost["steps"] == 10 and cost["samples"] == 10 * 32 and cost["segments"] == 2
    assert cost["flops"] == 10 * cost["flops_per_step"]


def test_batch_larger_than_the_data(tmp_path):
    lines = []
    run = selfsup.pretrain(out=tmp_path / "a", budget="2steps", limit=20, log=lines.append, **TINY)
    assert any("batch_size lowered to 20" in line for line in lines) and run.config.train.batch_size == 20
    with pytest.raises(UserError, match="fewer than 1 process.*4 accumulation"):
        selfsup.pretrain(out=tmp_path / "b", budget="2steps", limit=3, accumulate=4, log=lambda s: None, **TINY)


def test_non_finite_gradients_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    """A finite loss whose gradients are not finite must not step: the NaN guard checks the gradient norm."""
    import selfsup.methods.simclr as simclr

    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    calls = {"n": 0}
    real = simclr.nt_xent

    def flaky(z1, z2, t):
        calls["n"] += 1
        return real(InfGrad.apply(z1) if calls["n"] > 4 else z1, z2, t)

    monkeypatch.setattr(simclr, "nt_xent", flaky)
    out = tmp_path / "inf"
    with pytest.raises(TrainingDiverged, match="gradients became non-finite.*step 5.*step-000004"):
        selfsup.pretrain(out=out, budget="10steps", checkpoint_every="2steps", **TINY, log=lambda s: None)
    assert latest_checkpoint(out).name == "step-000004"
    assert all(torch.isfinite(v.float()).all() for v in final_weights(out).values())


def test_evaluation_does_not_import_train():
    """evaluate/ and what it imports reach the run folder through selfsup.runs, never selfsup.train."""
    import ast
    from pathlib import Path

    root = Path(selfsup.__file__).parent

    def module_file(name):
        if name == "selfsup":  # `from selfsup import runs`: the module is selfsup.runs, queued beside it
            return None
        rel = Path(*name.split(".")[1:])
        for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if cand.is_file():
                return cand
        return None

    seen, todo = set(), ["selfsup.evaluate", "selfsup.runs", "selfsup.report"]
    while todo:
        name = todo.pop()
        if name in seen or (path := module_file(name)) is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfsup"):
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("selfsup")]
    assert "selfsup.evaluate.finetune" in seen and "selfsup.runs" in seen
    assert not [m for m in seen if m.startswith("selfsup.train") or m in ("selfsup.api", "selfsup.cli")], seen


def test_a_run_whose_machine_slows_down_midway_is_replanned_again_and_repeats_exactly(tmp_path, monkeypatch):
    """Another job starts on the machine after the first re-plan: the later checks (half and three quarters of
    the plan) see the slower pace and shorten the run, each re-plan recorded in config.yaml, the lr still
    continuous and decaying to 0, and the written config repeats the run exactly."""
    import selfsup.methods.byol as byol
    from selfsup.schedule import warmup_cosine

    forward, clock = byol.BYOL.forward, {}

    def loaded_later(self, batch):
        start = clock.setdefault("start", time.perf_counter())
        if time.perf_counter() - start > 2.5:  # the machine is shared from 2.5 s on: each step 60 ms slower
            time.sleep(0.06)
        return forward(self, batch)

    monkeypatch.setattr(byol.BYOL, "forward", loaded_later)
    monkeypatch.setattr(loop, "REPLAN_MIN_STEPS", 4)  # a short run on a loaded machine still re-plans
    lines = []
    run = selfsup.pretrain(out=tmp_path / "a", budget="8s", log=lines.append, **{**TINY, "method": "byol"})
    cfg = run.config.train
    replans = [line for line in lines if line.startswith("re-planned at step")]
    changed = sum(a != b for a, b in zip(cfg.first_plan, [*cfg.first_plan[1:], cfg.steps]))
    assert len(cfg.replanned_at) >= 2 and len(replans) == changed >= 1, lines  # a kept count is recorded, not said
    assert cfg.steps < cfg.first_plan[1] and cfg.replanned_at == sorted(cfg.replanned_at)
    assert cfg.replanned_at[1] in (int(0.5 * cfg.first_plan[1]), int(0.75 * cfg.first_plan[1]))
    assert selfsup.build_config(run.path / "config.yaml") == run.config
    lrs = [warmup_cosine(s, cfg.steps, cfg.warmup_steps, cfg.first_plan, cfg.replanned_at) for s in range(cfg.steps)]
    w = cfg.warmup_steps
    assert max(abs(a - b) for a, b in zip(lrs[w:], lrs[w + 1 :])) < 0.1 and lrs[-1] < 0.05
    assert all(a >= b for a, b in zip(lrs[w:], lrs[w + 1 :]))
    monkeypatch.setattr(byol.BYOL, "forward", forward)
    again = selfsup.pretrain(config=run.path / "config.yaml", out=tmp_path / "b", log=lambda s: None)
    wa, wb = final_weights(run.path), final_weights(again.path)
    assert again.config.train.steps == cfg.steps and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_duration_budget_is_replanned_once_and_repeats_exactly(tmp_path, monkeypatch):
    """The first steps of a process are slow, so the timed plan undershoots: at a quarter of the first plan the
    run is re-planned at the pace of the steps since (config.yaml rewritten before any checkpoint). Running
    the written config again repeats the run exactly, schedules that follow the run length (BYOL's target
    momentum, the lr) included."""
    import selfsup.methods.byol as byol
    from selfsup.schedule import warmup_cosine

    calls = {"n": 0}
    forward = byol.BYOL.forward

    def slow_start(self, batch):
        calls["n"] += 1
        if calls["n"] <= 6:  # the timed steps and the first training steps crawl
            time.sleep(0.15)
        return forward(self, batch)

    monkeypatch.setattr(byol.BYOL, "forward", slow_start)
    monkeypatch.setattr(loop, "REPLAN_MIN_STEPS", 4)  # a short run on a loaded machine still re-plans
    lines = []
    run = selfsup.pretrain(out=tmp_path / "a", budget="8s", log=lines.append, **{**TINY, "method": "byol"})
    cfg = run.config.train
    (first_plan, *_), (replanned_at, *_) = cfg.first_plan, cfg.replanned_at
    assert any(line.startswith(f"re-planned at step {replanned_at}:") for line in lines), lines
    assert cfg.steps > first_plan
    assert cfg.warmup_steps == int(0.1 * first_plan)
    assert replanned_at == max(cfg.warmup_steps, int(0.25 * first_plan)) >= 4
    assert selfsup.build_config(run.path / "config.yaml") == run.config
    lrs = [warmup_cosine(s, cfg.steps, cfg.warmup_steps, cfg.first_plan, cfg.replanned_at) for s in range(cfg.steps)]
    assert max(abs(a - b) for a, b in zip(lrs[cfg.warmup_steps :], lrs[cfg.warmup_steps + 1 :])) < 0.1  # continuous
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[cfg.warmup_steps :], lrs[cfg.warmup_steps + 1 :]))
    monkeypatch.setattr(byol.BYOL, "forward", forward)
    again = selfsup.pretrain(config=run.path / "config.yaml", out=tmp_path / "b", log=lambda s: None)
    wa, wb = final_weights(run.path), final_weights(again.path)
    assert again.config.train.steps == cfg.steps and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_later_budget_checks_wait_for_a_few_steps_of_pace():
    """A re-plan at step 22 to 46 steps must not check again at step 23 (half of 46): one step's pace is noise
    (a fresh-clone run on a loaded CPU re-planned 46 -> 43 that way)."""
    from types import SimpleNamespace

    assert loop.Trainer._next_check(SimpleNamespace(total=46), 22) == 34  # 23 is too close; three quarters is not
    assert loop.Trainer._next_check(SimpleNamespace(total=46), 33) is None  # 34 is too close, and then the end
    assert loop.Trainer._next_check(SimpleNamespace(total=400), 100) == 200


def test_a_short_plan_is_still_replanned(tmp_path, monkeypatch):
    """A plan whose quarter is under REPLAN_MIN_STEPS steps (a 2-minute budget on a loaded CPU: 28 steps) is
    re-planned at step REPLAN_MIN_STEPS instead of never: that run spent 82 s of its 120."""
    monkeypatch.setattr(loop, "REPLAN_MIN_STEPS", 6)
    monkeypatch.setattr(loop.Trainer, "_total_steps", lambda self: (setattr(self, "_budget", (time.perf_counter(), 4.0))
                                                                    or 20))  # fmt: skip
    run = selfsup.pretrain(out=tmp_path / "a", budget="4s", log=lambda s: None, **{**TINY, "method": "byol"})
    assert run.config.train.replanned_at[0] == 6 and run.config.train.first_plan[0] == 20
