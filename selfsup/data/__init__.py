"""Datasets: named ones from the registry, a user's folder of images or audio, a user's text files, or a user's
biological sequences (FASTA, FASTQ, or a CSV / TSV with a sequence column).

``load_dataset`` returns a :class:`Dataset` (splits, labels, lengths, groups and a spec);
``raw_features`` is each modality's raw-input baseline for the probes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from selfsup.data import named as _named  # noqa: F401  (registers the named datasets)
from selfsup.data import named_seq as _named_seq  # registers dna-splice, promoters, ...
from selfsup.data import named_speech as _named_speech  # registers synth-speech, klettres
from selfsup.data import named_text as _named_text  # registers imdb, newsgroups
from selfsup.data.audio import Waveforms, is_audio_path, load_audio_folder
from selfsup.data.base import Dataset, SequenceLabels, Split
from selfsup.data.image import image_spec, raw_image_features
from selfsup.data.named_speech import synth_speech_splits
from selfsup.data.sequence import is_sequence_path, load_sequence_dataset
from selfsup.data.spec import AudioSpec, ImageSpec, SeqSpec, TextSpec, spec_from_dict, spec_to_dict
from selfsup.data.splits import balanced_subset, stratified_holdout, validation_split
from selfsup.data.text import (
    ignored_groups,
    is_text_path,
    load_text_dataset,
    text_dataset_from_hf,
    text_dataset_from_texts,
)
from selfsup.errors import UserError
from selfsup.registry import DATASETS

FETCHERS = {"fashion-mnist": _named.fetch_fashion_mnist, "imdb": _named_text.fetch_imdb,
            "newsgroups": _named_text.fetch_newsgroups, "synth-speech": _named_speech.fetch_synth_speech,
            "klettres": _named_speech.fetch_klettres, **_named_seq.FETCHERS}  # fmt: skip


def load_dataset(name: str, image_size: int | None = None, limit: int | None = None, strict: bool = False,
                 log=print, text_field: str = "text", label_field: str | None = "label",
                 blank_line_docs: bool = False, sequence_field: str = "sequence", alphabet: str = "auto",
                 soft_mask: str = "drop", group_columns: list[str] | None = None) -> Dataset:  # fmt: skip
    """A registered name (``fashion-mnist``, ``digits``, ``imdb``, ``newsgroups``, ``synth-speech``, ``klettres``,
    and the sequence sets ``SEQUENCE_SETS``), a path to a folder of images or of audio files
    (``selfsup.data.audio``), a sequence file (FASTA, FASTQ, or a .csv/.tsv whose header has the column
    ``sequence_field``, each optionally .gz; ``selfsup.data.sequence``), a text file (.txt/.jsonl/.csv/.tsv,
    optionally .gz) or folder of .txt files, or a Hugging Face dataset object (``selfsup.data.text``;
    ``text_field``, ``label_field``, ``blank_line_docs`` apply to text, ``label_field``, ``alphabet`` and
    ``soft_mask`` to sequences). A table is read as sequences when it has the sequence column, or when
    ``sequence_field`` or ``alphabet`` is set (then a missing column is an error naming it).

    Groups (``split.groups``, per-sample attributes for ``selfsup audit``): ``group_columns`` of a CSV / TSV /
    JSONL table (text or sequences; ignored, with one log line, by other data), a ``groups.csv`` in an image or
    audio folder (``selfsup.data.folder.folder_groups``), or a named set's own (synth-speech: speaker, accent, voice).

    ``limit`` keeps the first N training samples (the spec's statistics are those of the kept ones)."""
    group_columns = list(group_columns or [])
    text_args = {"text_field": text_field, "label_field": label_field, "strict": strict, "log": log,
                 "group_columns": group_columns}  # fmt: skip
    columns = False  # data the group columns are read from (the readers of text and sequences say when they are not)
    if not isinstance(name, str | os.PathLike):  # a Hugging Face dataset object
        ds, columns = load_text_dataset(name, **text_args), True
    elif name in SEQUENCE_SETS:
        ds = DATASETS.get(name)(soft_mask=soft_mask, alphabet=alphabet)
    elif name in DATASETS:
        ds = DATASETS.get(name)(image_size=image_size)
    elif is_audio_path(name):
        ds = load_audio_folder(name, strict=strict, log=log)
    elif _is_sequences(name, sequence_field, alphabet):
        ds, columns = load_sequence_dataset(name, sequence_field, label_field, alphabet, soft_mask, strict, log,
                                            group_columns), True  # fmt: skip
    elif is_text_path(name):
        ds, columns = load_text_dataset(name, blank_line_docs=blank_line_docs, **text_args), True
    elif Path(name).expanduser().exists() or "/" in name or name.startswith("."):
        if not Path(name).expanduser().exists():  # nothing says what it was meant to be: no "image folder"
            raise UserError(f"{name} does not exist; check the path")
        from selfsup.data.folder import load_image_folder

        ds = load_image_folder(Path(name).expanduser(), image_size=image_size, strict=strict, log=log)
    else:
        DATASETS.get(name)  # raises: unknown dataset, with the known names
    if group_columns and not columns:
        log(ignored_groups(str(name), group_columns))
    if limit is not None:
        if limit < 1:
            raise UserError(f"data.limit={limit} must be at least 1")
        ds.train = ds.train.head(limit)
        if isinstance(ds.spec, TextSpec):
            ds.spec = TextSpec(ds.spec.source, len(ds.train))
        elif isinstance(ds.spec, SeqSpec):
            ds.spec = SeqSpec(ds.spec.source, ds.spec.alphabet, len(ds.train))
        elif isinstance(ds.spec, ImageSpec):
            ds.spec = image_spec(ds.train.x)
    if len(ds) == 0:
        raise UserError(f"dataset {name!r} is empty; point --data at a folder with images")
    return ds


TEXT_SETS = ("imdb", "newsgroups")
SPEECH_SETS = ("synth-speech", "klettres")
SEQUENCE_SETS = tuple(_named_seq.SOURCES)  # drosophila-upstream, dna-splice, promoters, amp-peptides, proteins


def _is_sequences(path, sequence_field: str = "sequence", alphabet: str = "auto") -> bool:
    """A sequence file: FASTA / FASTQ, a table with the sequence column, or a table named as sequences by a
    non-default ``sequence_field`` or ``alphabet``."""
    if is_sequence_path(path, sequence_field):
        return True
    name = Path(path).name.lower().removesuffix(".gz")
    return name.endswith((".csv", ".tsv")) and (sequence_field != "sequence" or alphabet != "auto")


def data_modality(name) -> str:
    """The kind of input a method takes for data ``name`` without loading it: "tokens" for text and biological
    sequences, "audio" for speech, else "image"."""
    if not isinstance(name, str | os.PathLike):
        return "tokens"  # a Hugging Face dataset object
    if name in SPEECH_SETS or (name not in DATASETS and is_audio_path(name)):
        return "audio"
    if is_sequence_data(name):
        return "tokens"
    if name in TEXT_SETS or (name not in DATASETS and is_text_path(name)):
        return "tokens"
    return "image"


def is_sequence_data(name) -> bool:
    """True when data ``name`` holds biological sequences (a named sequence set or a FASTA / FASTQ / sequence table)."""
    if not isinstance(name, str | os.PathLike):
        return False
    return name in SEQUENCE_SETS or (name not in DATASETS and is_sequence_path(name))


def load_configured(data, limit: int | None = None, log=print) -> Dataset:
    """``load_dataset`` with a run's ``DataConfig`` (name, image size, strictness, the text and sequence options)."""
    return load_dataset(data.name, data.image_size, limit, data.strict, log=log, text_field=data.text_field,
                        label_field=data.label_field, blank_line_docs=data.blank_line_docs,
                        sequence_field=data.sequence_field, alphabet=data.alphabet, soft_mask=data.soft_mask,
                        group_columns=getattr(data, "group_columns", None))  # fmt: skip


def raw_features(spec, x, lengths: np.ndarray | None = None) -> torch.Tensor:
    """The raw-input baseline of a modality as float features [N, D] (pixels for images)."""
    if isinstance(spec, ImageSpec):
        return raw_image_features(x)
    raise NotImplementedError(f"no raw-input baseline for {spec.kind} data yet")


def fetch(name: str, log=print, size: str | None = None) -> None:
    """``selfsup data get NAME``: the one command allowed to reach the network. ``size``: synth-speech only
    (``default`` or ``small``)."""
    if size is not None and name != "synth-speech":
        raise UserError(f"--size applies to synth-speech only, not {name}")
    if name == "synth-speech":
        _named_speech.fetch_synth_speech(log=log, size=size or "default")
    elif name in FETCHERS:
        FETCHERS[name](log=log)
    else:
        ds = load_dataset(name, log=log)
        test = f", {len(ds.test)} test" if ds.test is not None else ""
        log(f"{name}: {len(ds)} train samples cached{test}")


__all__ = ["AudioSpec", "Dataset", "ImageSpec", "SEQUENCE_SETS", "SeqSpec", "SequenceLabels", "Split", "TextSpec",
           "Waveforms", "balanced_subset", "fetch", "image_spec", "is_sequence_data", "is_sequence_path",
           "load_audio_folder", "load_configured", "load_dataset", "load_sequence_dataset", "load_text_dataset",
           "raw_features", "spec_from_dict", "spec_to_dict", "stratified_holdout", "synth_speech_splits",
           "text_dataset_from_hf", "text_dataset_from_texts", "validation_split"]  # fmt: skip
