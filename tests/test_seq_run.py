"""Sequences end to end: the raw-input baselines (k-mer spectrum, one-hot residues) against brute force, and pretraining
on one corpus then scoring on another (``selfsup eval RUN --data D``, ``compare --pretrain-data``)."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch

import selfsup
from selfsup.cli import main as cli_main
from selfsup.evaluate.sparse import KMER_RANGE, kmer_features, onehot_features

TINY = {"dim": 32, "depth": 1, "heads": 1}


def _seqs(n: int, length: int | None, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return ["".join(r.choice("ACGT") for _ in range(length or r.randint(20, 90))) for _ in range(n)]


def test_kmer_spectrum_counts_every_kmer_of_every_k():
    seqs = {"pool": np.array(_seqs(30, None), dtype=object), "test": np.array(_seqs(5, None, 1), dtype=object)}
    feats = kmer_features(seqs)
    vocab = sorted({s[i : i + k] for s in seqs["pool"] for k in range(KMER_RANGE[0], KMER_RANGE[1] + 1)
                    for i in range(len(s) - k + 1)})  # fmt: skip
    assert feats["pool"].shape[1] == len(vocab)
    for split in ("pool", "test"):
        for row, s in zip(feats[split].toarray(), seqs[split]):
            counts = Counter(s[i : i + k] for k in range(1, 5) for i in range(len(s) - k + 1))
            want = np.array([counts.get(v, 0) for v in vocab], dtype=np.float64)
            np.testing.assert_allclose(row, want / np.linalg.norm(want), rtol=1e-5)


def test_onehot_codes_each_position_and_needs_one_length():
    seqs = {"pool": np.array(["ACGT", "TTGA"], dtype=object), "test": np.array(["ANGT"], dtype=object)}
    x = onehot_features(seqs)
    letters = "ACGNT"  # every residue seen, sorted
    want = torch.zeros(4, 5)
    for i, c in enumerate("ANGT"):
        want[i, letters.index(c)] = 1
    assert torch.equal(x["test"], want.flatten()[None])
    assert x["pool"].shape == (2, 20) and torch.equal(x["pool"].sum(1), torch.tensor([4.0, 4.0]))
    assert onehot_features({"pool": np.array(["ACG", "ACGT"], dtype=object)}) is None


def _write_corpus(tmp_path):
    fasta = tmp_path / "genome.fa"
    fasta.write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(_seqs(60, 200))))
    labelled = tmp_path / "sites.csv"
    r = random.Random(3)
    rows = []
    for s in _seqs(120, 40, 4):
        label = r.choice("ab")
        rows.append(f"{s[:18] + ('GT' if label == 'a' else 'CA') + s[20:]},{label}")  # a planted motif
    labelled.write_text("sequence,label\n" + "\n".join(rows) + "\n")
    return fasta, labelled


def test_pretrain_on_a_corpus_then_score_on_labelled_sequences(tmp_path):
    fasta, labelled = _write_corpus(tmp_path)
    run = tmp_path / "run"
    selfsup.pretrain(data=str(fasta), method="mlm", budget="3steps", batch_size=8, device="cpu", max_len=32,
                     encoder_params=TINY, out=run, log=lambda s: None)  # fmt: skip
    code = cli_main(["eval", str(run), "--data", str(labelled), "--protocol", "knn,linear", "--labels", "10%,100%"])
    assert code == 0
    rows = json.loads((run / "eval.json").read_text())
    encoders = {r["encoder"] for r in rows}
    assert encoders == {"pretrained", "random_init", "raw", "onehot"}  # k-mer counts and one-hot: equal lengths
    onehot = [r["value"] for r in rows if r["encoder"] == "onehot" and r["protocol"] == "linear"
              and r["labels"] == 1.0 and r["split"] == "val"]  # fmt: skip
    assert onehot and onehot[0] > 0.9  # the planted motif sits at one position: the one-hot probe finds it


def test_eval_data_of_another_kind_is_one_line(tmp_path, capsys):
    fasta, _ = _write_corpus(tmp_path)
    run = tmp_path / "run"
    selfsup.pretrain(data=str(fasta), method="mlm", budget="2steps", batch_size=8, device="cpu", max_len=32,
                     encoder_params=TINY, out=run, log=lambda s: None)  # fmt: skip
    text = tmp_path / "reviews.csv"
    text.write_text("text,label\n" + "\n".join(f"a fine film number {i},{i % 2}" for i in range(20)) + "\n")
    code = cli_main(["eval", str(run), "--data", str(text)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0] and "sequence" in err[0], err


@pytest.mark.parametrize("methods", ["mlm"])
def test_compare_pretrains_on_one_corpus_and_scores_on_another(tmp_path, methods):
    fasta, labelled = _write_corpus(tmp_path)
    out = tmp_path / "cmp"
    report = selfsup.compare(data=str(labelled), pretrain_data=str(fasta), methods=methods, budget="2steps",
                             out=out, labels="100%", batch_size=8, device="cpu",
                             sets=["encoder.dim=32", "encoder.depth=1", "encoder.heads=1", "data.max_len=32"],
                             log=lambda s: None)  # fmt: skip
    cfg = selfsup.runs.load_config(out / methods)
    assert cfg.data.name == str(fasta) and report["pretrain_data"] == str(fasta) and report["data"] == str(labelled)
    rows = json.loads((out / methods / "eval.json").read_text())
    assert {r["encoder"] for r in rows} >= {"pretrained", "raw", "onehot"}
    names = [e["name"] for e in report["leaderboard"]]
    assert "mlm" in names and "one-hot residues" in names
