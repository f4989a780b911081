"""Turn a dataset into what a run trains on: raw text becomes token ids with the run's tokenizer.

Images (and any dataset already in a trainable spec) pass through unchanged. Text is tokenized with a
tokenizer trained on the pretraining texts for the method's family (WordPiece for bidirectional
methods, byte-level BPE for causal ones) and saved as ``RUN/tokenizer.json``, or with the one a user
passes (``--tokenizer PATH``, copied into the run); evaluation tokenizes its data with the run's
tokenizer. Token ids are cached by ``selfsup.data.tokens``, so the second run on a corpus starts at once.
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


def for_pretraining(ds, cfg, method_cls, run_dir: Path, device_type: str, resume: bool = False, log=print):
    """``ds`` as the run trains on it (text: token windows or packed rows with the run's tokenizer)."""
    if ds.spec.kind != "text":
        return ds
    from selfsup.data import tokens

    family = getattr(method_cls, "tokenizer_family", None)
    if family is None:
        raise UserError(f"method {cfg.method.name} does not take text; choose a text method (selfsup list methods)")
    tok, family = run_tokenizer(ds, cfg, family, run_dir, resume, log)
    spec = tokens.token_spec(tok, family, max_len_for(cfg, device_type))
    return tokens.tokenize_dataset(ds, tok, spec, "pretrain", log=log)


def for_evaluation(ds, run_dir: Path, spec, log=print, windows: int = 1):
    """``ds`` as a run's encoder reads it: text tokenized with the run's tokenizer, one sample per document
    (up to ``windows`` windows of the context each)."""
    if ds.spec.kind != "text":
        return ds
    from selfsup.data import tokens

    path = Path(run_dir) / TOKENIZER_FILE
    if not path.exists():
        raise UserError(f"{run_dir} has no {TOKENIZER_FILE}; evaluate text with a run pretrained on text")
    tok, _ = tokens.load_tokenizer(path)
    tokens.check_tokenizer(spec.tokenizer_hash, tok, path)
    return tokens.tokenize_dataset(ds, tok, spec, "eval", log=log, windows=windows)


__all__ = ["TOKENIZER_FILE", "for_evaluation", "for_pretraining", "max_len_for", "run_tokenizer"]
