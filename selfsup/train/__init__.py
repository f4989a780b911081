"""The training loop and what it writes into a run folder."""

from selfsup.train.loop import Run, Trainer, pretrain

__all__ = ["Run", "Trainer", "pretrain"]
