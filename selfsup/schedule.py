"""The warm-up + cosine learning-rate schedule the papers use (pretraining and fine-tuning share it)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, first_plan: int | None = None,
                  replanned_at: int | None = None) -> float:  # fmt: skip
    """Linear warm-up from ~0 to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``.

    A run re-planned at step ``replanned_at`` (a duration budget, see ``selfsup.train.loop``) followed a
    ``first_plan``-step cosine until then; from there the rest of the cosine is spread over the steps left,
    so the rate stays continuous."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if first_plan is not None and replanned_at is not None and replanned_at > warmup:
        at = (replanned_at - warmup) / max(1, first_plan - warmup)  # progress reached under the first plan
        if step < replanned_at:
            progress = (step - warmup) / max(1, first_plan - warmup)
        else:
            progress = at + (1.0 - at) * (step - replanned_at) / max(1, total - replanned_at)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
