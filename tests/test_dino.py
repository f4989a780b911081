"""DINO: teacher EMA without gradient, multi-crop views, centering, sharpening, the loss's pairs, state, schedules."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from selfsup.methods.dino import DINO, dino_loss
from selfsup.views import solarize

from .conftest import make_method

B = 8


def make(seed: int = 0, image_size: int = 16, **params) -> DINO:
    return make_method("dino", image_size=image_size, seed=seed, **params)


def images(n: int = B, size: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)


def views(method: DINO, seed: int = 1, size: int = 20):
    return method.views(images(size=size), torch.Generator().manual_seed(seed))


def teacher_params(method: DINO) -> list[torch.Tensor]:
    return [*method.teacher_encoder.parameters(), *method.teacher_head.parameters()]


def student_params(method: DINO) -> list[torch.Tensor]:
    return [*method.encoder.parameters(), *method.head.parameters()]


def test_teacher_gets_no_gradient_and_follows_the_student_by_ema():
    method = make(n_local=2, momentum=0.9)
    assert all(not p.requires_grad for p in teacher_params(method))
    assert all(torch.equal(t, s) for t, s in zip(teacher_params(method), student_params(method))), "starts as a copy"
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    assert len(opt.param_groups[0]["params"]) == len(student_params(method)), "the optimizer holds the student only"
    out = method(views(method))
    out.loss.backward()
    assert all(p.grad is None for p in teacher_params(method))
    assert all(p.grad is not None for p in student_params(method))
    old = [p.clone() for p in teacher_params(method)]
    opt.step()
    assert all(torch.equal(t, o) for t, o in zip(teacher_params(method), old)), "the step leaves the teacher alone"
    assert not all(torch.equal(t, s) for t, s in zip(teacher_params(method), student_params(method)))

    step, total = 3, 10
    m = 1 - (1 - 0.9) * (math.cos(math.pi * step / total) + 1) / 2
    method.after_step(step, total)
    for t, o, s in zip(teacher_params(method), old, student_params(method)):
        torch.testing.assert_close(t, m * o + (1 - m) * s, rtol=0, atol=1e-6)


def test_teacher_momentum_goes_from_base_to_one_by_cosine():
    method = make(momentum=0.996)
    assert method.teacher_momentum(0, 100) == pytest.approx(0.996)
    assert method.teacher_momentum(50, 100) == pytest.approx(0.998)
    assert method.teacher_momentum(100, 100) == pytest.approx(1.0)
    ms = [method.teacher_momentum(s, 100) for s in range(101)]
    assert all(a <= b for a, b in zip(ms, ms[1:]))


def test_multicrop_views_and_who_sees_which():
    method = make(image_size=28, n_local=3)
    assert method.local_size == 12  # 28 * 96 / 224
    v = views(method, size=28)
    assert len(v) == 5
    assert [tuple(x.shape) for x in v] == [(B, 1, 28, 28)] * 2 + [(B, 1, 12, 12)] * 3
    assert all(x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 for x in v)
    assert not torch.equal(v[0], v[1]) and not torch.equal(v[2], v[3]), "every crop is drawn anew"
    again = views(method, size=28)
    assert all(torch.equal(a, b) for a, b in zip(v, again)), "all randomness comes from the generator"
    assert not torch.equal(views(method, seed=2, size=28)[0], v[0])

    seen = {"teacher": [], "student": []}
    method.teacher_encoder.register_forward_hook(lambda mod, args, out: seen["teacher"].append(args[0]))
    method.encoder.register_forward_hook(lambda mod, args, out: seen["student"].append(args[0]))
    pooled = []
    method.encoder.register_forward_hook(lambda mod, args, out: pooled.append(out.pooled.detach()))
    out = method(v)
    assert [tuple(x.shape) for x in seen["teacher"]] == [(2 * B, 1, 28, 28)]
    assert torch.equal(seen["teacher"][0], torch.cat(v[:2])), "the teacher sees the two global crops only"
    assert [tuple(x.shape) for x in seen["student"]] == [(2 * B, 1, 28, 28), (3 * B, 1, 12, 12)]
    assert torch.equal(seen["student"][1], torch.cat(v[2:])), "the student sees all crops, same sizes together"
    assert out.embedding.shape == (B, method.encoder.dim) and not out.embedding.requires_grad
    assert torch.equal(out.embedding, pooled[0][:B]), "the student's features of the first global crop"


def test_local_size_param_and_no_local_crops():
    assert make(image_size=28, local_size=10).local_size == 10
    method = make(n_local=0)
    v = views(method)
    assert len(v) == 2
    out = method(v)
    assert torch.isfinite(out.loss)


def test_solarize():
    x = torch.linspace(0, 1, 11).view(1, 1, 1, 11).repeat(4, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(solarize(x, 0.0, g), x)
    y = solarize(x, 1.0, g)
    torch.testing.assert_close(y, torch.where(x >= 0.5, 1 - x, x))
    assert not torch.equal(y, x)


def capture_teacher_logits(method: DINO) -> list[torch.Tensor]:
    got: list[torch.Tensor] = []
    method.teacher_head.register_forward_hook(lambda mod, args, out: got.append(out.detach().clone()))
    return got


def test_center_moves_toward_the_mean_teacher_output_with_momentum():
    method = make(n_local=2, out_dim=64)
    got = capture_teacher_logits(method)
    c0 = torch.randn(1, 64) * 0.1
    method.center.copy_(c0)
    method(views(method))
    mean = got[0].mean(0, keepdim=True)  # over both global crops of every image
    torch.testing.assert_close(method.center, 0.9 * c0 + 0.1 * mean, rtol=0, atol=1e-7)
    assert not torch.allclose(mean, c0, atol=1e-3)

    c1 = method.center.clone()
    method(views(method, seed=5))
    torch.testing.assert_close(method.center, 0.9 * c1 + 0.1 * got[1].mean(0, keepdim=True), rtol=0, atol=1e-7)


def test_teacher_is_centered_and_sharpened():
    method = make(n_local=2, out_dim=64)
    got = capture_teacher_logits(method)
    c0 = torch.randn(1, 64) * 0.1
    method.center.copy_(c0)
    out = method(views(method))
    tau_t = method.teacher_temperature()
    assert tau_t == pytest.approx(0.02) and method.params.student_temp == pytest.approx(0.1)

    def entropy(logits, tau):
        return -(F.softmax(logits / tau, -1) * F.log_softmax(logits / tau, -1)).sum(-1).mean().item()

    centered = got[0] - c0  # the center before this step's update
    assert out.metrics["teacher_entropy"] == pytest.approx(entropy(centered, tau_t), rel=1e-4)
    assert out.metrics["teacher_entropy"] < entropy(centered, method.params.student_temp) - 0.01, "sharper"
    assert out.metrics["kl"] >= -1e-5
    teacher_entropy = float(out.metrics["teacher_entropy"])
    assert entropy(got[0], tau_t) != pytest.approx(teacher_entropy, rel=1e-4), "the center applies"


def test_loss_excludes_same_crop_pairs():
    # 2 global + 1 local crop, batch 1, K = 2, student temperature 1.
    s = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]], [[0.0, math.log(4)]]])  # [V=3, B=1, K=2]
    q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [G=2, B=1, K=2] one-hot teachers
    # log P_s: crop 0 (1/2, 1/2); crop 1 (3/4, 1/4); crop 2 (1/5, 4/5).
    # teacher 0 (class 0) pairs with crops 1, 2: -log 3/4 - log 1/5; teacher 1 (class 1) with 0, 2: -log 1/2 - log 4/5
    hand = (-math.log(3 / 4) - math.log(1 / 5) - math.log(1 / 2) - math.log(4 / 5)) / 4
    assert dino_loss(s, q, student_temp=1.0).item() == pytest.approx(hand, rel=1e-6)
    with_same = hand * 4 - math.log(1 / 2) - math.log(1 / 4)
    assert dino_loss(s, q, 1.0).item() != pytest.approx(with_same / 6, rel=1e-3)

    # Random case against the plain double loop, with a temperature.
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    q = F.softmax(t / 0.04, -1)
    pairs = [-(q[i] * F.log_softmax(s[v] / 0.1, -1)).sum(-1).mean() for i in range(2) for v in range(5) if v != i]
    torch.testing.assert_close(dino_loss(s, q, 0.1), torch.stack(pairs).mean())


def test_head_last_layer_is_weight_normalized_and_state_is_plain_tensors():
    method = make(out_dim=32, bottleneck_dim=16)
    assert "head.last_layer.weight" in method.state_dict() and method.head.last_layer.weight.shape == (32, 16)
    h = torch.randn(4, method.encoder.dim)
    logits = method.head(h)
    assert logits.abs().max() <= 1 + 1e-6, "cosines: unit bottleneck against unit prototypes"
    with torch.no_grad():
        method.head.last_layer.weight.mul_(torch.rand(32, 1) + 0.5)  # rescale each prototype
    torch.testing.assert_close(method.head(h), logits)


def test_state_dict_round_trip_holds_center_teacher_and_schedule(tmp_path):
    a = make(seed=0, n_local=2)
    opt = torch.optim.SGD([p for p in a.parameters() if p.requires_grad], lr=0.5)
    for step in range(2):
        a(views(a, seed=step)).loss.backward()
        opt.step()
        opt.zero_grad()
        a.after_step(step, 10)
    state = a.state_dict()
    assert {"center", "steps_done", "total_steps"} <= set(state)
    assert any(k.startswith("teacher_encoder.") for k in state) and any(k.startswith("teacher_head.") for k in state)
    assert not torch.equal(state["center"], torch.zeros_like(state["center"]))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"))

    b = make(seed=1, n_local=2)
    assert not torch.equal(b.teacher_head.last_layer.weight, a.teacher_head.last_layer.weight)
    b.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    assert torch.equal(b.center, a.center) and b.teacher_temperature() == a.teacher_temperature()
    assert all(torch.equal(x, y) for x, y in zip(teacher_params(a), teacher_params(b)))
    la, lb = a(views(a, seed=7)).loss, b(views(b, seed=7)).loss
    assert torch.equal(la, lb) and torch.equal(a.center, b.center)


def test_teacher_temperature_schedule():
    method = make(warmup_teacher_temp=0.04, teacher_temp=0.07, teacher_temp_warmup=0.3)
    assert method.teacher_temperature() == pytest.approx(0.04), "before the first step"
    assert method.teacher_temperature(0, 100) == pytest.approx(0.04)
    assert method.teacher_temperature(15, 100) == pytest.approx(0.055)
    assert method.teacher_temperature(30, 100) == pytest.approx(0.07)
    assert method.teacher_temperature(99, 100) == pytest.approx(0.07)
    method.after_step(14, 100)  # 15 steps done
    assert method.teacher_temperature() == pytest.approx(0.055)
    assert make(teacher_temp=0.07, teacher_temp_warmup=0.0).teacher_temperature(0, 100) == pytest.approx(0.07)


def test_after_step_without_a_known_total_uses_the_base_momentum():
    method = make(momentum=0.9)
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(1.0)
    old = [p.clone() for p in method.teacher_head.parameters()]
    method.after_step(0, None)  # the trainer times a few steps before it knows the total
    for t, o, s in zip(method.teacher_head.parameters(), old, method.head.parameters()):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * s, rtol=0, atol=1e-6)
    assert method.teacher_temperature() == pytest.approx(method.params.warmup_teacher_temp)
