"""Waveform augmentations, speaker-contrastive and HuBERT: against formulas written here, through the Trainer (k-means
fitted once, restored on resume), and short learning runs on synthetic speakers."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import selfsup
from selfsup.data import Dataset, Split
from selfsup.data.spec import AudioSpec, random_samples
from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.losses import nt_xent
from selfsup.methods.hubert import HuBERT, HuBERTParams, kmeans
from selfsup.methods.speaker_contrastive import SpeakerContrastive, SpeakerContrastiveParams
from selfsup.views.audio import add_noise, apply_gain, random_noise, random_segment, random_speed, speed_perturb
from selfsup.views.masking import select_spans

from .conftest import die_after_save

SPEC = AudioSpec()
SMALL = {"dim": 32, "depth": 1, "heads": 2, "conv_channels": 8}
LEARN = {"dim": 48, "depth": 1, "heads": 2, "conv_channels": 8}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def ramps(lengths, T):
    """Row b holds b * 100000 + 1, + 2, ... up to its length, then zeros: every sample names its clip and place."""
    x = torch.arange(1, T + 1, dtype=torch.float32)[None] + 100000 * torch.arange(len(lengths))[:, None]
    return x * (torch.arange(T)[None] < lengths[:, None])


def speakers(n_spk, per, seed, samples=12000):
    """Harmonic 'speakers': speaker s has base pitch 90 x 1.15^s Hz and a spectral tilt and formant of its own; each
    clip varies the pitch (+-3%, a vibrato), adds a 'vowel' formant of its own and a syllable-rate loudness."""
    g = gen(100)  # the speakers are the same in every call
    f0 = 90 * 1.15 ** torch.arange(n_spk).float()
    formant, tilt = 400 + 2000 * torch.rand(n_spk, generator=g), 0.5 + torch.rand(n_spk, generator=g)
    g = gen(seed)
    spk = torch.arange(n_spk).repeat_interleave(per)
    n, t = len(spk), torch.arange(samples) / 16000
    base = f0[spk][:, None] * (1 + 0.03 * torch.randn(n, 1, generator=g))  # [n, 1]
    rate, offset = 0.5 + 2 * torch.rand(n, 1, generator=g), 6 * torch.rand(n, 1, generator=g)
    pitch = base * (1 + 0.04 * torch.sin(2 * math.pi * rate * t + offset))  # [n, T]
    z = torch.polar(torch.ones(n, samples), 2 * math.pi * torch.cumsum(pitch, 1) / 16000)  # e^(i phase)
    vowel = 300 + 2500 * torch.rand(n, 1, generator=g)
    k = torch.arange(1, 25).float()[None]  # harmonics [1, K]
    fk = k * base
    amp = k ** -tilt[spk][:, None] * (1 + 3 * torch.exp(-(((fk - formant[spk][:, None]) / 300) ** 2))
                                      + 2 * torch.exp(-(((fk - vowel) / 400) ** 2))) * (fk < 7000)  # fmt: skip
    x, zk = torch.zeros(n, samples), z
    for i in range(amp.shape[1]):
        x, zk = x + amp[:, i : i + 1] * zk.imag, zk * z  # harmonic i + 1: Im(e^(i (i + 1) phase))
    rate, offset = 2 + 4 * torch.rand(n, 1, generator=g), 6 * torch.rand(n, 1, generator=g)
    x = x * (0.55 + 0.45 * torch.sin(2 * math.pi * rate * t + offset))
    x = 0.1 * x / x.abs().amax(1, keepdim=True) + 0.002 * torch.randn(n, samples, generator=g)
    lengths = torch.randint(samples * 2 // 3, samples + 1, (n,), generator=g)
    return x * (torch.arange(samples)[None] < lengths[:, None]), lengths, spk


def knn_accuracy(encoder, train, test, k=5):
    """Cosine k-NN (majority of k) on pooled features of held-out clips."""

    def feats(x, n):
        encoder.eval()
        with torch.no_grad():
            h = torch.cat([encoder(x[i : i + 64], lengths=n[i : i + 64]).pooled for i in range(0, len(x), 64)])
        encoder.train()
        return F.normalize(h, dim=1)

    sim = feats(*test[:2]) @ feats(*train[:2]).T
    votes = F.one_hot(train[2][sim.topk(k, 1).indices], int(train[2].max()) + 1).sum(1)
    return (votes.argmax(1) == test[2]).float().mean().item()


# ---------------------------------------------------------------------------------------------------- views


def test_segments_are_windows_of_their_clip_and_padding_stays_zero():
    lengths = torch.tensor([5000, 3000, 2999, 1200, 1, 4000])
    x = ramps(lengths, 5000)
    segs = [random_segment(x, lengths, 3000, gen(s)) for s in (1, 2)]
    starts = []
    for seg, n in segs:
        assert seg.shape == (6, 3000) and n.tolist() == [3000, 3000, 2999, 1200, 1, 3000]
        assert (seg[torch.arange(3000)[None] >= n[:, None]] == 0).all()
        for b in range(6):
            v = seg[b, : n[b]]
            first = int(v[0]) - 100000 * b - 1  # the window's start in clip b
            assert torch.equal(v, x[b, first : first + int(n[b])]) and first + n[b] <= lengths[b]
            starts.append(first)
    assert starts[0] != starts[6] or starts[5] != starts[11]  # two draws, two windows
    seg, n = random_segment(x, lengths, 8000, gen(3))  # longer than every clip: the clips, whole
    assert torch.equal(seg, x) and torch.equal(n, lengths)


def test_noise_and_gain_keep_padding_zero_and_hit_the_snr():
    lengths = torch.tensor([32000, 20000, 16000])
    x = torch.sin(torch.arange(32000) * 0.05)[None] * torch.tensor([[0.5], [0.1], [1.0]])
    x = x * (torch.arange(32000)[None] < lengths[:, None])
    snr = torch.tensor([0.0, 10.0, 20.0])
    y = add_noise(x, lengths, snr, gen(4))
    valid = torch.arange(32000)[None] < lengths[:, None]
    assert (y[~valid] == 0).all()
    for b in range(3):
        n = int(lengths[b])
        measured = 10 * math.log10(x[b, :n].square().mean() / (y[b, :n] - x[b, :n]).square().mean())
        assert abs(measured - snr[b]) < 0.2, (b, measured)
    y = random_noise(x, lengths, gen(5), (5.0, 20.0), p=0.0)
    assert torch.equal(y, x)
    g = apply_gain(x, torch.tensor([-6.0, 0.0, 20.0]))
    assert torch.allclose(g[2], 10 * x[2]) and torch.equal(g[1], x[1]) and (g[~valid] == 0).all()


def test_speed_perturbation_changes_length_and_pitch_by_the_factor():
    t = torch.arange(16000) / 16000
    lengths = torch.tensor([16000, 16000, 16000, 9001])
    x = torch.sin(2 * math.pi * 440 * t).repeat(4, 1) * (torch.arange(16000)[None] < lengths[:, None])
    factors = torch.tensor([0.9, 1.0, 1.1, 1.1], dtype=torch.float64)
    y, n = speed_perturb(x, lengths, factors)
    assert n.tolist() == [math.floor((m - 1) / s) + 1 for m, s in zip(lengths.tolist(), factors.tolist())]
    assert all(abs(m / s - k) <= 1 for m, s, k in zip(lengths.tolist(), factors.tolist(), n.tolist()))
    assert y.shape == (4, int(n.max())) and (y[torch.arange(y.shape[1])[None] >= n[:, None]] == 0).all()
    assert torch.equal(y[1, :16000], x[1])  # factor 1: the clip itself
    want = np.interp(np.arange(int(n[3])) * 1.1, np.arange(9001), x[3, :9001].numpy())  # linear interpolation
    assert np.abs(y[3, : n[3]].numpy() - want).max() < 1e-5
    for b, s in enumerate(factors.tolist()[:3]):
        m = int(n[b])
        peak = np.abs(np.fft.rfft(y[b, :m].numpy())).argmax() * 16000 / m  # Hz
        assert abs(peak - 440 * s) < 2, (s, peak)  # faster is higher
    y2, n2 = random_speed(x, lengths, gen(6), (0.9, 1.0, 1.1))
    assert set(n2.tolist()) <= {math.floor((m - 1) / s) + 1 for m in set(lengths.tolist()) for s in (0.9, 1.0, 1.1)}
    assert (y2[torch.arange(y2.shape[1])[None] >= n2[:, None]] == 0).all()


# ------------------------------------------------------------------------------------------------ speaker-contrastive


def train_steps(m, x, lengths, steps: int) -> None:
    """``steps`` steps of AdamW (lr 3e-3) on random batches of 32 clips, as a learning test trains a method."""
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01)
    g = gen(4)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        out = m(m.views(x[idx], g, lengths[idx]))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()


def contrastive(seed=0, **params):
    torch.manual_seed(seed)
    encoder = build_encoder("speech_transformer", SPEC, SMALL)
    return SpeakerContrastive(encoder, SpeakerContrastiveParams(**params), SPEC)


def test_the_two_views_are_segments_of_the_same_utterance():
    lengths = torch.tensor([48000, 40000, 20000, 33000])
    x = ramps(lengths, 48000)
    m = contrastive(speed=0, noise_p=0, gain_db=0)
    wave, n = m.views(x, gen(7), lengths)
    assert wave.shape == (8, 32000) and n.tolist() == [32000, 32000, 20000, 32000] * 2
    for row in range(8):
        v = wave[row, : n[row]]
        assert ((v - 1) // 100000 == row % 4).all() and (torch.diff(v) == 1).all()  # a window of clip row % 4
    assert (wave[torch.arange(32000)[None] >= n[:, None]] == 0).all()
    assert not torch.equal(wave[0], wave[4])  # two windows of the 3 s clip
    wave, n = contrastive().views(x, gen(8), lengths)  # speed (shared by the pair), noise and gain
    assert torch.equal(n[:4], n[4:]) and n[2] in (math.floor(19999 / s) + 1 for s in (0.9, 1.0, 1.1))
    assert (wave[torch.arange(wave.shape[1])[None] >= n[:, None]] == 0).all()
    assert torch.equal(contrastive().views(x, gen(8), lengths)[0], wave)  # the generator decides everything
    short = torch.full((16,), 10000)
    _, n = contrastive(speed_per_view=True).views(ramps(short, 10000), gen(9), short)
    assert not torch.equal(n[:16], n[16:])  # a speed per segment: the pair's lengths differ somewhere


def test_the_loss_is_the_library_nt_xent_of_the_projected_pooled_features():
    x, lengths = random_samples(SPEC, 6, gen(9))
    m = contrastive().eval()
    wave, n = m.views(x, gen(10), lengths)
    with torch.no_grad():
        out = m((wave, n))
        z = m.projector(m.encoder(wave, lengths=n).pooled)
    assert torch.allclose(out.loss, nt_xent(z[:6], z[6:], 0.07), atol=1e-6)
    zn = F.normalize(z, dim=1)
    hits = 0
    for i in range(12):  # top-1: the most similar other view is the positive
        sim = [float(zn[i] @ zn[j]) if j != i else -9 for j in range(12)]
        hits += int(np.argmax(sim) == (i + 6) % 12)
    assert out.metrics["contrastive_acc"].item() == pytest.approx(hits / 12)
    assert torch.equal(out.embedding, z[:6])  # the monitor reads the projection (docs/speech.md)
    with pytest.raises(UserError, match="speaker-contrastive"):
        contrastive(temperature=0)


def test_speaker_contrastive_learns_features_that_separate_speakers():
    """60 steps on 8 harmonic 'speakers': k-NN speaker accuracy of held-out clips' pooled features beats the same
    encoder at random init by a wide margin. Per-bin normalization: it removes each clip's average spectrum, which
    tells these speakers apart at random init under the default per-clip normalization, so what separates them
    here is learned."""
    x, lengths, _ = speakers(8, 32, 1)
    train, test = speakers(8, 10, 2), speakers(8, 10, 3)
    torch.manual_seed(0)
    encoder = build_encoder("speech_transformer", SPEC, {**LEARN, "norm": "bin"})
    m = SpeakerContrastive(encoder, SpeakerContrastiveParams(segment_seconds=0.5), SPEC)
    before = knn_accuracy(m.encoder, train, test)
    train_steps(m, x, lengths, 60)
    after = knn_accuracy(m.encoder, train, test)
    assert after > 0.6 and after > before + 0.25, (before, after)


# ---------------------------------------------------------------------------------------------------- hubert


def hubert(seed=0, **params):
    torch.manual_seed(seed)
    return HuBERT(build_encoder("speech_transformer", SPEC, SMALL), HuBERTParams(**params), SPEC)


def fitted(m, x, lengths, seed=11):
    m.prepare(Dataset("random", SPEC, Split(x.numpy(), lengths=lengths.numpy())), gen(seed), log=lambda s: None)
    return m


def test_masks_are_spans_of_20_frames_hiding_about_56_percent_never_padding():
    m = hubert()
    assert m.span == 20  # 10 x 20 ms at 10 ms frames
    start = 0.08 / 2  # 8% per 20 ms frame: 4% per 10 ms frame
    assert m.mask_share == pytest.approx(1 - (1 - start) ** 20)  # ~0.56: the paper's overlapping spans
    x, lengths = random_samples(SPEC, 8, gen(12))
    frames, frame_lengths, mask, _ = fitted(m, x, lengths).views(x, gen(13), lengths)
    assert torch.equal(mask, select_spans(frame_lengths, frames.shape[1], m.mask_share, 20, gen(13)))
    lengths = torch.randint(300, 1001, (400,), generator=gen(14))  # frame lengths, long rows: few cut spans
    mask = select_spans(lengths, 1000, m.mask_share, m.span, gen(15))
    valid = torch.arange(1000)[None] < lengths[:, None]
    assert not (mask & ~valid).any()
    share = (mask.sum() / valid.sum()).item()
    assert 0.5 < share < 0.57, share  # spans cannot start before a clip: its first frames are hidden less
    for i in range(30):
        runs = torch.diff(F.pad(mask[i].int(), (1, 1))).nonzero().flatten().view(-1, 2)  # [start, stop) of each run
        assert ((runs[:, 1] - runs[:, 0] >= 20) | (runs[:, 1] == lengths[i])).all()


def test_masked_frames_read_the_mask_embedding_and_the_loss_reads_masked_tokens_only():
    x, lengths = random_samples(SPEC, 6, gen(16))
    m = fitted(hubert(), x, lengths).eval()
    with torch.no_grad():
        m.mask_emb.normal_()
    frames, frame_lengths, mask, targets = m.views(x, gen(17), lengths)
    seen = {}
    encode = m.encoder.encode_frames
    m.encoder.encode_frames = lambda f, n: seen.setdefault("frames", f) is not None and encode(f, n)
    with torch.no_grad():
        out = m((frames, frame_lengths, mask, targets))
    del m.encoder.encode_frames
    assert torch.equal(seen["frames"][mask], m.mask_emb.expand(int(mask.sum()), 80))
    assert torch.equal(seen["frames"][~mask], frames[~mask])
    # a token is predicted when every valid frame it reads (4t .. 4t + 3) is masked
    n_tokens = targets.shape[1]
    where = torch.zeros(6, n_tokens, dtype=torch.bool)
    for b in range(6):
        for t in range(-(-int(frame_lengths[b]) // 4)):
            where[b, t] = bool(mask[b, 4 * t : min(4 * t + 4, int(frame_lengths[b]))].all())
    assert torch.equal(m.token_mask(mask, frame_lengths, n_tokens), where) and where.any() and (~where).any()
    with torch.no_grad():
        logits, _ = m.logits(frames, frame_lengths, mask)
    ce = F.cross_entropy(logits[where], targets[where])
    assert torch.allclose(out.loss, ce, atol=1e-5)
    assert out.metrics["hubert_acc"].item() == pytest.approx((logits[where].argmax(1) == targets[where]).float().mean())
    moved = targets.clone()
    b, t = (~where & (torch.arange(n_tokens)[None] < 10)).nonzero()[0].tolist()  # an unmasked, valid token
    moved[b, t] = (moved[b, t] + 1) % 100
    with torch.no_grad():
        assert torch.equal(m((frames, frame_lengths, mask, moved)).loss, out.loss)
        b, t = where.nonzero()[0].tolist()
        moved[b, t] = (moved[b, t] + 1) % 100
        assert not torch.allclose(m((frames, frame_lengths, mask, moved)).loss, out.loss)


def reference_mfcc(logmel: np.ndarray) -> np.ndarray:
    """13 orthonormal DCT-II coefficients of log-mel [F, 80], deltas and delta-deltas by the 5-frame regression
    (d_t = (c_{t+1} - c_{t-1} + 2 (c_{t+2} - c_{t-2})) / 10, edges repeated): [F, 39]."""
    M = logmel.shape[1]
    k, n = np.arange(13)[None], np.arange(M)[:, None]
    dct = np.cos(np.pi / M * (n + 0.5) * k) * np.sqrt(2 / M)
    dct[:, 0] /= np.sqrt(2)
    c = logmel @ dct

    def delta(v):
        p = np.pad(v, ((2, 2), (0, 0)), mode="edge")
        return (p[3:-1] - p[1:-3] + 2 * (p[4:] - p[:-4])) / 10

    d = delta(c)
    return np.concatenate([c, d, delta(d)], 1)


def test_targets_are_the_nearest_centroid_of_each_tokens_first_frame():
    x, lengths = random_samples(SPEC, 4, gen(18))
    m = fitted(hubert(num_clusters=20), x, lengths)
    _, frame_lengths, _, targets = m.views(x, gen(19), lengths)
    C = m.centroids.double().numpy()
    for b in range(4):
        n = int(lengths[b])
        mel = m.encoder.input.logmel(x[b : b + 1, :n])[0].double().numpy()  # the clip alone: no padding to read
        feats = reference_mfcc(mel)[::4]  # frame 4t of each token t
        want = ((feats[:, None] - C[None]) ** 2).sum(-1).argmin(1)
        k = len(want)
        assert k == -(-int(frame_lengths[b]) // 4)
        assert (targets[b, :k].numpy() == want).mean() > 0.98  # float32 vs float64 ties aside


def test_kmeans_is_deterministic_from_the_seed_and_the_centroids_survive_a_state_dict_round_trip():
    blobs = torch.randn(4, 3, generator=gen(20)) * 10
    pts = (blobs[:, None] + 0.1 * torch.randn(4, 50, 3, generator=gen(21))).reshape(-1, 3)
    c = kmeans(pts, 4, gen(22))
    assert torch.cdist(c, blobs).min(0).values.max() < 0.1  # every blob found
    x, lengths = random_samples(SPEC, 8, gen(23))
    a, b, other = fitted(hubert(), x, lengths, 5), fitted(hubert(), x, lengths, 5), fitted(hubert(), x, lengths, 6)
    assert torch.equal(a.centroids, b.centroids) and not torch.equal(a.centroids, other.centroids)
    assert a.centroids.shape == (100, 39) and a.centroids.any()
    fresh = hubert(seed=1)
    with pytest.raises(RuntimeError, match="prepare"):
        fresh.views(x, gen(24), lengths)
    fresh.load_state_dict(a.state_dict())
    assert torch.equal(fresh.centroids, a.centroids)
    assert all(torch.equal(u, v) for u, v in zip(fresh.views(x, gen(24), lengths), a.views(x, gen(24), lengths)))
    with pytest.raises(UserError, match="hubert"):
        hubert(mask_prob=0)


def speaker_folder(root):
    rng = np.random.default_rng(0)
    for s, f0 in enumerate((110, 160, 230)):
        (root / f"spk{s}").mkdir(parents=True)
        for i in range(6):
            t = np.arange(int(rng.uniform(0.3, 0.6) * 16000)) / 16000
            x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(len(t))
            sf.write(root / f"spk{s}" / f"u{i}.wav", (0.2 * x / np.abs(x).max()).astype(np.float32), 16000)
    return root


def test_the_trainer_prepares_once_and_a_resumed_run_restores_the_centroids(tmp_path, monkeypatch):
    calls = []
    real_prepare = HuBERT.prepare
    monkeypatch.setattr(HuBERT, "prepare", lambda self, *a, **k: calls.append(1) or real_prepare(self, *a, **k))
    restore_save = die_after_save(monkeypatch, 2)  # killed after its step-2 checkpoint
    out = tmp_path / "run"
    lines = []
    args = dict(data=str(speaker_folder(tmp_path / "spk")), method="hubert", budget="4steps", checkpoint_every="2steps",
                batch_size=6, device="cpu", seed=3, out=out, method__num_clusters=20, log=lines.append,
                **{f"encoder__{k}": v for k, v in SMALL.items()})  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        selfsup.pretrain(**args)
    assert len(calls) == 1 and any("k-means of 20 clusters" in line for line in lines)
    restore_save()
    selfsup.pretrain(resume=out, log=lambda s: None)
    assert len(calls) == 1, "a resumed run restores the centroids from its checkpoint"
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts][-2:] == ["step-000002", "step-000004"]
    two, four = (load_file(str(c / "model.safetensors"))["centroids"] for c in ckpts[-2:])
    assert torch.equal(two, four) and two.shape == (20, 39) and two.any()


def test_hubert_learns_to_predict_masked_units():
    """120 steps on harmonic 'speakers' (50 units, for a short run): on held-out clips the accuracy at masked tokens
    beats always answering the most frequent unit, and the pooled features separate speakers better than at
    random init (per-bin normalization, as in the speaker-contrastive test above)."""
    x, lengths, _ = speakers(8, 32, 1)
    train, test = speakers(8, 10, 2), speakers(8, 10, 3)
    torch.manual_seed(0)
    encoder = build_encoder("speech_transformer", SPEC, {**LEARN, "norm": "bin"})
    m = HuBERT(encoder, HuBERTParams(num_clusters=50), SPEC)
    fitted(m, x, lengths, 5)
    before = knn_accuracy(m.encoder, train, test)
    train_steps(m, x, lengths, 120)
    m.eval()
    with torch.no_grad():
        views = m.views(test[0], gen(9), test[1])
        acc = m(views).metrics["hubert_acc"].item()
    masked = views[3][m.token_mask(views[2], views[1], views[3].shape[1])]
    majority = (torch.bincount(masked).max() / len(masked)).item()
    assert acc > 1.5 * majority, (acc, majority)
    after = knn_accuracy(m.encoder, train, test)
    assert after > before + 0.2, (before, after)
