"""Waveform augmentations for speech views: segment crops, additive noise, gain, speed perturbation.

Batched on the waveforms' device: ``x`` float [B, T] zero-padded after ``lengths`` [B] (samples), as the trainer
hands them to ``views``. Every random number comes from the passed ``torch.Generator`` in a shape that depends
only on the batch shape and the arguments (so a step's views depend only on the seed), and every function keeps
padding at exactly zero and returns the new lengths where they change.

* ``random_segment``: a window of ``size`` samples at a uniform random start inside each clip (the whole clip
  where it is shorter): the two random chunks of an utterance of wespeaker's self-supervised recipes.
* ``add_noise``: white Gaussian noise at a given signal-to-noise ratio, the signal power measured over the
  clip's valid samples (a stand-in for MUSAN noise, which is not bundled).
* ``apply_gain``: a gain in dB (no clipping: the model reads floats).
* ``speed_perturb``: Kaldi / sox ``speed``: the clip resampled by linear interpolation, so a factor ``s`` plays it
  ``s`` times faster: ``s`` times shorter and every frequency ``s`` times higher. Output sample ``j`` reads input
  position ``j * s``; a clip of ``n`` samples becomes ``floor((n - 1) / s) + 1`` samples (the positions inside
  it). No anti-aliasing filter: at ``s`` = 1.1 content above 16000 / 2 / 1.1 = 7.3 kHz folds back, and linear
  interpolation slightly damps the top of the band; both are small for speech.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from selfsup.encoders.base import padding_mask

__all__ = ["add_noise", "apply_gain", "random_gain", "random_noise", "random_segment", "random_speed",
           "speed_lengths", "speed_perturb"]  # fmt: skip


def _lengths(x: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    return lengths.to(x.device).long().clamp(0, x.shape[1])


def random_segment(x: Tensor, lengths: Tensor | None, size: int, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A random window of ``size`` samples of each clip, at a uniform start in ``0 .. n - size``; a clip of
    ``n <= size`` samples is taken whole. x [B, T] -> (segments [B, min(size, T)], lengths min(n, size) [B])."""
    if size < 1:
        raise ValueError(f"random_segment needs size >= 1, got {size}")
    B, T = x.shape
    n = _lengths(x, lengths)
    width = min(size, T)
    u = torch.rand(B, generator=generator, device=x.device)
    start = (u * (n - size + 1).clamp_min(1)).long().clamp_max((n - size).clamp_min(0))  # [B]
    pos = torch.arange(width, device=x.device)
    idx = (start[:, None] + pos[None]).clamp_max(T - 1)  # [B, width]
    out_lengths = n.clamp_max(size)
    return x.gather(1, idx) * padding_mask(out_lengths, width).to(x.dtype), out_lengths


def add_noise(x: Tensor, lengths: Tensor | None, snr_db: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x`` plus white Gaussian noise at ``snr_db`` [B] (signal power / noise power, in dB, the signal power the
    mean square of each clip's valid samples), on valid samples only. x [B, T] -> [B, T]."""
    n = _lengths(x, lengths)
    valid = padding_mask(n, x.shape[1]).to(x.dtype)  # [B, T]
    power = (x.float().square() * valid).sum(1) / n.clamp_min(1)  # [B]
    std = (power / 10 ** (snr_db.float().to(x.device) / 10)).sqrt()  # [B]
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return x + (noise * std[:, None]).to(x.dtype) * valid


def random_noise(x: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None,
                 snr_db: tuple[float, float] = (5.0, 20.0), p: float = 1.0) -> Tensor:  # fmt: skip
    """``add_noise`` at an SNR uniform in ``snr_db`` (dB) to each clip with probability ``p``. x [B, T] -> [B, T]."""
    B = x.shape[0]
    u = torch.rand(B, 2, generator=generator, device=x.device)  # [B]: SNR, whether
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * u[:, 0]
    noisy = add_noise(x, lengths, snr, generator)
    return torch.where((u[:, 1] < p)[:, None], noisy, x)


def apply_gain(x: Tensor, gain_db: Tensor) -> Tensor:
    """Each clip scaled by ``gain_db`` [B] dB (amplitude x 10^(g / 20)); padding stays zero. x [B, T] -> [B, T]."""
    return x * (10 ** (gain_db.float().to(x.device) / 20)).to(x.dtype)[:, None]


def random_gain(x: Tensor, generator: torch.Generator | None = None, max_db: float = 6.0) -> Tensor:
    """``apply_gain`` with a gain uniform in ``-max_db .. max_db`` dB per clip. x [B, T] -> [B, T]."""
    g = (2 * torch.rand(x.shape[0], generator=generator, device=x.device) - 1) * max_db
    return apply_gain(x, g)


def speed_lengths(lengths: Tensor, factors: Tensor) -> Tensor:
    """Samples a clip of ``lengths`` [B] has at speed ``factors`` [B]: floor((n - 1) / s) + 1 (0 stays 0)."""
    n = lengths.long()
    out = torch.floor((n - 1).clamp_min(0).double() / factors.double().to(n.device)).long() + 1
    return torch.where(n > 0, out, torch.zeros_like(out))


def speed_perturb(x: Tensor, lengths: Tensor | None, factors: Tensor) -> tuple[Tensor, Tensor]:
    """Each clip played ``factors`` [B] times faster (sox's ``speed``: shorter and higher for s > 1), by linear
    interpolation: output sample j = x at position j * s. x [B, T] -> (y [B, T'], lengths [B]), T' the longest
    new clip, padding zero."""
    B, T = x.shape
    n = _lengths(x, lengths)
    s = factors.double().to(x.device)
    new = speed_lengths(n, s)  # [B]
    width = max(1, int(new.max())) if B else 0
    pos = torch.arange(width, device=x.device, dtype=torch.float64)[None] * s[:, None]  # [B, T'] input positions
    last = (n - 1).clamp_min(0)[:, None]
    i0 = pos.floor().long().clamp_max(last)  # positions past a clip only occur in its padding (masked below)
    i1 = (i0 + 1).clamp_max(last)
    frac = (pos - i0.double()).clamp(0, 1).to(x.dtype)
    y = torch.lerp(x.gather(1, i0), x.gather(1, i1), frac)
    return y * padding_mask(new, width).to(x.dtype), new


def random_speed(x: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None,
                 factors: Sequence[float] = (0.9, 1.0, 1.1)) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``speed_perturb`` at a factor drawn uniformly from ``factors`` per clip (Kaldi's 0.9 / 1.0 / 1.1)."""
    table = torch.tensor(list(factors), dtype=torch.float64, device=x.device)
    pick = torch.randint(0, len(table), (x.shape[0],), generator=generator, device=x.device)
    return speed_perturb(x, lengths, table[pick])
