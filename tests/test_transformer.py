"""The one transformer module: key padding from lengths, the causal flag, padding-aware pooling, dropped tokens."""

import pytest
import torch

from selfsup.encoders import masked_mean, padding_mask
from selfsup.encoders.transformer import Transformer, keep_visible
from selfsup.views import random_token_mask, visible_count


def net(seed=0):
    torch.manual_seed(seed)
    return Transformer(dim=16, depth=2, heads=2).eval()


def test_padding_changes_nothing_for_the_real_tokens():
    """A sequence padded with junk, with its length given, gives the same outputs at its real positions as alone."""
    t = net()
    g = torch.Generator().manual_seed(0)
    short, long = torch.randn(1, 5, 16, generator=g), torch.randn(1, 9, 16, generator=g)
    junk = torch.cat([short, 100 * torch.randn(1, 4, 16, generator=g)], dim=1)  # [1, 9, 16]
    batch = torch.cat([junk, long])  # lengths 5 and 9
    out = t(batch, lengths=torch.tensor([5, 9]))
    assert torch.allclose(out[:1, :5], t(short), atol=1e-5)
    assert torch.allclose(out[1:], t(long), atol=1e-5)
    assert not torch.allclose(t(batch)[:1, :5], t(short), atol=1e-3), "without lengths the junk is attended to"


def test_causal_positions_do_not_see_the_future():
    t = net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 16, generator=g)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 3, 16, generator=g)  # change only positions 4..6
    a, b = t(x, causal=True), t(y, causal=True)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6) and not torch.allclose(a[:, 4:], b[:, 4:])
    # causal and padding together: a padded causal sequence matches the unpadded one
    out = t(torch.cat([x[:1, :4], 50 * torch.ones(1, 3, 16)], dim=1), lengths=torch.tensor([4]), causal=True)
    assert torch.allclose(out[:, :4], t(x[:1, :4], causal=True), atol=1e-5)


def test_pooling_ignores_padding():
    tokens = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    assert torch.equal(masked_mean(tokens, torch.tensor([2, 3])), torch.tensor([[2.0], [4.0]]))
    assert torch.equal(masked_mean(tokens), tokens.mean(1))
    assert padding_mask(torch.tensor([1, 3]), 3).tolist() == [[True, False, False], [True, True, True]]


def test_token_masks_drop_the_same_count_and_never_keep_padding():
    g = torch.Generator().manual_seed(0)
    n_vis = visible_count(20, 0.75)
    mask = random_token_mask(6, 20, n_vis, g)
    assert n_vis == 5 and mask.dtype == torch.bool and (mask.sum(1) == 15).all()
    assert not torch.equal(mask[0], mask[1]), "a different mask per sample"
    lengths = torch.tensor([6, 20, 8, 20, 10, 7])
    padded = random_token_mask(6, 20, 5, g, lengths=lengths)
    kept = ~padded
    assert all(kept[i, lengths[i]:].sum() == 0 for i in range(6)), "padding is never kept visible"
    x = torch.arange(6 * 20).view(6, 20, 1).float()
    assert keep_visible(x, mask).shape == (6, 5, 1)
    with pytest.raises(ValueError, match="same"):
        keep_visible(x, torch.zeros(6, 20, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True)[[0, 0, 0, 0, 0, 0]]
                     .logical_and(torch.tensor([True, False, True, True, True, True])[:, None]))  # fmt: skip
