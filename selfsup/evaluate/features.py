"""Frozen features: an encoder's pooled output over a split, in batches, with progress and timing."""

from __future__ import annotations

import time

import numpy as np
import torch

from selfsup.distributed import local_device
from selfsup.encoders import Encoder
from selfsup.precision import as_channels_last, autocast, channels_last_for, to_channels_last


def extract_features(encoder: Encoder, x, batch_size: int = 512, device: str = "auto", lengths=None,
                     progress=None) -> torch.Tensor:  # fmt: skip
    """Samples [N, ...] (an array or tensor; uint8 images for image encoders; a ragged container such as audio
    ``Waveforms``, whose ``batch()`` pads) -> pooled features [N, D]
    (float32, CPU). ``progress(done, total, seconds)`` is called after each batch.

    On a CPU, denormal floats are flushed to zero while features are extracted: a trained network's small
    activations otherwise take the CPU's slow path for subnormal arithmetic."""
    flush = torch.set_flush_denormal(True)
    try:
        return _extract(encoder, x, batch_size, device, lengths, progress)
    finally:
        if flush:
            torch.set_flush_denormal(False)


@torch.no_grad()
def _extract(encoder: Encoder, x, batch_size: int, device: str, lengths, progress) -> torch.Tensor:
    dev = local_device(device)
    encoder = encoder.to(dev).eval()
    if hasattr(encoder, "inference_copy"):  # e.g. BatchNorm folded into the convolutions
        encoder = encoder.inference_copy()
    channels_last = channels_last_for(encoder, dev)
    if channels_last:
        to_channels_last(encoder)
    out, n, start = [], len(x), time.perf_counter()
    for i in range(0, n, batch_size):
        b = x[i : i + batch_size]
        if getattr(b, "ragged", False):  # e.g. audio clips: padded to the batch's longest
            b, lb = (t.to(dev) for t in b.batch())
        else:
            b = b.to(dev) if torch.is_tensor(b) else torch.from_numpy(np.array(b)).to(dev)  # a copy: memmaps are
            # read-only
            lb = None if lengths is None else torch.as_tensor(np.asarray(lengths[i : i + batch_size])).to(dev)
        if channels_last:
            b = as_channels_last(b)
        with autocast(dev):
            f = encoder(b, lengths=lb).pooled if lb is not None else encoder(b).pooled
        out.append(f.float().cpu())
        if progress is not None:
            progress(min(n, i + batch_size), n, time.perf_counter() - start)
    if not out:
        return torch.zeros(0, encoder.dim)
    return torch.cat(out)


__all__ = ["extract_features"]
