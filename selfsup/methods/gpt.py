"""Generative pretraining by next-token prediction (GPT: Radford, Narasimhan, Salimans, Sutskever 2018;
GPT-2: Radford et al. 2019).

A causal Transformer predicts every token from the ones before it; the loss is the mean cross-entropy
over all positions. Training rows are packed: documents joined with the end-of-text token and cut into
rows of exactly the context length, so no compute goes to padding (``selfsup.data.tokens``). Output
logits use the tied token embedding, as GPT-2.

Paper hyperparameters (GPT-1): Adam, lr 2.5e-4, 2,000 warm-up steps then cosine, batch 64 x 512 tokens,
weight decay 0.01 (w in the paper's modified L2), dropout 0.1. Local choices (measured in docs/): AdamW
with the library's warm-up + cosine schedule, no dropout, a larger lr for small models and short budgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.methods.mlm import check_text_encoder
from selfsup.registry import METHODS


@dataclass
class GPTParams:
    pass


@METHODS.register("gpt")
class GPT(nn.Module):
    modality = "tokens"
    tokenizer_family = "bpe"
    raw_kinds = ("text", "sequence")  # also biological sequences (residue or k-mer tokens)
    Params = GPTParams
    # lr per 256 sequences; on a CPU mlm's (1e-3 at batch 32), not measured for gpt apart
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "cpu_batch_size": 32, "cpu_lr": 8e-3}
    default_encoder = "text_transformer"

    def __init__(self, encoder: nn.Module, params: GPTParams, spec):
        super().__init__()
        check_text_encoder("gpt", encoder, causal=True)
        if spec.max_len < 2:
            raise UserError("method gpt needs a context of at least 2 tokens (--max-len)")
        self.encoder, self.params, self.spec = encoder, params, spec

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor | None]:
        return x.long(), lengths

    def forward(self, batch) -> Output:
        ids, lengths = batch
        h = self.encoder.hidden(ids, lengths)  # [B, T, D]
        logits = self.encoder.lm_logits(h[:, :-1])  # [B, T-1, V]: position t predicts token t+1
        target = ids[:, 1:]
        if lengths is not None:  # padded rows: no target past the last real token
            steps = torch.arange(target.shape[1], device=target.device)[None]  # [1, T-1]
            valid = steps < (lengths.to(target.device) - 1)[:, None]
            target = target.masked_fill(~valid, -100)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100)
        return Output(loss, {}, self.encoder.pool(h, lengths).detach())

