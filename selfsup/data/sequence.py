"""Biological sequences from a user's files -> a :class:`Dataset` of strings over a DNA, RNA or protein alphabet.

A sequence dataset's samples are Python strings in a numpy object array ``[N]`` (one residue a character); its
spec is a ``SeqSpec(source, alphabet, num_seqs)`` (``num_seqs``: the training sequences) and a run tokenizes it
(``selfsup.data.seq_tokens``) before anything else sees it. Labels are int64 ids into ``classes``, sorted as the
text reader sorts them (numerically when every label is an integer, otherwise as strings).

Inputs (``load_sequence_dataset``), each optionally gzipped (``.gz``):

* FASTA (``.fa .fasta .fna .ffn .faa .frn .fas``): records start with a ``>`` header whose first word is the
  record id; the sequence may span lines; blank lines are ignored. Unlabelled.
* FASTQ (``.fq .fastq``): 4-line records (``@id``, sequence, ``+``, quality); the quality line must be as long
  as the sequence. Blank lines between records are ignored. Unlabelled.
* CSV / TSV (``.csv .tsv``) with a header row: the sequence column (``--sequence-field``, default ``sequence``)
  is required; the label column (``--label-field``, default ``label``) is optional as for text (a label field
  other than the default that the file lacks is an error; ``none`` ignores labels). A table is read as
  sequences when its header has the sequence column (``is_sequence_path``). ``group_columns``
  (``--group-column``) are read, as strings, into ``split.groups[NAME]`` (as for text: a missing column or an
  empty cell is an error naming the file and line); FASTA / FASTQ have no columns and ignore them (one log line).

Residues: whitespace inside a sequence is removed (line breaks, spaces, CRLF line endings), and a protein's
trailing ``*`` (the stop codon) is dropped. The alphabet (``alphabet="auto"``) is detected from the A-Z letters
of the whole file (``alphabet.detect_alphabet``: nucleotide letters only, or at least 90% A/C/G/T/U/N, is DNA,
or RNA where U outnumbers T; anything else protein; the records with letters outside the alphabet detected are
then skipped and counted); given (``dna``, ``rna``, ``protein``) it is enforced. IUPAC ambiguity codes (N, R, Y, ...;
X, B, Z, ...) are residues and kept. Soft-masking (lower-case residues): ``soft_mask="drop"`` upper-cases them,
``"keep"`` keeps them as they are (residues of their own).

Split: labelled data gets the seeded (seed 0), class-stratified 20% test split text data gets
(``splits.stratified_holdout``); the rest, in file order, is train. Unlabelled data has no test split.

Bad input: a record holding a character outside the alphabet (a digit, a gap ``-``, a letter the alphabet lacks)
is skipped, and so is an empty record; both are counted in one log line. With ``strict=True`` either is a one-line
error naming the record id, and for a bad character its 1-based position. A truncated gzip file, a FASTQ
record whose quality line is not as long as its sequence, a label column with one class, a table without the
sequence column and a file with no valid record are each a one-line :class:`~selfsup.errors.UserError` naming
the file (and record) and the fix. Nothing is cached for user sequences.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfsup.data.alphabet import SOFT_MASK, detect_alphabet, get_alphabet
from selfsup.data.base import Dataset, Split
from selfsup.data.spec import SeqSpec
from selfsup.data.splits import stratified_holdout
from selfsup.data.text import (
    SPLIT_SEED,
    TEST_FRACTION,
    _class_names,
    _decode,
    _read_bytes,
    group_arrays,
    ignored_groups,
    string_array,
    table_rows,
)
from selfsup.errors import UserError
from selfsup.fmt import count

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".faa", ".frn", ".fas")
FASTQ_SUFFIXES = (".fq", ".fastq")
TABLE_SUFFIXES = (".csv", ".tsv")
_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[A-Za-z]")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

Log = Callable[[str], object]


@dataclass
class Record:
    """One sequence as read: its id (a FASTA/FASTQ header's first word, or ``line N`` of a table), the line it
    starts on, the residues (whitespace removed), its label and its groups (tables only)."""

    id: str
    line: int
    seq: str
    label: str | None = None
    groups: dict[str, str] = field(default_factory=dict)


def _format(path: Path) -> str | None:
    """fasta, fastq, csv or tsv by the file name (``.gz`` ignored), else None."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(FASTA_SUFFIXES):
        return "fasta"
    if name.endswith(FASTQ_SUFFIXES):
        return "fastq"
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    return None


def _header(path: Path, delimiter: str) -> list[str]:
    """The column names of a table's first row (only the first line is read); [] where it cannot be read."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            first = f.readline(1 << 20)
    except (OSError, EOFError, zlib.error):
        return []
    row = next(csv.reader([first.decode("utf-8-sig", "replace").rstrip("\r\n")], delimiter=delimiter), [])
    return [c.strip() for c in row]


def is_sequence_path(path: str | os.PathLike, sequence_field: str = "sequence") -> bool:
    """A FASTA or FASTQ file name (optionally .gz; it need not exist: the reader says so), or a CSV / TSV file
    whose header row has the column ``sequence_field`` (only the header is read)."""
    p = Path(path).expanduser()
    kind = _format(p)
    if kind in ("fasta", "fastq"):
        return not p.is_dir()
    if kind in ("csv", "tsv") and p.is_file():
        return sequence_field in _header(p, "\t" if kind == "tsv" else ",")
    return False


# ----------------------------------------------------------------------------- FASTA / FASTQ


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending) of a file, streamed; gzip read as it goes. Bytes that
    are not UTF-8 are replaced (U+FFFD), so they are characters outside every alphabet."""
    gz = path.name.lower().endswith(".gz")
    try:
        f = gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from None
    n = 0
    try:
        with f:
            for n, raw in enumerate(f, 1):  # noqa: B007 - n is used after the loop for the error line
                yield n, raw.decode("utf-8", "replace").rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:
        if gz:
            raise UserError(f"{path} is not a complete gzip file ({e}, after line {n}); compress it again or pass it "
                            "uncompressed") from None  # fmt: skip
        raise UserError(f"cannot read {path} ({e}); check the file") from None


def _record_id(header: str, line: int) -> str:
    words = header[1:].split()
    return words[0] if words else f"line {line}"


def read_fasta(path: str | os.PathLike) -> Iterator[Record]:
    """The records of a FASTA file (optionally .gz), streamed: id = the header's first word; sequence lines joined
    with their whitespace removed. Text before the first ``>`` header is an error."""
    path = Path(path)
    head: tuple[str, int] | None = None
    parts: list[str] = []
    for n, line in _lines(path):
        if line.startswith(">"):
            if head is not None:
                yield Record(head[0], head[1], "".join(parts))
            head, parts = (_record_id(line, n), n), []
        elif head is not None:
            parts.append(_SPACE.sub("", line) if not line.isalpha() else line)
        elif line.strip():
            raise UserError(f"{path} line {n} comes before any '>' header; FASTA records start with a '>ID' line "
                            "(a file of one sequence a line is read as a .csv with a sequence column)")  # fmt: skip
    if head is not None:
        yield Record(head[0], head[1], "".join(parts))


def read_fastq(path: str | os.PathLike) -> Iterator[Record]:
    """The records of a 4-line FASTQ file (optionally .gz), streamed: ``@ID ...``, sequence, ``+``, quality. A
    quality line of another length than its sequence is an error naming the record."""
    path = Path(path)
    lines = _lines(path)
    for n, line in lines:
        if not line.strip():
            continue
        if not line.startswith("@"):
            raise UserError(f"{path} line {n} should start a FASTQ record with '@' (4 lines a record: @ID, "
                            "sequence, +, quality); fix the file or pass FASTA (.fa)")  # fmt: skip
        rid = _record_id(line, n)
        rest = [next(lines, None) for _ in range(3)]
        if rest[-1] is None or not rest[1][1].startswith("+"):
            where = "ends" if rest[-1] is None else f"has no '+' line at line {rest[1][0]}"
            raise UserError(f"{path}: FASTQ record {rid!r} (line {n}) {where}; each record is 4 lines (@ID, "
                            "sequence, +, quality): the file may be truncated")  # fmt: skip
        seq, qual = _SPACE.sub("", rest[0][1]), _SPACE.sub("", rest[2][1])
        if len(qual) != len(seq):
            raise UserError(f"{path}: FASTQ record {rid!r} (line {n}) has {len(qual)} quality characters for "
                            f"{len(seq)} residues; the quality line must be as long as the sequence (the file may "
                            "be truncated or not 4-line FASTQ)")  # fmt: skip
        yield Record(rid, n, seq)


# ----------------------------------------------------------------------------- tables


def _read_table(path: Path, delimiter: str, sequence_field: str, label_field: str | None, strict: bool,
                group_columns: list[str] = ()) -> tuple[list[Record], bool]:  # fmt: skip
    """(records, labelled) of a CSV / TSV file with a header row."""
    text = _decode(_read_bytes(path), path, strict)
    rows = table_rows(path, text, delimiter, sequence_field, label_field, "--sequence-field", "sequence",
                      group_columns)  # fmt: skip
    records = [Record(f"line {line}", line, _SPACE.sub("", seq), label, groups) for line, seq, label, groups in rows]
    return records, any(r.label is not None for r in records)


# ----------------------------------------------------------------------------- checking residues


def upper(seq: str) -> str:
    """A-Z upper-cased, every other character as it is (``str.upper`` would turn ``ß`` into ``SS``)."""
    return seq.upper() if seq.isascii() else seq.translate(_ASCII_UPPER)


@dataclass
class _Skipped:
    """Records dropped for bad characters or for being empty: counted, with the first of each kind."""

    where: str
    total: int = 0
    bad: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    def line(self, alphabet: str) -> str | None:
        if not self.bad and not self.empty:
            return None
        parts = []
        if self.bad:
            parts.append(f"{len(self.bad)} with characters outside the {alphabet} alphabet (first: {self.bad[0]})")
        if self.empty:
            parts.append(f"{len(self.empty)} empty (first: {self.empty[0]})")
        skipped = len(self.bad) + len(self.empty)
        return f"{self.where}: skipped {skipped} of {count(self.total, 'record')}: " + "; ".join(parts)


def _name(rec: Record) -> str:
    return rec.id if rec.id.startswith("line ") else f"record {rec.id!r} (line {rec.line})"


def check_records(records: list[Record], alphabet: str, soft_mask: str, where: str, strict: bool,
                  log: Log) -> list[Record]:  # fmt: skip
    """The records whose residues are all in ``alphabet`` (upper-cased first under ``soft_mask="drop"``; a
    protein's trailing ``*`` dropped), in order; the others are skipped and counted in one log line, or, with
    ``strict``, the first is a UserError naming it (and the character and its 1-based position)."""
    residues = get_alphabet(alphabet).residues(keep_case=soft_mask == "keep")
    outside = re.compile(f"[^{re.escape(residues)}]")
    kept, skipped = [], _Skipped(where, len(records))
    for rec in records:
        seq = upper(rec.seq) if soft_mask == "drop" else rec.seq
        if alphabet == "protein" and seq.endswith("*"):
            seq = seq[:-1]
        if not seq:
            if strict:
                raise UserError(f"{where}: {_name(rec)} is empty; remove it, or drop --strict to skip empty records")
            skipped.empty.append(_name(rec))
            continue
        bad = outside.search(seq)
        if bad:
            ch, pos = rec.seq[bad.start()], bad.start() + 1  # upper() keeps positions
            if strict:
                raise UserError(f"{where}: {_name(rec)} has {ch!r} at position {pos}, not a {alphabet} residue; fix "
                                "the record, set --alphabet, or drop --strict to skip such records")  # fmt: skip
            skipped.bad.append(f"{_name(rec)}, {ch!r} at position {pos}")
            continue
        kept.append(Record(rec.id, rec.line, seq, rec.label, rec.groups))
    if (line := skipped.line(alphabet)) is not None:
        log(line)
    return kept


def resolve_alphabet(records: list[Record], alphabet: str) -> str:
    """``alphabet`` itself, or (``auto``) the one detected from the A-Z letters of every record."""
    if alphabet != "auto":
        return get_alphabet(alphabet).name  # a name that is no alphabet is an error
    letters = "".join(rec.seq for rec in records).upper().encode("ascii", "replace")
    counts = np.bincount(np.frombuffer(letters, dtype=np.uint8), minlength=128)
    return detect_alphabet({chr(c): int(counts[c]) for c in range(ord("A"), ord("Z") + 1) if counts[c]})


# ----------------------------------------------------------------------------- building the dataset


def _labels(labels: list[str], where: str, label_field: str | None) -> tuple[np.ndarray, list[str]]:
    classes = _class_names(labels)
    if len(classes) < 2:
        raise UserError(f"{where}: the label column {label_field!r} has one class ({classes[0]!r}); a classifier "
                        "needs two or more classes (pass --label-field with another column, or --label-field none "
                        "to read the sequences unlabelled)")  # fmt: skip
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64), classes


def sequence_dataset(name: str, source: str, seqs: list[str], alphabet: str, labels: list | None = None,
                     label_field: str | None = "label",
                     groups: dict[str, list[str]] | None = None) -> Dataset:  # fmt: skip
    """A Dataset of checked sequences and their ``groups`` (one value per sequence): labelled ones get the seeded,
    class-stratified 20% test split."""
    x, g = string_array(seqs), group_arrays(groups)
    if labels is None:
        return Dataset(name, SeqSpec(source, alphabet, len(x)), Split(x, groups=g), None, [])
    y, classes = _labels(labels, source, label_field)
    held = stratified_holdout(y, TEST_FRACTION, SPLIT_SEED)
    whole = Split(x, y, groups=g)
    train, test = whole.take(np.flatnonzero(~held)), whole.take(np.flatnonzero(held))  # groups follow the samples
    return Dataset(name, SeqSpec(source, alphabet, len(train)), train, test, classes)


def load_sequence_dataset(path, sequence_field: str = "sequence", label_field: str | None = "label",
                          alphabet: str = "auto", soft_mask: str = "drop", strict: bool = False,
                          log: Log = print, group_columns: Iterable[str] = ()) -> Dataset:  # fmt: skip
    """A user's FASTA, FASTQ, CSV or TSV file (optionally .gz) as a sequence Dataset (see the module docstring
    for formats, alphabets, soft-masking, splits, groups and errors)."""
    group_columns = list(dict.fromkeys(group_columns or ()))
    if soft_mask not in SOFT_MASK:
        raise UserError(f"data.soft_mask={soft_mask!r}: use drop (upper-case soft-masked residues) or keep")
    if alphabet != "auto":
        get_alphabet(alphabet)  # a bad name is an error before the file is read
    name = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"{name} does not exist; check the path")
    if root.is_dir():
        raise UserError(f"{name} is a folder; pass one FASTA, FASTQ, CSV or TSV file of sequences")
    kind = _format(root)
    if kind is None:
        raise UserError(f"{root} is not a sequence file selfsup reads; use FASTA (.fa, .fasta, .fna, .faa, ...), "
                        "FASTQ (.fq, .fastq) or a .csv/.tsv with a sequence column (each may be .gz)")  # fmt: skip
    labelled = False
    if group_columns and kind in ("fasta", "fastq"):
        log(ignored_groups(name, group_columns))
        group_columns = []
    if kind == "fasta":
        records = list(read_fasta(root))
    elif kind == "fastq":
        records = list(read_fastq(root))
    else:
        delimiter = "\t" if kind == "tsv" else ","
        records, labelled = _read_table(root, delimiter, sequence_field, label_field, strict, group_columns)
    if not records:
        raise UserError(f"{root} holds no sequence records; check that it is {kind.upper()} and not empty")
    alphabet = resolve_alphabet(records, alphabet)
    kept = check_records(records, alphabet, soft_mask, name, strict, log)
    if not kept:
        raise UserError(f"{root} holds no valid {alphabet} sequence (all {count(len(records), 'record')} were "
                        "empty or had characters outside the alphabet); check the file, or set --alphabet")  # fmt: skip
    labels = [r.label for r in kept] if labelled else None
    groups = {column: [r.groups[column] for r in kept] for column in group_columns}
    return sequence_dataset(name, name, [r.seq for r in kept], alphabet, labels, label_field, groups)


__all__ = ["FASTA_SUFFIXES", "FASTQ_SUFFIXES", "Record", "check_records", "is_sequence_path", "load_sequence_dataset",
           "read_fasta", "read_fastq", "resolve_alphabet", "sequence_dataset", "upper"]  # fmt: skip
