import math

import torch
import torch.nn.functional as F

from selfsup.losses import nt_xent
from selfsup.train.monitor import collapse_stats
from selfsup.train.optim import warmup_cosine


def reference_nt_xent(z1, z2, t):
    """SimCLR eq. 1 written out: for each of the 2N views, -log softmax of its positive over the other 2N-1."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        sims = [math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / sum(sims))
    return total / (2 * n)


def test_nt_xent_matches_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for t in (0.1, 0.5):
        assert abs(nt_xent(z1, z2, t).item() - reference_nt_xent(z1, z2, t)) < 1e-5


def test_nt_xent_rewards_aligned_views():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(32, 16, generator=g)
    assert nt_xent(z, z + 0.01 * torch.randn(32, 16, generator=g)) < nt_xent(z, torch.randn(32, 16, generator=g))


def test_collapse_stats():
    g = torch.Generator().manual_seed(0)
    spread = collapse_stats(torch.randn(256, 64, generator=g))
    point = collapse_stats(torch.ones(256, 64) + 1e-4 * torch.randn(256, 64, generator=g))
    line = collapse_stats(torch.randn(256, 1, generator=g) * torch.randn(1, 64, generator=g))
    assert spread["emb_std"] > 0.8 and spread["emb_erank"] > 30
    assert point["emb_std"] < 0.01
    assert line["emb_erank"] < 1.5


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == 0.1
    assert warmup_cosine(9, 100, 10) == 1.0
    assert warmup_cosine(10, 100, 10) == 1.0
    assert abs(warmup_cosine(55, 100, 10) - 0.5) < 1e-9
    assert warmup_cosine(100, 100, 10) == 0.0
