"""The warm-up + cosine learning-rate schedule the papers use (pretraining and fine-tuning share it)."""

from __future__ import annotations

import math


def as_plans(first_plan, replanned_at) -> tuple[list[int], list[int]]:
    """``train.first_plan`` / ``train.replanned_at`` as lists (a config written before a run could re-plan twice
    holds one int each): the step counts in force before each re-plan, and the steps of the re-plans."""
    wrap = lambda v: [] if v is None else [int(x) for x in v] if isinstance(v, list | tuple) else [int(v)]  # noqa: E731
    plans, steps = wrap(first_plan), wrap(replanned_at)
    return plans[: len(steps)], steps[: len(plans)]


def plan_at(step: int, total: int, first_plan=None, replanned_at=None) -> int:
    """The run length in force at ``step``: the plan before the first re-plan after it, else ``total``."""
    plans, steps = as_plans(first_plan, replanned_at)
    return next((p for p, r in zip(plans, steps) if step < r), total)


def warmup_cosine(step: int, total: int, warmup: int, first_plan=None, replanned_at=None) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``.

    A run re-planned (a duration budget, see ``selfsup.train.loop``) at the steps ``replanned_at`` (an int or a
    list) followed, before each, the cosine of the plan in ``first_plan`` (its step count then); from each re-plan
    the rest of the cosine is spread over the steps left, so the rate stays continuous."""
    if step < warmup:
        return (step + 1) / warmup
    plans, steps = as_plans(first_plan, replanned_at)
    lengths = plans + [total]  # the run length in force before steps[0], between steps[0] and steps[1], ..., after
    start, done, i = warmup, 0.0, 0  # progress ``done`` reached at step ``start``
    while i < len(steps) and step >= steps[i]:
        if steps[i] > start:
            done += (1.0 - done) * (steps[i] - start) / max(1, lengths[i] - start)
            start = steps[i]
        i += 1
    progress = done + (1.0 - done) * (step - start) / max(1, lengths[i] - start)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
