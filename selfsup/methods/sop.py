"""Sentence-order prediction (ALBERT: Lan, Chen, Goodman, Gimpel, Sharma, Soricut, ICLR 2020, arXiv:1909.11942),
trained with BERT's masked LM on the same rows by default.

ALBERT replaces BERT's next-sentence prediction, which a model can solve from topic alone, with a task about
coherence: each input is two consecutive segments of one document, ``[CLS] A [SEP] B [SEP]``, and half the
time they are swapped, ``[CLS] B [SEP] A [SEP]``; the model classifies the order from ``[CLS]``: BERT's
pooler (a dense layer and tanh on the ``[CLS]`` state) then a 2-way linear layer, cross-entropy. With ``mlm``
on (the paper's setup), BERT's masked LM (``selfsup.methods.mlm``: 15% of the ordinary tokens, 80% / 10% /
10% [MASK] / random / kept, never [CLS], [SEP] or padding) is applied to the pair rows and its loss added
with weight ``mlm_weight``; off, the pair task trains alone.

What is built here (``selfsup.views.pairs``): each pretraining row ``[CLS] window [SEP]`` is split at a
random token into consecutive A and B; a random half of the rows are swapped (label 1; 0 = in order); a new
split and order are drawn each time a row is seen. A pair longer than the row is cut from its longer segment
(BERT's ``truncate_seq_pair``). Rows too short to split carry no label.

Paper hyperparameters (ALBERT): segments of whole sentences, inputs of at most 512 tokens (10% shorter, at
random); the MLM uses n-gram masking (n up to 3); LAMB, lr 0.00176, batch 4096, 125,000 steps; segment
(token-type) embeddings tell the segments apart. ALBERT's other changes (factorized embeddings, parameters
shared across layers) concern the encoder, not this task, and are not built.

Local choices: no segment embeddings (the encoder keeps its weights as they are, so it exports to Hugging
Face unchanged): the ``[SEP]`` between them is what separates the segments. Rows are token windows without
sentence boundaries, so the split is at a token. Masking as ``mlm`` (single tokens, not ALBERT's n-grams);
optimizer and schedule as ``mlm`` (AdamW, warm-up + cosine, no dropout).
"""

from __future__ import annotations

from selfsup.methods._pairs import PairMethod, PairParams
from selfsup.registry import METHODS

SOPParams = PairParams


@METHODS.register("sop")
class SOP(PairMethod):
    mode = "sop"
