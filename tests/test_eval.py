"""Evaluation protocols against reference computations written here."""

import importlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import selfsup
from selfsup.data import validation_split
from selfsup.errors import UserError
from selfsup.evaluate import balanced_subset, format_table, knn_accuracy, linear_accuracy, linear_probe
from selfsup.runs import SCORED_WITH, read_eval_rows, write_eval_rows


def reference_knn(train_f, train_y, test_f, k, t, c):
    preds = []
    for q in test_f:
        sims = [(float(F.cosine_similarity(q, x, dim=0)), int(y)) for x, y in zip(train_f, train_y)]
        sims.sort(key=lambda s: -s[0])
        votes = np.zeros(c)
        for s, y in sims[:k]:
            votes[y] += np.exp(s / t)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


def test_knn_matches_reference():
    g = torch.Generator().manual_seed(0)
    train_f, test_f = torch.randn(60, 5, generator=g), torch.randn(25, 5, generator=g)
    train_y = torch.randint(0, 3, (60,), generator=g)
    for k, t in ((1, 0.07), (7, 0.1), (60, 0.5)):
        ref = reference_knn(train_f, train_y, test_f, k, t, 3)
        test_y = torch.from_numpy(ref)  # the reference predictions as labels: accuracy must be 1
        assert knn_accuracy(train_f, train_y, test_f, test_y, 3, k=k, temperature=t, chunk=4) == 1.0
        flipped = (test_y + 1) % 3
        assert knn_accuracy(train_f, train_y, test_f, flipped, 3, k=k, temperature=t) == 0.0


def test_linear_probe_separates_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 20, generator=g) * 3
    y = torch.randint(0, 4, (400,), generator=g)
    x = centers[y] + torch.randn(400, 20, generator=g)
    assert linear_accuracy(x[:300], y[:300], x[300:], y[300:], 4) > 0.95
    noise = torch.randn(400, 20, generator=g)
    assert linear_accuracy(noise[:300], y[:300], noise[300:], y[300:], 4) < 0.45


def test_balanced_subsets_are_seeded_nested_and_balanced():
    y = np.repeat(np.arange(5), [100, 200, 50, 10, 3])
    one = balanced_subset(y, 0.01, seed=0)
    ten = balanced_subset(y, 0.1, seed=0)
    full = balanced_subset(y, 1.0, seed=0)
    assert np.bincount(y[one], minlength=5).tolist() == [1, 2, 1, 1, 1]  # at least one per class
    assert np.bincount(y[ten], minlength=5).tolist() == [10, 20, 5, 1, 1]  # round(0.1 * 3) = 0 -> 1
    assert set(one) <= set(ten) <= set(full) and len(full) == len(y)
    assert not np.array_equal(balanced_subset(y, 0.1, seed=1), ten)
    assert np.array_equal(balanced_subset(y, 0.1, seed=0), ten)


def test_table_lists_every_encoder():
    rows = [{"task": "classify", "protocol": "knn", "labels": 0.01, "encoder": e, "split": sp, "metric": "accuracy",
             "value": a if sp == "test" else a / 2}
            for e, a in (("pretrained", 0.8), ("random_init", 0.5), ("raw", 0.6))
            for sp in ("val", "test")]  # fmt: skip
    table = format_table(rows)
    assert "80.0%" in table and "random_init" in table and "1%" in table and "test accuracy" in table
    assert "40.0%" in format_table(rows, split="val") and "40.0%" not in table


def test_validation_split_is_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(4), [500, 300, 100, 10])
    pool, val = validation_split(y, 0.1, seed=0)
    assert len(np.intersect1d(pool, val)) == 0 and len(pool) + len(val) == len(y)
    assert np.bincount(y[val], minlength=4).tolist() == [50, 30, 10, 1]
    again, other = validation_split(y, 0.1, seed=0), validation_split(y, 0.1, seed=1)
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)


def test_linear_probe_chooses_l2_on_validation_only():
    """The L2 strength is the one that scores best on validation; the test set cannot move it."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 30, generator=g)
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + 2.0 * torch.randn(600, 30, generator=g)
    tr, va, te = slice(0, 60), slice(60, 360), slice(360, 600)
    scores, wd = linear_probe(x[tr], y[tr], {"val": (x[va], y[va]), "test": (x[te], y[te])}, 3)
    poisoned = {"val": (x[va], y[va]), "test": (torch.randn(240, 30, generator=g), (y[te] + 1) % 3)}
    scores2, wd2 = linear_probe(x[tr], y[tr], poisoned, 3)
    assert wd2 == wd and scores2["val"] == scores["val"] and scores2["test"] < 0.5 < scores["test"]
    # the choice is the best validation score among the candidates
    per_wd = {w: linear_probe(x[tr], y[tr], {"val": (x[va], y[va])}, 3, weight_decays=(w,))[0] for w in
              (1e-5, 1e-4, 1e-3, 1e-2)}  # fmt: skip
    assert scores["val"] == max(v["val"] for v in per_wd.values())


def test_poisoned_test_split_changes_no_selection(tmp_path, monkeypatch):
    """Evaluation end to end: scrambling the test labels and replacing the test samples by noise leaves every
    validation row and every choice made on validation as it was; only the test rows change."""
    E = importlib.import_module("selfsup.evaluate")  # the package (selfsup.evaluate is also the function)

    run = selfsup.pretrain(data="digits", method="simclr", width=8, batch_size=32, budget="3steps", device="cpu",
                           out=tmp_path / "r", log=lambda s: None).path  # fmt: skip
    clean = selfsup.evaluate(run, protocol="knn,linear", labels="10%,100%", log=lambda s: None)
    real_load = E.load_configured

    def poisoned_load(*a, **k):
        ds = real_load(*a, **k)
        rng = np.random.default_rng(0)
        ds.test = ds.test.take(np.arange(len(ds.test)))
        ds.test.y = (np.asarray(ds.test.y) + 1 + rng.integers(0, 8, len(ds.test.y))) % 10
        ds.test.x = rng.integers(0, 256, ds.test.x.shape).astype(np.uint8)
        return ds

    monkeypatch.setattr(E, "load_configured", poisoned_load)
    dirty = selfsup.evaluate(run, protocol="knn,linear", labels="10%,100%", log=lambda s: None)
    key = lambda r: (r["protocol"], r["labels"], r["encoder"], r["split"])  # noqa: E731
    c, d = {key(r): r for r in clean}, {key(r): r for r in dirty}
    assert c.keys() == d.keys()
    for k, r in c.items():
        if k[3] == "val":
            assert d[k] == r, k  # value and what was chosen
        else:
            assert d[k].get("chosen") == r.get("chosen")
    assert any(d[k]["value"] < c[k]["value"] - 0.3 for k in c if k[3] == "test"), "the poison reached test"


def test_feature_extraction_folds_batchnorm_without_changing_features():
    """Extraction runs a copy with BatchNorm folded into the convolutions: the same features as the encoder in
    eval mode (with trained, non-trivial BN statistics), and the encoder itself keeps its BatchNorm layers."""
    from selfsup.data.spec import ImageSpec
    from selfsup.encoders import build_encoder
    from selfsup.evaluate.features import extract_features

    gen = torch.Generator().manual_seed(0)
    for name in ("resnet18", "resnet50"):
        enc = build_encoder(name, ImageSpec(3, 32, (0.5,) * 3, (0.25,) * 3), {"width": 8}).train()
        with torch.no_grad():  # BN running statistics away from their init
            for _ in range(3):
                enc(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen))
        x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen)
        with torch.no_grad():
            expected = enc.eval()(x).pooled
        got = extract_features(enc, x, batch_size=4)
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), name
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())


def test_the_raw_column_is_named_for_the_data_and_task():
    from selfsup.evaluate import raw_baseline_name

    assert raw_baseline_name("audio", "verify").startswith("MFCC statistics")
    assert raw_baseline_name("audio", "classify").startswith("MFCC statistics")
    assert raw_baseline_name("audio", "ctc").startswith("log-mel frames")
    assert raw_baseline_name("image", "classify") == "raw pixels under the same probe"
    assert raw_baseline_name("sequence", "classify").startswith("k-mer counts")


def test_eval_json_keeps_the_rows_of_other_evaluations(tmp_path):
    """A new evaluation replaces rows of the same (task, protocol, labels, encoder) and keeps every other row:
    ``--task verify`` and then the default evaluation left only the classify rows."""
    row = lambda task, proto, frac, enc, split, v: {"task": task, "protocol": proto, "labels": frac,  # noqa: E731
                                                   "encoder": enc, "split": split, "metric": "m", "value": v}
    verify = [row("verify", "cosine", 1.0, e, s, 0.1) for e in ("pretrained", "raw") for s in ("val", "test")]
    assert write_eval_rows(tmp_path, verify) == verify and read_eval_rows(tmp_path) == verify
    (tmp_path / SCORED_WITH).write_text("{}")  # compare's record of what it scored: an evaluation by hand voids it
    classify = [row("classify", "linear", 0.1, "pretrained", s, 0.5) for s in ("val", "test")]
    assert write_eval_rows(tmp_path, classify) == verify + classify
    assert not (tmp_path / SCORED_WITH).exists()
    again = [row("verify", "cosine", 1.0, "pretrained", s, 0.2) for s in ("val", "test")]  # --no-baselines
    merged = write_eval_rows(tmp_path, again)
    assert merged == [r for r in verify if r["encoder"] == "raw"] + classify + again  # replaced, not duplicated
    assert json.loads((tmp_path / "eval.json").read_text()) == merged
    (tmp_path / "eval.json").write_text('{"not": "rows"}')
    with pytest.raises(UserError, match="eval.json: not a list of evaluation rows; move it away"):
        write_eval_rows(tmp_path, again)


def test_the_carve_says_when_a_fraction_is_raised_to_one_sample_per_class():
    """klettres at 1%: about 13 clips for 20 languages; balanced subsets take one a class, and the note says so."""
    from selfsup.config import EvalConfig
    from selfsup.data import Split
    from selfsup.registry import TASKS

    y = np.repeat(np.arange(20), 70)  # 1,400 samples, 20 classes
    train, test = Split(np.zeros((len(y), 3)), y), Split(np.zeros((40, 3)), np.arange(40) % 20)
    carved = TASKS.get("classify")().carve(train, test, EvalConfig(labels=[0.01, 0.1]))
    said = ("1260 labelled samples in 20 classes (class-balanced 1%: 20 (at least one per class; 1% would be 13), "
            "10%: 120)")
    assert said in carved.note
    assert len(carved.subsets[0.01]) == 20 and len(np.unique(y[carved.index["pool"][1]][carved.subsets[0.01]])) == 20
