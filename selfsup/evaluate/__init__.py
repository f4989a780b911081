"""Evaluate a run folder: protocols x tasks at several label fractions, with baselines, on validation and test.

- The task (``evaluate/tasks.py``: classify; ``verify.py``, ``ctc.py``: speech) says which data it reads
  (``task.splits``) and how validation is carved (``task.carve``). classify: the labelled training split (capped
  at ``eval.train_limit``) is cut into a seeded, class-stratified validation split (``eval.val_fraction``,
  default 10%) and the labelled pool; the label fractions are class-balanced, nested subsets of the pool.
  Everything that chooses (the linear probe's L2 strength, the CTC head's lr / L2 / epochs, verify's score
  normalization, ``compare``'s ranking) looks at validation; test is reported and never chosen on.
- Encoders: ``pretrained`` (the run's, from ``encoder.json``: DINO's teacher, every other method's
  encoder), and with baselines ``random_init`` (the same architecture at the seed pretraining started
  from) and ``raw`` (the modality's raw input, ``selfsup.data.raw_features``). A protocol that trains the
  encoder (``finetune``) scores ``pretrained`` and ``supervised`` (the random-init encoder trained from
  scratch with the same recipe).
- Rows: ``{"task", "protocol", "labels", "encoder", "split", "metric", "value"}`` (linear rows add
  ``"chosen": {"l2": ...}``; a task with two metrics, ctc's CER and WER, writes a row for each), written to
  ``RUN/eval.json`` (merged: rows of another task, protocol, fraction or encoder stay; ``runs.write_eval_rows``);
  the time spent goes to ``RUN/eval_cost.json``. Error rates (verify's EER, ctc's CER / WER)
  are lower-is-better (``tasks.higher_is_better``).
- Frozen features are extracted once per encoder and split and shared by every frozen protocol and the
  t-SNE picture; extraction shows progress, and an estimate of the whole evaluation is printed first.

Evaluation reads the run folder through ``selfsup.runs`` and never imports ``train``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfsup.config import EvalConfig, RunConfig, parse_labels, set_field
from selfsup.data import SequenceLabels, balanced_subset, load_configured, prepare, raw_features, spec_from_dict
from selfsup.errors import UserError
from selfsup.evaluate import ctc as _ctc  # noqa: F401  (registers the speech tasks)
from selfsup.evaluate import tasks as _tasks  # noqa: F401  (registers the tasks)
from selfsup.evaluate import verify as _verify  # noqa: F401
from selfsup.evaluate.estimate import estimate_phases, extraction_seconds
from selfsup.evaluate.features import extract_features
from selfsup.evaluate.finetune import finetune, param_groups, predict
from selfsup.evaluate.protocols import knn_accuracy, linear_accuracy, linear_probe
from selfsup.evaluate.sparse import is_sparse, onehot_features, sparse_baseline
from selfsup.fmt import fmt_duration
from selfsup.registry import PROTOCOLS, TASKS
from selfsup.runs import atomic_write_text, load_config, load_encoder, read_encoder_json, write_eval_rows
from selfsup.views import finetune_augment

SPLITS = ("val", "test")  # every score is reported on both; selections read "val" only


def _eval_config(run_path, protocol, labels, baselines, plot, task, overrides) -> tuple[RunConfig, EvalConfig]:
    labels = parse_labels(labels) if labels is not None else None
    if isinstance(protocol, str):
        protocol = [p.strip() for p in protocol.split(",") if p.strip()]
    for p in protocol or []:
        PROTOCOLS.get(p)
    cfg = load_config(run_path)
    ev = cfg.eval
    if protocol is not None:
        ev.protocols = list(protocol)
    if labels is not None:
        ev.labels = labels
    if baselines is not None:
        ev.baselines = baselines
    if plot is not None:
        ev.plot = bool(plot)
    if task is not None:
        ev.task = task
    for key, value in overrides.items():
        set_field(cfg, f"eval.{key}", value)
    spec = read_encoder_json(run_path)["spec"]
    ev.for_modality("sequence" if spec.get("alphabet") else spec.get("kind", "image"))
    t = TASKS.get(ev.task)
    if protocol is None and not set(ev.protocols) <= set(t.protocols):
        ev.protocols = list(t.default_protocols)  # e.g. --task verify alone: its cosine scoring
    if ev.plot and not getattr(t, "plots", False):
        raise UserError(f"--plot draws classify results; leave it out for --task {ev.task}")
    for p in ev.protocols:
        PROTOCOLS.get(p)
        if p not in t.protocols:
            raise UserError(f"task {ev.task} has no protocol {p!r}; choose from {', '.join(t.protocols)}")
    return cfg, ev.validate()


def _eval_data(cfg: RunConfig, ev: EvalConfig, run_spec):
    """The DataConfig evaluation loads: the run's own, or ``eval.data`` read with the run's data options (images at
    the run's size)."""
    import dataclasses

    if not ev.data or ev.data == cfg.data.name:
        return cfg.data
    size = run_spec.size if getattr(run_spec, "kind", "") == "image" else cfg.data.image_size
    return dataclasses.replace(cfg.data, name=ev.data, image_size=size, limit=None)


def _check_fits(spec, run_spec, name: str, run_path) -> None:
    """A one-line UserError when data ``name`` (its spec after preparation) cannot be read by the run's encoder."""
    if spec.kind != run_spec.kind:
        raise UserError(f"{name} is {spec.kind} data but {run_path} was pretrained on {run_spec.kind} data; evaluate "
                        "it on data of the same kind (--data)")  # fmt: skip
    if spec.kind == "image" and spec.channels != run_spec.channels:
        raise UserError(f"{name} has {spec.channels}-channel images but {run_path} was pretrained on "
                        f"{run_spec.channels}-channel ones; evaluate it on images with as many channels")  # fmt: skip


class _Clock:
    """Seconds spent per phase of the evaluation (``eval_cost.json``)."""

    def __init__(self):
        self.start, self.phases = time.perf_counter(), {}

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 2)

    def total(self) -> float:
        return time.perf_counter() - self.start


def _progress(log, what: str):
    """A progress callback for extract_features: a line at every quarter, with the time left."""
    shown = {"q": 0}

    def report(done: int, total: int, seconds: float) -> None:
        quarter = 4 * done // max(1, total)
        if quarter > shown["q"]:
            shown["q"] = quarter
            left = seconds * (total - done) / max(1, done)
            log(f"  {what}: {done}/{total} ({fmt_duration(seconds)}, {fmt_duration(left)} left)")

    return report


def _frozen_features(task, encoders, splits, spec, ev, device, log, clock, texts=None, raw_kind="text",
                     per_sample: float | None = None) -> dict[str, dict]:  # fmt: skip
    """{encoder: {split: features}} for the encoders and the raw baseline, each extracted once: pooled features,
    or the tokens where the task reads them (text: sparse TF-IDF rows of ``texts``, {split: documents};
    sequences: k-mer counts, and a one-hot code of the residues as ``onehot`` where all have one length; a
    task's own raw baseline where it has one). ``per_sample``: the estimate's seconds a sample (else timed here
    on a small batch), for the time each encoder's extraction announces."""
    tokens = getattr(task, "features", "pooled") == "tokens"
    total = sum(len(s.x) for s in splits.values())
    feats: dict[str, dict[str, torch.Tensor]] = {}
    for name, enc in encoders.items():
        t0 = time.perf_counter()
        if per_sample is None:
            per_sample = extraction_seconds(enc, splits, ev, device, warm_up=False)[0]
        estimate = per_sample * total
        log(f"extracting {name} features of {total} samples (about {fmt_duration(estimate)}) ...")
        show = estimate > 20  # progress lines only where there is something to wait for
        feats[name] = {k: extract_features(enc, s.x, ev.batch_size, device, s.lengths,
                                           _progress(log, f"{name} {k}") if show else None, tokens=tokens)
                       for k, s in splits.items()}  # fmt: skip
        clock.add("features", time.perf_counter() - t0)
    dense = dense_raw(task, spec, texts)
    if ev.baselines and dense is not None:
        t0 = time.perf_counter()
        feats["raw"] = {k: dense(s) for k, s in splits.items()}
        clock.add("features", time.perf_counter() - t0)
    elif ev.baselines and texts is not None:
        t0 = time.perf_counter()
        feats["raw"] = sparse_baseline(raw_kind)(texts)
        onehot = onehot_features(texts) if raw_kind == "sequence" else None
        if onehot is not None:
            feats["onehot"] = onehot
        clock.add("features", time.perf_counter() - t0)
    return feats


def dense_raw(task, spec, texts=None):
    """The raw baseline's features of a Split as a function (None for text and sequences: sparse, from ``texts``):
    the task's own (verify: MFCC statistics; ctc: stacked log-mel frames), MFCC statistics for other speech
    tasks, else the modality's ``raw_features``."""
    if hasattr(task, "raw_features"):
        return lambda split: task.raw_features(split, spec)
    if texts is not None:
        return None
    if spec.kind == "audio":  # speech: MFCC statistics (selfsup.evaluate.mfcc)
        from selfsup.evaluate.mfcc import mfcc_stats

        return lambda split: mfcc_stats(split.x, spec)
    return lambda split: raw_features(spec, split.x, split.lengths)


def _frozen_rows(task, protocol, feats, ys, subsets, num_outputs, ev, log, clock, keep=None) -> list[dict]:
    """Rows of a frozen protocol; ``keep`` (a dict) receives the test outcome per (protocol, labels, encoder)."""
    rows, t0 = [], time.perf_counter()
    for frac, idx in subsets.items():
        for name, f in feats.items():
            sets = {s: (f[s], ys[s]) for s in SPLITS}
            train = (_subset(f["pool"], idx), _subset(ys["pool"], idx))
            kept: dict = {}
            if hasattr(task, "probe_seconds"):  # heads trained for minutes (ctc): say which
                log(f"  {protocol}: {name} at {100 * frac:g}% of the labels ({len(idx)} samples) "
                    f"[{fmt_duration(time.perf_counter() - t0)} so far]")  # fmt: skip
            scores, chosen = task.frozen(protocol, train, sets, num_outputs, ev, keep=kept)
            if keep is not None:
                keep[(protocol, frac, name)] = kept["test"]
            for split in SPLITS:
                rows += _rows(task, protocol, frac, name, split, scores[split], chosen)
    spent = time.perf_counter() - t0
    clock.add(protocol, spent)
    log(f"{protocol}: {len(subsets)} label fraction{'s' * (len(subsets) != 1)} x {len(feats)} encoders "
        f"({fmt_duration(spent)})")  # fmt: skip
    return rows


def _subset(a, idx: np.ndarray):
    """The samples at ``idx`` of features or labels: a tensor, sparse rows, or a ragged container (``take``)."""
    if a is None or is_sparse(a):
        return None if a is None else a[idx]
    return a.take(idx) if hasattr(a, "take") and not torch.is_tensor(a) else a[torch.from_numpy(idx)]


def _labels(y):
    """A split's labels as the protocols take them: class ids as a tensor; label sequences as they are."""
    return y if y is None or isinstance(y, SequenceLabels) else torch.as_tensor(np.asarray(y))


def _rows(task, protocol, frac, encoder, split, value, chosen=None) -> list[dict]:
    """One row per metric: ``value`` is the task's metric, or {metric: value} for a task with several."""
    values = value if isinstance(value, dict) else {task.metric: value}
    out = []
    for metric, v in values.items():
        row = {"task": task.name, "protocol": protocol, "labels": frac, "encoder": encoder, "split": split,
               "metric": metric, "value": round(float(v), 4)}  # fmt: skip
        if chosen:
            row["chosen"] = chosen
        out.append(row)
    return out


def _balanced(split, attr: str | None, log):
    """``data.balance_by``'s sampling weights for fine-tuning on ``split`` (None: not asked, or data without it)."""
    if attr is None:
        return None
    if attr not in split.groups:
        log(f"finetune: the run was pretrained with --balance-by {attr}, which this data lacks; plain sampling")
        return None
    from selfsup.data.groups import balanced_weights

    return balanced_weights(split.groups[attr])


def _finetune_rows(task, encoders, pool, subsets, evals, num_outputs, spec, ev, device, log, clock, keep=None,
                   balance_by: str | None = None) -> list[dict]:  # fmt: skip
    """Rows of fine-tuning; on the random-init encoder it is supervised training from scratch. ``keep`` as for
    ``_frozen_rows``; ``balance_by``: batches drawn with each value of that group equally often."""
    from selfsup.report.plots import encoder_label

    kw = dict(epochs=ev.finetune_epochs, lr=ev.finetune_lr, weight_decay=ev.finetune_weight_decay,
              layer_decay=ev.finetune_layer_decay, batch_size=ev.finetune_batch_size, min_steps=ev.finetune_min_steps,
              max_steps=ev.finetune_max_steps, seed=ev.seed, device=device, log=log,
              probe_first=ev.finetune_probe_first)  # fmt: skip
    rows = []
    for frac, idx in subsets.items():
        for name, enc in encoders.items():
            shown = "supervised" if name == "random_init" else name
            log(f"finetune: {encoder_label(shown)} at {100 * frac:g}% labels ...")
            t0 = time.perf_counter()
            sub = pool.take(idx)
            weights = _balanced(sub, balance_by, log)
            model = finetune(enc, sub.x, sub.y, task, num_outputs, finetune_augment(spec), lengths=sub.lengths,
                             sample_weights=weights, **kw)  # fmt: skip
            for split in SPLITS:
                x, y, lengths = evals[split]
                pred = predict(model, x, lengths=lengths)
                rows += _rows(task, "finetune", frac, shown, split, task.score(pred, y))
                if keep is not None and split == "test":
                    keep[("finetune", frac, shown)] = task.outcome(pred, y)
            clock.add("finetune", time.perf_counter() - t0)
    return rows


@dataclass
class Session:
    """What an evaluation of a run reads, set up once (``open_session``): its config, task, data, the carved splits
    (``splits`` {"pool", "val", "test"}, ``subsets`` {label fraction: positions in the pool}), the raw documents of
    text and sequences (``texts``) and the encoders (``pretrained``, and ``random_init`` with baselines)."""

    run: Path
    cfg: RunConfig
    ev: EvalConfig
    task: object
    data: object  # the DataConfig the scored data was loaded with
    raw: object  # the dataset as loaded
    ds: object  # ... and prepared for the run's encoder
    carved: object
    texts: dict | None
    ys: dict
    encoders: dict
    device: str
    num_outputs: int
    timing: dict = field(default_factory=dict)  # the estimate's per-sample extraction seconds, reused

    @property
    def splits(self) -> dict:
        return self.carved.splits

    @property
    def subsets(self) -> dict:
        return self.carved.subsets


def open_session(run_path, protocol=None, labels=None, baselines=None, plot=None, task=None, log=print,
                 adapt_data=None, **overrides) -> Session:  # fmt: skip
    """Load the run's config, the data (``adapt_data(data config, run config)``, when given, returns the DataConfig
    to load instead of the one ``eval.data`` names) and encoders, and carve validation as the task says."""
    cfg, ev = _eval_config(run_path, protocol, labels, baselines, plot, task, overrides)
    t = TASKS.get(ev.task)()
    run_spec = spec_from_dict(read_encoder_json(run_path)["spec"])
    data_cfg = _eval_data(cfg, ev, run_spec)
    data_cfg = adapt_data(data_cfg, cfg) if adapt_data else data_cfg
    raw = load_configured(data_cfg, log=log)
    ds = prepare.for_evaluation(raw, run_path, run_spec, log, ev.windows)
    _check_fits(ds.spec, run_spec, data_cfg.name, run_path)
    train, test = t.splits(data_cfg, ds, log)  # the data the task is scored on; a one-line error if it does not fit
    num_outputs = t.num_outputs(ds)
    train = train if ev.train_limit is None else train.head(ev.train_limit)
    test = test if ev.test_limit is None else test.head(ev.test_limit)
    carved = t.carve(train, test, ev)  # validation carved as the task requires; label fractions of the pool
    texts = None  # text, sequences: the raw-input baseline reads the documents themselves (TF-IDF, k-mer counts)
    if raw.spec.kind in ("text", "sequence") and ev.baselines:
        texts = {k: getattr(raw, src).x[idx] for k, (src, idx) in carved.index.items()}
    ys = {k: _labels(s.y) for k, s in carved.splits.items()}
    log(f"evaluating {run_path}: {carved.note}; task {t.name}, protocols {', '.join(ev.protocols)}")
    encoders = {"pretrained": load_encoder(run_path)}
    if ev.baselines:
        encoders["random_init"] = load_encoder(run_path, random_init=True)
    device = t.device = cfg.train.device  # where a task trains its own heads (ctc's linear CTC heads)
    t.log = log  # where a task's long heads report progress (ctc's bilstm: each scored epoch)
    return Session(Path(run_path), cfg, ev, t, data_cfg, raw, ds, carved, texts, ys, encoders, device, num_outputs)


def estimate_seconds(s: Session, log) -> dict[str, float]:
    raw = dense_raw(s.task, s.ds.spec, s.texts) if s.ev.baselines else None
    estimate = estimate_phases(s.task, s.encoders, s.splits, s.subsets, s.ev, s.device, s.num_outputs, s.texts,
                               s.raw.spec.kind, finetune_augment(s.ds.spec), raw, s.timing)  # fmt: skip
    parts = ", ".join(f"{k} {fmt_duration(v)}" for k, v in estimate.items())
    log(f"this evaluation should take about {fmt_duration(sum(estimate.values()))} ({parts})")
    return estimate


def frozen_features(s: Session, log, clock, always: bool = False) -> dict:
    """{encoder: {split: features}} where a frozen protocol (or ``always``) needs them."""
    if not always and not any(PROTOCOLS.get(p).frozen for p in s.ev.protocols):
        return {}
    return _frozen_features(s.task, s.encoders, s.splits, s.ds.spec, s.ev, s.device, log, clock, s.texts,
                            s.raw.spec.kind, s.timing.get("per_sample"))  # fmt: skip


def score_rows(s: Session, feats: dict, log, clock, keep: dict | None = None) -> list[dict]:
    """Every protocol's rows (eval.json's); ``keep`` receives each test outcome by (protocol, labels, encoder)."""
    ev, t = s.ev, s.task
    evals = {k: (s.splits[k].x, s.ys[k], s.splits[k].lengths) for k in SPLITS}
    balance = s.cfg.data.balance_by
    rows = []
    for proto in ev.protocols:
        if PROTOCOLS.get(proto).frozen:
            rows += _frozen_rows(t, proto, feats, s.ys, s.subsets, s.num_outputs, ev, log, clock, keep)
        else:
            rows += _finetune_rows(t, s.encoders, s.splits["pool"], s.subsets, evals, s.num_outputs, s.ds.spec, ev,
                                   s.device, log, clock, keep, balance)  # fmt: skip
    if ev.plot and ev.baselines and "finetune" not in ev.protocols:
        scratch = {"random_init": s.encoders["random_init"]}
        rows += _finetune_rows(t, scratch, s.splits["pool"], s.subsets, evals, s.num_outputs, s.ds.spec, ev, s.device,
                               log, clock, None, balance)  # fmt: skip
    return rows


def write_cost(s: Session, clock, estimate: dict, name: str = "eval_cost.json") -> None:
    from selfsup.distributed import local_device

    cost = {"wall_s": round(clock.total(), 2), "phases": clock.phases, "device": str(local_device(s.device)),
            "estimate_s": {k: round(v, 1) for k, v in estimate.items()}, "samples": s.carved.sizes}  # fmt: skip
    atomic_write_text(s.run / name, json.dumps(cost, indent=1))


def evaluate(run_path: str | Path, protocol: str | list[str] | None = None, labels=None, baselines: bool | None = None,
             plot: bool | None = None, task: str | None = None, log=print, **overrides) -> list[dict]:  # fmt: skip
    """Score the run's encoder (and baselines) with each protocol at each label fraction, on validation and test.

    Writes ``RUN/eval.json`` (the rows, merged with earlier evaluations' other rows) and ``RUN/eval_cost.json``;
    ``plot`` also writes ``RUN/label_efficiency.png``, ``RUN/embedding.png`` and ``RUN/report.html`` and adds the
    supervised curve if finetune is not among the protocols (unless baselines are off). ``overrides`` set EvalConfig
    fields (``train_limit=``, ``knn_k=``, ...).
    """
    clock = _Clock()
    s = open_session(run_path, protocol, labels, baselines, plot, task, log, **overrides)
    estimate = estimate_seconds(s, log)
    feats = frozen_features(s, log, clock)
    rows = score_rows(s, feats, log, clock)
    merged = write_eval_rows(s.run, rows)
    log(format_table(rows))
    if any(r["encoder"] == "raw" for r in rows):
        log(f"raw = {raw_baseline_name(s.raw.spec.kind, s.task.name)}")
    kept = len(merged) - len(rows)
    log(f"wrote {s.run / 'eval.json'}" + (f" (with {kept} rows of earlier evaluations kept)" if kept else ""))
    if s.ev.plot:
        from selfsup.report.evaluation import write_eval_report

        t0 = time.perf_counter()
        test_f = feats["pretrained"]["test"] if "pretrained" in feats else None
        paths = write_eval_report(s.run, s.cfg, s.ds, rows, s.encoders["pretrained"], s.splits["test"], test_f, log)
        clock.add("report", time.perf_counter() - t0)
        log(f"wrote {', '.join(str(p) for p in paths)}")
    write_cost(s, clock, estimate)
    parts = ", ".join(f"{k} {fmt_duration(v)}" for k, v in clock.phases.items())
    log(f"evaluation took {fmt_duration(clock.total())} ({parts})")
    return rows


RAW_BASELINES = {"image": "raw pixels under the same probe", "text": "TF-IDF of word uni- and bigrams",
                 "sequence": "k-mer counts (k = 1..4)", "audio": "MFCC statistics (20 MFCC + deltas, mean and std)",
                 "audio/ctc": "log-mel frames (normalized per bin, 4 stacked) under the same head"}  # fmt: skip


def raw_baseline_name(kind: str, task: str) -> str:
    """What the ``raw`` column of a table holds, for the data's input kind and the task."""
    return RAW_BASELINES.get(f"{kind}/{task}") or RAW_BASELINES.get(kind, "the raw input under the same probe")


def format_table(rows: list[dict], split: str = "test") -> str:
    """The rows of one split as a table: protocol x label fraction down, encoders across; one table per metric
    (an error rate's header says lower is better)."""
    rows = [r for r in rows if r.get("split", split) == split]
    metrics = list(dict.fromkeys(r.get("metric", "value") for r in rows)) or ["value"]
    if len(metrics) > 1:
        return "\n\n".join(format_table([r for r in rows if r.get("metric") == m], split) for m in metrics)
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    keys = list(dict.fromkeys((r["protocol"], r["labels"]) for r in rows))
    val = {(r["protocol"], r["labels"], r["encoder"]): r["value"] for r in rows}
    metric = metrics[0]
    title = split + " " + metric + ("" if _tasks.higher_is_better(metric) else " (lower is better)")
    width = max(18, len(title) + 2)
    head = f"{title:<{width}}{'labels':>8}" + "".join(f"{e:>13}" for e in encoders)
    lines = [head, "-" * len(head)]
    fractions = {r["protocol"]: getattr(TASKS.get(r.get("task", "classify")), "label_fractions", True) for r in rows}
    for proto, frac in keys:
        cells = "".join(f"{100 * val[(proto, frac, e)]:>12.1f}%" if (proto, frac, e) in val else f"{'-':>13}"
                        for e in encoders)  # fmt: skip
        lines.append(f"{proto:<{width}}{f'{100 * frac:g}%' if fractions[proto] else '-':>8}{cells}")
    return "\n".join(lines)


__all__ = ["evaluate", "load_encoder", "extract_features", "format_table", "balanced_subset", "knn_accuracy",
           "linear_accuracy", "linear_probe", "finetune", "param_groups", "predict"]  # fmt: skip
