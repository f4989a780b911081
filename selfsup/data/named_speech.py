"""Named speech sets: ``synth-speech`` (English read speech synthesized with espeak-ng) and ``klettres``.

Both are built once by ``selfsup data get NAME`` into ``cache_dir()/NAME/`` (a folder written under a temporary
name and renamed when complete) and loaded from there, memory-mapped (``audio.Waveforms``, 16 kHz int16);
loading never builds or fetches: a set not cached is a one-line error naming the command.

synth-speech
    A spoken English corpus, reproducible from a seed (0). Each speaker is an espeak-ng voice: one of 8 English
    accents (``ACCENTS``), a voice variant (``VARIANTS``; its family, ``female``, ``male`` or ``other`` for the
    synthetic, whispered and child-like ones, is the group ``voice``), a base pitch (``-p`` 25..75) and speed
    (``-s`` 140..195 words a minute), at amplitude ``-a 50``; each utterance jitters pitch by up to 4 and speed
    by up to 10. Speakers read sentences from Jane Austen's novels (``speech_sentences.txt``, public domain;
    transcripts in the CTC alphabet of ``audio.CHARS``), 1-6 seconds each. espeak-ng's 22,050 Hz output is
    resampled to 16 kHz. Sizes (``--size``): ``default`` 100 speakers x 60 utterances (about 4.7 hours, 0.5 GB),
    ``small`` 8 x 6 (about 2 minutes, for tests). Two threads drive the espeak-ng processes.

    Splits (speakers chosen with the seed; stored train, test, verify, each a contiguous memory-mapped slice):

    * ``train``: the training speakers' (80%) utterances but their last 20%: pretraining, and speaker ID
      (y = speaker id, ``classes`` the speaker names);
    * ``test``: the held-out 20% of each training speaker's utterances (speaker ID test);
    * ``verify``: the other 20% of the speakers (at least 2), disjoint from train, reading sentences no training
      speaker reads (the last 10% of the sentence list): speaker verification (y = their own speaker ids);
    * ``ctc_train`` / ``ctc_test``: ``train`` / ``verify`` with y = the transcripts (``SequenceLabels`` of
      character ids; unseen speakers and sentences at test).

    ``load_dataset("synth-speech")`` gives train and test (speaker ID); :func:`synth_speech_splits` gives all
    five. Every split has the groups ``speaker``, ``accent`` and ``voice``. Both read the largest size cached
    unless ``size`` is given.

klettres
    Human recordings of letters and syllables from Debian's ``klettres-data`` (GPL): ``<lang>/{alpha,syllab}/*.ogg``
    in 20 languages, 1,836 clips (about 51 minutes, mostly 44.1 kHz). Found installed (``/usr/share/klettres``,
    or ``$SELFSUP_KLETTRES_DIR``) or fetched with ``apt-get download klettres-data`` and unpacked with ``dpkg -x``
    (no root needed). Labels: the language folder; groups ``language`` and ``unit`` (letter or syllable); a
    seeded (0), language-stratified 20% test split.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from selfsup.data import audio, debian
from selfsup.data.audio import SAMPLE_RATE, ClipWriter, Waveforms, decode_audio, load_clips, transcript_labels
from selfsup.data.base import Dataset, Split
from selfsup.data.cache import building, cache_dir
from selfsup.data.spec import AudioSpec
from selfsup.data.splits import stratified_holdout
from selfsup.errors import UserError
from selfsup.registry import DATASETS

CACHE_VERSION = 1
ACCENTS = ("en-us", "en-us-nyc", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = {
    "female": ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "grandma",
               "linda", "steph", "steph2", "steph3"),
    "male": ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Denis", "Diogo", "Henrique", "Hugo", "Lee",
             "michel", "miguel", "sandro", "travis", "victor", "croak", "john", "paul", "robert", "quincy", "grandpa",
             "norbert", "gustave"),
    "other": ("klatt", "klatt2", "klatt3", "klatt4", "whisper", "whisperf", "zac", "shelby", "Nguyen", "edward",
              "benjamin", "adam", "david"),
}  # fmt: skip
FAMILY_SHARE = {"female": 0.4, "male": 0.4}  # the rest: other
SIZES = {"default": (100, 60), "small": (8, 6)}  # speakers, utterances per speaker
PITCH, SPEED, PITCH_JITTER, SPEED_JITTER = (25, 75), (140, 195), 4, 10
AMPLITUDE = 50  # espeak-ng -a: at its default (100) many variants clip; at 50 none of VARIANTS does
VERIFY_SHARE, TEST_SHARE, HELD_SENTENCES = 0.2, 0.2, 0.1
SENTENCES = Path(__file__).with_name("speech_sentences.txt")
SPLITS = ("train", "test", "verify")
_GET = "run `selfsup data get synth-speech` first (it synthesizes the corpus with espeak-ng)"


def sentences() -> list[str]:
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    return [s for s in lines if s and not s.startswith("#")]


# ----------------------------------------------------------------------------- synth-speech: the plan


def speaker_table(n: int, seed: int = 0) -> list[dict]:
    """``n`` speakers drawn from ``seed``: name, accent, variant, voice (its family), pitch, speed, role."""
    rng = np.random.default_rng(seed)
    accents = rng.permutation([ACCENTS[i % len(ACCENTS)] for i in range(n)])
    counts = {f: round(share * n) for f, share in FAMILY_SHARE.items()}
    counts["other"] = n - sum(counts.values())
    families = rng.permutation([f for f, k in counts.items() for _ in range(k)])
    n_verify = min(n - 1, max(2, round(VERIFY_SHARE * n)))
    verify = set(rng.permutation(n)[:n_verify].tolist())
    table = []
    for i in range(n):
        fam = str(families[i])
        table.append({"name": f"spk{i:03d}", "accent": str(accents[i]), "variant": str(rng.choice(VARIANTS[fam])),
                      "voice": fam, "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
                      "speed": int(rng.integers(SPEED[0], SPEED[1] + 1)),
                      "role": "verify" if i in verify else "train"})  # fmt: skip
    return table


def utterance_plan(speakers: list[dict], per_speaker: int, seed: int = 0) -> list[dict]:
    """Every utterance, in stored order (the train split, then test, then verify): speaker index, split, text,
    pitch and speed."""
    rng = np.random.default_rng([seed, 1])
    texts = sentences()
    n_held = max(per_speaker, round(HELD_SENTENCES * len(texts)))
    pools = {"train": texts[:-n_held], "verify": texts[-n_held:]}
    n_test = max(1, round(TEST_SHARE * per_speaker))
    plan = []
    for s, spk in enumerate(speakers):
        pool = pools[spk["role"]]
        for k, j in enumerate(rng.choice(len(pool), per_speaker, replace=False)):
            split = "verify" if spk["role"] == "verify" else ("test" if k >= per_speaker - n_test else "train")
            plan.append({"speaker": s, "split": split, "text": pool[j],
                         "pitch": int(np.clip(spk["pitch"] + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99)),
                         "speed": int(spk["speed"] + rng.integers(-SPEED_JITTER, SPEED_JITTER + 1))})  # fmt: skip
    return sorted(plan, key=lambda u: SPLITS.index(u["split"]))  # stable: speaker-major inside each split


# ----------------------------------------------------------------------------- synth-speech: building


def ensure_espeak(log=print) -> str:
    """The espeak-ng executable; installed with apt-get when missing and we are root, else a UserError."""
    exe = shutil.which("espeak-ng")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log("synth-speech: installing espeak-ng with apt-get ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "espeak-ng"]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:  # fresh machine: empty lists
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
        exe = shutil.which("espeak-ng")
    if exe is None:
        raise UserError("espeak-ng is not installed; run `apt-get install espeak-ng` (as root), then "
                        "`selfsup data get synth-speech` again")  # fmt: skip
    return exe


def synthesize(exe: str, voice: str, pitch: int, speed: int, text: str) -> np.ndarray:
    """One utterance: espeak-ng's WAV (stdout) -> int16 at 16 kHz."""
    cmd = [exe, "-v", voice, "-a", str(AMPLITUDE), "-p", str(pitch), "-s", str(speed), "--stdout", text]
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0 or not r.stdout:
        why = (r.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise UserError(f"espeak-ng failed for voice {voice} ({why}); check `espeak-ng --voices=en`")
    return decode_audio(r.stdout, SAMPLE_RATE)


def synth_path(size: str = "default", seed: int = 0) -> Path:
    return cache_dir() / "synth-speech" / (f"v{CACHE_VERSION}-{size}" + ("" if seed == 0 else f"-seed{seed}"))


def build_synth_speech(size: str = "default", seed: int = 0, log=print) -> Path:
    """Synthesize the corpus of ``size`` from ``seed`` into its cache folder (nothing when it is there)."""
    if size not in SIZES:
        raise UserError(f"synth-speech size {size!r}: choose one of {', '.join(SIZES)}")
    final = synth_path(size, seed)
    if (final / "meta.json").is_file():
        return final
    exe = ensure_espeak(log)
    n_speakers, per_speaker = SIZES[size]
    speakers = speaker_table(n_speakers, seed)
    plan = utterance_plan(speakers, per_speaker, seed)
    log(f"synth-speech: synthesizing {len(plan)} utterances of {n_speakers} speakers with espeak-ng ({size} size)")

    def job(u: dict) -> np.ndarray:
        spk = speakers[u["speaker"]]
        return synthesize(exe, f"{spk['accent']}+{spk['variant']}", u["pitch"], u["speed"], u["text"])

    with building(final) as tmp:
        writer = ClipWriter(tmp)
        pool = ThreadPoolExecutor(max_workers=2)
        try:
            for i, clip in enumerate(pool.map(job, plan), 1):
                writer.add(clip)
                if i % 1000 == 0:
                    log(f"synth-speech: {i} / {len(plan)} utterances")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        meta = {"version": CACHE_VERSION, "size": size, "seed": seed, "espeak": version, "speakers": speakers,
                "counts": {s: sum(u["split"] == s for u in plan) for s in SPLITS},
                "utterances": [[u["speaker"], u["pitch"], u["speed"]] for u in plan]}  # fmt: skip
        (tmp / "transcripts.txt").write_text("".join(u["text"] + "\n" for u in plan), encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return final


def fetch_synth_speech(log=print, size: str = "default") -> Path:
    """``selfsup data get synth-speech [--size small|default]``."""
    folder = build_synth_speech(size, log=log)
    parts = synth_speech_splits(size)
    hours = sum(int(p.lengths.sum()) for k, p in parts.items() if k in SPLITS) / SAMPLE_RATE / 3600
    log(f"synth-speech ({size}): {len(parts['train'])} train / {len(parts['test'])} test / {len(parts['verify'])} "
        f"verify utterances, {hours:.2f} hours, cached in {folder}")  # fmt: skip
    return folder


# ----------------------------------------------------------------------------- synth-speech: loading


def _cached_size(size: str | None) -> str:
    if size is not None:
        if size not in SIZES:
            raise UserError(f"synth-speech size {size!r}: choose one of {', '.join(SIZES)}")
        if not (synth_path(size) / "meta.json").is_file():
            flag = "" if size == "default" else f" --size {size}"
            raise UserError(f"synth-speech ({size}) is not cached on this machine; run `selfsup data get "
                            f"synth-speech{flag}` first (it synthesizes the corpus with espeak-ng)")  # fmt: skip
        return size
    for s in SIZES:  # the largest one cached
        if (synth_path(s) / "meta.json").is_file():
            return s
    raise UserError(f"synth-speech is not cached on this machine; {_GET}")


def synth_speech_splits(size: str | None = None) -> dict[str, Split]:
    """All splits of the cached corpus (``size`` None: the largest cached): train, test, verify (y = speaker
    ids), ctc_train, ctc_test (y = transcripts). See the module docstring."""
    folder = synth_path(_cached_size(size))
    meta = json.loads((folder / "meta.json").read_text())
    clips = load_clips(folder)
    texts = (folder / "transcripts.txt").read_text(encoding="utf-8").splitlines()
    spk = np.array([u[0] for u in meta["utterances"]], dtype=np.int64)
    if len(texts) != len(clips) or len(spk) != len(clips):
        raise UserError(f"the cache {folder} is damaged; delete it and run `selfsup data get synth-speech`")
    table = meta["speakers"]
    groups = {k: np.array([s[k] for s in table], dtype=str)[spk] for k in ("accent", "voice")}
    groups = {"speaker": np.array([s["name"] for s in table], dtype=str)[spk], **groups}
    out, start = {}, 0
    for split in SPLITS:
        stop = start + meta["counts"][split]
        ids = np.unique(spk[start:stop], return_inverse=True)[1].astype(np.int64)
        x = clips[start:stop]
        out[split] = Split(x, ids, x.lengths, {k: v[start:stop] for k, v in groups.items()})
        start = stop
    for name, split in (("ctc_train", "train"), ("ctc_test", "verify")):
        s = out[split]
        lo = sum(meta["counts"][k] for k in SPLITS[: SPLITS.index(split)])
        out[name] = Split(s.x, transcript_labels(texts[lo : lo + len(s)]), s.lengths, dict(s.groups))
    return out


def synth_speech_classes(size: str | None = None) -> list[str]:
    """The training speakers' names: the class names of ``train`` / ``test`` y."""
    meta = json.loads((synth_path(_cached_size(size)) / "meta.json").read_text())
    return sorted(s["name"] for s in meta["speakers"] if s["role"] == "train")


@DATASETS.register("synth-speech")
def synth_speech(size: str | None = None, **_) -> Dataset:
    """English read speech synthesized with espeak-ng: speaker ID (train / held-out test); see named_speech."""
    parts = synth_speech_splits(size)
    return Dataset("synth-speech", AudioSpec(SAMPLE_RATE), parts["train"], parts["test"], synth_speech_classes(size))


# ----------------------------------------------------------------------------- klettres


KLETTRES_DIR = Path("/usr/share/klettres")
UNITS = {"alpha": "letter", "syllab": "syllable"}


def klettres_path() -> Path:
    return cache_dir() / "klettres" / f"v{CACHE_VERSION}"


def _klettres_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for unit in UNITS for p in root.glob(f"*/{unit}/*.ogg"))


def _find_klettres() -> Path | None:
    extra = os.environ.get("SELFSUP_KLETTRES_DIR")
    for d in ([Path(extra)] if extra else []) + [KLETTRES_DIR]:
        if d.is_dir() and _klettres_files(d):
            return d
    return None


def _apt_klettres(tmp: Path, log) -> Path | None:
    """``apt-get download klettres-data`` + ``dpkg -x`` into ``tmp`` (no root needed)."""
    if not debian.available():
        return None
    log("klettres: fetching Debian's klettres-data (40 MB) with apt-get download ...")
    x = debian.apt_download("klettres-data", tmp)
    if x is None:
        return None
    root = x / "usr" / "share" / "klettres"
    return root if _klettres_files(root) else None


def _build_klettres(root: Path, log) -> None:
    files = _klettres_files(root)
    final = klettres_path()
    with building(final) as tmp:
        writer, kept, bad = ClipWriter(tmp), [], []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for rel, clip in zip(files, pool.map(lambda f: _try_decode(root / f), files)):
                if clip is None:
                    bad.append(rel)
                    continue
                writer.add(clip)
                kept.append(rel)
        langs = [f.split("/")[0] for f in kept]
        classes, y = np.unique(langs, return_inverse=True)
        test = stratified_holdout(y, 0.2, 0)
        order = np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)])
        writer.close(order)
        meta = {"version": CACHE_VERSION, "files": [kept[i] for i in order], "n_train": int((~test).sum()),
                "classes": [str(c) for c in classes], "skipped": bad}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if bad:
        log(audio.skipped_line("klettres", {"audio": len(bad)}, {"audio": bad[0]}, len(files)))


def _try_decode(path: Path) -> np.ndarray | None:
    try:
        return decode_audio(str(path), SAMPLE_RATE)
    except Exception:  # noqa: BLE001 - counted and reported by the caller
        return None


def fetch_klettres(log=print) -> Path:
    """``selfsup data get klettres``: find the recordings (or apt-get download them), decode and cache them."""
    if not (klettres_path() / "meta.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            root = _find_klettres() or _apt_klettres(Path(tmp), log)
            if root is None:
                raise UserError("could not fetch klettres: apt-get download klettres-data failed; install "
                                "it with `apt-get install klettres-data` or set SELFSUP_KLETTRES_DIR")  # fmt: skip
            _build_klettres(root, log)
    ds = load_klettres()
    log(f"klettres: {len(ds)} train / {len(ds.test)} test clips, {ds.num_classes} languages, cached in "
        f"{klettres_path()}")  # fmt: skip
    return klettres_path()


@DATASETS.register("klettres")
def load_klettres(**_) -> Dataset:
    """Human recordings of letters and syllables in 20 languages (Debian klettres-data); y = the language."""
    folder = klettres_path()
    if not (folder / "meta.json").is_file():
        raise UserError("klettres is not cached on this machine; run `selfsup data get klettres` first "
                        "(it uses Debian's klettres-data package)")  # fmt: skip
    meta = json.loads((folder / "meta.json").read_text())
    clips: Waveforms = load_clips(folder)
    parts = [f.split("/") for f in meta["files"]]
    lang = np.array([p[0] for p in parts], dtype=str)
    groups = {"language": lang, "unit": np.array([UNITS[p[1]] for p in parts], dtype=str)}
    y = np.searchsorted(np.array(meta["classes"]), lang).astype(np.int64)
    n = meta["n_train"]

    def part(a: int, b: int) -> Split:
        x = clips[a:b]
        return Split(x, y[a:b], x.lengths, {k: v[a:b] for k, v in groups.items()})

    return Dataset("klettres", AudioSpec(SAMPLE_RATE), part(0, n), part(n, len(clips)), list(meta["classes"]))


__all__ = ["ACCENTS", "SIZES", "VARIANTS", "build_synth_speech", "ensure_espeak", "fetch_klettres",
           "fetch_synth_speech", "load_klettres", "sentences", "speaker_table", "synth_speech",
           "synth_speech_classes", "synth_speech_splits", "synthesize", "utterance_plan"]  # fmt: skip
