"""HuBERT: Self-Supervised Speech Representation Learning by Masked Prediction of Hidden Units (Hsu, Bolte, Tsai,
Lakhotia, Salakhutdinov, Mohamed, IEEE/ACM TASLP 2021, arXiv:2106.07447); its first iteration.

Before training, k-means clusters MFCC frames of the training audio; a frame's cluster id is its "hidden unit".
Spans of input frames are replaced by a learned mask embedding, and the encoder predicts the units of the
masked positions: cross-entropy over the clusters of the cosine similarity between a projection of each token
state and a learned embedding per cluster, divided by a temperature (the paper's ``L_m``; its ``alpha = 1``: no
loss at unmasked positions).

Paper hyperparameters (BASE, first iteration; fairseq's released configuration): 39-d MFCC (13 coefficients,
deltas, delta-deltas, at 10 ms) clustered into 100 units by k-means (k-means++ init) on a sample of the
training set; masking as wav2vec 2.0 with p = 8% of the 20 ms frames starting a span of l = 10 frames (spans
may overlap: about half of the frames masked), masked CNN outputs replaced by a learned embedding; projection
to 256-d, cosine logits at temperature 0.1; the labels at 100 Hz subsampled to the 50 Hz frames by taking the
label of each frame's first 10 ms (fairseq's ``forward_targets``); 12-layer 768-d transformer; Adam, peak lr
5e-4, 8% warm-up then linear decay, 250k steps at 87.5 s of audio per GPU on 32 GPUs (LibriSpeech 960 h).

Local changes and why:

* the encoder is ``speech_transformer``: normalized 80-bin log-mel at 10 ms, then 4x convolutional subsampling
  to 40 ms tokens. The mask is applied to the log-mel frames at the encoder's input (before subsampling), each
  masked frame replaced by a learned 80-d vector (``mask_emb``, zero at init, where fairseq draws it uniform in
  [0, 1): zero is the mean of normalized frames): HuBERT masks the frames its transformer reads.
* masking mapped to 10 ms frames: ``mask_prob`` and ``mask_span`` keep the paper's units (per 20 ms frame), so a
  span of 10 x 20 ms is 20 of our frames and the start probability per 10 ms frame is 8% / 2 = 4%: the same
  spans per second and the same ~56% of frames masked. Starts are drawn independently per frame
  (``select_spans``), where wav2vec 2.0 draws p x T distinct starts; spans never reach padding.
* targets at token rate: a token reads frames 4t .. 4t + 3 and its target is frame 4t's unit, as fairseq
  takes the first 10 ms label of each 20 ms frame. The loss reads the tokens whose valid frames are all masked
  (a token partly masked still sees part of its input, and counts neither as masked nor in the loss).
* MFCCs from the encoder's own unnormalized log-mel (80 HTK-mel bins, 25 ms / 10 ms) through an orthonormal DCT
  (``selfsup.encoders.speech.dct_matrix``, as the MFCC baseline uses it), deltas by the 5-frame regression of
  Kaldi / torchaudio's
  ``compute_deltas``, both read only inside the clip (its edges replicated, never the batch's padding).
* k-means: Lloyd's algorithm in torch on up to ``kmeans_frames`` (100k) frames of a seeded sample of clips,
  k-means++ init, ``kmeans_iters`` (20) iterations, where fairseq runs scikit-learn's MiniBatchKMeans on a sample
  of the training set (10% in its example); deterministic from the seed. It runs once, in ``prepare`` (the
  Trainer calls it before the first step of a new run); the centroids are a buffer of the method, so a resumed
  run restores them from its checkpoint instead of fitting again, and each batch's targets are their nearest
  centroids.
* 100 clusters everywhere (the prediction layer is 256 x 100: no cost worth cutting on a CPU); the optimizer and
  lr are tera's (AdamW, 1.6e-3 per 256 utterances on a GPU, 1e-3 at batch 32 on a CPU); unmeasured on speech.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.base import padding_mask, token_sample
from selfsup.encoders.speech import dct_matrix
from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.methods.tera import TERA, check_speech_encoder
from selfsup.registry import METHODS
from selfsup.views.masking import select_spans

N_CEPS = 13  # MFCC coefficients; with deltas and delta-deltas 39-d features


@dataclass
class HuBERTParams:
    num_clusters: int = 100
    mask_prob: float = 0.08  # chance that a span starts at a frame, per 20 ms frame (the paper's rate)
    mask_span: int = 10  # span length in 20 ms frames
    final_dim: int = 256  # projection of the token states and the cluster embeddings
    logit_temp: float = 0.1
    kmeans_frames: int = 100_000  # MFCC frames sampled to fit k-means
    kmeans_iters: int = 20


def check_params(p: HuBERTParams) -> None:
    if not (p.num_clusters >= 2 and 0 < p.mask_prob < 1 and p.mask_span >= 1 and p.final_dim >= 1
            and p.logit_temp > 0 and p.kmeans_frames >= p.num_clusters and p.kmeans_iters >= 1):  # fmt: skip
        raise UserError("method hubert: num_clusters >= 2, mask_prob in (0, 1), mask_span >= 1, final_dim >= 1, "
                        "logit_temp > 0, kmeans_frames >= num_clusters and kmeans_iters >= 1")  # fmt: skip


# ---------------------------------------------------------------------------------------------------- features


def deltas(c: Tensor, lengths: Tensor, window: int = 2) -> Tensor:
    """Regression deltas over +-``window`` frames (torchaudio's ``compute_deltas`` with win_length 5), each clip's
    edges replicated: frames past ``lengths`` [B] are never read. c [B, F, C] -> [B, F, C]."""
    B, T, _ = c.shape
    t = torch.arange(T, device=c.device)[None]  # [1, F]
    last = (lengths.to(c.device) - 1).clamp_min(0)[:, None]  # [B, 1]
    out = torch.zeros_like(c)
    for k in range(1, window + 1):
        ahead = (t + k).clamp_max(last).clamp_max(T - 1)
        behind = (t - k).clamp_min(0)
        out = out + k * (c.gather(1, ahead[..., None].expand_as(c)) - c.gather(1, behind[..., None].expand_as(c)))
    return out / (2 * sum(k * k for k in range(1, window + 1)))


def mfcc_features(encoder: nn.Module, dct: Tensor, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """39-d MFCC frames: waveforms [B, T] (+ lengths, samples) -> ([B, F, 39] float32, frame lengths [B])."""
    with torch.autocast(wave.device.type, enabled=False):
        wave = wave.float() * padding_mask(lengths, wave.shape[1])
        c = encoder.input.logmel(wave) @ dct  # [B, F, 13]
        frames = encoder.spec.frames(lengths)
        d = deltas(c, frames)
        return torch.cat([c, d, deltas(d, frames)], -1), frames


# ---------------------------------------------------------------------------------------------------- k-means


def nearest(x: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid [K, C] of each row of x [..., C] (squared Euclidean) -> long [...]."""
    flat = x.reshape(-1, x.shape[-1]).float()
    d = flat.square().sum(1, keepdim=True) - 2 * flat @ centroids.T + centroids.square().sum(1)[None]
    return d.argmin(1).reshape(x.shape[:-1])


def kmeans(x: Tensor, k: int, generator: torch.Generator, iters: int = 20) -> Tensor:
    """Lloyd's k-means with k-means++ init (Arthur & Vassilvitskii 2007): x [N, C] -> centroids [k, C].
    Deterministic given the generator (a CPU one; its draws pick the seeds). An empty cluster keeps its centroid."""
    x = x.float()
    N = x.shape[0]
    u = torch.rand(k, generator=generator).double()  # one draw per seed centroid
    first = min(int(u[0] * N), N - 1)
    centroids = x[first : first + 1]
    dist = (x - centroids).square().sum(1)  # [N] squared distance to the nearest chosen centroid
    for i in range(1, k):
        cum = dist.double().cumsum(0)
        total = float(cum[-1])
        pick = int(torch.searchsorted(cum, torch.tensor([u[i] * total], dtype=torch.float64, device=x.device)))
        pick = min(pick, N - 1) if total > 0 else min(int(u[i] * N), N - 1)
        centroids = torch.cat([centroids, x[pick : pick + 1]])
        dist = torch.minimum(dist, (x - x[pick]).square().sum(1))
    for _ in range(iters):
        assign = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids


def sample_frames(dataset, encoder: nn.Module, dct: Tensor, max_frames: int, generator: torch.Generator,
                  batch_size: int = 32) -> tuple[Tensor, int]:  # fmt: skip
    """Up to ``max_frames`` MFCC frames [N, 39] of a seeded random sample of the training clips (clips in a random
    order until enough frames, then a random subset of those frames), and the number of clips read."""
    split = dataset.train
    n = len(split)
    order = torch.randperm(n, generator=generator).numpy()
    device = dct.device
    got, total, used = [], 0, 0
    for i in range(0, n, batch_size):
        idx = np.sort(order[i : i + batch_size])
        if getattr(split.x, "ragged", False):
            wave, lengths = split.x.batch(idx)
        else:
            wave = torch.as_tensor(np.asarray(split.x[idx]), dtype=torch.float32)
            lengths = (torch.as_tensor(np.asarray(split.lengths)[idx]) if split.lengths is not None
                       else torch.full((len(idx),), wave.shape[1]))  # fmt: skip
        wave, lengths = wave.to(device), lengths.to(device).long()
        feats, frames = mfcc_features(encoder, dct, wave, lengths)
        valid = padding_mask(frames, feats.shape[1])
        got.append(feats[valid].cpu())
        total, used = total + got[-1].shape[0], used + len(idx)
        if total >= max_frames:
            break
    x = torch.cat(got)
    if x.shape[0] > max_frames:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_frames]]
    return x.to(device), used


# ---------------------------------------------------------------------------------------------------- the method


@METHODS.register("hubert")
class HuBERT(nn.Module):
    modality = "audio"
    Params = HuBERTParams
    defaults = dict(TERA.defaults)  # tera's optimizer, batch and lr (unmeasured for hubert)
    group_by_length = True  # reads whole clips: batches of similar lengths pad less (selfsup.data.batching)
    default_encoder = "speech_transformer"

    def __init__(self, encoder: nn.Module, params: HuBERTParams, spec):
        super().__init__()
        check_speech_encoder("hubert", encoder, needs=("input",))
        check_params(params)
        self.encoder, self.params = encoder, params
        per_20ms = 0.02 * spec.sample_rate / spec.hop  # our frames per paper frame (2 at 10 ms)
        self.span = max(1, round(params.mask_span * per_20ms))  # frames per span
        start = min(params.mask_prob / per_20ms, 0.999)  # start probability per frame
        self.mask_share = 1 - (1 - start) ** self.span  # what select_spans takes: the share of frames hidden
        self.mask_emb = nn.Parameter(torch.zeros(spec.n_mels))  # replaces a masked normalized log-mel frame
        self.proj = nn.Linear(encoder.dim, params.final_dim)
        self.label_embs = nn.Parameter(torch.randn(params.num_clusters, params.final_dim) * 0.1)
        self.register_buffer("dct", dct_matrix(spec.n_mels, N_CEPS), persistent=False)  # [M, 13]
        self.register_buffer("centroids", torch.zeros(params.num_clusters, 3 * N_CEPS))  # [K, 39], fit in prepare
        self._checked = False

    # ------------------------------------------------------------------ targets
    @torch.no_grad()
    def prepare(self, dataset, generator: torch.Generator, log=print) -> None:
        """Fit the k-means targets on the training audio (once, before the first step of a new run)."""
        p, t0 = self.params, time.perf_counter()
        x, clips = sample_frames(dataset, self.encoder, self.dct, p.kmeans_frames, generator)
        if x.shape[0] < p.num_clusters:
            raise UserError(f"method hubert: the training audio has {x.shape[0]} frames, fewer than "
                            f"num_clusters={p.num_clusters}; use more data or --set method.num_clusters=N")  # fmt: skip
        self.centroids.copy_(kmeans(x, p.num_clusters, generator, p.kmeans_iters))
        self._checked = True
        counts = torch.bincount(nearest(x, self.centroids), minlength=p.num_clusters)
        log(f"hubert: k-means of {p.num_clusters} clusters on {x.shape[0]} MFCC frames of {clips} clips in "
            f"{time.perf_counter() - t0:.1f} s: {int((counts > 0).sum())} clusters used, the largest holds "
            f"{float(counts.max()) / x.shape[0]:.1%} of the frames")  # fmt: skip

    def targets(self, wave: Tensor, lengths: Tensor, n_tokens: int) -> Tensor:
        """Each token's unit: the nearest centroid of its first frame's MFCCs. [B, T] -> long [B, n_tokens]."""
        feats, _ = mfcc_features(self.encoder, self.dct, wave, lengths)  # [B, F, 39]
        first = feats[:, :: self.encoder.subsample][:, :n_tokens]  # frame 4t of token t
        return nearest(first, self.centroids)

    # ------------------------------------------------------------------ views
    def token_mask(self, mask: Tensor, frame_lengths: Tensor, n_tokens: int) -> Tensor:
        """Tokens whose valid frames are all masked: frames bool [B, F] -> bool [B, n_tokens]."""
        B, T = mask.shape
        s = self.encoder.subsample
        hidden = mask | ~padding_mask(frame_lengths, T)  # padding counts as hidden for the all() below
        hidden = F.pad(hidden, (0, n_tokens * s - T), value=True).view(B, n_tokens, s).all(-1)
        return hidden & padding_mask((frame_lengths + s - 1) // s, n_tokens)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Waveforms [B, T] -> (normalized log-mel [B, F, M], frame lengths [B], masked frames bool [B, F],
        targets long [B, F'] (F' = ceil(F / 4) tokens))."""
        if not self._checked:  # one host sync, at the first step
            if not bool(self.centroids.any()):  # zeros until fitted (MFCCs of real audio never all are)
                raise RuntimeError("method hubert: the k-means targets are not fitted; call method.prepare(dataset, "
                                   "generator) before training (the Trainer does)")  # fmt: skip
            self._checked = True
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device).long()
        with torch.no_grad():
            frames, frame_lengths = self.encoder.features(x, lengths)
            mask = select_spans(frame_lengths, frames.shape[1], self.mask_share, self.span, generator)
            n_tokens = -(-frames.shape[1] // self.encoder.subsample)
            targets = self.targets(x, lengths, n_tokens)
        return frames, frame_lengths, mask, targets

    # ------------------------------------------------------------------ the model
    def logits(self, frames: Tensor, frame_lengths: Tensor, mask: Tensor):
        """Masked frames -> (logits over the units [B, F', K], Features)."""
        x = torch.where(mask[..., None], self.mask_emb.to(frames.dtype), frames)
        feats = self.encoder.encode_frames(x, frame_lengths)
        z = F.normalize(self.proj(feats.tokens).float(), dim=-1)  # [B, F', d]
        e = F.normalize(self.label_embs.float(), dim=-1)  # [K, d]
        return z @ e.T / self.params.logit_temp, feats

    def forward(self, batch) -> Output:
        frames, frame_lengths, mask, targets = batch
        logits, feats = self.logits(frames, frame_lengths, mask)
        where = self.token_mask(mask, frame_lengths, logits.shape[1]).float()  # [B, F']
        count = where.sum().clamp_min(1)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        loss = (ce * where.flatten()).sum() / count
        K = self.params.num_clusters
        with torch.no_grad():
            acc = ((logits.argmax(-1) == targets).float() * where).sum() / count
            valid = padding_mask(feats.lengths, targets.shape[1]).float()
            counts = torch.zeros(K, device=targets.device).scatter_add_(0, targets.flatten(), valid.flatten())
            masked = torch.zeros(K, device=targets.device).scatter_add_(0, targets.flatten(), where.flatten())
        metrics = {
            "hubert_acc": acc,
            "hubert_majority": masked.max() / count,  # the accuracy of always answering the commonest unit
            "hubert_clusters_used": (counts > 0).float().mean(),  # share of the units among the batch's tokens
        }
        return Output(loss, metrics, token_sample(feats.tokens, feats.lengths))
