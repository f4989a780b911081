"""Frozen-feature protocols: weighted kNN and a linear probe whose L2 strength is chosen on validation.

Both take features ``[N, D]`` and class ids; nothing here knows what a sample is. The registered
protocol entries (``PROTOCOLS``) say how a protocol uses the encoder: ``frozen`` ones (knn, linear)
read frozen features once (cosine: verify's trial scoring), the others (finetune) train a copy of the
encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.data.splits import balanced_subset  # noqa: F401  (re-exported)
from selfsup.registry import PROTOCOLS

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)  # the linear probe's L2 grid, chosen on validation


@dataclass(frozen=True)
class Protocol:
    name: str
    frozen: bool  # True: reads frozen pooled features; False: trains a copy of the encoder
    description: str


for _p in (Protocol("knn", True, "weighted kNN on frozen features (k=200, cosine, T=0.07)"),
           Protocol("linear", True, "a linear head on frozen standardized features, its settings chosen on validation "
                                    "(classify: logistic regression; ctc: a linear CTC head on the tokens)"),
           Protocol("bilstm", True, "ctc: SUPERB's 2-layer BiLSTM CTC head on the frozen standardized tokens, its "
                                    "epochs chosen on validation"),
           Protocol("finetune", False, "the whole encoder + a task head, AdamW, warm-up + cosine"),
           Protocol("cosine", True, "cosine similarity of frozen pooled features over seeded trial pairs (verify)")
           ):  # fmt: skip
    PROTOCOLS.register(_p.name)(_p)


@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, query_f: Tensor, num_classes: int, k: int = 200,
                temperature: float = 0.07, chunk: int = 1024) -> Tensor:  # fmt: skip
    """Weighted kNN (Wu et al. 2018, InstDisc): cosine similarity, the k nearest vote with weight exp(s / T)."""
    train_f, query_f = F.normalize(train_f.float(), dim=1), F.normalize(query_f.float(), dim=1)
    k = min(k, train_f.shape[0])
    preds = []
    for i in range(0, query_f.shape[0], chunk):
        preds.append(knn_vote(query_f[i : i + chunk] @ train_f.T, train_y, num_classes, k, temperature))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def knn_vote(sim: Tensor, train_y: Tensor, num_classes: int, k: int, temperature: float) -> Tensor:
    """Similarities [b, N] to the training samples -> predicted classes [b]: the k nearest vote with weight
    exp(s / T)."""
    top_s, top_i = sim.topk(k, dim=1)  # [b, k]
    weights = (top_s / temperature).exp()
    votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, train_y.to(sim.device)[top_i], weights)  # [b, C]
    return votes.argmax(1)


def knn_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, num_classes: int,
                 k: int = 200, temperature: float = 0.07, chunk: int = 1024, **_) -> float:  # fmt: skip
    pred = knn_predict(train_f, train_y, test_f, num_classes, k, temperature, chunk)
    return (pred == test_y).float().mean().item()


def logreg_loss_grad(xb: Tensor, w: Tensor, y: Tensor, wd: float) -> tuple[Tensor, Tensor]:
    """Loss and gradient of L2-regularized multinomial logistic regression; xb [N, D+1] (ones last), w [D+1, C].

    The rows are walked in cache-sized chunks, each chunk's logits, loss and gradient ``(softmax - onehot)^T X``
    computed while it is still in cache: the two skinny products (N x D by D x C and back) are bound by memory
    traffic on a CPU, and one pass over X instead of two made an evaluation about twice as fast on the 2-core
    VM (autograd's ``X^T G`` reads X column-wise and was slower still)."""
    n, d = xb.shape
    chunk = max(1024, min(8192, 2**21 // (4 * d)))  # rows per pass: about 2 MiB of features
    wt = w.T.contiguous()  # [C, D+1]
    grad_t = torch.zeros(w.shape[1], d, dtype=xb.dtype)
    nll = torch.zeros((), dtype=torch.float64)
    for i in range(0, n, chunk):
        xc, yc = xb[i : i + chunk], y[i : i + chunk]
        logp = F.linear(xc, wt).log_softmax(1)  # [c, C]
        nll += -logp.gather(1, yc[:, None]).sum().double()
        p = logp.exp()
        p[torch.arange(len(yc)), yc] -= 1
        grad_t.addmm_(p.T, xc)
    grad = grad_t.T / n
    grad[:-1] += 2 * wd * w[:-1]
    return (nll / n).to(xb.dtype) + wd * (w[:-1] ** 2).sum(), grad.contiguous()


def _fit_logreg(x: Tensor, y: Tensor, num_classes: int, wd: float, iters: int, init: Tensor | None = None) -> Tensor:
    """Multinomial logistic regression, full-batch L-BFGS from ``init`` (zeros); returns W [D+1, C] (bias last)."""
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    w = torch.zeros(xb.shape[1], num_classes, dtype=x.dtype) if init is None else init.clone()
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iters, history_size=10, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")  # fmt: skip

    @torch.no_grad()
    def closure():
        loss, w.grad = logreg_loss_grad(xb, w, y, wd)
        return loss

    opt.step(closure)
    return w.detach()


def _predict(w: Tensor, x: Tensor) -> Tensor:
    return (torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1) @ w).argmax(1)


def _standardizer(train_f: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std [D] of the training features (std 1 for a single sample, at least 1e-6)."""
    mu = train_f.mean(0)
    return mu, (train_f.std(0).clamp_min(1e-6) if len(train_f) > 1 else torch.ones_like(mu))


def linear_head(train_f: Tensor, train_y: Tensor, num_classes: int, wd: float, iters: int = 100
                ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The linear probe's classifier at one L2 strength as a plain linear layer on the raw features: the
    standardization folded into the weights. -> (weight [C, D], bias [C])."""
    train_f = train_f.float().cpu()
    mu, sd = _standardizer(train_f)
    with torch.enable_grad():
        w = _fit_logreg((train_f - mu) / sd, train_y.cpu().long(), num_classes, wd, iters)  # [D + 1, C], bias last
    scaled = w[:-1] / sd[:, None]  # [D, C]
    return scaled.T.contiguous(), w[-1] - mu @ scaled


def accuracy(pred: Tensor, y: Tensor) -> float:
    return (pred == y).float().mean().item()


def linear_probe(train_f: Tensor, train_y: Tensor, eval_sets: dict[str, tuple[Tensor, Tensor]], num_classes: int,
                 weight_decays=WEIGHT_DECAYS, iters: int = 100, select_on: str = "val", score=accuracy,
                 predictions: dict | None = None) -> tuple[dict[str, float], float]:  # fmt: skip
    """A linear classifier on frozen features standardized with the training subset's statistics.

    One classifier per L2 strength is fit on the training subset, strongest first, each L-BFGS run
    starting from the previous solution (a regularization path: the later fits start near their optimum);
    the one with the best accuracy on ``eval_sets[select_on]`` (the validation split) is kept and scored on
    every eval set; ties go to the stronger L2. Returns
    ({split: accuracy}, the chosen L2 strength). Without a ``select_on`` set the first strength is used.
    ``score(pred, y)`` replaces accuracy (for the choice and the result; e.g. balanced accuracy); ``predictions``, a
    dict, receives each eval set's predicted classes under the chosen strength.
    """
    with torch.enable_grad():
        train_f, train_y = train_f.float().cpu(), train_y.cpu()
        mu, sd = _standardizer(train_f)
        norm = lambda f: (f.float().cpu() - mu) / sd  # noqa: E731
        train_f = norm(train_f)
        sets = {k: (norm(f), y.cpu()) for k, (f, y) in eval_sets.items()}
        acc = lambda w, s: score(_predict(w, sets[s][0]), sets[s][1])  # noqa: E731
        candidates = sorted(weight_decays, reverse=True) if select_on in sets else list(weight_decays)[:1]
        fits, w = [], None
        for wd in candidates:
            w = _fit_logreg(train_f, train_y, num_classes, wd, iters, init=w)
            fits.append((wd, w))
        best_wd, best_w = max(fits, key=lambda f: acc(f[1], select_on)) if len(fits) > 1 else fits[0]
        if predictions is not None:
            predictions.update({s: _predict(best_w, sets[s][0]) for s in sets})
        return {s: acc(best_w, s) for s in sets}, best_wd


def linear_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, num_classes: int,
                    val_f: Tensor | None = None, val_y: Tensor | None = None, **kw) -> float:  # fmt: skip
    """Test accuracy of ``linear_probe`` (L2 chosen on the validation features when given)."""
    sets = {"test": (test_f, test_y)}
    if val_f is not None:
        sets["val"] = (val_f, val_y)
    return linear_probe(train_f, train_y, sets, num_classes, **kw)[0]["test"]


__all__ = [
    "Protocol",
    "WEIGHT_DECAYS",
    "accuracy",
    "knn_accuracy",
    "knn_predict",
    "linear_accuracy",
    "linear_head",
    "linear_probe",
    "logreg_loss_grad",
]
