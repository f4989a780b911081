"""Evaluate a run folder: frozen-feature protocols and fine-tuning at several label fractions, with baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from selfsup.config import EvalConfig, RunConfig, load_yaml, parse_labels, set_field
from selfsup.data import load_dataset
from selfsup.distributed import local_device
from selfsup.encoders import Encoder, build_encoder, encoder_kwargs, use_channels_last
from selfsup.errors import UserError
from selfsup.evaluate.finetune import classifier_accuracy, finetune_accuracy, param_groups
from selfsup.evaluate.protocols import balanced_subset, knn_accuracy, linear_accuracy
from selfsup.registry import EVALUATIONS
from selfsup.train.checkpoint import latest_checkpoint, load_weights


def _run_config(run_path: str | Path) -> RunConfig:
    run = Path(run_path)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a run folder (no config.yaml); pass the --out folder of `selfsup pretrain`")
    return load_yaml(run / "config.yaml")


def _build(cfg: RunConfig, weights: dict[str, torch.Tensor]) -> tuple[Encoder, dict[str, torch.Tensor]]:
    enc = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    channels = enc["input.mean"].shape[1]
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(cfg.encoder.name or "resnet18", in_channels=channels, image_size=cfg.data.image_size,
                            **encoder_kwargs(cfg.encoder))  # fmt: skip
    return encoder, enc


def load_encoder(run_path: str | Path, random_init: bool = False) -> Encoder:
    """The run's trained encoder (a plain nn.Module, eval mode); ``random_init`` gives the
    same architecture, seeded, with only the input normalization copied."""
    cfg = _run_config(run_path)
    ckpt = latest_checkpoint(Path(run_path))
    if ckpt is None:
        raise UserError(f"{run_path} has no checkpoint yet; let `selfsup pretrain` finish or --resume it")
    encoder, state = _build(cfg, load_weights(ckpt))
    if random_init:
        state = {k: v for k, v in state.items() if k.startswith("input.")}
    encoder.load_state_dict(state, strict=not random_init)
    return encoder.eval()


@torch.no_grad()
def extract_features(encoder: Encoder, x: np.ndarray, batch_size: int = 512, device: str = "auto") -> torch.Tensor:
    """uint8 images [N, C, H, W] -> pooled features [N, D] (float32, CPU)."""
    dev = local_device(device)
    encoder = encoder.to(dev).eval()
    channels_last = use_channels_last(encoder, dev)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    out = []
    for i in range(0, len(x), batch_size):
        b = torch.from_numpy(np.array(x[i : i + batch_size])).to(dev)
        if channels_last:
            b = b.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out.append(encoder(b).pooled.float().cpu())
    return torch.cat(out)


def _raw_features(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x)).flatten(1).float().div_(255)


def _needs_encoder(protocol: str) -> bool:
    return bool(getattr(EVALUATIONS.get(protocol), "needs_encoder", False))


def _eval_config(run_path, protocol, labels, baselines, plot, overrides) -> tuple[RunConfig, EvalConfig]:
    labels = parse_labels(labels) if labels is not None else None
    if isinstance(protocol, str):
        protocol = [p.strip() for p in protocol.split(",") if p.strip()]
    for p in protocol or []:
        EVALUATIONS.get(p)
    cfg = _run_config(run_path)
    ev = cfg.eval
    if protocol is not None:
        ev.protocols = list(protocol)
    if labels is not None:
        ev.labels = labels
    if baselines is not None:
        ev.baselines = baselines
    if plot is not None:
        ev.plot = bool(plot)
    for key, value in overrides.items():
        set_field(cfg, f"eval.{key}", value)
    for p in ev.protocols:
        EVALUATIONS.get(p)
    return cfg, ev.validate()


def _finetune_kwargs(ev: EvalConfig, device: str, log) -> dict:
    return dict(epochs=ev.finetune_epochs, lr=ev.finetune_lr, weight_decay=ev.finetune_weight_decay,
                layer_decay=ev.finetune_layer_decay, batch_size=ev.finetune_batch_size,
                min_steps=ev.finetune_min_steps, max_steps=ev.finetune_max_steps, seed=ev.seed, device=device,
                log=log)  # fmt: skip


def _tuned_rows(proto: str, encoders: dict[str, Encoder], subsets: dict[float, np.ndarray], data, num_classes: int,
                kwargs: dict, log) -> list[dict]:  # fmt: skip
    """Rows of a protocol that trains the encoder; on the random-init encoder it is supervised from scratch."""
    from selfsup.report.plots import encoder_label

    fn = EVALUATIONS.get(proto)
    train_x, train_y, test_x, test_y = data
    rows = []
    for frac, idx in subsets.items():
        for name, enc in encoders.items():
            shown = "supervised" if name == "random_init" else name
            log(f"{proto}: {encoder_label(shown)} at {100 * frac:g}% labels ...")
            acc = fn(enc, train_x[idx], train_y[idx], test_x, test_y, num_classes, **kwargs)
            rows.append({"protocol": proto, "labels": frac, "encoder": shown, "accuracy": round(acc, 4)})
    return rows


def evaluate(run_path: str | Path, protocol: str | list[str] | None = None, labels=None, baselines: bool | None = None,
             plot: bool | None = None, log=print, **overrides) -> list[dict]:  # fmt: skip
    """Score the run's encoder (and baselines) with each protocol at each label fraction.

    Writes ``RUN/eval.json``: rows ``{"protocol", "labels", "encoder", "accuracy"}``. Frozen-feature
    protocols (knn, linear) score the encoders "pretrained", "random_init" and "raw" (pixels); protocols
    that train the encoder (finetune) score "pretrained" and "supervised" (the random-init encoder
    trained from scratch with the same recipe). ``plot`` also writes ``RUN/label_efficiency.png``,
    ``RUN/embedding.png`` and ``RUN/report.html``, and adds the supervised curve if finetune is not
    among the protocols (unless baselines are off). ``overrides`` set EvalConfig fields.
    """
    cfg, ev = _eval_config(run_path, protocol, labels, baselines, plot, overrides)
    ds = load_dataset(cfg.data.name, cfg.data.image_size, strict=cfg.data.strict, log=log)
    if ds.train_y is None or ds.test_x is None:
        raise UserError(f"data {cfg.data.name!r} has no labels or no test split; evaluation needs both "
                        "(a folder with one sub-folder per class)")  # fmt: skip
    n_tr = len(ds.train_x) if ev.train_limit is None else min(ev.train_limit, len(ds.train_x))
    train_x, train_y = ds.train_x[:n_tr], torch.from_numpy(np.array(ds.train_y[:n_tr]))
    n_te = len(ds.test_x) if ev.test_limit is None else min(ev.test_limit, len(ds.test_x))
    test_x, test_y = ds.test_x[:n_te], torch.from_numpy(np.array(ds.test_y[:n_te]))
    y_np = train_y.numpy()
    subsets = {frac: balanced_subset(y_np, frac, ev.seed) for frac in ev.labels}

    encoders = {"pretrained": load_encoder(run_path)}
    if ev.baselines:
        encoders["random_init"] = load_encoder(run_path, random_init=True)
    feats = {}
    if any(not _needs_encoder(p) for p in ev.protocols):
        for name, enc in encoders.items():
            log(f"extracting {name} features of {len(train_x)} train + {len(test_x)} test images ...")
            feats[name] = (extract_features(enc, train_x, ev.batch_size, cfg.train.device),
                           extract_features(enc, test_x, ev.batch_size, cfg.train.device))  # fmt: skip
        if ev.baselines:
            feats["raw"] = (_raw_features(train_x), _raw_features(test_x))

    rows = []
    tuned_data = (np.asarray(train_x), train_y, np.asarray(test_x), test_y)
    tuned_kw = _finetune_kwargs(ev, cfg.train.device, log)
    for proto in ev.protocols:
        if _needs_encoder(proto):
            rows += _tuned_rows(proto, encoders, subsets, tuned_data, ds.num_classes, tuned_kw, log)
            continue
        fn = EVALUATIONS.get(proto)
        for frac, idx in subsets.items():
            idx = torch.from_numpy(idx)
            for name, (ftr, fte) in feats.items():
                acc = fn(ftr[idx], train_y[idx], fte, test_y, ds.num_classes,
                         k=ev.knn_k, temperature=ev.knn_temperature, seed=ev.seed)  # fmt: skip
                rows.append({"protocol": proto, "labels": frac, "encoder": name, "accuracy": round(acc, 4)})
    if ev.plot and ev.baselines and "finetune" not in ev.protocols:
        scratch = {"random_init": encoders["random_init"]}
        rows += _tuned_rows("finetune", scratch, subsets, tuned_data, ds.num_classes, tuned_kw, log)
    run = Path(run_path)
    (run / "eval.json").write_text(json.dumps(rows, indent=1))
    log(format_table(rows))
    log(f"wrote {run / 'eval.json'}")
    if ev.plot:
        test_f = feats["pretrained"][1] if "pretrained" in feats else None
        paths = _plots_and_report(run, cfg, ds, rows, encoders["pretrained"], test_x, test_y, test_f, log)
        log(f"wrote {', '.join(str(p) for p in paths)}")
    return rows


def _plots_and_report(run: Path, cfg: RunConfig, ds, rows: list[dict], encoder: Encoder, test_x, test_y,
                      test_f: torch.Tensor | None, log) -> list[Path]:  # fmt: skip
    """RUN/label_efficiency.png, RUN/embedding.png (t-SNE of a seeded subset of test embeddings), RUN/report.html."""
    from selfsup import report

    ev = cfg.eval
    curve = report.label_efficiency_plot(rows, run / "label_efficiency.png", f"{run.name}: label efficiency")
    n = min(ev.embedding_points, len(test_x))
    pick = np.sort(np.random.default_rng(ev.seed).choice(len(test_x), size=n, replace=False))
    if test_f is None:
        test_f = extract_features(encoder, np.asarray(test_x)[pick], ev.batch_size, cfg.train.device)
    else:
        test_f = test_f[pick]
    log(f"t-SNE of {n} test embeddings ...")
    names = ds.classes or [str(c) for c in range(int(test_y.max()) + 1)]
    title = f"{run.name}: t-SNE of {n} test embeddings (pretrained encoder)"
    emb = report.embedding_plot(run / "embedding.png", test_f.numpy(), test_y.numpy()[pick], names, title, ev.seed)

    encs = list(dict.fromkeys(r["encoder"] for r in rows))
    keys = list(dict.fromkeys((r["protocol"], r["labels"]) for r in rows))
    acc = {(r["protocol"], r["labels"], r["encoder"]): r["accuracy"] for r in rows}
    cell = lambda v: None if v is None else f"{100 * v:.2f}%"
    table = [[p, f"{100 * f:g}%", *[cell(acc.get((p, f, e))) for e in encs]] for p, f in keys]
    header = ["protocol", "labels", *[report.encoder_label(e) for e in encs]]
    pool = len(ds.train_x) if ev.train_limit is None else min(ev.train_limit, len(ds.train_x))
    settings = {"protocols": ", ".join(dict.fromkeys(r["protocol"] for r in rows)),
                "label fractions": ", ".join(f"{100 * f:g}%" for f in ev.labels),
                "labelled pool": f"{pool} training images", "test images": str(len(test_x)),
                "seed": str(ev.seed)}  # fmt: skip
    if any(r["protocol"] == "finetune" for r in rows):
        settings["finetune"] = (f"AdamW lr {ev.finetune_lr:g}, weight decay {ev.finetune_weight_decay:g}, "
                                f"layer decay {ev.finetune_layer_decay:g}, {ev.finetune_epochs} epochs of batch "
                                f"{ev.finetune_batch_size}, at least {ev.finetune_min_steps} steps"
                                + (f", at most {ev.finetune_max_steps}" if ev.finetune_max_steps else ""))  # fmt: skip
    sections = [("Run", [("kv", report.run_summary(cfg))])]
    cost_path = run / "cost.json"
    if cost_path.is_file():
        sections.append(("Pretraining cost", [("kv", report.cost_summary(json.loads(cost_path.read_text())))]))
    sections += [
        ("Evaluation", [("text", "Test accuracy (the numbers of eval.json). Supervised (from scratch) is the same "
                                 "architecture from random init, trained end to end with the fine-tuning recipe."),
                        ("table", (header, table)), ("kv", settings)]),
        ("Label efficiency", [("image", (curve, "Test accuracy against the labelled fraction of the training set."))]),
        ("Embedding", [("image", (emb, f"t-SNE of {n} test embeddings of the pretrained encoder, by class."))]),
    ]  # fmt: skip
    page = report.write_report(run / "report.html", f"selfsup eval: {run.name}", sections, subtitle=str(run))
    return [curve, emb, page]


def format_table(rows: list[dict]) -> str:
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    keys = list(dict.fromkeys((r["protocol"], r["labels"]) for r in rows))
    acc = {(r["protocol"], r["labels"], r["encoder"]): r["accuracy"] for r in rows}
    head = f"{'protocol':<9}{'labels':>8}" + "".join(f"{e:>13}" for e in encoders)
    lines = [head, "-" * len(head)]
    for proto, frac in keys:
        cells = "".join(f"{100 * acc[(proto, frac, e)]:>12.1f}%" if (proto, frac, e) in acc else f"{'-':>13}"
                        for e in encoders)  # fmt: skip
        lines.append(f"{proto:<9}{f'{100 * frac:g}%':>8}{cells}")
    return "\n".join(lines)


__all__ = ["evaluate", "load_encoder", "extract_features", "format_table", "balanced_subset", "knn_accuracy",
           "linear_accuracy", "finetune_accuracy", "classifier_accuracy", "param_groups"]  # fmt: skip
