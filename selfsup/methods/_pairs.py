"""The one implementation behind ``nsp`` and ``sop``: a segment-pair classification task on ``[CLS]``, with
BERT's masked LM on the same rows (optional). The pairs are built by ``selfsup.views.pairs.make_pairs``; the
masked-LM part is ``mlm``'s own (its parameters, their checks, its masking and its prediction head).

Not registered itself (a module starting with ``_``); ``nsp.py`` and ``sop.py`` name the mode and the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.base import masked_mean
from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.methods.mlm import MLM, MLMParams, check_text_encoder
from selfsup.views.pairs import IGNORE, MIN_PAIR_LEN, make_pairs


@dataclass
class PairParams(MLMParams):  # mask_prob, mask_token_p, random_token_p, mask_span: mlm's, used when mlm is on
    mlm: bool = True  # add the masked-LM loss on the pair rows (as BERT and ALBERT trained); False: the pair task alone
    mlm_weight: float = 1.0  # the masked-LM loss's weight in the sum (the papers add the two losses)


class PairHead(nn.Module):
    """BERT's pooler (dense + tanh on the [CLS] state) then a 2-way linear: [B, D] -> logits [B, 2]."""

    def __init__(self, dim: int):
        super().__init__()
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, 2)
        for m in (self.pooler, self.classifier):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, h_cls: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.pooler(h_cls)))


class PairMethod(nn.Module):
    """Segment-pair prediction (``mode``: "nsp" or "sop", set by the registered subclass) + optional masked LM.

    views: ids [B, T] -> (inputs [B, T], labels [B], chosen bool [B, T] or None, pair ids [B, T], lengths [B]);
    forward -> Output(pair loss + mlm_weight * masked-LM loss, {"<mode>_acc", "mlm_acc"}, mean hidden state)."""

    modality = "tokens"
    tokenizer_family = "wordpiece"
    Params = PairParams
    defaults = dict(MLM.defaults)
    collapse_advice = MLM.collapse_advice
    default_encoder = "text_transformer"
    mode = ""

    def __init__(self, encoder: nn.Module, params: PairParams, spec):
        super().__init__()
        name = self.mode
        check_text_encoder(name, encoder, causal=False)
        if spec.cls_id is None or spec.sep_id is None:
            raise UserError(f"method {name} needs a tokenizer with [CLS] and [SEP] tokens (a wordpiece tokenizer: "
                            "drop --tokenizer or pass a BERT-style one)")  # fmt: skip
        if spec.max_len < MIN_PAIR_LEN:
            raise UserError(f"method {name} needs rows of at least {MIN_PAIR_LEN} tokens ([CLS] A [SEP] B [SEP]), "
                            f"got max_len {spec.max_len}; pass --max-len {MIN_PAIR_LEN} or more")  # fmt: skip
        if not math.isfinite(params.mlm_weight) or params.mlm_weight < 0:
            raise UserError(f"method.mlm_weight={params.mlm_weight} must be a number at least 0; set "
                            "--set method.mlm_weight=1 (the papers') or --set method.mlm=false")  # fmt: skip
        self.encoder, self.params, self.spec = encoder, params, spec
        self.pair_head = PairHead(encoder.dim)
        self._mlm: list[MLM] = []  # not a submodule: its encoder is ours and its head is self.lm_head
        if params.mlm:
            if spec.mask_id is None:
                raise UserError(f"method {name} with mlm needs a tokenizer with a mask token (a wordpiece tokenizer: "
                                f"drop --tokenizer), or --set method.mlm=false")  # fmt: skip
            mlm = MLM(encoder, params, spec)  # checks the masking fields; its head is tied to the encoder
            self._mlm.append(mlm)
            self.lm_head = mlm.head

    @property
    def wants_word_pieces(self) -> bool:
        return bool(self._mlm) and self._mlm[0].wants_word_pieces

    def set_word_pieces(self, continues: Tensor) -> None:
        if self._mlm:
            self._mlm[0].set_word_pieces(continues)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """ids [B, T] -> (inputs [B, T], labels [B], chosen bool [B, T] or None, pair ids [B, T], lengths [B]):
        a new pairing, and a new mask, each time a row is seen."""
        pairs, lengths, labels = make_pairs(x, lengths, self.spec, generator, self.mode)
        if not self._mlm:
            return pairs, labels, None, pairs, lengths
        inputs, chosen, _, _ = self._mlm[0].views(pairs, generator, lengths)  # never [CLS] / [SEP] / padding
        return inputs, labels, chosen, pairs, lengths

    def forward(self, batch) -> Output:
        inputs, labels, chosen, pairs, lengths = batch
        h = self.encoder.hidden(inputs, lengths)  # [B, T, D]
        logits = self.pair_head(h[:, 0]).float()  # [B, 2] from the [CLS] state
        valid = labels != IGNORE  # [B] rows too short to split carry no label
        count = valid.sum().clamp(min=1)  # no host sync, and no NaN for a batch without a label
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum") / count
        metrics = {f"{self.mode}_acc": ((logits.detach().argmax(1) == labels) & valid).sum() / count}
        if chosen is not None:
            lm_logits = self.lm_head(h[chosen])  # [M, V]: the chosen positions only
            target = pairs[chosen]
            loss = loss + self.params.mlm_weight * F.cross_entropy(lm_logits.float(), target)
            metrics["mlm_acc"] = (lm_logits.detach().argmax(1) == target).float().mean()
        # the collapse monitor reads the mean token state, as mlm
        return Output(loss, metrics, masked_mean(h, lengths).detach())
