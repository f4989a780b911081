"""Input specs: what one sample is. Carried by a dataset, saved with a run (``encoder.json``).

Only ``data/``, ``views/`` and the encoders' front ends look inside a spec; the trainer,
evaluation and ``compare`` pass it along.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from selfsup.errors import UserError


@dataclass(frozen=True)
class ImageSpec:
    """uint8 images ``[C, size, size]``; ``mean`` / ``std`` per channel in [0, 1] units (the
    training split's statistics), used by the encoder's input normalization."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"ImageSpec: mean/std need {self.channels} values each")

    @property
    def variable_length(self) -> bool:
        return False


@dataclass(frozen=True)
class TextSpec:
    """Raw text: samples are Python strings (a numpy object array). Not trainable as it is: a run turns it
    into a ``TokenSpec`` dataset with its tokenizer (``selfsup.data.tokens``) before anything else sees it."""

    source: str  # the dataset's name or path
    num_docs: int
    kind: ClassVar[str] = "text"

    @property
    def variable_length(self) -> bool:
        return True


@dataclass(frozen=True)
class SeqSpec:
    """Raw biological sequences: samples are Python strings (a numpy object array) over ``alphabet`` ("dna",
    "rna" or "protein"; ``selfsup.data.alphabet``). Like ``TextSpec``, not trainable as it is: a run turns it into
    a ``TokenSpec`` dataset with its sequence tokenizer (``selfsup.data.seq_tokens``: residues or k-mers)."""

    source: str  # the dataset's name or path
    alphabet: str
    num_seqs: int
    kind: ClassVar[str] = "sequence"

    def __post_init__(self) -> None:
        if self.alphabet not in ("dna", "rna", "protein"):
            raise ValueError(f"SeqSpec: alphabet must be dna, rna or protein, not {self.alphabet!r}")

    @property
    def variable_length(self) -> bool:
        return True


@dataclass(frozen=True)
class TokenSpec:
    """Token ids ``int32 [max_len]`` per sample, padded with ``pad_id`` after ``lengths[i]`` tokens.

    The ids of the special tokens are those of the run's tokenizer (None where its family has none);
    ``special_ids`` lists every one of them (masking never picks them). ``causal``: a left-to-right
    family (byte-level BPE, packed rows) rather than a bidirectional one (WordPiece, ``[CLS] .. [SEP]``).
    ``tokenizer_hash`` ties token ids to the tokenizer that made them (16 hex digits of its sha256). Sequence
    tokens also carry their vocabulary's layout (``alphabet``, ``residues``, ``kmer``, ``kmer_stride``), so views
    and masking work from the spec alone."""

    vocab_size: int
    max_len: int
    pad_id: int
    cls_id: int | None = None
    sep_id: int | None = None
    mask_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    special_ids: tuple[int, ...] = ()
    causal: bool = False
    tokenizer_hash: str = ""
    # biological sequences (``selfsup.data.seq_tokens``; empty / 1 for text): the alphabet, the letter of each
    # residue token in id order from the first one after the specials, residues per k-mer token and the layout's
    # stride (1: overlapping k-mers or single residues; k: non-overlapping)
    alphabet: str = ""
    residues: str = ""
    kmer: int = 1
    kmer_stride: int = 1
    kind: ClassVar[str] = "tokens"

    def __post_init__(self) -> None:
        object.__setattr__(self, "special_ids", tuple(int(v) for v in self.special_ids))
        if self.vocab_size < 2 or self.max_len < 2:
            raise ValueError("TokenSpec: vocab_size and max_len must be at least 2")

    @property
    def variable_length(self) -> bool:
        return True


@dataclass(frozen=True)
class AudioSpec:
    """Mono waveforms at ``sample_rate`` (float32 in [-1, 1] as the model reads them; int16 PCM in the cache),
    padded after ``lengths[i]`` samples. The encoder's front end turns them into ``n_mels``-bin log-mel
    frames of ``win`` samples every ``hop`` samples (80 bins, 25 ms / 10 ms at 16 kHz)."""

    sample_rate: int = 16000
    n_mels: int = 80
    win: int = 400
    hop: int = 160
    kind: ClassVar[str] = "audio"

    def __post_init__(self) -> None:
        if self.sample_rate < 1000 or self.n_mels < 1 or not 0 < self.hop <= self.win:
            raise ValueError("AudioSpec: sample_rate >= 1000, n_mels >= 1 and 0 < hop <= win")

    @property
    def variable_length(self) -> bool:
        return True

    def frames(self, samples):
        """Frames the front end makes of ``samples`` (an int or an integer tensor/array): 1 + samples // hop
        (centred windows, as torchaudio's MelSpectrogram with ``center=True``)."""
        return 1 + samples // self.hop


SPECS: dict[str, type] = {"image": ImageSpec, "text": TextSpec, "tokens": TokenSpec, "audio": AudioSpec,
                          "sequence": SeqSpec}


def spec_to_dict(spec) -> dict:
    return {"kind": spec.kind, **{k: list(v) if isinstance(v, tuple) else v
                                  for k, v in dataclasses.asdict(spec).items()}}  # fmt: skip


def spec_from_dict(data: dict, where: str = "spec"):
    """Inverse of ``spec_to_dict``; a malformed entry is a one-line UserError naming ``where``."""
    if not isinstance(data, dict) or data.get("kind") not in SPECS:
        raise UserError(f"{where} is not a spec (kind one of {', '.join(SPECS)}); the run folder may be damaged")
    cls = SPECS[data["kind"]]
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields})
    except (TypeError, ValueError) as e:
        raise UserError(f"{where} is malformed ({e}); the run folder may be damaged") from None


__all__ = ["AudioSpec", "ImageSpec", "SPECS", "SeqSpec", "TextSpec", "TokenSpec", "random_samples", "spec_from_dict",
           "spec_to_dict"]


def random_samples(spec, n: int, generator=None):
    """``n`` random samples of the kind ``spec`` describes, as a batch the trainer would pass to ``views``:
    -> (x, lengths or None). Images: uint8 [n, C, size, size]; tokens: int32 [n, max_len] padded after
    ``lengths`` [n] (the first sample full); audio: float32 waveforms [n, 2 s] padded after ``lengths``.
    For tests and shape checks."""
    import torch

    if isinstance(spec, ImageSpec):
        x = torch.randint(0, 256, (n, spec.channels, spec.size, spec.size), dtype=torch.uint8, generator=generator)
        return x, None
    if isinstance(spec, TokenSpec):
        lengths = torch.randint(2, spec.max_len + 1, (n,), generator=generator)
        lengths[0] = spec.max_len
        low = max(spec.special_ids, default=-1) + 1  # ordinary tokens only
        x = torch.randint(low, spec.vocab_size, (n, spec.max_len), generator=generator).to(torch.int32)
        x[torch.arange(spec.max_len)[None, :] >= lengths[:, None]] = spec.pad_id
        return x, lengths
    if isinstance(spec, AudioSpec):  # two seconds of noise-like signal, padded after lengths (the first full)
        n_max = 2 * spec.sample_rate
        lengths = torch.randint(spec.sample_rate // 4, n_max + 1, (n,), generator=generator)
        lengths[0] = n_max
        x = 0.1 * torch.randn(n, n_max, generator=generator)
        x[torch.arange(n_max)[None, :] >= lengths[:, None]] = 0.0
        return x, lengths
    raise NotImplementedError(f"no random samples for {spec.kind} specs")
