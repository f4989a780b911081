"""Group shares in pretraining (issue 13): --pretrain-groups resamples the data to chosen shares of one attribute,
--balance-by draws each value of an attribute equally often; fine-tuning takes sample weights. The pretraining
tests give digits a made-up, imbalanced group ``shade`` (80% a, 15% b, 5% c)."""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import selfsup
import selfsup.train.loop as loop
from selfsup.cli import main
from selfsup.data.base import Split
from selfsup.data.groups import balanced_weights, check_groups, parse_group_shares, resample_indices
from selfsup.errors import UserError
from selfsup.evaluate.finetune import _Batches, finetune
from selfsup.evaluate.tasks import Classify
from selfsup.runs import latest_checkpoint

from .conftest import die_after_save

TINY = dict(data="digits", method="simclr", width=8, batch_size=32, device="cpu", seed=3)
SHARES = {"a": 0.8, "b": 0.15, "c": 0.05}
EIGHT = np.repeat(list("abcdefgh"), [300, 200, 100, 100, 100, 100, 50, 50])  # 1000 samples, 8 values


def shade(n: int) -> np.ndarray:
    """80% a, 15% b, 5% c, interleaved: [n] str."""
    i = np.arange(n) % 20
    return np.where(i < 16, "a", np.where(i < 19, "b", "c"))


def counts(values: np.ndarray) -> dict[str, int]:
    names, n = np.unique(values, return_counts=True)
    return {str(k): int(c) for k, c in zip(names, n)}


def freqs(values: np.ndarray) -> dict[str, float]:
    return {k: c / len(values) for k, c in counts(values).items()}


@pytest.fixture
def shaded(monkeypatch):
    """digits with groups {"shade": ...} on its training split; -> the trainers built (each with its dataset)."""
    real_load, real_init, built = loop.load_configured, loop.Trainer.__init__, []

    def load(data, limit=None, log=print):
        ds = real_load(data, limit, log=log)
        return dataclasses.replace(ds, train=dataclasses.replace(ds.train, groups={"shade": shade(len(ds.train))}))

    def init(self, cfg, method, dataset, *args, **kwargs):
        built.append((self, dataset))
        real_init(self, cfg, method, dataset, *args, **kwargs)

    monkeypatch.setattr(loop, "load_configured", load)
    monkeypatch.setattr(loop.Trainer, "__init__", init)
    return built


def drawn_shades(trainer, dataset, epochs: int) -> dict[str, float]:
    """The shades of the samples the trainer's batch order draws over ``epochs`` epochs."""
    idx = np.concatenate([trainer._indices(s).numpy() for s in range(epochs * trainer.steps_per_epoch)])
    return freqs(dataset.train.groups["shade"][idx])


# ----------------------------------------------------------------------------- parsing and checks


def test_parse_group_shares():
    assert parse_group_shares("accent=en-sc:0.02") == ("accent", {"en-sc": 0.02})
    assert parse_group_shares(" accent = a:0.1, b:50% ") == ("accent", {"a": 0.1, "b": 0.5})
    assert parse_group_shares("speaker=s1:1") == ("speaker", {"s1": 1.0})
    assert parse_group_shares("x=a:0.5,b:0.5") == ("x", {"a": 0.5, "b": 0.5})  # sum exactly 1


@pytest.mark.parametrize("bad, why", [
    ("accent", "no ATTR="), ("=a:0.1", "attribute before '=' is empty"), ("accent=en-sc", "has no ':SHARE'"),
    ("accent=en-sc:lots", "not a number"), ("accent=en-sc:1.5", "outside [0, 1]"), ("accent=a:-0.1", "outside"),
    ("accent=a:0.6,b:0.6", "sum to 1.2"), ("accent=a:0.1,speaker=b:0.1", "more than one attribute"),
    ("accent=a:0.1,a:0.2", "given twice"), ("accent=:0.1", "a value is empty"),
])  # fmt: skip
def test_malformed_pretrain_groups_is_one_line_before_anything_loads(bad, why, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["pretrain", "--data", "no-such-data", "--pretrain-groups", bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selfsup: error: --pretrain-groups") and why in err, err
    assert "e.g. accent=en-sc:0.02" in err and not out.exists()


def test_balance_by_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["pretrain", "--data", "no-such-data", "--balance-by", "accent=x", "--out", out]) == 2
    assert "name one group attribute (e.g. --balance-by accent)" in capsys.readouterr().err
    assert main(["pretrain", "--data", "digits", "--balance-by", "accent", "--out", out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--balance-by accent: this data has no groups" in err, err
    assert "--group-column accent" in err and "groups.csv" in err
    table = tmp_path / "docs.csv"  # packed causal rows mix documents: they carry no groups
    table.write_text("text,topic\n" + "".join(f"document number {i} about nothing much,t{i % 2}\n" for i in range(40)))
    args = ["--data", str(table), "--group-column", "topic", "--balance-by", "topic", "--out", out, "--device", "cpu"]
    assert main(["pretrain", "--method", "gpt", "--budget", "1steps", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "packed token windows" in err and "leave --balance-by out" in err, err
    assert main(["pretrain", "--data", "digits", "--pretrain-groups", "accent=x:0.1", "--out", out]) == 2
    assert "--pretrain-groups accent: this data has no groups" in capsys.readouterr().err


def test_check_groups_names_the_groups_there_are():
    split = Split(np.zeros((4, 1)), groups={"speaker": np.array(list("abab")), "accent": np.array(list("xxyy"))})
    check_groups(split, "speaker", "--balance-by")
    with pytest.raises(UserError, match="no group 'voice'; its groups are accent, speaker$"):
        check_groups(split, "voice", "--balance-by")
    with pytest.raises(UserError, match="3 speaker values for 4 samples"):
        check_groups(Split(np.zeros((4, 1)), groups={"speaker": np.array(list("abc"))}), "speaker", "--balance-by")


# ----------------------------------------------------------------------------- resampling and weights


def test_resample_gives_the_requested_counts_and_the_rest_in_natural_proportions():
    for size in (1000, 737):
        idx = resample_indices(EIGHT, {"h": 0.02}, size, seed=0, attr="letter")
        assert len(idx) == size and np.all(np.diff(idx) >= 0)  # sorted
        got = counts(EIGHT[idx])
        assert got["h"] == round(0.02 * size) and sum(got.values()) == size  # 20 of 1000; 14.74 -> 15 of 737
        natural = {v: c * 0.98 * size / 950 for v, c in zip("abcdefg", (300, 200, 100, 100, 100, 100, 50))}
        assert all(abs(got[v] - q) < 1 for v, q in natural.items()), (got, natural)
    # 737: quotas h 14.74, a 228.08, b 152.05, c-f 76.03, g 38.01; floors sum to 736, the largest remainder is h's
    assert got == {"a": 228, "b": 152, "c": 76, "d": 76, "e": 76, "f": 76, "g": 38, "h": 15}


def test_resample_is_seeded_subsamples_without_and_repeats_evenly():
    a = resample_indices(EIGHT, {"h": 0.12, "a": 0.1}, 1000, seed=1)
    assert np.array_equal(a, resample_indices(EIGHT, {"h": 0.12, "a": 0.1}, 1000, seed=1))
    assert not np.array_equal(a, resample_indices(EIGHT, {"h": 0.12, "a": 0.1}, 1000, seed=2))
    of_a = a[EIGHT[a] == "a"]
    assert len(of_a) == 100 and len(np.unique(of_a)) == 100  # 100 of 300: no repeats
    _, times = np.unique(a[EIGHT[a] == "h"], return_counts=True)
    assert len(times) == 50 and times.sum() == 120 and set(times) == {2, 3}  # 120 of 50: each twice, 20 thrice
    h = resample_indices(EIGHT, {"h": 0.5}, 1000, seed=0)
    assert np.array_equal(np.unique(h[EIGHT[h] == "h"], return_counts=True)[1], np.full(50, 10))


def test_resample_edge_cases():
    only = resample_indices(EIGHT, {"a": 0.6, "b": 0.4}, 1000, seed=0)
    assert freqs(EIGHT[only]) == {"a": 0.6, "b": 0.4}  # shares summing to 1 leave the others out
    assert freqs(EIGHT[resample_indices(EIGHT, {"h": 0.0}, 1000, seed=0)]).get("h") is None
    with pytest.raises(UserError, match=r"--pretrain-groups: letter has no value 'z' in this data; its values are "
                                        r"a, b, c, d, e, f, g, h$"):  # fmt: skip
        resample_indices(EIGHT, {"z": 0.1}, 1000, seed=0, attr="letter")
    with pytest.raises(UserError, match="no other letter to fill the rest; make the shares sum to 1"):
        resample_indices(np.array(list("aab")), {"a": 0.3, "b": 0.3}, 10, seed=0, attr="letter")
    ints = resample_indices(np.array([1, 1, 1, 2]), {"2": 0.5}, 4, seed=0)  # values compared as text
    assert list(ints[-2:]) == [3, 3] and len(set(ints[:2])) == 2 and set(ints[:2]) <= {0, 1, 2}


def test_balanced_weights_draw_each_value_equally_often():
    values = shade(2000)
    w = balanced_weights(values)
    assert w.dtype == np.float64 and w.shape == (2000,) and abs(w.sum() - 1) < 1e-12
    g = torch.Generator().manual_seed(0)
    drawn = torch.multinomial(torch.from_numpy(w), 100_000, replacement=True, generator=g).numpy()
    got = freqs(values[drawn])
    assert all(abs(f - 1 / 3) < 0.01 for f in got.values()) and len(got) == 3, got
    assert freqs(values) == pytest.approx(SHARES)  # what plain sampling would see


# ----------------------------------------------------------------------------- pretraining


def test_balance_by_draws_batches_equally_while_plain_follows_the_data(tmp_path, shaded):
    lines = []
    selfsup.pretrain(out=tmp_path / "bal", budget="3steps", balance_by="shade", **TINY, log=lines.append)
    assert any(line.startswith("balance_by: shade (3 values, 72 to 1154 samples each)") for line in lines), lines
    selfsup.pretrain(out=tmp_path / "plain", budget="3steps", **TINY, log=lambda s: None)
    (bal, bal_ds), (plain, plain_ds) = shaded
    balanced, natural = drawn_shades(bal, bal_ds, 5), drawn_shades(plain, plain_ds, 5)
    assert all(abs(f - 1 / 3) < 0.03 for f in balanced.values()) and len(balanced) == 3, balanced
    assert all(abs(natural[k] - v) < 0.02 for k, v in SHARES.items()), natural
    assert selfsup.build_config(tmp_path / "bal" / "config.yaml").data.balance_by == "shade"
    whole = bal._indices(7)  # DDP: each of 2 ranks takes its half of the same draw
    bal.world, bal._perm_cache = 2, None
    halves = []
    for rank in (0, 1):
        bal.rank = rank
        halves.append(bal._indices(7))  # [16]
    assert torch.equal(torch.cat(halves), whole)


def test_pretrain_groups_resamples_logs_and_trains_on_the_same_size(tmp_path, shaded):
    lines = []
    run = selfsup.pretrain(out=tmp_path / "r", budget="2steps", pretrain_groups="shade=c:0.5", **TINY,
                           log=lines.append)  # fmt: skip
    said = [line for line in lines if line.startswith("pretrain_groups:")]
    # 1442 digits: 1154 a, 216 b, 72 c; quotas c 721, a 607.30, b 113.70: the spare sample goes to b
    assert said == ["pretrain_groups: shade=c at 50.0% (721 of 1442 samples, each of its 72 drawn 10.0x on average; "
                    "was 5.0%); the other 2 shade values share the rest in their own proportions"], lines  # fmt: skip
    ((trainer, ds),) = shaded
    assert trainer.n == len(ds.train) == 1442
    raw = selfsup.data.load_dataset("digits", log=lambda s: None).train
    idx = resample_indices(shade(1442), {"c": 0.5}, 1442, loop._seed_for(3, loop.GROUPS_TAG))
    assert torch.equal(trainer.data, torch.from_numpy(np.asarray(raw.x)[idx]))  # what was trained on
    assert counts(ds.train.groups["shade"]) == {"a": 607, "b": 114, "c": 721}
    assert run.config.data.pretrain_groups == "shade=c:0.5"
    assert selfsup.build_config(run.path / "config.yaml").data.pretrain_groups == "shade=c:0.5"


def test_balance_by_needs_the_group_on_the_rows_trained_on(tmp_path, shaded, monkeypatch):
    real = loop.prepare.for_pretraining

    def packed(ds, *args, **kwargs):  # as token windows do: rows made from the data, without its groups
        ds = real(ds, *args, **kwargs)
        return dataclasses.replace(ds, train=dataclasses.replace(ds.train, groups={}))

    monkeypatch.setattr(loop.prepare, "for_pretraining", packed)
    with pytest.raises(UserError, match=r"--balance-by shade: the 1442 rows simclr pretrains on .* carry no shade; "
                                        "leave --balance-by out"):  # fmt: skip
        selfsup.pretrain(out=tmp_path / "r", budget="2steps", balance_by="shade", **TINY, log=lambda s: None)


def test_killed_balanced_run_resumes_to_the_same_weights(tmp_path, shaded, monkeypatch):
    """160 samples at batch 32: 5 steps an epoch, so the resumed half crosses into a second weighted draw."""
    args = dict(budget="8steps", checkpoint_every="4steps", limit=160, balance_by="shade",
                pretrain_groups="shade=c:0.25", **TINY)  # fmt: skip
    ref = selfsup.pretrain(out=tmp_path / "ref", log=lambda s: None, **args)
    restore_save = die_after_save(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        selfsup.pretrain(out=tmp_path / "killed", log=lambda s: None, **args)
    assert latest_checkpoint(tmp_path / "killed").name == "step-000004"
    restore_save()
    lines = []
    selfsup.pretrain(resume=tmp_path / "killed", log=lines.append)
    assert any(line.startswith("resuming") for line in lines) and any("pretrain_groups: shade=c" in x for x in lines)
    w_ref = load_file(str(latest_checkpoint(ref.path) / "model.safetensors"))
    w_res = load_file(str(latest_checkpoint(tmp_path / "killed") / "model.safetensors"))
    assert latest_checkpoint(tmp_path / "killed").name == "step-000008"
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    orders = [t._perm_cache[1] for t, _ in shaded]  # the last epoch's draw: the same in both runs
    assert torch.equal(orders[0], orders[2]) and len(shaded) == 3


def test_speech_folder_resampled_and_balanced_by_speaker(tmp_path, monkeypatch):
    """Audio clips (a ragged Waveforms split, its groups["speaker"] from the folder names): spk0 holds most clips; at
    --pretrain-groups speaker=spk2:0.4 the resampled split has that share, and tera trains balanced by speaker."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for s, (f0, n) in enumerate(((110, 14), (160, 4), (230, 2))):
        (tmp_path / "spk" / f"spk{s}").mkdir(parents=True)
        for i in range(n):
            t = np.arange(int(rng.uniform(0.2, 0.4) * 16000)) / 16000
            x = np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(tmp_path / "spk" / f"spk{s}" / f"u{i}.wav", (0.2 * x).astype(np.float32), 16000)
    built, real_init = [], loop.Trainer.__init__
    monkeypatch.setattr(loop.Trainer, "__init__", lambda self, cfg, method, ds, *a, **k: built.append((self, ds)) or
                        real_init(self, cfg, method, ds, *a, **k))  # fmt: skip
    lines = []
    small = {"encoder__dim": 32, "encoder__depth": 1, "encoder__heads": 2, "encoder__conv_channels": 8}
    selfsup.pretrain(data=str(tmp_path / "spk"), method="tera", budget="2steps", batch_size=4, device="cpu",
                     out=tmp_path / "r", pretrain_groups="speaker=spk2:0.4", balance_by="speaker", log=lines.append,
                     **small)  # fmt: skip
    said = [line for line in lines if line.startswith(("pretrain_groups:", "balance_by:"))]
    assert len(said) == 2 and "pretrain_groups: speaker=spk2 at " in said[0] and "balance_by: speaker (3" in said[1]
    ((trainer, ds),) = built
    assert trainer.ragged and getattr(ds.train.x, "ragged", False) and len(ds.train.x.lengths) == len(ds.train)
    n = len(ds.train)
    got = counts(ds.train.groups["speaker"])
    assert got["spk2"] == round(0.4 * n) and sum(got.values()) == n and got["spk0"] > got["spk1"], (got, said)


# ----------------------------------------------------------------------------- fine-tuning


def test_finetune_draws_batches_by_sample_weights(monkeypatch):
    """12 steps of 32 on 200 random 8x8 images: the recorded batches are the order finetune drew."""
    from selfsup.encoders import build_encoder

    from .conftest import image_spec

    real_call, drawn = _Batches.__call__, []

    def record(self, idx):
        drawn.append(idx.clone())
        return real_call(self, idx)

    monkeypatch.setattr(_Batches, "__call__", record)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (200, 1, 8, 8), dtype=np.uint8), torch.from_numpy(rng.integers(0, 10, 200))
    torch.manual_seed(0)
    enc = build_encoder("resnet18", image_spec(1, 8), {"width": 4})

    def tune(weights=None):
        drawn.clear()
        finetune(enc, x, y, Classify(), 10, epochs=1, min_steps=12, max_steps=12, batch_size=32, seed=0,
                    device="cpu", sample_weights=weights)  # fmt: skip
        return torch.cat(drawn).numpy()

    plain = tune()
    assert len(np.unique(plain[:192])) == 192  # a permutation per epoch, as before
    group = shade(200)
    balanced = tune(balanced_weights(group))
    assert np.array_equal(balanced, tune(balanced_weights(group)))  # seeded
    got = freqs(group[balanced])  # 384 draws: each frequency's standard deviation is 0.024
    assert all(abs(f - 1 / 3) < 0.08 for f in got.values()) and len(got) == 3, got
    assert freqs(group[plain])["c"] < 0.1  # unweighted: c stays at its 5%
    even = np.zeros(200)
    even[::2] = 1.0
    assert np.all(tune(even) % 2 == 0)  # weight 0: never drawn
    with pytest.raises(ValueError, match="sample_weights must be 200 finite non-negative weights"):
        tune(np.ones(10))
