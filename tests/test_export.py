"""selfsup export: Hugging Face folders that compute what selfsup computes, and safetensors round trips.

Text runs are real (tiny) pretraining runs whose checkpoint weights are then perturbed, so that biases
and LayerNorms are not at their initial zeros and ones; image runs are written with the run-folder
functions. transformers is imported once here: it is a test dependency (``.[test]``), never skipped.
"""

import json
import random
import shutil
import sys

import numpy as np
import pytest
import torch
import transformers  # noqa: F401  (once per module: slow to import)
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from selfsup import runs
from selfsup.api import pretrain
from selfsup.cli import main
from selfsup.config import RunConfig
from selfsup.data.base import Dataset, Split
from selfsup.data.spec import ImageSpec, TextSpec
from selfsup.data.tokens import load_tokenizer, tokenize_dataset
from selfsup.encoders import build_encoder, resolve_encoder_params
from selfsup.errors import UserError
from selfsup.export import HF_MISSING, export
from selfsup.methods.mlm import LMHead

QUIET = lambda *_: None  # noqa: E731
WORDS = "the cat sat on a mat while dogs ran far away past big small red blue green houses trees and rivers".split()
MAX_LEN = 24


def texts(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(2, 40))) for _ in range(n)]


def perturb(run, seed: int = 0) -> None:
    """Add noise to every weight of the run's latest checkpoint (the method's full state)."""
    path = runs.latest_checkpoint(run) / "model.safetensors"
    g = torch.Generator().manual_seed(seed)
    state = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in load_file(str(path)).items()}
    save_file(state, str(path))


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-text")
    (root / "corpus.txt").write_text("\n".join(texts(120, 0)) + "\n")
    out = {}
    for method, vocab in (("mlm", 120), ("gpt", 300)):
        run = pretrain(data=str(root / "corpus.txt"), method=method, budget="2steps", out=str(root / method),
                       device="cpu", max_len=MAX_LEN, vocab_size=vocab, batch_size=8, seed=0, encoder__dim=32,
                       encoder__depth=2, encoder__heads=2, log=QUIET).path  # fmt: skip
        perturb(run)
        out[method] = run
    return out


def image_run(path, builder: str, params: dict, seed: int = 0):
    """A run folder (config.yaml, encoder.json, one checkpoint) around an image encoder with random weights."""
    path.mkdir(parents=True, exist_ok=True)
    spec = ImageSpec(3, 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    resolved, _ = resolve_encoder_params(builder, spec, params)
    torch.manual_seed(seed)
    enc = build_encoder(builder, spec, resolved)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    runs.save_config(path, RunConfig())
    runs.write_encoder_json(path, builder, spec, resolved)
    runs.save_checkpoint(path, 1, nn.ModuleDict({"encoder": enc}), {})
    return path


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    return image_run(tmp_path_factory.mktemp("vit"), "vit_tiny", {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4})


def hf_batch(tok, docs: list[str]):
    b = tok(docs, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


def run_readme(folder) -> dict:
    """Run the last python block of folder/README.md with OUT pointing at folder; -> its variables."""
    code = (folder / "README.md").read_text().split("```python\n")[-1].split("```")[0]
    scope: dict = {}
    exec(code.replace("path/to/this/folder", str(folder)), scope)
    return scope


def close(a, b, atol):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < atol


DOCS = ["the cat sat", "red rivers ran far away past the big green houses and trees " * 3, "a dog", "blue"]


def test_mlm_run_exports_as_megatron_bert(text_runs, tmp_path):
    run, out = text_runs["mlm"], tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "megatron-bert" and cfg["selfsup"]["pooling"] == "mean"
    assert "pooling" in (out / "README.md").read_text()

    mlm, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert type(mlm).__name__ == "MegatronBertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    base, info = AutoModel.from_pretrained(out, add_pooling_layer=False, output_loading_info=True)
    assert type(base).__name__ == "MegatronBertModel" and not info["missing_keys"]
    tok = AutoTokenizer.from_pretrained(out)

    enc = runs.load_encoder(run)
    head = LMHead(enc, enc.spec.vocab_size)
    state = load_file(str(runs.latest_checkpoint(run) / "model.safetensors"))
    head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
    ids, mask = hf_batch(tok, DOCS)
    assert mask.sum(1).min() < ids.shape[1] < MAX_LEN + 1  # padded, and the long one truncated
    lengths, valid = mask.sum(1), mask.bool()
    with torch.no_grad():
        ours = enc(ids, lengths=lengths)
        logits = head(ours.tokens)
        theirs = mlm.eval()(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        h = base.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    close(h[valid], ours.tokens[valid], 1e-4)
    close(theirs.hidden_states[-1][valid], ours.tokens[valid], 1e-4)
    close(theirs.logits[valid], logits[valid], 1e-4)
    close((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), ours.pooled, 1e-4)  # pooling mean
    readme = run_readme(out)
    ids = readme["batch"]["input_ids"]
    with torch.no_grad():
        close(readme["features"], enc(ids, lengths=readme["mask"].sum(1)).pooled, 1e-4)


def test_mlm_head_of_pair_methods_and_runs_without_one(text_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(text_runs["mlm"], run)
    path = runs.latest_checkpoint(run) / "model.safetensors"
    state = load_file(str(path))
    save_file({k.replace("head.", "lm_head.", 1) if k.startswith("head.") else k: v for k, v in state.items()},
              str(path))  # as nsp / sop name it  # fmt: skip
    export(run, tmp_path / "pairs", "hf", log=QUIET)
    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path / "pairs")
    assert torch.equal(mlm.cls.predictions.bias, state["head.bias"])
    assert torch.equal(mlm.cls.predictions.transform.dense.weight, state["head.dense.weight"])

    save_file({k: v for k, v in state.items() if not k.startswith("head.")}, str(path))
    export(run, tmp_path / "hf", "hf", log=QUIET)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["MegatronBertModel"]
    assert "no MLM head" in (tmp_path / "hf" / "README.md").read_text()
    model, info = AutoModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_gpt_run_exports_as_gpt2(text_runs, tmp_path):
    run, out = text_runs["gpt"], tmp_path / "hf"
    export(run, out, "hf", log=QUIET)
    lm, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert type(lm).__name__ == "GPT2LMHeadModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    base = AutoModel.from_pretrained(out)
    assert type(base).__name__ == "GPT2Model"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token_id == tok.pad_token_id == lm.config.eos_token_id == 0

    enc = runs.load_encoder(run)
    ids, mask = hf_batch(tok, DOCS)
    lengths, valid = mask.sum(1), mask.bool()
    with torch.no_grad():
        ours = enc(ids, lengths=lengths)
        theirs = lm.eval()(input_ids=ids, attention_mask=mask)
        h = base.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    close(h[valid], ours.tokens[valid], 1e-4)
    close(theirs.logits[valid], enc.lm_logits(ours.tokens)[valid], 1e-4)
    close(h[torch.arange(len(DOCS)), lengths - 1], ours.pooled, 1e-4)  # pooling last
    readme = run_readme(out)
    with torch.no_grad():
        close(readme["features"], enc(readme["batch"]["input_ids"], lengths=readme["mask"].sum(1)).pooled, 1e-4)


@pytest.mark.parametrize("method", ["mlm", "gpt"])
def test_hf_tokenizer_gives_the_ids_of_selfsups_rows(text_runs, tmp_path, method):
    run, out = text_runs[method], tmp_path / "hf"
    export(run, out, "hf", log=QUIET)
    tok = AutoTokenizer.from_pretrained(out)
    ours, _ = load_tokenizer(run / "tokenizer.json")
    docs = [*texts(20, 1), *DOCS]
    spec = runs.load_encoder(run).spec
    ds = Dataset("toy", TextSpec("toy", len(docs)), Split(np.array(docs, dtype=object), np.zeros(len(docs), np.int64)))
    rows = tokenize_dataset(ds, ours, spec, "eval", log=QUIET).train  # what selfsup's evaluation reads
    for doc in docs:
        assert tok(doc, add_special_tokens=False)["input_ids"] == ours.encode(doc, add_special_tokens=False).ids
    if method == "mlm":  # [CLS] first max_len - 2 tokens [SEP], padded with [PAD]
        b = tok(docs, padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="np")
        assert (b["input_ids"] == rows.x).all() and (b["attention_mask"].sum(1) == rows.lengths).all()
        assert tok.cls_token_id == 2 and tok.sep_token_id == 3 and tok.mask_token_id == 4 and tok.pad_token_id == 0
    else:  # the first max_len - 1 tokens, then <|endoftext|> (appended by selfsup, not by the tokenizer)
        for doc, row, n in zip(docs, rows.x, rows.lengths):
            ids = tok(doc, truncation=True, max_length=MAX_LEN - 1)["input_ids"] + [tok.eos_token_id]
            assert row[:n].tolist() == ids
            if n < MAX_LEN:  # not truncated: the README's way of adding <|endoftext|> gives the same row
                assert tok(doc + tok.eos_token)["input_ids"] == ids


def test_vit_run_exports_as_vit_model(vit_run, tmp_path):
    out = tmp_path / "hf"
    export(vit_run, out, "hf", log=QUIET)
    model, info = AutoModel.from_pretrained(out, add_pooling_layer=False, output_loading_info=True)
    assert type(model).__name__ == "ViTModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = AutoImageProcessor.from_pretrained(out)
    enc = runs.load_encoder(vit_run)
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    pixels = processor(images=[xi.numpy() for xi in x], return_tensors="pt")["pixel_values"]
    close(pixels, enc.input(x), 1e-5)
    with torch.no_grad():
        h = model.eval()(pixel_values=pixels).last_hidden_state
        close(h, enc.forward_features(x), 1e-4)
        close(h[:, 1:].mean(1), enc(x).pooled, 1e-4)


def test_safetensors_round_trip_text_and_images(text_runs, vit_run, tmp_path):
    res_run = image_run(tmp_path / "resnet", "resnet18", {"width": 4})
    for name, run in (("mlm", text_runs["mlm"]), ("vit", vit_run), ("resnet", res_run)):
        out = tmp_path / f"st-{name}"
        assert main(["export", str(run), str(out), "--format", "safetensors"]) == 0
        assert (out / "model.safetensors").is_file() and (out / "encoder.json").is_file()
        assert "load_state_dict" in (out / "README.md").read_text()
        assert (out / "tokenizer.json").is_file() == (name == "mlm")
        want, got = runs.load_encoder(run), runs.load_encoder(out)  # an export loads as a run does
        if name == "mlm":
            x = torch.randint(5, want.spec.vocab_size, (3, MAX_LEN))
            lengths = torch.tensor([MAX_LEN, 7, 2])
            a, b = want(x, lengths=lengths).pooled, got(x, lengths=lengths).pooled
        else:
            x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
            a, b = want.embed(x), got.embed(x)
        close(a, b, 1e-6)
        assert run_readme(out)["features"].shape[1] == want.dim
    assert (tmp_path / "st-mlm" / "tokenizer.json").read_bytes() == (text_runs["mlm"] / "tokenizer.json").read_bytes()
    with pytest.raises(UserError, match="--format safetensors"):
        export(res_run, tmp_path / "res-hf", "hf", log=QUIET)
    assert not (tmp_path / "res-hf").exists()


def test_errors_are_one_line_with_exit_2(text_runs, tmp_path, capsys):
    run = text_runs["gpt"]

    def error(*argv) -> str:
        assert main(["export", *map(str, argv)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("selfsup: error:") and err.count("\n") == 1
        return err

    assert "not a run folder" in error(tmp_path / "nope", tmp_path / "o1")
    assert "unknown export format 'onnx'" in error(run, tmp_path / "o2", "--format", "onnx")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    assert "not empty" in error(run, full, "--format", "hf")
    assert main(["export", str(run), str(full), "--format", "hf", "--force"]) == 0
    assert (full / "keep.txt").is_file() and (full / "config.json").is_file()
    assert "run folder" in error(run, run / "sub")


def test_missing_transformers_is_a_user_error(text_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(UserError) as e:
        export(text_runs["mlm"], tmp_path / "o", "hf", log=QUIET)
    assert str(e.value) == HF_MISSING
    export(text_runs["mlm"], tmp_path / "st", "safetensors", log=QUIET)  # needs no transformers
