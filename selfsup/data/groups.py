"""Group shares for pretraining: resample a split to chosen shares of a group attribute, or weight it so that
each value of an attribute is drawn equally often.

A split's ``groups`` maps an attribute (``speaker``, ``accent``, a CSV's ``--group-column``, a folder's
``groups.csv`` column) to one value per sample [N]. ``data.pretrain_groups`` ("ATTR=VALUE:SHARE,...") asks for a
pretraining set of the same size in which the named values make up the given shares (the values not named share
the rest in their own proportions): ``resample_indices``. ``data.balance_by`` (ATTR) asks the trainer to draw
batches with replacement, each sample weighted by one over its value's count: ``balanced_weights``.
Values are compared as strings (``--pretrain-groups`` is text); everything here is seeded.
"""

from __future__ import annotations

import numpy as np

from selfsup.data.base import Split
from selfsup.errors import UserError

FLAG = "--pretrain-groups"
EXAMPLE = "e.g. accent=en-sc:0.02 or accent=us:0.1,en-sc:0.5"
_SHOWN = 12  # values listed in an error before "... (N in all)"


def _bad(text: str, what: str) -> UserError:
    return UserError(f"{FLAG} {text!r}: {what}; write ATTR=VALUE:SHARE,... with one attribute and shares in [0, 1] "
                     f"summing to at most 1 ({EXAMPLE})")  # fmt: skip


def _share(text: str, value: str, raw: str) -> float:
    """A share as written: a fraction (0.02) or a percentage (2%)."""
    raw = raw.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise _bad(text, f"the share of {value!r} is {raw!r}, not a number") from None
    if not 0 <= share <= 1:
        raise _bad(text, f"the share of {value!r} is {raw}, outside [0, 1]")
    return share


def parse_group_shares(text: str) -> tuple[str, dict[str, float]]:
    """``accent=en-sc:0.02`` -> ("accent", {"en-sc": 0.02}); ``accent=a:0.1,b:50%`` -> ("accent", {"a": 0.1, "b": 0.5})
    (a share is a fraction or a percentage). Malformed text is a one-line UserError naming ``--pretrain-groups``,
    what is wrong and an example."""
    if not isinstance(text, str) or "=" not in text:
        raise _bad(str(text), "no ATTR= before the values")
    attr, rest = (s.strip() for s in text.split("=", 1))
    if not attr:
        raise _bad(text, "the attribute before '=' is empty")
    shares: dict[str, float] = {}
    for part in rest.split(","):
        if "=" in part:
            raise _bad(text, "it names more than one attribute (one run resamples one attribute)")
        if ":" not in part:
            raise _bad(text, f"{part.strip()!r} has no ':SHARE'")
        value, raw = part.rsplit(":", 1)
        value = value.strip()
        if not value:
            raise _bad(text, f"a value is empty before ':{raw.strip()}'")
        if value in shares:
            raise _bad(text, f"{value!r} is given twice")
        shares[value] = _share(text, value, raw)
    total = sum(shares.values())
    if total > 1 + 1e-9:
        raise _bad(text, f"the shares sum to {total:g}, more than 1")
    return attr, shares


def _listing(values) -> str:
    values = [str(v) for v in values]
    more = f", ... ({len(values)} in all)" if len(values) > _SHOWN else ""
    return ", ".join(values[:_SHOWN]) + more


def _largest_remainder(quotas: np.ndarray, size: int) -> np.ndarray:
    """Integer counts [K] summing to ``size`` from real quotas [K] that sum to ``size``: floors, then one more for
    the largest remainders (ties: the earlier value)."""
    counts = np.floor(quotas + 1e-9).astype(np.int64)
    left = size - int(counts.sum())
    if left > 0:
        order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
        counts[order[:left]] += 1
    return counts


def group_counts(values: np.ndarray, shares: dict[str, float], size: int, attr: str = "group"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(the distinct values [K] as strings, sorted; how many samples each has [K]; how many it gets [K]) for
    ``resample_indices``."""
    names, have = np.unique(np.asarray(values).astype(str), return_counts=True)
    missing = [v for v in shares if v not in set(names)]
    if missing:
        raise UserError(f"{FLAG}: {attr} has no value {missing[0]!r} in this data; its values are {_listing(names)}")
    named = np.array([n in shares for n in names])
    rest = 1.0 - sum(shares.values())
    others = int(have[~named].sum())
    if rest > 1e-9 and others == 0:
        raise UserError(f"{FLAG}: the shares of {attr} sum to {1 - rest:g} and the data has no other {attr} to fill "
                        f"the rest; make the shares sum to 1")  # fmt: skip
    p = np.array([shares[n] if m else (rest * c / others if others else 0.0) for n, m, c in zip(names, named, have)])
    return names, have, _largest_remainder(p * size, size)


def resample_indices(values: np.ndarray, shares: dict[str, float], size: int, seed: int,
                     attr: str = "group") -> np.ndarray:  # fmt: skip
    """Indices [size] into ``values`` [N] (sorted) in which each named value makes up its share of ``size`` (counts
    rounded by largest remainder, so they sum to exactly ``size``) and the values not named share the rest in
    their own proportions. A value that gets k of its m samples: k <= m, a seeded sample without replacement;
    k > m, every sample k // m times plus a seeded sample (without replacement) of k % m of them, so repeats are
    as even as they can be. Same seed -> same indices."""
    names, _, counts = group_counts(values, shares, size, attr)
    return _draw(values, names, counts, seed)


def _draw(values: np.ndarray, names: np.ndarray, counts: np.ndarray, seed: int) -> np.ndarray:
    """``counts[i]`` indices of the samples whose value is ``names[i]``, as ``resample_indices`` says, sorted."""
    as_str = np.asarray(values).astype(str)
    rng = np.random.default_rng(seed)
    parts = []
    for name, k in zip(names, counts):
        idx = np.flatnonzero(as_str == name)  # [m]
        whole, extra = divmod(int(k), len(idx))
        parts += [np.tile(idx, whole), rng.choice(idx, extra, replace=False)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def resample_split(split: Split, text: str, seed: int) -> tuple[Split, str]:
    """``split`` resampled to the shares ``text`` ("ATTR=VALUE:SHARE,...") at its own size, seeded by ``seed``, and
    one line saying what was done."""
    attr, shares = parse_group_shares(text)
    check_groups(split, attr, FLAG)
    values, size = split.groups[attr], len(split)
    names, have, counts = group_counts(values, shares, size, attr)
    idx = _draw(values, names, counts, seed)
    said = []
    for name in shares:
        i = int(np.flatnonzero(names == name)[0])
        k, m = int(counts[i]), int(have[i])
        repeats = f", each of its {m} drawn {k / m:.1f}x on average" if k > m else ""
        said.append(f"{attr}={name} at {_pct(k / size)} ({k} of {size} samples{repeats}; was {_pct(m / size)})")
    rest = len(names) - len(shares)
    tail = f"; the other {rest} {attr} values share the rest in their own proportions" if rest else ""
    return split.take(idx), "pretrain_groups: " + ", ".join(said) + tail


def balanced_weights(values: np.ndarray) -> np.ndarray:
    """Sampling weights [N] float64 summing to 1: each sample 1 / (count of its value), so every value is drawn
    equally often."""
    _, inverse, counts = np.unique(np.asarray(values).astype(str), return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse.reshape(-1)].astype(np.float64)
    return w / w.sum() if len(w) else w


def check_groups(split: Split, attr: str, flag: str) -> None:
    """A one-line UserError when ``split`` has no group ``attr`` (``flag`` names the option that asked for it)."""
    if attr in split.groups:
        if len(split.groups[attr]) != len(split):
            raise UserError(f"{flag} {attr}: the data has {len(split.groups[attr])} {attr} values for {len(split)} "
                            "samples; give every sample one")  # fmt: skip
        return
    if not split.groups:
        raise UserError(f"{flag} {attr}: this data has no groups; a CSV / TSV / JSONL takes --group-column {attr}, "
                        f"a folder a groups.csv (file,{attr}) beside its files")  # fmt: skip
    raise UserError(f"{flag} {attr}: the data has no group {attr!r}; its groups are {_listing(sorted(split.groups))}")


__all__ = ["balanced_weights", "check_groups", "group_counts", "parse_group_shares", "resample_indices",
           "resample_split"]  # fmt: skip
