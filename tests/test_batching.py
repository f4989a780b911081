"""Length-grouped batches (selfsup.data.batching): a reordering of the epoch, seeded, with little padding."""

import numpy as np
import pytest
import torch

from selfsup.data.batching import length_grouped, padding_fraction


def clip_lengths(n: int = 960, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(16_000, 90_000, n)  # 1 to 5.6 s at 16 kHz, as synth-speech


def test_grouped_batches_are_the_same_samples_with_little_padding():
    lengths = clip_lengths()
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1))
    grouped = length_grouped(order, lengths, 32, torch.Generator().manual_seed(2), group_batches=10)
    assert sorted(grouped.tolist()) == sorted(order.tolist())  # every sample once
    assert padding_fraction(order, lengths, 32) > 0.3  # a random batch of 1-5.6 s clips is ~40% padding
    assert padding_fraction(grouped, lengths, 32) < 0.1  # 10 batches sorted at a time
    # each run of 10 batches holds the same samples as the run of the order it came from
    for batch in grouped.view(-1, 32):
        runs = {int(np.flatnonzero(order.numpy() == int(i))[0]) // 320 for i in batch}
        assert len(runs) == 1


def test_grouping_is_seeded_and_shuffles_the_batches():
    lengths = clip_lengths()
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1))
    a = length_grouped(order, lengths, 32, torch.Generator().manual_seed(5))
    assert torch.equal(a, length_grouped(order, lengths, 32, torch.Generator().manual_seed(5)))
    b = length_grouped(order, lengths, 32, torch.Generator().manual_seed(6))
    assert not torch.equal(a, b) and sorted(a.tolist()) == sorted(b.tolist())
    longest = torch.as_tensor(lengths)[a].view(-1, 32).max(1).values
    assert not bool((longest[1:] <= longest[:-1]).all())  # not simply longest batch first


def test_a_last_partial_batch_stays_last_and_errors():
    lengths = np.arange(1, 11) * 1000
    order = torch.arange(10)
    grouped = length_grouped(order, lengths, 4, torch.Generator().manual_seed(0), group_batches=1)
    assert grouped[-2:].tolist() == [9, 8]  # the last run [8, 9], sorted longest first, is the partial batch
    assert {frozenset(grouped[:4].tolist()), frozenset(grouped[4:8].tolist())} == {frozenset({0, 1, 2, 3}),
                                                                                  frozenset({4, 5, 6, 7})}
    with pytest.raises(ValueError, match="positive"):
        length_grouped(order, lengths, 0, torch.Generator())
