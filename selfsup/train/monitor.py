"""Collapse monitor: is the representation spreading out, or collapsing to a point or a line?

- std of the L2-normalized embeddings, averaged over dimensions, times sqrt(D): about 1
  for well spread features, -> 0 under complete collapse (Chen & He 2021, SimSiam sec. 4).
- effective rank (Roy & Vetterli 2007): exp of the entropy of the normalized singular
  values; 1 means all embeddings lie on one line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

STD_WARN = 0.05  # MAE's mean-pooled patch tokens sit near 0.08 while healthy (effective rank ~17)
RANK_WARN = 2.0


@torch.no_grad()
def collapse_stats(h: Tensor) -> dict[str, float]:
    z = F.normalize(h.float(), dim=1)  # [B, D]
    std = z.std(dim=0).mean().item() * z.shape[1] ** 0.5
    s = torch.linalg.svdvals(z - z.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()
    return {"emb_std": std, "emb_erank": erank}


def collapse_warning(stats: dict[str, float]) -> str | None:
    if stats["emb_std"] < STD_WARN or stats["emb_erank"] < RANK_WARN:
        return (f"warning: the representation is collapsing (normalized std x sqrt(D) = {stats['emb_std']:.3f}, "
                f"effective rank = {stats['emb_erank']:.2f}); lower the lr or raise the temperature")  # fmt: skip
    return None
