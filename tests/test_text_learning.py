"""End to end on text: ``mlm`` pretrained briefly on a synthetic corpus beats the same encoder at random init.

The corpus is built so that pretraining has something to give: each class (say, praise and blame) is said
with 100 synonyms that share no letters' pattern (unrelated random words, so no word piece gives the class
away), mixed into neutral filler. With 1% of the labels a probe sees each synonym a few times at most; a
random-init encoder's features of unseen synonyms are unrelated, while masked-LM pretraining learns that the
words of a class stand in for one another (a masked synonym is predicted from the others in its document).
TF-IDF + LR, a bag of words, cannot generalise to an unseen synonym either.

Scored on the validation split evaluation carves from the labelled training documents (the settings below
were chosen on it); the test split is not looked at here.
"""

import json
import random

import selfsup

SYNONYMS, FILLERS = 100, 60
DOCS = 3600
MARGIN = 0.05  # accuracy the pretrained encoder must gain over random init at 1% of the labels: 5 points
SETTINGS = dict(method="mlm", budget="600steps", device="cpu", max_len=32, vocab_size=600, batch_size=32,
                encoder_params={"dim": 64, "depth": 1, "heads": 2}, seed=0)  # fmt: skip


def _words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def synonym_corpus(path, seed: int = 0) -> None:
    """A CSV (text, label) of DOCS documents: 12..24 words, each a synonym of the document's class with
    probability 0.3, else a filler word."""
    rng = random.Random(seed)
    taken: set[str] = set()
    classes = {"praise": _words(rng, SYNONYMS, taken), "blame": _words(rng, SYNONYMS, taken)}
    fillers = _words(rng, FILLERS, taken)
    lines = ["text,label"]
    for _ in range(DOCS):
        label = rng.choice(sorted(classes))
        words = [rng.choice(classes[label]) if rng.random() < 0.3 else rng.choice(fillers)
                 for _ in range(rng.randint(12, 24))]  # fmt: skip
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")


def test_mlm_beats_random_init_and_tfidf_at_one_percent_of_the_labels(tmp_path, cache_root):
    data = tmp_path / "reviews.csv"  # one labelled file: selfsup holds out a stratified 20% as its test split
    synonym_corpus(data)
    out = tmp_path / "run"
    selfsup.pretrain(data=str(data), out=out, log=lambda s: None, **SETTINGS)
    said: list[str] = []
    rows = selfsup.evaluate(out, protocol="knn,linear", labels="1%", log=said.append)
    acc = {(r["protocol"], r["encoder"]): r["value"] for r in rows if r["split"] == "val"}
    print({k: round(v, 4) for k, v in sorted(acc.items())})
    for proto in ("knn", "linear"):
        assert acc[(proto, "pretrained")] > acc[(proto, "random_init")] + MARGIN, acc
    assert acc[("linear", "pretrained")] > acc[("linear", "raw")], acc  # unseen synonyms defeat a bag of words
    assert json.loads((out / "eval.json").read_text()) == rows
    assert any("tf-idf" in line for line in said if line.startswith("this evaluation should take"))
