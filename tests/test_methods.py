"""Every registered method with every registered encoder of its modality: the contract, and a few training
steps on random samples made from the spec (generated from the registries)."""

import dataclasses

import numpy as np
import pytest
import torch

import selfsup.methods  # noqa: F401  (registers)
from selfsup.config import RunConfig, resolve
from selfsup.data import Dataset, Split
from selfsup.data.seq_tokens import SeqTokenizer
from selfsup.data.spec import AudioSpec, ImageSpec, TokenSpec, random_samples
from selfsup.errors import UserError
from selfsup.methods import build_method
from selfsup.registry import ENCODERS, METHODS

# Small specs per modality, and a small size per encoder so every pair trains in well under a second.
SPECS = {"image": [ImageSpec(1, 16, (0.4,), (0.3,)), ImageSpec(3, 16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))],
         "tokens": [TokenSpec(64, 12, 0, cls_id=2, sep_id=3, mask_id=4, unk_id=1, special_ids=(0, 1, 2, 3, 4)),
                    TokenSpec(64, 12, 0, bos_id=0, eos_id=0, special_ids=(0,), causal=True),
                    SeqTokenizer("dna", 3).token_spec(causal=False, max_len=12)],
         "audio": [AudioSpec()]}  # fmt: skip
TINY = {"resnet18": {"width": 8}, "resnet50": {"width": 4},
        "vit_tiny": {"dim": 32, "depth": 2, "heads": 2}, "vit_small": {"dim": 32, "depth": 1, "heads": 4},
        "text_transformer": {"dim": 32, "depth": 1, "heads": 2},
        "speech_transformer": {"dim": 32, "depth": 1, "heads": 2, "conv_channels": 8}}  # fmt: skip
INCOMPATIBLE = {("mae", "resnet18"), ("mae", "resnet50")}  # MAE drops masked patches: it needs a ViT

PAIRS = [(m, e, i) for m, cls in METHODS.items() for e, b in ENCODERS.items() if b.spec_kind == cls.modality
         for i in range(len(SPECS[cls.modality]))]  # fmt: skip


def test_every_encoder_has_a_tiny_size_and_every_modality_a_spec():
    assert set(TINY) == set(ENCODERS.names())
    assert {cls.modality for _, cls in METHODS.items()} <= set(SPECS)


@pytest.mark.parametrize("name, encoder, spec_i", PAIRS)
def test_method_contract_and_a_few_steps(name, encoder, spec_i):
    cls = METHODS.get(name)
    spec = SPECS[cls.modality][spec_i]
    assert isinstance(cls.modality, str) and {"optimizer", "lr", "weight_decay"} <= set(cls.defaults)
    assert __import__(cls.__module__, fromlist=["x"]).__doc__, "the method file names its paper"
    cfg = RunConfig()
    cfg.method.name, cfg.encoder.name, cfg.encoder.params = name, encoder, dict(TINY[encoder])
    cfg.train.batch_size = 16
    g = torch.Generator().manual_seed(0)
    x, lengths = random_samples(spec, 16, g)
    ds = Dataset("random", spec, Split(x.numpy()))
    family = getattr(cls, "tokenizer_family", None)  # a token method needs its tokenizer family's spec
    # a sequence-only method refuses a text spec itself (other mix-ups are refused by data.prepare, with the data)
    wrong_kind = getattr(cls, "raw_kinds", None) == ("sequence",) and not getattr(spec, "alphabet", "")
    if (name, encoder) in INCOMPATIBLE or (family is not None and (family == "bpe") != spec.causal) or wrong_kind:
        with pytest.raises(UserError, match=name):
            build_method(resolve(cfg, ds), spec)
        return
    resolved = resolve(cfg, ds)
    assert set(resolved.method.params) == {f.name for f in dataclasses.fields(cls.Params)}, "every method field"
    assert resolved.encoder.params, "defaults are filled into the config"
    assert resolve(resolved, ds) == resolved, "resolving a resolved config changes nothing"
    torch.manual_seed(0)
    method = build_method(resolved, spec)
    if hasattr(method, "prepare"):  # data-dependent set-up (HuBERT's k-means), as the Trainer does before step 1
        method.prepare(ds, torch.Generator().manual_seed(1), lambda s: None)
    opt = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    for _ in range(3):
        out = method(method.views(x, g) if lengths is None else method.views(x, g, lengths))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        for v in out.metrics.values():  # tensors on the device, turned into floats only at logging steps
            assert isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad
        if out.embedding is not None:
            assert out.embedding.ndim == 2 and len(out.embedding) > 1 and not out.embedding.requires_grad
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None for p in method.encoder.parameters())
        opt.step()
        hook = getattr(method, "after_step", None)
        if hook is not None:
            hook(0, 3)
    changed = [k for k, v in method.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert any(not k.startswith("input.") and "running" not in k for k in changed), "the encoder is trained"
    assert not any(k.startswith("input.") for k in changed), "the input normalization is fixed"
    evaluated = getattr(method, getattr(method, "eval_encoder", "encoder"))
    assert evaluated.embed(x).shape == (16, method.encoder.dim)


def test_unknown_method_and_encoder_params_are_errors():
    spec = SPECS["image"][0]
    ds = Dataset("random", spec, Split(np.zeros((32, 1, 16, 16), np.uint8)))
    cfg = RunConfig()
    cfg.method.params = {"temprature": 0.1}
    with pytest.raises(UserError, match="temprature"):
        resolve(cfg, ds)
    cfg = RunConfig()
    cfg.method.name, cfg.encoder.params = "mae", {"width": 16}
    with pytest.raises(UserError, match="'width'.*vit_tiny|vit_tiny.*'width'"):
        resolve(cfg, ds)


@pytest.mark.parametrize("name", ["mlm", "nsp", "sop", "electra"])
def test_text_methods_take_their_cpu_lr_on_a_cpu_and_the_per_256_rule_elsewhere(name):
    cls = METHODS.get(name)
    spec = SPECS["tokens"][0]
    x, _ = random_samples(spec, 512, torch.Generator().manual_seed(0))
    ds = Dataset("random", spec, Split(x.numpy()))
    cfg = RunConfig()
    cfg.method.name = name
    cpu = resolve(cfg, ds, "cpu").train
    assert cpu.batch_size == cls.defaults["cpu_batch_size"] == 32
    assert cpu.lr == pytest.approx(cls.defaults["cpu_lr"] * 32 / 256) == pytest.approx(1e-3)  # docs/text-defaults.md
    gpu = resolve(cfg, ds, "cuda").train
    assert gpu.lr == pytest.approx(cls.defaults["lr"] * gpu.batch_size / 256)
