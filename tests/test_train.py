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
from selfsup.errors import TrainingDiverged, UserError
from selfsup.registry import METHODS
from selfsup.train.checkpoint import latest_checkpoint

from .conftest import run_env

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


@pytest.mark.parametrize("method", [m for m, cls in METHODS.items() if cls.modality == "image"])
def test_duration_budget_works_for_every_method(method, tmp_path):
    """A duration budget times real steps before the run's length is known: hooks such as BYOL's and
    DINO's momentum schedules must cope with that, and the timed steps must leave no trace."""
    run = selfsup.pretrain(out=tmp_path / "r", budget="1s", **{**TINY, "method": method, "batch_size": 16},
                           log=lambda s: None)  # fmt: skip
    steps = selfsup.build_config(run.path / "config.yaml").train.steps
    assert isinstance(steps, int) and steps >= 1
    assert json.loads((run.path / "cost.json").read_text())["steps"] == steps
    assert torch.load(latest_checkpoint(run.path) / "trainer.pt", weights_only=True)["step"] == steps


def test_channels_last_only_where_it_is_safe():
    """channels_last for convnets, but not on CPU for 4-channel stages (heap corruption, encoders.use_channels_last)."""
    from selfsup.encoders import build_encoder, use_channels_last

    narrow = build_encoder("resnet18", in_channels=1, image_size=8, width=4)
    assert use_channels_last(build_encoder("resnet18", in_channels=1, image_size=28, width=8), "cpu")
    assert not use_channels_last(narrow, "cpu") and use_channels_last(narrow, "cuda")
    assert not use_channels_last(torch.nn.Linear(2, 2), "cuda")


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
    import selfsup.train.checkpoint as ck

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
