"""Speech tasks' data: which splits a task reads, and speaker-disjoint, seeded validation splits.

Speakers are a split's ``groups["speaker"]``. Every choice here is a seeded permutation (numpy's
``default_rng(seed)``), so the same run and seed give the same splits.
"""

from __future__ import annotations

import numpy as np

from selfsup.data.audio import Waveforms
from selfsup.data.base import SequenceLabels, Split
from selfsup.errors import UserError


def audio_folder(name) -> bool:
    """``name`` is a user's folder of audio files (not a registered dataset)."""
    from selfsup.data import is_audio_path
    from selfsup.registry import DATASETS

    return isinstance(name, str) and name not in DATASETS and is_audio_path(name)


def speakers_of(split: Split, what: str) -> np.ndarray:
    """The split's speaker of every clip, or a one-line error naming ``what`` needs them."""
    if "speaker" not in split.groups:
        raise UserError(f"{what} needs speakers; this data has none (an audio folder: one sub-folder per speaker)")
    return np.asarray(split.groups["speaker"]).astype(str)


def speaker_validation(split: Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, validation) positions: whole speakers, in a seeded order, go to validation until it holds about
    ``fraction`` of the clips (at least one speaker; at least one is left for the pool). With one speaker (or
    no speaker group) a seeded ``fraction`` of the clips instead (at least one clip)."""
    n = len(split)
    rng = np.random.default_rng(seed)
    spk = np.asarray(split.groups["speaker"]).astype(str) if "speaker" in split.groups else None
    names = np.unique(spk) if spk is not None else np.zeros(0)
    if len(names) < 2:
        if n < 2:
            raise UserError(f"{n} training clip(s): too few to carve a validation split from; add data")
        val = np.sort(rng.permutation(n)[: max(1, round(fraction * n))])
        return np.setdiff1d(np.arange(n), val), val
    order, chosen, count = rng.permutation(names), [], 0
    for name in order[:-1]:  # the last speaker always stays in the pool
        chosen.append(name)
        count += int((spk == name).sum())
        if count >= fraction * n:
            break
    in_val = np.isin(spk, chosen)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def speaker_halves(spk: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(validation, test) positions of a verification set: a seeded half of the speakers each (validation gets
    the smaller half), when there are at least 4; with 2-3 speakers every speaker's clips are halved instead
    (seeded) and both halves hold every speaker. The flag says whether the halves are speaker-disjoint."""
    rng = np.random.default_rng(seed)
    names = rng.permutation(np.unique(spk))
    if len(names) >= 4:
        in_val = np.isin(spk, names[: len(names) // 2])
        return np.flatnonzero(in_val), np.flatnonzero(~in_val), True
    val = []
    for name in names:
        own = rng.permutation(np.flatnonzero(spk == name))
        val += own[: len(own) // 2].tolist()
    in_val = np.isin(np.arange(len(spk)), val)
    return np.flatnonzero(in_val), np.flatnonzero(~in_val), False


def concat(a: Split, b: Split | None) -> Split:
    """Two splits of clips as one (loaded into memory), ``a``'s first."""
    if b is None or len(b) == 0:
        return a
    x = Waveforms.from_clips(list(a.x) + list(b.x))
    if isinstance(a.y, SequenceLabels) or a.y is None or b.y is None:
        y = None
    else:
        y = np.concatenate([np.asarray(a.y), np.asarray(b.y)])
    groups = {k: np.concatenate([np.asarray(v), np.asarray(b.groups[k])]) for k, v in a.groups.items()
              if k in b.groups}  # fmt: skip
    return Split(x, y, x.lengths, groups)


__all__ = ["audio_folder", "concat", "speaker_halves", "speaker_validation", "speakers_of"]
