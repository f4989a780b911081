"""Per-sample groups read from a user's data: --group-column of CSV / TSV / JSONL text and sequence tables, and a
groups.csv in an image or audio folder; through the readers, the caches and ``prepare``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from selfsup.cli import main
from selfsup.data import audio as audio_mod
from selfsup.data import folder as folder_mod
from selfsup.data import load_dataset, prepare, tokens
from selfsup.data.audio import load_audio_folder
from selfsup.data.folder import load_image_folder
from selfsup.data.text import text_dataset_from_hf
from selfsup.errors import UserError

WORDS = "the cat sat on a mat while dogs ran over green hills and birds sang songs of old".split()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))


class Log(list):
    def __call__(self, line):
        self.append(line)


def _doc(i: int, words: int = 6) -> str:
    return f"doc{i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words))


def _accent(i: int) -> str:
    return ("north", "south", "east")[i % 3]


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _check_text_groups(split) -> None:
    """Each document's groups are those of its row: doc<i> has accent _accent(i) and age str(i % 2)."""
    ids = [int(str(t).split()[0][3:]) for t in split.x]
    assert split.groups["accent"].tolist() == [_accent(i) for i in ids]
    assert split.groups["age"].tolist() == [str(i % 2 + 20) for i in ids]
    assert split.groups["accent"].dtype.kind == "U"  # strings, saved without pickle


# ----------------------------------------------------------------------------- text and sequence tables


def test_csv_text_groups_in_train_test_and_after_prepare(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["text,label,accent,age"] + [f'"{_doc(i)}",{"pos" if i % 2 else "neg"},{_accent(i)},{i % 2 + 20}'
                                        for i in range(30)]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(path), group_columns=["accent", "age"])
    assert len(ds.train) == 24 and len(ds.test) == 6
    _check_text_groups(ds.train)
    _check_text_groups(ds.test)
    assert set(load_dataset(str(path)).train.groups) == set()  # none asked for, none read

    run = tmp_path / "run"
    run.mkdir()
    tok = tokens.train_tokenizer(list(ds.train.x), "wordpiece", 200, log=lambda s: None)
    tokens.save_tokenizer(tok, run / prepare.TOKENIZER_FILE)
    spec = tokens.token_spec(tok, "wordpiece", 8)
    ev = prepare.for_evaluation(ds, run, spec, log=lambda s: None, windows=2)
    for before, after in ((ds.train, ev.train), (ds.test, ev.test)):
        assert len(after) == len(before)
        for k in ("accent", "age"):
            assert np.array_equal(after.groups[k], before.groups[k])


def test_pretraining_windows_carry_their_documents_groups_and_packed_rows_drop_them(tmp_path):
    path = tmp_path / "t.tsv"
    lengths = [3, 40, 5, 25, 2, 60]
    path.write_text("text\tspeaker\n" + "".join(f"{_doc(i, n)}\ts{i}\n" for i, n in enumerate(lengths)))
    ds = load_dataset(str(path), group_columns=["speaker"])
    assert ds.test is None and ds.train.groups["speaker"].tolist() == [f"s{i}" for i in range(6)]
    tok = tokens.train_tokenizer(list(ds.train.x), "wordpiece", 200, log=lambda s: None)
    spec = tokens.token_spec(tok, "wordpiece", 12)
    for _ in range(2):  # laid out, then from the cache
        out = tokens.tokenize_dataset(ds, tok, spec, "pretrain", log=lambda s: None)
        got = out.train.groups["speaker"].tolist()
        assert len(got) == len(out.train) > len(lengths) and got == sorted(got, key=lambda s: int(s[1:]))
        assert set(got) == {f"s{i}" for i in range(6)} and got.count("s5") > got.count("s0") == 1
    bpe = tokens.train_tokenizer(list(ds.train.x), "bpe", 300, log=lambda s: None)
    packed = tokens.tokenize_dataset(ds, bpe, tokens.token_spec(bpe, "bpe", 12), "pretrain", log=lambda s: None)
    assert len(packed.train) > 0 and packed.train.groups == {}


def test_tsv_and_csv_sequences(tmp_path):
    seqs = ["ACGTACGTAA", "GGGCCCATAT", "TTTTACGACG", "ACGGGTTTAA"] * 5
    tsv = tmp_path / "s.tsv"
    tsv.write_text("sequence\tlabel\thost\n" + "".join(f"{s}\t{i % 2}\th{i}\n" for i, s in enumerate(seqs)) +
                   "ACGT1ACGT\t0\thbad\n")  # fmt: skip  # a bad residue: skipped with its groups
    ds = load_dataset(str(tsv), group_columns=["host"], log=lambda s: None)
    assert len(ds.train) + len(ds.test) == 20
    for split in (ds.train, ds.test):
        hosts = [int(h[1:]) for h in split.groups["host"]]
        assert [seqs[i] for i in hosts] == list(split.x)
        assert (np.array(hosts) % 2 == split.y).all()
    csv = tmp_path / "s.csv"
    csv.write_text("sequence,host\n" + "".join(f"{s},h{i}\n" for i, s in enumerate(seqs)))
    plain = load_dataset(str(csv), group_columns=["host"])
    assert plain.test is None and plain.train.groups["host"].tolist() == [f"h{i}" for i in range(20)]
    csv.write_text("sequence,host\nACGT,h0\nACGA,\n")
    assert _error(load_dataset, str(csv), group_columns=["host"]) == (
        f"{csv} line 3 has no value in the group column 'host'; fill it in every row, or leave out --group-column host"
    )
    msg = _error(load_dataset, str(csv), group_columns=["country"])
    assert msg.startswith(f"{csv} has no group column 'country' (it has: 'sequence', 'host')")


def test_jsonl(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [f'{{"text": "{_doc(i)}", "label": {i % 2}, "accent": "{_accent(i)}", "age": {i % 2 + 20}}}'
             for i in range(20)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(path), group_columns=["accent", "age"])  # a number is read as its string
    _check_text_groups(ds.train)
    _check_text_groups(ds.test)
    path.write_text(lines[0] + '\n{"text": "x y", "label": 1, "accent": null, "age": 3}\n')
    assert _error(load_dataset, str(path), group_columns=["accent"]).startswith(
        f"{path} line 2 has no value in the group column 'accent'"
    )
    assert "has no group column 'region'" in _error(load_dataset, str(path), group_columns=["region"])


def test_hugging_face_dataset_groups():
    class FakeHF:
        def __init__(self, cols):
            self.cols = cols

        @property
        def column_names(self):
            return list(self.cols)

        def __getitem__(self, key):
            return self.cols[key]

    data = FakeHF({"text": [_doc(i) for i in range(10)], "label": [i % 2 for i in range(10)],
                   "accent": [_accent(i) for i in range(10)], "age": [i % 2 + 20 for i in range(10)]})  # fmt: skip
    ds = text_dataset_from_hf(data, group_columns=["accent", "age"])
    _check_text_groups(ds.train)
    _check_text_groups(ds.test)


def test_group_columns_are_ignored_with_a_line_for_data_without_columns(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one doc\nanother doc\n")
    log = Log()
    ds = load_dataset(str(path), group_columns=["accent"], log=log)
    assert ds.train.groups == {} and len(log) == 1 and "--group-column accent ignored" in log[0]


def test_missing_column_through_the_cli_is_one_line(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("text,label,accent\n" + "".join(f"{_doc(i)},{i % 2},{_accent(i)}\n" for i in range(10)))
    code = main(["pretrain", "--data", str(path), "--method", "mlm", "--budget", "1steps", "--device", "cpu",
                 "--group-column", "accent", "--group-column", "region", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"selfsup: error: {path} has no group column 'region' (it has: 'text', 'label', 'accent'); name "
                   "one of its columns (--group-column when pretraining, --group for selfsup audit)")  # fmt: skip


# ----------------------------------------------------------------------------- image folders


def _images(root: Path) -> dict[str, int]:
    """Class folders a/ and b/ of tiny PNGs, each a grey level of its own: {relative path: grey level}."""
    out = {}
    for c in ("a", "b"):
        for i in range(5):
            grey = 10 * i + (100 if c == "b" else 0)
            path = root / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (4, 4), grey).save(path)
            out[f"{c}/{i}.png"] = grey
    return out


def _write_groups(root: Path, rows: list[str], header: str = "file,tone,site") -> Path:
    path = root / "groups.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _tone(grey: int) -> str:
    return "dark" if grey < 30 else "mid" if grey < 120 else "light"


def test_image_folder_groups_csv(tmp_path):
    root = tmp_path / "img"
    greys = _images(root)
    _write_groups(root, [f"{rel},{_tone(g)},site{g % 20}" for rel, g in greys.items()])
    log = Log()
    ds = load_image_folder(root, log=log)
    assert log == [] and ds.classes == ["a", "b"]  # groups.csv is not an image: not skipped, not a class
    assert len(ds.train) + len(ds.test) == 10
    for split in (ds.train, ds.test):
        grey = np.asarray(split.x)[:, 0, 0, 0].astype(int)
        assert split.groups["tone"].tolist() == [_tone(g) for g in grey]
        assert split.groups["site"].tolist() == [f"site{g % 20}" for g in grey]
    via = load_dataset(str(root))
    assert np.array_equal(via.train.groups["tone"], ds.train.groups["tone"])
    assert load_image_folder(root).train.head(3).groups["tone"].tolist() == ds.train.groups["tone"][:3].tolist()


def test_editing_groups_csv_takes_effect_without_decoding_again(tmp_path, monkeypatch):
    root = tmp_path / "img"
    greys = _images(root)
    path = _write_groups(root, [f"{rel},{_tone(g)},x" for rel, g in greys.items()])
    first = load_image_folder(root)
    monkeypatch.setattr(folder_mod, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    path.write_text("file,tone\n" + "".join(f"{rel},t{g}\n" for rel, g in greys.items()))
    second = load_image_folder(root)
    grey = np.asarray(second.train.x)[:, 0, 0, 0].astype(int)
    assert set(second.train.groups) == {"tone"} and second.train.groups["tone"].tolist() == [f"t{g}" for g in grey]
    assert np.array_equal(np.asarray(first.train.x), np.asarray(second.train.x))
    path.unlink()
    assert load_image_folder(root).train.groups == {}


# ----------------------------------------------------------------------------- audio folders


def _audio(root: Path) -> dict[str, int]:
    """Speaker folders x/ and y/ of tiny 16 kHz WAVs, each of a length of its own: {relative path: samples}."""
    out = {}
    for s, spk in enumerate(("x", "y")):
        for i in range(5):
            n = 900 + 40 * i + 400 * s  # at least MIN_CLIP (880 samples)
            path = root / spk / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), 0.1 * np.sin(np.arange(n) / 5.0).astype(np.float32), 16000)
            out[f"{spk}/{i}.wav"] = n
    return out


def test_audio_folder_groups_csv(tmp_path, monkeypatch):
    root = tmp_path / "wav"
    lengths = _audio(root)
    _write_groups(root, [f"{rel},n{n},{'indoor' if n % 80 else 'outdoor'}" for rel, n in lengths.items()],
                  "file,size,site")  # fmt: skip
    ds = load_audio_folder(root)
    assert ds.classes == ["x", "y"] and len(ds.train) + len(ds.test) == 10
    for split in (ds.train, ds.test):
        assert split.groups["size"].tolist() == [f"n{n}" for n in split.lengths]
        assert split.groups["speaker"].tolist() == [ds.classes[y] for y in split.y]  # the sub-folders' still
    monkeypatch.setattr(audio_mod, "_decode_file", lambda p: (_ for _ in ()).throw(AssertionError("decoded again")))
    _write_groups(root, [f"{rel},{'tall' if n > 1000 else 'short'}" for rel, n in lengths.items()], "file,speaker")
    again = load_dataset(str(root))  # edited: read again, nothing decoded again; a speaker column replaces theirs
    assert set(again.train.groups) == {"speaker"}
    assert again.train.groups["speaker"].tolist() == ["tall" if n > 1000 else "short" for n in again.train.lengths]
    assert again.classes == ["x", "y"]  # the labels still come from the sub-folders


# ----------------------------------------------------------------------------- bad groups.csv


BAD = {
    "no file column": ("path,tone\na/0.png,dark\n", "line 1 has no 'file' column (it has: 'path', 'tone')"),
    "no attribute": ("file\na/0.png\n", "line 1 needs a header row file,<attr1>,<attr2>..."),
    "wrong field count": ("file,tone\n{rows}a/1.png,dark,extra\n", "line 12 has 3 fields and the header 2"),
    "duplicate row": ("file,tone\n{rows}a/0.png,dark\n", "line 12 names 'a/0.png' again (first on line 2)"),
    "unknown file": ("file,tone\n{rows}0.png,dark\n", "line 12 names '0.png', which is not an image file"),
    "skipped file": ("file,tone\n{rows}junk.png,dark\n", "line 12 names 'junk.png', which was skipped when the folder"),
    "missing row": ("file,tone\n{rows_but_one}", "has no row for 'b/4.png'; add one row per image file"),
    "empty value": ("file,tone\n{rows_but_one}b/4.png, \n", "line 11 has no value for 'tone'; fill it in"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_groups_csv_is_one_line_through_the_cli(tmp_path, capsys, case):
    root = tmp_path / "img"
    greys = _images(root)
    if case in ("skipped file", "unknown file"):
        (root / "junk.png").write_bytes(b"not a png")
    rows = "".join(f"{rel},{_tone(g)}\n" for rel, g in greys.items())
    text, want = BAD[case]
    (root / "groups.csv").write_text(text.format(rows=rows, rows_but_one=rows.rsplit("b/4.png", 1)[0]))
    code = main(["pretrain", "--data", str(root), "--method", "simclr", "--budget", "1steps", "--device", "cpu",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"selfsup: error: {root.resolve() / 'groups.csv'}") and want in err, err


def test_bad_groups_csv_in_an_audio_folder(tmp_path):
    root = tmp_path / "wav"
    lengths = _audio(root)
    rows = [f"{rel},n{n}" for rel, n in lengths.items()]
    _write_groups(root, rows[1:], "file,size")
    assert "has no row for 'x/0.wav'; add one row per audio file" in _error(load_audio_folder, root)
    _write_groups(root, [*rows, "x/9.wav,n1"], "file,size")
    assert "line 12 names 'x/9.wav', which is not an audio file of the folder" in _error(load_audio_folder, root)
