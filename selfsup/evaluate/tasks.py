"""Evaluation tasks: what is predicted, with its data, validation, head, loss and metric.

A task is independent of the protocol: it scores frozen features and gives the head and loss that fine-tuning
trains. ``classify`` (accuracy) is here; ``verify`` (EER, ``evaluate/verify.py``) and ``ctc`` (CER / WER,
``evaluate/ctc.py``) are speech's. What ``evaluate()`` asks of a task:

- ``name``, ``metric`` (its rows' metric; ``metrics``: every metric its rows carry), ``higher_is_better``,
  ``protocols`` (the ones it has) and ``default_protocols`` (when the configured ones do not fit it);
- ``splits(data_config, dataset, log) -> (train Split, test Split)``: the data it is scored on (a one-line
  ``UserError`` when the data does not fit the task);
- ``carve(train, test, ev) -> Carve``: the validation split and the labelled pool (with its label fractions)
  that nothing but validation chooses on;
- ``num_outputs(dataset)``; ``features``: what frozen protocols read, "pooled" (default) or "tokens";
  optionally ``raw_features(split, spec)``: the raw-input baseline (else the modality's);
- ``frozen(protocol, (train features, train y), {split: (features, y)}, num_outputs, ev) -> ({split: value or
  {metric: value}}, what was chosen on validation)``;
- ``head(dim, num_outputs, generator)``, ``loss(outputs, y)``, ``score(predictions, y)`` for fine-tuning.

For ``selfsup audit`` (results by group) a task also keeps what it scored per sample: ``frozen(..., keep={})``
fills ``keep[split]`` with an outcome (classify: true and predicted classes; ctc: each utterance's edit
distances and reference lengths; verify: the normalized features and speakers), ``outcome(predictions, y)`` makes
one from fine-tuning's predictions, and ``by_group(outcome, groups, metric, ev) -> GroupRows`` lays it out for a
per-group metric (rows, each row's group, the metric of a set of rows).

``evaluate()`` sets ``task.device`` (the run's device) and ``task.log`` (where progress lines go) before scoring,
for tasks that train heads of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data import SequenceLabels, balanced_subset, validation_split
from selfsup.errors import UserError
from selfsup.evaluate.protocols import knn_predict, linear_probe
from selfsup.evaluate.sparse import is_sparse, sparse_knn_predict, sparse_linear_probe
from selfsup.registry import TASKS


@dataclass
class Carve:
    """What a task evaluates on: ``splits`` {"pool", "val", "test"}, ``subsets`` {label fraction: positions in
    the pool}, a ``note`` for the log, ``sizes`` for ``eval_cost.json`` (default: the splits' lengths) and
    ``index`` {split: ("train" | "test", positions)} where the splits came from (the text baseline reads the
    documents there)."""

    splits: dict
    subsets: dict
    note: str
    sizes: dict = field(default_factory=dict)
    index: dict = field(default_factory=dict)

    def __post_init__(self):
        keys = {"labelled_pool": "pool", "validation": "val", "test": "test"}
        self.sizes = self.sizes or {k: len(self.splits[s]) for k, s in keys.items()}


@dataclass
class GroupRows:
    """One metric of one outcome laid out for a per-group breakdown (fairlearn's MetricFrame reads it): rows with
    ``y_true``, ``y_pred`` and ``group``; ``fn(y_true, y_pred)`` the metric of any set of rows (NaN where it is
    undefined); ``sizes`` {group: samples} (a row may be a trial of two samples); ``too_small`` {group: why} for
    groups the metric cannot be computed on."""

    y_true: np.ndarray
    y_pred: np.ndarray
    group: np.ndarray
    fn: Callable
    sizes: dict
    too_small: dict = field(default_factory=dict)


def group_sizes(groups) -> dict[str, int]:
    names, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def accuracy_of(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (a row's) is better: accuracy yes; error rates (EER, CER, WER) no."""
    for _, task in TASKS.items():
        if metric in getattr(task, "metrics", (task.metric,)):
            return task.higher_is_better
    return True


@TASKS.register("classify")
class Classify:
    """One class per sample; metric: top-1 accuracy."""

    name = "classify"
    metric = "accuracy"
    metrics = ("accuracy",)
    higher_is_better = True
    protocols = ("knn", "linear", "finetune")
    default_protocols = ("knn", "linear")
    timed_probes = True  # evaluate()'s estimate times knn / linear on slices of the problem
    plots = True  # --plot: label efficiency, t-SNE by class, report.html

    def check(self, dataset, data_name: str) -> None:
        """Evaluation needs class labels on train and a labelled test split."""
        if not dataset.labelled:
            raise UserError(f"data {data_name!r} has no labels or no test split; classify needs both "
                            "(a folder with one sub-folder per class)")  # fmt: skip
        if isinstance(dataset.train.y, SequenceLabels):
            raise UserError(f"data {data_name!r} has a label sequence per sample; use a sequence task, not classify")
        if len(np.unique(np.asarray(dataset.train.y))) < 2:
            raise UserError(f"data {data_name!r} has a single class; classify needs at least two")

    def splits(self, data, dataset, log=print):
        """The dataset's labelled train and test splits."""
        self.check(dataset, data.name)
        return dataset.train, dataset.test

    def carve(self, train, test, ev) -> Carve:
        """A seeded, class-stratified validation split carved from ``train``; the label fractions are
        class-balanced, nested subsets of the rest (the pool holds the samples some fraction uses)."""
        y = np.asarray(train.y)
        pool_idx, val_idx = validation_split(y, ev.val_fraction, ev.seed)
        subsets = {frac: balanced_subset(y[pool_idx], frac, ev.seed) for frac in ev.labels}
        used = np.unique(np.concatenate(list(subsets.values())))  # the pool samples any fraction needs
        subsets = {frac: np.searchsorted(used, idx) for frac, idx in subsets.items()}  # positions within the pool
        test_idx = np.arange(len(test))
        splits = {"pool": train.take(pool_idx[used]), "val": train.take(val_idx), "test": test.take(test_idx)}
        n_classes = len(np.unique(y[pool_idx]))
        share = lambda f: round(f * len(pool_idx))  # noqa: E731  (balanced_subset takes at least one a class)
        sizes_said = ", ".join(f"{100 * f:g}%: {len(subsets[f])}" + (f" (at least one per class; {100 * f:g}% "
                               f"would be {share(f)})" if share(f) < n_classes else "") for f in ev.labels)  # fmt: skip
        note = (f"{len(pool_idx)} labelled samples in {n_classes} classes (class-balanced {sizes_said}), "
                f"{len(val_idx)} validation, {len(test)} test")  # fmt: skip
        sizes = {"labelled_pool": len(pool_idx), "validation": len(val_idx), "test": len(test)}
        index = {"pool": ("train", pool_idx[used]), "val": ("train", val_idx), "test": ("test", test_idx)}
        return Carve(splits, subsets, note, sizes, index)

    def num_outputs(self, dataset) -> int:
        return max(dataset.num_classes, int(np.max(dataset.train.y)) + 1)

    # ------------------------------------------------------------------ frozen features
    def frozen(self, protocol: str, train: tuple[Tensor, Tensor], eval_sets: dict[str, tuple[Tensor, Tensor]],
               num_outputs: int, ev, keep: dict | None = None) -> tuple[dict[str, float], dict]:  # fmt: skip
        """Score ``protocol`` (knn | linear) on each eval set -> ({split: accuracy}, what was chosen on validation);
        ``keep`` receives each split's outcome (true and predicted classes)."""
        train_f, train_y = train
        preds: dict[str, Tensor] = {}
        if protocol == "knn":
            knn = sparse_knn_predict if is_sparse(train_f) else knn_predict  # sparse: a TF-IDF / k-mer baseline
            preds = {s: knn(train_f, train_y, f, num_outputs, ev.knn_k, ev.knn_temperature)
                     for s, (f, _) in eval_sets.items()}  # fmt: skip
            scores, chosen = {s: (preds[s] == y).float().mean().item() for s, (_, y) in eval_sets.items()}, {}
        elif protocol == "linear" and is_sparse(train_f):
            scores, c = sparse_linear_probe(train_f, train_y, eval_sets, num_outputs, predictions=preds)
            chosen = {"C": c}
        elif protocol == "linear":
            scores, wd = linear_probe(train_f, train_y, eval_sets, num_outputs, predictions=preds)
            chosen = {"l2": wd}
        else:
            raise ValueError(f"classify has no frozen protocol {protocol!r}")
        if keep is not None:
            keep.update({s: {"y": np.asarray(y), "pred": preds[s].numpy()} for s, (_, y) in eval_sets.items()})
        return scores, chosen

    def outcome(self, predictions: Tensor, y: Tensor) -> dict:
        """Fine-tuning's logits [N, C] -> the outcome ``by_group`` reads."""
        return {"y": np.asarray(y.cpu()), "pred": predictions.argmax(1).cpu().numpy()}

    def by_group(self, outcome: dict, groups: np.ndarray, metric: str, ev) -> GroupRows:
        """Accuracy per group: one row per test sample."""
        return GroupRows(outcome["y"], outcome["pred"], np.asarray(groups).astype(str), accuracy_of,
                         group_sizes(groups))  # fmt: skip

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


__all__ = ["Carve", "Classify", "GroupRows", "accuracy_of", "group_sizes", "higher_is_better"]
