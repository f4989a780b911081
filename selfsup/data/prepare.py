"""Turn a dataset into what a run trains on: raw text becomes token ids with the run's tokenizer.

Images (and any dataset already in a trainable spec) pass through unchanged. Text is tokenized with a
tokenizer trained on the pretraining texts for the method's family (WordPiece for bidirectional
methods, byte-level BPE for causal ones) and saved as ``RUN/tokenizer.json``, or with the one a user
passes (``--tokenizer PATH``, copied into the run); evaluation tokenizes its data with the run's
tokenizer. Token ids are cached by ``selfsup.data.tokens``, so the second run on a corpus starts at once.

Biological sequences take the same path with a sequence tokenizer (``selfsup.data.seq_tokens``) built from
``data.kmer``, ``data.kmer_overlap`` and ``data.soft_mask`` (nothing to train), saved as ``RUN/tokenizer.json``;
its rows are laid out as the method's family asks (bidirectional ``[CLS] .. [SEP]`` windows or causal packing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selfsup.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_LEN = {"cpu": 128, "cuda": 512}


def max_len_for(cfg, device_type: str) -> int:
    return cfg.data.max_len or DEFAULT_MAX_LEN.get(device_type, 128)


def run_tokenizer(ds, cfg, family: str, run_dir: Path, resume: bool, log=print):
    """The run's tokenizer: the saved one when resuming, else ``cfg.data.tokenizer``, else one trained on the
    pretraining texts; written to ``RUN/tokenizer.json`` (rank 0 writes; the others compute the same)."""
    from selfsup.data import tokens
    from selfsup.distributed import rank

    saved = run_dir / TOKENIZER_FILE
    if resume and saved.exists():
        tok, got = tokens.load_tokenizer(saved)
        return tok, got
    if cfg.data.tokenizer:
        tok, got = tokens.load_tokenizer(Path(cfg.data.tokenizer).expanduser())
        if got != family:
            raise UserError(f"--tokenizer {cfg.data.tokenizer} is a {got} tokenizer and method {cfg.method.name} needs "
                            f"a {family} one; pass a {family} tokenizer.json or leave --tokenizer out")  # fmt: skip
        if rank() == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(cfg.data.tokenizer).expanduser(), saved)
        return tok, family
    log(f"training a {family} tokenizer ({cfg.data.vocab_size} tokens) on {len(ds.train)} documents ...")
    tok = tokens.train_tokenizer(ds.train.x, family, cfg.data.vocab_size, log=log)
    if rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokens.save_tokenizer(tok, saved)
    return tok, family


def default_kmer(method_cls, alphabet: str) -> int:
    """Residues per token when ``data.kmer`` is left open: the method's choice for the alphabet
    (``default_kmer = {"dna": 6, ...}``: seq-contrastive on DNA / RNA), else single residues."""
    return int(getattr(method_cls, "default_kmer", {}).get(alphabet, 1))


def sequence_tokenizer(ds, cfg, run_dir: Path, resume: bool, log=print, method_cls=None):
    """The run's sequence tokenizer: the saved one when resuming, else ``cfg.data.tokenizer`` (a sequence
    tokenizer.json), else one made from ``data.kmer``, ``data.kmer_overlap`` and ``data.soft_mask``; written to
    ``RUN/tokenizer.json``."""
    from selfsup.data import tokens
    from selfsup.data.seq_tokens import SeqTokenizer
    from selfsup.distributed import rank

    saved = run_dir / TOKENIZER_FILE
    given = Path(cfg.data.tokenizer).expanduser() if cfg.data.tokenizer else None
    if resume and saved.exists():
        tok, got = tokens.load_tokenizer(saved)
    elif given is not None:
        tok, got = tokens.load_tokenizer(given)
        if got != "sequence":
            raise UserError(f"--tokenizer {cfg.data.tokenizer} is a {got} tokenizer for text and {ds.name} holds "
                            "sequences; leave --tokenizer out (sequences use --kmer)")  # fmt: skip
    else:
        k = cfg.data.kmer if cfg.data.kmer is not None else default_kmer(method_cls, ds.spec.alphabet)
        tok = SeqTokenizer(ds.spec.alphabet, k, cfg.data.kmer_overlap, cfg.data.soft_mask == "keep")
        got = "sequence"
    if got != "sequence":
        raise UserError(f"{saved} is a {got} tokenizer for text and {ds.name} holds sequences; resume with the "
                        "data the run was started on")  # fmt: skip
    check_alphabet(tok, ds, saved if resume else given)
    if rank() == 0 and not (resume and saved.exists()):
        run_dir.mkdir(parents=True, exist_ok=True)
        tokens.save_tokenizer(tok, saved)
    log(f"sequence tokens: {tok.alphabet}, " + (f"{tok.k}-mers ({'overlapping' if tok.overlap else 'non-overlapping'})"
        if tok.k > 1 else "single residues") + f", {tok.get_vocab_size()} tokens")  # fmt: skip
    return tok


def check_alphabet(tok, ds, path) -> None:
    """A one-line UserError when the sequence tokenizer ``tok`` is for another alphabet than ``ds``'s."""
    if tok.alphabet != ds.spec.alphabet:
        where = f"the tokenizer {path}" if path is not None else "the run's tokenizer"
        raise UserError(f"{where} reads {tok.alphabet} and {ds.name} holds {ds.spec.alphabet} sequences; use data "
                        f"of the run's alphabet (or --alphabet {tok.alphabet} if it was misdetected)")  # fmt: skip


def for_pretraining(ds, cfg, method_cls, run_dir: Path, device_type: str, resume: bool = False, log=print):
    """``ds`` as the run trains on it (text and sequences: token windows or packed rows with the run's tokenizer)."""
    kind = ds.spec.kind
    if kind not in ("text", "sequence"):
        return ds
    from selfsup.data import tokens

    family = getattr(method_cls, "tokenizer_family", None)
    if family is None:
        raise UserError(f"method {cfg.method.name} does not take {kind} data; choose a method for it "
                        "(selfsup list methods)")  # fmt: skip
    takes = getattr(method_cls, "raw_kinds", ("text",))  # token methods: text unless they say more
    if kind not in takes:
        raise UserError(f"method {cfg.method.name} takes {' or '.join(takes)} data and {ds.name} holds {kind}; choose "
                        "another method (selfsup list methods)")  # fmt: skip
    if kind == "sequence":
        tok = sequence_tokenizer(ds, cfg, run_dir, resume, log, method_cls)
        spec = tokens.token_spec(tok, family, max_len_for(cfg, device_type))
        return tokens.tokenize_dataset(ds, tok, spec, "pretrain", log=log)
    tok, family = run_tokenizer(ds, cfg, family, run_dir, resume, log)
    spec = tokens.token_spec(tok, family, max_len_for(cfg, device_type))
    return tokens.tokenize_dataset(ds, tok, spec, "pretrain", log=log)


def for_evaluation(ds, run_dir: Path, spec, log=print, windows: int = 1):
    """``ds`` as a run's encoder reads it: text tokenized with the run's tokenizer, one sample per document
    (up to ``windows`` windows of the context each)."""
    kind = ds.spec.kind
    if kind not in ("text", "sequence"):
        return ds
    from selfsup.data import tokens

    path = Path(run_dir) / TOKENIZER_FILE
    if not path.exists():
        raise UserError(f"{run_dir} has no {TOKENIZER_FILE}; evaluate {kind} data with a run pretrained on {kind} data")
    tok, family = tokens.load_tokenizer(path)
    if (family == "sequence") != (kind == "sequence"):
        was, has = ("sequences", "text") if family == "sequence" else ("text", "sequences")
        raise UserError(f"{run_dir} was pretrained on {was} and {ds.name} holds {has}; evaluate it on {was}")
    if kind == "sequence":
        check_alphabet(tok, ds, path)
    tokens.check_tokenizer(spec.tokenizer_hash, tok, path)
    return tokens.tokenize_dataset(ds, tok, spec, "eval", log=log, windows=windows)


__all__ = ["TOKENIZER_FILE", "check_alphabet", "for_evaluation", "for_pretraining", "max_len_for", "run_tokenizer",
           "sequence_tokenizer"]  # fmt: skip
