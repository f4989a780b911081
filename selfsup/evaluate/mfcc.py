"""The raw-input baseline of speech: MFCC statistics of each clip, for a linear model (DESIGN.md, "Honest numbers").

The clip's unnormalized 80-bin log-mel frames (the speech encoder's own front end, ``LogMel.logmel``: 25 ms /
10 ms at 16 kHz), a type-II orthonormal DCT keeping ``N_MFCC`` = 20 coefficients (the usual MFCC count for
speaker recognition), their first differences (deltas), and per clip the mean and standard deviation of both
over the clip's valid frames: 80 features. The utterance-level statistics a speaker i-vector front end starts
from, without a background model.
"""

from __future__ import annotations

import torch

from selfsup.encoders.base import padding_mask
from selfsup.encoders.speech import dct_matrix

N_MFCC = 20


@torch.no_grad()
def mfcc_stats(x, spec, batch_size: int = 64) -> torch.Tensor:
    """Clips (a ragged ``Waveforms``, or (float waveforms [N, T], lengths [N])) -> float32 [N, 4 * N_MFCC]."""
    from selfsup.encoders.speech import LogMel

    front, dct = LogMel(spec), dct_matrix(spec.n_mels, N_MFCC)
    out = []
    for i in range(0, len(x), batch_size):
        wave, lengths = x[i : i + batch_size].batch()
        wave = wave * padding_mask(lengths, wave.shape[1])
        c = front.logmel(wave) @ dct  # [B, F, 20]
        d = torch.diff(c, dim=1, prepend=c[:, :1])  # [B, F, 20]
        frames = spec.frames(lengths)  # [B]
        valid = padding_mask(frames, c.shape[1]).unsqueeze(-1).float()
        n = valid.sum(1).clamp_min(1)  # [B, 1]
        stats = []
        for f in (c, d):
            mean = (f * valid).sum(1) / n
            std = (((f - mean[:, None]).square() * valid).sum(1) / n).sqrt()
            stats += [mean, std]
        out.append(torch.cat(stats, 1))
    return torch.cat(out) if out else torch.zeros(0, 4 * N_MFCC)


__all__ = ["N_MFCC", "dct_matrix", "mfcc_stats"]
