"""The command line: parse, build a config, call the library. User errors are one line, exit 2."""

from __future__ import annotations

import argparse
import sys
import typing

from selfsup.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UserError(f"{message} (see {self.prog} --help)")


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML config (e.g. a run's config.yaml); flags override it")
    p.add_argument("--data", help="fashion-mnist | digits | a folder of images (default fashion-mnist)")
    p.add_argument("--method", help="a pretext task from `selfsup list methods` (default simclr)")
    p.add_argument("--encoder", help="resnet18 | resnet50 | vit_tiny | vit_small (default: the method's; resnet18)")
    p.add_argument("--width", type=int, help="ResNet first-stage channels (default: 64 on a GPU, 16 on a CPU)")
    p.add_argument("--patch-size", type=int, help="ViT patch side (default 16 above 64 px, else 4)")
    p.add_argument("--budget", help="90s, 10m, 2h, 500steps or 3epochs (default 3m)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the paper's, scaled by batch/256)")
    p.add_argument("--optimizer", help="sgd | lars | adamw (default: the paper's)")
    p.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    p.add_argument("--image-size", type=int,
                   help="resize images to this side when caching (default: their own size, up to 64 px for folders)")
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--strict", action="store_true", default=None, help="folders: a corrupt file is an error")
    p.add_argument("--seed", type=int)
    _text_args(p)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--precision", help="auto | fp32 | bf16")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--checkpoint-every", help="a duration (2m) or step count (100steps)")
    p.add_argument("--out", help="the run folder (default runs/<data>-<method>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. train.warmup=0.05 or method.temperature=0.2")  # fmt: skip
    p.add_argument("--eval", metavar="PROTOCOLS", help="evaluate when done, e.g. knn,linear")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by `selfsup pretrain`")
    p.add_argument("--protocol", help="comma-separated: knn,linear,finetune (default knn,linear); verify: cosine")
    p.add_argument("--labels", help="label fractions, e.g. 1%%,10%%,100%%")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the random-init, raw-input and supervised-from-scratch rows")  # fmt: skip
    p.add_argument("--train-limit", type=int, help="cap the labelled pool at N samples")
    p.add_argument("--test-limit", type=int, help="score on the first N test samples only")
    p.add_argument("--plot", action="store_true",
                   help="also write RUN/label_efficiency.png, RUN/embedding.png and RUN/report.html")  # fmt: skip
    p.add_argument("--data", help="score on this data instead of the pretraining data (e.g. pretrain on "
                   "drosophila-upstream, evaluate on dna-splice); the run's data options apply")
    p.add_argument("--task", help="what is predicted: classify (default), verify (speaker verification, EER), "
                                  "ctc (speech to text, CER/WER)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="eval fields, e.g. knn_k=20, val_fraction=0.2, finetune_epochs=3, finetune_layer_decay=0.75")


def _audit_args(p: argparse.ArgumentParser) -> None:
    _eval_args(p)
    p.add_argument("--group", required=True, metavar="ATTR",
                   help="the group attribute to break results down by (synth-speech: speaker, accent, voice; a "
                        "CSV column; a folder's groups.csv column)")
    p.add_argument("--min-group-size", type=int,
                   help="groups with fewer test samples are reported as too small (default 20)")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for the 95%% intervals (default 500)")


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion-mnist", help="as for pretrain (default fashion-mnist)")
    p.add_argument("--pretrain-data", help="pretrain every method on this data and score on --data (e.g. "
                   "--data dna-splice --pretrain-data drosophila-upstream); default: --data itself")
    p.add_argument("--methods", default="all",
                   help="comma-separated methods (default: every method for the data's modality)")
    p.add_argument("--budget", default="5m", help="the same budget for each method: 90s, 5m, 500steps ...")
    p.add_argument("--out", help="the comparison folder (default runs/compare-<data>)")
    p.add_argument("--protocol", help="comma-separated: knn,linear,finetune (default: the task's, classify knn,linear)")
    p.add_argument("--labels", help="label fractions (default 1%%,10%%,100%%)")
    p.add_argument("--task", help="what is scored and ranked: classify (default), verify (EER), ctc (CER)")
    p.add_argument("--variants", metavar="NAME,...",
                   help="pretrain each method once per listed variant of its data, comma-separated among as-is (the "
                        "data as it is), imbalanced (resampled as --pretrain-groups says) and balance-by (resampled "
                        "when --pretrain-groups is given, then a --balance-by sampler), e.g. "
                        "--variants as-is,imbalanced,balance-by")
    p.add_argument("--group", metavar="ATTR", help="audit every run by this group (selfsup audit) and print the "
                   "per-group table of the runs side by side")
    p.add_argument("--train-limit", type=int, help="cap the labelled pool of the evaluation at N samples")
    p.add_argument("--test-limit", type=int, help="score on the first N test samples only")
    p.add_argument("--encoder", help="the same encoder for every method (default: each method's own)")
    p.add_argument("--width", type=int, help="ResNet first-stage channels for every ResNet run")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--limit", type=int, help="pretrain on the first N training images only")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--precision", help="auto | fp32 | bf16")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config field for every run")
    _text_args(p)


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by `selfsup pretrain --method gpt`")
    p.add_argument("--prompt", default="", help="the text to continue (default: none, start a new document)")
    p.add_argument("--max-tokens", type=int, default=50, help="at most this many new tokens (default 50)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 is greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens; 0: all (default 50)")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed; sample i uses seed + i (default 0)")
    p.add_argument("--num", type=int, default=1, help="how many samples (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="selfsup", description="Self-supervised pretraining and evaluation.")
    parser.add_argument("--version", action="store_true")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _pretrain_args(sub.add_parser("pretrain", help="pretrain an encoder with a pretext task"))
    _eval_args(sub.add_parser("eval", help="evaluate a run: kNN, linear probe, fine-tuning at label fractions"))
    _audit_args(sub.add_parser("audit", help="evaluate a run by group: per-group metrics with intervals, gaps, "
                                             "and what the features leak about the group"))
    _compare_args(sub.add_parser("compare", help="pretrain several methods on the same data and budget, rank them"))
    _generate_args(sub.add_parser("generate", help="continue a prompt with a causal (gpt) run"))
    lst = sub.add_parser("list", help="what exists: methods, encoders, datasets, tasks, protocols")
    kinds = ["all", "methods", "encoders", "datasets", "tasks", "protocols"]
    lst.add_argument("what", nargs="?", default="all", choices=kinds)
    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="data_command", parser_class=_Parser)
    get = data_sub.add_parser("get", help="locate or fetch, verify and cache a dataset (may use the network)")
    get.add_argument("name")
    get.add_argument("--size", help="synth-speech: small (minutes of audio, for tests) or default (about 4.7 hours)")
    exp = sub.add_parser("export", help="export a run's encoder: hf (transformers from_pretrained) or safetensors")
    exp.add_argument("run", help="a run folder written by `selfsup pretrain`")
    exp.add_argument("out", help="the folder to write (new or empty, unless --force)")
    exp.add_argument("--format", default="safetensors", help="hf | safetensors (default safetensors)")
    exp.add_argument("--force", action="store_true", help="write into OUT even if it is not empty")
    return parser


def _text_args(p) -> None:
    p.add_argument("--max-len", type=int, help="text: tokens per sample (default 128 on a CPU, 512 on a GPU)")
    p.add_argument("--vocab-size", type=int, help="text: the size of the tokenizer trained for the run (8192)")
    p.add_argument("--tokenizer", help="text: reuse this tokenizer.json instead of training one")
    p.add_argument("--text-field", help="CSV / TSV / JSONL: the column holding the text (default text)")
    p.add_argument("--label-field", help="CSV / TSV / JSONL: the label column, if any (default label)")
    p.add_argument("--blank-line-docs", action="store_true", default=None,
                   help=".txt: documents separated by blank lines (default: one per line)")
    p.add_argument("--sequence-field", help="sequences in CSV / TSV: the column holding them (default sequence)")
    p.add_argument("--alphabet", help="sequences: auto | dna | rna | protein (default auto: detected)")
    p.add_argument("--soft-mask", help="sequences: drop (upper-case soft-masked residues; default) | keep")
    p.add_argument("--kmer", type=int, help="sequences: residues per token, 1 (default) or k-mers (3..6 for DNA)")
    p.add_argument("--group-column", dest="group_columns", action="append", metavar="NAME",
                   help="CSV / TSV / JSONL: a column of per-sample groups for `selfsup audit` (repeatable); folders "
                        "read theirs from a groups.csv (file,<attr>...) beside the files")
    p.add_argument("--pretrain-groups", metavar="ATTR=VALUE:SHARE,...",
                   help="resample the pretraining data to these group shares at the same size, e.g. "
                        "accent=en-sc:0.02 (the other values share the rest)")
    p.add_argument("--balance-by", metavar="ATTR",
                   help="pretrain (and fine-tune) with a sampler that draws each value of ATTR equally often")


TEXT_FIELDS = ("max_len", "vocab_size", "tokenizer", "text_field", "label_field", "blank_line_docs",
               "sequence_field", "alphabet", "soft_mask", "kmer", "group_columns", "pretrain_groups", "balance_by")


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r} is malformed; use KEY=VALUE, e.g. train.warmup=0.05")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _eval_kwargs(a, extra: dict) -> dict:
    """The keyword arguments of ``evaluate`` / ``audit``: ``--set`` fields, the flags' ``extra`` fields over them,
    and the fields that are also parameters (labels, baselines, plot, task) from their flag, else from ``--set``
    (coerced as the eval config's field: ``--set baselines=false`` is ``--no-baselines``)."""
    from selfsup.config import EvalConfig, _coerce

    sets = {**_kv(a.set), **extra}
    named = {"labels": a.labels, "baselines": False if a.no_baselines else None,
             "plot": True if getattr(a, "plot", False) else None, "task": a.task}  # fmt: skip
    hints = typing.get_type_hints(EvalConfig)
    for key in named:
        value = sets.pop(key, None)
        if named[key] is None and value is not None:
            named[key] = value if key == "labels" else _coerce(value, hints[key], f"eval.{key}")
    return {**named, **sets}


def _trained(run) -> str:
    """': 419 steps in 2m00s of training (+4s timing the first steps), 447 samples/s' from RUN/cost.json."""
    import json
    from pathlib import Path

    from selfsup.fmt import fmt_duration

    try:
        c = json.loads((Path(run) / "cost.json").read_text())
        timing = f" (+{fmt_duration(c['calibration_s'])} timing the first steps)" if c.get("calibration_s") else ""
        return (f": {c['steps']} steps in {fmt_duration(c['wall_s'])} of training{timing}, "
                f"{c['samples_per_s']:.0f} samples/s")  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _cmd_pretrain(a) -> None:
    from selfsup import api

    if a.resume:
        run = api.pretrain(resume=a.resume)
    else:
        names = (
            "data method encoder width patch_size budget batch_size lr optimizer accumulate image_size limit "
            "strict seed device precision compile checkpoint_every out"
        ).split()
        fields = {k: getattr(a, k) for k in [*names, *TEXT_FIELDS]}
        fields.update({k.replace(".", "__"): v for k, v in _kv(a.set).items()})
        run = api.pretrain(config=a.config, **fields)
    from selfsup.distributed import is_main

    if is_main():
        print(f"run saved in {run.path}{_trained(run.path)}")
        if a.eval:
            api.evaluate(run.path, protocol=a.eval)


def _cmd_eval(a) -> None:
    from selfsup import api

    limits = {k: v for k, v in (("train_limit", a.train_limit), ("test_limit", a.test_limit), ("data", a.data))
              if v is not None}  # fmt: skip
    api.evaluate(a.run, protocol=a.protocol, **_eval_kwargs(a, limits))


def _cmd_audit(a) -> None:
    from selfsup.evaluate.audit import audit

    if a.plot:
        raise UserError("selfsup audit always writes its chart and report.html; leave out --plot")
    extra = {k: v for k, v in (("train_limit", a.train_limit), ("test_limit", a.test_limit), ("data", a.data),
                               ("min_group_size", a.min_group_size), ("bootstrap", a.bootstrap)) if v is not None}
    kwargs = _eval_kwargs(a, extra)
    kwargs.pop("plot")  # refused above
    audit(a.run, group=a.group, protocol=a.protocol, **kwargs)


def _cmd_compare(a) -> None:
    from selfsup.compare import SHARED_FLAGS, compare

    _kv(a.set)  # validate early
    text_sets = [f"data.{k}={','.join(v) if isinstance(v, list) else v}" for k in TEXT_FIELDS
                 if (v := getattr(a, k)) is not None]  # fmt: skip
    compare(data=a.data, pretrain_data=a.pretrain_data, methods=a.methods, budget=a.budget, out=a.out,
            protocol=a.protocol, labels=a.labels, task=a.task, variants=a.variants, group=a.group,
            train_limit=a.train_limit, test_limit=a.test_limit, sets=[*text_sets, *a.set],
            **{k: getattr(a, k) for k in SHARED_FLAGS if k != "budget"})  # fmt: skip


def _cmd_generate(a) -> None:
    from selfsup import api

    texts = api.generate(a.run, a.prompt, max_tokens=a.max_tokens, temperature=a.temperature, top_k=a.top_k,
                         seed=a.seed, num=a.num)  # fmt: skip
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} (seed {a.seed + i})")
        print(text)


def _cmd_list(a) -> None:
    import selfsup.data  # noqa: F401  (registers)
    import selfsup.evaluate  # noqa: F401
    import selfsup.methods  # noqa: F401
    from selfsup.registry import DATASETS, ENCODERS, METHODS, PROTOCOLS, TASKS

    if a.what in ("all", "methods"):
        by_modality: dict[str, list[str]] = {}
        for name, cls in METHODS.items():  # token methods listed under the raw data they take: text, sequences
            kinds = getattr(cls, "raw_kinds", ("text",)) if cls.modality == "tokens" else (cls.modality,)
            for kind in kinds:
                by_modality.setdefault({"sequence": "sequences"}.get(kind, kind), []).append(name)
        print("methods:")
        for modality, names in sorted(by_modality.items()):
            print(f"  {modality}: {', '.join(names)}")
    for title, reg in (("encoders", ENCODERS), ("datasets", DATASETS), ("tasks", TASKS), ("protocols", PROTOCOLS)):
        if a.what in ("all", title):
            print(f"{title}: {', '.join(reg.names())}")


def main(argv: list[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
        if a.version:
            from selfsup import __version__

            print(__version__)
        elif a.command == "pretrain":
            _cmd_pretrain(a)
        elif a.command == "eval":
            _cmd_eval(a)
        elif a.command == "audit":
            _cmd_audit(a)
        elif a.command == "compare":
            _cmd_compare(a)
        elif a.command == "list":
            _cmd_list(a)
        elif a.command == "generate":
            _cmd_generate(a)
        elif a.command == "data" and a.data_command == "get":
            from selfsup.data import fetch

            fetch(a.name, size=a.size)
        elif a.command == "export":
            from selfsup.export import export

            export(a.run, a.out, a.format, a.force)
        else:
            build_parser().print_help()
            return 2
    except UserError as e:
        print(f"selfsup: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted; the last checkpoint is intact (continue with --resume RUN)", file=sys.stderr)
        return 130
    return 0
