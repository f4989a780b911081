"""The presentation of `selfsup audit` (selfsup/report/audit.py) on synthetic audit dicts: tables, chart, page."""

import json
import re

import pytest

from selfsup.config import RunConfig
from selfsup.report.audit import audit_chart, format_audit, group_gaps, write_audit_report

PNG = b"\x89PNG\r\n\x1a\n"
ENCODERS = ("pretrained", "random_init", "raw")


def row(group, value, encoder="pretrained", metric="accuracy", n=50, protocol="linear", labels=0.1, task="classify"):
    small = n < 20
    value = None if small else value
    return {"task": task, "protocol": protocol, "labels": labels, "encoder": encoder, "split": "test", "metric": metric,
            "value": value, "group_attr": "accent", "group": group, "n": n,
            "ci_low": None if value is None else max(0.0, value - 0.03),
            "ci_high": None if value is None else min(1.0, value + 0.04), "too_small": small}  # fmt: skip


def audit_of(rows, task="classify"):
    leakage = [{"encoder": e, "balanced_accuracy": 0.61, "val_balanced_accuracy": 0.63, "chance": 0.25, "classes": 4,
                "n_test": 400, "chosen": {"l2": 0.001}} for e in dict.fromkeys(r["encoder"] for r in rows)]  # fmt: skip
    return {"run": "runs/x", "data": "synth-speech", "task": task, "group_attr": "accent", "min_group_size": 20,
            "bootstrap": 1000, "ci": [0.025, 0.975], "rows": rows, "gaps": [], "leakage": leakage}  # fmt: skip


def many_groups(k, metric="accuracy", encoders=ENCODERS, none=False, small=()):
    rows = []
    for i, enc in enumerate(encoders):
        for g in range(k):
            value = None if none else 0.3 + 0.01 * ((g * 7 + i) % 20)
            rows.append(row(f"g{g:02d}", value, enc, metric, n=7 if g in small else 40))
        rows.append(row("all", None if none else 0.4 + 0.05 * i, enc, metric, n=40 * k))
    return audit_of(rows)


@pytest.fixture
def accents():
    """Three encoders, four accents (one too small) and all; pretrained: en-sc worst, en-us best by value."""
    values = {"en-us": 0.80, "en-sc": 0.55, "fr-ca": 0.70, "all": 0.72}
    rows = []
    for i, enc in enumerate(ENCODERS):
        for g, v in values.items():
            rows.append(row(g, v - 0.1 * i, enc, n=400 if g == "all" else 60))
        rows.append(row("de", 0.9, enc, n=7))
    return audit_of(rows)


def test_format_audit_shows_every_group_and_encoder(accents):
    text = format_audit(accents)
    for name in ("en-us", "en-sc", "fr-ca", "de", "all", "pretrained", "random init", "raw input", "n"):
        assert name in text
    lines = text.splitlines()
    groups = [ln.split()[0] for ln in lines if ln.split() and ln.split()[0] in ("de", "en-sc", "en-us", "fr-ca", "all")]
    assert groups == ["de", "en-sc", "en-us", "fr-ca", "all"]  # sorted by name, "all" last
    en_us = next(ln for ln in lines if ln.startswith("en-us"))
    assert "80.0% [77.0, 84.0]" in en_us and "70.0% [67.0, 74.0]" in en_us and " 60 " in en_us
    assert "too small (n=7)" in next(ln for ln in lines if ln.startswith("de "))
    assert "gap (worst - best)" in text
    assert "leakage" in text and "61.0% (63.0%)" in text and "25.0%" in text


def gap_line(text, encoder="pretrained"):
    start = text.index("gap (worst - best)")
    return next(ln for ln in text[start:].splitlines() if ln.strip().startswith(encoder))


def test_worst_group_of_an_accuracy_is_the_lowest(accents):
    line = gap_line(format_audit(accents))
    assert "worst en-sc 55.0%" in line and "best en-us 80.0%" in line and "25.0 points" in line
    assert "(3 groups)" in line  # de is too small: not the best although its value would be


def test_worst_group_of_an_error_rate_is_the_highest():
    rows = [row(g, v, metric="cer", task="ctc") for g, v in {"en-us": 0.30, "en-sc": 0.47, "fr-ca": 0.35}.items()]
    rows += [row("all", 0.36, metric="cer", task="ctc", n=150), row("de", None, metric="cer", task="ctc", n=5)]
    text = format_audit(audit_of(rows, task="ctc"))
    assert "CER (lower is better)" in text
    line = gap_line(text)
    assert "worst en-sc 47.0%" in line and "best en-us 30.0%" in line and "17.0 points" in line
    (gap,) = group_gaps(rows)
    assert (gap["worst_group"], gap["best_group"], gap["groups"]) == ("en-sc", "en-us", 3)
    assert gap["gap"] == pytest.approx(0.17)


def test_one_table_per_protocol_labels_and_metric():
    rows = [row(g, 0.5, protocol=p, labels=f, metric=m) for p, f in (("linear", 0.1), ("knn", 1.0))
            for m in ("accuracy", "eer") for g in ("a", "b", "all")]  # fmt: skip
    text = format_audit(audit_of(rows))
    assert text.count("gap (worst - best)") == 4
    assert "linear · 10% labels · test accuracy by accent" in text
    assert "knn · 100% labels · test EER (lower is better) by accent" in text


def test_gap_needs_two_groups_and_all_none_is_handled():
    text = format_audit(many_groups(1))
    assert "fewer than two groups" in gap_line(text)
    text = format_audit(many_groups(3, none=True))
    assert "fewer than two groups" in gap_line(text) and "g02" in text
    assert group_gaps(many_groups(3, none=True)["rows"]) == []


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path


@pytest.mark.parametrize("audit", [many_groups(1), many_groups(30, small=(3, 4)), many_groups(4, none=True),
                                   many_groups(5, metric="cer", encoders=("pretrained",))],
                         ids=["1 group", "30 groups", "no values", "one encoder"])  # fmt: skip
def test_chart_is_written(tmp_path, audit):
    assert_png(audit_chart(audit, tmp_path / "audit.png"))


def test_chart_with_many_panels(tmp_path):
    keys = (("knn", 0.01), ("knn", 0.1), ("linear", 0.1), ("linear", 1.0), ("finetune", 0.1))
    rows = [row(g, 0.6, e, protocol=p, labels=f) for p, f in keys for e in ("pretrained", "supervised") for g in "ab"]
    assert_png(audit_chart(audit_of(rows), tmp_path / "audit.png"))


def test_write_audit_report(tmp_path, accents):
    eval_rows = [{"task": "classify", "protocol": "linear", "labels": 0.1, "encoder": e, "split": "test",
                  "metric": "accuracy", "value": 0.7} for e in ENCODERS]  # fmt: skip
    (tmp_path / "eval.json").write_text(json.dumps(eval_rows))
    logged = []
    paths = write_audit_report(tmp_path, RunConfig(), accents, log=logged.append)
    assert paths == [tmp_path / "audit_accent.png", tmp_path / "report.html"]
    assert_png(paths[0])
    assert all(str(p) in " ".join(logged) for p in paths)
    page = paths[1].read_text()
    for text in ("Audit by accent", "Gaps", "Leakage", "Evaluation", "en-us", "en-sc", "fr-ca", "too small (n=7)",
                 "1000 resamples", "bootstrap", "balanced accuracy", "random init"):  # fmt: skip
        assert text in page, text
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)
    assert page.count("<table") >= 5  # run, one audit panel, gaps, leakage, evaluation


def test_write_audit_report_without_eval_json(tmp_path):
    paths = write_audit_report(tmp_path, RunConfig(), many_groups(2), log=lambda s: None)
    page = paths[1].read_text()
    assert "Evaluation" not in page and "g00" in page and "g01" in page


def test_write_audit_report_reads_eval_rows_of_the_audit(tmp_path):
    audit = many_groups(2) | {"eval_rows": [{"task": "classify", "protocol": "knn", "labels": 0.5, "encoder": "raw",
                                             "split": "test", "metric": "accuracy", "value": 0.625}]}  # fmt: skip
    page = write_audit_report(tmp_path, RunConfig(), audit, log=lambda s: None)[1].read_text()
    assert "Evaluation" in page and "62.5%" in page and "knn" in page
