"""How long an evaluation should take, told before it starts (``estimate_phases``): feature extraction timed on a
batch of test samples, the frozen probes timed on slices of their problem and scaled, fine-tuning from a timed
step."""

from __future__ import annotations

import time

import numpy as np
import torch

from selfsup.evaluate.features import extract_features
from selfsup.evaluate.protocols import WEIGHT_DECAYS, knn_predict, logreg_loss_grad
from selfsup.evaluate.sparse import sparse_baseline
from selfsup.registry import PROTOCOLS


def _probe_seconds(sizes: list[int], queries: int, dims: list[int], num_outputs: int) -> dict[str, float]:
    """The frozen probes' cost, timed on slices of each problem at its real width and scaled: kNN per query as
    a fixed part (top-k) plus a part per training sample, the linear probe per row and L-BFGS evaluation.
    The probes' products are skinny (N x D by D x C) and run far below a square matmul's rate."""
    gen = torch.Generator().manual_seed(0)
    big = min(8192, max(sizes))
    small = min(1024, big)
    knn = linear = 0.0

    def timed(fn, *args, repeat=1) -> float:
        fn(*args)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn(*args)
        return (time.perf_counter() - t0) / repeat

    for d in dims:
        x = torch.randn(big, d, generator=gen)
        y = torch.randint(0, max(2, num_outputs), (big,), generator=gen)
        q = x[:256]
        t_small = timed(knn_predict, x[:small], y[:small], q, num_outputs) / len(q)
        t_big = timed(knn_predict, x, y, q, num_outputs) / len(q)
        per_n = max(0.0, t_big - t_small) / max(1, big - small)
        knn += sum(queries * (max(0.0, t_small - per_n * small) + per_n * n) for n in sizes)
        w = torch.zeros(d + 1, num_outputs)
        xb = torch.cat([x, torch.ones(big, 1)], 1)
        per_row = timed(logreg_loss_grad, xb, w, y, 0.0, repeat=3) / big
        evals = len(WEIGHT_DECAYS) * 110  # L-BFGS: 100 iterations per L2 strength, ~1.1 evaluations each
        linear += sum(per_row * n * evals for n in sizes)
    return {"knn": knn, "linear": linear}


def _tfidf_seconds(texts: dict, y_pool, sizes: list[int], queries: int, frozen: list[str], num_outputs: int,
                   featurize=None) -> float:  # fmt: skip
    """The sparse baseline's cost (TF-IDF; sequences: k-mer counts), timed on (up to) 1,000 pool documents and
    scaled: the vectorizer per document, logistic regression per training row and C, kNN per query and row."""
    from selfsup.evaluate.sparse import C_GRID, sparse_knn_predict

    m = min(1000, len(texts["pool"]))
    if m < 2:
        return 0.0
    t0 = time.perf_counter()
    x = (featurize or sparse_baseline("text"))({"pool": texts["pool"][:m]})["pool"]
    seconds = (time.perf_counter() - t0) / m * sum(len(v) for v in texts.values())
    y = np.asarray(y_pool)[:m]
    if "linear" in frozen and len(np.unique(y)) > 1:
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        LogisticRegression(C=max(C_GRID), max_iter=1000, tol=1e-4).fit(x, y)  # the slowest C of the grid
        seconds += (time.perf_counter() - t0) / m * sum(sizes) * len(C_GRID)
    if "knn" in frozen:
        q = min(256, m)
        t0 = time.perf_counter()
        sparse_knn_predict(x, torch.as_tensor(y), x[:q], max(2, num_outputs))
        seconds += (time.perf_counter() - t0) / (q * m) * queries * sum(sizes)
    return seconds


def _finetune_step_seconds(task, enc, pool, ev, device, num_outputs, augment) -> float:
    """Seconds of one fine-tuning step: a one-step ``finetune`` of a batch of the pool, timed the second time (the
    first steps in a process are slower); its set-up (a copy of the encoder, the head) is counted in."""
    from selfsup.evaluate.finetune import finetune

    sub = pool.take(np.arange(min(ev.finetune_batch_size, len(pool))))
    seconds = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        finetune(enc, sub.x, sub.y, task, num_outputs, augment, epochs=1, lr=ev.finetune_lr or 1e-3,
                 batch_size=ev.finetune_batch_size, min_steps=1, max_steps=1, seed=ev.seed, device=device,
                 lengths=sub.lengths)  # fmt: skip
        seconds = time.perf_counter() - t0
    return seconds


TIMED_BATCH = 128  # samples the estimate times extraction on (twice: a warm-up, then timed)


def estimate_phases(task, encoders, splits, subsets, ev, device, num_outputs, texts=None, raw_kind="text",
                    augment=None, raw=None, timing: dict | None = None) -> dict[str, float]:  # fmt: skip
    """Seconds each phase should take, told before a long evaluation: feature extraction timed on a batch of
    test samples (scaled by the mean length of all samples over the batch's, for variable-length data; ``raw``:
    the dense raw baseline's function of a Split, timed on the same batch), the probes timed on a slice of their
    problem (text: the TF-IDF baseline timed on a slice of the documents), fine-tuning from one timed step
    (``augment``: the modality's fine-tuning augmentation) and the prediction of validation and test after each
    run. ``timing`` receives ``per_sample``: the seconds of one sample's features, which extraction then reuses
    instead of timing a batch of its own."""
    enc = encoders["pretrained"]
    per_sample, idx, longer = extraction_seconds(enc, splits, ev, device)
    n = len(idx)
    if timing is not None:
        timing["per_sample"] = per_sample
    total = sum(len(s) for s in splits.values())
    raw_s = 0.0
    if raw is not None:
        t0 = time.perf_counter()
        raw(splits["test"].take(idx))
        raw_s = (time.perf_counter() - t0) / max(1, n) * longer * total
    sizes = [len(idx) for idx in subsets.values()]
    queries = len(splits["val"]) + len(splits["test"])
    raw_dims = [int(np.prod(splits["test"].x.shape[1:]))] if ev.baselines and texts is None else []
    dims = [enc.dim] * len(encoders) + raw_dims
    out = {}
    frozen = [p for p in ev.protocols if PROTOCOLS.get(p).frozen]
    if frozen:
        out["features"] = per_sample * total * len(encoders) + raw_s
    if frozen and getattr(task, "timed_probes", False):
        probes = _probe_seconds(sizes, queries, dims, num_outputs)
        out.update({p: probes[p] for p in ("knn", "linear") if p in frozen})
        if texts is not None:
            name = "k-mer counts" if raw_kind == "sequence" else "tf-idf"
            out[name] = _tfidf_seconds(texts, splits["pool"].y, sizes, queries, frozen, num_outputs,
                                       sparse_baseline(raw_kind))  # fmt: skip
    if frozen and hasattr(task, "probe_seconds"):  # a task that trains its own frozen heads (ctc)
        out.update(task.probe_seconds(splits, sizes, dims, frozen, ev))
    tuned = len(encoders) if "finetune" in ev.protocols else (1 if ev.plot and ev.baselines else 0)
    if tuned:
        steps = [max(ev.finetune_min_steps, ev.finetune_epochs * -(-n // ev.finetune_batch_size)) for n in sizes]
        steps = [min(s, ev.finetune_max_steps) if ev.finetune_max_steps else s for s in steps]
        step = _finetune_step_seconds(task, enc, splits["pool"], ev, device, num_outputs, augment)
        out["finetune"] = tuned * (sum(steps) * step + len(sizes) * queries * per_sample)
    return out


def extraction_seconds(enc, splits: dict, ev, device, warm_up: bool = True) -> tuple[float, np.ndarray, float]:
    """(seconds of one sample's features, scaled to the mean length of every split; the test samples timed; that
    scale), timed on ``TIMED_BATCH`` test samples chosen by ``timed_indices`` (after a warm-up at the same shapes:
    a new shape builds new kernels)."""
    test = splits["test"]
    idx, bs = timed_indices(test.lengths, min(ev.batch_size, len(test), TIMED_BATCH), ev.batch_size)
    lengths = None if test.lengths is None else np.asarray(test.lengths)[idx]
    x = test.x[idx]
    if warm_up:
        extract_features(enc, x, bs, device, lengths)
    t0 = time.perf_counter()
    extract_features(enc, x, bs, device, lengths)
    longer = length_ratio(splits, lengths)
    return (time.perf_counter() - t0) / max(1, len(idx)) * longer, idx, longer


def timed_indices(lengths, n: int, batch_size: int) -> tuple[np.ndarray, int]:
    """(the ``n`` samples to time extraction on, the batch size to time it with). Fixed-length samples: the first
    ``n`` in one batch. Samples of several lengths: ``n`` spread evenly over the length order, in batches that
    each span as wide a band of it as extraction's (which runs shortest first), so padding and the cost of long
    samples weigh as they will."""
    if lengths is None:
        return np.arange(n), n
    order = np.argsort(np.asarray(lengths), kind="stable")
    pick = order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(np.int64))]
    return pick, max(1, round(len(pick) * batch_size / len(order)))


def length_ratio(splits: dict, timed_lengths) -> float:
    """Mean length of every split's samples over that of the timed ones (1 for fixed-length data)."""
    if timed_lengths is None or not len(timed_lengths):
        return 1.0
    every = np.concatenate([np.asarray(s.lengths, dtype=np.float64) for s in splits.values() if s.lengths is not None])
    return float(every.mean() / max(1.0, float(np.mean(timed_lengths))))


__all__ = ["estimate_phases", "extraction_seconds", "length_ratio", "timed_indices"]
