"""Losses shared by methods. Contrastive ones gather negatives across ranks with gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import gather_with_grad, rank


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent (SimCLR, Chen et al. 2020, eq. 1), averaged over all 2N anchors.

    z1, z2: [B, D] projections of two views of the same B images on this rank.
    Under DDP the candidates are the views of every rank (gathered with gradient),
    so the loss equals the single-process loss on the concatenated batch.
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)  # [B, D]
    b = z1.shape[0]
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)  # [N, D]
    n = all1.shape[0]
    anchors = torch.cat([z1, z2])  # [2B, D]
    candidates = torch.cat([all1, all2])  # [2N, D]
    logits = anchors @ candidates.T / temperature  # [2B, 2N]
    local = torch.arange(b, device=z1.device) + rank() * b  # this rank's rows in the gathered batch
    self_idx = torch.cat([local, local + n])  # [2B]
    positive = torch.cat([local + n, local])  # [2B]
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(logits, positive)
