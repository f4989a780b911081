"""MoCo v2: the queue of keys, the momentum key encoder, checkpoints, DDP (2 processes, gloo)."""

import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import selfsup
from selfsup.methods.moco import MoCo
from selfsup.runs import latest_checkpoint, state_tensors
from selfsup.train.optim import build_optimizer

from .conftest import make_method, run_env, torchrun

HERE = Path(__file__).parent
B = 16


def make(num_samples=None, seed=0, **params) -> MoCo:
    return make_method("moco", image_size=16, num_samples=num_samples or 10**6, seed=seed, **params)


def images(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, 1, 20, 20), dtype=torch.uint8, generator=g)


def test_queue_holds_keys_of_earlier_steps_and_the_loss_uses_the_queue_before_the_step():
    method = make(num_samples=80, momentum=0.9)  # K = 80 / 2 = 40: steps of 16 keys write 0..15, 16..31, 32..39 + 0..7
    assert method.queue.shape == (40, 128) and int(method.queue_ptr) == 0
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    keys, ptrs = [], []
    for step in range(3):
        views = method.views(images(step), g)
        queue_before = method.queue.clone()
        out = method(views)
        with torch.no_grad():  # the same encoders on the same batches (train-mode BN): the step's own keys
            k = method.split_keys(views[1], views[3])
            q = method.query(views[0])[1]
        # InfoNCE against the queue as it was before the step: this step's keys are not its negatives
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue_before.T], dim=1) / 0.2
        expected = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
        assert torch.allclose(out.loss, expected, atol=1e-5), (out.loss, expected)
        assert torch.cdist(k, queue_before).min() > 1e-3, "a key of the current step was a negative"
        assert torch.allclose(k.norm(dim=1), torch.ones(B), atol=1e-5)
        keys.append(k)
        ptrs.append(int(method.queue_ptr))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.after_step(step, 3)  # the key encoder moves: keys of different steps differ
    assert ptrs == [16, 32, 8], "the pointer advances by the batch and wraps around"
    queue = method.queue
    assert torch.allclose(queue[8:16], keys[0][8:]), "step 1's keys not yet overwritten"
    assert torch.allclose(queue[16:32], keys[1])
    assert torch.allclose(queue[32:40], keys[2][:8]) and torch.allclose(queue[0:8], keys[2][8:]), "wrap-around"
    assert not torch.allclose(keys[0], keys[1], atol=1e-3)


def test_symmetric_loss_enqueues_the_keys_of_both_views():
    method = make(num_samples=100, symmetric=True)
    out = method(method.views(images(0), torch.Generator().manual_seed(0)))
    assert torch.isfinite(out.loss) and int(method.queue_ptr) == 2 * B


def test_key_encoder_gets_no_gradient_and_follows_the_query_encoder_by_ema():
    m = 0.9
    method = make(num_samples=64, momentum=m)
    key_params = list(method.key_encoder.parameters()) + list(method.key_projector.parameters())
    query_params = list(method.encoder.parameters()) + list(method.projector.parameters())
    assert key_params and all(not p.requires_grad for p in key_params)
    opt = build_optimizer(method, "sgd", lr=0.5, weight_decay=1e-4)
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not in_opt & {id(p) for p in key_params}, "the optimizer must not see the key encoder"
    assert {id(p) for p in query_params} <= in_opt
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        out = method(method.views(images(step), g))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        assert all(p.grad is None for p in key_params) and all(not p.requires_grad for p in key_params)
        assert all(p.grad is not None for p in method.encoder.parameters())
        old_key = [p.detach().clone() for p in key_params]
        opt.step()
        method.after_step(step, 2)
        for p, old, q in zip(key_params, old_key, query_params):
            assert torch.allclose(p, m * old + (1 - m) * q.detach(), atol=1e-6)
    # after two steps the key encoder is neither its initial copy nor the query encoder
    assert not all(torch.equal(p, q) for p, q in zip(key_params, query_params))


@pytest.mark.parametrize(("num_samples", "rows"), [(100, 50), (None, 4096), (10**6, 4096)])
def test_queue_is_capped_to_half_the_training_set(num_samples, rows):
    """At K = N a query meets its own stale key among the negatives from the second epoch on."""
    method = make(num_samples=num_samples)
    assert method.queue.shape == (rows, 128)
    assert torch.allclose(method.queue.norm(dim=1), torch.ones(rows), atol=1e-5)


def test_state_dict_round_trip_keeps_queue_pointer_and_key_encoder(tmp_path):
    method = make(num_samples=100)
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        method(method.views(images(step), g))
    assert int(method.queue_ptr) == 32
    save_file(state_tensors(method), str(tmp_path / "m.safetensors"))
    fresh = make(num_samples=100, seed=1)
    assert not torch.equal(fresh.queue, method.queue)
    fresh.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    assert torch.equal(fresh.queue, method.queue) and int(fresh.queue_ptr) == 32
    assert all(torch.equal(a, b) for a, b in zip(fresh.key_encoder.parameters(), method.key_encoder.parameters()))
    views = method.views(images(5), torch.Generator().manual_seed(5))
    assert torch.equal(fresh(views).loss, method(views).loss)


def test_one_process_shuffle_bn_encodes_permuted_sub_batches():
    """MoCo sec. 3.3 in one process: the key batch is permuted, encoded in sub-batches with their own BatchNorm
    statistics, and put back in order; so keys differ from whole-batch keys, and each key equals the encoding
    of its own sub-batch."""
    method = make(num_samples=1000, bn_splits=4)
    x = method.augment(images(0), torch.Generator().manual_seed(0))  # [16, 1, 16, 16]
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(3))
    assert method.bn_groups(B) == 2  # at least 8 images per sub-batch
    with torch.no_grad():
        k = method.split_keys(x, perm)
        for chunk in perm.chunk(2):  # each group of the permutation, encoded on its own
            assert torch.allclose(k[chunk], method.key(x[chunk]), atol=1e-5)
        assert not torch.allclose(k, method.key(x), atol=1e-3), "whole-batch statistics would leak the pair"
    q, kv, seed, p = method.views(images(1), torch.Generator().manual_seed(1))
    assert sorted(p.tolist()) == list(range(B)) and seed.shape == (1,)
    method.eval()  # evaluation: no shuffling, one batch
    with torch.no_grad():
        assert torch.allclose(method.keys(x, seed, perm)[0], method.key(x))


TINY = dict(data="digits", method="moco", width=8, batch_size=32, device="cpu", seed=3, log=lambda s: None)


def test_interrupted_run_resumes_to_the_same_weights_queue_and_pointer(tmp_path, monkeypatch):
    ref = selfsup.pretrain(out=tmp_path / "ref", budget="6steps", **TINY)

    class Stop(Exception):
        pass

    after_step = MoCo.after_step

    def stop_at_step_4(self, step, total):
        if step == 4:
            raise Stop
        after_step(self, step, total)

    monkeypatch.setattr(MoCo, "after_step", stop_at_step_4)
    with pytest.raises(Stop):
        selfsup.pretrain(out=tmp_path / "cut", budget="6steps", checkpoint_every="3steps", **TINY)
    monkeypatch.setattr(MoCo, "after_step", after_step)
    assert latest_checkpoint(tmp_path / "cut").name == "step-000003"
    selfsup.pretrain(resume=tmp_path / "cut", log=lambda s: None)
    a = load_file(str(latest_checkpoint(ref.path) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "cut") / "model.safetensors"))
    assert {"queue", "queue_ptr"} <= set(a) and any(k.startswith("key_encoder.") for k in a)
    assert int(a["queue_ptr"]) == 6 * 32 % a["queue"].shape[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_share_one_queue_with_the_keys_of_both_ranks(tmp_path):
    r = subprocess.run([*torchrun(), "--standalone", "--nproc_per_node", "2", str(HERE / "moco_ddp_worker.py"),
                        str(tmp_path)], capture_output=True, text=True, env=run_env(), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2))
    b = r0["keys"][0].shape[0]
    assert torch.equal(r0["queue"], r1["queue"]), "every rank holds the same queue"
    assert int(r0["ptr"]) == int(r1["ptr"]) == 2 * 2 * b  # 2 steps x 2 ranks x b keys
    for step in range(2):  # each step wrote rank 0's keys, then rank 1's
        start = step * 2 * b
        assert torch.allclose(r0["queue"][start : start + b], r0["keys"][step])
        assert torch.allclose(r0["queue"][start + b : start + 2 * b], r1["keys"][step])
    assert not torch.allclose(r0["keys"][0], r1["keys"][0]), "the ranks saw different images"
    # shuffle BN: a rank's keys were computed in a BatchNorm batch of images from both ranks,
    # so they differ from the keys of its own images encoded alone
    for r in (r0, r1):
        assert not torch.allclose(r["keys"][0], r["unshuffled_keys"], atol=1e-4)
    # DDP kept the query encoders in step, hence the key encoders too
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
