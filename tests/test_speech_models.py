"""The speech encoder (log-mel front end, subsampling, padding) and tera, against formulas written here."""

import math

import numpy as np
import pytest
import torch

from selfsup.config import RunConfig, resolve
from selfsup.data import Dataset, Split
from selfsup.data.spec import AudioSpec, random_samples
from selfsup.encoders import build_encoder, resolve_encoder_params
from selfsup.encoders.base import token_sample
from selfsup.encoders.speech import LogMel
from selfsup.errors import UserError
from selfsup.methods import build_method
from selfsup.methods.tera import TERA, TERAParams, masked_l1
from selfsup.train.monitor import collapse_stats
from selfsup.views.masking import select_spans

SPEC = AudioSpec()
SMALL = {"dim": 32, "depth": 1, "heads": 2, "conv_channels": 8}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def reference_logmel(x: np.ndarray, sr=16000, win=400, hop=160, n_mels=80) -> np.ndarray:
    """float64: zero-padded centred frames, periodic Hann window, |rfft|^2, HTK-mel triangles, log(. + 1e-6)."""
    padded = np.pad(x, (win // 2, win // 2))
    n_frames = 1 + len(x) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([padded[f * hop : f * hop + win] * window for f in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [F, win/2 + 1]
    freqs = np.arange(win // 2 + 1) * sr / win
    corners = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + sr / 2 / 700), n_mels + 2) / 2595) - 1)
    fb = np.stack([np.interp(freqs, corners[m : m + 3], [0, 1, 0], left=0, right=0) for m in range(n_mels)], 1)
    return np.log(power @ fb + 1e-6)  # [F, n_mels]


def test_log_mel_matches_a_reference_computation_on_a_sine():
    enc = build_encoder("speech_transformer", SPEC, SMALL)
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(12345) / 16000)
    mine = enc.input.logmel(torch.tensor(x, dtype=torch.float32)[None])[0]
    want = reference_logmel(x)
    assert mine.shape == want.shape == (1 + 12345 // 160, 80)
    assert np.abs(mine.numpy() - want).max() < 2e-3
    assert (mine.argmax(1).numpy() == want.argmax(1)).all()


def test_frame_and_token_lengths_follow_the_formulas():
    enc = build_encoder("speech_transformer", SPEC, SMALL).eval()
    lengths = torch.tensor([32000, 31999, 16000, 4000, 641, 480, 161, 159])
    x = 0.1 * torch.randn(len(lengths), 32000, generator=gen(0))
    frames, frame_lengths = enc.features(x, lengths)
    assert frames.shape == (8, 1 + 32000 // 160, 80)
    assert frame_lengths.tolist() == [1 + n // 160 for n in lengths.tolist()] == SPEC.frames(lengths).tolist()
    with torch.no_grad():
        out = enc(x, lengths=lengths)
    assert enc.subsample == 4
    assert out.lengths.tolist() == [-(-f // 4) for f in frame_lengths.tolist()]  # ceil(F / 4)
    assert out.tokens.shape[1] == -(-frames.shape[1] // 4)
    assert enc(x[:2]).lengths.tolist() == [-(-201 // 4)] * 2  # no lengths: every sample full


@pytest.mark.parametrize("norm", ["bin", "clip"])
def test_normalization_reads_valid_frames_only(norm):
    enc = build_encoder("speech_transformer", SPEC, {**SMALL, "norm": norm})
    x, lengths = random_samples(SPEC, 5, gen(1))
    x = x * torch.linspace(0.2, 3, 32000)  # loudness varies, so the statistics depend on which frames count
    garbage = x.clone()
    garbage[torch.arange(32000)[None] >= lengths[:, None]] = 0.7  # what follows a clip never counts
    frames, n = enc.features(x, lengths)
    assert torch.equal(frames, enc.features(garbage, lengths)[0])
    for i in range(5):
        valid = frames[i, : n[i]]
        over = 0 if norm == "bin" else (0, 1)  # each bin's statistics, or the clip's
        assert torch.allclose(valid.mean(over), torch.zeros(()), atol=1e-4)
        assert torch.allclose(valid.var(over, unbiased=False), torch.ones(()), atol=1e-2)
        assert (frames[i, n[i] :] == 0).all()
        alone, n_alone = enc.features(x[i : i + 1, : lengths[i]], lengths[i : i + 1])
        assert n_alone.item() == n[i] and torch.allclose(alone[0], valid, atol=1e-5)


def test_clip_normalization_keeps_the_spectral_shape_and_drops_the_gain():
    enc = build_encoder("speech_transformer", SPEC, {**SMALL, "norm": "clip"})
    x, lengths = random_samples(SPEC, 4, gen(3))
    lowpassed = x.clone()
    lowpassed[:, 1:] += x[:, :-1]  # a different spectral tilt: more energy in the low bins
    frames, n = enc.features(x, lengths)
    louder = enc.features(4.0 * x, lengths)[0]  # +12 dB: a constant in log power, removed
    tilted = enc.features(lowpassed, lengths)[0]
    per_bin = LogMel(SPEC, "bin")(x, lengths)[0]
    for i in range(4):
        valid = frames[i, : n[i]]
        assert abs(valid.mean().item()) < 1e-4 and abs(valid.var(unbiased=False).item() - 1) < 1e-2
        assert torch.allclose(louder[i, : n[i]], valid, atol=1e-3)
        assert (frames[i, n[i] :] == 0).all()
        # the clip's average spectrum survives (it is the speaker cue per-bin normalization removes)
        assert valid.mean(0).std() > 0.1 and per_bin[i, : n[i]].mean(0).abs().max() < 1e-4
        low_minus_high = tilted[i, : n[i], :10].mean() - tilted[i, : n[i], -10:].mean()
        assert low_minus_high > valid[:, :10].mean() - valid[:, -10:].mean()
    with pytest.raises(UserError, match="encoder.norm"):
        resolve_encoder_params("speech_transformer", SPEC, {"norm": "frame"})


@pytest.mark.parametrize("size", [SMALL, {"size": "tiny"}, {**SMALL, "norm": "bin"}])
def test_a_clip_alone_and_in_a_padded_batch_has_the_same_features(size):
    torch.manual_seed(0)
    enc = build_encoder("speech_transformer", SPEC, size).eval()
    lengths = torch.tensor([32000, 31999, 16001, 6400, 5000, 1000, 170])  # every remainder of frames and tokens
    x = 0.1 * torch.randn(len(lengths), 32000, generator=gen(2))
    x[torch.arange(32000)[None] >= lengths[:, None]] = 0.5  # garbage after each clip
    with torch.no_grad():
        batch = enc(x, lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = enc(x[i : i + 1, :n], lengths=lengths[i : i + 1])
            k = int(batch.lengths[i])
            assert alone.tokens.shape[1] == k
            assert torch.allclose(alone.pooled, batch.pooled[i : i + 1], atol=1e-5), n
            assert torch.allclose(alone.tokens[0], batch.tokens[i, :k], atol=1e-5), n
            assert torch.allclose(enc(x[i : i + 1, :n]).pooled, alone.pooled, atol=1e-5), n  # lengths=None


def test_extraction_batches_by_length_and_returns_each_clip_in_its_own_order():
    """Clips are batched shortest first (less padding); features come back in the clips' order, as batch by batch."""
    from selfsup.data.audio import Waveforms
    from selfsup.evaluate.features import extract_features, length_order

    torch.manual_seed(0)
    enc = build_encoder("speech_transformer", SPEC, SMALL).eval()
    rng = np.random.default_rng(0)
    clips = [(3000 * rng.standard_normal(int(n))).astype(np.int16) for n in rng.integers(900, 12000, 9)]
    x = Waveforms.from_clips(clips)
    assert length_order(x.lengths, 9, 4).tolist() == np.argsort(x.lengths, kind="stable").tolist()
    assert length_order(x.lengths, 9, 9) is None and length_order(np.full(9, 5), 9, 4) is None
    alone = torch.cat([extract_features(enc, x[i : i + 1], 1, "cpu") for i in range(9)])
    assert torch.allclose(extract_features(enc, x, 4, "cpu"), alone, atol=1e-5)
    tokens = extract_features(enc, x, 4, "cpu", tokens=True)
    for i in range(9):
        one = extract_features(enc, x[i : i + 1], 1, "cpu", tokens=True)
        assert torch.equal(tokens.lengths[i : i + 1], one.lengths)
        assert torch.allclose(tokens.take([i]).flat, one.flat, atol=1e-5)


def test_encoder_sizes_and_errors():
    params, note = resolve_encoder_params("speech_transformer", SPEC, {}, "cpu")
    assert (params["dim"], params["depth"], params["heads"]) == (144, 4, 4) and "tiny" in note
    params, note = resolve_encoder_params("speech_transformer", SPEC, {}, "cuda")
    assert (params["dim"], params["depth"], params["heads"]) == (768, 12, 12) and note is None
    with pytest.raises(UserError, match="encoder.heads"):
        resolve_encoder_params("speech_transformer", SPEC, {"dim": 96, "heads": 5})
    with pytest.raises(UserError, match="even"):
        resolve_encoder_params("speech_transformer", SPEC, {"dim": 33, "heads": 1})
    with pytest.raises(ValueError, match="masking"):
        build_encoder("speech_transformer", SPEC, SMALL)(torch.zeros(1, 1600), mask=torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------------- tera


def tera(seed=0, **params):
    torch.manual_seed(seed)
    return TERA(build_encoder("speech_transformer", SPEC, SMALL), TERAParams(**params), SPEC)


def random_frames(B, T, seed=0, low=40):
    g = gen(seed)
    lengths = torch.randint(low, T + 1, (B,), generator=g)
    lengths[0] = T
    frames = torch.randn(B, T, 80, generator=g) * (torch.arange(T)[None] < lengths[:, None])[..., None]
    return frames, lengths


def run_lengths(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a bool row."""
    out, start = [], None
    for t, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            out, start = out + [(start, t - start)], None
    return out


def test_time_masking_hides_15_percent_of_valid_frames_in_runs_of_7_never_padding():
    frames, lengths = random_frames(400, 200)
    runs = select_spans(lengths, 200, 0.15, 7, gen(3))
    valid = torch.arange(200)[None] < lengths[:, None]
    assert not (runs & ~valid).any()
    share = runs.sum() / valid.sum()
    assert 0.13 < share < 0.16, share  # runs cut at a clip's end hide a little less
    for i in range(40):
        for start, n in run_lengths(runs[i]):
            assert n >= 7 or start + n == lengths[i], (i, start, n)  # only the end cuts a run short
    m = tera(freq_mask=0, noise=0)
    _, altered = m.alter(frames, lengths, gen(3))
    assert torch.equal(altered, runs[..., None].expand_as(altered))  # the method's time mask is this one


def test_time_alteration_zeroes_replaces_or_keeps_an_utterances_runs_80_10_10():
    frames, lengths = random_frames(3000, 96, seed=4, low=60)
    out, altered = tera(freq_mask=0, noise=0).alter(frames, lengths, gen(5))
    runs = altered[..., 0]
    kinds = {"zero": 0, "random": 0, "kept": 0}
    for i in range(3000):
        if not runs[i].any():
            continue
        got, clean = out[i][runs[i]], frames[i][runs[i]]
        assert torch.equal(out[i][~runs[i]], frames[i][~runs[i]])  # frames outside the runs are untouched
        if (got == 0).all():
            kinds["zero"] += 1
        elif torch.equal(got, clean):
            kinds["kept"] += 1
        else:
            n = int(lengths[i])
            dist = (got[:, None] - frames[i, :n][None]).abs().sum(-1)  # [R, n]: each is a frame of the clip
            assert (dist.min(1).values == 0).all()
            kinds["random"] += 1
    total = sum(kinds.values())
    assert total > 2000
    assert abs(kinds["zero"] / total - 0.8) < 0.03 and abs(kinds["random"] / total - 0.1) < 0.025, kinds


def test_frequency_band_and_noise():
    frames, lengths = random_frames(2000, 30, seed=6, low=10)
    out, altered = tera(mask_prob=0, noise=0).alter(frames, lengths, gen(7))
    valid = torch.arange(30)[None] < lengths[:, None]
    band = altered.any(1)  # [B, M] the zeroed bins
    widths = band.sum(1)
    assert widths.max() <= 16 and widths.min() == 0 and abs(widths.float().mean() - 8) < 0.5  # uniform in 0..16
    for i in range(50):
        bins = band[i].nonzero().flatten()
        assert len(bins) == 0 or bins[-1] - bins[0] + 1 == len(bins)  # one contiguous band
    assert torch.equal(altered, band[:, None, :] & valid[..., None])  # the band at valid frames only
    assert (out.masked_select(band[:, None, :].expand_as(out)) == 0).all()
    assert torch.equal(out[~band[:, None, :].expand_as(out)], frames[~band[:, None, :].expand_as(out)])
    out, altered = tera(mask_prob=0, freq_mask=0.01, noise=0.3).alter(frames, lengths, gen(8))  # a 0-bin band
    assert not altered.any()
    noisy = ((out - frames).abs() > 0).flatten(1).any(1)
    assert abs(noisy.float().mean() - 0.3) < 0.04
    diff = (out - frames)[noisy]
    assert abs(diff[valid[noisy]].std() - 0.2) < 0.01 and (diff[~valid[noisy]] == 0).all()  # never on padding


def test_freq_mask_0_and_noise_0_is_mockingjay_time_masking_only():
    x, lengths = random_samples(SPEC, 8, gen(9))
    m = tera(freq_mask=0, noise=0)
    inputs, clean, altered, n = m.views(x, gen(10), lengths)
    frame_altered = altered.any(-1)
    assert torch.equal(altered, frame_altered[..., None].expand_as(altered))  # whole frames, no band
    assert frame_altered.any() and torch.equal(inputs[~frame_altered], clean[~frame_altered])


def test_the_loss_is_l1_at_the_altered_positions_only():
    x, lengths = random_samples(SPEC, 6, gen(11))
    m = tera().eval()
    inputs, clean, altered, n = m.views(x, gen(12), lengths)
    with torch.no_grad():
        out = m((inputs, clean, altered, n))
        pred, feats = m.reconstruct(inputs, n)
    assert pred.shape == clean.shape
    assert torch.allclose(out.loss, (pred - clean).abs()[altered].mean(), atol=1e-6)
    assert torch.allclose(out.metrics["tera_mean_l1"], clean.abs()[altered].mean(), atol=1e-6)
    moved = pred.clone()
    moved[~altered] += 5.0  # a prediction where nothing was altered does not count
    assert torch.allclose(masked_l1(moved, clean, altered), out.loss, atol=1e-6)
    moved[altered.nonzero()[0].unbind()] += 5.0
    assert masked_l1(moved, clean, altered) > out.loss
    # token t predicts frames 4t .. 4t + 3: change one token and only its four frames move
    tokens = feats.tokens.clone()
    tokens[0, 3] += 1.0
    with torch.no_grad():
        moved = m.head(tokens).reshape(6, -1, 80)[:, : clean.shape[1]]
    changed = (moved != pred).any(-1)
    assert changed[0].nonzero().flatten().tolist() == [12, 13, 14, 15] and not changed[1:].any()


def test_the_collapse_monitor_reads_a_sample_of_valid_frame_tokens():
    x, lengths = random_samples(SPEC, 6, gen(21))
    m = tera().eval()
    inputs, clean, altered, n = m.views(x, gen(22), lengths)
    with torch.no_grad():
        out = m((inputs, clean, altered, n))
        _, feats = m.reconstruct(inputs, n)
    valid = torch.cat([feats.tokens[b, : int(feats.lengths[b])] for b in range(6)])  # every valid token, in order
    assert 100 < len(valid) < 6 * feats.tokens.shape[1]
    assert torch.equal(out.embedding, valid)  # up to 256 tokens: all the valid ones, padding never read
    spaced = torch.linspace(0, len(valid) - 1, 100).long()
    assert torch.equal(token_sample(feats.tokens, feats.lengths, n=100), valid[spaced])
    first_and_last = token_sample(feats.tokens, None, n=2)  # no lengths: every position counts
    assert torch.equal(first_and_last, torch.stack([feats.tokens[0, 0], feats.tokens[-1, -1]]))
    # every frame of a clip alike (a frame-level collapse) while the clips differ: the monitor sees 6 points
    same = feats.tokens[:, :1].expand_as(feats.tokens)
    assert collapse_stats(token_sample(same, feats.lengths))["emb_erank"] <= 5.01
    assert collapse_stats(out.embedding)["emb_erank"] > 10


def test_views_are_deterministic_given_the_generator():
    x, lengths = random_samples(SPEC, 4, gen(13))
    m = tera()
    a, b, c = m.views(x, gen(14), lengths), m.views(x, gen(14), lengths), m.views(x, gen(15), lengths)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[2], c[2])


def test_tera_params_and_encoder_are_checked():
    with pytest.raises(UserError, match="nothing to reconstruct"):
        tera(mask_prob=0, freq_mask=0)
    with pytest.raises(UserError, match="zero_p"):
        tera(zero_p=0.95, random_p=0.1)
    with pytest.raises(UserError, match="speech encoder"):
        TERA(torch.nn.Linear(2, 2), TERAParams(), SPEC)


def test_tera_resolves_its_defaults_and_trains_a_few_steps():
    x, lengths = random_samples(SPEC, 40, gen(16))
    ds = Dataset("random", SPEC, Split(x.numpy(), lengths=lengths.numpy()))
    cfg = RunConfig()
    cfg.method.name = "tera"
    cpu = resolve(cfg, ds, "cpu")
    assert cpu.encoder.name == "speech_transformer" and cpu.encoder.params["dim"] == 144
    assert cpu.train.batch_size == 32 and cpu.train.lr == pytest.approx(1e-3)
    assert resolve(cfg, ds, "cuda").train.lr == pytest.approx(2e-4)  # the paper's lr at its batch of 32
    cfg.encoder.params = dict(SMALL)
    torch.manual_seed(0)
    m = build_method(resolve(cfg, ds), SPEC)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(2):
        out = m(m.views(x[:8], gen(17), lengths[:8]))
        assert torch.isfinite(out.loss) and out.embedding.shape[1] == 32 and 8 < len(out.embedding) <= 256  # frames
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None for p in m.encoder.parameters())
        opt.step()


def synthetic_speech(n: int, seed: int, samples: int = 8000) -> tuple[torch.Tensor, torch.Tensor]:
    """Harmonic 'voices': 24 harmonics of a gliding pitch (100-300 Hz per clip) under a slow loudness wave."""
    g = gen(seed)
    t = torch.arange(samples) / 16000
    f0 = 100 + 200 * torch.rand(n, 1, generator=g)
    glide = (torch.rand(n, 1, generator=g) - 0.5) * 400
    phase = 2 * math.pi * (f0 * t + 0.5 * glide * t * t)
    x = 0.2 * sum(torch.sin(k * phase) / k for k in range(1, 25))
    rate, offset = 2 + 4 * torch.rand(n, 1, generator=g), 6 * torch.rand(n, 1, generator=g)
    x = x * (0.5 + 0.5 * torch.sin(2 * math.pi * rate * t + offset)) + 0.003 * torch.randn(n, samples, generator=g)
    lengths = torch.randint(samples // 2, samples + 1, (n,), generator=g)
    lengths[0] = samples
    return x * (torch.arange(samples)[None] < lengths[:, None]), lengths


def test_tera_learns_to_reconstruct_better_than_the_utterance_mean():
    """80 steps on harmonic clips: on held-out clips the reconstruction L1 at the altered positions falls well
    below the L1 of predicting each utterance's mean (0 in normalized frames), where it starts above it."""
    torch.manual_seed(0)
    m = TERA(build_encoder("speech_transformer", SPEC, {"dim": 64, "depth": 2, "heads": 2, "conv_channels": 16}),
             TERAParams(), SPEC)  # fmt: skip
    x, lengths = synthetic_speech(256, 1)
    held, held_lengths = synthetic_speech(64, 2)
    held_views = m.views(held, gen(3), held_lengths)

    def held_out():
        m.eval()
        with torch.no_grad():
            out = m(held_views)
        m.train()
        return out.loss.item(), out.metrics["tera_mean_l1"].item()

    before, floor = held_out()
    assert before > floor
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01)
    g = gen(4)
    for _ in range(80):
        idx = torch.randint(0, 256, (32,), generator=g)
        out = m(m.views(x[idx], g, lengths[idx]))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()
    after, _ = held_out()
    assert after < 0.8 * floor, (before, after, floor)
