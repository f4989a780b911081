"""Input specs: what one sample is. Carried by a dataset, saved with a run (``encoder.json``).

Only ``data/``, ``views/`` and the encoders' front ends look inside a spec; the trainer,
evaluation and ``compare`` pass it along. Text (``TokenSpec``) and speech (``AudioSpec``) specs
join ``SPECS`` with their modalities.
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


SPECS: dict[str, type] = {"image": ImageSpec}


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


__all__ = ["ImageSpec", "SPECS", "random_samples", "spec_from_dict", "spec_to_dict"]


def random_samples(spec, n: int, generator=None):
    """``n`` random samples of the kind ``spec`` describes, as a batch the trainer would pass to ``views``:
    -> (x, lengths or None). Images: uint8 [n, C, size, size]. For tests and shape checks."""
    import torch

    if isinstance(spec, ImageSpec):
        x = torch.randint(0, 256, (n, spec.channels, spec.size, spec.size), dtype=torch.uint8, generator=generator)
        return x, None
    raise NotImplementedError(f"no random samples for {spec.kind} specs")
