"""TERA: Self-Supervised Learning of Transformer Encoder Representation for Speech (Liu, Li, Lee, IEEE/ACM TASLP
2021, arXiv:2007.06028); with ``--set method.freq_mask=0 method.noise=0`` it is Mockingjay (Liu, Yang, Chi, Hsu,
Lee, ICASSP 2020, arXiv:1910.12638), time alteration alone.

The encoder reads altered log-mel frames and a prediction head reconstructs the clean ones. Three alterations of
the per-utterance normalized frames (numbers as the paper and the authors' released configuration,
logMelBase-T-F-M):

* time: runs of 7 consecutive frames covering 15% of each utterance's frames; per utterance, with probability
  0.8 all its runs are zeroed, 0.1 replaced by other frames of the same utterance, 0.1 left as they are (the
  dice is rolled once per utterance, as the reference code does, not once per run);
* frequency (channel): one band of consecutive mel bins per utterance, of a width uniform in 0 .. 20% of the
  bins (``freq_mask``), zeroed over every frame;
* magnitude: Gaussian noise of std 0.2 added to every frame, with probability 0.15 (``noise``).

The loss is the L1 distance between the prediction and the clean frames at the altered positions: the
time-altered frames (all three kinds, the unchanged ones included, as BERT) and the zeroed band at every valid
frame. Noise alone adds no target.

Paper hyperparameters (TERA-base): 3 post-norm transformer layers, 768-d, 12 heads, 3072 FFN, on 80-bin
log-mel with CMVN at frame rate; prediction head dense -> GELU -> LayerNorm -> linear; AdamW, lr 2e-4 with 7%
warm-up then linear decay, batch 32 (8 x 4 accumulation in the released configuration), gradient clipping 5,
1M steps on LibriSpeech 960 h.

Local changes and why:

* the encoder is ``speech_transformer`` (pre-norm, convolutional 4x subsampling, no dropout): the head predicts
  ``subsample x n_mels`` values per token, the ``subsample`` frames the token was read from (Mockingjay's
  prediction under its 3x frame stacking, at 4x), reshaped back to frame rate; its log-mel is normalized per
  clip by default, not per bin as the paper's CMVN (``--set encoder.norm=bin`` is the paper's; the default was
  chosen on validation over speaker and speech-to-text tasks, docs/speech.md);
* run starts are drawn independently per frame (``select_spans``: ``select_tokens``' span mode, the start
  probability raised so overlapping runs still hide ~15%), where the reference draws round(0.15 F / 7)
  distinct starts; runs never reach padding;
* replacement frames: the utterance cyclically shifted by a random offset, so each run becomes another run of
  the same utterance (the reference draws random runs); batched, with no per-utterance Python loop;
* noise is drawn per utterance (the reference rolls once per batch of 8): the same share of noisy utterances;
* defaults: batch 32 and lr 2e-4 at batch 32 (1.6e-3 per 256 by the library's linear rule) as the paper; on a
  CPU, where the encoder is ``tiny``, lr 1e-3 at batch 32 as the text methods' CPU lr. Neither is measured on
  speech yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.base import padding_mask, token_sample
from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.registry import METHODS
from selfsup.views.masking import select_spans


@dataclass
class TERAParams:
    mask_prob: float = 0.15  # share of each utterance's frames in time-altered runs (0: none)
    mask_span: int = 7  # consecutive frames per run
    zero_p: float = 0.8  # an utterance's runs are zeroed with this probability,
    random_p: float = 0.1  # replaced by other frames of the utterance with this one, else left as they are
    freq_mask: float = 0.2  # widest zeroed band of mel bins, as a share of the bins (0: none)
    noise: float = 0.15  # probability per utterance of Gaussian noise on its frames (0: none)
    noise_std: float = 0.2


class SpecHead(nn.Module):
    """TERA's prediction head: dense -> GELU -> LayerNorm -> linear. Tokens [..., D] -> [..., out]."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, out)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.norm(F.gelu(self.dense(h))))


def masked_l1(pred: Tensor, target: Tensor, where: Tensor) -> Tensor:
    """Mean |pred - target| over the True entries of ``where`` (all [B, F, M])."""
    w = where.to(torch.float32)
    return ((pred.float() - target.float()).abs() * w).sum() / w.sum().clamp_min(1)


def check_params(p: TERAParams) -> None:
    ok = (0 <= p.mask_prob < 1 and p.mask_span >= 1 and 0 <= p.zero_p and 0 <= p.random_p
          and p.zero_p + p.random_p <= 1 and 0 <= p.freq_mask <= 1 and 0 <= p.noise <= 1
          and p.noise_std >= 0)  # fmt: skip
    if not ok:
        raise UserError("method tera: mask_prob must be in [0, 1), mask_span at least 1, zero_p + random_p at most "
                        "1, freq_mask and noise in [0, 1] and noise_std >= 0")  # fmt: skip
    if p.mask_prob == 0 and p.freq_mask == 0:
        raise UserError("method tera: mask_prob=0 and freq_mask=0 leave nothing to reconstruct; set one above 0")


def check_speech_encoder(method: str, encoder: nn.Module, needs: tuple[str, ...] = ()) -> None:
    """A one-line UserError unless ``encoder`` exposes the speech front end a frame-level method drives."""
    if not all(hasattr(encoder, a) for a in ("features", "encode_frames", "subsample", *needs)):
        raise UserError(f"method {method} needs a speech encoder; use --encoder speech_transformer")


@METHODS.register("tera")
class TERA(nn.Module):
    modality = "audio"
    Params = TERAParams
    # lr per 256 utterances: the paper's 2e-4 at batch 32; on a CPU (tiny encoder) 1e-3 at 32. Unmeasured.
    defaults = {"optimizer": "adamw", "lr": 1.6e-3, "weight_decay": 0.01, "batch_size": 32, "cpu_batch_size": 32,
                "cpu_lr": 8e-3}  # fmt: skip
    group_by_length = True  # reads whole clips: batches of similar lengths pad less (selfsup.data.batching)
    default_encoder = "speech_transformer"

    def __init__(self, encoder: nn.Module, params: TERAParams, spec):
        super().__init__()
        check_speech_encoder("tera", encoder)
        check_params(params)
        self.encoder, self.params, self.n_mels = encoder, params, spec.n_mels
        self.head = SpecHead(encoder.dim, encoder.subsample * spec.n_mels)

    # ------------------------------------------------------------------ views
    def alter(self, frames: Tensor, lengths: Tensor, generator) -> tuple[Tensor, Tensor]:
        """Clean frames [B, F, M] (+ frame lengths [B]) -> (altered frames [B, F, M], altered bool [B, F, M]: the
        positions the loss reads)."""
        p = self.params
        B, T, M = frames.shape
        dev = frames.device
        valid = padding_mask(lengths, T)  # [B, F]
        runs = (select_spans(lengths, T, p.mask_prob, p.mask_span, generator) if p.mask_prob > 0
                else torch.zeros(B, T, dtype=torch.bool, device=dev))  # fmt: skip
        u = torch.rand(B, 5, generator=generator, device=dev)  # per utterance: dice, shift, width, start, noise
        zeroed = runs & (u[:, :1] < p.zero_p)  # [B, F]
        replaced = runs & (u[:, :1] >= p.zero_p) & (u[:, :1] < p.zero_p + p.random_p)
        n = lengths.clamp_min(1)[:, None]  # [B, 1]
        shift = 1 + (u[:, 1:2] * (n - 1)).long()  # [B, 1] in 1 .. n - 1 (a one-frame utterance reads itself)
        src = (torch.arange(T, device=dev)[None] + shift) % n  # [B, F] frame read in place of each frame
        out = torch.where(replaced[..., None], frames.gather(1, src[..., None].expand(B, T, M)), frames)
        out = out.masked_fill(zeroed[..., None], 0.0)
        widest = int(p.freq_mask * M)
        width = (u[:, 2:3] * (widest + 1)).long().clamp_max(widest)  # [B, 1] uniform in 0 .. widest
        start = (u[:, 3:4] * (M - width + 1)).long().clamp_max(M - width)
        bins = torch.arange(M, device=dev)[None]
        band = (bins >= start) & (bins < start + width)  # [B, M]
        out = out.masked_fill(band[:, None, :], 0.0)
        if p.noise > 0:
            noisy = (u[:, 4] < p.noise)[:, None, None] & valid[..., None]  # [B, F, 1]
            out = out + p.noise_std * torch.randn(out.shape, generator=generator, device=dev) * noisy
        altered = runs[..., None] | (band[:, None, :] & valid[..., None])  # [B, F, M]
        return out, altered

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Waveforms [B, T] -> (altered frames [B, F, M], clean frames [B, F, M], altered bool [B, F, M],
        frame lengths [B])."""
        with torch.no_grad():
            frames, frame_lengths = self.encoder.features(x, lengths)
            altered_frames, altered = self.alter(frames, frame_lengths, generator)
        return altered_frames, frames, altered, frame_lengths

    # ------------------------------------------------------------------ the model
    def reconstruct(self, frames: Tensor, frame_lengths: Tensor):
        """Altered frames [B, F, M] -> (reconstruction [B, F, M], Features): token t predicts frames
        ``subsample * t .. subsample * (t + 1) - 1``."""
        B, T, M = frames.shape
        feats = self.encoder.encode_frames(frames, frame_lengths)
        pred = self.head(feats.tokens)  # [B, T', subsample * M]
        return pred.reshape(B, -1, M)[:, :T], feats

    def forward(self, batch) -> Output:
        altered_frames, frames, altered, frame_lengths = batch
        pred, feats = self.reconstruct(altered_frames, frame_lengths)
        loss = masked_l1(pred, frames, altered)
        # the per-utterance mean of normalized frames is 0: its L1 is the floor a model must beat
        mean_l1 = masked_l1(torch.zeros_like(frames), frames, altered)
        metrics = {"tera_mean_l1": mean_l1, "tera_l1_ratio": loss.detach() / mean_l1.clamp_min(1e-8)}
        return Output(loss, metrics, token_sample(feats.tokens, feats.lengths))
