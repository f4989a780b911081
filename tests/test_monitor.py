"""The collapse monitor: warns on a representation that falls to a point or a line, not on one that starts narrow."""

import torch

from selfsup.methods.mlm import MLM
from selfsup.methods.moco import MoCo
from selfsup.methods.simclr import SimCLR
from selfsup.train.monitor import CollapseWatch, collapse_stats, collapse_warning


def test_spread_and_collapsed_embeddings():
    g = torch.Generator().manual_seed(0)
    spread = collapse_stats(torch.randn(256, 64, generator=g))
    point = collapse_stats(torch.ones(256, 64) + 1e-4 * torch.randn(256, 64, generator=g))
    line = collapse_stats(torch.randn(256, 1, generator=g) * torch.randn(1, 64, generator=g))
    assert spread["emb_std"] > 0.9 and spread["emb_erank"] > 30
    assert point["emb_std"] < 0.01
    assert line["emb_erank"] < 1.5
    assert collapse_warning(spread) is None
    assert collapse_warning(point) is not None and collapse_warning(line) is not None


def test_a_narrow_start_is_not_a_collapse_but_a_fall_is():
    first = {"emb_std": 0.03, "emb_erank": 40.0}  # a text transformer's mean token state at random init
    assert collapse_warning({"emb_std": 0.031, "emb_erank": 41.0}, first) is None
    assert collapse_warning({"emb_std": 0.2, "emb_erank": 50.0}, first) is None
    fell = collapse_warning({"emb_std": 0.01, "emb_erank": 40.0}, first)
    assert fell is not None and "0.010" in fell


def test_advice_is_the_methods_own():
    stats = {"emb_std": 0.001, "emb_erank": 1.0}
    assert collapse_warning(stats).endswith("lower the lr")
    mlm = collapse_warning(stats, advice=MLM.collapse_advice)
    assert "temperature" not in mlm and "first few hundred steps" in mlm and mlm.endswith("lower the lr (--lr)")
    for cls in (SimCLR, MoCo):
        assert collapse_warning(stats, advice=cls.collapse_advice).endswith("raise method.temperature")


def test_a_value_hovering_at_the_threshold_warns_once_and_clears_once():
    """The normalized std of a masked LM's mean token states over its first 200 steps on IMDB (every 10 steps,
    effective rank ~23 throughout): it dips under 0.05 and hovers there before it spreads out."""
    stds = [0.527, 0.518, 0.436, 0.341, 0.221, 0.163, 0.109, 0.085, 0.061, 0.055, 0.046, 0.051, 0.042, 0.045,
            0.055, 0.045, 0.057, 0.071, 0.073, 0.078, 0.08, 0.173]  # fmt: skip
    watch = CollapseWatch()
    lines = [watch.observe({"emb_std": s, "emb_erank": 23.0}) for s in stds]
    said = [(i, line.split(" (")[0]) for i, line in enumerate(lines) if line]
    assert said == [(10, "warning: the representation is collapsing"),
                    (17, "the representation is back above the collapse thresholds")]


def test_a_lasting_collapse_is_repeated_every_tenth_measurement_and_never_cleared():
    watch = CollapseWatch(advice="lower the temperature")
    healthy, collapsed = {"emb_std": 0.5, "emb_erank": 20.0}, {"emb_std": 0.01, "emb_erank": 1.2}
    lines = [watch.observe(healthy if i == 0 else collapsed) for i in range(25)]
    warned = [i for i, line in enumerate(lines) if line]
    assert warned == [1, 11, 21] and all("lower the temperature" in lines[i] for i in warned)
