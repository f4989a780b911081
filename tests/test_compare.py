"""`selfsup compare`: same data, budget and seed for every method; leaderboard with cost; resumable.
And the cost figures every pretraining run records (FLOPs counted with torch.utils.flop_counter)."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import selfsup
from selfsup.cli import main

from .conftest import make_method

TINY = dict(data="digits", width=4, batch_size=32, device="cpu", seed=1)


def test_cost_json_counts_training_flops(tmp_path):
    costs = {}
    for bs in (16, 32):
        run = selfsup.pretrain(method="rotation", out=tmp_path / f"bs{bs}", budget="3steps",
                               log=lambda s: None, **{**TINY, "batch_size": bs})  # fmt: skip
        costs[bs] = json.loads((run.path / "cost.json").read_text())
    for cost in costs.values():
        assert cost["steps"] == 3 and cost["flops"] == 3 * cost["flops_per_step"]
        assert cost["peak_memory_bytes"] > 50 * 2**20 and cost["samples_per_s"] > 0 and cost["wall_s"] > 0
    # convolutions and matmuls scale linearly with the batch
    assert costs[32]["flops_per_step"] == pytest.approx(2 * costs[16]["flops_per_step"], rel=0.02)
    # and the count is forward + backward of the method on the step's views: about 3x one forward
    method = make_method("rotation", image_size=8, encoder_params={"width": 4})
    views = method.views(torch.zeros(16, 1, 8, 8, dtype=torch.uint8), torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as fwd:
        method(views)
    assert 2.5 < costs[16]["flops_per_step"] / fwd.get_total_flops() < 3.5


def test_compare_ranks_methods_and_resumes(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ("compare --data digits --methods rotation,simclr --budget 4steps --width 4 --batch-size 32 --device cpu "
            "--seed 2 --labels 10%,100%").split() + ["--out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "compare.json").read_text())
    methods = [e for e in report["leaderboard"] if e["kind"] == "method"]
    assert {e["name"] for e in methods} == {"rotation", "simclr"}
    for e in methods:
        assert set(e["accuracy"]) == {"knn@0.1", "knn@1", "linear@0.1", "linear@1"}
        assert all(0 < a <= 1 for a in e["accuracy"].values())
        assert e["flops"] > 0 and e["peak_memory_bytes"] > 0 and e["samples_per_s"] > 0 and e["steps"] == 4
    names = [e["name"] for e in report["leaderboard"]]
    assert "raw input" in names and any(n.startswith("random init") for n in names)
    means = [e["val_mean"] for e in report["leaderboard"]]  # ranked on validation, never on test
    assert means == sorted(means, reverse=True) and report["ranked_on"] == "validation"
    for e in report["leaderboard"]:
        rows = next(r["rows"] for r in report["runs"] if r["method"] == e["name"]) if e["kind"] == "method" else []
        for r in rows:
            if r["encoder"] == "pretrained":
                cells = e["val_accuracy"] if r["split"] == "val" else e["accuracy"]
                assert cells[f"{r['protocol']}@{r['labels']:g}"] == r["value"]
    for r in report["runs"]:  # same data, budget and seed for every run
        cfg = selfsup.build_config(config=f"{r['run']}/config.yaml")
        assert (cfg.data.name, cfg.train.budget, cfg.train.seed, cfg.train.batch_size) == ("digits", "4steps", 2, 32)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "rotation" in html and "simclr" in html
    printed = capsys.readouterr().out
    assert "rotation" in printed and "train FLOPs" in printed

    # a second call trains and scores nothing again, and gives the same leaderboard
    stamp = (out / "simclr" / "checkpoints" / "latest").stat().st_mtime_ns
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "not trained again" in printed and "scoring with" not in printed
    assert (out / "simclr" / "checkpoints" / "latest").stat().st_mtime_ns == stamp
    assert json.loads((out / "compare.json").read_text())["leaderboard"] == report["leaderboard"]
    assert report["evaluation"] == {"train_limit": None, "test_limit": None}

    # other evaluation limits: the runs are not trained again, but scored again with the new limits
    assert main(args + ["--test-limit", "100"]) == 0
    printed = capsys.readouterr().out
    assert "not trained again" in printed and "scoring with" in printed
    limited = json.loads((out / "compare.json").read_text())
    assert limited["evaluation"] == {"train_limit": None, "test_limit": 100}
    assert (out / "simclr" / "checkpoints" / "latest").stat().st_mtime_ns == stamp


def test_compare_restarts_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    """A run folder with a config but no checkpoint cannot be resumed: compare starts it afresh."""
    out = tmp_path / "cmp"
    dead = out / "rotation"
    dead.mkdir(parents=True)
    (dead / "config.yaml").write_text("data:\n  name: digits\n")
    (dead / "metrics.jsonl").write_text('{"step": 1, "loss": 9.9}\n')
    args = ("compare --data digits --methods rotation --budget 3steps --width 4 --batch-size 32 --device cpu "
            "--labels 100%").split() + ["--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (dead / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 3] and rows[0]["loss"] != 9.9  # the dead run's row is gone
    assert json.loads((dead / "cost.json").read_text())["steps"] == 3


def test_compare_gives_each_encoder_only_its_own_fields(tmp_path, capsys):
    """--width reaches the ResNet runs, --set encoder.dim the ViT runs; each run says what it left out."""
    out = tmp_path / "cmp"
    args = ("compare --data digits --methods rotation,mae --budget 2steps --width 4 --batch-size 32 --device cpu "
            "--labels 100% --set encoder.dim=16 --set encoder.depth=1 --set encoder.patch_size=4").split()
    assert main(args + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rotation (resnet18): encoder.dim, encoder.depth, encoder.patch_size left out" in printed
    assert "mae (vit_tiny): encoder.width left out" in printed
    rot = json.loads((out / "rotation" / "encoder.json").read_text())["params"]
    mae = json.loads((out / "mae" / "encoder.json").read_text())["params"]
    assert rot["width"] == 4 and (mae["dim"], mae["depth"], mae["patch_size"]) == (16, 1, 4)


def test_compare_rejects_bad_input(capsys):
    assert main(["compare", "--data", "digits", "--methods", "simclr,nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["compare", "--data", "digits", "--methods", "simclr,simclr"]) == 2
    assert "twice" in capsys.readouterr().err


def test_compare_defaults_to_the_methods_of_the_datas_modality(tmp_path):
    from selfsup.compare import _method_list
    from selfsup.data import data_modality
    from selfsup.registry import METHODS

    docs = tmp_path / "notes.txt"
    docs.write_text("one document\nanother document\n", encoding="utf-8")
    for data, kind in (("imdb", "tokens"), (str(docs), "tokens"), ("fashion-mnist", "image"), ("digits", "image")):
        assert data_modality(data) == kind
        names = _method_list(None, data_modality(data))
        assert names and all(METHODS.get(n).modality == kind for n in names)
    assert {"mlm", "gpt"} <= set(_method_list("all", "tokens")) and "simclr" not in _method_list(None, "tokens")


def test_text_compare_gives_causal_and_bidirectional_runs_their_own_random_init(tmp_path):
    """gpt (causal, BPE) and mlm (bidirectional, WordPiece) are two networks: each needs its own random-init
    baseline; a run scored earlier without the baseline its architecture now needs is scored again."""
    import random

    from selfsup.encoders import describe_encoder

    rng = random.Random(0)
    words = {"good": "great fine superb lovely".split(), "bad": "awful poor dull grim".split()}
    fill = "the a film plot it was and so".split()
    lines = ["text,label"]
    for _ in range(160):
        label = rng.choice(["good", "bad"])
        lines.append(" ".join(rng.choice(words[label] + fill) for _ in range(12)) + f",{label}")
    data = tmp_path / "reviews.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(data), "--methods", "mlm,gpt", "--budget", "2steps", "--batch-size", "8",
            "--device", "cpu", "--max-len", "16", "--vocab-size", "300", "--labels", "100%", "--protocol", "knn",
            "--set", "encoder.dim=32", "--set", "encoder.depth=1", "--out", str(out)]  # fmt: skip
    assert main(["compare", *args[1:4], "gpt", *args[5:]]) == 0  # gpt alone first: scored with its baseline
    (out / "gpt" / "eval.json").write_text(json.dumps(  # as an older compare left it: no baseline rows
        [r for r in json.loads((out / "gpt" / "eval.json").read_text()) if r["encoder"] == "pretrained"]))
    assert main(args) == 0
    board = json.loads((out / "compare.json").read_text())["leaderboard"]
    baselines = {e["name"] for e in board if e["name"].startswith("random init")}
    assert baselines == {f"random init ({describe_encoder('text_transformer', p)})"
                         for p in ({"size": "tiny", "dim": 32, "depth": 1, "causal": False},
                                   {"size": "tiny", "dim": 32, "depth": 1, "causal": True})}  # fmt: skip
    assert sum(name.endswith(" causal)") for name in baselines) == 1


def test_leaderboard_ranks_an_error_rate_lowest_first_on_its_own_metric():
    from selfsup.report.leaderboard import leaderboard

    def result(name, val_cer, test_cer):
        rows = [{"protocol": "linear", "labels": 0.1, "encoder": "pretrained", "split": s, "metric": m, "value": v}
                for s, cer in (("val", val_cer), ("test", test_cer))
                for m, v in (("cer", cer), ("wer", 1 - cer))]  # fmt: skip  (wer would rank the other way)
        return {"method": name, "encoder": "x", "rows": rows, "cost": {}, "steps": 1}

    entries = leaderboard([result("worse", 0.6, 0.5), result("better", 0.3, 0.4)], ["linear"], [0.1], "cer")
    assert [e["name"] for e in entries] == ["better", "worse"]  # ranked on validation CER, lowest first
    assert entries[0]["accuracy"] == {"linear@0.1": 0.4}  # test cells of the metric ranked on
