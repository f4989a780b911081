"""Evaluation protocols on frozen features: weighted kNN and a linear probe; label subsets."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.registry import EVALUATIONS


def balanced_subset(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Seeded, class-balanced indices: ``round(fraction * n_c)`` (at least 1) of each class c.

    The per-class order is fixed by the seed, so smaller fractions are subsets of larger ones.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        picked.append(idx[: max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(picked))


@EVALUATIONS.register("knn")
@torch.no_grad()
def knn_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, num_classes: int,
                 k: int = 200, temperature: float = 0.07, chunk: int = 1024, **_) -> float:  # fmt: skip
    """Weighted kNN (Wu et al. 2018, InstDisc): cosine similarity, the k nearest vote with weight exp(s / T)."""
    train_f, test_f = F.normalize(train_f.float(), dim=1), F.normalize(test_f.float(), dim=1)
    k = min(k, train_f.shape[0])
    correct = 0
    for i in range(0, test_f.shape[0], chunk):
        sim = test_f[i : i + chunk] @ train_f.T  # [b, N]
        top_s, top_i = sim.topk(k, dim=1)  # [b, k]
        weights = (top_s / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, train_y[top_i], weights)  # [b, C]
        correct += (votes.argmax(1) == test_y[i : i + chunk]).sum().item()
    return correct / test_f.shape[0]


def _fit_logreg(x: Tensor, y: Tensor, num_classes: int, wd: float, iters: int) -> Tensor:
    """Multinomial logistic regression, full-batch L-BFGS; returns W [D+1, C] (bias last)."""
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    w = torch.zeros(xb.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iters, history_size=10, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + wd * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _predict(w: Tensor, x: Tensor) -> Tensor:
    return (torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1) @ w).argmax(1)


@EVALUATIONS.register("linear")
def linear_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, num_classes: int,
                    weight_decays=(1e-5, 1e-4, 1e-3, 1e-2), iters: int = 100, seed: int = 0, **_) -> float:  # fmt: skip
    """A linear classifier on frozen, standardized features.

    The L2 strength is chosen on a seeded 20% hold-out of the labelled subset, then the
    classifier is refit on the whole subset and scored on the test split.
    """
    with torch.enable_grad():
        train_f, test_f = train_f.float().cpu(), test_f.float().cpu()
        train_y, test_y = train_y.cpu(), test_y.cpu()
        mu, sd = train_f.mean(0), train_f.std(0).clamp_min(1e-6) if len(train_f) > 1 else 1.0
        train_f, test_f = (train_f - mu) / sd, (test_f - mu) / sd
        best = weight_decays[0]
        if len(weight_decays) > 1 and train_f.shape[0] >= 20:
            perm = torch.randperm(train_f.shape[0], generator=torch.Generator().manual_seed(seed))
            cut = train_f.shape[0] // 5
            val, fit = perm[:cut], perm[cut:]
            scores = []
            for wd in weight_decays:
                w = _fit_logreg(train_f[fit], train_y[fit], num_classes, wd, iters)
                scores.append((_predict(w, train_f[val]) == train_y[val]).float().mean().item())
            best = weight_decays[int(np.argmax(scores))]
        w = _fit_logreg(train_f, train_y, num_classes, best, iters)
        return (_predict(w, test_f) == test_y).float().mean().item()
