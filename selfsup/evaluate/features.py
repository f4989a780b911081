"""Frozen features: an encoder's pooled output (or its tokens) over a split, in batches, with progress and timing."""

from __future__ import annotations

import time

import numpy as np
import torch

from selfsup.distributed import local_device
from selfsup.encoders import Encoder
from selfsup.precision import as_channels_last, autocast, channels_last_for, to_channels_last


class TokenFeatures:
    """Ragged token features stored flat: sample i's tokens are ``flat[offsets[i]:offsets[i + 1]]`` [T_i, D].

    ``len``, ``take(idx)`` (a TokenFeatures of those samples, in that order), ``batch(idx)`` (zero-padded
    [B, T_max, D] and lengths [B]) and ``dim``."""

    def __init__(self, flat: torch.Tensor, lengths):
        self.flat = flat  # float32 [total, D]
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long).reshape(-1)  # [N]
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])  # [N + 1]
        if int(self.offsets[-1]) != flat.shape[0]:
            raise ValueError("TokenFeatures: the lengths do not add up to the rows of flat")

    @classmethod
    def from_padded(cls, parts: list[tuple[torch.Tensor, torch.Tensor]], dim: int) -> TokenFeatures:
        """Batches of (tokens [B, T, D], lengths [B]) -> one TokenFeatures (the padding dropped)."""
        rows = [t[b, : int(n)] for t, lens in parts for b, n in enumerate(lens.tolist())]
        lengths = [int(n) for _, lens in parts for n in lens.tolist()]
        return cls(torch.cat(rows) if rows else torch.zeros(0, dim), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def dim(self) -> int:
        return self.flat.shape[1]

    def take(self, idx) -> TokenFeatures:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long).reshape(-1)
        rows = [self.flat[self.offsets[i] : self.offsets[i + 1]] for i in idx.tolist()]
        return TokenFeatures(torch.cat(rows) if rows else self.flat[:0], self.lengths[idx])

    def map(self, fn) -> TokenFeatures:
        """The same samples with ``fn`` applied to every token row (e.g. standardization)."""
        return TokenFeatures(fn(self.flat), self.lengths)

    def batch(self, idx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (float32 [B, T_max, D] zero-padded after each sample's tokens, lengths [B]) of the samples at ``idx``."""
        idx = torch.arange(len(self)) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
        if len(idx) == 0:
            return torch.zeros(0, 0, self.dim), self.lengths[:0]
        starts, ends = self.offsets[idx].tolist(), self.offsets[idx + 1].tolist()
        rows = [self.flat[a:b] for a, b in zip(starts, ends)]
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), self.lengths[idx]


def extract_features(encoder: Encoder, x, batch_size: int = 512, device: str = "auto", lengths=None,
                     progress=None, tokens: bool = False) -> torch.Tensor | TokenFeatures:  # fmt: skip
    """Samples [N, ...] (an array or tensor; uint8 images for image encoders; a ragged container such as audio
    ``Waveforms``, whose ``batch()`` pads) -> pooled features [N, D]
    (float32, CPU); with ``tokens`` the valid tokens of each sample instead (a :class:`TokenFeatures`; encoders
    whose ``Features`` carry ``tokens`` and their ``lengths``). ``progress(done, total, seconds)`` is called after
    each batch. Samples of several lengths are batched shortest first (``length_order``) and returned in their
    own order: a batch pads to its longest sample.

    On a CPU, denormal floats are flushed to zero while features are extracted: a trained network's small
    activations otherwise take the CPU's slow path for subnormal arithmetic."""
    flush = torch.set_flush_denormal(True)
    try:
        return _extract(encoder, x, batch_size, device, lengths, progress, tokens)
    finally:
        if flush:
            torch.set_flush_denormal(False)


@torch.no_grad()
def _extract(encoder: Encoder, x, batch_size: int, device: str, lengths, progress, tokens: bool = False):
    dev = local_device(device)
    encoder = encoder.to(dev).eval()
    if hasattr(encoder, "inference_copy"):  # e.g. BatchNorm folded into the convolutions
        encoder = encoder.inference_copy()
    channels_last = channels_last_for(encoder, dev)
    if channels_last:
        to_channels_last(encoder)
    out, n, start = [], len(x), time.perf_counter()
    order = length_order(lengths if lengths is not None else getattr(x, "lengths", None), n, batch_size)
    for i in range(0, n, batch_size):
        at = slice(i, i + batch_size) if order is None else order[i : i + batch_size]
        b = x[at]
        if getattr(b, "ragged", False):  # e.g. audio clips: padded to the batch's longest
            b, lb = (t.to(dev) for t in b.batch())
        else:
            b = b.to(dev) if torch.is_tensor(b) else torch.from_numpy(np.array(b)).to(dev)  # a copy: memmaps are
            # read-only
            lb = None if lengths is None else torch.as_tensor(np.asarray(lengths[at])).to(dev)
        if channels_last:
            b = as_channels_last(b)
        with autocast(dev):
            f = encoder(b, lengths=lb) if lb is not None else encoder(b)
        if tokens:
            t = f.tokens.float().cpu()  # [B, T, D]
            valid = f.lengths.cpu() if f.lengths is not None else torch.full((t.shape[0],), t.shape[1])
            out.append((t, valid))
        else:
            out.append(f.pooled.float().cpu())
        if progress is not None:
            progress(min(n, i + batch_size), n, time.perf_counter() - start)
    back = None if order is None else np.argsort(order)  # the samples' own order again
    if tokens:
        feats = TokenFeatures.from_padded(out, encoder.dim)
        return feats if back is None else feats.take(back)
    if not out:
        return torch.zeros(0, encoder.dim)
    feats = torch.cat(out)
    return feats if back is None else feats[torch.from_numpy(back)]


def length_order(lengths, n: int, batch_size: int) -> np.ndarray | None:
    """The samples shortest first (stable), so each batch pads little, or None where the order does not matter
    (one length, no lengths, or a single batch)."""
    if lengths is None or n <= batch_size:
        return None
    lengths = np.asarray(lengths)
    if (lengths == lengths[0]).all():
        return None
    return np.argsort(lengths, kind="stable")


__all__ = ["TokenFeatures", "extract_features", "length_order"]
