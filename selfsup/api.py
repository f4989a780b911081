"""The Python API: thin wrappers that build a config and call the pieces."""

from __future__ import annotations

from pathlib import Path

from selfsup.compare import compare
from selfsup.config import RunConfig, load_yaml, set_field
from selfsup.evaluate import evaluate
from selfsup.evaluate.audit import audit
from selfsup.generate import generate
from selfsup.runs import load_config, load_encoder
from selfsup.train import Run
from selfsup.train import pretrain as _pretrain

# short keyword -> config field
ALIASES = {
    "data": "data.name", "image_size": "data.image_size", "limit": "data.limit", "strict": "data.strict",
    "method": "method.name", "encoder": "encoder.name", "width": "encoder.width",
    "patch_size": "encoder.patch_size",
    "budget": "train.budget", "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed",
    "device": "train.device", "precision": "train.precision", "accumulate": "train.accumulate",
    "optimizer": "train.optimizer", "compile": "train.compile", "checkpoint_every": "train.checkpoint_every",
    "max_len": "data.max_len", "vocab_size": "data.vocab_size", "tokenizer": "data.tokenizer",
    "text_field": "data.text_field", "label_field": "data.label_field", "blank_line_docs": "data.blank_line_docs",
    "sequence_field": "data.sequence_field", "alphabet": "data.alphabet", "soft_mask": "data.soft_mask",
    "kmer": "data.kmer", "kmer_overlap": "data.kmer_overlap",
    "group_columns": "data.group_columns", "pretrain_groups": "data.pretrain_groups", "balance_by": "data.balance_by",
}  # fmt: skip


def build_config(config: str | Path | None = None, **fields) -> RunConfig:
    """A RunConfig from an optional YAML file, then keyword fields (aliases or dotted names)."""
    cfg = load_yaml(config) if config else RunConfig()
    for key, value in fields.items():
        if value is None:
            continue
        if key == "out":
            cfg.out = str(value)
        elif key == "params":
            cfg.method.params.update(value)
        elif key == "encoder_params":
            cfg.encoder.params.update(value)
        else:
            set_field(cfg, ALIASES.get(key, key.replace("__", ".")), value)
    return cfg.validate()


def pretrain(config: str | Path | None = None, resume: str | Path | None = None, log=print, **fields) -> Run:
    """``selfsup.pretrain(data="fashion-mnist", method="simclr", budget="10m", out="runs/x")``.

    ``resume=RUN`` continues the run saved in that folder with its own config.
    """
    if resume is not None:
        cfg = load_config(resume)
        cfg.out = str(resume)
        return _pretrain(cfg, resume=True, log=log)
    cfg = build_config(config, **fields)
    if fields.get("out") is None and not config:  # default run folder: runs/<data>-<method>
        cfg.out = f"runs/{Path(cfg.data.name).name}-{cfg.method.name}"
    return _pretrain(cfg, log=log)


__all__ = ["pretrain", "evaluate", "audit", "compare", "generate", "load_encoder", "build_config", "Run"]
