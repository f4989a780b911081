"""Every registered method: the contract, and a few training steps on tiny data."""

import pytest
import torch

import selfsup.methods  # noqa: F401  (registers)
from selfsup.config import RunConfig
from selfsup.methods import build_method
from selfsup.registry import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract_and_a_few_steps(name):
    cls = METHODS.get(name)
    assert isinstance(cls.modality, str) and {"optimizer", "lr", "weight_decay"} <= set(cls.defaults)
    assert __import__(cls.__module__, fromlist=["x"]).__doc__, "the method file names its paper"
    cfg = RunConfig()
    cfg.method.name, cfg.encoder.width = name, 8
    torch.manual_seed(0)
    method = build_method(cfg, channels=1, image_size=16)
    assert cfg.method.params, "defaults are filled into the config"
    opt = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8, generator=g)
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    losses = []
    for _ in range(3):
        out = method(method.views(x, g))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(isinstance(v, float) for v in out.metrics.values())
        if out.embedding is not None:
            assert out.embedding.shape[1] == method.encoder.dim and not out.embedding.requires_grad
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None for p in method.encoder.parameters())
        opt.step()
        losses.append(out.loss.item())
    changed = [k for k, v in method.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert any(not k.startswith("input.") and "running" not in k for k in changed), "the encoder is trained"
    assert not any(k.startswith("input.") for k in changed), "the input normalization is fixed"
