"""The ``verify`` task: speaker verification by cosine scoring of frozen pooled features; metric: equal error rate.

- Data (``splits``): a background set (speakers of the training data) and a verification set of other
  speakers: synth-speech's ``train`` and ``verify`` splits (the verification speakers are never heard in
  pretraining and read sentences no training speaker reads); for an audio folder, a seeded (0) 20% of its
  speakers (at least 2, leaving at least 1) verify and the rest are the background (on a folder the
  verification speakers' clips may have been pretrained on, unlabelled; they are never in the background).
- Validation (``carve``): the verification speakers are split in seeded halves, validation and test (with 2-3
  speakers, each speaker's clips are halved instead: the halves then share speakers). The background is a
  seeded sample of at most ``BACKGROUND`` training clips; its speaker labels are never read.
- Trials, on each half: every same-speaker pair of clips (a seeded sample of ``eval.verify_trials`` when there
  are more) and an equal number of seeded different-speaker pairs (fewer only when fewer exist). The same
  trials score every encoder.
- Protocol ``cosine``: the cosine similarity of the two clips' pooled features, after a score normalization
  chosen on validation among ``none``, ``center`` (the background's mean subtracted) and ``standardize`` (and
  divided by its standard deviation per dimension); ties go to the simpler. No label fractions apply: rows
  carry ``labels`` 1.0 (nothing is trained; the trials read all of the verification set's speaker labels).
- Baselines: the random-init encoder and MFCC statistics (``evaluate/mfcc.py``), scored the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.errors import UserError
from selfsup.evaluate.speech_data import audio_folder, concat, speaker_halves, speakers_of
from selfsup.evaluate.tasks import Carve, GroupRows, group_sizes
from selfsup.registry import TASKS

BACKGROUND = 1000  # training clips whose features give the normalization statistics (a seeded sample)
VERIFY_SHARE = 0.2  # an audio folder's speakers kept for verification (as synth-speech's)
NORMS = ("none", "center", "standardize")
_ENUMERATE = 5_000_000  # pairs: up to this many, different-speaker pairs are drawn from the full list


def equal_error_rate(scores, same) -> float:
    """EER of trial ``scores`` (higher: more likely the same speaker) with ``same`` [N] (bool): the rate where
    false acceptances (different-speaker trials scored at or above the threshold) and false rejections (same-
    speaker trials below it) are equal, interpolated linearly between the thresholds at the scores. Perfect
    separation is 0, reversed 1, chance 0.5."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ValueError("EER needs same-speaker and different-speaker trials")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last trial of each group of tied scores
    frr = np.r_[1.0, 1.0 - np.cumsum(y)[last] / pos]  # thresholds from above the highest score down
    far = np.r_[0.0, np.cumsum(~y)[last] / neg]
    k = int(np.argmax(far >= frr))  # the first threshold where acceptances catch up (k >= 1: far 0 < frr 1)
    before, after = frr[k - 1] - far[k - 1], frr[k] - far[k]  # > 0, <= 0
    t = before / (before - after)
    return float(far[k - 1] + t * (far[k] - far[k - 1]))


def _same_pairs(spk: np.ndarray, rng: np.random.Generator, max_same: int) -> tuple[np.ndarray, int]:
    """Every same-speaker pair i < j of clips [P, 2] (a sample of ``max_same`` drawn from ``rng`` when there are
    more), and how many there are in all."""
    pairs = []
    for name in np.unique(spk):
        own = np.flatnonzero(spk == name)
        a, b = np.triu_indices(len(own), 1)
        pairs.append(np.stack([own[a], own[b]], 1))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    total = len(pairs)
    if total > max_same:
        pairs = pairs[np.sort(rng.choice(total, max_same, replace=False))]
    return pairs, total


def trials(speakers, seed: int, max_same: int = 20000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trial pairs (i, j, same) over clips of ``speakers`` [N]: every same-speaker pair i < j (a seeded sample of
    ``max_same`` when there are more), and as many seeded different-speaker pairs (all, when fewer exist)."""
    spk = np.asarray(speakers)
    n = len(spk)
    rng = np.random.default_rng(seed)
    same, every_same = _same_pairs(spk, rng, max_same)
    different = n * (n - 1) // 2 - every_same  # every pair of clips of two speakers
    k = min(len(same), different)
    if n * (n - 1) // 2 <= _ENUMERATE or k > different // 4:
        a, b = np.triu_indices(n, 1)
        diff = np.flatnonzero(spk[a] != spk[b])
        diff = diff[np.sort(rng.choice(len(diff), k, replace=False))]
        other = np.stack([a[diff], b[diff]], 1)
    else:  # too many to list, and plenty: draw pairs, keep new different-speaker ones
        seen: set = set()
        while len(seen) < k:
            i, j = rng.integers(0, n, 2 * k), rng.integers(0, n, 2 * k)
            for p, q in zip(np.minimum(i, j).tolist(), np.maximum(i, j).tolist()):
                if p != q and spk[p] != spk[q] and len(seen) < k:
                    seen.add((p, q))
        other = np.array(sorted(seen), dtype=np.int64).reshape(-1, 2)
    pairs = np.concatenate([same, other]).astype(np.int64)
    labels = np.r_[np.ones(len(same), bool), np.zeros(len(other), bool)]
    return pairs[:, 0], pairs[:, 1], labels


def group_trials(speakers, members: np.ndarray, seed: int, max_same: int = 20000
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Trials for one group of clips (``members``, a bool mask [N]): every same-speaker pair among its clips (a
    seeded sample of ``max_same`` when there are more), and as many seeded pairs of one of its clips with a clip of
    another speaker, of any group (impostors come from everywhere, so a group of one speaker is scored too)."""
    spk = np.asarray(speakers)
    own = np.flatnonzero(members)
    pairs = own[_same_pairs(spk[own], np.random.default_rng(seed), max_same)[0]]  # [P, 2] clips of ``members``
    i, j = pairs[:, 0], pairs[:, 1]
    rng = np.random.default_rng(seed + 1)
    a, b = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(i) and len(np.unique(spk)) > 1:
        while len(a) < len(i):  # rejection: draws of another speaker's clip
            x, y = rng.choice(own, 2 * len(i)), rng.integers(0, len(spk), 2 * len(i))
            ok = spk[x] != spk[y]
            a, b = np.r_[a, x[ok]][: len(i)], np.r_[b, y[ok]][: len(i)]
    return np.r_[i, a], np.r_[j, b], np.r_[np.ones(len(i), bool), np.zeros(len(a), bool)]


def eer_of(same, scores) -> float:
    """``equal_error_rate`` with the trial labels first (as a metric of (y_true, y_pred)); NaN without both kinds."""
    same = np.asarray(same, dtype=bool)
    return equal_error_rate(scores, same) if same.any() and not same.all() else float("nan")


def cosine_scores(feats: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    f = F.normalize(feats.float(), dim=1)
    ii, jj = torch.from_numpy(i), torch.from_numpy(j)
    return (f[ii] * f[jj]).sum(1).numpy()


@TASKS.register("verify")
class Verify:
    """Speaker verification on speakers never trained on; metric: equal error rate (lower is better)."""

    name = "verify"
    metric = "eer"
    metrics = ("eer",)
    higher_is_better = False
    protocols = ("cosine",)
    default_protocols = ("cosine",)
    features = "pooled"
    label_fractions = False  # nothing is trained on labels: rows carry labels 1.0, tables print "-"

    def splits(self, data, ds, log=print):
        """(background, verification): clips of disjoint speakers."""
        if ds.spec.kind != "audio":
            raise UserError(f"--task verify is speaker verification; data {data.name!r} is not audio "
                            "(use --task classify)")  # fmt: skip
        if data.name == "synth-speech":
            from selfsup.data import synth_speech_splits

            parts = synth_speech_splits()
            return parts["train"], parts["verify"]
        if not audio_folder(data.name):
            raise UserError(f"--task verify needs speakers held out of training; data {data.name!r} has none "
                            "(use synth-speech or an audio folder with one sub-folder per speaker)")  # fmt: skip
        everything = concat(ds.train, ds.test)
        spk = speakers_of(everything, "--task verify")
        names = np.unique(spk)
        if len(names) < 3:
            raise UserError(f"--task verify needs at least 3 speakers in {data.name} (one sub-folder each), "
                            f"found {len(names)}")  # fmt: skip
        n_verify = min(len(names) - 1, max(2, round(VERIFY_SHARE * len(names))))
        held = np.random.default_rng(0).permutation(names)[:n_verify]
        in_verify = np.isin(spk, held)
        return everything.take(np.flatnonzero(~in_verify)), everything.take(np.flatnonzero(in_verify))

    def carve(self, train, test, ev) -> Carve:
        rng = np.random.default_rng(ev.seed)
        pick = np.sort(rng.permutation(len(train))[:BACKGROUND])
        spk = speakers_of(test, "--task verify")
        val_idx, test_idx, disjoint = speaker_halves(spk, ev.seed)
        ids = np.unique(spk, return_inverse=True)[1].astype(np.int64)  # y: the verification set's speaker ids
        test = dataclasses.replace(test, y=ids)
        splits = {"pool": train.take(pick), "val": test.take(val_idx), "test": test.take(test_idx)}
        halves = "speaker-disjoint halves" if disjoint else "halves of each speaker's clips (too few speakers to part)"
        note = (f"{len(np.unique(spk))} verification speakers, {len(test)} clips in {halves}: {len(val_idx)} "
                f"validation, {len(test_idx)} test; {len(pick)} background clips of other speakers; "
                "no label fractions (tables show '-', eval.json rows carry labels 1.0)")  # fmt: skip
        return Carve(splits, {1.0: np.arange(len(pick))}, note)

    def num_outputs(self, ds) -> int:
        return 0

    def raw_features(self, split, spec) -> torch.Tensor:
        from selfsup.evaluate.mfcc import mfcc_stats

        return mfcc_stats(split.x, spec)

    def frozen(self, protocol: str, train, eval_sets: dict, num_outputs: int, ev, keep: dict | None = None
               ) -> tuple[dict, dict]:  # fmt: skip
        """``cosine``: EER of each eval set's trials, with the score normalization chosen on
        ``eval_sets["val"]`` -> ({split: EER}, {"norm": ...}); ``keep`` receives each split's normalized features
        and speaker ids."""
        if protocol != "cosine":
            raise ValueError(f"verify has no frozen protocol {protocol!r}")
        bg = train[0].float()
        mu = bg.mean(0) if len(bg) else None
        sd = bg.std(0).clamp_min(1e-6) if len(bg) > 1 else None
        norms = {"none": lambda f: f}
        if mu is not None:
            norms["center"] = lambda f: f - mu
        if sd is not None:
            norms["standardize"] = lambda f: (f - mu) / sd
        eers: dict[str, dict[str, float]] = {k: {} for k in norms}
        for split, (f, y) in eval_sets.items():
            i, j, same = trials(np.asarray(y), ev.seed, ev.verify_trials)
            if same.all() or not same.any():
                raise UserError(f"verify: the {split} half has no {'different' if same.all() else 'same'}-speaker "
                                "trials; it needs at least 2 speakers with 2 clips each")  # fmt: skip
            for name, norm in norms.items():
                eers[name][split] = equal_error_rate(cosine_scores(norm(f.float()), i, j), same)
        chosen = min(norms, key=lambda k: eers[k]["val"]) if "val" in eval_sets else "none"
        if keep is not None:
            keep.update({s: {"features": norms[chosen](f.float()), "speakers": np.asarray(y)}
                         for s, (f, y) in eval_sets.items()})  # fmt: skip
        return eers[chosen], {"norm": chosen}

    def by_group(self, outcome: dict, groups: np.ndarray, metric: str, ev) -> GroupRows:
        """EER per group: rows are trials (``group_trials`` of each group's clips: its same-speaker pairs and as
        many pairs of its clips with other speakers' clips), y_true same-speaker, y_pred the cosine score; a group
        with no same-speaker pair is too small."""
        groups = np.asarray(groups).astype(str)
        spk, f = outcome["speakers"], outcome["features"]
        parts, too_small = [], {}
        for g in np.unique(groups):
            i, j, same = group_trials(spk, groups == g, ev.seed, ev.audit_trials)
            if not same.any() or same.all():
                too_small[str(g)] = "no same-speaker pair" if not same.any() else "a single speaker in the data"
                continue
            parts.append((same, cosine_scores(f, i, j), np.full(len(same), str(g))))
        cat = lambda k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)  # noqa: E731
        return GroupRows(cat(0), cat(1), cat(2), eer_of, group_sizes(groups), too_small)


__all__ = ["BACKGROUND", "Verify", "cosine_scores", "eer_of", "equal_error_rate", "group_trials", "trials"]
