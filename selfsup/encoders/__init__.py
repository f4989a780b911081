"""Backbones behind one contract: ``dim`` and ``forward(x, mask=None, lengths=None) -> Features``.

An encoder is built from ``(name, spec, params)``: ``name`` picks a registered builder, ``spec`` says
what a sample is, and ``params`` is checked against the builder's own dataclass (``builder.Params``):
an unknown field is an error naming the field and the known ones. ``resolve_encoder_params`` fills
in what is left open (sizes chosen for the device, patch size for the image size, ...) so a run's
``config.yaml`` and ``encoder.json`` hold the whole architecture.

Every module in this package registers its encoders when imported; they are all imported here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from selfsup.config import from_dict
from selfsup.encoders.base import Encoder, Features, ImageInput, masked_mean, padding_mask
from selfsup.errors import UserError
from selfsup.registry import ENCODERS

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "transformer"):
        importlib.import_module(f"{__name__}.{_m.name}")


def _check_kind(name: str, builder, spec) -> None:
    if getattr(builder, "spec_kind", None) != spec.kind:
        raise UserError(f"encoder {name} takes {builder.spec_kind} data, not {spec.kind}; "
                        f"choose an encoder for {spec.kind} data (selfsup list encoders)")  # fmt: skip


def encoder_params(name: str, params) -> object:
    """``params`` (a dict or the builder's dataclass) checked against encoder ``name``'s Params."""
    builder = ENCODERS.get(name)
    if isinstance(params, builder.Params):
        return params
    return from_dict(builder.Params, dict(params or {}), f"encoder.params ({name})")


def resolve_encoder_params(name: str, spec, params, device_type: str = "cpu") -> tuple[dict, str | None]:
    """-> (every field of the builder's Params filled in, a one-line note when a size was chosen for the device)."""
    builder = ENCODERS.get(name)
    _check_kind(name, builder, spec)
    given = encoder_params(name, params)
    resolved = given.resolve(spec, device_type, name)
    return dataclasses.asdict(resolved), given.size_note(name, device_type)


def build_encoder(name: str, spec, params=None) -> Encoder:
    """The registered encoder ``name`` for samples described by ``spec``; ``params`` as for
    ``resolve_encoder_params`` (fields left None are resolved for the CPU)."""
    builder = ENCODERS.get(name)
    _check_kind(name, builder, spec)
    resolved = encoder_params(name, params).resolve(spec, "cpu", name)
    return builder(spec, resolved)


def saved_params(name: str, params: dict) -> dict:
    """Encoder params read back from a run folder or an export: a field added after the folder was written takes
    the value that rebuilds what was trained (the builder's ``Params.BEFORE_FIELD``), not today's default."""
    builder = ENCODERS.get(name) if name in ENCODERS else None
    before = getattr(getattr(builder, "Params", None), "BEFORE_FIELD", {})
    return {**{k: v for k, v in before.items() if k not in params}, **params}


def describe_encoder(name: str, params: dict) -> str:
    """'resnet18 width 16', 'vit_tiny dim 96 depth 6 patch_size 4', 'text_transformer size tiny dim 128 depth 2
    causal': the fields that say an encoder's size and kind (a True flag by its name alone, a False one not)."""
    shown = getattr(ENCODERS.get(name).Params, "SHOWN", ()) if name in ENCODERS else ()
    words = [name]
    for k in shown:
        v = params.get(k)
        if isinstance(v, bool):
            words += [k] if v else []
        elif v is not None:
            words.append(f"{k} {v}")
    return " ".join(words)


def encoder_fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(ENCODERS.get(name).Params)}


__all__ = ["Encoder", "Features", "ImageInput", "build_encoder", "describe_encoder", "encoder_fields", "encoder_params",
           "masked_mean", "padding_mask", "resolve_encoder_params", "saved_params"]  # fmt: skip
