"""Evaluate a run folder: frozen-feature protocols at several label fractions, with baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from selfsup.config import RunConfig, load_yaml, parse_labels, set_field
from selfsup.data import load_dataset
from selfsup.distributed import local_device
from selfsup.encoders import Encoder, build_encoder, encoder_kwargs
from selfsup.errors import UserError
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
    channels_last = any(isinstance(m, torch.nn.Conv2d) for m in encoder.modules())
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


def evaluate(run_path: str | Path, protocol: str | list[str] | None = None, labels=None, baselines: bool | None = None,
             log=print, **overrides) -> list[dict]:  # fmt: skip
    """Score the run's encoder (and baselines) with each protocol at each label fraction.

    Writes ``RUN/eval.json``: rows ``{"protocol", "labels", "encoder", "accuracy"}``.
    """
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
    for key, value in overrides.items():
        set_field(cfg, f"eval.{key}", value)
    ds = load_dataset(cfg.data.name, cfg.data.image_size, strict=cfg.data.strict, log=log)
    if ds.train_y is None or ds.test_x is None:
        raise UserError(f"data {cfg.data.name!r} has no labels or no test split; evaluation needs both "
                        "(a folder with one sub-folder per class)")  # fmt: skip
    n_tr = len(ds.train_x) if ev.train_limit is None else min(ev.train_limit, len(ds.train_x))
    train_x, train_y = ds.train_x[:n_tr], torch.from_numpy(np.array(ds.train_y[:n_tr]))
    n_te = len(ds.test_x) if ev.test_limit is None else min(ev.test_limit, len(ds.test_x))
    test_x, test_y = ds.test_x[:n_te], torch.from_numpy(np.array(ds.test_y[:n_te]))

    encoders = {"pretrained": load_encoder(run_path)}
    if ev.baselines:
        encoders["random_init"] = load_encoder(run_path, random_init=True)
    feats = {}
    for name, enc in encoders.items():
        log(f"extracting {name} features of {len(train_x)} train + {len(test_x)} test images ...")
        feats[name] = (extract_features(enc, train_x, ev.batch_size, cfg.train.device),
                       extract_features(enc, test_x, ev.batch_size, cfg.train.device))  # fmt: skip
    if ev.baselines:
        feats["raw"] = (_raw_features(train_x), _raw_features(test_x))

    rows = []
    y_np = train_y.numpy()
    for proto in ev.protocols:
        fn = EVALUATIONS.get(proto)
        for frac in ev.labels:
            idx = torch.from_numpy(balanced_subset(y_np, frac, ev.seed))
            for name, (ftr, fte) in feats.items():
                acc = fn(ftr[idx], train_y[idx], fte, test_y, ds.num_classes,
                         k=ev.knn_k, temperature=ev.knn_temperature, seed=ev.seed)  # fmt: skip
                rows.append({"protocol": proto, "labels": frac, "encoder": name, "accuracy": round(acc, 4)})
    (Path(run_path) / "eval.json").write_text(json.dumps(rows, indent=1))
    log(format_table(rows))
    return rows


def format_table(rows: list[dict]) -> str:
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    keys = list(dict.fromkeys((r["protocol"], r["labels"]) for r in rows))
    acc = {(r["protocol"], r["labels"], r["encoder"]): r["accuracy"] for r in rows}
    head = f"{'protocol':<9}{'labels':>8}" + "".join(f"{e:>13}" for e in encoders)
    lines = [head, "-" * len(head)]
    for proto, frac in keys:
        cells = "".join(f"{100 * acc[(proto, frac, e)]:>12.1f}%" for e in encoders)
        lines.append(f"{proto:<9}{f'{100 * frac:g}%':>8}{cells}")
    return "\n".join(lines)


__all__ = ["evaluate", "load_encoder", "extract_features", "format_table", "balanced_subset",
           "knn_accuracy", "linear_accuracy"]  # fmt: skip
