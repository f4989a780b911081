"""Speech end to end: `selfsup pretrain` with tera on a folder of audio, then `selfsup eval` for speaker ID with
the random-init encoder and MFCC statistics (the raw-input baseline) in the same table."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from selfsup.cli import main
from selfsup.data.spec import AudioSpec
from selfsup.evaluate.mfcc import N_MFCC, dct_matrix, mfcc_stats
from selfsup.runs import load_config, load_encoder, read_encoder_json

SMALL = ["--set", "encoder.dim=32", "--set", "encoder.depth=1", "--set", "encoder.heads=2",
         "--set", "encoder.conv_channels=8"]  # fmt: skip


def voice(f0: float, seconds: float, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    """A 'speaker': harmonics of a base pitch with a slow glide, a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(len(t))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    root = tmp_path_factory.mktemp("speakers")
    rng = np.random.default_rng(0)
    for s, f0 in enumerate((110, 160, 230, 330)):
        (root / f"spk{s}").mkdir()
        for i in range(16):
            rate = (16000, 22050)[i % 2]  # a second sample rate: resampled on reading
            sf.write(root / f"spk{s}" / f"u{i}.wav", voice(f0 * rng.uniform(0.97, 1.03), rng.uniform(0.4, 1.0), rng,
                                                            rate), rate)  # fmt: skip
    return root


def test_tera_pretrains_and_evaluates_speaker_id_on_an_audio_folder(speakers, tmp_path, cache_root):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(speakers), "--method", "tera", "--budget", "6steps", "--batch-size", "8",
                 "--device", "cpu", "--out", str(run), *SMALL]) == 0  # fmt: skip
    assert json.loads((run / "encoder.json").read_text())["spec"]["kind"] == "audio"
    assert main(["eval", str(run), "--labels", "100%"]) == 0
    rows = json.loads((run / "eval.json").read_text())
    test = {(r["protocol"], r["encoder"]): r["value"] for r in rows if r["split"] == "test"}
    assert set(test) == {(p, e) for p in ("knn", "linear") for e in ("pretrained", "random_init", "raw")}
    assert test[("linear", "raw")] >= 0.9  # four pitches: MFCC statistics separate them

    # a run written before encoder.norm existed normalized per bin: read back, it still does (and resumes so)
    assert load_config(run).encoder.params["norm"] == "clip" == read_encoder_json(run)["params"]["norm"]
    info = json.loads((run / "encoder.json").read_text())
    del info["params"]["norm"]
    (run / "encoder.json").write_text(json.dumps(info))
    lines = (run / "config.yaml").read_text().splitlines(keepends=True)
    (run / "config.yaml").write_text("".join(line for line in lines if line.strip() != "norm: clip"))
    assert load_config(run).encoder.params["norm"] == "bin" == load_encoder(run).input.norm


def test_grouped_batches_resume_to_the_same_weights(speakers, tmp_path, cache_root):
    """tera groups its batches by clip length; a run stopped after a checkpoint resumes to the weights of the
    uninterrupted run. A run written before train.group_by_length existed resumes with random batches."""
    import shutil

    from selfsup.runs import latest_checkpoint, load_weights

    ref = tmp_path / "ref"
    args = ["pretrain", "--data", str(speakers), "--method", "tera", "--budget", "6steps", "--batch-size", "8",
            "--device", "cpu", "--checkpoint-every", "3steps", *SMALL]  # fmt: skip
    assert main([*args, "--out", str(ref)]) == 0
    assert load_config(ref).train.group_by_length is True
    stopped = tmp_path / "stopped"
    assert main([*args, "--out", str(stopped)]) == 0
    shutil.rmtree(latest_checkpoint(stopped))  # as if killed after step 3's checkpoint
    (stopped / "checkpoints" / "latest").write_text("step-000003\n")
    assert main(["pretrain", "--resume", str(stopped)]) == 0
    want, got = load_weights(latest_checkpoint(ref)), load_weights(latest_checkpoint(stopped))
    assert latest_checkpoint(stopped).name == latest_checkpoint(ref).name
    assert all(torch.equal(want[k], got[k]) for k in want)

    lines = (ref / "config.yaml").read_text().splitlines(keepends=True)
    (ref / "config.yaml").write_text("".join(line for line in lines if "group_by_length" not in line))
    assert load_config(ref).train.group_by_length is False


def test_mfcc_statistics():
    d = dct_matrix(80, N_MFCC)
    assert torch.allclose(d.T @ d, torch.eye(N_MFCC), atol=1e-5)  # orthonormal columns
    from selfsup.data.audio import Waveforms

    rng = np.random.default_rng(1)
    clips = [(voice(f, sec, rng) * 32767).astype(np.int16) for f, sec in ((120, 0.5), (120, 0.5), (300, 0.3))]
    padded = [np.concatenate([c, np.zeros(4000, np.int16)]) for c in clips]
    f = mfcc_stats(Waveforms.from_clips(clips), AudioSpec())
    assert f.shape == (3, 4 * N_MFCC) and torch.isfinite(f).all()
    assert (f[0] - f[1]).norm() < (f[0] - f[2]).norm()  # same pitch nearer than another
    g = mfcc_stats(Waveforms.from_clips(padded), AudioSpec())
    assert not torch.allclose(f, g, atol=1e-3)  # trailing silence is part of a clip; padding (below) is not
    batch = Waveforms.from_clips(clips[:1] + clips[2:])
    alone = mfcc_stats(Waveforms.from_clips(clips[2:]), AudioSpec())[0]
    assert torch.allclose(mfcc_stats(batch, AudioSpec())[1], alone, atol=1e-4)  # alone or padded beside a longer clip
