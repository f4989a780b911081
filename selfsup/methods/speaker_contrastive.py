"""Speaker contrastive learning: SimCLR on two random segments of an utterance (Zhang, Zou, Wang, "Contrastive
Self-Supervised Learning for Text-Independent Speaker Verification", ICASSP 2021; the SimCLR recipe of wespeaker,
examples/voxceleb/v3/simclr). One utterance has one speaker, so two segments of it under independent channel
augmentation are a positive pair, and the other utterances of the batch are the negatives.

Two random segments of each clip (2 s each, or the whole clip when it is shorter), each with its own additive
noise and gain, go through the encoder; the pooled features pass a projection MLP and NT-Xent pulls the pair
together against the other 2(N - 1) segments of the batch (``selfsup.losses.nt_xent``, the library's SimCLR
loss: under DDP the negatives come from every rank, with gradient).

wespeaker's recipe (``conf/ecapa_tdnn.yaml`` and ``wespeaker/ssl``, read for this file): ECAPA-TDNN on 80-bin
fbank with CMVN, one 200-frame (2 s) chunk per view, temperature T = 0.07, no projection MLP (``mlp: False``),
the NT-Xent of SimCLR over the 2N views, batch 128, SGD (Nesterov, momentum 0.9, weight decay 1e-4), lr 0.1
decaying exponentially to 5e-5 after 6 warm-up epochs, 150 epochs on VoxCeleb2; speed perturbation (0.9 / 1.0 /
1.1) applied to the whole utterance before its chunks are cut, then MUSAN noise or RIR reverberation on every
chunk (``aug_prob`` 1.0), no SpecAugment.

Local changes and why:

* the encoder is ``speech_transformer`` (pooled = mean over valid tokens) rather than ECAPA-TDNN; AdamW with the
  lr of the library's other speech method (tera), not SGD at 0.1, which suits a TDNN more than a transformer;
* a projection MLP (SimCLR's g: linear -> BN -> ReLU -> linear, 128-d; ``proj_dim=0`` drops it as wespeaker
  does): the evaluated features are the pooled ones, and g keeps the loss's invariances off them;
* noise is white Gaussian at an SNR uniform in 5 .. 20 dB (no MUSAN / RIR corpus is bundled), and a random gain
  of +-6 dB per segment (mostly undone by the encoder's per-utterance normalization of log-mel, kept for encoders
  without it);
* speed perturbation as wespeaker: one factor per utterance, shared by its two segments (a speed change shifts
  the pitch, a speaker cue: a pair at different speeds would teach invariance to it); ``speed_per_view=True``
  draws a factor per segment instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import UserError
from selfsup.losses import nt_xent
from selfsup.methods.base import Output, mlp_head
from selfsup.registry import METHODS
from selfsup.views.audio import random_gain, random_noise, random_segment, random_speed


@dataclass
class SpeakerContrastiveParams:
    temperature: float = 0.07  # wespeaker's T
    segment_seconds: float = 2.0  # each view: a random 2 s of the clip (200 frames), the whole clip if shorter
    proj_hidden: int | None = None  # None: the encoder's dim
    proj_dim: int = 128  # 0: no projection head (wespeaker's mlp: False)
    speed: float = 0.1  # speed factors 1 - speed, 1, 1 + speed per utterance (0: none)
    speed_per_view: bool = False  # True: a factor per segment rather than per utterance
    noise_p: float = 1.0  # probability of white noise on a segment
    snr_min_db: float = 5.0
    snr_max_db: float = 20.0
    gain_db: float = 6.0  # each segment's gain uniform in -gain_db .. gain_db (0: none)


def check_params(p: SpeakerContrastiveParams) -> None:
    ok = (p.temperature > 0 and p.segment_seconds > 0 and p.proj_dim >= 0 and 0 <= p.speed < 1
          and 0 <= p.noise_p <= 1 and p.snr_min_db <= p.snr_max_db and p.gain_db >= 0)  # fmt: skip
    if not ok:
        raise UserError("method speaker-contrastive: temperature and segment_seconds must be > 0, proj_dim >= 0, "
                        "speed in [0, 1), noise_p in [0, 1], snr_min_db <= snr_max_db and gain_db >= 0")  # fmt: skip


def pad_to(x: Tensor, width: int) -> Tensor:
    return F.pad(x, (0, width - x.shape[1]))


def contrastive_accuracy(z1: Tensor, z2: Tensor) -> Tensor:
    """Share of the 2B local anchors whose most similar other view is their positive (this rank's batch)."""
    z = F.normalize(torch.cat([z1, z2]).detach().float(), dim=1)  # [2B, d]
    sim = (z @ z.T).fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return (sim.argmax(1) == positive).float().mean()


@METHODS.register("speaker-contrastive")
class SpeakerContrastive(nn.Module):
    modality = "audio"
    collapse_advice = "lower the lr or raise method.temperature"
    Params = SpeakerContrastiveParams
    # lr per 256 utterances as tera's (AdamW): 1.6e-3 (2e-4 at batch 32), 8e-3 on a CPU (1e-3 at 32). Unmeasured.
    defaults = {"optimizer": "adamw", "lr": 1.6e-3, "weight_decay": 0.01, "batch_size": 128, "cpu_batch_size": 32,
                "cpu_lr": 8e-3}  # fmt: skip
    default_encoder = "speech_transformer"
    sync_bn = True  # the projection head's BatchNorm over every rank's batch, as SimCLR's

    def __init__(self, encoder: nn.Module, params: SpeakerContrastiveParams, spec):
        super().__init__()
        check_params(params)
        self.encoder, self.params = encoder, params
        self.segment = max(1, round(params.segment_seconds * spec.sample_rate))  # samples
        self.projector = (mlp_head(encoder.dim, params.proj_hidden or encoder.dim, params.proj_dim)
                          if params.proj_dim else nn.Identity())  # fmt: skip

    # ------------------------------------------------------------------ views
    def speed(self, x: Tensor, lengths: Tensor, generator) -> tuple[Tensor, Tensor]:
        s = self.params.speed
        return random_speed(x, lengths, generator, (1 - s, 1.0, 1 + s)) if s > 0 else (x, lengths)

    def channel(self, x: Tensor, lengths: Tensor, generator) -> Tensor:
        """One segment's own noise and gain."""
        p = self.params
        if p.noise_p > 0:
            x = random_noise(x, lengths, generator, (p.snr_min_db, p.snr_max_db), p.noise_p)
        return random_gain(x, generator, p.gain_db) if p.gain_db > 0 else x

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor]:
        """Waveforms [B, T] -> (two segments of each clip, stacked [2B, S], their lengths [2B]): rows i and B + i
        are the same utterance."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        if not self.params.speed_per_view:
            x, lengths = self.speed(x, lengths, generator)
        segments = []
        for _ in range(2):
            xv, lv = self.speed(x, lengths, generator) if self.params.speed_per_view else (x, lengths)
            seg, seg_lengths = random_segment(xv, lv, self.segment, generator)
            segments.append((self.channel(seg, seg_lengths, generator), seg_lengths))
        width = max(s.shape[1] for s, _ in segments)
        wave = torch.cat([pad_to(s, width) for s, _ in segments])  # [2B, S]
        return wave, torch.cat([n for _, n in segments])

    # ------------------------------------------------------------------ the model
    def forward(self, batch: tuple[Tensor, Tensor]) -> Output:
        wave, lengths = batch
        h = self.encoder(wave, lengths=lengths).pooled  # [2B, D]
        z1, z2 = self.projector(h).chunk(2)  # [B, d] each
        loss = nt_xent(z1, z2, self.params.temperature)
        # the collapse monitor reads z, the space the loss spreads: the mean-pooled speech features h narrow to a
        # common direction while they learn (docs/speech.md), which the monitor would take for a collapse
        return Output(loss, {"contrastive_acc": contrastive_accuracy(z1, z2)}, z1.detach())
