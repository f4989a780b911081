"""Raw text datasets: a user's files, a list of strings or a Hugging Face dataset -> a :class:`Dataset` of strings.

A raw text dataset's samples are Python strings in a numpy object array ``[N]``; its spec is a
``TextSpec(source, num_docs)`` (``num_docs``: the training documents) and a run tokenizes it before anything
else sees it. Labels are int64 ids into ``classes``, which are sorted (numerically when every label is an
integer, otherwise as strings).

Inputs (``load_text_dataset``):

* ``.txt``: one document per line (blank lines ignored); with ``blank_line_docs=True`` documents are
  separated by blank lines instead. Unlabelled.
* ``.jsonl`` (one JSON object a line), ``.csv``, ``.tsv`` (a header row): the text field (``--text-field``,
  default ``text``) is required; the label field (``--label-field``, default ``label``) is optional: where the
  file lacks it the data is unlabelled (a label field other than the default that the file lacks is an error,
  so a typo cannot silently drop the labels; ``label_field=None`` or ``"none"`` ignores labels).
  ``group_columns`` (``--group-column``) names columns read, as strings, into ``split.groups[NAME]`` (per-sample
  attributes for ``selfsup audit``); a named column the file lacks, or a row with no value in it, is an error
  naming the file (and line), as a missing label is. Other inputs (.txt, folders) have no columns: the names are
  ignored there, with one log line.
* each of these optionally gzipped (``.txt.gz``, ``.csv.gz``, ...).
* a folder of ``.txt`` files (searched recursively, hidden files ignored), each file one document.
  ``FOLDER/<class>/*.txt`` with two or more class folders is labelled by folder name;
  ``FOLDER/{train,test}/<class>/*.txt`` keeps its own split; anything else is unlabelled.

Split: labelled data without a split of its own gets a seeded (seed 0), class-stratified 20% test split
(``round(0.2 * n_c)`` documents of each class c with two or more, see ``splits.stratified_holdout``); the
rest, in file order, is train. Unlabelled data has no test split.

Cleaning (every source): HTML tags (``<br />``, ``<br>``, ``<p>``, comments) become a space, HTML entities
are unescaped, whitespace runs collapse to one space and the ends are stripped; documents left empty are
dropped and counted in one log line. Bytes that are not UTF-8 are replaced (U+FFFD) and the documents affected
are counted in one log line; with ``strict=True`` they are an error naming the file and line. Broken JSONL lines
are skipped and counted likewise (``strict``: an error). Every user error is one line: a
:class:`~selfsup.errors.UserError` naming the file or field and the fix. Nothing is cached for user text.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from selfsup.data.base import Dataset, Split
from selfsup.data.spec import TextSpec
from selfsup.data.splits import stratified_holdout
from selfsup.errors import UserError
from selfsup.fmt import count

FORMATS = (".txt", ".jsonl", ".csv", ".tsv")
TEST_FRACTION = 0.2  # of each class of labelled user data, seed SPLIT_SEED
SPLIT_SEED = 0
_DEFAULT_LABEL = "label"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.S)
_SPACE = re.compile(r"\s+")
_BAD_BYTES = re.compile("[\udc80-\udcff]+")  # what surrogateescape makes of bytes that are not UTF-8

Log = Callable[[str], object]


def clean_text(text: str) -> str:
    """HTML tags -> a space, entities unescaped, whitespace collapsed, ends stripped."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


def string_array(texts: Iterable[str]) -> np.ndarray:
    """A numpy object array [N] of Python strings (never a fixed-width ``<U`` array)."""
    texts = list(texts)
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out


def csv_rows(text: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty row of CSV text; fields of any length."""
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        for row in reader:
            if row:
                yield reader.line_num, row
    finally:
        csv.field_size_limit(limit)


class _Docs:
    """Collects cleaned documents (and their labels), counting those with bad bytes and those left empty."""

    def __init__(self, where: str, blank_is_doc: bool = True):
        self.where, self.texts, self.labels = where, [], []
        self.groups: dict[str, list[str]] = {}  # {column: one value per kept document}
        self.bad_utf8 = self.empty = 0
        self.blank_is_doc = blank_is_doc  # False for .txt, where blank lines only separate documents

    def add(self, text, label=None, groups: dict[str, str] | None = None) -> None:
        text = "" if text is None else text if isinstance(text, str) else str(text)
        if not text.strip():
            self.empty += self.blank_is_doc
            return
        if _BAD_BYTES.search(text):
            text = _BAD_BYTES.sub("\ufffd", text)
            self.bad_utf8 += 1
        text = clean_text(text)
        if not text:
            self.empty += 1
            return
        self.texts.append(text)
        self.labels.append(_BAD_BYTES.sub("\ufffd", label) if isinstance(label, str) else label)
        for k, v in (groups or {}).items():
            self.groups.setdefault(k, []).append(_BAD_BYTES.sub("\ufffd", v))

    def report(self, log: Log) -> None:
        if self.bad_utf8:
            verb = "was" if self.bad_utf8 == 1 else "were"
            log(f"{count(self.bad_utf8, 'document')} in {self.where} {verb} not valid UTF-8; bad bytes replaced")
        if self.empty:
            verb = "was" if self.empty == 1 else "were"
            log(f"{count(self.empty, 'document')} in {self.where} {verb} empty after cleaning (HTML tags, whitespace); "
                "dropped")  # fmt: skip


# ----------------------------------------------------------------------------- reading files


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from None
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path} is not a complete gzip file ({e}); compress it again or pass it uncompressed") \
                from None  # fmt: skip
    return data


def _decode(data: bytes, where: Path | str, strict: bool) -> str:
    """UTF-8 text (a BOM dropped); bytes that are not UTF-8 stay as lone surrogates for ``_Docs`` to count and
    replace, or, with ``strict``, are an error naming the file and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if strict:
            line = data.count(b"\n", 0, e.start) + 1
            raise UserError(f"{where} line {line} is not valid UTF-8; re-encode the file as UTF-8 "
                            "or drop --strict to replace the bad bytes") from None  # fmt: skip
        return data.decode("utf-8-sig", "surrogateescape")


def _format(path: Path) -> str:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    for suffix in FORMATS:
        if name.endswith(suffix):
            return suffix
    raise UserError(f"{path} is not a text file selfsup reads; use .txt, .jsonl, .csv or .tsv (each may be .gz), "
                    "or a folder of .txt files")  # fmt: skip


def is_text_path(path: str | os.PathLike) -> bool:
    """A file (any suffix: the text reader explains unsupported ones), a missing path with a text suffix, or a
    folder holding .txt files and no images (an image folder may hold a README.txt)."""
    p = Path(path).expanduser()
    if p.is_file():
        return True
    if not p.exists():  # a missing file named as text: the text reader says it does not exist
        name = p.name.lower().removesuffix(".gz")
        return name.endswith(FORMATS)
    if not p.is_dir() or not _list_txt(p):
        return False
    return not any(f.lower().endswith(_IMAGE_SUFFIXES) for _, _, files in os.walk(p) for f in files)


def _read_txt(text: str, docs: _Docs, blank_line_docs: bool) -> None:
    lines = text.split("\n")
    if not blank_line_docs:
        for line in lines:
            docs.add(line)
        return
    block: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line)
        elif block:
            docs.add("\n".join(block))
            block = []


def _missing_field(path, field: str, columns: Iterable[str], flag: str) -> UserError:
    shown = ", ".join(repr(c) for c in list(columns)[:20]) or "none"
    fix = (f"set {flag} to the column that holds it" if flag != "--group-column" else
           "name one of its columns (--group-column when pretraining, --group for selfsup audit)")  # fmt: skip
    return UserError(f"{path} has no {flag[2:].replace('-', ' ')} {field!r} (it has: {shown}); {fix}")


def _label_wanted(path, label_field: str | None, columns) -> bool:
    if not label_field or label_field.lower() == "none":
        return False
    if label_field in columns:
        return True
    if label_field != _DEFAULT_LABEL:  # asked for by name: a typo must not silently drop the labels
        raise _missing_field(path, label_field, columns, "--label-field")
    return False


def _no_label(path, line: int, label_field: str) -> UserError:
    return UserError(f"{path} line {line} has no value in the label field {label_field!r}; label every row, "
                     "or pass --label-field none to read the data unlabelled")  # fmt: skip


def _require_group_columns(where, group_columns: Iterable[str], columns, shown=None) -> None:
    """A one-line error naming the first ``--group-column`` the data lacks (``shown``: the columns to list)."""
    for column in group_columns:
        if column not in columns:
            raise _missing_field(where, column, columns if shown is None else shown, "--group-column")


def _no_group(path, line: int, column: str) -> UserError:
    return UserError(f"{path} line {line} has no value in the group column {column!r}; fill it in every row, "
                     f"or leave out --group-column {column}")  # fmt: skip


def table_rows(path: Path, text: str, delimiter: str, field: str, label_field: str | None, flag: str,
               what: str = "document", group_columns: Iterable[str] = ()
               ) -> Iterator[tuple[int, str, str | None, dict[str, str]]]:  # fmt: skip
    """(line, value of ``field``, label or None, {group column: value}) of each row of a CSV / TSV ``text`` with a
    header row; a missing column (named with its CLI ``flag``, or ``--group-column``), a row without a label or
    without a value in a group column, or bad quoting is a one-line UserError. The label column is read where
    ``_label_wanted`` says so; every row then has a label."""
    try:
        rows = csv_rows(text, delimiter)
        first = next(rows, None)
        if first is None:
            raise UserError(f"{path} is empty; it needs a header row and one row per {what}")
        header = [c.strip() for c in first[1]]
        if field not in header:
            raise _missing_field(path, field, header, flag)
        i_value = header.index(field)
        i_label = header.index(label_field) if _label_wanted(path, label_field, header) else None
        _require_group_columns(path, group_columns, header)
        i_groups = {column: header.index(column) for column in group_columns}
        for line, row in rows:
            label = None
            if i_label is not None:
                label = row[i_label].strip() if i_label < len(row) else ""
                if not label:
                    raise _no_label(path, line, label_field)
            groups = {}
            for column, i in i_groups.items():
                groups[column] = row[i].strip() if i < len(row) else ""
                if not groups[column]:
                    raise _no_group(path, line, column)
            yield line, row[i_value] if i_value < len(row) else "", label, groups
    except csv.Error as e:
        raise UserError(f"{path} is not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({e}); fix the quoting") \
            from None  # fmt: skip


def _read_table(path: Path, text: str, delimiter: str, docs: _Docs, text_field: str, label_field: str | None,
                group_columns: list[str]) -> None:  # fmt: skip
    rows = table_rows(path, text, delimiter, text_field, label_field, "--text-field", group_columns=group_columns)
    for _, value, label, groups in rows:
        docs.add(value, label, groups)


def _group_str(value) -> str:
    """A group value as read from JSON or a Hugging Face column: a string stripped, None "", anything else str()."""
    return value.strip() if isinstance(value, str) else "" if value is None else str(value).strip()


def _read_jsonl(path: Path, text: str, docs: _Docs, text_field: str, label_field: str | None, strict: bool,
                log: Log, group_columns: list[str] = ()) -> None:  # fmt: skip
    records, broken = [], []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            why = "" if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
        except json.JSONDecodeError as e:
            why = e.msg
        if why:
            if strict:
                raise UserError(f"{path} line {n} is not a JSON object ({why}); fix it or drop --strict "
                                "to skip broken lines")  # fmt: skip
            broken.append(n)
            continue
        records.append((n, record))
    if broken:
        verb = "is not a JSON object and was" if len(broken) == 1 else "are not JSON objects and were"
        log(f"{count(len(broken), 'line')} of {path} {verb} skipped (first: line {broken[0]})")
    if not records:
        raise UserError(f'{path} holds no JSON objects; write one object per line, e.g. {{"text": "..."}}')
    if not any(text_field in r for _, r in records):
        raise _missing_field(path, text_field, dict.fromkeys(k for _, r in records[:100] for k in r), "--text-field")
    keys = {k for _, r in records for k in r}
    with_label = _label_wanted(path, label_field, keys)
    _require_group_columns(path, group_columns, keys, dict.fromkeys(k for _, r in records[:100] for k in r))
    for n, record in records:
        label = record.get(label_field) if with_label else None
        if with_label and (label is None or str(label).strip() == ""):
            raise _no_label(path, n, label_field)
        groups = {column: _group_str(record.get(column)) for column in group_columns}
        if (empty := next((c for c, v in groups.items() if not v), None)) is not None:
            raise _no_group(path, n, empty)
        docs.add(record.get(text_field), None if label is None else str(label).strip(), groups)


def _list_txt(root: Path) -> list[Path]:
    """Relative paths of the non-hidden .txt / .txt.gz files below ``root``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith((".txt", ".txt.gz")):
                found.append(Path(dirpath, f).relative_to(root))
    return sorted(found)


def _folder_layout(root: Path, files: list[Path], log: Log) -> tuple[list[str | None], list[str] | None]:
    """(class of each file or None, split of each file or None): see the module docstring."""
    depths = {len(f.parts) for f in files}
    if depths == {3} and {f.parts[0] for f in files} == {"train", "test"}:
        return [f.parts[1] for f in files], [f.parts[0] for f in files]
    if depths == {2} and len({f.parts[0] for f in files}) >= 2:
        return [f.parts[0] for f in files], None
    if depths != {1}:
        log(f"{root}: .txt files are not one class folder each (FOLDER/<class>/*.txt with two or more classes); "
            "read as unlabelled documents")  # fmt: skip
    return [None] * len(files), None


def _read_folder(root: Path, strict: bool, log: Log):
    files = _list_txt(root)
    if not files:
        raise UserError(f"{root} holds no .txt files (searched recursively, hidden files ignored); add documents "
                        "or pass a .txt/.jsonl/.csv/.tsv file")  # fmt: skip
    classes, splits = _folder_layout(root, files, log)
    docs = {s: _Docs(str(root)) for s in (set(splits) if splits else {"train"})}
    for i, rel in enumerate(files):
        path = root / rel
        docs[splits[i] if splits else "train"].add(_decode(_read_bytes(path), path, strict), classes[i])
    return docs


# ----------------------------------------------------------------------------- building the dataset


def _class_names(labels: list) -> list[str]:
    names = {str(v) for v in labels}
    if all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _labels(texts: list[str], labels: list | None, where: str) -> tuple[np.ndarray | None, list[str]]:
    if labels is None:
        return None, []
    if any(v is None for v in labels):
        i = next(i for i, v in enumerate(labels) if v is None)
        raise UserError(f"{where}: document {i} has no label; label every document or none")
    classes = _class_names(labels)
    if len(classes) < 2:
        raise UserError(f"{where}: the labels hold one class ({classes[0]!r}); a labelled dataset needs at least "
                        "two classes (pass --label-field with another column, or --label-field none for "
                        "unlabelled data)")  # fmt: skip
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64), classes


def group_arrays(groups: dict[str, list[str]] | None) -> dict[str, np.ndarray]:
    """{name: one string per sample} -> {name: numpy str array [N]} (a plain ``<U`` array: saved without pickle)."""
    return {k: np.array(v, dtype=str) for k, v in (groups or {}).items()}


def _dataset(name: str, source: str, texts: list[str], labels: list | None,
             test: tuple[list[str], list] | None = None, groups: dict[str, list[str]] | None = None,
             test_groups: dict[str, list[str]] | None = None) -> Dataset:  # fmt: skip
    """Train (and test) splits of cleaned texts and their ``groups`` (one value per text); labelled data without a
    test split gets the stratified 20%."""
    if not texts:
        raise UserError(f"{source} holds no documents (after cleaning); add text or check --text-field")
    g = group_arrays(groups)
    if test is not None and labels is not None:
        y_all, classes = _labels(texts + test[0], labels + list(test[1]), source)
        train_classes = set(y_all[: len(texts)].tolist())
        if not set(y_all[len(texts) :].tolist()) <= train_classes:
            extra = sorted(classes[c] for c in set(y_all[len(texts) :].tolist()) - train_classes)
            raise UserError(f"{source}: test classes {extra} have no training documents; add some or remove them")
        train = Split(string_array(texts), y_all[: len(texts)], groups=g)
        test_split = Split(string_array(test[0]), y_all[len(texts) :], groups=group_arrays(test_groups))
        return Dataset(name, TextSpec(source, len(train)), train, test_split, classes)
    y, classes = _labels(texts, labels, source)
    if y is None:
        return Dataset(name, TextSpec(source, len(texts)), Split(string_array(texts), groups=g), None, [])
    held = stratified_holdout(y, TEST_FRACTION, SPLIT_SEED)
    x = string_array(texts)
    whole = Split(x, y, groups=g)
    train, test_split = whole.take(np.flatnonzero(~held)), whole.take(np.flatnonzero(held))  # groups follow the samples
    return Dataset(name, TextSpec(source, len(train)), train, test_split, classes)


def text_dataset_from_texts(texts, labels: list | None = None, name: str = "texts", log: Log = print) -> Dataset:
    """A Dataset from a list of strings (and optional labels: strings or ints, one per text), cleaned as
    files are; labelled texts get the seeded, stratified 20% test split. A Hugging Face ``datasets.Dataset``
    (or anything with ``column_names`` and ``__getitem__(column)``) is read by ``text_dataset_from_hf``."""
    if _is_hf_like(texts):
        return text_dataset_from_hf(texts, name=name, log=log)
    if isinstance(texts, str | bytes):
        raise UserError("texts must be a list of strings, not one string")
    texts = list(texts)
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(texts):
            raise UserError(f"{len(labels)} labels for {len(texts)} texts; pass one label per text")
    docs = _Docs(name)
    for i, t in enumerate(texts):
        if t is not None and not isinstance(t, str):
            raise UserError(f"texts[{i}] is a {type(t).__name__}, not a string")
        docs.add(t, None if labels is None else labels[i])
    docs.report(log)
    return _dataset(name, name, docs.texts, None if labels is None else docs.labels)


def _is_hf_like(obj) -> bool:
    return hasattr(obj, "column_names") and hasattr(obj, "__getitem__") and not isinstance(obj, str | bytes | Path)


def _hf_split(split, where: str, text_field: str, label_field: str | None, log: Log,
              group_columns: list[str] = ()) -> tuple[list, list | None, dict[str, list[str]]]:  # fmt: skip
    columns = list(split.column_names)
    if text_field not in columns:
        raise _missing_field(where, text_field, columns, "--text-field")
    _require_group_columns(where, group_columns, columns)
    group_values = {column: list(split[column]) for column in group_columns}
    labels = None
    if _label_wanted(where, label_field, columns):
        labels = list(split[label_field])
        features = getattr(split, "features", None)
        names = getattr(features.get(label_field), "names", None) if hasattr(features, "get") else None
        if names:  # a ClassLabel: ids -> names (-1 marks an unlabelled row)
            labels = [names[v] if isinstance(v, int | np.integer) and 0 <= v < len(names) else None for v in labels]
    docs = _Docs(where)
    for i, t in enumerate(split[text_field]):
        label = None if labels is None else labels[i]
        if labels is not None and label is None:
            raise UserError(f"{where}: row {i} has no label in {label_field!r}; label every row or pass "
                            "label_field=None")  # fmt: skip
        groups = {column: _group_str(values[i]) for column, values in group_values.items()}
        if (empty := next((c for c, v in groups.items() if not v), None)) is not None:
            raise UserError(f"{where}: row {i} has no value in the group column {empty!r}; fill it in every row, or "
                            "leave it out of group_columns")  # fmt: skip
        docs.add(t, label, groups)
    docs.report(log)
    return docs.texts, None if labels is None else docs.labels, docs.groups


def text_dataset_from_hf(data, text_field: str = "text", label_field: str | None = _DEFAULT_LABEL,
                         name: str = "hf-dataset", log: Log = print,
                         group_columns: list[str] = ()) -> Dataset:  # fmt: skip
    """A Hugging Face ``datasets.Dataset`` or ``DatasetDict`` (duck-typed: ``column_names`` and
    ``__getitem__(column)``; ``datasets`` is never imported). A DatasetDict's ``train`` split is train and its
    ``test`` split, if any, is test; ClassLabel ids become their names; ``group_columns`` are read as groups."""
    columns = data.column_names
    if isinstance(columns, dict):  # a DatasetDict: {split: [columns]}
        if "train" not in columns:
            raise UserError(f"{name} has no 'train' split (it has: {', '.join(columns)}); pass one split")
        texts, labels, groups = _hf_split(data["train"], f"{name}['train']", text_field, label_field, log,
                                          group_columns)  # fmt: skip
        if "test" in columns and labels is not None:
            test = _hf_split(data["test"], f"{name}['test']", text_field, label_field, log, group_columns)
            if test[1] is not None:
                return _dataset(name, name, texts, labels, test[:2], groups, test[2])
        return _dataset(name, name, texts, labels, groups=groups)
    texts, labels, groups = _hf_split(data, name, text_field, label_field, log, group_columns)
    return _dataset(name, name, texts, labels, groups=groups)


def load_text_dataset(path, text_field: str = "text", label_field: str | None = _DEFAULT_LABEL,
                      blank_line_docs: bool = False, strict: bool = False, log: Log = print,
                      group_columns: Iterable[str] = ()) -> Dataset:  # fmt: skip
    """A user's text as a raw text Dataset: a .txt/.jsonl/.csv/.tsv file (optionally .gz), a folder of .txt
    files, or a Hugging Face dataset object (see the module docstring for layouts, fields, cleaning and errors).
    ``group_columns``: columns of a .jsonl/.csv/.tsv (or Hugging Face dataset) read into ``split.groups``.

    Labelled data without its own split gets a seeded (seed 0), class-stratified 20% test split; unlabelled
    data has ``test=None``. Broken input is a one-line :class:`UserError` naming the file (and line or field)."""
    group_columns = list(dict.fromkeys(group_columns or ()))
    if _is_hf_like(path):
        return text_dataset_from_hf(path, text_field, label_field, log=log, group_columns=group_columns)
    name = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"{name} does not exist; check the path")
    if group_columns and (root.is_dir() or _format(root) == ".txt"):
        log(ignored_groups(name, group_columns))
        group_columns = []
    if root.is_dir():
        docs = _read_folder(root, strict, log)
        for d in docs.values():
            d.report(log)
        train = docs.get("train", _Docs(name))
        labelled = train.labels and train.labels[0] is not None
        test = docs.get("test")
        return _dataset(name, name, train.texts, train.labels if labelled else None,
                        (test.texts, test.labels) if test is not None else None)  # fmt: skip
    fmt = _format(root)
    data = _read_bytes(root)
    if not data.strip():
        raise UserError(f"{root} is empty; add one document per line (or per row)")
    text = _decode(data, root, strict)
    docs = _Docs(name, blank_is_doc=fmt != ".txt")
    if fmt == ".txt":
        _read_txt(text, docs, blank_line_docs)
    elif fmt == ".jsonl":
        _read_jsonl(root, text, docs, text_field, label_field, strict, log, group_columns)
    else:
        _read_table(root, text, "\t" if fmt == ".tsv" else ",", docs, text_field, label_field, group_columns)
    docs.report(log)
    labelled = fmt != ".txt" and docs.labels and docs.labels[0] is not None
    return _dataset(name, name, docs.texts, docs.labels if labelled else None, groups=docs.groups)


def ignored_groups(name: str, group_columns: Iterable[str]) -> str:
    """The log line for ``--group-column`` given for data without columns (it is ignored there, not an error, so
    one run's options can serve both a pretraining corpus and the table it is scored on)."""
    return (f"--group-column {', '.join(group_columns)} ignored: {name} is not a CSV / TSV / JSONL table (a folder of "
            "images or audio reads its groups from a groups.csv in it)")  # fmt: skip


__all__ = ["FORMATS", "TEST_FRACTION", "clean_text", "csv_rows", "group_arrays", "ignored_groups", "is_text_path",
           "load_text_dataset", "string_array", "text_dataset_from_hf", "text_dataset_from_texts"]  # fmt: skip
