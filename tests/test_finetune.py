"""Fine-tuning: layer-wise lr decay from parameter names, learning beyond frozen features, determinism."""

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.config import EvalConfig
from selfsup.data import load_dataset
from selfsup.encoders import Encoder, Features, build_encoder
from selfsup.errors import UserError
from selfsup.evaluate import extract_features, linear_accuracy
from selfsup.evaluate.finetune import Classifier, finetune, param_groups, predict
from selfsup.evaluate.tasks import Classify
from selfsup.registry import PROTOCOLS
from selfsup.views import finetune_augment

from .conftest import image_spec

TASK = Classify()
SPEC = image_spec(1, 8)


def classifier(enc, n=10):
    return Classifier(enc, TASK.head(enc.dim, n))


def accuracy(model, x, y):
    return TASK.score(predict(model, x), y)


def tune(enc, x, y, **kw):
    return finetune(enc, x, y, TASK, 10, finetune_augment(SPEC), **kw)


def scales(model: nn.Module, decay: float, wd: float = 0.05) -> tuple[dict, dict]:
    """name -> lr scale and name -> weight decay, checking every trainable parameter is in exactly one group."""
    groups = param_groups(model, wd, decay)
    lr = {n: g["lr_scale"] for g in groups for n in g["names"]}
    decay_of = {n: g["weight_decay"] for g in groups for n in g["names"]}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(lr) == sorted(names) and sum(len(g["params"]) for g in groups) == len(names)
    return lr, decay_of


def test_layer_decay_resnet():
    torch.manual_seed(0)
    model = classifier(build_encoder("resnet18", SPEC, {"width": 4}))
    d = 0.5
    lr, wd = scales(model, d)
    # 4 stages: stem is layer 0, layers.i is layer i + 1, the head is layer 5 (full rate)
    for name, s in lr.items():
        n = name.removeprefix("encoder.")
        if n.startswith("stem."):
            assert s == pytest.approx(d**5), name
        elif n.startswith("layers."):
            assert s == pytest.approx(d ** (4 - int(n.split(".")[1]))), name
        else:
            assert name.startswith("head.") and s == 1.0, name
    assert lr["encoder.layers.0.0.conv1.weight"] == pytest.approx(0.0625)
    assert lr["encoder.layers.3.1.conv2.weight"] == pytest.approx(0.5)
    assert wd["encoder.stem.0.weight"] == 0.05 and wd["head.weight"] == 0.05
    assert wd["encoder.stem.1.weight"] == 0.0 and wd["head.bias"] == 0.0  # BatchNorm scale, bias
    assert set(scales(model, 1.0)[0].values()) == {1.0}  # decay 1.0 is off


class TinyViT(Encoder):
    """Only the parameter names of a ViT: patch_embed, cls_token, pos_embed, blocks.{i}, norm."""

    def __init__(self, dim: int = 8, depth: int = 3):
        super().__init__()
        self.dim = dim
        self.patch_embed = nn.Conv2d(1, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, dim))
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, mask=None):
        h = self.patch_embed(x.float()).flatten(2).transpose(1, 2)  # [B, 4, D]
        h = torch.cat([self.cls_token.expand(len(h), -1, -1), h], 1) + self.pos_embed
        for b in self.blocks:
            h = h + b(h)
        h = self.norm(h)
        return Features(h[:, 1:], h[:, 1:].mean(1))


def test_layer_decay_transformer_blocks():
    model = classifier(TinyViT(depth=3))
    d = 0.75
    lr, wd = scales(model, d)
    # 3 blocks: embeddings are layer 0 (d^4), blocks.i layer i + 1 (d^(3 - i)), norm and head layer 4 (1.0)
    for name in ("encoder.patch_embed.weight", "encoder.patch_embed.bias", "encoder.cls_token", "encoder.pos_embed"):
        assert lr[name] == pytest.approx(d**4), name
    for i in range(3):
        assert lr[f"encoder.blocks.{i}.1.weight"] == pytest.approx(d ** (3 - i))
        assert lr[f"encoder.blocks.{i}.0.weight"] == pytest.approx(d ** (3 - i))
    assert lr["encoder.norm.weight"] == lr["head.weight"] == 1.0
    assert wd["encoder.cls_token"] == wd["encoder.pos_embed"] == 0.0  # as MAE: no decay on tokens/positions
    assert wd["encoder.blocks.0.1.weight"] == 0.05 and wd["encoder.blocks.0.0.weight"] == 0.0


def test_layer_decay_real_vit():
    enc = build_encoder("vit_tiny", SPEC, {"patch_size": 4, "dim": 16, "depth": 2, "heads": 2})
    lr, _ = scales(classifier(enc), 0.5)
    assert lr["encoder.patch_embed.weight"] == pytest.approx(0.5**3)
    assert lr["encoder.transformer.blocks.0.norm1.weight"] == pytest.approx(0.5**2)
    assert lr["encoder.transformer.blocks.1.norm1.weight"] == pytest.approx(0.5)
    assert lr["encoder.transformer.norm.weight"] == lr["head.weight"] == 1.0


@pytest.fixture
def one_thread():
    """These networks are tiny (width 4, 8x8 images): a second thread only adds synchronization."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(cache_root):
    """500 training digits and 300 held-out training digits to score on (the test split is not used)."""
    ds = load_dataset("digits", log=lambda s: None)
    x, y = np.array(ds.train_x), torch.from_numpy(np.array(ds.train_y))
    return x[:500], y[:500], x[500:800], y[500:800]


def tiny_encoder(width: int = 4) -> Encoder:
    torch.manual_seed(0)
    return build_encoder("resnet18", SPEC, {"width": width}).eval()


def test_finetuning_learns_beyond_frozen_random_features(digits, one_thread):
    tr_x, tr_y, te_x, te_y = digits
    enc = tiny_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    probe = linear_accuracy(extract_features(enc, tr_x, device="cpu"), tr_y, extract_features(enc, te_x, device="cpu"),
                            te_y, 10)  # fmt: skip
    model = tune(enc, tr_x, tr_y, epochs=1, min_steps=200, batch_size=32, lr=1e-2, seed=0, device="cpu")
    acc = accuracy(model, te_x, te_y)
    assert acc > 0.6 and acc > probe + 0.15, (acc, probe)  # chance is 0.1
    tuned = model.encoder.state_dict()
    assert not torch.equal(tuned["layers.0.0.conv1.weight"], before["layers.0.0.conv1.weight"])
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # the original is a deep copy
    assert model.encoder is not enc and not model.training


def test_probe_first_starts_from_the_linear_probe(digits, one_thread):
    """LP-FT: with probe_first the head is the logistic regression of the frozen features (at PROBE_L2) before any
    step: it predicts exactly as that probe does; a run that barely moves (lr 1e-12, one step) keeps most of it,
    while the random head it replaces scores at chance."""
    import copy

    from selfsup.evaluate.finetune import PROBE_L2, _probe_head
    from selfsup.evaluate.protocols import linear_probe

    tr_x, tr_y, te_x, te_y = digits
    enc = tiny_encoder()
    train_f, test_f = extract_features(enc, tr_x, device="cpu"), extract_features(enc, te_x, device="cpu")
    ref, _ = linear_probe(train_f, tr_y, {"test": (test_f, te_y)}, 10, weight_decays=(PROBE_L2,))
    model = classifier(copy.deepcopy(enc))
    _probe_head(model, torch.as_tensor(tr_x), tr_y, None, 10, 256)
    assert abs(accuracy(model, te_x, te_y) - ref["test"]) < 0.01 and ref["test"] > 0.2, ref
    still = dict(epochs=1, min_steps=1, max_steps=1, batch_size=32, lr=1e-12, seed=0, device="cpu")
    lpft = accuracy(tune(enc, tr_x, tr_y, probe_first=True, **still), te_x, te_y)
    plain = accuracy(tune(enc, tr_x, tr_y, **still), te_x, te_y)
    assert lpft > plain + 0.1, (lpft, plain)


def test_same_seed_same_result(digits, one_thread):
    tr_x, tr_y, te_x, te_y = digits
    enc = tiny_encoder()
    run = lambda seed: tune(enc, tr_x[:200], tr_y[:200], epochs=1, min_steps=15, batch_size=32, seed=seed,
                            device="cpu")  # fmt: skip
    a, b, c = run(0), run(0), run(1)
    wa, wb, wc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert not PROTOCOLS.get("finetune").frozen and PROTOCOLS.get("linear").frozen
    accs = [accuracy(m, te_x, te_y) for m in (a, b)]
    assert accs[0] == accs[1] and 0 <= accs[0] <= 1


def test_one_image_per_class_still_trains(digits, one_thread):
    tr_x, tr_y, _, _ = digits
    first = [int(np.flatnonzero(tr_y.numpy() == c)[0]) for c in range(10)]  # a 1%-style subset: 10 images
    said = []
    model = tune(tiny_encoder(), tr_x[first], tr_y[first], epochs=1, min_steps=40, batch_size=64, lr=1e-2,
                 seed=0, device="cpu", log=said.append)  # fmt: skip
    assert len(said) == 4 and said[-1].startswith("  fine-tuning on 10 samples: step 40/40 of 10")  # batch cut
    assert accuracy(model, tr_x[first], tr_y[first]) >= 0.3  # chance 0.1


def test_eval_config_validation():
    EvalConfig().validate()
    bad = [
        ("finetune_layer_decay", 1.5, "finetune_layer_decay"),
        ("finetune_lr", 0.0, "finetune_lr"),
        ("finetune_epochs", 0, "finetune_epochs"),
        ("finetune_max_steps", 0, "finetune_max_steps"),
    ]
    for field, value, needle in bad:
        cfg = EvalConfig(**{field: value})
        with pytest.raises(UserError, match=needle):
            cfg.validate()


def test_finetune_defaults_follow_the_runs_input_kind_unless_set():
    from selfsup.config import FINETUNE_DEFAULTS

    image, text = EvalConfig().for_modality("image"), EvalConfig().for_modality("tokens")
    fields = lambda ev: (ev.finetune_epochs, ev.finetune_lr, ev.finetune_probe_first)  # noqa: E731
    assert fields(image) == FINETUNE_DEFAULTS["image"] == (10, 3e-3, False)
    assert fields(text) == FINETUNE_DEFAULTS["tokens"] == (3, 1e-3, True)
    mine = EvalConfig(finetune_epochs=5, finetune_lr=2e-4, finetune_probe_first=False).for_modality("tokens")
    assert fields(mine) == (5, 2e-4, False)
    # a task with its own recipe on an input kind (speech to text), and the kind's for the other tasks
    assert fields(EvalConfig(task="ctc").for_modality("audio")) == FINETUNE_DEFAULTS["audio/ctc"] == (120, 3e-3, False)
    assert fields(EvalConfig(task="classify").for_modality("audio")) == FINETUNE_DEFAULTS["image"]
    assert fields(EvalConfig(task="ctc", finetune_epochs=7).for_modality("audio"))[0] == 7


def test_the_finetune_estimate_runs_a_real_step_and_leaves_the_encoder_and_the_rng_alone(digits, one_thread):
    from selfsup.data import Split
    from selfsup.evaluate.estimate import estimate_phases

    tr_x, tr_y, te_x, te_y = digits
    enc = tiny_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    splits = {"pool": Split(tr_x[:200], tr_y[:200].numpy()), "val": Split(te_x[:50], te_y[:50].numpy()),
              "test": Split(te_x[50:100], te_y[50:100].numpy())}  # fmt: skip
    ev = EvalConfig(protocols=["finetune"], baselines=False, finetune_epochs=1, finetune_lr=1e-3,
                    finetune_probe_first=False)  # fmt: skip
    rng = torch.get_rng_state()
    out = estimate_phases(TASK, {"pretrained": enc}, splits, {0.1: np.arange(20), 1.0: np.arange(200)}, ev, "cpu", 10,
                          augment=finetune_augment(SPEC))  # fmt: skip
    assert set(out) == {"finetune"} and out["finetune"] > 0
    assert torch.equal(torch.get_rng_state(), rng)  # the estimate changes no result that follows it
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
