"""selfsup audit: per-group metrics and intervals against brute force, too-small groups, gaps, the leakage probe
(a planted group is found, a shuffled one is not), and the command end to end on images, text, sequences and
speech, with its one-line errors."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup
from selfsup.cli import main
from selfsup.config import EvalConfig
from selfsup.evaluate.audit import balanced_accuracy, group_rows, leakage
from selfsup.evaluate.ctc import CTC
from selfsup.evaluate.tasks import Classify
from selfsup.evaluate.verify import Verify, equal_error_rate, group_trials
from selfsup.report.audit import group_gaps as gaps

KEY = {"task": "classify", "protocol": "linear", "labels": 1.0, "encoder": "pretrained", "metric": "accuracy"}


def _brute_bootstrap(y, pred, groups, n_boot, seed):
    """Per-group accuracy intervals by resampling every row with replacement (numpy, not fairlearn)."""
    rng = np.random.default_rng(seed + 12345)
    hits = (y == pred).astype(float)
    out = {g: [] for g in np.unique(groups)}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        for g in out:
            sel = idx[groups[idx] == g]
            if len(sel):
                out[g].append(hits[sel].mean())
    return {g: np.quantile(v, [0.025, 0.975]) for g, v in out.items()}


def test_per_group_accuracy_and_intervals_match_brute_force():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 300 + ["b"] * 200 + ["c"] * 100)
    y = rng.integers(0, 3, len(groups))
    right = rng.random(len(groups)) < np.select([groups == "a", groups == "b"], [0.9, 0.6], 0.3)
    pred = np.where(right, y, (y + 1) % 3)
    gr = Classify().by_group({"y": y, "pred": pred}, groups, "accuracy", EvalConfig())
    rows = group_rows(gr, KEY, "site", min_size=20, n_boot=2000, seed=0)
    by = {r["group"]: r for r in rows}
    assert set(by) == {"a", "b", "c", "all"}
    brute = _brute_bootstrap(y, pred, groups, 2000, 0)
    for g in "abc":
        sel = groups == g
        assert by[g]["value"] == pytest.approx(np.mean(y[sel] == pred[sel]), abs=1e-4)
        assert by[g]["n"] == sel.sum() and not by[g]["too_small"]
        assert by[g]["ci_low"] == pytest.approx(brute[g][0], abs=0.015)
        assert by[g]["ci_high"] == pytest.approx(brute[g][1], abs=0.015)
        assert by[g]["ci_low"] <= by[g]["value"] <= by[g]["ci_high"]
    assert by["all"]["value"] == pytest.approx(np.mean(y == pred), abs=1e-4) and by["all"]["n"] == 600
    (gap,) = gaps(rows)
    assert (gap["worst_group"], gap["best_group"]) == ("c", "a")
    assert gap["gap"] == pytest.approx(by["a"]["value"] - by["c"]["value"], abs=1e-4)


def test_a_group_below_the_minimum_is_too_small_not_a_number():
    groups = np.array(["big"] * 50 + ["mid"] * 30 + ["tiny"] * 5)
    y = np.zeros(85, int)
    pred = np.r_[np.zeros(50, int), np.arange(30) % 2, np.ones(5, int)]  # tiny is all wrong: it would be the worst
    rows = group_rows(Classify().by_group({"y": y, "pred": pred}, groups, "accuracy", EvalConfig()), KEY, "g", 20,
                      100, 0)  # fmt: skip
    tiny = next(r for r in rows if r["group"] == "tiny")
    assert tiny["too_small"] and tiny["value"] is None and tiny["ci_low"] is None and tiny["n"] == 5
    assert "fewer than 20" in tiny["why"]
    (gap,) = gaps(rows)
    assert gap["groups"] == 2 and (gap["worst_group"], gap["best_group"]) == ("mid", "big")
    assert gaps([r for r in rows if r["group"] != "mid"]) == []  # one group left: no gap to speak of


def test_cer_per_group_is_errors_over_reference_characters():
    counts = {"char_errors": np.array([1, 0, 5, 2]), "chars": np.array([10, 10, 10, 30]),
              "word_errors": np.array([1, 0, 2, 1]), "words": np.array([2, 2, 2, 6])}  # fmt: skip
    groups = np.array(["x", "x", "y", "y"])
    gr = CTC().by_group(counts, groups, "cer", EvalConfig())
    rows = group_rows(gr, {**KEY, "task": "ctc", "metric": "cer"}, "accent", 1, 50, 0)
    by = {r["group"]: r["value"] for r in rows}
    assert by == {"x": pytest.approx(1 / 20, abs=1e-4), "y": pytest.approx(7 / 40, abs=1e-4),
                  "all": pytest.approx(8 / 60, abs=1e-4)}  # fmt: skip
    (gap,) = gaps(rows)
    assert gap["worst_group"] == "y"  # an error rate: the larger is worse


def test_verification_trials_per_group_and_their_eer():
    speakers = np.repeat(["s0", "s1", "s2", "s3"], 6)
    groups = np.repeat(["a", "a", "b", "c"], 6)  # c and b: one speaker each, impostors from everyone
    i, j, same = group_trials(speakers, groups == "b", seed=0, max_same=1000)
    assert same.sum() == 15 and (~same).sum() == 15  # 6 clips: 15 pairs, and as many impostor trials
    assert np.all(speakers[i[same]] == speakers[j[same]]) and np.all(groups[i] == "b")
    assert np.all(speakers[i[~same]] != speakers[j[~same]])
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 3
    feats = torch.tensor(np.repeat(centers, 6, 0) + rng.normal(size=(24, 8)), dtype=torch.float32)
    outcome = {"features": feats, "speakers": np.unique(speakers, return_inverse=True)[1]}
    ev = EvalConfig()
    gr = Verify().by_group(outcome, groups, "eer", ev)
    rows = group_rows(gr, {**KEY, "task": "verify", "metric": "eer"}, "accent", 1, 50, 0)
    by = {r["group"]: r for r in rows}
    for g in "abc":
        i, j, same = group_trials(outcome["speakers"], groups == g, ev.seed, ev.audit_trials)
        f = torch.nn.functional.normalize(feats, dim=1)
        scores = (f[i] * f[j]).sum(1).numpy()
        assert by[g]["value"] == pytest.approx(equal_error_rate(scores, same), abs=1e-4)
    one = group_trials(np.array(["s0"] * 4), np.ones(4, bool), 0)
    assert not (~one[2]).any()  # a single speaker in the data: no impostor, so the group is too small
    gr = Verify().by_group({"features": feats[:4], "speakers": np.zeros(4, int)}, np.array(["a"] * 4), "eer", ev)
    assert gr.too_small == {"a": "a single speaker in the data"}


def test_balanced_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    assert balanced_accuracy(pred, y) == pytest.approx(balanced_accuracy_score(y, pred))


class _Split:
    def __init__(self, groups):
        self.groups = {"accent": np.asarray(groups)}


def test_leakage_finds_a_planted_group_and_not_a_shuffled_one():
    rng = np.random.default_rng(0)
    names = np.array(["a", "b", "c", "d"])
    sizes = {"pool": 400, "val": 200, "test": 400}
    groups = {k: names[rng.integers(0, 4, n)] for k, n in sizes.items()}
    planted = {k: torch.tensor(np.eye(4)[np.searchsorted(names, g)] * 2 + rng.normal(size=(len(g), 4)),
                               dtype=torch.float32) for k, g in groups.items()}  # fmt: skip
    noise = {k: torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32) for k, n in sizes.items()}
    splits = {k: _Split(g) for k, g in groups.items()}
    rows = {r["encoder"]: r for r in leakage({"planted": planted, "noise": noise}, splits, "accent", lambda s: None)}
    assert rows["planted"]["balanced_accuracy"] > 0.8 and rows["planted"]["chance"] == 0.25
    assert abs(rows["noise"]["balanced_accuracy"] - 0.25) < 0.08
    shuffled = {k: _Split(rng.permutation(g)) for k, g in groups.items()}
    rows = {r["encoder"]: r for r in leakage({"planted": planted}, shuffled, "accent", lambda s: None)}
    assert abs(rows["planted"]["balanced_accuracy"] - 0.25) < 0.08


# ----------------------------------------------------------------------------- end to end

TINY_VIT = {"dim": 16, "depth": 1, "heads": 2}


def _check_audit(run, attr, groups, encoders):
    audit = json.loads((run / "audit.json").read_text())
    assert audit["group_attr"] == attr
    got = {r["group"] for r in audit["rows"]}
    assert got == {*groups, "all"}, got
    assert {r["encoder"] for r in audit["rows"]} == set(encoders)
    assert all(r["group_attr"] == attr and r["split"] == "test" for r in audit["rows"])
    assert {r["encoder"] for r in audit["leakage"]} >= {"pretrained", "random_init", "raw"}
    assert (run / f"audit_{attr}.png").is_file() and attr in (run / "report.html").read_text()
    return audit


def test_audit_an_image_folder_with_groups_csv(tmp_path):
    root = tmp_path / "img"
    rng = np.random.default_rng(0)
    rows = ["file,site"]
    for c, base in (("a", 60), ("b", 180)):
        (root / c).mkdir(parents=True)
        for i in range(40):
            site = f"site{i % 2}"
            grey = base + rng.integers(-10, 10, (8, 8))
            if site == "site1":  # the site marks its images with a bright corner
                grey[:3, :3] = 255
            Image.fromarray(grey.clip(0, 255).astype(np.uint8)).save(root / c / f"{i}.png")
            rows.append(f"{c}/{i}.png,{site}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(root), "--method", "rotation", "--budget", "2steps", "--batch-size", "8",
                 "--width", "4", "--device", "cpu", "--out", str(run)]) == 0  # fmt: skip
    assert main(["audit", str(run), "--group", "site", "--labels", "100%", "--min-group-size", "3",
                 "--bootstrap", "50"]) == 0  # fmt: skip
    audit = _check_audit(run, "site", {"site0", "site1"}, {"pretrained", "random_init", "raw"})
    raw = next(r for r in audit["leakage"] if r["encoder"] == "raw")
    assert raw["balanced_accuracy"] > 0.8  # the site's mark is in the pixels: a linear probe reads it


def test_audit_text_with_a_group_column(tmp_path):
    r = random.Random(0)
    words = "good bad film plot actor scene music long short dull fine".split()
    lines = ["text,label,dialect"]
    for i in range(120):
        lines.append(" ".join(r.choice(words) for _ in range(8)) + f",{i % 2},d{i % 3}")
    data = tmp_path / "reviews.csv"
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    selfsup.pretrain(data=str(data), method="mlm", budget="2steps", batch_size=8, device="cpu", max_len=16,
                     vocab_size=300, encoder_params=TINY_VIT, out=run, log=lambda s: None)  # fmt: skip
    assert main(["audit", str(run), "--group", "dialect", "--labels", "100%", "--min-group-size", "3",
                 "--bootstrap", "50"]) == 0  # the column is read for the audit: no --group-column needed
    _check_audit(run, "dialect", {"d0", "d1", "d2"}, {"pretrained", "random_init", "raw"})


def test_audit_sequences_with_a_group_column(tmp_path):
    r = random.Random(1)
    lines = ["sequence,label,family"]
    for i in range(120):
        lines.append("".join(r.choice("ACGT") for _ in range(30)) + f",{i % 2},f{i % 2}{i % 3}")
    data = tmp_path / "seqs.csv"
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    selfsup.pretrain(data=str(data), method="mlm", budget="2steps", batch_size=8, device="cpu", max_len=32,
                     encoder_params=TINY_VIT, out=run, log=lambda s: None)  # fmt: skip
    assert main(["audit", str(run), "--group", "family", "--protocol", "knn", "--labels", "100%",
                 "--min-group-size", "3", "--bootstrap", "50"]) == 0  # fmt: skip
    audit = _check_audit(run, "family", {f"f{a}{b}" for a in range(2) for b in range(3)},
                         {"pretrained", "random_init", "raw", "onehot"})  # fmt: skip
    assert all(r["protocol"] == "knn" for r in audit["rows"])


def test_audit_errors_are_one_line(tmp_path, capsys):
    root = tmp_path / "img"
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (8, 8), 40 * i).save(root / c / f"{i}.png")
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(root), "--method", "rotation", "--budget", "1steps", "--batch-size", "4",
                 "--width", "4", "--device", "cpu", "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["audit", str(run)]) == 2
    assert "--group" in capsys.readouterr().err
    assert main(["audit", str(run), "--group", "site"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no group 'site'" in err and "groups.csv" in err, err


# ----------------------------------------------------------------------------- speech


def test_audit_speaker_verification_by_accent(tera_run, synth_small):
    assert main(["audit", str(tera_run), "--task", "verify", "--group", "accent", "--bootstrap", "50"]) == 0
    audit = json.loads((tera_run / "audit.json").read_text())
    test_accents = set(synth_small["verify"].groups["accent"])
    assert {r["group"] for r in audit["rows"]} <= test_accents | {"all"}
    assert {r["metric"] for r in audit["rows"]} == {"eer"}
    scored = [r for r in audit["rows"] if not r["too_small"]]
    assert scored and all(0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1 for r in scored)
    assert {r["encoder"] for r in audit["leakage"]} == {"pretrained", "random_init", "raw"}


def test_audit_ctc_by_voice(tera_run):
    fast = ["--set", "ctc_lrs=0.01", "--set", "ctc_epochs=1"]
    assert main(["audit", str(tera_run), "--task", "ctc", "--group", "voice", "--labels", "100%",
                 "--bootstrap", "50", "--no-baselines", *fast]) == 0  # fmt: skip
    audit = json.loads((tera_run / "audit.json").read_text())
    assert {r["metric"] for r in audit["rows"]} == {"cer", "wer"}
    assert {r["encoder"] for r in audit["rows"]} == {"pretrained"}
    assert {r["encoder"] for r in audit["leakage"]} == {"pretrained"}


# ----------------------------------------------------------------------------- compare: variants by group


def _site_folder(root, n=40):
    rng = np.random.default_rng(0)
    rows = ["file,site"]
    for c, base in (("a", 60), ("b", 180)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            grey = base + rng.integers(-10, 10, (8, 8))
            Image.fromarray(grey.clip(0, 255).astype(np.uint8)).save(root / c / f"{i}.png")
            rows.append(f"{c}/{i}.png,site{i % 2}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def test_compare_variants_audited_by_group(tmp_path, capsys):
    root = _site_folder(tmp_path / "img")
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(root), "--methods", "rotation", "--budget", "2steps", "--batch-size", "8",
            "--width", "4", "--device", "cpu", "--labels", "100%", "--protocol", "linear", "--out", str(out),
            "--variants", "as-is,imbalanced,balance-by", "--pretrain-groups", "site=site1:0.1", "--group", "site",
            "--set", "eval.min_group_size=3", "--set", "eval.bootstrap=30"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    names = ["rotation-as-is", "rotation-imbalanced", "rotation-balance-by"]
    for name in names:
        cfg = selfsup.build_config(out / name / "config.yaml").data
        assert (cfg.pretrain_groups, cfg.balance_by) == {
            "rotation-as-is": (None, None), "rotation-imbalanced": ("site=site1:0.1", None),
            "rotation-balance-by": ("site=site1:0.1", "site")}[name]  # fmt: skip
        assert (out / name / "compare_audit.json").is_file() and name in printed
    report = json.loads((out / "compare.json").read_text())
    merged = report["audit"]
    assert merged["runs"] == names and merged["group_attr"] == "site"
    assert {r["encoder"] for r in merged["rows"]} == {*names, "random_init", "raw"}  # baselines once
    assert {r["group"] for r in merged["rows"]} == {"site0", "site1", "all"}
    assert "By site" in (out / "report.html").read_text() and (out / "audit_site.png").is_file()
    assert main(["audit", str(out / names[0]), "--group", "site", "--protocol", "knn"]) == 0  # another audit
    capsys.readouterr()
    assert main(args) == 0  # finished and audited: nothing is trained or scored again
    again = capsys.readouterr().out
    assert "not trained again" in again and "auditing" not in again
    assert json.loads((out / "compare.json").read_text())["audit"] == merged  # compare's own audits, not the last


def test_compare_variants_need_their_settings(tmp_path, capsys):
    base = ["compare", "--data", "digits", "--methods", "rotation", "--out", str(tmp_path / "c")]
    assert main([*base, "--variants", "imbalanced"]) == 2
    assert "--pretrain-groups" in capsys.readouterr().err
    assert main([*base, "--variants", "as-is,nope"]) == 2
    assert "as-is, imbalanced, balance-by" in capsys.readouterr().err
    assert main([*base, "--variants", "balance-by"]) == 2
    assert "--balance-by ATTR" in capsys.readouterr().err
