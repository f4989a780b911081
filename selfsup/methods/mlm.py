"""Masked language modelling (BERT: Devlin, Chang, Lee, Toutanova, NAACL 2019, arXiv:1810.04805), with
RoBERTa's dynamic masking (Liu et al. 2019, arXiv:1907.11692).

Of each sequence's ordinary tokens (not ``[CLS]`` / ``[SEP]`` / padding), 15% are chosen; of those 80%
become ``[MASK]``, 10% a random token and 10% stay as they are; the model predicts the original token
at the chosen positions only. A new mask is drawn every time a sequence is seen (RoBERTa's dynamic
masking: the views are drawn per step from the step's generator).

The prediction head is BERT's: a dense layer, GELU and LayerNorm, then the tied token embedding and a
bias per vocabulary entry. Logits are computed at the chosen positions only: the full-vocabulary
projection at every position would be most of a small model's cost.

Paper hyperparameters (BERT-base): Adam, lr 1e-4, betas (0.9, 0.999), weight decay 0.01, 10,000 warm-up
steps then linear decay, batch 256 x 512 tokens (128 for 90% of the steps), dropout 0.1, 1M steps.
RoBERTa: lr 6e-4 at batch 8k, betas (0.9, 0.98). Local choices (measured in docs/, not here): AdamW
with the library's warm-up + cosine schedule, no dropout (short runs do not overfit), and a larger lr
per sample for small models and short budgets; ``mask_span`` > 1 masks runs of tokens; ``whole_word`` masks
every piece of a chosen word together (the whole-word masking of BERT's later release), so a word is never
predicted from its own visible pieces.

Overlapping k-mers of biological sequences (DNABERT: Ji, Zhou, Liu, Davuluri, Bioinformatics 2021): a k-mer
token shares k - 1 residues with each neighbour, so a k-mer masked alone is read off the visible ones beside it.
DNABERT masks runs of k contiguous tokens; here ``mask_span`` left unset is the spec's k for overlapping k-mers
(1 otherwise), runs start at ordinary tokens and are moved back to end at the row's last one
(``select_tokens(fit_runs=True)``), and the k-mers covering a masked single-residue token (beside an ambiguity
code, at a sequence's end) are masked with it (``hide_covering``): no masked token can be recovered from the
visible ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.seq_tokens import RESIDUE_OFFSET
from selfsup.encoders.base import masked_mean
from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.registry import METHODS
from selfsup.views.masking import corrupt_tokens, hide_covering, select_tokens, word_starts


@dataclass
class MLMParams:
    mask_prob: float = 0.15  # share of ordinary tokens predicted
    mask_token_p: float = 0.8  # of those, replaced by [MASK]
    random_token_p: float = 0.1  # of those, replaced by a random token (the rest keep theirs)
    mask_span: int | None = None  # runs of tokens; None: the spec's k for overlapping k-mers (DNABERT), else 1
    whole_word: bool = False  # all word pieces of a chosen word together (BERT's whole-word masking)


class LMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> tied embedding + bias. [M, D] -> [M, V]."""

    def __init__(self, encoder: nn.Module, vocab_size: int):
        super().__init__()
        dim = encoder.dim
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        self._encoder = [encoder]  # not a submodule: its embedding is the encoder's (tied)

    def forward(self, h: Tensor) -> Tensor:
        return self._encoder[0].lm_logits(self.norm(F.gelu(self.dense(h)))) + self.bias


def check_text_encoder(method: str, encoder: nn.Module, causal: bool) -> None:
    if not hasattr(encoder, "lm_logits"):
        raise UserError(f"method {method} needs a token encoder; use --encoder text_transformer")
    if bool(encoder.causal) != causal:
        kind = "causal" if causal else "bidirectional"
        raise UserError(f"method {method} needs a {kind} encoder; drop --set encoder.causal or set it to "
                        f"{str(causal).lower()}")  # fmt: skip


@METHODS.register("mlm")
class MLM(nn.Module):
    modality = "tokens"
    tokenizer_family = "wordpiece"
    raw_kinds = ("text", "sequence")  # also biological sequences (residue or k-mer tokens; k-mer span masking)
    Params = MLMParams
    # lr per 256 sequences; on a CPU (tiny size, batch 32) 8e-3 per 256, i.e. 1e-3 at batch 32: docs/text-defaults.md
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "cpu_batch_size": 32, "cpu_lr": 8e-3}
    default_encoder = "text_transformer"
    # a masked LM's mean token state narrows in its first hundred steps or so, while it predicts from word
    # frequencies alone (docs/text-defaults.md), then spreads: the monitor's warning says so
    collapse_advice = ("common in a masked LM's first few hundred steps, while it predicts from word frequencies; "
                       "if it lasts, lower the lr (--lr)")

    def __init__(self, encoder: nn.Module, params: MLMParams, spec):
        super().__init__()
        check_text_encoder("mlm", encoder, causal=False)
        if spec.mask_id is None:
            raise UserError("method mlm needs a tokenizer with a mask token (a wordpiece tokenizer: drop --tokenizer "
                            "or pass one trained for mlm)")  # fmt: skip
        kmers = getattr(spec, "kmer", 1) > 1 and getattr(spec, "kmer_stride", 1) == 1  # overlapping k-mers
        self.span = params.mask_span if params.mask_span is not None else (spec.kmer if kmers else 1)
        if not 0 < params.mask_prob < 1 or params.mask_token_p + params.random_token_p > 1 or self.span < 1:
            raise UserError("method.mask_prob must be in (0, 1), mask_token_p + random_token_p at most 1 and "
                            "mask_span at least 1")  # fmt: skip
        if params.whole_word and self.span > 1:
            raise UserError("method.whole_word and method.mask_span > 1 do not combine; set one of them")
        self.encoder, self.params, self.spec = encoder, params, spec
        self.head = LMHead(encoder, spec.vocab_size)
        # which ids continue a word (WordPiece's "##x"), given by the tokenizer through set_word_pieces
        self.register_buffer("continues", torch.zeros(spec.vocab_size, dtype=torch.bool), persistent=False)
        self._pieces_set = False
        # overlapping k-mers: ids from first_kmer on are k-mers (wide tokens covering k residues)
        self.first_kmer = RESIDUE_OFFSET + len(spec.residues) if kmers else None

    @property
    def wants_word_pieces(self) -> bool:
        """True when the masking needs the tokenizer's word-piece table (``set_word_pieces``)."""
        return bool(self.params.whole_word)

    def set_word_pieces(self, continues: Tensor) -> None:
        """bool [V]: True for the ids that continue a word (``selfsup.data.tokens.word_piece_table``)."""
        if continues.shape != self.continues.shape:
            raise UserError(f"the tokenizer has {continues.numel()} tokens but the run's spec {self.spec.vocab_size}; "
                            "pass the run's tokenizer.json")  # fmt: skip
        self.continues.copy_(continues.to(torch.bool))
        self._pieces_set = True

    def word_starts(self, ids: Tensor) -> Tensor | None:
        """bool [B, T] where words begin (whole-word masking), else None."""
        if not self.params.whole_word:
            return None
        if not self._pieces_set:
            raise RuntimeError("whole-word masking needs the tokenizer's word pieces: call set_word_pieces first")
        if self.continues.device != ids.device:  # a copy held outside a module tree (nsp / sop) follows the data
            self.continues = self.continues.to(ids.device)
        return word_starts(ids, self.continues, self.spec.special_ids)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """ids [B, T] -> (corrupted ids [B, T], chosen bool [B, T], original ids [B, T], lengths)."""
        ids = x.long()
        p, s = self.params, self.spec
        kmers = self.first_kmer is not None and self.span > 1
        chosen = select_tokens(ids, p.mask_prob, s.special_ids, lengths, generator, self.span, self.word_starts(ids),
                               fit_runs=kmers)  # fmt: skip
        if kmers:
            chosen = hide_covering(chosen, ids >= self.first_kmer, s.kmer)
        inputs = corrupt_tokens(ids, chosen, s.mask_id, s.vocab_size, s.special_ids, generator, p.mask_token_p,
                                p.random_token_p)  # fmt: skip
        return inputs, chosen, ids, lengths

    def forward(self, batch) -> Output:
        inputs, chosen, ids, lengths = batch
        h = self.encoder.hidden(inputs, lengths)  # [B, T, D]
        logits = self.head(h[chosen])  # [M, V]: the chosen positions only
        target = ids[chosen]
        loss = F.cross_entropy(logits.float(), target)
        acc = (logits.detach().argmax(1) == target).float().mean()
        # the collapse monitor reads the mean token state: [CLS] is never a target, so its state says little
        return Output(loss, {"mlm_acc": acc}, masked_mean(h, lengths).detach())
