"""Typed configuration: dataclasses are the single source of truth.

YAML only serializes them; the CLI sets their fields. Every value a user can
get wrong is validated here with a message that names the field and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfsup.errors import UserError

# ----------------------------------------------------------------------------- budget

_DURATION = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|steps?|epochs?)\s*$")


@dataclass(frozen=True)
class Budget:
    """A training budget: wall-clock seconds, optimizer steps or epochs."""

    kind: str  # "time" | "steps" | "epochs"
    value: float

    def __str__(self) -> str:
        if self.kind == "time":
            return f"{self.value:g}s"
        return f"{int(self.value)}{self.kind}"


def parse_budget(text: str, field_name: str = "train.budget") -> Budget:
    m = _BUDGET_RE.match(str(text))
    if not m:
        raise UserError(
            f"{field_name} {text!r} is malformed; use a duration (90s, 10m, 2h), "
            "a step count (500steps) or an epoch count (3epochs)"
        )
    number, unit = float(m.group(1)), m.group(2)
    if number <= 0:
        raise UserError(f"{field_name} {text!r} must be positive")
    if unit in _DURATION:
        return Budget("time", number * _DURATION[unit])
    if not number.is_integer():
        raise UserError(f"{field_name} {text!r}: steps and epochs must be whole numbers")
    return Budget("steps" if unit.startswith("step") else "epochs", number)


def parse_labels(text: str | float | list) -> list[float]:
    """'1%,10%,100%' or '0.01,0.1,1' -> [0.01, 0.1, 1.0]."""
    items = text if isinstance(text, list) else str(text).split(",")
    out = []
    for item in items:
        s = str(item).strip()
        try:
            v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
        except ValueError:
            raise UserError(f"--labels item {s!r} is malformed; use e.g. 1%,10%,100% or 0.01,0.1,1") from None
        if not 0 < v <= 1:
            raise UserError(f"--labels item {s!r} must be a fraction in (0, 100%]")
        out.append(v)
    if not out:
        raise UserError("--labels is empty; use e.g. 1%,10%,100%")
    return out


# ----------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # a registered dataset name or a folder of images
    image_size: int | None = None  # None: the dataset's native size (folders: their own size up to 64 px)
    limit: int | None = None  # use only the first N training samples
    strict: bool = False  # folders: a corrupt file is an error instead of skipped
    # text (and other token data); ignored by images
    max_len: int | None = None  # tokens per sample; None: 128 on a CPU, 512 on a GPU
    vocab_size: int = 8192  # of a tokenizer trained for the run
    tokenizer: str | None = None  # a tokenizer.json to reuse instead of training one
    text_field: str = "text"  # CSV / TSV / JSONL: the column holding the text
    label_field: str = "label"  # ... and the optional label column
    blank_line_docs: bool = False  # .txt: documents separated by blank lines instead of one per line
    # biological sequences (FASTA / FASTQ, or CSV / TSV with a sequence column); ignored by other data
    sequence_field: str = "sequence"  # CSV / TSV: the column holding the sequence
    alphabet: str = "auto"  # auto | dna | rna | protein
    soft_mask: str = "drop"  # drop: lower-case (soft-masked) residues are upper-cased; keep: tokens of their own
    kmer: int | None = None  # residues per token: 1 (single residues) or k-mers (DNABERT: 3..6); None: the
    # method's choice (seq-contrastive: 6 for DNA / RNA), else 1
    kmer_overlap: bool = True  # k-mers: overlapping (stride 1, DNABERT) or non-overlapping (stride k)
    # groups: per-sample attributes (speaker, accent, a CSV column, a folder's groups.csv) for `selfsup audit`;
    # pretraining reads them only where pretrain_groups / balance_by ask
    group_columns: list[str] = field(default_factory=list)  # CSV / TSV / JSONL: columns read as groups
    pretrain_groups: str | None = None  # "ATTR=VALUE:SHARE,...": resample the pretraining data to these shares of
    # the same total size (the other values of ATTR share the rest in their own proportions)
    balance_by: str | None = None  # ATTR: pretrain (and fine-tune) with a sampler that draws each value equally


@dataclass
class EncoderConfig:
    name: str | None = None  # None: the method's default (resnet18; vit_tiny for mae)
    params: dict[str, Any] = field(default_factory=dict)  # validated by the builder's Params (width, patch_size, ...)


@dataclass
class MethodConfig:
    name: str = "simclr"
    params: dict[str, Any] = field(default_factory=dict)  # validated by the method's Params


@dataclass
class TrainConfig:
    budget: str = "3m"
    batch_size: int | None = None  # None: the method's batch for the device (256 on a GPU; on a CPU see its defaults)
    optimizer: str | None = None  # None: the method's paper default (sgd | lars | adamw)
    lr: float | None = None  # None: the method's base lr scaled by batch_size / 256
    weight_decay: float | None = None
    warmup: float = 0.1  # fraction of the steps spent in linear warm-up
    warmup_steps: int | None = None  # resolved: int(warmup * steps) of the first plan (a duration: of the timed plan)
    first_plan: list[int] | None = None  # a re-planned duration budget: the step count in force before each re-plan
    replanned_at: list[int] | None = None  # ... and the steps of the re-plans (one int each in older configs)
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA) | fp32 | bf16
    channels_last: bool | None = None  # None: selfsup.precision.channels_last_for (convnets; on CPU >= 8 channels)
    compile: bool = False
    sync_bn: bool | None = None  # None: the method's choice under DDP (SimCLR: on, the paper's global BN)
    group_by_length: bool | None = None  # clips of ragged length (audio): batches of similar lengths, less padding
    # (selfsup.data.batching); None: the method's choice (on for tera and hubert, which read whole clips)
    checkpoint_every: str = "2m"  # a duration or a step count
    keep_checkpoints: int = 2
    log_every: int = 10
    steps: int | None = None  # total optimizer steps: from a step/epoch budget, or timed from a duration


# Fine-tuning epochs, AdamW peak lr and LP-FT (the head fit on frozen features first) by input kind. Images: MAE's
# recipe scaled to small images, no LP-FT (not measured). Text: 3 epochs (BERT's 2-4), lr 1e-3 chosen on validation
# over 3e-3 and 3e-4 for the tiny text transformer, and LP-FT, which raised the pretrained encoder's validation
# accuracy at 1% / 10% of IMDB's labels (docs/text-defaults.md).
# (epochs, lr, LP-FT) per input kind; sequences: 10 epochs chosen on dna-splice's validation split over 3 and 30
# (docs/sequences.md): its short rows need more passes than text's long documents. "KIND/TASK" keys hold a task's own
# recipe on that input: speech to text (audio/ctc) trains a head from scratch over every frame and needs many more
# passes than an utterance label; epochs and lr chosen on synth-speech's validation CER (docs/speech.md)
FINETUNE_DEFAULTS = {"image": (10, 3e-3, False), "tokens": (3, 1e-3, True), "sequence": (10, 1e-3, True),
                     "audio/ctc": (120, 3e-3, False)}  # fmt: skip


@dataclass
class EvalConfig:
    task: str = "classify"  # what is predicted: classify (accuracy), verify (speaker EER), ctc (speech to text: CER)
    data: str | None = None  # the data scored on; None: the pretraining data (data.name). Pretrain on one corpus,
    # evaluate on another (e.g. drosophila-upstream -> dna-splice); the other data.* options apply to both
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])  # knn | linear | finetune | cosine;
    # a task without these protocols uses its own defaults (verify: cosine; ctc: linear)
    labels: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    baselines: bool = True  # add random-init and raw-pixel rows (finetune: supervised from scratch)
    knn_k: int = 200
    knn_temperature: float = 0.07
    batch_size: int = 512
    val_fraction: float = 0.1  # seeded, class-stratified validation split carved from labelled train
    train_limit: int | None = None  # cap on the labelled training split, before validation is carved (None: all)
    test_limit: int | None = None  # cap on the test split (None: all of it; for quick checks)
    seed: int = 0
    windows: int = 4  # text: a document longer than the context is read as up to this many windows of it (the
    # features: their mean, weighted by tokens); 1 reads the first window only
    # finetune: encoder + linear head, AdamW, warm-up + cosine (MAE's recipe, scaled to small images)
    finetune_epochs: int | None = None  # passes over the labelled subset; None: FINETUNE_DEFAULTS for the modality
    finetune_min_steps: int = 100  # at least this many steps, so 1% of the labels still trains
    finetune_max_steps: int | None = None  # cap on the steps (None: none; e.g. 1000 for 100% labels on a CPU)
    finetune_batch_size: int = 64
    finetune_lr: float | None = None  # AdamW peak lr; None: FINETUNE_DEFAULTS (ViTs: ~5e-4 with layer decay 0.75)
    finetune_weight_decay: float = 0.05
    finetune_layer_decay: float = 1.0  # layer-wise lr decay (BEiT/MAE: 0.75 for ViT-B); 1.0 = off
    finetune_probe_first: bool | None = None  # LP-FT: the head starts from a logistic regression on the frozen
    # features; None: FINETUNE_DEFAULTS for the modality
    # ctc, linear protocol: linear CTC heads on the frozen tokens at every lr x L2, scored on validation after each
    # of ctc_epochs epochs (at least 10 steps each); the best on validation CER is kept (selfsup/evaluate/ctc.py).
    # The epochs chosen on validation are the regularizer; an L2 grid (AdamW's decoupled decay) is optional. Epochs
    # past ctc_max_steps steps are left out (the first is always run). The grid was widened on validation
    # (docs/speech.md): with at most 20 epochs, the head chosen was always the last epoch's.
    ctc_lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2])
    ctc_weight_decays: list[float] = field(default_factory=lambda: [0.0])
    ctc_epochs: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320])
    ctc_max_steps: int | None = 10_000
    # ctc, bilstm protocol: SUPERB's recurrent CTC head (2 BiLSTM layers, then linear) on the frozen tokens, scored
    # on validation after each of ctc_lstm_epochs epochs; the best epoch is kept (selfsup/evaluate/ctc_lstm.py)
    ctc_lstm_hidden: int = 256  # units per direction (SUPERB: 1024)
    ctc_lstm_layers: int = 2
    ctc_lstm_lr: float = 1e-3
    ctc_lstm_epochs: list[int] = field(default_factory=lambda: [10, 20, 40, 80])
    ctc_lstm_batch_size: int = 16
    # audit (selfsup/evaluate/audit.py): metrics per group of data.groups[group]
    group: str | None = None  # the attribute the audit breaks results down by (e.g. accent)
    min_group_size: int = 20  # a group with fewer test samples is reported as too small, not as a number
    bootstrap: int = 500  # bootstrap resamples of the test samples (verify: trials) for the 95% intervals
    audit_trials: int = 1000  # verify: same-speaker trials per group (and as many impostor trials) in the audit
    ctc_batch_size: int = 32
    verify_trials: int = 20000  # verify: at most this many same-speaker trials per half (and as many different)
    plot: bool = False  # write label_efficiency.png, embedding.png and report.html into the run
    embedding_points: int = 2000  # test embeddings in the t-SNE picture (a seeded subset)

    def for_modality(self, kind: str) -> EvalConfig:
        """Fill the fine-tuning fields left open with the defaults of the run's input kind ("image", "tokens",
        "sequence": tokens of residues or k-mers; "audio"), or of that kind and ``task`` where they have their own
        ("audio/ctc")."""
        key = f"{kind}/{self.task}"
        epochs, lr, probe_first = FINETUNE_DEFAULTS.get(key) or FINETUNE_DEFAULTS.get(kind, FINETUNE_DEFAULTS["image"])
        self.finetune_epochs = epochs if self.finetune_epochs is None else self.finetune_epochs
        self.finetune_lr = lr if self.finetune_lr is None else self.finetune_lr
        self.finetune_probe_first = probe_first if self.finetune_probe_first is None else self.finetune_probe_first
        return self

    def validate(self) -> EvalConfig:
        positive = ("knn_k", "batch_size", "finetune_epochs", "finetune_batch_size", "embedding_points", "windows",
                    "ctc_batch_size", "ctc_max_steps", "ctc_lstm_hidden", "ctc_lstm_layers", "ctc_lstm_batch_size",
                    "verify_trials", "min_group_size", "bootstrap",
                    "audit_trials")  # fmt: skip
        for key in ("ctc_lrs", "ctc_weight_decays", "ctc_epochs", "ctc_lstm_epochs"):
            values = getattr(self, key)
            if not values or any(v < 0 for v in values) or (key != "ctc_weight_decays" and any(v <= 0 for v in values)):
                raise UserError(f"eval.{key}={values} must be a non-empty list of "
                                f"{'non-negative' if key == 'ctc_weight_decays' else 'positive'} numbers")  # fmt: skip
        for key in positive:
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"eval.{key}={getattr(self, key)} must be at least 1")
        for key in ("train_limit", "test_limit", "finetune_max_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"eval.{key}={getattr(self, key)} must be at least 1 (or none for no cap)")
        if self.finetune_min_steps < 0:
            raise UserError(f"eval.finetune_min_steps={self.finetune_min_steps} must be 0 or more")
        positive_floats = ("knn_temperature", "finetune_lr", "ctc_lstm_lr")
        bad = next((k for k in positive_floats if getattr(self, k) is not None and getattr(self, k) <= 0), None)
        if bad:
            raise UserError(f"eval.{bad}={getattr(self, bad)} must be positive")
        if self.finetune_weight_decay < 0:
            raise UserError(f"eval.finetune_weight_decay={self.finetune_weight_decay} must be 0 or more")
        if not 0 < self.finetune_layer_decay <= 1:
            raise UserError(f"eval.finetune_layer_decay={self.finetune_layer_decay} must be in (0, 1]; 1 is off")
        if not self.protocols:
            raise UserError("eval.protocols is empty; use e.g. --protocol knn,linear,finetune")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"eval.val_fraction={self.val_fraction} must be a fraction in (0, 1)")
        return self


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str = "runs/run"

    def validate(self) -> RunConfig:
        self.eval.validate()
        t = self.train
        parse_budget(t.budget)
        parse_budget(t.checkpoint_every, "train.checkpoint_every")
        if t.batch_size is not None and t.batch_size < 2:
            raise UserError(f"train.batch_size={t.batch_size} must be at least 2")
        if t.accumulate < 1:
            raise UserError(f"train.accumulate={t.accumulate} must be at least 1")
        if not 0 <= t.warmup < 1:
            raise UserError(f"train.warmup={t.warmup} must be a fraction in [0, 1)")
        if t.precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"train.precision={t.precision!r}; choose auto, fp32 or bf16")
        if t.optimizer not in (None, "sgd", "lars", "adamw"):
            raise UserError(f"train.optimizer={t.optimizer!r}; choose sgd, lars or adamw")
        if t.lr is not None and not t.lr > 0:
            raise UserError(f"train.lr={t.lr} must be positive (--lr); leave it out for the method's default")
        if t.weight_decay is not None and t.weight_decay < 0:
            raise UserError(f"train.weight_decay={t.weight_decay} must be 0 or more")
        if t.steps is not None and t.steps < 1:
            raise UserError(f"train.steps={t.steps} must be at least 1")
        if t.warmup_steps is not None and t.warmup_steps < 0:
            raise UserError(f"train.warmup_steps={t.warmup_steps} must be 0 or more")
        plans, at = t.first_plan or [], t.replanned_at or []
        if len(plans) != len(at) or sorted(set(at)) != at:
            raise UserError(f"train.first_plan={t.first_plan} and train.replanned_at={t.replanned_at} must be lists "
                            "of the same length, the steps ascending (written by selfsup; restore config.yaml)")
        if t.log_every < 1 or t.keep_checkpoints < 1:
            bad = "log_every" if t.log_every < 1 else "keep_checkpoints"
            raise UserError(f"train.{bad}={getattr(t, bad)} must be at least 1")
        if self.data.limit is not None and self.data.limit < 1:
            raise UserError(f"data.limit={self.data.limit} must be at least 1")
        if self.data.max_len is not None and self.data.max_len < 8:
            raise UserError(f"data.max_len={self.data.max_len} must be at least 8 tokens (--max-len)")
        if self.data.vocab_size < 64:
            raise UserError(f"data.vocab_size={self.data.vocab_size} must be at least 64 (--vocab-size)")
        if self.data.image_size is not None and self.data.image_size < 8:
            raise UserError(f"data.image_size={self.data.image_size} must be at least 8")
        if self.data.alphabet not in ("auto", "dna", "rna", "protein"):
            raise UserError(f"data.alphabet={self.data.alphabet!r} is not an alphabet; use auto, dna, rna or protein")
        if self.data.soft_mask not in ("drop", "keep"):
            raise UserError(f"data.soft_mask={self.data.soft_mask!r}: use drop (upper-case soft-masked residues) or "
                            "keep (lower-case residues are tokens of their own)")  # fmt: skip
        if self.data.kmer is not None and not 1 <= self.data.kmer <= 8:
            raise UserError(f"data.kmer={self.data.kmer} must be from 1 (single residues) to 8 (--kmer)")
        return self


# ----------------------------------------------------------------------------- dict / YAML


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, not {value!r}")
        return from_dict(tp, value, where)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # one number for a list: a list of one (an older config's train.first_plan)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, not {value!r}")
        if where.endswith("labels"):
            return parse_labels(list(value))
        return [_coerce(v, args[0], where) for v in value]
    if origin is dict or tp is Any:
        return value
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            return bool(value)
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return tp(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}={value!r} is not a valid {tp.__name__}") from None


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}; known fields: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where != "config" else k) for k, v in data.items()}
    return cls(**kwargs)


def load_yaml(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; pass a YAML file written by selfsup or --help")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"config file {p} is not valid YAML{at}; fix its syntax") from None
    if not isinstance(data, dict) or not data:
        what = "is empty" if not data else "does not hold a mapping of sections (data, method, train, ...)"
        raise UserError(f"config file {p} {what}; pass a config.yaml written by selfsup (or restore it)")
    return from_dict(RunConfig, data).validate()


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def set_field(cfg: RunConfig, dotted: str, value: Any) -> None:
    """Set ``section.field`` from a string or value, with type checking."""
    parts = dotted.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise UserError(f"--set {dotted}: unknown section {p!r}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    if isinstance(obj, (MethodConfig, EncoderConfig)) and leaf not in ("name", "params"):
        obj.params[leaf] = value  # checked by the method's or the encoder's Params when the config is resolved
        return
    hints = typing.get_type_hints(type(obj))
    if leaf not in hints:
        raise UserError(f"--set {dotted}: unknown field {leaf!r}")
    if isinstance(value, str) and value.lower() in ("none", "null"):
        value = None
    setattr(obj, leaf, _coerce(value, hints[leaf], dotted))


# ----------------------------------------------------------------------------- resolution

DEFAULT_BATCH = 256  # a method's batch unless its defaults name one (``batch_size``, or ``cpu_batch_size`` on a CPU)
# likewise the lr per 256 samples: ``lr``, or ``cpu_lr`` on a CPU (where the encoder's default size is smaller)


def resolve(cfg: RunConfig, dataset, device_type: str = "cpu", world_size: int = 1,
            notes: list[str] | None = None) -> RunConfig:  # fmt: skip
    """The fully resolved copy of ``cfg`` for ``dataset`` on this device: every field the run depends on
    filled in, from the data (image size, the method's data-dependent parameters), the method's defaults
    (encoder, optimizer, lr scaled by the batch, weight decay, sync BN under DDP), the device (the
    encoder's size) and the budget (steps, for step and epoch budgets). Pure: ``cfg`` is not changed and
    nothing is printed; lines worth telling the user are appended to ``notes``. Resolving a resolved
    config gives it back unchanged. A duration budget leaves ``train.steps`` open: the trainer times
    real steps to fill it in before step 1.
    """
    from selfsup.encoders import resolve_encoder_params
    from selfsup.methods import resolve_method_params
    from selfsup.registry import METHODS

    notes = [] if notes is None else notes
    out = copy.deepcopy(cfg).validate()
    spec, n = dataset.spec, len(dataset)
    cls = METHODS.get(out.method.name)
    if cls.modality != spec.kind:
        kinds = {"tokens": "text or token", "image": "image"}
        have = kinds.get(spec.kind, spec.kind)
        raise UserError(f"method {out.method.name} takes {kinds.get(cls.modality, cls.modality)} data and "
                        f"{out.data.name!r} holds {have} data; choose {'an' if have[0] in 'aeiou' else 'a'} "
                        f"{have} method (selfsup list methods)")  # fmt: skip
    if hasattr(spec, "size"):
        out.data.image_size = spec.size
    if hasattr(spec, "max_len"):
        out.data.max_len = spec.max_len
    if getattr(spec, "alphabet", ""):  # a sequence run: the tokenizer's k, whether given or the method's choice
        out.data.kmer = spec.kmer
    out.encoder.name = out.encoder.name or getattr(cls, "default_encoder", "resnet18")
    out.encoder.params, note = resolve_encoder_params(out.encoder.name, spec, out.encoder.params, device_type)
    if note:
        notes.append(note)
    out.method.params = resolve_method_params(out.method.name, out.method.params, n)

    t = out.train
    defaults = cls.defaults
    if t.batch_size is None:
        t.batch_size = defaults.get(f"{device_type}_batch_size", defaults.get("batch_size", DEFAULT_BATCH))
    unit = world_size * t.accumulate
    if n < unit:
        raise UserError(f"{out.data.name!r} has {n} training samples, fewer than {world_size} process(es) x "
                        f"{t.accumulate} accumulation step(s); use more data or fewer processes")  # fmt: skip
    if t.batch_size > n:
        t.batch_size = max(unit, n // unit * unit)
        notes.append(f"note: only {n} training samples; train.batch_size lowered to {t.batch_size}")
    if t.batch_size % unit:
        raise UserError(f"train.batch_size={t.batch_size} must divide evenly over {world_size} process(es) "
                        f"x {t.accumulate} accumulation step(s)")  # fmt: skip
    t.optimizer = t.optimizer or defaults["optimizer"]
    per_256 = defaults.get(f"{device_type}_lr", defaults["lr"])  # a method may name its own lr for a CPU's sizes
    t.lr = t.lr if t.lr is not None else per_256 * t.batch_size / 256
    t.weight_decay = t.weight_decay if t.weight_decay is not None else defaults["weight_decay"]
    if t.sync_bn is None:
        t.sync_bn = bool(getattr(cls, "sync_bn", False)) and world_size > 1
    if t.group_by_length is None:
        t.group_by_length = bool(getattr(cls, "group_by_length", False))
    if t.steps is None:
        b = parse_budget(t.budget)
        if b.kind == "steps":
            t.steps = int(b.value)
        elif b.kind == "epochs":
            t.steps = max(1, int(b.value) * (n // t.batch_size))
    if t.warmup_steps is None and t.steps is not None:
        t.warmup_steps = int(t.warmup * t.steps)
    return out.validate()
