"""A Transformer over log-mel frames for speech, behind the Encoder contract.

Front end, computed in float32 on the input's device, batched:

1. log-mel: a Hann-windowed STFT of ``spec.win`` samples every ``spec.hop`` (25 ms / 10 ms at 16 kHz), centred
   windows (``spec.frames(n) = 1 + n // hop`` frames), the power spectrum through ``spec.n_mels`` triangular
   HTK-mel filters from 0 Hz to Nyquist (torchaudio's ``MelSpectrogram(norm=None, mel_scale="htk")``), then
   ``log(mel + 1e-6)``. The edges are padded with zeros, not reflected: a clip's last frames then read the same
   zeros whether the clip is alone or followed by batch padding.
2. per-utterance normalization over the clip's valid frames (``norm``): by default ``clip``, one mean and
   variance over every bin and frame, which removes the recording's gain but keeps its average spectrum (a
   speaker cue); ``bin`` normalizes each mel bin on its own (the CMVN of TERA's and Mockingjay's inputs), which
   removes that average spectrum. Padded frames are zero and never enter the statistics.
3. convolutional subsampling 4x in time (and in frequency), as the speech transformers / conformers of
   ESPnet (Dong et al. 2018; Gulati et al. 2020): two 3x3 convolutions of stride 2, each followed by ReLU, then a
   linear projection of the channels x remaining bins to ``dim``. Padding 1, so ``F`` frames give
   ``ceil(F / 2)`` then ``ceil(F / 4)`` tokens and frame ``f`` belongs to token ``f // 4`` (``subsample``);
   positions past a clip's length are zeroed before each convolution, so no valid output reads padding.

Then fixed sine-cosine positions (any length) and the core pre-norm Transformer
(``selfsup.encoders.transformer``) with a key-padding mask from the token lengths and a final LayerNorm;
``pooled`` is the mean over the valid tokens. A clip alone and the same clip in a zero-padded batch give the
same features.

Sizes (``size``; ``dim`` / ``depth`` / ``heads`` / ``conv_channels`` override it):

* ``tiny``: 144-d x 4 blocks x 4 heads, 64 conv channels (Conformer-S's width, Gulati et al. 2020);
* ``small``: 256-d x 6 x 4, 128 channels;
* ``base``: 768-d x 12 x 12, 256 channels (the width of TERA-base / wav2vec 2.0 base).

Left unset: ``tiny`` on a CPU, ``base`` on a GPU. The convolutions have fewer channels than ``dim``: at 80 bins
the second convolution runs on 20 bins per token and would otherwise cost more than the transformer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.spec import AudioSpec
from selfsup.encoders.base import Encoder, Features, masked_mean, padding_mask
from selfsup.encoders.transformer import Transformer, init_weights, sincos_1d
from selfsup.errors import UserError
from selfsup.registry import ENCODERS

SIZES = {"tiny": (144, 4, 4, 64), "small": (256, 6, 4, 128), "base": (768, 12, 12, 256)}  # dim, depth, heads, conv
DEVICE_SIZE = {"cpu": "tiny", "cuda": "base"}
LOG_EPS = 1e-6  # log(mel + 1e-6)
VAR_EPS = 1e-5  # normalization: (x - mean) / sqrt(var + 1e-5)
NORMS = ("clip", "bin")  # log-mel normalization; the first is the default (chosen on validation: docs/speech.md)


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise UserError(f"encoder.norm={norm!r} is not one of {', '.join(NORMS)}")
    return norm


@dataclass
class SpeechTransformerParams:
    size: str | None = None  # tiny | small | base; None: tiny on a CPU, base on a GPU
    dim: int | None = None  # None: the size's
    depth: int | None = None
    heads: int | None = None  # None: the size's, or dim // 64 (at least 1) for another dim
    mlp_ratio: float = 4.0
    conv_channels: int | None = None  # channels of the subsampling convolutions; None: the size's
    norm: str = NORMS[0]  # log-mel normalization per clip: clip (one mean and variance) | bin (each mel bin's)

    SHOWN = ("size", "dim", "depth")
    BEFORE_FIELD = {"norm": "bin"}  # runs written before ``norm`` existed normalized per bin

    def resolve(self, spec: AudioSpec, device_type: str, name: str = "speech_transformer") -> SpeechTransformerParams:
        size = self.size or DEVICE_SIZE.get(device_type, "small")
        if size not in SIZES:
            raise UserError(f"encoder.size={size!r} is not one of {', '.join(SIZES)}")
        s_dim, s_depth, s_heads, s_conv = SIZES[size]
        dim = self.dim if self.dim is not None else s_dim
        depth = self.depth if self.depth is not None else s_depth
        heads = self.heads if self.heads is not None else (s_heads if dim == s_dim else max(1, dim // 64))
        conv = self.conv_channels if self.conv_channels is not None else s_conv
        for key, value in (("dim", dim), ("depth", depth), ("heads", heads), ("conv_channels", conv)):
            if value < 1:
                raise UserError(f"encoder.{key}={value} must be a positive integer")
        if dim % 2:
            raise UserError(f"encoder.dim={dim} must be even (sine-cosine positions); pass --set encoder.dim={dim + 1}")
        if dim % heads:
            raise UserError(f"encoder.heads={heads} does not divide encoder.dim={dim}; "
                            f"pass --set encoder.heads=N with N a divisor of {dim}")  # fmt: skip
        check_norm(self.norm)
        return SpeechTransformerParams(size, dim, depth, heads, self.mlp_ratio, conv, self.norm)

    def size_note(self, name: str, device_type: str) -> str | None:
        if device_type == "cuda" or self.size is not None or (self.dim is not None and self.depth is not None):
            return None
        dim, depth, _, _ = SIZES["tiny"]
        return (f"encoder: {name} size tiny ({dim}-d x {depth} blocks) for a CPU (base is 768-d x 12); "
                "set --set encoder.size=tiny|small|base to choose another")  # fmt: skip


def hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> Tensor:
    """Triangular HTK-mel filters from 0 Hz to sample_rate / 2, unnormalized: [n_freqs, n_mels] (float64)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)  # [K] the STFT bins' centres
    mels = torch.linspace(0.0, hz_to_mel(float(sample_rate / 2)), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10 ** (mels / 2595.0) - 1.0)  # [n_mels + 2] filter corners in Hz
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # [n_mels] each
    rise = (freqs[:, None] - lo) / (mid - lo)  # [K, n_mels]
    fall = (hi - freqs[:, None]) / (hi - mid)
    return torch.minimum(rise, fall).clamp_min(0.0)


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II as a matrix [n_in, n_out]: ``x @ D`` gives the first ``n_out`` coefficients."""
    n = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_out, dtype=torch.float64)[None]
    d = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d.float()


class LogMel(nn.Module):
    """Waveforms [B, T] (+ lengths [B] in samples) -> (per-utterance normalized log-mel [B, F, n_mels], frame
    lengths [B]); F = 1 + T // hop, frame lengths 1 + length // hop, padded frames zero. No parameters.

    ``norm``: ``bin`` normalizes each mel bin by its own mean and variance over the clip's frames (CMVN); ``clip``
    by one mean and variance over all bins and frames of the clip, which removes the gain (a constant in log
    power) but keeps the clip's average spectral shape."""

    def __init__(self, spec: AudioSpec, norm: str = NORMS[0]):
        super().__init__()
        self.spec, self.norm = spec, check_norm(norm)
        self.register_buffer("window", torch.hann_window(spec.win), persistent=False)
        fb = mel_filterbank(spec.win // 2 + 1, spec.n_mels, spec.sample_rate)
        self.register_buffer("fbank", fb.float(), persistent=False)  # [K, n_mels]

    def logmel(self, wave: Tensor) -> Tensor:
        """Unnormalized log-mel of every frame: [B, T] -> [B, F, n_mels]."""
        s = self.spec
        stft = torch.stft(wave, s.win, s.hop, s.win, self.window, center=True, pad_mode="constant",
                          return_complex=True)  # [B, K, F]  # fmt: skip
        power = stft.real.square() + stft.imag.square()
        return torch.log(power.transpose(1, 2) @ self.fbank + LOG_EPS)  # [B, F, n_mels]

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if wave.ndim != 2:
            raise ValueError(f"the speech encoder takes waveforms [B, T], got shape {tuple(wave.shape)}")
        B, T = wave.shape
        with torch.autocast(wave.device.type, enabled=False):
            wave = wave.float()
            if lengths is None:
                lengths = torch.full((B,), T, device=wave.device)
            lengths = lengths.to(wave.device).long().clamp(0, T)
            wave = wave * padding_mask(lengths, T)  # whatever follows a clip reads as silence
            x = self.logmel(wave)  # [B, F, M]
            frames = self.spec.frames(lengths)  # [B]
            valid = padding_mask(frames, x.shape[1]).unsqueeze(-1).float()  # [B, F, 1]
            dims = (1,) if self.norm == "bin" else (1, 2)  # statistics per bin [B, 1, M] or per clip [B, 1, 1]
            n = valid.expand_as(x).sum(dims, keepdim=True)
            mean = (x * valid).sum(dims, keepdim=True) / n
            var = ((x - mean).square() * valid).sum(dims, keepdim=True) / n
            return (x - mean) * torch.rsqrt(var + VAR_EPS) * valid, frames


def conv_lengths(lengths: Tensor) -> Tensor:
    """Outputs of a kernel-3, stride-2, padding-1 convolution over ``lengths`` positions: ceil(n / 2)."""
    return (lengths + 1) // 2


class ConvSubsample(nn.Module):
    """[B, F, M] frames (+ lengths) -> [B, ceil(F / 4), dim] (+ lengths ceil(n / 4)): two 3x3 stride-2 convs with
    ReLU over (time, mel), then a linear map of channels x bins to ``dim``. Positions past each sample's length
    are zeroed before each convolution, so a valid output never reads padding."""

    factor = 4

    def __init__(self, n_mels: int, channels: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        bins = (n_mels + 3) // 4  # ceil(ceil(M / 2) / 2)
        self.proj = nn.Linear(channels * bins, dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        h = x.unsqueeze(1) * padding_mask(lengths, x.shape[1])[:, None, :, None].to(x.dtype)  # [B, 1, F, M]
        h = F.relu(self.conv1(h))  # [B, C, F1, M1]
        lengths = conv_lengths(lengths)
        h = h * padding_mask(lengths, h.shape[2])[:, None, :, None].to(h.dtype)
        h = F.relu(self.conv2(h))  # [B, C, F2, M2]
        lengths = conv_lengths(lengths)
        B, C, T, M = h.shape
        return self.proj(h.permute(0, 2, 1, 3).reshape(B, T, C * M)), lengths  # [B, F2, dim]


class SpeechTransformer(Encoder):
    subsample = ConvSubsample.factor  # frames per token: frame f is read into token f // subsample

    def __init__(self, spec: AudioSpec, dim: int = 144, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 conv_channels: int = 64, norm: str = NORMS[0]):  # fmt: skip
        super().__init__()
        self.spec, self.dim, self.n_mels = spec, dim, spec.n_mels
        self.input = LogMel(spec, norm)
        self.subsampling = ConvSubsample(spec.n_mels, conv_channels, dim)
        self.transformer = Transformer(dim, depth, heads, mlp_ratio)
        init_weights(self.subsampling.proj)
        self._pos = torch.zeros(0, dim)  # sine-cosine table, grown on demand (not saved)

    def positions(self, T: int, device, dtype) -> Tensor:
        if self._pos.shape[0] < T or self._pos.device != device:
            n = max(T, 2 * self._pos.shape[0], 512)
            self._pos = sincos_1d(self.dim, torch.arange(n)).float().to(device)  # [n, dim]
        return self._pos[:T].to(dtype)

    def features(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Waveforms [B, T] (+ lengths [B], samples) -> (normalized log-mel [B, F, n_mels], frame lengths [B])."""
        return self.input(wave, lengths)

    def encode_frames(self, frames: Tensor, frame_lengths: Tensor | None = None) -> Features:
        """Normalized log-mel frames [B, F, n_mels] (+ frame lengths [B]) -> Features(tokens [B, ceil(F / 4), D],
        pooled [B, D] (mean over valid tokens), lengths ceil(frame_lengths / 4))."""
        B, T = frames.shape[:2]
        if frame_lengths is None:
            frame_lengths = torch.full((B,), T, device=frames.device)
        frame_lengths = frame_lengths.to(frames.device).long()
        h, lengths = self.subsampling(frames, frame_lengths)  # [B, T', D]
        h = h + self.positions(h.shape[1], h.device, h.dtype)
        full = bool((lengths >= h.shape[1]).all())
        h = self.transformer(h, None if full else lengths)
        return Features(tokens=h, pooled=masked_mean(h, lengths), lengths=lengths)

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Features:
        """x: waveforms [B, T], padded after ``lengths`` [B] (samples); ``mask`` is not taken (masked
        reconstruction corrupts the frames: ``features`` then ``encode_frames``)."""
        if mask is not None:
            raise ValueError("the speech transformer takes waveforms; masking is done on the frames (views)")
        return self.encode_frames(*self.features(x, lengths))


def _build(spec: AudioSpec, params: SpeechTransformerParams) -> SpeechTransformer:
    return SpeechTransformer(spec, params.dim, params.depth, params.heads, params.mlp_ratio, params.conv_channels,
                             params.norm)  # fmt: skip


_build.Params, _build.spec_kind = SpeechTransformerParams, "audio"
ENCODERS.register("speech_transformer")(_build)
