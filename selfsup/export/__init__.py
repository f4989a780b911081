"""Export a run's encoder for use outside selfsup: ``selfsup export RUN --format hf|safetensors OUT``.

``--format safetensors`` (every run, image or text): ``OUT/model.safetensors`` holds the encoder's own
``state_dict`` (no prefix), ``OUT/encoder.json`` the builder, spec and resolved params that rebuild it
(``load_exported(OUT)``, or ``build_encoder`` + ``load_state_dict`` as ``OUT/README.md`` shows), and
text runs add the run's ``tokenizer.json``.

``--format hf``: a folder that Hugging Face ``transformers`` loads with ``from_pretrained(OUT)``, by renaming
weights only (``selfsup.export.hf``, where the mapping is written out).

transformers is optional (``pip install 'selfsup[hf]'``) and imported only by ``--format hf``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from selfsup import runs
from selfsup.errors import UserError

FORMATS = ("hf", "safetensors")
WEIGHTS, TOKENIZER = "model.safetensors", "tokenizer.json"
HF_MISSING = "--format hf needs transformers: pip install 'selfsup[hf]'"

__all__ = ["FORMATS", "export", "load_exported"]


# ----------------------------------------------------------------------------- entry points


def export(run: str | Path, out: str | Path, format: str = "safetensors", force: bool = False, log=print) -> Path:
    """Write run ``run``'s encoder to folder ``out`` in ``format`` ("hf" or "safetensors"); -> ``out``.

    ``out`` must not exist or be empty unless ``force`` (then the exported files replace theirs; other
    files stay). Files are written to a temporary sibling folder first, so a failure leaves ``out`` as it was.
    """
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; use --format hf or --format safetensors")
    run, out = Path(run), Path(out)
    runs.load_config(run)  # "not a run folder" when there is no config.yaml
    info = runs.read_encoder_json(run)
    ckpt = runs.latest_checkpoint(run)
    if ckpt is None:
        raise UserError(f"{run} has no checkpoint yet; let `selfsup pretrain` finish or --resume it")
    _check_out(run, out, force)
    encoder = runs.load_encoder(run)
    tokenizer = run / TOKENIZER if info["spec"].get("kind") == "tokens" else None
    if tokenizer is not None and not tokenizer.is_file():
        raise UserError(f"{run} is a text run without {TOKENIZER}; the run folder is incomplete")
    tmp = out.parent / f".{out.name}.tmp-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if format == "safetensors":
            _write_safetensors(tmp, encoder, info, tokenizer, run)
        else:
            from selfsup.export.hf import write_hf

            write_hf(tmp, encoder, info, tokenizer, ckpt, run)
        _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"exported {run} ({info['builder']}) as {format} to {out}")
    return out


def load_exported(path: str | Path):
    """The encoder of a ``--format safetensors`` export (a plain nn.Module in eval mode)."""
    from selfsup.data.spec import spec_from_dict
    from selfsup.encoders import build_encoder

    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path} is not a safetensors export (no {WEIGHTS}); write one with "
                        "`selfsup export RUN --format safetensors OUT`")  # fmt: skip
    info = runs.read_encoder_json(path)
    spec = spec_from_dict(info["spec"], str(path / runs.ENCODER_JSON))
    encoder = build_encoder(info["builder"], spec, info["params"])
    try:
        encoder.load_state_dict(load_file(str(path / WEIGHTS)))
    except RuntimeError as e:
        raise UserError(f"{path / WEIGHTS} does not hold the encoder {path / runs.ENCODER_JSON} describes "
                        f"({str(e).splitlines()[0]})") from None  # fmt: skip
    return encoder.eval()


def _check_out(run: Path, out: Path, force: bool) -> None:
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise UserError(f"OUT {out} is the run folder or inside it; export to another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"OUT {out} exists and is not empty; choose another folder or pass --force to overwrite")


def _move_into(tmp: Path, out: Path) -> None:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    for f in tmp.iterdir():
        target = out / f.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(f, target)


def _tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Own, contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


# ----------------------------------------------------------------------------- --format safetensors


def _write_safetensors(tmp: Path, encoder, info: dict, tokenizer: Path | None, run: Path) -> None:
    save_file(_tensors(encoder.state_dict()), str(tmp / WEIGHTS), metadata={"format": "pt"})
    meta = {**info, "weights": "", "file": WEIGHTS, "exported_from": str(run)}
    (tmp / runs.ENCODER_JSON).write_text(json.dumps(meta, indent=1))
    if tokenizer is not None:
        shutil.copyfile(tokenizer, tmp / TOKENIZER)
    (tmp / "README.md").write_text(_safetensors_readme(info, tokenizer is not None))


def _safetensors_readme(info: dict, text: bool) -> str:
    spec = info["spec"]
    if text and spec.get("causal"):
        use = """tok = Tokenizer.from_file(f"{OUT}/tokenizer.json")
ids = tok.encode("some text").ids + [tok.token_to_id("<|endoftext|>")]  # as selfsup's evaluation rows
features = encoder(torch.tensor([ids]), lengths=torch.tensor([len(ids)])).pooled  # [1, D]"""
    elif text:
        use = """tok = Tokenizer.from_file(f"{OUT}/tokenizer.json")
ids = tok.encode("some text").ids  # [CLS] ... [SEP], as selfsup's rows
features = encoder(torch.tensor([ids]), lengths=torch.tensor([len(ids)])).pooled  # [1, D]"""
    else:
        c, n = spec.get("channels"), spec.get("size")
        use = f"""x = torch.randint(0, 256, (2, {c}, {n}, {n}), dtype=torch.uint8)  # images as selfsup caches them
features = encoder(x).pooled  # [2, D]; uint8 or [0, 1] images: the normalization is inside the encoder"""
    files = [
        "- `model.safetensors`: the encoder's `state_dict` (the module's own parameter and buffer names).",
        f"- `encoder.json`: the builder (`{info['builder']}`), the input spec and the resolved params that rebuild it.",
    ]  # fmt: skip
    if text:
        files.append("- `tokenizer.json`: the run's tokenizer (Hugging Face `tokenizers`).")
    files_text = "\n".join(files)
    tok_import = "from tokenizers import Tokenizer\n" if text else ""
    body = use.replace("\n", "\n    ")
    return f"""# selfsup encoder ({info["builder"]})

Exported by `selfsup export --format safetensors`. Files:

{files_text}

Load it with selfsup installed:

```python
from selfsup.export import load_exported

encoder = load_exported("path/to/this/folder")  # an nn.Module in eval mode
```

or, step by step, with PyTorch and safetensors:

```python
import json

import torch
from safetensors.torch import load_file
{tok_import}
from selfsup.data.spec import spec_from_dict
from selfsup.encoders import build_encoder

OUT = "path/to/this/folder"
info = json.load(open(f"{{OUT}}/encoder.json"))
encoder = build_encoder(info["builder"], spec_from_dict(info["spec"]), info["params"])
encoder.load_state_dict(load_file(f"{{OUT}}/model.safetensors"))
encoder.eval()
with torch.no_grad():
    {body}
```
"""
