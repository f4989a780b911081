"""Speech data: the ragged waveform container, decoding and resampling, transcripts, and a user's audio folder.

Waveforms are mono int16 PCM at the spec's sample rate (16 kHz), stored flat with offsets
(:class:`Waveforms`) and memory-mapped from the cache; the model reads them as float32 in [-1, 1]
(``Waveforms.batch``). A split's ``lengths`` are the clips' lengths in samples.

Transcripts use the CTC alphabet :data:`CHARS` (space, apostrophe, a-z) as ``SequenceLabels`` of character
ids ``1..28`` (:func:`transcript_ids`); id 0 is never used: it is CTC's blank (``CTC_CLASSES[0]``).
:func:`normalize_transcript` lower-cases a text, turns the punctuation that is not spoken (``. , ; : ! ? " ( )``,
dashes) into spaces and drops quote marks around words; a text that still holds anything else (digits, symbols,
letters outside a-z) is not in the alphabet.

A user's audio folder (``--data PATH``, read by :func:`load_audio_folder`):

* WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF (what soundfile decodes), searched recursively, hidden files ignored;
  any sample rate, bit depth (8/16/24/32-bit integer, float) and channel count: channels are averaged
  and the result resampled (polyphase) to 16 kHz.
* Speakers: ``PATH/<speaker>/...``: the first sub-folder is the speaker (group ``speaker``); with two or more
  speakers (every file in one) the data is labelled by speaker, and a seeded (seed 0) 20% of each speaker's
  files is the test split (``splits.stratified_holdout``). ``PATH/{train,test}/<speaker>/...`` keeps its own split.
* Transcripts: ``name.txt`` beside ``name.wav``, or a ``metadata.csv`` (LJSpeech style, ``file|text`` or
  ``file|raw text|normalized text``: the last field is read; ``file`` is relative to the csv's folder, with or
  without its suffix, or under ``wavs/`` beside it). ``load_audio_folder(..., labels="transcript")`` returns
  the transcribed clips with their transcripts as labels (an unlabelled folder's transcribed clips are split
  80/20 with seed 0).
* Groups: the speaker sub-folder is the group ``speaker``; a ``groups.csv`` in the folder root (header
  ``file,<attr1>,...``, ``file`` the audio file's path relative to the root with forward slashes) adds one group
  per attribute (``selfsup.data.folder.folder_groups``: one row per readable audio file, each mistake a one-line
  error naming groups.csv and the line). A ``speaker`` column there replaces the sub-folder speaker group (the
  labels still come from the sub-folders). groups.csv is read at every load, so editing it needs no re-decoding.
* Bad input (a file soundfile cannot decode or without samples, a clip shorter than ``MIN_CLIP`` (55 ms, the
  audio of the speech encoder's first token), a ``metadata.csv`` line naming no file) is skipped, and a transcript
  outside the alphabet is dropped (its clip kept, untranscribed), counted in one log line, or with ``strict=True``
  a one-line :class:`UserError` naming the file. A folder with no audio file is an error.
* Decoded once into ``cache_dir()/audio/<key>/`` (``audio.npy`` int16 [total], train clips first then test,
  ``offsets.npy`` int64 [N + 1], ``meta.json`` written last); the key covers every file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from math import gcd
from pathlib import Path

import numpy as np

from selfsup.data.base import Dataset, SequenceLabels, Split
from selfsup.data.cache import building, cache_dir, load_array, save_array
from selfsup.data.folder import data_files, folder_groups, list_files
from selfsup.data.spec import AudioSpec
from selfsup.data.splits import stratified_holdout
from selfsup.errors import UserError
from selfsup.fmt import count

SAMPLE_RATE = 16000
CHARS = " 'abcdefghijklmnopqrstuvwxyz"  # the CTC alphabet; character ids are 1 + the index here
CTC_CLASSES = ["<blank>", *CHARS]  # class id -> name; 0 is CTC's blank
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CACHE_VERSION = 4  # 2: clips under MIN_CLIP skipped; 3: a bad transcript drops the transcript, not the clip; 4: empty
# the audio the speech encoder's first token reads (4 log-mel frames of 25 ms every 10 ms: 55 ms); a shorter clip
# is skipped and counted (an error under --strict): it holds less than one token of sound
MIN_CLIP = AudioSpec().win + 3 * AudioSpec().hop
MIN_CLIP_MS = 1000 * MIN_CLIP // SAMPLE_RATE
TEST_FRACTION = 0.2
_UNSPOKEN = re.compile(r"[.,;:!?\"()\[\]{}\u2013\u2014\u2026\u201c\u201d\-]|\s")
_QUOTE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_IN_ALPHABET = re.compile(r"[a-z' ]+")
_CHAR_ID = {c: i + 1 for i, c in enumerate(CHARS)}
Log = Callable[[str], object]


# ----------------------------------------------------------------------------- the container


class Waveforms:
    """Ragged mono int16 clips stored flat: clip i is ``flat[offsets[i]:offsets[i + 1]]``.

    Used as ``Split.x``: ``len``, ``shape`` (N,), ``x[i]`` (one clip, int16), ``x[a:b]`` (a view of the same,
    possibly memory-mapped, ``flat``), ``x[index_array]`` (a Waveforms gathered into memory, in that order) and
    ``batch(idx)`` (zero-padded float32 for the model)."""

    ragged = True  # Split.take keeps a ragged container as it is (no np.asarray)

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat = flat  # int16 [total]
        self.offsets = np.asarray(offsets, dtype=np.int64)  # [N + 1]
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 or \
                self.offsets[-1] != len(flat) or np.any(np.diff(self.offsets) < 0):  # fmt: skip
            raise ValueError("Waveforms: offsets must start at 0, not decrease and end at len(flat)")

    @classmethod
    def from_clips(cls, clips) -> Waveforms:
        clips = [np.asarray(c, dtype=np.int16).reshape(-1) for c in clips]
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in clips], dtype=np.int64)]).astype(np.int64)
        return cls(np.concatenate(clips) if clips else np.zeros(0, np.int16), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def dtype(self):
        return self.flat.dtype

    @property
    def lengths(self) -> np.ndarray:
        """int64 [N]: each clip's length in samples."""
        return np.diff(self.offsets)

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            i = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= i < len(self):
                raise IndexError(f"clip {key} out of range for {len(self)} clips")
            return self.flat[self.offsets[i] : self.offsets[i + 1]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                o = self.offsets[start : stop + 1]
                return Waveforms(self.flat[o[0] : o[-1]], o - o[0])
            key = np.arange(start, stop, step)
        idx = self._index(key)
        lens = self.lengths[idx]
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        flat = np.empty(int(offsets[-1]), dtype=self.flat.dtype)
        for row, i in enumerate(idx):
            flat[offsets[row] : offsets[row + 1]] = self.flat[self.offsets[i] : self.offsets[i + 1]]
        return Waveforms(flat, offsets)

    def _index(self, key) -> np.ndarray:
        idx = np.asarray(key.cpu() if hasattr(key, "cpu") else key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} clips")
            return np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"clip index out of range for {len(self)} clips")
        return idx

    def batch(self, idx=None):
        """-> (float32 tensor [B, Tmax] in [-1, 1], zero-padded after each clip; int64 tensor lengths [B])
        of the clips at ``idx`` (all when None)."""
        import torch

        idx = np.arange(len(self)) if idx is None else self._index(idx)
        lens = self.lengths[idx]
        out = np.zeros((len(idx), int(lens.max(initial=0))), dtype=np.float32)
        for row, i in enumerate(idx):
            out[row, : lens[row]] = self.flat[self.offsets[i] : self.offsets[i + 1]]
        out *= 1.0 / 32768.0
        return torch.from_numpy(out), torch.from_numpy(lens.astype(np.int64))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Waveforms are ragged; use x.batch(idx) for a padded array, or x[i] for one clip")

    def __repr__(self) -> str:
        return f"Waveforms({len(self)} clips, {len(self.flat)} samples, {self.flat.dtype})"


# ----------------------------------------------------------------------------- decoding


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Float samples [T] at ``rate`` -> float32 at ``target`` (polyphase, Kaiser-windowed low-pass)."""
    x = np.asarray(x, dtype=np.float32)
    if rate == target or len(x) == 0:
        return x
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 PCM (rounded, clipped)."""
    return np.clip(np.round(np.asarray(x, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)


def decode_audio(source, target: int = SAMPLE_RATE) -> np.ndarray:
    """A file path or bytes (anything soundfile reads) -> mono int16 at ``target`` Hz. Raises on bad data."""
    import io

    import soundfile as sf

    data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32",
                         always_2d=True)  # fmt: skip
    if data.shape[0] == 0:
        raise ValueError("no samples")
    return to_int16(resample(data.mean(axis=1), rate, target))


EMPTY = "the file is empty, 0 bytes"


def _decode_file(path: Path) -> tuple[np.ndarray | None, str]:
    if path.stat().st_size == 0:
        return None, EMPTY
    try:
        return decode_audio(str(path)), ""
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types on damaged or foreign data
        return None, " ".join(str(exc).split()) or type(exc).__name__


class ClipWriter:
    """Streams int16 clips into ``folder/audio.npy`` and ``folder/offsets.npy`` without holding them all in
    memory: clips go to a raw file first; ``close(order)`` lays them out as a .npy (in ``order`` if given)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.raw_path = self.folder / f"audio.raw.tmp{os.getpid()}"
        self.raw = open(self.raw_path, "wb")  # noqa: SIM115 - closed in close()
        self.lengths: list[int] = []

    def add(self, clip: np.ndarray) -> None:
        self.raw.write(np.ascontiguousarray(clip, dtype="<i2").tobytes())
        self.lengths.append(len(clip))

    def close(self, order: np.ndarray | None = None) -> np.ndarray:
        """-> offsets [N + 1] of the clips as stored (in ``order``)."""
        self.raw.close()
        lens = np.asarray(self.lengths, dtype=np.int64)
        src_off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        order = np.arange(len(lens)) if order is None else np.asarray(order, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens[order])]).astype(np.int64)
        total = int(offsets[-1])
        tmp = self.folder / f"audio.npy.tmp{os.getpid()}"
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(total,))
        if total:
            src = np.memmap(self.raw_path, dtype="<i2", mode="r", shape=(int(src_off[-1]),))
            if np.array_equal(order, np.arange(len(lens))):
                for a in range(0, total, 1 << 24):
                    dst[a : a + (1 << 24)] = src[a : a + (1 << 24)]
            else:
                for row, i in enumerate(order):
                    dst[offsets[row] : offsets[row + 1]] = src[src_off[i] : src_off[i + 1]]
            del src
        dst.flush()
        del dst
        os.replace(tmp, self.folder / "audio.npy")
        self.raw_path.unlink()
        save_array(self.folder / "offsets.npy", offsets)
        return offsets


def load_clips(folder: Path) -> Waveforms:
    """The memory-mapped Waveforms a ``ClipWriter`` left in ``folder``."""
    return Waveforms(load_array(folder / "audio.npy"), np.array(load_array(folder / "offsets.npy")))


# ----------------------------------------------------------------------------- transcripts


def normalize_transcript(text: str) -> str | None:
    """Lower-case ``text`` in the CTC alphabet (see the module docstring), or None if it cannot be."""
    t = _UNSPOKEN.sub(" ", text.lower().replace("\u2019", "'").replace("\u2018", "'"))
    t = " ".join(_QUOTE.sub(" ", t).split())
    return t if t and _IN_ALPHABET.fullmatch(t) else None


def transcript_ids(text: str) -> np.ndarray:
    """A normalized transcript -> int64 character ids (1 + its index in CHARS)."""
    return np.array([_CHAR_ID[c] for c in text], dtype=np.int64)


def transcript_text(ids) -> str:
    """Character ids -> text (the blank, id 0, is dropped)."""
    return "".join(CHARS[i - 1] for i in np.asarray(ids).tolist() if i > 0)


def transcript_labels(texts: list[str]) -> SequenceLabels:
    return SequenceLabels.from_lists([transcript_ids(t) for t in texts])


# ----------------------------------------------------------------------------- a user's audio folder


def is_audio_path(path) -> bool:
    """An audio file, or a folder holding audio files (WAV/FLAC/OGG/...) and no images."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.name.lower().endswith(AUDIO_SUFFIXES)
    if not p.is_dir():
        return False
    names = [f.lower() for f in list_files(p)]
    return any(n.endswith(AUDIO_SUFFIXES) for n in names) and not any(n.endswith(IMAGE_SUFFIXES) for n in names)


class _Skipped:
    """Bad input, counted by kind; with ``strict`` the first one is a one-line UserError."""

    # each kind: (singular[, plural])
    WHAT = {"audio": ("unreadable audio file",), "empty": ("empty file",),
            "transcript": ("transcript outside the alphabet", "transcripts outside the alphabet"),
            "metadata": ("metadata.csv line naming no audio file",),
            "short": (f"clip shorter than {MIN_CLIP_MS} ms", f"clips shorter than {MIN_CLIP_MS} ms")}  # fmt: skip

    def __init__(self, strict: bool):
        self.strict, self.counts, self.examples = strict, {}, {}

    def add(self, kind: str, where: str, error: str) -> None:
        if self.strict:
            raise UserError(error + " (or drop --strict to skip it)")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.examples.setdefault(kind, where)


def skipped_line(name: str, counts: dict, examples: dict, total: int) -> str | None:
    """One line counting what was skipped (and the transcripts dropped from clips that were kept), or None."""
    if not counts:
        return None
    said = lambda k, n: f"{count(n, *_Skipped.WHAT[k])} (e.g. {examples[k]})"  # noqa: E731
    skipped = {k: n for k, n in counts.items() if k != "transcript"}
    parts = [f"skipped {sum(skipped.values())} of {total} audio inputs: " + "; ".join(
        said(k, n) for k, n in skipped.items())] if skipped else []  # fmt: skip
    if n := counts.get("transcript"):
        parts.append(f"dropped {said('transcript', n)}, {'its clip' if n == 1 else 'their clips'} kept without one")
    return f"{name}: " + "; ".join(parts)


def _metadata_lines(root: Path, csv_rel: str, audio: set[str], skipped: _Skipped) -> dict[str, tuple[str, str]]:
    """``file|text`` lines of one metadata.csv -> {audio rel: (text, where)}; lines naming no file are skipped."""
    base = Path(csv_rel).parent
    out = {}
    try:
        lines = (root / csv_rel).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {root / csv_rel} ({e}); it must be UTF-8 lines of file|text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("|")
        name, where = fields[0].strip(), f"{csv_rel} line {n}"
        stems = [base / name, base / "wavs" / name]
        found = next((c.as_posix() for s in stems for c in [s, *(s.with_name(s.name + x) for x in AUDIO_SUFFIXES)]
                      if c.as_posix() in audio), None)  # fmt: skip
        if found is None or len(fields) < 2:
            why = "has no text after '|'" if found else f"names {name!r}, which is not an audio file there"
            skipped.add("metadata", where, f"{root / csv_rel} line {n} {why}; fix or remove the line")
            continue
        out[found] = (fields[-1], where)
    return out


def _transcripts(root: Path, files: list[str], audio: list[str], skipped: _Skipped) -> dict[str, str | None]:
    """Each audio file's normalized transcript (None: it has none, or one outside the alphabet, counted)."""
    present = set(files)
    listed: dict[str, tuple[str, str]] = {}
    for rel in files:
        if Path(rel).name.lower() == "metadata.csv":
            listed.update(_metadata_lines(root, rel, set(audio), skipped))
    out = {}
    for rel in audio:
        txt = Path(rel).with_suffix(".txt").as_posix()
        if txt in present:
            try:
                raw, where = (root / txt).read_text(encoding="utf-8"), txt
            except (OSError, UnicodeDecodeError):
                raw, where = "\ufffd", txt  # not UTF-8: outside the alphabet
        elif rel in listed:
            raw, where = listed[rel]
        else:
            out[rel] = None
            continue
        text = normalize_transcript(raw)
        if text is None:
            shown = " ".join(raw.split())[:60]
            skipped.add("transcript", where, f"{root / where}: the transcript {shown!r} of {rel} has characters "
                        "outside the alphabet (a-z, space, apostrophe); spell out digits and symbols")  # fmt: skip
        out[rel] = text  # None: the clip still serves pretraining and speaker labels, not speech-to-text
    return out


def _speakers(rels: list[str]) -> tuple[list[str], list[str] | None]:
    """(speaker of each file, 'train'/'test' of each file or None): see the module docstring."""
    parts = [r.split("/") for r in rels]
    if parts and all(len(p) >= 3 and p[0] in ("train", "test") for p in parts) and {p[0] for p in parts} == {
            "train", "test"}:  # fmt: skip
        return [p[1] for p in parts], [p[0] for p in parts]
    return [p[0] if len(p) >= 2 else "" for p in parts], None


def _order(speakers: list[str], split: list[str] | None, texts: list, seed: int, fraction: float):
    """(stored order: train then test, number of train clips, labelled by speaker)."""
    n = len(speakers)
    labelled = all(speakers) and len(set(speakers)) >= 2
    if split is not None:
        test = np.array([s == "test" for s in split])
    elif labelled:
        test = stratified_holdout(np.unique(speakers, return_inverse=True)[1], fraction, seed)
    else:  # unlabelled: a seeded holdout of the transcribed clips, for transcript labels
        test = np.zeros(n, dtype=bool)
        has = np.flatnonzero([t is not None for t in texts])
        if len(has) >= 2 and fraction > 0:
            k = min(max(1, round(fraction * len(has))), len(has) - 1)
            test[np.random.default_rng(seed).permutation(has)[:k]] = True
    order = np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)])
    return order, int((~test).sum()), bool(labelled)


def _cache_key(root: Path, files: list[str], strict: bool, seed: int, fraction: float) -> str:
    entries = [[rel, (st := (root / rel).stat()).st_size, st.st_mtime_ns] for rel in files]
    payload = [CACHE_VERSION, SAMPLE_RATE, str(root), entries, strict, seed, fraction]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


def _decode_folder(root: Path, name: str, files: list[str], folder: Path, strict: bool, seed: int,
                   fraction: float) -> None:  # fmt: skip
    """Decode every audio file (2 threads) into a temporary folder, then rename it to ``folder``."""

    audio = [f for f in files if f.lower().endswith(AUDIO_SUFFIXES)]
    skipped = _Skipped(strict)
    texts = _transcripts(root, files, audio, skipped)
    with building(folder) as tmp:
        writer, kept = ClipWriter(tmp), []
        todo = [rel for rel in audio if rel in texts]
        pool = ThreadPoolExecutor(max_workers=2)
        try:
            for rel, (clip, error) in zip(todo, pool.map(lambda r: _decode_file(root / r), todo)):
                if clip is None:
                    skipped.add("empty" if error == EMPTY else "audio", rel, f"{os.path.join(name, rel)} is not a "
                                f"readable audio file ({error}); remove or re-encode it")  # fmt: skip
                    continue
                if len(clip) < MIN_CLIP:
                    skipped.add("short", rel, f"{os.path.join(name, rel)} lasts {1000 * len(clip) / SAMPLE_RATE:.0f} "
                                f"ms, shorter than the {MIN_CLIP_MS} ms the speech encoder's first "
                                "token reads; remove it or join it to a longer clip")  # fmt: skip
                    continue
                writer.add(clip)
                kept.append(rel)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if not kept:
            writer.close()
            raise UserError(_no_audio(name, len(audio)))
        speakers, split = _speakers(kept)
        order, n_train, labelled = _order(speakers, split, [texts[r] for r in kept], seed, fraction)
        writer.close(order)
        meta = {"version": CACHE_VERSION, "files": [kept[i] for i in order], "speakers": [speakers[i] for i in order],
                "transcripts": [texts[kept[i]] for i in order], "n_train": n_train, "labelled": labelled,
                "explicit_split": split is not None, "skipped": skipped.counts, "examples": skipped.examples,
                "total": len(audio) + skipped.counts.get("metadata", 0)}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta))


def _no_audio(name: str, total: int) -> str:
    found = f" readable ({total} unreadable)" if total else ""
    return (f"{name} holds no{found} audio files; add WAV/FLAC/OGG files to it (searched recursively, hidden "
            "files ignored) or pass another folder")  # fmt: skip


def _part(clips: Waveforms, idx: np.ndarray, y, groups: dict[str, np.ndarray]) -> Split:
    """The clips at ``idx``: a memory-mapped view when they are contiguous, else gathered."""
    contiguous = len(idx) > 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
    x = clips[int(idx[0]) : int(idx[0]) + len(idx)] if contiguous else clips[idx]
    return Split(x, y, x.lengths, {k: v[idx] for k, v in groups.items()})


def audio_dataset(name: str, meta: dict, clips: Waveforms, labels: str = "speaker",
                  groups: dict[str, np.ndarray] | None = None) -> Dataset:  # fmt: skip
    """A Dataset from a decoded folder (its ``meta.json`` and clips): speaker labels or transcripts; ``groups``
    (one value per clip, in stored order: a groups.csv's) are added to the sub-folder ``speaker`` group."""
    n, n_train = len(clips), meta["n_train"]
    speakers = np.array(meta["speakers"], dtype=str)
    groups = {"speaker": speakers, **(groups or {})}
    train_idx, test_idx = np.arange(n_train), np.arange(n_train, n)
    if labels == "transcript":
        texts = meta["transcripts"]
        train_idx = np.array([i for i in train_idx if texts[i] is not None], dtype=np.int64)
        test_idx = np.array([i for i in test_idx if texts[i] is not None], dtype=np.int64)
        if len(train_idx) == 0:
            raise UserError(f"{name} has no transcribed training clips; put NAME.txt beside each audio file, or a "
                            "metadata.csv of file|text lines")  # fmt: skip
        train = _part(clips, train_idx, transcript_labels([texts[i] for i in train_idx]), groups)
        test = _part(clips, test_idx, transcript_labels([texts[i] for i in test_idx]), groups) if len(
            test_idx) else None  # fmt: skip
        return Dataset(name, AudioSpec(SAMPLE_RATE), train, test, list(CTC_CLASSES))
    if labels != "speaker":
        raise UserError(f"labels={labels!r}: audio folders are labelled by 'speaker' or 'transcript'")
    if not meta["labelled"]:
        if not meta["explicit_split"]:
            train_idx, test_idx = np.arange(n), np.arange(0)
        train = _part(clips, train_idx, None, groups)
        test = _part(clips, test_idx, None, groups) if len(test_idx) else None
        return Dataset(name, AudioSpec(SAMPLE_RATE), train, test, [])
    classes, y = np.unique(speakers, return_inverse=True)
    y = y.astype(np.int64)
    train = _part(clips, train_idx, y[train_idx], groups)
    test = _part(clips, test_idx, y[test_idx], groups) if len(test_idx) else None
    return Dataset(name, AudioSpec(SAMPLE_RATE), train, test, [str(c) for c in classes])


def load_audio_folder(path, strict: bool = False, labels: str = "speaker", seed: int = 0,
                      test_fraction: float = TEST_FRACTION, log: Log = print) -> Dataset:  # fmt: skip
    """Decode a folder of audio files once (see the module docstring) and load it memory-mapped.

    ``labels``: "speaker" (y = speaker ids when the folder has two or more speaker sub-folders, else
    unlabelled) or "transcript" (the transcribed clips, y = their transcripts as ``SequenceLabels``)."""
    name = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"audio folder {name} does not exist; check the path")
    if not root.is_dir():
        raise UserError(f"{name} is a file; pass a folder of audio files (one sub-folder per speaker for labels)")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    root = root.resolve()
    files = data_files(root)  # groups.csv is read at every load, not part of the decoded cache
    if not any(f.lower().endswith(AUDIO_SUFFIXES) for f in files):
        raise UserError(_no_audio(name, 0))
    folder = cache_dir() / "audio" / _cache_key(root, files, strict, seed, float(test_fraction))
    if not (folder / "meta.json").is_file():
        _decode_folder(root, name, files, folder, strict, seed, float(test_fraction))
    meta = json.loads((folder / "meta.json").read_text())
    line = skipped_line(name, meta["skipped"], meta["examples"], meta["total"])
    if line:
        log(line)
    audio = [f for f in files if f.lower().endswith(AUDIO_SUFFIXES)]
    unread = sorted(set(audio) - set(meta["files"]))  # skipped: unreadable or too short
    groups = folder_groups(root, meta["files"], unread, "audio")
    return audio_dataset(name, meta, load_clips(folder), labels, groups)


__all__ = ["AUDIO_SUFFIXES", "CHARS", "CTC_CLASSES", "SAMPLE_RATE", "ClipWriter", "Waveforms", "audio_dataset",
           "decode_audio", "is_audio_path", "load_audio_folder", "load_clips", "normalize_transcript", "resample",
           "to_int16", "transcript_ids", "transcript_labels", "transcript_text"]  # fmt: skip
