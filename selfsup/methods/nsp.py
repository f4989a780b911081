"""Next-sentence prediction (BERT: Devlin, Chang, Lee, Toutanova, NAACL 2019, arXiv:1810.04805), trained with
BERT's masked LM on the same rows by default.

Each input is a pair of text segments ``[CLS] A [SEP] B [SEP]``; half the time B is the text that follows A,
half the time a segment from elsewhere in the corpus, and the model classifies which from ``[CLS]``: BERT's
pooler (a dense layer and tanh on the ``[CLS]`` state) then a 2-way linear layer, cross-entropy. With
``mlm`` on (the paper's setup), BERT's masked LM (``selfsup.methods.mlm``: 15% of the ordinary tokens, 80% /
10% / 10% [MASK] / random / kept, never [CLS], [SEP] or padding) is applied to the pair rows and its loss
added with weight ``mlm_weight``; off, the pair task trains alone.

What is built here (``selfsup.views.pairs``): each pretraining row ``[CLS] window [SEP]`` is split at a
random token into consecutive A and B; for a random half of the rows (label 1; 0 = is next) B is replaced
by a run of as many tokens taken at a random place in another row of the shuffled batch (almost always
another document); a new split and partner are drawn each time a row is seen. A pair longer than the row
is cut from its longer segment (BERT's ``truncate_seq_pair``). Rows too short to split carry no label.

Paper hyperparameters (BERT-base): segments are spans of whole sentences with a combined length of at most
512 tokens (10% of the inputs shorter, at random), the random B from another document; loss = mean MLM +
mean NSP likelihood; Adam, lr 1e-4, betas (0.9, 0.999), weight decay 0.01, 10,000 warm-up steps then linear
decay, batch 256 x 512 tokens (128 for 90% of the steps), dropout 0.1, 1M steps; segment (token-type)
embeddings tell A from B.

Local choices: no segment embeddings (the encoder keeps its weights as they are, so it exports to Hugging
Face unchanged): the ``[SEP]`` between them is what separates the segments. Rows are token windows without
sentence boundaries, so the split is at a token; the random B matches the true B's length, so length alone
does not give the answer away. Optimizer and schedule as ``mlm`` (AdamW, warm-up + cosine, no dropout).
"""

from __future__ import annotations

from selfsup.methods._pairs import PairMethod, PairParams
from selfsup.registry import METHODS

NSPParams = PairParams


@METHODS.register("nsp")
class NSP(PairMethod):
    mode = "nsp"
