"""Evaluation tasks: what is predicted, with its head, loss and metric.

A task is independent of the modality and of the protocol: it scores frozen features (knn, linear)
and gives the head and loss that fine-tuning trains. ``classify`` (accuracy) is here; ``ctc``
(CER / WER) and ``verify`` (EER) come with speech.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data import SequenceLabels
from selfsup.errors import UserError
from selfsup.evaluate.protocols import knn_predict, linear_probe
from selfsup.evaluate.sparse import is_sparse, sparse_knn_predict, sparse_linear_probe
from selfsup.registry import TASKS


@TASKS.register("classify")
class Classify:
    """One class per sample; metric: top-1 accuracy."""

    name = "classify"
    metric = "accuracy"
    higher_is_better = True
    protocols = ("knn", "linear", "finetune")

    def check(self, dataset, data_name: str) -> None:
        """Evaluation needs class labels on train and a labelled test split."""
        if not dataset.labelled:
            raise UserError(f"data {data_name!r} has no labels or no test split; classify needs both "
                            "(a folder with one sub-folder per class)")  # fmt: skip
        if isinstance(dataset.train.y, SequenceLabels):
            raise UserError(f"data {data_name!r} has a label sequence per sample; use a sequence task, not classify")
        if len(np.unique(np.asarray(dataset.train.y))) < 2:
            raise UserError(f"data {data_name!r} has a single class; classify needs at least two")

    def num_outputs(self, dataset) -> int:
        return max(dataset.num_classes, int(np.max(dataset.train.y)) + 1)

    # ------------------------------------------------------------------ frozen features
    def frozen(self, protocol: str, train: tuple[Tensor, Tensor], eval_sets: dict[str, tuple[Tensor, Tensor]],
               num_outputs: int, ev) -> tuple[dict[str, float], dict]:  # fmt: skip
        """Score ``protocol`` (knn | linear) on each eval set -> ({split: accuracy}, what was chosen on validation)."""
        train_f, train_y = train
        if is_sparse(train_f):  # a sparse raw-input baseline (TF-IDF)
            if protocol == "knn":
                return {split: (sparse_knn_predict(train_f, train_y, f, num_outputs, ev.knn_k, ev.knn_temperature)
                                == y).float().mean().item() for split, (f, y) in eval_sets.items()}, {}  # fmt: skip
            scores, c = sparse_linear_probe(train_f, train_y, eval_sets, num_outputs)
            return scores, {"C": c}
        if protocol == "knn":
            out = {}
            for split, (f, y) in eval_sets.items():
                pred = knn_predict(train_f, train_y, f, num_outputs, ev.knn_k, ev.knn_temperature)
                out[split] = (pred == y).float().mean().item()
            return out, {}
        if protocol == "linear":
            scores, wd = linear_probe(train_f, train_y, eval_sets, num_outputs)
            return scores, {"l2": wd}
        raise ValueError(f"classify has no frozen protocol {protocol!r}")

    # ------------------------------------------------------------------ fine-tuning
    def head(self, dim: int, num_outputs: int, generator: torch.Generator | None = None) -> nn.Module:
        """A linear head with a small init (MAE's fine-tuning head: std 2e-5; 0.01 for short runs)."""
        head = nn.Linear(dim, num_outputs)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
            head.bias.zero_()
        return head

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), y.long())

    def score(self, predictions: Tensor, y: Tensor) -> float:
        """predictions: logits [N, C] -> accuracy."""
        return (predictions.argmax(1).cpu() == y.cpu().long()).float().mean().item()


__all__ = ["Classify"]
