"""Contrastive learning on biological sequences: SimCLR (Chen, Kornblith, Norouzi, Hinton, ICML 2020,
arXiv:2002.05709) with sequence augmentations.

Two random views of each sequence go through the encoder f (the text transformer, bidirectional, mean-pooled)
and a projection head g (2-layer MLP, 128-d); NT-Xent pulls the two views of a sequence together and pushes the
other 2(N - 1) views of the batch away (``selfsup.losses.nt_xent``, the library's SimCLR loss: under DDP the
negatives come from every rank, with gradient). The head and the loss are SimCLR's own (``mlp_head``,
``nt_xent``); only the views are new.

Views (``selfsup.views.sequence.SeqCodec``), made in batches on the device from the token rows, at the residue
level and then tokenized again with the run's own layout (single residues or k-mers):

* a random crop (SimCLR's random resized crop): a contiguous sub-sequence of a fraction uniform in 0.5 .. 1.0 of
  the row's residues (at least 8), at a uniform place; the two crops of a row then overlap in most cases (the
  paper's 0.08 of an image's area would leave a handful of residues of a 126-token window);
* point mutations (the counterpart of colour jitter: the residues change, the sequence stays recognizable): 5% of
  the residues, each replaced by a different core residue, in its case;
* for DNA and RNA, the reverse complement with probability 0.5 (the counterpart of the horizontal flip): both
  strands of a molecule carry the same information, so the features should not depend on the strand read.

Paper hyperparameters (SimCLR): LARS, lr 0.3 x BatchSize/256, weight decay 1e-6, temperature 0.1 - 0.5, batch
256 - 8192, 2-layer projection head to 128-d. Local changes and why:

* AdamW with the text methods' settings (lr per 256 sequences as mlm's, weight decay 0.01): the encoder is a
  transformer, which trains poorly with SGD / LARS at small batches;
* temperature 0.2 (the library's SimCLR default, between the paper's 0.1 for large batches and 0.5 for small);
* a batch of 64 on a CPU (128 views a step; mlm's 32 would leave 62 negatives).

The collapse monitor reads the pooled features h, the evaluated ones, as SimCLR's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.errors import UserError
from selfsup.losses import nt_xent
from selfsup.methods.base import Output, mlp_head
from selfsup.methods.mlm import check_text_encoder
from selfsup.methods.speaker_contrastive import contrastive_accuracy
from selfsup.registry import METHODS
from selfsup.views.sequence import SeqCodec


@dataclass
class SeqContrastiveParams:
    temperature: float = 0.2
    proj_hidden: int | None = None  # None: the encoder's dim
    proj_dim: int = 128
    crop_min: float = 0.5  # each view: a contiguous crop of crop_min .. crop_max of the row's residues
    crop_max: float = 1.0
    min_residues: int = 8  # ... and at least this many (the whole row when it is shorter)
    mutation_rate: float = 0.05  # share of residues replaced by another core residue
    rc_p: float = 0.5  # DNA / RNA: probability of a view being the reverse complement (ignored for proteins)


def check_params(p: SeqContrastiveParams) -> None:
    ok = (p.temperature > 0 and p.proj_dim >= 1 and 0 < p.crop_min <= p.crop_max <= 1 and p.min_residues >= 1
          and 0 <= p.mutation_rate < 1 and 0 <= p.rc_p <= 1)  # fmt: skip
    if not ok:
        raise UserError("method seq-contrastive: temperature > 0, proj_dim >= 1, 0 < crop_min <= crop_max <= 1, "
                        "min_residues >= 1, mutation_rate in [0, 1) and rc_p in [0, 1]")  # fmt: skip


@METHODS.register("seq-contrastive")
class SeqContrastive(nn.Module):
    modality = "tokens"
    # overlapping 6-mers on nucleotides (DNABERT's k): on drosophila-upstream windows, single residues let the
    # views' agreement fall and the features collapse, 6-mers learn it (docs/sequences.md)
    default_kmer = {"dna": 6, "rna": 6}
    raw_kinds = ("sequence",)  # biological sequences only (the views need residues): never text
    tokenizer_family = "wordpiece"  # the bidirectional layout: [CLS] window [SEP]
    collapse_advice = "lower the lr or raise method.temperature"
    Params = SeqContrastiveParams
    # lr per 256 sequences as mlm's (1e-3; 8e-3 on a CPU, i.e. 2e-3 at batch 64). Unmeasured for this method apart.
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "cpu_batch_size": 64, "cpu_lr": 8e-3}
    default_encoder = "text_transformer"
    sync_bn = True  # the projection head's BatchNorm over every rank's batch, as SimCLR's

    def __init__(self, encoder: nn.Module, params: SeqContrastiveParams, spec):
        super().__init__()
        check_params(params)
        check_text_encoder("seq-contrastive", encoder, causal=False)
        if not getattr(spec, "alphabet", "") or spec.cls_id is None or spec.sep_id is None:
            raise UserError("method seq-contrastive takes biological sequences (FASTA / FASTQ, or a CSV / TSV with a "
                            "sequence column) in [CLS] .. [SEP] rows; choose a text method for text")  # fmt: skip
        self.encoder, self.params, self.spec = encoder, params, spec
        self.codec = SeqCodec(spec)  # tables only (no weights)
        self.projector = mlp_head(encoder.dim, params.proj_hidden or encoder.dim, params.proj_dim)
        self.rc_p = params.rc_p if self.codec.has_complement else 0.0

    # ------------------------------------------------------------------ views
    def view(self, res: Tensor, n: Tensor, width: int, generator) -> tuple[Tensor, Tensor]:
        """One view of residue rows: crop, mutate, maybe reverse-complement, tokenize -> (ids [B, width], lengths)."""
        p, c = self.params, self.codec
        res, m = c.crop(res, n, generator, (p.crop_min, p.crop_max), p.min_residues, (width - 2) * c.stride)
        if p.mutation_rate > 0:
            res = c.mutate(res, m, generator, p.mutation_rate)
        if self.rc_p > 0:
            flip = torch.rand(res.shape[0], generator=generator, device=res.device) < self.rc_p
            res = c.reverse_complement(res, m, flip)
        return c.rows(*c.encode(res, m), width)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """Token rows [B, T] -> (two views of each row stacked [2B, T], their lengths [2B]): rows i and B + i are
        the same sequence."""
        res, n = self.codec.to_residues(x, lengths)
        a, la = self.view(res, n, x.shape[1], generator)
        b, lb = self.view(res, n, x.shape[1], generator)
        return torch.cat([a, b]), torch.cat([la, lb])

    # ------------------------------------------------------------------ the model
    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        ids, lengths = batch
        h = self.encoder(ids, lengths=lengths).pooled  # [2B, D]
        z1, z2 = self.projector(h).chunk(2)  # [B, 128] each
        loss = nt_xent(z1, z2, self.params.temperature)
        return Output(loss, {"contrastive_acc": contrastive_accuracy(z1, z2)}, h[: z1.shape[0]].detach())
