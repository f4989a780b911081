"""The run folder, read and written in one place: the resolved config, ``encoder.json``, checkpoints,
``metrics.jsonl`` upkeep, and ``load_encoder``. Training and evaluation both import this module;
evaluation never imports ``train``.

A run folder: ``config.yaml`` (the resolved config, written before step 1), ``encoder.json``
(builder, spec and params of the encoder, and which weights in the checkpoint are the encoder to
evaluate), ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``, ``cost.json``, and what evaluation
adds (``eval.json``, ``eval_cost.json``, plots, ``report.html``). ``eval.json`` accumulates: an evaluation
replaces the rows of the same task, protocol, label fraction and encoder and keeps the others
(``write_eval_rows``), so ``--task verify`` and then the default evaluation leave both in it.

Checkpoint layout: ``RUN/checkpoints/step-000123/{model.safetensors, trainer.pt}`` and a
``RUN/checkpoints/latest`` file naming the newest complete one. A checkpoint is
written into a temporary folder, flushed, renamed into place, and only then is
``latest`` replaced (itself written to a temporary file and renamed).
``trainer.pt`` holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``; weights are safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.config import RunConfig, load_yaml, to_dict
from selfsup.errors import UserError

CONFIG, ENCODER_JSON, METRICS = "config.yaml", "encoder.json", "metrics.jsonl"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


EVAL = "eval.json"
SCORED_WITH = "compare_eval.json"  # compare's record of the settings eval.json was made with (dropped on a new write)
EVAL_KEY = ("task", "protocol", "labels", "encoder")  # an evaluation's rows replace those with the same key


def read_eval_rows(run_dir: str | Path) -> list[dict]:
    """``RUN/eval.json``'s rows ([] when there is none); a file that is not a list of rows is a UserError."""
    path = Path(run_dir) / EVAL
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except ValueError:
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "protocol" in r for r in rows):
        raise UserError(f"{path}: not a list of evaluation rows; move it away and evaluate again")
    return rows


def write_eval_rows(run_dir: str | Path, rows: list[dict]) -> list[dict]:
    """Merge ``rows`` into ``RUN/eval.json``: rows of an earlier evaluation with the same (task, protocol, labels,
    encoder) as a new row are dropped, all others kept (rows without a task are classify's). Returns what it wrote.
    ``compare``'s record of the settings (SCORED_WITH) no longer holds and is removed; compare writes it again."""
    key = lambda r: (r.get("task", "classify"), *(r.get(k) for k in EVAL_KEY[1:]))  # noqa: E731
    new = {key(r) for r in rows}
    merged = [r for r in read_eval_rows(run_dir) if key(r) not in new] + list(rows)
    (Path(run_dir) / SCORED_WITH).unlink(missing_ok=True)
    atomic_write_text(Path(run_dir) / EVAL, json.dumps(merged, indent=1))
    return merged


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, trainer_state: dict, keep: int = 2) -> Path:
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(state_tensors(model), str(tmp / "model.safetensors"))
    torch.save(trainer_state, tmp / "trainer.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p != final)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "model.safetensors").is_file() else None


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(ckpt / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - a damaged file is a user-facing problem
        raise UserError(f"{ckpt / 'model.safetensors'} cannot be read ({type(e).__name__}); "
                        "delete that checkpoint folder to fall back to an older one") from None  # fmt: skip


def load_trainer_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file is a user-facing problem
        raise UserError(f"{ckpt / 'trainer.pt'} cannot be read ({type(e).__name__}); "
                        "delete that checkpoint folder to fall back to an older one") from None  # fmt: skip


def checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


# ----------------------------------------------------------------------------- config and encoder.json


def save_config(run_dir: Path, cfg: RunConfig) -> None:
    import yaml

    atomic_write_text(Path(run_dir) / CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_config(run_dir: str | Path) -> RunConfig:
    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise UserError(f"{run} is not a run folder (no {CONFIG}); pass the --out folder of `selfsup pretrain`")
    cfg = load_yaml(run / CONFIG)
    if cfg.encoder.name and cfg.encoder.params:  # resolved when saved; fields added since take their old values
        from selfsup.encoders import saved_params

        cfg.encoder.params = saved_params(cfg.encoder.name, cfg.encoder.params)
    if cfg.train.group_by_length is None:  # saved resolved: only a run written before the field lacks it
        cfg.train.group_by_length = False
    return cfg


def write_encoder_json(run_dir: Path, name: str, spec, params: dict, weights: str = "encoder") -> None:
    """What ``load_encoder`` needs: the builder, the spec, the resolved params, and the module of the
    method whose weights are the encoder to evaluate (``encoder``; DINO's ``teacher_encoder``)."""
    from selfsup.data.spec import spec_to_dict

    info = {"builder": name, "spec": spec_to_dict(spec), "params": params, "weights": weights}
    atomic_write_text(Path(run_dir) / ENCODER_JSON, json.dumps(info, indent=1))


def read_encoder_json(run_dir: str | Path) -> dict:
    path = Path(run_dir) / ENCODER_JSON
    if not path.is_file():
        raise UserError(f"{path} is missing; the run was not started (or is from an older selfsup): "
                        "pretrain it again")  # fmt: skip
    try:
        info = json.loads(path.read_text())
        info = {k: info[k] for k in ("builder", "spec", "params", "weights")}
        params = dict(info["params"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is damaged; delete the run folder and pretrain again") from None
    from selfsup.encoders import saved_params

    return {**info, "params": saved_params(info["builder"], params)}


def build_run_encoder(run_dir: str | Path, seed: int = 0):
    """The run's encoder architecture at its (seeded) random initialization, and encoder.json's content."""
    from selfsup.data.spec import spec_from_dict
    from selfsup.encoders import build_encoder

    info = read_encoder_json(run_dir)
    spec = spec_from_dict(info["spec"], str(Path(run_dir) / ENCODER_JSON))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(info["builder"], spec, info["params"])
    return encoder, info


def load_encoder(run_dir: str | Path, random_init: bool = False):
    """The run's trained encoder (a plain nn.Module, eval mode), rebuilt from ``encoder.json`` and the latest
    checkpoint; ``random_init`` gives the same architecture at its seeded random initialization. A folder written
    by ``selfsup export RUN --format safetensors OUT`` (``model.safetensors`` + ``encoder.json``) loads too."""
    run = Path(run_dir)
    if not random_init and not (run / CONFIG).exists() and (run / "model.safetensors").is_file():
        from selfsup.export import load_exported

        return load_exported(run)
    cfg = load_config(run)
    encoder, info = build_run_encoder(run, cfg.train.seed)
    if not random_init:
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise UserError(f"{run} has no checkpoint yet; let `selfsup pretrain` finish or --resume it")
        prefix = info["weights"] + "."
        state = {k.removeprefix(prefix): v for k, v in load_weights(ckpt).items() if k.startswith(prefix)}
        try:
            encoder.load_state_dict(state)
        except RuntimeError as e:
            raise UserError(f"{ckpt} does not hold the encoder {run / ENCODER_JSON} describes "
                            f"({str(e).splitlines()[0]}); the run folder is inconsistent") from None  # fmt: skip
    return encoder.eval()


# ----------------------------------------------------------------------------- progress of a run


def is_finished(run_dir: str | Path) -> bool:
    """The run reached its last step: its latest checkpoint is step ``train.steps`` of its config."""
    run = Path(run_dir)
    ckpt = latest_checkpoint(run)
    if ckpt is None or not (run / CONFIG).is_file():
        return False
    try:
        steps = load_yaml(run / CONFIG).train.steps
    except UserError:
        return False
    return steps is not None and checkpoint_step(ckpt) == steps


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the ``metrics.jsonl`` rows logged after ``step`` (a resumed run logs them again)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:  # a line cut short by a kill
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
