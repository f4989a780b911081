"""``selfsup generate``: text from a causal (GPT) run, token by token with the run's encoder and tokenizer.

The context starts with the end-of-text token (a document's start in GPT-2 packing, where documents are
joined by it), followed by the prompt's tokens; an empty prompt starts from the end-of-text token alone.
Each step reads the last ``max_len`` tokens of the context (a sliding window: the encoder's positions
stop there), scores the next token with the tied output embedding (``lm_logits``) and appends the chosen
one. Choice: temperature 0 takes the most likely token (greedy); otherwise the logits are divided by the
temperature, all but the ``top_k`` most likely tokens are dropped (top-k 0: none) and one is sampled.
Generation stops at the end-of-text token (not printed) or after ``max_tokens`` tokens.

Sample ``i`` of ``num`` draws from a generator seeded with ``seed + i``, so the same seed gives the same
text, and ``--seed 1`` repeats the second sample of ``--seed 0 --num 2``. There is no key/value cache:
each step runs the whole window, which costs little at the lengths a CPU-sized run has.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from selfsup.errors import UserError

__all__ = ["generate", "generate_ids", "next_token"]


def next_token(logits: Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> int:
    """The next token from the logits [V] of the last position: greedy at temperature 0, else sampled from
    softmax(logits / temperature) restricted to the ``top_k`` most likely tokens (0: all)."""
    logits = logits.float()
    if temperature == 0:
        return int(logits.argmax())
    z = logits / temperature  # [V]
    if 0 < top_k < z.shape[0]:
        kth = torch.topk(z, top_k).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, dim=0).cpu()  # [V]; drawn on the CPU, where the seeded generator lives
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_ids(encoder: nn.Module, context: list[int], eos_id: int, max_tokens: int = 50, temperature: float = 1.0,
                 top_k: int = 50, generator: torch.Generator | None = None) -> list[int]:  # fmt: skip
    """The tokens a causal text encoder appends to ``context`` (ids, at least one): at most ``max_tokens``,
    ending before the first ``eos_id`` it chooses. The window is the last ``encoder.max_len`` tokens."""
    device = next(encoder.parameters()).device
    ids = list(context)
    out: list[int] = []
    for _ in range(max_tokens):
        window = torch.tensor(ids[-encoder.max_len :], dtype=torch.long, device=device)[None]  # [1, T]
        h = encoder.hidden(window)  # [1, T, D]
        logits = encoder.lm_logits(h[0, -1])  # [V]: the next token's scores
        token = next_token(logits, temperature, top_k, generator)
        if token == eos_id:
            break
        ids.append(token)
        out.append(token)
    return out


def _check(max_tokens: int, temperature: float, top_k: int, num: int) -> None:
    if temperature < 0:
        raise UserError(f"--temperature {temperature} is negative; pass 0 (greedy) or a positive value (1.0)")
    if top_k < 0:
        raise UserError(f"--top-k {top_k} is negative; pass 0 (no cut) or the number of tokens to keep (50)")
    if max_tokens < 1:
        raise UserError(f"--max-tokens {max_tokens} must be at least 1")
    if num < 1:
        raise UserError(f"--num {num} must be at least 1")


def load_causal_run(run: str | Path):
    """-> (encoder in eval mode, tokenizer, spec) of a causal text run; a one-line UserError for anything else."""
    from selfsup.data.prepare import TOKENIZER_FILE
    from selfsup.data.spec import spec_from_dict
    from selfsup.data.tokens import check_tokenizer, load_tokenizer
    from selfsup.runs import ENCODER_JSON, load_config, load_encoder, read_encoder_json

    run = Path(run)
    cfg = load_config(run)  # "not a run folder" when there is no config.yaml
    info = read_encoder_json(run)
    spec = spec_from_dict(info["spec"], str(run / ENCODER_JSON))
    causal = spec.kind == "tokens" and bool(info["params"].get("causal", spec.causal)) and spec.eos_id is not None
    if not causal:
        raise UserError(f"generate needs a causal run (method gpt); {run} was pretrained with {cfg.method.name}")
    path = run / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"{run} has no {TOKENIZER_FILE}; generate from the folder `selfsup pretrain` wrote")
    tok, _ = load_tokenizer(path)
    check_tokenizer(spec.tokenizer_hash, tok, path)
    encoder = load_encoder(run)
    if not hasattr(encoder, "lm_logits"):
        raise UserError(f"generate needs a causal run (method gpt); {run} was pretrained with {cfg.method.name}")
    return encoder, tok, spec


def generate(run: str | Path, prompt: str = "", max_tokens: int = 50, temperature: float = 1.0, top_k: int = 50,
             seed: int = 0, num: int = 1) -> list[str]:  # fmt: skip
    """``num`` texts from the causal run in ``run``: each the prompt and its continuation, decoded with the
    run's tokenizer. ``temperature`` 0 is greedy; ``top_k`` 0 keeps every token; sample i uses ``seed + i``."""
    _check(max_tokens, temperature, top_k, num)
    encoder, tok, spec = load_causal_run(run)
    prompt_ids = tok.encode(prompt, add_special_tokens=False).ids if prompt else []
    texts = []
    for i in range(num):
        g = torch.Generator().manual_seed(seed + i)
        new = generate_ids(encoder, [spec.eos_id, *prompt_ids], spec.eos_id, max_tokens, temperature, top_k, g)
        texts.append(tok.decode(prompt_ids + new, skip_special_tokens=False))
    return texts
