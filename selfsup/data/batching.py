"""Batches of clips of similar length: less padding for inputs of ragged length (audio).

A batch of ragged clips is padded to its longest clip, and the speech encoder computes on the padding as on
the audio (only the attention ignores it). Drawn at random from synth-speech's clips (1 to 5.6 s), a batch of
32 is about 40% padding. ``length_grouped`` reorders an epoch's seeded order the way fairseq's and Hugging
Face's length-grouped samplers do: each run of ``GROUP_BATCHES`` batches is sorted by length and cut into
batches, then the batches are shuffled; every sample is still seen once an epoch, and the order still depends
only on the seed, the epoch and the lengths.
"""

from __future__ import annotations

import numpy as np
import torch

GROUP_BATCHES = 50  # batches sorted by length together (Hugging Face's LengthGroupedSampler megabatch)


def length_grouped(order: torch.Tensor, lengths, batch: int, generator: torch.Generator,
                   group_batches: int = GROUP_BATCHES) -> torch.Tensor:  # fmt: skip
    """An epoch's order [N] (sample indices) -> the same indices, each run of ``group_batches * batch`` of them
    sorted by length (longest first, ties in their order), then the full batches of ``batch`` shuffled with
    ``generator``; a last partial batch stays last."""
    if batch < 1 or group_batches < 1:
        raise ValueError(f"batch ({batch}) and group_batches ({group_batches}) must be positive")
    lens = torch.as_tensor(np.asarray(lengths, dtype=np.int64))[order]  # [N] each position's length
    run = group_batches * batch
    parts = [order[i : i + run][torch.sort(lens[i : i + run], descending=True, stable=True).indices]
             for i in range(0, len(order), run)]  # fmt: skip
    grouped = torch.cat(parts) if parts else order
    full = len(order) // batch * batch
    batches = grouped[:full].view(-1, batch)
    batches = batches[torch.randperm(len(batches), generator=generator)]
    return torch.cat([batches.reshape(-1), grouped[full:]])


def padded_sizes(order: torch.Tensor, lengths, batch: int) -> torch.Tensor:
    """The input size with its padding of each full batch of ``batch`` consecutive samples of ``order``: its rows x
    its longest sample, int64 [len(order) // batch]."""
    lens = torch.as_tensor(np.asarray(lengths, dtype=np.int64))[order[: len(order) // batch * batch]]
    return lens.view(-1, batch).max(1).values * batch


def padding_fraction(order: torch.Tensor, lengths, batch: int) -> float:
    """The share of padding in the full batches of ``batch`` consecutive samples of ``order``: 1 - (their
    lengths summed) / (``padded_sizes`` summed)."""
    full = len(order) // batch * batch
    if full == 0:
        return 0.0
    valid = torch.as_tensor(np.asarray(lengths, dtype=np.int64))[order[:full]].sum()
    return float(1 - valid / padded_sizes(order, lengths, batch).sum())


__all__ = ["GROUP_BATCHES", "length_grouped", "padded_sizes", "padding_fraction"]
