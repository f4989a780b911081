"""Text pretraining throughput: selfsup's mlm and gpt beside Hugging Face transformers' BERT and GPT-2 of the same size.

Two comparisons, each selfsup vs transformers on the same model shape, the same token rows, batch and sequence
length, the same optimizer, in one run on one machine:

* mlm -- selfsup ``MLM`` on a bidirectional ``text_transformer`` (its own 15% / 80-10-10 masking in ``views``,
  logits at the chosen positions only) vs ``BertForMaskedLM`` fed by ``DataCollatorForLanguageModeling``
  (mlm_probability 0.15; logits at every position, as transformers computes them). Rows: IMDB train reviews cut
  into ``[CLS] .. [SEP]`` windows by a WordPiece tokenizer that selfsup trains (``train_tokenizer``).
* gpt -- selfsup ``GPT`` on a causal ``text_transformer`` vs ``GPT2LMHeadModel`` (activation "gelu"), labels =
  input ids (shifted inside the model), on IMDB packed into full rows by a byte-level BPE tokenizer of selfsup's.

Both sides: hidden size, layers and heads of ``--size`` (tiny 128x2x2, mini 256x4x4, small 512x4x8, base
768x12x12), MLP 4x, exact GELU, dropout off, tied input/output embeddings, positions = ``--seq-len``, SDPA
attention; AdamW from selfsup's ``build_optimizer`` (the methods' lr per 256 sequences and weight decay); bf16
autocast on CUDA (``selfsup.precision``). selfsup is stepped as its Trainer steps a method (views under no_grad
from a per-step generator, forward, backward, the finite check of the loss and the gradient norm, step);
transformers as its Trainer steps a model by default (the collator in the training process, forward, backward,
the NaN/inf check of the loss, ``clip_grad_norm_`` at 1.0, step). Without IMDB in selfsup's cache (``selfsup data
get imdb``) the rows are random token ids, flagged as synthetic in the output.

Each pipeline runs in its own subprocess (benchmarks/procs.py: peak RSS and PSS from /proc, the other processes'
load; on CPU the two pipelines of a comparison take turns of ``--slice`` seconds). Reported: tokens/s (positions
of the [batch, seq-len] input per second over the timed steps), the ratio selfsup / transformers, peak memory, and
on CUDA for gpt the model FLOPs utilization against the GPU's dense bf16 peak.

    python benchmarks/text_throughput.py                          # CPU or CUDA, whichever is there
    python benchmarks/text_throughput.py --device cpu --rounds 3  # the median of 3 rounds
    python benchmarks/text_throughput.py --device cuda --size base --compile
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import harness
from procs import memory_method, peak_memory, run_round, timed_steps

HF, SELFSUP = "hf", "selfsup"
LIBRARIES = {HF: "transformers", SELFSUP: "selfsup"}
METHODS = ("mlm", "gpt")
FAMILY = {"mlm": "wordpiece", "gpt": "bpe"}
HF_MODEL = {"mlm": "BertForMaskedLM + DataCollatorForLanguageModeling", "gpt": "GPT2LMHeadModel"}
SIZES = {"tiny": (128, 2, 2), "mini": (256, 4, 4), "small": (512, 4, 8), "base": (768, 12, 12)}  # as selfsup's
MLM_PROBABILITY = 0.15
HF_MAX_GRAD_NORM = 1.0  # TrainingArguments.max_grad_norm's default
LAYER_NORM_EPS = 1e-6  # selfsup's; set on the transformers side too (no effect on speed)
# dense bf16 peak (no sparsity) per GPU, from the vendor's datasheets (SXM parts); the first name contained in the
# device's name wins; --peak-tflops overrides
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}
TEXT_ENV_KEYS = (*harness.ENV_KEYS, "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")
CPU_STEPS, CPU_WARMUP = 40, 5  # the defaults on CPU (50 and 10 on CUDA)


# =============================================================================== the data (in the parent)


def _imdb_tokenizer(texts, family: str, vocab_size: int):
    """selfsup's ``train_tokenizer`` on the IMDB train texts, kept under ``cache_dir()/benchmarks`` (training one
    takes ~20 s on 2 cores; the same texts give the same tokenizer, so a cached one is the one a run would train)."""
    from selfsup.data.cache import cache_dir
    from selfsup.data.tokens import load_tokenizer, save_tokenizer, train_tokenizer

    h = hashlib.sha256()
    for t in texts:
        h.update(str(t).encode("utf-8", "surrogatepass") + b"\0")
    path = cache_dir() / "benchmarks" / f"imdb-{family}-{vocab_size}-{h.hexdigest()[:16]}.json"
    if path.is_file():
        tok, got = load_tokenizer(path)
        if got == family:
            return tok
    tok = train_tokenizer(texts, family, vocab_size, log=harness.log)
    save_tokenizer(tok, path)
    return tok


def _synthetic(family: str, vocab_size: int, seq_len: int, rows: int, seed: int):
    """A tokenizer of ``vocab_size`` placeholder tokens and ``rows`` full rows of random ids: [CLS] ids [SEP]
    (wordpiece) or ids alone (bpe)."""
    import numpy as np
    from tokenizers import Tokenizer, models

    from selfsup.data.tokens import EOT, WORDPIECE_SPECIALS

    specials = list(WORDPIECE_SPECIALS) if family == "wordpiece" else [EOT]
    vocab = {t: i for i, t in enumerate(specials + [f"t{i}" for i in range(vocab_size - len(specials))])}
    if family == "wordpiece":
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    else:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens(specials)
    x = np.random.default_rng(seed).integers(len(specials), vocab_size, (rows, seq_len), dtype=np.int32)
    if family == "wordpiece":
        x[:, 0], x[:, -1] = vocab["[CLS]"], vocab["[SEP]"]
    return tok, x, np.full(rows, seq_len, dtype=np.int64)


def _prepare_data(method: str, args, folder: Path) -> dict:
    """The rows both sides of ``method`` train on, in the order they take them (a seeded permutation of the
    pretraining rows, ``batch x (warmup + steps)`` of them), written to ``folder`` with the tokenizer."""
    import numpy as np

    from selfsup.data import load_dataset
    from selfsup.data.tokens import save_tokenizer, token_spec, tokenize_dataset
    from selfsup.errors import UserError

    family, need = FAMILY[method], args.batch * (args.warmup + args.steps)
    ds, note = None, "--synthetic" if args.synthetic else None
    if not args.synthetic:
        try:
            ds = load_dataset("imdb", log=harness.log)
        except UserError as e:
            note = f"IMDB is not cached ({e})"
    if ds is not None:
        tok = _imdb_tokenizer(ds.train.x, family, args.vocab_size)
        rows = tokenize_dataset(ds, tok, token_spec(tok, family, args.seq_len), "pretrain", log=harness.log)
        x, lengths = np.asarray(rows.train.x), np.asarray(rows.train.lengths)
        source = f"IMDB train ({len(ds.train)} reviews), selfsup {family} tokenizer"
    else:
        harness.log(f"{method}: SYNTHETIC data (random token ids): {note}")
        tok, x, lengths = _synthetic(family, args.vocab_size, args.seq_len, need, args.seed)
        source = "synthetic: random token ids"
    order = np.resize(np.random.default_rng(args.seed).permutation(len(x)), need)  # wraps if the set is small
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, folder / "tokenizer.json")
    np.save(folder / "rows.npy", np.ascontiguousarray(x[order], dtype=np.int32))
    np.save(folder / "lengths.npy", lengths[order].astype(np.int64))
    real = float(lengths[order].sum()) / (need * args.seq_len)
    return {"source": source, "synthetic": ds is None, "synthetic_reason": note, "tokenizer_family": family,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True), "rows_available": len(x), "rows_used": need,
            "distinct_rows_used": min(need, len(x)), "real_token_share": real, "folder": str(folder)}  # fmt: skip


# =============================================================================== the two sides (in a subprocess)


def _selfsup_side(method: str, args, device, rows, lengths, folder: Path):
    """selfsup's ``mlm`` / ``gpt`` on ``text_transformer``, stepped as ``selfsup.train.loop.Trainer`` steps it."""
    import torch

    import selfsup.methods  # noqa: F401  (registers the methods)
    from selfsup.data.tokens import load_tokenizer, token_spec
    from selfsup.encoders import build_encoder
    from selfsup.registry import METHODS as REGISTRY
    from selfsup.train.optim import build_optimizer

    tok, family = load_tokenizer(folder / "tokenizer.json")
    spec = token_spec(tok, family, args.seq_len)
    cls = REGISTRY.get(method)
    model = cls(build_encoder("text_transformer", spec, {"size": args.size}), cls.Params(), spec).to(device)
    d = cls.defaults
    opt = build_optimizer(model, d["optimizer"], d["lr"] * args.batch / 256, d["weight_decay"])
    train = torch.compile(model) if args.compile else model
    x, n, b = torch.from_numpy(rows).to(device), torch.from_numpy(lengths).to(device), args.batch

    def batch(i):
        g = torch.Generator(device).manual_seed(args.seed * 1_000_003 + i)
        with torch.no_grad():
            return model.views(x[i * b : (i + 1) * b], g, n[i * b : (i + 1) * b])

    params = sum(p.numel() for p in model.parameters())
    info = {"params": params, "matmul_params": params - model.encoder.pos_embed.weight.numel(),
            "attention": "sdpa (selfsup Transformer)", "lr": opt.param_groups[0]["lr"]}  # fmt: skip
    return batch, harness.trainer_step(model, train, opt, device, args.warmup + args.steps), info


def _hf_side(method: str, args, device, rows, lengths, folder: Path):
    """transformers' BERT / GPT-2 built from a config (nothing downloaded), stepped as its Trainer steps a model."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        default_data_collator,
    )

    import selfsup.methods  # noqa: F401
    from selfsup.precision import autocast
    from selfsup.registry import METHODS as REGISTRY
    from selfsup.train.optim import build_optimizer

    dim, depth, heads = SIZES[args.size]
    t, b = args.seq_len, args.batch
    if method == "mlm":
        specials = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **specials)
        config = BertConfig(vocab_size=len(tok), hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                            intermediate_size=4 * dim, hidden_act="gelu", hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, max_position_embeddings=t, layer_norm_eps=LAYER_NORM_EPS,
                            pad_token_id=tok.pad_token_id, use_cache=False, attn_implementation="sdpa")  # fmt: skip
        model = BertForMaskedLM(config)
        # examples as a tokenized dataset hands them over (lists of ids, unpadded); padded to seq-len by the collator
        collate = DataCollatorForLanguageModeling(tok, mlm_probability=MLM_PROBABILITY, pad_to_multiple_of=t)
        examples = lambda i: [{"input_ids": rows[j, : lengths[j]].tolist()} for j in range(i * b, (i + 1) * b)]
        positions = model.bert.embeddings.position_embeddings
    else:
        from tokenizers import Tokenizer

        from selfsup.data.tokens import EOT

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        eot = tok.token_to_id(EOT)
        config = GPT2Config(vocab_size=tok.get_vocab_size(with_added_tokens=True), n_embd=dim, n_layer=depth,
                            n_head=heads, n_inner=None, n_positions=t, activation_function="gelu", resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=LAYER_NORM_EPS, bos_token_id=eot,
                            eos_token_id=eot, use_cache=False, attn_implementation="sdpa")  # fmt: skip
        model = GPT2LMHeadModel(config)
        model.loss_type = "ForCausalLM"  # the loss it falls back to, named: no warning (its class name has no loss)
        collate = default_data_collator  # run_clm.py's: packed rows, labels a copy of the ids
        examples = lambda i: [{"input_ids": r, "labels": list(r)} for r in rows[i * b : (i + 1) * b].tolist()]
        positions = model.transformer.wpe
    model.to(device).train()
    d = REGISTRY.get(method).defaults
    opt = build_optimizer(model, d["optimizer"], d["lr"] * b / 256, d["weight_decay"])
    train = torch.compile(model) if args.compile else model

    def batch(i):
        return {k: v.to(device, non_blocking=True) for k, v in collate(examples(i)).items()}

    def step(inputs, i):
        with autocast(device):
            loss = train(**inputs).loss
        loss.backward()
        if torch.isnan(loss.detach()) or torch.isinf(loss.detach()):  # the Trainer's logging_nan_inf_filter check
            raise RuntimeError(f"loss not finite at step {i}")
        torch.nn.utils.clip_grad_norm_(model.parameters(), HF_MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    params = sum(p.numel() for p in model.parameters())
    info = {"params": params, "matmul_params": params - positions.weight.numel(),
            "attention": model.config._attn_implementation, "lr": opt.param_groups[0]["lr"]}  # fmt: skip
    return batch, step, info


def _run_role(args) -> dict:
    """A measured subprocess: build one side, run warm-up + timed steps, report monotonic step marks."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    library, method = args.role.split("-", 1)
    device = torch.device(args.device)
    folder = Path(args.data[method]["folder"])
    rows, lengths = np.load(folder / "rows.npy"), np.load(folder / "lengths.npy")
    batch, step, info = (_hf_side if library == HF else _selfsup_side)(method, args, device, rows, lengths, folder)
    harness.log(f"  [{args.role}] built on {device}: {info['params']:,} parameters, {args.threads} threads")
    marks, spans, loss = timed_steps(batch, step, args, device)  # the spans: transformers' collator, selfsup's views
    return {"role": args.role, "library": library, "method": method, "batch_size": args.batch, "steps": args.steps,
            "seq_len": args.seq_len, "step_marks": marks, "data_spans": spans,
            "final_loss": float(loss.float()), "threads": torch.get_num_threads(), **info,
            "autocast": "bf16" if device.type == "cuda" else None, "compile": args.compile,
            **peak_memory(device)}  # fmt: skip


# =============================================================================== summary, table, JSON


def _peak_flops(args) -> tuple[float | None, str | None]:
    """The GPU's dense bf16 peak in FLOP/s and where the number comes from."""
    if args.device != "cuda":
        return None, None
    if args.peak_tflops:
        return args.peak_tflops * 1e12, f"--peak-tflops {args.peak_tflops:g}"
    import torch

    name = torch.cuda.get_device_name(0)
    for family, tflops in PEAK_BF16_TFLOPS.items():
        if family in name:
            return tflops * 1e12, f"{family} dense bf16 peak, {tflops:g} TFLOPS"
    return None, f"no peak known for {name}: pass --peak-tflops"


def _flops_per_token(r: dict, args) -> float:
    """6 N (forward + backward of the matmul parameters: all but the position embeddings; the tied token
    embedding counts once, as the output projection) + 12 L D T for attention (PaLM's count, causal mask ignored)."""
    dim, depth, _ = SIZES[args.size]
    return 6 * r["matmul_params"] + 12 * depth * dim * args.seq_len


def _summarize_side(rs: list[dict], args, peak: float | None) -> dict:
    t = args.seq_len
    quiet, quiet_steps = harness.quiet_rate(rs, lambda r: [r["batch_size"] * t] * r["steps"])
    tps = statistics.median(r["images_per_s"] * t for r in rs)  # procs counts rows per second
    out = {
        "tokens_per_s": tps,
        "tokens_per_s_rounds": [round(r["images_per_s"] * t, 1) for r in rs],
        "tokens_per_s_median_step": statistics.median(
            r["batch_size"] * t / statistics.median(r["step_seconds"]) for r in rs
        ),
        "tokens_per_s_quiet": quiet,
        "quiet_steps": quiet_steps,
        "batch_ms_per_step": 1e3 * statistics.median(statistics.mean(r["views_seconds"]) for r in rs),
        **harness.load_and_memory(rs),
        "final_loss": rs[-1]["final_loss"],
        "params": rs[0]["params"],
        "attention": rs[0]["attention"],
        "lr": rs[0]["lr"],
    }
    if rs[0]["method"] == "gpt" and peak:
        out["flops_per_token"] = _flops_per_token(rs[0], args)
        out["mfu"] = tps * out["flops_per_token"] / peak
    return out


def summarize(runs: dict[str, dict[str, list[dict]]], args, peak: float | None) -> dict:
    out = {}
    for method, by_lib in runs.items():
        s = {lib: _summarize_side(rs, args, peak) for lib, rs in by_lib.items()}
        a, b = s[SELFSUP], s[HF]
        s["ratio_selfsup_over_hf"] = a["tokens_per_s"] / b["tokens_per_s"]
        s["ratio_median_step"] = a["tokens_per_s_median_step"] / b["tokens_per_s_median_step"]
        q = (a["tokens_per_s_quiet"], b["tokens_per_s_quiet"])
        s["ratio_quiet_steps"] = q[0] / q[1] if all(q) else None
        out[method] = s
    return out


def print_table(summary: dict, args) -> None:
    cuda = args.device == "cuda"
    cols = ["method", "library", "tokens/s", "by median step", "batch, ms/step"]
    cols += harness.load_columns("tokens/s", cuda)
    cols += ["peak RSS", "peak PSS"] + (["CUDA max allocated", "MFU"] if cuda else []) + ["params", "final loss"]
    rows = []
    for method, s in summary.items():
        for lib in (HF, SELFSUP):
            r, load, quiet = s[lib], s[lib]["other_load_cores"], s[lib]["tokens_per_s_quiet"]
            quiet = "- (none)" if quiet is None else f"{quiet:,.0f} ({r['quiet_steps']} steps)"
            name = f"{LIBRARIES[lib]} ({HF_MODEL[method] if lib == HF else method + ', text_transformer'})"
            rows.append([method, name, f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s_median_step']:,.0f}",
                         f"{r['batch_ms_per_step']:.1f}",
                         *([] if cuda else ["-" if load is None else f"{load:.2f}", quiet]),
                         harness.mib(r["peak_rss_bytes"]), harness.mib(r["peak_pss_bytes"]),
                         *([harness.mib(r["cuda_max_allocated_bytes"]), f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"]
                           if cuda else []),
                         f"{r['params'] / 1e6:.2f} M", f"{r['final_loss']:.3f}"])  # fmt: skip
    harness.print_markdown(cols, rows, left=2)
    print()
    for method, s in summary.items():
        quiet = s["ratio_quiet_steps"]
        print(f"{method}: selfsup / transformers = {s['ratio_selfsup_over_hf']:.2f}x over all timed steps, "
              f"{s['ratio_median_step']:.2f}x by the median step"
              + ("" if cuda or quiet is None else f", {quiet:.2f}x over the quiet steps"))  # fmt: skip


# =============================================================================== flags and the whole run


def _parse(argv) -> argparse.Namespace:
    p = harness.parser(__doc__)
    p.add_argument("--size", choices=list(SIZES), help="model size on both sides (default tiny on CPU, base on CUDA)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row = the models' positions (default 128)")
    p.add_argument("--batch", type=int, help="rows per step (default 32 on CPU, 128 on CUDA)")
    harness.add_steps(p, CPU_STEPS, CPU_WARMUP)
    p.add_argument("--methods", default="mlm,gpt", help="comma-separated, of mlm,gpt (default both)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    p.add_argument("--vocab-size", type=int, default=8192, help="of the tokenizers trained (default 8192, selfsup's)")
    p.add_argument("--synthetic", action="store_true", help="random token rows even where IMDB is cached")
    harness.add_turns(p, "the two pipelines of a comparison run at once", threads="of each pipeline",
                      first="the other side")  # fmt: skip
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU (default: known H100/H200 "
                   "989, A100 312)")  # fmt: skip
    harness.add_tail(p, "--out", "results JSON (default benchmarks/results/text_<device>.json)")
    args = harness.parse_args(p, argv)
    if args.role:  # a measured subprocess
        return args
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        p.error(f"--methods takes a comma-separated list of {', '.join(METHODS)}")
    args.methods = methods
    harness.check_counts(p, args, args.batch or 1, "--batch")
    if args.seq_len < 16 or args.vocab_size < 300:
        p.error("--seq-len must be at least 16 and --vocab-size at least 300")
    return args


def _run(args, tmp: Path) -> dict[str, dict[str, list[dict]]]:
    cmd = harness.command(__file__, args, "out")
    runs: dict[str, dict[str, list[dict]]] = {m: {HF: [], SELFSUP: []} for m in args.methods}
    for r in range(args.rounds):
        for method in args.methods:
            # each round the other side goes first
            roles = [f"{lib}-{method}" for lib in harness.rotated([HF, SELFSUP], r)]
            print(f"{method}, round {r + 1}: " + (f"{' and '.join(roles)} taking turns of {args.slice:g} s"
                                                  if args.slice else "one after the other"), flush=True)  # fmt: skip
            for res in run_round(roles, cmd, args, tmp, "rows/s"):  # procs's "images/s" counts rows
                runs[method][res["library"]].append(res)
    return runs


def main(argv=None) -> int:
    args = _parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models are built from configs: nothing to fetch
    if args.role:  # a measured subprocess
        return harness.write_result(args, _run_role(args))
    cores = harness.usable_cores()
    harness.resolve(args, cores, CPU_STEPS, CPU_WARMUP, size=("tiny", "base"), batch=(32, 128))
    machine = harness.machine_info(args.device, cores)
    peak, peak_source = _peak_flops(args)
    dim, depth, heads = SIZES[args.size]
    with tempfile.TemporaryDirectory(prefix="text-throughput-") as tmp:
        args.data = {m: _prepare_data(m, args, Path(tmp) / m) for m in args.methods}  # outside the timings
        for m, d in args.data.items():
            print(f"{m}: {d['source']}{' [SYNTHETIC]' if d['synthetic'] else ''}; {d['rows_used']} rows used of "
                  f"{d['rows_available']}, {100 * d['real_token_share']:.0f}% of positions real tokens")  # fmt: skip
        model = (f"size {args.size} ({dim}-d x {depth} layers x {heads} heads, MLP {4 * dim}), seq-len {args.seq_len}, "
                 f"batch {args.batch}")  # fmt: skip
        wall = harness.Wall()
        print(f"Text pretraining throughput on {machine['name']}: {model}, {args.warmup} warm-up + {args.steps} timed "
              f"steps, {args.threads} torch threads{', torch.compile' if args.compile else ''}"
              f"{', bf16 autocast' if args.device == 'cuda' else ', fp32'}; load average {wall.load_before[0]:.2f}",
              flush=True)  # fmt: skip
        runs = _run(args, Path(tmp))
    wall.stop()
    summary = summarize(runs, args, peak)
    print(f"\nText pretraining throughput, {machine['name']}: {model}, median of {args.rounds} round(s)")
    print_table(summary, args)
    print(f"tokens/s: positions of the [batch, seq-len] input per second; batch, ms/step: the collator "
          f"(transformers) or the views (selfsup) in the training process; memory of each pipeline's process: "
          f"{memory_method(runs[args.methods[0]][SELFSUP][0], args)}; {wall.note()}")  # fmt: skip
    if peak_source:
        print(f"MFU (gpt): tokens/s x (6 N + 12 L D T) / peak; peak: {peak_source}")
    if any(d["synthetic"] for d in args.data.values()):
        print("NOTE: synthetic token rows (random ids) were used; run `selfsup data get imdb` for the real corpus")
    report = {"machine": machine, "device": args.device,
              "versions": harness.versions("torch", "transformers", "tokenizers", "selfsup", "numpy"),
              "settings": harness.settings(args, "out", "data"), "model": model,
              "data": {m: {k: v for k, v in d.items() if k != "folder"} for m, d in args.data.items()},
              "environment": harness.environment(TEXT_ENV_KEYS),
              "mfu_peak_flops": peak, "mfu_peak_source": peak_source,
              **wall.report(), "summary": summary, "runs": runs}  # fmt: skip
    harness.write_report(report, args.out, f"text_{args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
