"""Collapse monitor: is the representation spreading out, or collapsing to a point or a line?

- std of the L2-normalized embeddings, averaged over dimensions, times sqrt(D): about 1
  for well spread features, -> 0 under complete collapse (Chen & He 2021, SimSiam sec. 4).
- effective rank (Roy & Vetterli 2007): exp of the entropy of the normalized singular
  values; 1 means all embeddings lie on one line.

A warning needs a value under its threshold that has also fallen below ``FALL`` times the run's first
measurement (an encoder whose features start out narrow and spread as it learns is not collapsing). The
trainer (``CollapseWatch``) gives an all-clear when a warned representation is back above the thresholds:
a masked LM's token states narrow for a few dozen steps early on, while it predicts every masked token from
word frequencies alone, then spread as it learns context; a collapse that lasts does not recover. The
all-clear needs both values clear of their thresholds by ``RECOVER`` (hysteresis), and a warning is
repeated only every tenth measurement. The advice is the method's own (``collapse_advice``: e.g. SimCLR's
temperature), else "lower the lr".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

STD_WARN = 0.05  # MAE's mean-pooled patch tokens sit near 0.08 while healthy (effective rank ~17)
RANK_WARN = 2.0
FALL = 0.8  # ... and below this share of the first measurement
RECOVER = 1.25  # a warned representation has recovered once both values are this far above their thresholds
DEFAULT_ADVICE = "lower the lr"


@torch.no_grad()
def collapse_stats(h: Tensor) -> dict[str, float]:
    z = F.normalize(h.float(), dim=1)  # [B, D]
    std = z.std(dim=0).mean().item() * z.shape[1] ** 0.5
    s = torch.linalg.svdvals(z - z.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()
    return {"emb_std": std, "emb_erank": erank}


def collapse_warning(stats: dict[str, float], first: dict[str, float] | None = None,
                     advice: str = DEFAULT_ADVICE) -> str | None:  # fmt: skip
    """A one-line warning when ``stats`` say collapse; ``first``: the run's first measurement (None: no history)."""
    first = first or {}
    low_std = stats["emb_std"] < STD_WARN and stats["emb_std"] < FALL * first.get("emb_std", float("inf"))
    low_rank = stats["emb_erank"] < RANK_WARN and stats["emb_erank"] < FALL * first.get("emb_erank", float("inf"))
    if low_std or low_rank:
        return (f"warning: the representation is collapsing (normalized std x sqrt(D) = {stats['emb_std']:.3f}, "
                f"effective rank = {stats['emb_erank']:.2f}); {advice}")  # fmt: skip
    return None


def has_recovered(stats: dict[str, float]) -> bool:
    """Clear of both thresholds by a margin, so a value hovering at a threshold does not flicker between a
    warning and its all-clear."""
    return stats["emb_std"] >= RECOVER * STD_WARN and stats["emb_erank"] >= RECOVER * RANK_WARN


def recovered_message(stats: dict[str, float]) -> str:
    return (f"the representation is back above the collapse thresholds (normalized std x sqrt(D) = "
            f"{stats['emb_std']:.3f}, effective rank = {stats['emb_erank']:.2f}); the collapse warning above has "
            "passed")  # fmt: skip


class CollapseWatch:
    """The trainer's collapse monitor over a run: ``observe(stats)`` -> the line to print, or None. Warns on the
    first collapsing measurement and every tenth after while it lasts; once warned, gives the all-clear only
    when ``has_recovered`` (clear of the thresholds by a margin), once."""

    def __init__(self, advice: str = DEFAULT_ADVICE):
        self.advice, self.first, self.warned = advice, None, 0

    def observe(self, stats: dict[str, float]) -> str | None:
        warning = collapse_warning(stats, self.first, self.advice)
        self.first = self.first or stats
        if self.warned and not warning and has_recovered(stats):
            self.warned = 0
            return recovered_message(stats)
        if not (warning or self.warned):
            return None
        say = warning if warning and self.warned % 10 == 0 else None
        self.warned += 1
        return say
