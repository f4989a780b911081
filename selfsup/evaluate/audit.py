"""``selfsup audit``: the evaluation broken down by a group attribute of the data, and what the features leak.

- The evaluation is ``selfsup eval``'s (``open_session`` / ``score_rows``: the same validation split for every
  choice, the same baselines), and every task keeps what it scored per test sample (``tasks.py``: classify's
  predictions, ctc's edit distances, verify's trial scores). ``task.by_group`` lays an outcome out as rows with a
  group each, and fairlearn's ``MetricFrame`` computes the metric per group with a bootstrap of the rows
  (``eval.bootstrap`` resamples; 95% percentile intervals; verification's rows are trials, so its intervals
  ignore that trials share speakers). A group with fewer than ``eval.min_group_size`` test samples (or one its
  metric cannot be computed on) is reported as too small, with no number.
- Gaps (``report.audit.group_gaps``): per (protocol, labels, encoder, metric) with two groups or more that are not
  too small, the worst and the best of them and the difference (>= 0).
- Leakage: a linear probe that predicts the group itself from each encoder's frozen pooled features (token
  features: their mean; speech's raw baseline: MFCC statistics), trained on the labelled pool, its L2 chosen on
  validation balanced accuracy, test balanced accuracy reported beside chance (1 / classes). Test samples of a
  group the pool lacks cannot be predicted and are left out (counted).
- Output: ``RUN/audit.json`` ({"rows", "gaps", "leakage", "eval_rows", settings}: each row an evaluation row
  with ``group_attr``, ``group``, ``n``, ``ci_low``, ``ci_high``, ``too_small``; group "all" is the whole test
  split), the tables printed, ``RUN/audit_<attr>.png`` and ``RUN/report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import UserError
from selfsup.evaluate import SPLITS, _Clock, _subset, frozen_features, open_session, score_rows, write_cost
from selfsup.evaluate.features import TokenFeatures
from selfsup.evaluate.sparse import is_sparse
from selfsup.evaluate.tasks import GroupRows
from selfsup.fmt import fmt_duration
from selfsup.report.audit import group_gaps
from selfsup.runs import atomic_write_text

CI = (0.025, 0.975)
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")


def _metric_frame():
    try:
        from fairlearn.metrics import MetricFrame
    except ImportError:
        raise UserError("selfsup audit needs fairlearn: pip install 'selfsup[audit]'") from None
    return MetricFrame


def _num(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else round(v, 4)


def group_rows(gr: GroupRows, key: dict, attr: str, min_size: int, n_boot: int, seed: int) -> list[dict]:
    """Rows {**key, group_attr, group, n, value, ci_low, ci_high, too_small} for every group of ``gr`` and "all"."""
    import warnings

    small = {g: f"{n} test samples, fewer than {min_size}" for g, n in gr.sizes.items() if n < min_size}
    small.update(gr.too_small)
    base = {**key, "split": "test", "group_attr": attr}
    out = []
    if len(gr.group):
        with warnings.catch_warnings():  # a resample without some group's rows: that resample has no value there
            warnings.simplefilter("ignore", RuntimeWarning)
            mf = _metric_frame()(metrics=gr.fn, y_true=gr.y_true, y_pred=gr.y_pred, sensitive_features=gr.group,
                                 n_boot=n_boot, ci_quantiles=list(CI), random_state=seed)  # fmt: skip
        value, (lo, hi) = mf.by_group, mf.by_group_ci
        for g in value.index:
            if str(g) not in small:
                out.append({**base, "group": str(g), "n": gr.sizes[str(g)], "value": _num(value[g]),
                            "ci_low": _num(lo[g]), "ci_high": _num(hi[g]), "too_small": False})  # fmt: skip
        o_lo, o_hi = mf.overall_ci
        overall = {"value": _num(mf.overall), "ci_low": _num(o_lo), "ci_high": _num(o_hi), "too_small": False}
    else:
        overall = {"value": None, "ci_low": None, "ci_high": None, "too_small": True}
    for g, why in small.items():
        out.append({**base, "group": g, "n": gr.sizes.get(g, 0), "value": None, "ci_low": None, "ci_high": None,
                    "too_small": True, "why": why})  # fmt: skip
    out.sort(key=lambda r: r["group"])
    return out + [{**base, "group": "all", "n": int(sum(gr.sizes.values())), **overall}]


# ----------------------------------------------------------------------------- leakage


def pooled(f):
    """Features for a per-sample probe: token features -> their mean per sample; others as they are."""
    if isinstance(f, TokenFeatures):
        seg = torch.repeat_interleave(torch.arange(len(f)), f.lengths)
        sums = torch.zeros(len(f), f.dim).index_add_(0, seg, f.flat.float())
        return sums / f.lengths.clamp_min(1)[:, None].float()
    return f


def balanced_accuracy(pred, y) -> float:
    """The mean over the classes present in ``y`` of the share of their samples predicted as them."""
    pred, y = np.asarray(pred), np.asarray(y)
    classes = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes])) if len(classes) else float("nan")


def leakage(feats: dict, splits: dict, attr: str, log=print) -> list[dict]:
    """A linear probe per encoder predicting ``attr`` from frozen features: pool -> train, val -> L2, test."""
    from selfsup.evaluate.protocols import linear_probe
    from selfsup.evaluate.sparse import sparse_linear_probe

    values = {k: np.asarray(splits[k].groups[attr]).astype(str) for k in ("pool", *SPLITS)}
    classes = np.unique(values["pool"])
    if len(classes) < 2:
        log(f"leakage: the labelled pool has {len(classes)} value of {attr}; no probe")
        return []
    seen = {k: np.isin(v, classes) for k, v in values.items()}
    ids = {k: torch.as_tensor(np.searchsorted(classes, v[seen[k]])) for k, v in values.items()}
    score = lambda pred, y: balanced_accuracy(pred.numpy(), y.numpy())  # noqa: E731
    out = []
    for name, f in feats.items():
        part = {k: _subset(pooled(f[k]), np.flatnonzero(seen[k])) for k in ("pool", *SPLITS)}
        sets = {k: (part[k], ids[k]) for k in SPLITS}
        if is_sparse(part["pool"]):
            scores, c = sparse_linear_probe(part["pool"], ids["pool"], sets, len(classes), score=score)
            chosen = {"C": c}
        else:
            scores, wd = linear_probe(part["pool"], ids["pool"], sets, len(classes), score=score)
            chosen = {"l2": wd}
        test_classes = len(np.unique(ids["test"].numpy()))
        out.append({"encoder": name, "group_attr": attr, "balanced_accuracy": _num(scores["test"]),
                    "val_balanced_accuracy": _num(scores["val"]), "chance": _num(1 / max(1, test_classes)),
                    "classes": int(test_classes), "n_test": int(seen["test"].sum()),
                    "unseen_test": int((~seen["test"]).sum()), "chosen": chosen})  # fmt: skip
    return out


def _leakage_features(s, feats: dict) -> dict:
    """The features the leakage probe reads: every encoder's, and speech's raw baseline as MFCC statistics."""
    out = dict(feats)
    if s.ds.spec.kind == "audio" and any(isinstance(v, TokenFeatures) for v in feats.get("raw", {}).values()):
        from selfsup.evaluate.mfcc import mfcc_stats

        out["raw"] = {k: mfcc_stats(sp.x, s.ds.spec) for k, sp in s.splits.items()}
    return out


# ----------------------------------------------------------------------------- the command


def _with_group_column(data_cfg, attr: str):
    """A CSV / TSV / JSONL file's DataConfig with ``attr`` among its group columns (a folder brings groups.csv)."""
    name = str(data_cfg.name).lower().removesuffix(".gz")
    if name.endswith(TABLE_SUFFIXES) and attr not in data_cfg.group_columns:
        return dataclasses.replace(data_cfg, group_columns=[*data_cfg.group_columns, attr])
    return data_cfg


def _check_group(s, attr: str) -> None:
    have = sorted(s.splits["test"].groups)
    if attr not in have:
        where = (f"its groups are {', '.join(have)}" if have else "it has no groups (a CSV / TSV / JSONL names its "
                 "columns with --group-column NAME; a folder brings a groups.csv: file,<attr>,...)")  # fmt: skip
        raise UserError(f"--group {attr}: data {s.data.name!r} has no group {attr!r}; {where}")


def audit(run_path: str | Path, group: str | None = None, protocol=None, labels=None, baselines: bool | None = None,
          task: str | None = None, data: str | None = None, log=print, **overrides) -> dict:  # fmt: skip
    """Evaluate the run as ``selfsup eval`` does and report every metric by ``group`` (a name in the data's
    groups, e.g. accent) with bootstrap intervals, the worst group and the gap, and the leakage probe. Writes
    ``RUN/audit.json``, ``RUN/audit_cost.json``, ``RUN/audit_<group>.png`` and ``RUN/report.html``."""
    _metric_frame()  # fail before any work when fairlearn is missing
    if data is not None:
        overrides["data"] = data
    clock = _Clock()
    chosen: dict = {}

    def with_group(data_cfg, cfg):  # the flag, else eval.group (the run's, or group=... here); a table reads it
        chosen["group"] = attr = group or cfg.eval.group
        if not attr:
            raise UserError("selfsup audit needs --group ATTR, the attribute to break results down by (e.g. accent)")
        return _with_group_column(data_cfg, attr)

    s = open_session(run_path, protocol, labels, baselines, None, task, log, adapt_data=with_group, **overrides)
    group = chosen["group"]
    _check_group(s, group)
    ev = s.ev
    feats = frozen_features(s, log, clock, always=True)
    keep: dict = {}
    eval_rows = score_rows(s, feats, log, clock, keep)
    t0 = time.perf_counter()
    test_groups = np.asarray(s.splits["test"].groups[group]).astype(str)
    rows = []
    for (proto, frac, enc), outcome in keep.items():
        for metric in s.task.metrics:
            gr = s.task.by_group(outcome, test_groups, metric, ev)
            key = {"task": s.task.name, "protocol": proto, "labels": frac, "encoder": enc, "metric": metric}
            rows += group_rows(gr, key, group, ev.min_group_size, ev.bootstrap, ev.seed)
    clock.add("groups", time.perf_counter() - t0)
    t0 = time.perf_counter()
    leaks = leakage(_leakage_features(s, feats), s.splits, group, log) if feats else []
    clock.add("leakage", time.perf_counter() - t0)
    result = {"run": str(run_path), "data": str(s.data.name), "task": s.task.name, "group_attr": group,
              "min_group_size": ev.min_group_size, "bootstrap": ev.bootstrap, "ci": list(CI), "seed": ev.seed,
              "rows": rows, "gaps": group_gaps(rows), "leakage": leaks, "eval_rows": eval_rows}  # fmt: skip
    atomic_write_text(s.run / "audit.json", json.dumps(result, indent=1))
    _report(s, result, log, clock)
    write_cost(s, clock, {}, "audit_cost.json")
    parts = ", ".join(f"{k} {fmt_duration(v)}" for k, v in clock.phases.items())
    log(f"audit took {fmt_duration(clock.total())} ({parts})")
    return result


def _report(s, result: dict, log, clock) -> None:
    from selfsup.report.audit import format_audit, write_audit_report

    log(format_audit(result))
    log(f"wrote {s.run / 'audit.json'}")
    t0 = time.perf_counter()
    write_audit_report(s.run, s.cfg, result, log)  # says what it wrote
    clock.add("report", time.perf_counter() - t0)


__all__ = ["audit", "balanced_accuracy", "group_rows", "leakage", "pooled"]
