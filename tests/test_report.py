"""`selfsup eval RUN --plot` and the report pieces: PNGs, a self-contained report.html, supervised rows."""

import json
import re

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import selfsup
from selfsup.cli import main
from selfsup.report import bar_plot, cost_summary, html_table, line_plot, scatter_plot, write_report

PNG = b"\x89PNG\r\n\x1a\n"
QUICK = ["--train-limit", "300", "--test-limit", "150", "--set", "finetune_min_steps=8", "--set", "finetune_epochs=1",
         "--set", "finetune_batch_size=32", "--set", "embedding_points=120"]  # fmt: skip


@pytest.fixture
def one_thread():
    """Tiny networks (width 8, 8x8 images) and a t-SNE of ~100 points: a second thread only adds synchronization."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # scikit-learn's OpenMP (t-SNE)
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(cache_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    selfsup.pretrain(data="digits", method="simclr", width=8, batch_size=32, device="cpu", seed=3, budget="4steps",
                     out=out, log=lambda s: None)  # fmt: skip
    return out


def assert_png(path, min_bytes=1024):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > min_bytes, path


def test_eval_plot_writes_pictures_and_report(tiny_run, capsys, one_thread):
    assert main(["eval", str(tiny_run), "--plot", "--labels", "10%,100%", *QUICK]) == 0
    printed = capsys.readouterr().out
    for name in ("eval.json", "label_efficiency.png", "embedding.png", "report.html"):
        assert str(tiny_run / name) in printed  # says where each file went
    assert_png(tiny_run / "label_efficiency.png")
    assert_png(tiny_run / "embedding.png")

    rows = json.loads((tiny_run / "eval.json").read_text())
    assert all({"task", "protocol", "labels", "encoder", "split", "metric", "value"} <= set(r) for r in rows)
    assert {r["split"] for r in rows} == {"val", "test"} and {r["metric"] for r in rows} == {"accuracy"}
    by = {(r["protocol"], r["labels"], r["encoder"]): r["value"] for r in rows if r["split"] == "test"}
    for frac in (0.1, 1.0):  # finetune was not asked for, yet the plot has the supervised-from-scratch curve
        assert ("finetune", frac, "supervised") in by
        for proto in ("knn", "linear"):
            assert {(proto, frac, e) for e in ("pretrained", "random_init", "raw")} <= set(by)
    assert not any(r["protocol"] == "finetune" and r["encoder"] in ("pretrained", "raw") for r in rows)

    page = (tiny_run / "report.html").read_text()
    for r in rows:  # the same numbers as eval.json, test and validation
        assert f"{100 * r['value']:.2f}%" in page
    assert "chosen on validation" in page
    cost = json.loads((tiny_run / "eval_cost.json").read_text())
    assert cost["wall_s"] > 0 and {"features", "knn", "linear", "finetune"} <= set(cost["phases"])
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and all(len(b) > 1000 for b in images)
    assert "supervised (from scratch)" in page and "digits" in page and "simclr" in page
    assert "wall time" in page and "samples / s" in page and "peak memory" in page  # from cost.json
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained


def test_finetune_protocol_rows_and_errors(tiny_run, capsys, one_thread):
    (tiny_run / "embedding.png").unlink(missing_ok=True)
    rows = selfsup.evaluate(tiny_run, protocol="finetune", labels="100%", plot=True, log=lambda s: None,
                            train_limit=200, test_limit=100, finetune_min_steps=6, finetune_batch_size=32,
                            embedding_points=60)  # fmt: skip
    assert [(r["protocol"], r["encoder"], r["split"]) for r in rows] == [
        ("finetune", "pretrained", "val"), ("finetune", "pretrained", "test"),
        ("finetune", "supervised", "val"), ("finetune", "supervised", "test")]  # fmt: skip
    assert_png(tiny_run / "embedding.png")  # no frozen protocol ran: the test embeddings are extracted for it
    assert "t-SNE of 60 test embeddings" in (tiny_run / "report.html").read_text()
    assert all(0 <= r["value"] <= 1 for r in rows)
    written = json.loads((tiny_run / "eval.json").read_text())
    assert [r for r in written if (r["protocol"], r["labels"]) == ("finetune", 1.0)] == rows  # replaced, not doubled
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--set", "finetune_layer_decay=1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune_layer_decay" in err[0] and "(0, 1]" in err[0]
    assert main(["eval", str(tiny_run), "--protocol", "finetun"]) == 2
    assert "finetune" in capsys.readouterr().err  # the known protocols are listed


def test_report_writer_blocks_escaping_and_images(tmp_path):
    png = line_plot(tmp_path / "line.png", [{"label": "a", "x": [0.01, 0.1, 1], "y": [0.5, 0.7, 0.9]}], "labels",
                    "accuracy", logx=True, percent=True, xticks=[0.01, 0.1, 1])  # fmt: skip
    bars = bar_plot(tmp_path / "bars.png", ["simclr", "rotation"], [0.8, 0.6], "accuracy", percent=True)
    xy = np.random.default_rng(0).normal(size=(40, 2))
    dots = scatter_plot(tmp_path / "dots.png", xy, np.arange(40) % 4, ["w", "x", "y", "z"], "t")
    for p in (png, bars, dots):
        assert_png(p)
    page = write_report(tmp_path / "r.html", "T <1>", [
        ("Blocks", [("text", "<b>bold</b>"), ("table", (["name", "acc"], [["<script>", 0.5], ["b", None]])),
                    ("kv", {"k": "v<", "gone": None}), ("image", (png, "a caption")), ("code", '{"a": 1}')]),
        ("Raw", html_table(["x"], [[1]])),
    ])  # fmt: skip
    text = page.read_text()
    assert "<title>T &lt;1&gt;</title>" in text and "<b>bold</b>" in text
    assert "&lt;script&gt;" in text and "<script>" not in text and "&ndash;" in text
    assert "v&lt;" in text and "gone" not in text and "a caption" in text and "{&quot;a&quot;: 1}" in text
    assert text.count("data:image/png;base64,") == 1
    with pytest.raises(ValueError, match="unknown report block"):
        write_report(tmp_path / "x.html", "x", [("s", [("video", "x")])])


def test_cost_summary_shows_flops_only_when_present():
    cost = {"wall_s": 125.0, "steps": 10, "samples": 2560, "samples_per_s": 20.5, "peak_memory_bytes": 3 * 2**30,
            "device": "cpu", "world_size": 1}  # fmt: skip
    shown = cost_summary(cost)
    assert shown["wall time"] == "2m 05s" and shown["peak memory"] == "3.0 GiB" and "training FLOPs" not in shown
    assert cost_summary({**cost, "flops": 2.5e15})["training FLOPs"] == "2.5 PFLOP"
