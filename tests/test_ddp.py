"""DDP on CPU: 2 processes under torchrun with gloo."""

import json
import subprocess
from pathlib import Path

import torch

from selfsup.losses import nt_xent

from .conftest import run_env, torchrun

HERE = Path(__file__).parent


def test_gathered_loss_equals_single_process_loss(tmp_path):
    r = subprocess.run([*torchrun(), "--standalone", "--nproc_per_node", "2", str(HERE / "ddp_loss_worker.py"),
                        str(tmp_path)], capture_output=True, text=True, env=run_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 16, generator=g).requires_grad_(True), torch.randn(8, 16, generator=g).requires_grad_(True)
    full = nt_xent(z1, z2, temperature=0.5)
    full.backward()
    ranks = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    # each rank's loss is the mean over its own anchors; DDP averages them into the full-batch loss
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach(), atol=1e-6)
    # gradients reach every rank's projections, including through the other rank's negatives:
    # with DDP's averaging over 2 ranks they equal the single-process gradient of the full batch
    g1 = torch.cat([ranks[0]["g1"], ranks[1]["g1"]]) / 2
    g2 = torch.cat([ranks[0]["g2"], ranks[1]["g2"]]) / 2
    assert torch.allclose(g1, z1.grad, atol=1e-6) and torch.allclose(g2, z2.grad, atol=1e-6)
    # global BN: each rank's half batch is normalized with the statistics of the whole batch, gradients included
    x = (torch.randn(8, 3, 4, 4, generator=g) * 2 + 1).requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    y = bn(x)
    weights = torch.cat([torch.arange(4 * 3 * 16).view(4, 3, 4, 4)] * 2).float()  # each rank's own weighting
    (y * weights).sum().backward()
    assert torch.allclose(torch.cat([ranks[0]["bn_y"], ranks[1]["bn_y"]]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([ranks[0]["bn_gx"], ranks[1]["bn_gx"]]), x.grad, atol=1e-4)
    for r in ranks:
        assert torch.allclose(r["bn_mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(r["bn_var"], bn.running_var, atol=1e-5)


def test_torchrun_pretrain_two_processes(tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([*torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "selfsup", "pretrain",
                        "--data", "digits", "--method", "simclr", "--width", "8", "--batch-size", "32",
                        "--budget", "3steps", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, env=run_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 3]  # rank 0 alone writes: no duplicate rows
    assert json.loads((out / "cost.json").read_text())["world_size"] == 2
    assert r.stdout.count("run saved in") == 1
    assert (out / "checkpoints" / "step-000003" / "model.safetensors").is_file()


def test_skewed_clocks_agree_on_steps_and_checkpoints(tmp_path):
    """A duration budget and time-based checkpoints with rank 1's clock skewed and its steps slowed: the step count
    and every checkpoint are rank 0's decisions, broadcast, so the ranks finish together instead of hanging at a
    collective. SimCLR gets the paper's global (synchronized) BatchNorm under DDP."""
    r = subprocess.run([*torchrun(), "--standalone", "--nproc_per_node", "2", str(HERE / "ddp_skew_worker.py"),
                        str(tmp_path)], capture_output=True, text=True, env=run_env(), timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["steps"] == r1["steps"] >= 10
    assert r0["saves"] == r1["saves"] and len(r0["saves"]) >= 2 and r0["saves"][-1] == r0["steps"]
    assert r0["sync_bn"] and r1["sync_bn"] and r0["sync_bn_config"] is True
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == r0["steps"] and len({row["step"] for row in rows}) == len(rows)
