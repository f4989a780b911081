"""Evaluation protocols against reference computations written here."""

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.evaluate import balanced_subset, format_table, knn_accuracy, linear_accuracy


def reference_knn(train_f, train_y, test_f, k, t, c):
    preds = []
    for q in test_f:
        sims = [(float(F.cosine_similarity(q, x, dim=0)), int(y)) for x, y in zip(train_f, train_y)]
        sims.sort(key=lambda s: -s[0])
        votes = np.zeros(c)
        for s, y in sims[:k]:
            votes[y] += np.exp(s / t)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


def test_knn_matches_reference():
    g = torch.Generator().manual_seed(0)
    train_f, test_f = torch.randn(60, 5, generator=g), torch.randn(25, 5, generator=g)
    train_y = torch.randint(0, 3, (60,), generator=g)
    for k, t in ((1, 0.07), (7, 0.1), (60, 0.5)):
        ref = reference_knn(train_f, train_y, test_f, k, t, 3)
        test_y = torch.from_numpy(ref)  # the reference predictions as labels: accuracy must be 1
        assert knn_accuracy(train_f, train_y, test_f, test_y, 3, k=k, temperature=t, chunk=4) == 1.0
        flipped = (test_y + 1) % 3
        assert knn_accuracy(train_f, train_y, test_f, flipped, 3, k=k, temperature=t) == 0.0


def test_linear_probe_separates_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 20, generator=g) * 3
    y = torch.randint(0, 4, (400,), generator=g)
    x = centers[y] + torch.randn(400, 20, generator=g)
    assert linear_accuracy(x[:300], y[:300], x[300:], y[300:], 4) > 0.95
    noise = torch.randn(400, 20, generator=g)
    assert linear_accuracy(noise[:300], y[:300], noise[300:], y[300:], 4) < 0.45


def test_balanced_subsets_are_seeded_nested_and_balanced():
    y = np.repeat(np.arange(5), [100, 200, 50, 10, 3])
    one = balanced_subset(y, 0.01, seed=0)
    ten = balanced_subset(y, 0.1, seed=0)
    full = balanced_subset(y, 1.0, seed=0)
    assert np.bincount(y[one], minlength=5).tolist() == [1, 2, 1, 1, 1]  # at least one per class
    assert np.bincount(y[ten], minlength=5).tolist() == [10, 20, 5, 1, 1]  # round(0.1 * 3) = 0 -> 1
    assert set(one) <= set(ten) <= set(full) and len(full) == len(y)
    assert not np.array_equal(balanced_subset(y, 0.1, seed=1), ten)
    assert np.array_equal(balanced_subset(y, 0.1, seed=0), ten)


def test_table_lists_every_encoder():
    rows = [{"protocol": "knn", "labels": 0.01, "encoder": e, "accuracy": a}
            for e, a in (("pretrained", 0.8), ("random_init", 0.5), ("raw", 0.6))]
    table = format_table(rows)
    assert "80.0%" in table and "random_init" in table and "1%" in table
