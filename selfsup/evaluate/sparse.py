"""Raw-input baselines for text and sequences, the counterparts of raw pixels.

- text: TF-IDF of word uni- and bigrams (``tfidf_features``);
- sequences: the k-mer spectrum, counts of every k-mer for k = 1..4 (``kmer_features``), and, where every
  sequence has the same length, one residue-per-position one-hot code (``onehot_features``, dense).

``tfidf_features`` fits the vocabulary and IDF on the labelled pool's texts (no labels used) and gives
L2-normalized sparse rows, so a dot product is a cosine similarity. The probes mirror the dense ones
(``selfsup.evaluate.protocols``): weighted kNN on cosine similarity, and logistic regression whose
inverse L2 strength ``C`` is chosen on validation (scikit-learn's ``LogisticRegression``, the usual
TF-IDF + LR baseline).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from selfsup.evaluate.protocols import knn_vote

C_GRID = (0.1, 1.0, 10.0, 100.0)  # TF-IDF + LR's inverse L2 strengths, chosen on validation


def is_sparse(x) -> bool:
    return hasattr(x, "tocsr") and not isinstance(x, (np.ndarray, Tensor))


def tfidf_features(texts: dict[str, np.ndarray], fit_on: str = "pool") -> dict:
    """{split: texts} -> {split: csr [N, V] float32}: word uni+bigrams (min_df 2), sublinear tf, L2 rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32)
    vec.fit([str(t) for t in texts[fit_on]])
    return {k: vec.transform([str(t) for t in v]).tocsr() for k, v in texts.items()}


KMER_RANGE = (1, 4)  # the k-mer spectrum's k


def kmer_features(seqs: dict[str, np.ndarray], fit_on: str = "pool") -> dict:
    """{split: sequences} -> {split: csr [N, V] float32}: counts of every k-mer (k = 1..4) seen in the ``fit_on``
    split, L2-normalized rows (so kNN reads cosine similarity and long and short sequences compare)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char", ngram_range=KMER_RANGE, lowercase=False, use_idf=False, dtype=np.float32)
    vec.fit([str(t) for t in seqs[fit_on]])
    return {k: vec.transform([str(t) for t in v]).tocsr() for k, v in seqs.items()}


def onehot_features(seqs: dict[str, np.ndarray]) -> dict[str, Tensor] | None:
    """{split: sequences} -> {split: float32 [N, L * A]}: each position's residue one-hot (A: the residues seen
    anywhere), or None when the sequences differ in length (the code needs aligned positions)."""
    lengths = {len(str(t)) for v in seqs.values() for t in v}
    if len(lengths) != 1:
        return None
    letters = sorted({c for v in seqs.values() for t in v for c in str(t)})
    table = np.full(256, -1, dtype=np.int64)
    table[[ord(c) for c in letters]] = np.arange(len(letters))
    out = {}
    for k, v in seqs.items():
        codes = table[np.frombuffer("".join(str(t) for t in v).encode("latin-1"), dtype=np.uint8)].reshape(len(v), -1)
        x = np.zeros((len(v), codes.shape[1], len(letters)), dtype=np.float32)
        np.put_along_axis(x, codes[..., None], 1.0, axis=2)
        out[k] = torch.from_numpy(x.reshape(len(v), -1))
    return out


def sparse_baseline(kind: str):
    """The sparse raw-input featurizer of a raw data kind ("text" or "sequence")."""
    return kmer_features if kind == "sequence" else tfidf_features


def sparse_knn_predict(train_f, train_y: Tensor, query_f, num_classes: int, k: int = 200,
                       temperature: float = 0.07, chunk: int = 1024) -> Tensor:  # fmt: skip
    """``knn_predict`` on L2-normalized sparse rows: cosine similarity by sparse products."""
    k = min(k, train_f.shape[0])
    train_t = train_f.T.tocsc()
    preds = []
    for i in range(0, query_f.shape[0], chunk):
        sim = torch.from_numpy(np.asarray((query_f[i : i + chunk] @ train_t).todense(), dtype=np.float32))
        preds.append(knn_vote(sim, train_y, num_classes, k, temperature))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def sparse_linear_probe(train_f, train_y: Tensor, eval_sets: dict, num_classes: int, grid=C_GRID,
                        select_on: str = "val", score=None, predictions: dict | None = None
                        ) -> tuple[dict[str, float], float]:  # fmt: skip
    """Logistic regression on sparse features, ``C`` chosen on ``eval_sets[select_on]`` (ties: the stronger L2).
    -> ({split: accuracy}, chosen C). ``score`` and ``predictions`` as for ``protocols.linear_probe``."""
    from sklearn.linear_model import LogisticRegression

    score = score or (lambda pred, yy: float((pred == yy).float().mean()))
    y = train_y.numpy()
    if len(np.unique(y)) < 2:  # a one-class subset: every prediction is that class
        preds = {s: torch.full((len(yy),), int(y[0])) for s, (_, yy) in eval_sets.items()}
        best_c = float(grid[0])
    else:
        fits = []
        for c in sorted(grid):
            model = LogisticRegression(C=c, max_iter=1000, tol=1e-4).fit(train_f, y)
            fits.append((c, {s: torch.from_numpy(model.predict(f)) for s, (f, _) in eval_sets.items()}))
        acc = lambda p, s: score(p[s], eval_sets[s][1])  # noqa: E731
        best_c, preds = max(fits, key=lambda f: acc(f[1], select_on)) if select_on in eval_sets else fits[0]
    if predictions is not None:
        predictions.update(preds)
    return {s: score(preds[s], yy) for s, (_, yy) in eval_sets.items()}, best_c


__all__ = [
    "C_GRID",
    "KMER_RANGE",
    "is_sparse",
    "kmer_features",
    "onehot_features",
    "sparse_baseline",
    "sparse_knn_predict",
    "sparse_linear_probe",
    "tfidf_features",
]
