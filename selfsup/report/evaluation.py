"""The pictures and the page of ``selfsup eval --plot``: label efficiency, a t-SNE of test embeddings, report.html."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from selfsup.report.html import cost_summary, run_summary, write_report
from selfsup.report.plots import embedding_plot, encoder_label, label_efficiency_plot


def _table(rows: list[dict], split: str) -> tuple[list[str], list[list]]:
    rows = [r for r in rows if r["split"] == split]
    encs = list(dict.fromkeys(r["encoder"] for r in rows))
    keys = list(dict.fromkeys((r["protocol"], r["labels"]) for r in rows))
    val = {(r["protocol"], r["labels"], r["encoder"]): r["value"] for r in rows}
    cell = lambda v: None if v is None else f"{100 * v:.2f}%"  # noqa: E731
    table = [[p, f"{100 * f:g}%", *[cell(val.get((p, f, e))) for e in encs]] for p, f in keys]
    return ["protocol", "labels", *[encoder_label(e) for e in encs]], table


def write_eval_report(run: Path, cfg, ds, rows: list[dict], encoder, test, test_f, log) -> list[Path]:
    """RUN/label_efficiency.png, RUN/embedding.png (t-SNE of a seeded subset of test embeddings), RUN/report.html.

    ``test`` is the evaluated test split; ``test_f`` its pretrained features if already extracted."""
    from selfsup.evaluate.features import extract_features

    ev = cfg.eval
    curve = label_efficiency_plot(rows, run / "label_efficiency.png", f"{run.name}: label efficiency")
    n = min(ev.embedding_points, len(test))
    pick = np.sort(np.random.default_rng(ev.seed).choice(len(test), size=n, replace=False))
    if test_f is None:
        sub = test.take(pick)
        test_f = extract_features(encoder, sub.x, ev.batch_size, cfg.train.device, sub.lengths)
    else:
        test_f = test_f[pick]
    log(f"t-SNE of {n} test embeddings ...")
    test_y = np.asarray(test.y)
    names = ds.classes or [str(c) for c in range(int(test_y.max()) + 1)]
    title = f"{run.name}: t-SNE of {n} test embeddings (pretrained encoder)"
    emb = embedding_plot(run / "embedding.png", test_f.numpy(), test_y[pick], names, title, ev.seed)

    metric = rows[0]["metric"] if rows else "accuracy"
    header, table = _table(rows, "test")
    val_header, val_table = _table(rows, "val")
    chosen = sorted({(r["labels"], r["encoder"], r["chosen"]["l2"]) for r in rows if "chosen" in r})
    settings = {"task": ev.task, "protocols": ", ".join(dict.fromkeys(r["protocol"] for r in rows)),
                "label fractions": ", ".join(f"{100 * f:g}%" for f in ev.labels),
                "validation": f"{100 * ev.val_fraction:g}% of the labelled training split, class-stratified",
                "test samples": str(len(test)), "seed": str(ev.seed)}  # fmt: skip
    if chosen:
        settings["linear probe L2 (chosen on validation)"] = ", ".join(
            f"{encoder_label(e)} at {100 * f:g}%: {wd:g}" for f, e, wd in chosen)
    if any(r["protocol"] == "finetune" for r in rows):
        settings["finetune"] = (f"AdamW lr {ev.finetune_lr:g}, weight decay {ev.finetune_weight_decay:g}, "
                                f"layer decay {ev.finetune_layer_decay:g}, {ev.finetune_epochs} epochs of batch "
                                f"{ev.finetune_batch_size}, at least {ev.finetune_min_steps} steps"
                                + (f", at most {ev.finetune_max_steps}" if ev.finetune_max_steps else "")
                                + (", the head fit on the frozen features first (LP-FT)" if ev.finetune_probe_first
                                   else ""))  # fmt: skip
    sections = [("Run", [("kv", run_summary(cfg))])]
    cost_path = run / "cost.json"
    if cost_path.is_file():
        sections.append(("Pretraining cost", [("kv", cost_summary(json.loads(cost_path.read_text())))]))
    sections += [
        ("Evaluation", [("text", f"Test {metric} (the numbers of eval.json). Supervised (from scratch) is the same "
                                 "architecture from random init, trained end to end with the fine-tuning recipe. "
                                 "Choices (the linear probe's L2) were made on the validation split below."),
                        ("table", (header, table)), ("kv", settings)]),
        ("Validation", [("text", f"Validation {metric}, what the choices were made on."),
                        ("table", (val_header, val_table))]),
        ("Label efficiency", [("image", (curve, f"Test {metric} against the labelled fraction of the training set."))]),
        ("Embedding", [("image", (emb, f"t-SNE of {n} test embeddings of the pretrained encoder, by class."))]),
    ]  # fmt: skip
    page = write_report(run / "report.html", f"selfsup eval: {run.name}", sections, subtitle=str(run))
    return [curve, emb, page]
