"""BYOL: the target network takes no gradient and follows the online one on a cosine EMA schedule;
the loss is 2 - 2 cos in both directions; the two view distributions; resume."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import selfsup
from selfsup.methods._momentum import cosine_momentum
from selfsup.methods.byol import BYOL, byol_loss, default_base_momentum
from selfsup.runs import latest_checkpoint
from selfsup.train.optim import build_optimizer
from selfsup.views import solarize

from .conftest import make_method


def make(channels=1, **params) -> BYOL:
    return make_method("byol", channels=channels, image_size=16, **params)


def images(seed: int, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (16, channels, 20, 20), dtype=torch.uint8, generator=g)


def target_and_online(method):
    target = list(method.target_encoder.parameters()) + list(method.target_projector.parameters())
    online = list(method.encoder.parameters()) + list(method.projector.parameters())
    return target, online


def test_loss_is_two_minus_two_cos():
    p = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0, 2.0], [1.0, 1.0], [-2.0, -2.0]])  # cos 0, 1/sqrt(2), -1: scale does not matter
    expected = ((2 - 0) + (2 - 2 / math.sqrt(2)) + (2 + 2)) / 3
    assert torch.allclose(byol_loss(p, z), torch.tensor(expected))
    assert torch.allclose(byol_loss(p, 5 * p), torch.tensor(0.0), atol=1e-6)
    # the same as the squared distance of the normalized vectors
    assert torch.allclose(byol_loss(p, z), (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean())


def test_forward_loss_is_symmetric_sum_of_prediction_losses():
    method = make()
    v1, v2 = method.views(images(0), torch.Generator().manual_seed(0))
    out = method((v1, v2))
    with torch.no_grad():  # the same networks on the same batch (train-mode BN sees the same 2B images)
        x = torch.cat([v1, v2])
        p1, p2 = method.predictor(method.projector(method.encoder(x).pooled)).chunk(2)
        z1, z2 = method.target_projector(method.target_encoder(x).pooled).chunk(2)
    cos = lambda a, b: (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1)  # noqa: E731
    expected = (2 - 2 * cos(p1, z2)).mean() + (2 - 2 * cos(p2, z1)).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert out.embedding.shape == (16, method.encoder.dim) and not out.embedding.requires_grad


def test_target_gets_no_gradient_and_is_not_optimized():
    method = make()
    target, online = target_and_online(method)
    assert target and all(not p.requires_grad for p in target)
    opt = build_optimizer(method, "sgd", lr=0.1, weight_decay=1e-5)
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not in_opt & {id(p) for p in target}
    assert {id(p) for p in online + list(method.predictor.parameters())} <= in_opt
    out = method(method.views(images(0), torch.Generator().manual_seed(0)))
    out.loss.backward()
    assert all(p.grad is None for p in target)
    assert all(p.grad is not None for p in online + list(method.predictor.parameters()))


def test_momentum_schedule_rises_from_base_to_one():
    base, total = 0.99, 100
    taus = [cosine_momentum(base, k, total) for k in range(total + 1)]
    assert taus[0] == pytest.approx(base) and taus[-1] == pytest.approx(1.0)
    assert taus[50] == pytest.approx((1 + base) / 2)
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert cosine_momentum(base, 2 * total, total) == pytest.approx(1.0)
    # the default tau_base: the paper's 0.996 for long runs, lower for short ones
    assert default_base_momentum(10**6) == 0.996 and default_base_momentum(400) == pytest.approx(0.75)
    assert default_base_momentum(1000) == pytest.approx(0.9) and default_base_momentum(80) == 0.0


@pytest.mark.parametrize("explicit", [True, False])
def test_after_step_moves_the_target_by_the_scheduled_tau(explicit):
    total = 200
    base = 0.9 if explicit else 0.5  # default: 1 - 100 / 200
    method = make(base_momentum=base) if explicit else make()
    target, online = target_and_online(method)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    g = torch.Generator().manual_seed(0)
    for step, tau in [(0, base), (100, (1 + base) / 2)]:
        opt.zero_grad()
        method(method.views(images(step), g)).loss.backward()
        opt.step()
        old = [p.detach().clone() for p in target]
        method.after_step(step, total)
        for p, o, q in zip(target, old, online):
            assert torch.allclose(p, tau * o + (1 - tau) * q.detach(), atol=1e-6)
        assert not all(torch.equal(p, o) for p, o in zip(target, old))
    old = [p.detach().clone() for p in target]
    method.after_step(total, total)  # tau = 1 at the end: the target stays
    assert all(torch.equal(p, o) for p, o in zip(target, old))


def test_views_are_seeded_and_solarize_only_rgb_second_view_by_default():
    method = make()
    a = method.views(images(0), torch.Generator().manual_seed(7))
    b = method.views(images(0), torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1]) and a[0].shape == (16, 1, 16, 16) and a[0].dtype == torch.float32
    assert method.blur == (0.0, 0.0)  # 16 px: no blur
    # default solarization: the second view of RGB images (p 0.2), never the first, never 1-channel images
    for channels, solarized in [(3, True), (1, False)]:
        x = images(1, channels)
        default = make(channels).views(x, torch.Generator().manual_seed(3))
        without = make(channels, solarize_p2=0.0).views(x, torch.Generator().manual_seed(3))
        assert torch.equal(default[0], without[0])
        assert torch.equal(default[1], without[1]) != solarized
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(solarize(x, 0.0, g), x)
    assert torch.equal(solarize(x, 1.0, g), torch.where(x >= 0.5, 1 - x, x))
    changed = (solarize(x, 0.5, g) != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54, "about half the samples solarized"


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    tiny = dict(data="digits", method="byol", width=8, batch_size=32, device="cpu", seed=3, log=lambda s: None)
    ref = selfsup.pretrain(out=tmp_path / "ref", budget="4steps", **tiny)

    class Stop(Exception):
        pass

    after_step = BYOL.after_step

    def stop_at_step_3(self, step, total):
        if step == 3:
            raise Stop
        after_step(self, step, total)

    monkeypatch.setattr(BYOL, "after_step", stop_at_step_3)
    with pytest.raises(Stop):
        selfsup.pretrain(out=tmp_path / "cut", budget="4steps", checkpoint_every="2steps", **tiny)
    monkeypatch.setattr(BYOL, "after_step", after_step)
    selfsup.pretrain(resume=tmp_path / "cut", log=lambda s: None)
    a = load_file(str(latest_checkpoint(ref.path) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "cut") / "model.safetensors"))
    assert any(k.startswith("target_encoder.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
