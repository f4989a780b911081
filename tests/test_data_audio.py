"""Speech data: the Waveforms container, decoding and resampling, user audio folders, synth-speech, klettres."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from selfsup.data import Split, fetch, load_dataset, named_speech
from selfsup.data import audio as audio_mod
from selfsup.data.audio import CHARS, ClipWriter, Waveforms, load_audio_folder, load_clips, resample, transcript_text
from selfsup.errors import UserError

SR = 16000


class Log(list):
    def __call__(self, line):
        self.append(line)


def _sine(freq: float, rate: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav(path, data, rate, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **kw)
    return path


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()])


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- the container


def test_waveforms_container_semantics():
    clips = [np.arange(n, dtype=np.int16) for n in (3, 0, 5, 2)]
    x = Waveforms.from_clips(clips)
    assert len(x) == 4 and x.shape == (4,) and x.lengths.tolist() == [3, 0, 5, 2]
    assert x[2].tolist() == list(range(5)) and x[-1].tolist() == [0, 1]
    view = x[1:3]
    assert isinstance(view, Waveforms) and view.lengths.tolist() == [0, 5] and np.shares_memory(view.flat, x.flat)
    gathered = x[np.array([3, 0])]
    assert isinstance(gathered, Waveforms) and [c.tolist() for c in gathered] == [[0, 1], [0, 1, 2]]
    assert not np.shares_memory(gathered.flat, x.flat)
    assert x[np.array([True, False, False, True])].lengths.tolist() == [3, 2]
    assert x[::2].lengths.tolist() == [3, 5]
    with pytest.raises(IndexError):
        x[4]
    with pytest.raises(TypeError, match="ragged"):
        np.asarray(x)

    b, lens = x.batch([2, 3, 1])
    assert b.dtype == torch.float32 and b.shape == (3, 5) and lens.tolist() == [5, 2, 0]
    assert torch.allclose(b[0], torch.arange(5.0) / 32768) and b[1, 2:].abs().sum() == 0 and b[2].abs().sum() == 0
    full = Waveforms.from_clips([np.array([-32768, 32767], np.int16)]).batch()[0]
    assert full.min() == -1.0 and full.max() < 1.0

    split = Split(x, np.arange(4), x.lengths, {"speaker": np.array(list("abcd"))})
    taken = split.take([3, 1])
    assert isinstance(taken.x, Waveforms) and taken.lengths.tolist() == [2, 0] and taken.y.tolist() == [3, 1]
    assert taken.groups["speaker"].tolist() == ["d", "b"] and len(taken) == 2
    head = split.head(2)
    assert isinstance(head.x, Waveforms) and len(head) == 2 and head.lengths.tolist() == [3, 0]


def test_clip_writer_memory_maps_and_reorders(tmp_path):
    w = ClipWriter(tmp_path / "c")
    for n in (4, 1, 3):
        w.add(np.full(n, n, np.int16))
    w.close(order=np.array([2, 0, 1]))
    x = load_clips(tmp_path / "c")
    assert isinstance(x.flat, np.memmap) and [c.tolist() for c in x] == [[3] * 3, [4] * 4, [1]]
    assert isinstance(x[1:].flat, np.memmap) and isinstance(Split(x).head(2).x.flat, np.memmap)
    assert not isinstance(Split(x).take([0]).x.flat, np.memmap)
    assert not list(tmp_path.glob("c/*.raw*"))


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("rate,freq", [(8000, 1000.0), (22050, 440.0), (44100, 440.0), (48000, 3000.0)])
def test_resampling_keeps_the_frequency(rate, freq):
    y = resample(_sine(freq, rate, 1.0), rate, SR)
    assert abs(len(y) - SR) <= 1
    assert abs(_peak_hz(y, SR) - freq) <= 1.5
    assert 0.45 < np.abs(y[1000:-1000]).max() < 0.55  # the amplitude is kept in the pass band


def test_folder_of_mixed_formats(tmp_path, private_cache):
    root = tmp_path / "data"
    _wav(root / "ann" / "a8k.wav", _sine(440, 8000), 8000)
    _wav(root / "ann" / "a22.wav", _sine(440, 22050), 22050)
    _wav(root / "ann" / "a44.flac", _sine(440, 44100), 44100)
    stereo = np.stack([_sine(440, 44100), np.zeros(22050, np.float32)], axis=1)
    _wav(root / "bob" / "stereo24.wav", stereo, 44100, subtype="PCM_24")
    _wav(root / "bob" / "float.wav", _sine(440, 32000), 32000, subtype="FLOAT")
    _wav(root / "bob" / "vorbis.ogg", _sine(440, 44100), 44100, format="OGG", subtype="VORBIS")
    ds = load_dataset(str(root))
    assert ds.spec.kind == "audio" and ds.spec.sample_rate == SR and ds.classes == ["ann", "bob"]
    assert len(ds.train) + len(ds.test) == 6 and ds.labelled
    every = []
    for split in (ds.train, ds.test):
        assert isinstance(split.x, Waveforms) and split.lengths.tolist() == split.x.lengths.tolist()
        every += list(split.x)
    assert len(every) == 6 and all(abs(len(c) - SR // 2) <= 2 for c in every)
    for clip in every:
        assert clip.dtype == np.int16 and abs(_peak_hz(clip, SR) - 440) < 3
    amps = sorted(float(np.abs(c[1000:-1000]).max()) / 32768 for c in every)
    assert 0.2 < amps[0] < 0.3 and 0.45 < amps[1] < 0.55  # the stereo file (one silent channel) mixes down to half


def test_transcripts_from_txt_and_metadata_csv(tmp_path, private_cache):
    root = tmp_path / "data"
    _wav(root / "one.wav", _sine(300, 16000), 16000)
    (root / "one.txt").write_text("Hello, World!  It's \u201cfine\u201d.\n")
    _wav(root / "wavs" / "LJ001.wav", _sine(300, 22050), 22050)
    _wav(root / "wavs" / "LJ002.wav", _sine(300, 22050), 22050)
    _wav(root / "untranscribed.wav", _sine(300, 16000), 16000)
    (root / "metadata.csv").write_text("LJ001|Raw TEXT|the normalized text\nLJ002.wav|second one\n")
    ds = load_audio_folder(root, labels="transcript")
    texts = sorted(transcript_text(s.y[i]) for s in (ds.train, ds.test) for i in range(len(s)))
    assert texts == ["hello world it's fine", "second one", "the normalized text"]
    assert ds.classes[0] == "<blank>" and "".join(ds.classes[1:]) == CHARS
    plain = load_dataset(str(root))  # no speaker folders: unlabelled, every clip in train for pretraining
    assert plain.train.y is None and plain.test is None and len(plain) == 4


def _bad_folder(root):
    _wav(root / "spk1" / "good.wav", _sine(300, 16000), 16000)
    _wav(root / "spk2" / "good.wav", _sine(300, 16000), 16000)
    (root / "spk1" / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    (root / "spk2" / "empty.flac").write_bytes(b"")
    _wav(root / "spk2" / "noframes.wav", np.zeros(0, np.float32), 16000)
    _wav(root / "spk1" / "digits.wav", _sine(300, 16000), 16000)
    (root / "spk1" / "digits.txt").write_text("call 911 now")
    (root / "metadata.csv").write_text("spk1/good|fine words\nspk1/missing|lost words\n")
    _wav(root / "spk2" / "blip.wav", _sine(300, 44100, seconds=0.05), 44100)  # 800 samples at 16 kHz: under 880
    _wav(root / "spk1" / "blip2.wav", _sine(300, 16000, seconds=0.01), 16000)


def test_bad_input_is_skipped_and_counted(tmp_path, private_cache):
    root = tmp_path / "data"
    _bad_folder(root)
    log = Log()
    ds = load_audio_folder(root, log=log)
    assert len(ds.train) + len(ds.test) == 3  # good.wav of each speaker and digits.wav, without its transcript
    assert len(log) == 1 and "skipped 6 of 9 audio inputs" in log[0], log
    assert "2 unreadable audio files (e.g. spk" in log[0] and "1 empty file (e.g. spk2/empty.flac)" in log[0]
    assert "dropped 1 transcript outside the alphabet (e.g. spk1/digits.txt), its clip kept without one" in log[0]
    spoken = load_audio_folder(root, labels="transcript", log=Log())  # digits.wav is not one of the transcribed
    assert len(spoken.train) + (len(spoken.test) if spoken.test else 0) == 1
    assert "2 clips shorter than 55 ms (e.g. spk" in log[0]
    assert "1 metadata.csv line naming no audio file (e.g. metadata.csv line 2)" in log[0]
    again = Log()
    load_audio_folder(root, log=again)  # from the cache: the same line
    assert again == log


@pytest.mark.parametrize("culprit,match", [
    ("corrupt", "corrupt.wav is not a readable audio file"),
    ("empty", "empty.flac is not a readable audio file \\(the file is empty, 0 bytes\\)"),
    ("noframes", "noframes.wav is not a readable audio file"),
    ("digits", "digits.txt: the transcript 'call 911 now' of spk1/digits.wav has characters outside"),
    ("metadata", "metadata.csv line 2 names 'spk1/missing'"),
    ("short", "blip.wav lasts 50 ms, shorter than the 55 ms the speech encoder's first token reads"),
])  # fmt: skip
def test_strict_bad_input_is_a_one_line_error(tmp_path, private_cache, culprit, match):
    root = tmp_path / "data"
    _bad_folder(root)
    keep = {"corrupt": "spk1/corrupt.wav", "empty": "spk2/empty.flac", "noframes": "spk2/noframes.wav",
            "digits": "spk1/digits.txt", "metadata": "metadata.csv", "short": "spk2/blip.wav"}  # fmt: skip
    (root / "spk1" / "blip2.wav").unlink()
    for name, rel in keep.items():
        if name != culprit:
            (root / rel).unlink()
            if name == "digits":
                (root / "spk1" / "digits.wav").unlink()
    with pytest.raises(UserError, match=match) as e:
        load_audio_folder(root, strict=True)
    assert "\n" not in str(e.value) and "--strict" in str(e.value)
    assert not list(private_cache.glob("audio/*/meta.json"))  # nothing cached


def test_empty_and_missing_folders(tmp_path, private_cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no audio files"):
        load_audio_folder(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        load_audio_folder(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"nope")
    with pytest.raises(UserError, match=r"holds no readable \(1 unreadable\) audio files"):
        load_audio_folder(tmp_path / "bad")


def test_cache_is_reused_and_keyed_by_the_files(tmp_path, private_cache, monkeypatch):
    root = tmp_path / "data"
    for spk in ("a", "b"):
        for i in range(5):
            _wav(root / spk / f"{i}.wav", _sine(200 + 50 * i, 22050), 22050)
    first = load_audio_folder(root)
    assert isinstance(first.train.x.flat, np.memmap) and len(first.test) == 2  # 20% of each speaker
    assert first.train.y.tolist() == sorted(first.train.y.tolist())

    def no_decode(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(audio_mod, "_decode_file", no_decode)
    second = load_audio_folder(root)
    assert np.array_equal(np.asarray(second.train.x.flat), np.asarray(first.train.x.flat))
    monkeypatch.undo()
    monkeypatch.setenv("SELFSUP_CACHE", str(private_cache))
    _wav(root / "a" / "0.wav", _sine(900, 22050, 0.25), 22050)  # changed: decoded again
    third = load_audio_folder(root)
    assert sorted(third.train.lengths.tolist() + third.test.lengths.tolist())[0] == SR // 4


def test_train_test_folders_keep_their_split(tmp_path, private_cache):
    for split, n in (("train", 3), ("test", 1)):
        for spk in ("x", "y"):
            for i in range(n):
                _wav(tmp_path / "d" / split / spk / f"{i}.wav", _sine(300, 16000), 16000)
    ds = load_audio_folder(tmp_path / "d")
    assert (len(ds.train), len(ds.test)) == (6, 2) and ds.classes == ["x", "y"]


# ----------------------------------------------------------------------------- synth-speech


def test_synth_speech_small(synth_small):
    parts = synth_small
    n_spk, per = named_speech.SIZES["small"]
    assert sum(len(parts[k]) for k in ("train", "test", "verify")) == n_spk * per
    seconds = sum(int(parts[k].lengths.sum()) for k in ("train", "test", "verify")) / SR
    assert 60 < seconds < 600  # a few minutes
    for split in parts.values():
        assert isinstance(split.x, Waveforms) and isinstance(split.x.flat, np.memmap)
        assert set(split.groups) == {"speaker", "accent", "voice"}
        assert set(split.groups["accent"]) <= set(named_speech.ACCENTS)
        assert set(split.groups["voice"]) <= {"female", "male", "other"}
        assert split.lengths.min() > SR // 2 and split.lengths.max() < 10 * SR
        assert 1000 < np.abs(split.x.flat).max() < 32767  # audible, never clipped
    every = np.concatenate([parts[k].groups["accent"] for k in ("train", "test", "verify")])
    assert set(every) == set(named_speech.ACCENTS)  # 8 speakers, one per accent
    train, test, verify = (set(parts[k].groups["speaker"]) for k in ("train", "test", "verify"))
    assert test == train and not train & verify and len(verify) >= 2
    texts = {k: [transcript_text(parts[k].y[i]) for i in range(len(parts[k]))] for k in ("ctc_train", "ctc_test")}
    assert all(t and set(t) <= set(CHARS) for ts in texts.values() for t in ts)
    assert not set(texts["ctc_train"]) & set(texts["ctc_test"])  # unseen sentences at test
    assert set(texts["ctc_train"]) <= set(named_speech.sentences())
    ds = load_dataset("synth-speech")
    assert ds.labelled and ds.spec.kind == "audio" and ds.num_classes == len(train)
    assert ds.classes == sorted(train) and (np.array(ds.classes)[ds.train.y] == ds.train.groups["speaker"]).all()


def test_synth_speech_is_reproducible(synth_small, cache_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "again"))
    again = named_speech.build_synth_speech("small", log=lambda _: None)
    for name in ("audio.npy", "offsets.npy", "transcripts.txt", "meta.json"):
        assert (again / name).read_bytes() == (cache_root / "synth-speech" / "v1-small" / name).read_bytes(), name


def test_synth_speech_not_cached_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "none"))
    with pytest.raises(UserError, match="selfsup data get synth-speech"):
        load_dataset("synth-speech")
    with pytest.raises(UserError, match="--size applies to synth-speech only"):
        fetch("imdb", size="small")


def test_speaker_table_is_balanced():
    table = named_speech.speaker_table(100)
    assert len({s["name"] for s in table}) == 100
    assert [sum(s["accent"] == a for s in table) for a in named_speech.ACCENTS] == [13] * 4 + [12] * 4
    assert sum(s["voice"] == "female" for s in table) == 40 and sum(s["role"] == "verify" for s in table) == 20
    assert all(s["variant"] in named_speech.VARIANTS[s["voice"]] for s in table)


# ----------------------------------------------------------------------------- klettres


@pytest.fixture(scope="session")
def klettres(cache_root):
    try:
        fetch("klettres", log=lambda _: None)
    except UserError as e:
        pytest.fail(f"klettres-data cannot be fetched here: {e}")
    return load_dataset("klettres")


def test_klettres(klettres):
    ds = klettres
    assert ds.num_classes >= 15 and "en" in ds.classes and ds.spec.sample_rate == SR
    assert len(ds.train) + len(ds.test) > 1500 and isinstance(ds.train.x.flat, np.memmap)
    assert set(ds.train.groups["unit"]) == {"letter", "syllable"}
    assert set(np.unique(ds.test.y)) == set(range(ds.num_classes))  # stratified by language
    assert (np.array(ds.classes)[ds.train.y] == ds.train.groups["language"]).all()
    assert ds.train.lengths.min() > 0
