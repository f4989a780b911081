"""Export to Hugging Face transformers (``selfsup export RUN --format hf OUT``, entry point ``selfsup.export``).

``--format hf``: a folder that Hugging Face ``transformers`` loads with ``from_pretrained(OUT)``, by
renaming weights only (q/k/v of our fused projection are split or kept fused, Linear weights transposed
where GPT-2's Conv1D wants them; no value is computed). The classes are those whose computation is ours
operation for operation:

* causal text encoders -> GPT-2 (``GPT2LMHeadModel`` / ``GPT2Model``): the text encoder is GPT-2's
  layout (pre-norm blocks, learned absolute positions from 0, fused q/k/v whose output is q | k | v with
  the heads contiguous inside each, MLP with exact GELU, final LayerNorm, tied output embedding, no
  output bias). Config: ``activation_function="gelu"`` (erf GELU; GPT-2's default ``gelu_new`` is the
  tanh approximation), ``layer_norm_epsilon=1e-6``, dropouts 0, ``n_positions`` = the run's context.
* bidirectional text encoders -> MegatronBERT (``MegatronBertForMaskedLM`` / ``MegatronBertModel``):
  the one BERT in transformers that is pre-LayerNorm (``attention.ln`` before self-attention, ``ln``
  before the MLP, a final ``encoder.ln``), has no LayerNorm on the embeddings (BERT and RoBERTa do,
  and are post-norm), and uses learned absolute positions from 0 (RoBERTa's start after the padding
  id). Its MLM head is BERT's, which is ours (dense -> GELU -> LayerNorm -> tied embedding + bias).
  It adds a token-type embedding to every input: exported as zeros, with ``type_vocab_size=2`` so that
  pairs (the tokenizer gives the second segment type 1) run too and still add nothing.
* ViT image encoders -> ``ViTModel`` (pre-norm blocks with q/k/v biases, a class token, position
  embeddings added to the class token and the patches, a final LayerNorm); our fixed sine-cosine
  position buffer becomes its (learned) ``position_embeddings`` parameter, unchanged. Exported without
  the pooler (load with ``add_pooling_layer=False``: ours has none).
* ResNets have no transformers class that computes them unchanged: ``--format hf`` is an error
  pointing at ``--format safetensors``.

Mapping, ours -> Hugging Face (``b.`` is ``transformer.blocks.{i}.``; ``D`` the width; ``W^T`` transposed):

=========================  =============================================  =================================
ours                       MegatronBERT (``bert.`` + ...)                 GPT-2 (``transformer.`` + ...)
=========================  =============================================  =================================
tok_embed.weight           embeddings.word_embeddings.weight              wte.weight
pos_embed.weight           embeddings.position_embeddings.weight          wpe.weight
(none)                     embeddings.token_type_embeddings.weight = 0    --
b.norm1                    encoder.layer.{i}.attention.ln                 h.{i}.ln_1
b.attn.qkv rows [0, D)     encoder.layer.{i}.attention.self.query         h.{i}.attn.c_attn (all rows, W^T)
b.attn.qkv rows [D, 2D)    encoder.layer.{i}.attention.self.key           (fused, as ours)
b.attn.qkv rows [2D, 3D)   encoder.layer.{i}.attention.self.value         (fused, as ours)
b.attn.proj                encoder.layer.{i}.attention.output.dense       h.{i}.attn.c_proj (W^T)
b.norm2                    encoder.layer.{i}.ln                           h.{i}.ln_2
b.mlp.0                    encoder.layer.{i}.intermediate.dense           h.{i}.mlp.c_fc (W^T)
b.mlp.2                    encoder.layer.{i}.output.dense                 h.{i}.mlp.c_proj (W^T)
transformer.norm           encoder.ln                                     ln_f
MLM head.dense             cls.predictions.transform.dense (no prefix)    --
MLM head.norm              cls.predictions.transform.LayerNorm            --
MLM head.bias              cls.predictions.bias, .decoder.bias            --
tok_embed (tied output)    cls.predictions.decoder.weight (tied)          lm_head.weight (tied)
=========================  =============================================  =================================

=========================  ==========================================================
ours (ViT)                 ViTModel (transformers 4 names, no prefix)
=========================  ==========================================================
patch_embed                embeddings.patch_embeddings.projection
cls_token                  embeddings.cls_token
pos_embed (buffer)         embeddings.position_embeddings
b.norm1                    encoder.layer.{i}.layernorm_before
b.attn.qkv rows            encoder.layer.{i}.attention.attention.{query, key, value}
b.attn.proj                encoder.layer.{i}.attention.output.dense
b.norm2                    encoder.layer.{i}.layernorm_after
b.mlp.0 / b.mlp.2          encoder.layer.{i}.intermediate.dense / output.dense
transformer.norm           layernorm
input.mean / input.std     preprocessor_config.json image_mean / image_std
=========================  ==========================================================

The ViT names are transformers 4's; transformers 5 renames them on load (its ``ViTModel`` conversion
mapping), so one file loads in both. What does not carry over as weights is written beside them: our
pooled feature (``cls`` / ``mean`` / ``last`` of ``last_hidden_state``; ViT: the mean of the patch tokens)
is in ``config.json`` under ``selfsup`` and in ``OUT/README.md``; a ViT's input normalization (inside our
encoder, outside Hugging Face's model) is ``preprocessor_config.json``'s mean and std. The MLM head comes
from the run's latest checkpoint (the method's full state); a bidirectional run without one exports the
encoder alone (``MegatronBertModel``), and ``AutoModelForMaskedLM`` would then start a new head. The
NSP / SOP pair head (BERT's pooler and a 2-way classifier) is not exported.

The tokenizer is the run's ``tokenizer.json`` as it is, loaded by ``PreTrainedTokenizerFast`` (named in
``tokenizer_config.json``, so no model-specific tokenizer rebuilds it): WordPiece runs get ``[CLS] ..
[SEP]`` from the file's own post-processor with ``add_special_tokens=True``, the ids selfsup's rows
hold; byte-level BPE adds nothing (as GPT-2's), where selfsup's evaluation rows end with
``<|endoftext|>``.

transformers is optional (``pip install 'selfsup[hf]'``) and imported only here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from selfsup import runs
from selfsup.errors import UserError
from selfsup.export import HF_MISSING, TOKENIZER, WEIGHTS, _tensors

HEAD_KEYS = ("dense.weight", "dense.bias", "norm.weight", "norm.bias", "bias")  # selfsup.methods.mlm.LMHead
HEAD_PREFIXES = ("head.", "lm_head.")  # mlm; nsp / sop

__all__ = ["write_hf"]


def _mlm_head(ckpt: Path, info: dict) -> dict[str, Tensor] | None:
    """The masked-LM head on the encoder's tied embedding (dense, norm, output bias: ``LMHead``) from the method's
    full state in the latest checkpoint: ``head.*`` (mlm) or ``lm_head.*`` (nsp / sop with their masked LM); None
    without one (ELECTRA's ``generator.head`` reads the generator's states, not the encoder's)."""
    if info["weights"] != "encoder" or info["spec"].get("causal", True):
        return None
    state = runs.load_weights(ckpt)
    for prefix in HEAD_PREFIXES:
        if all(prefix + k in state for k in HEAD_KEYS):
            return {k: state[prefix + k] for k in HEAD_KEYS}
    return None


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise UserError(HF_MISSING) from None
    return transformers


def write_hf(tmp: Path, encoder, info: dict, tokenizer: Path | None, ckpt: Path, run: Path) -> None:
    """Write the ``--format hf`` files of run ``run`` (its latest checkpoint ``ckpt``) into folder ``tmp``."""
    head = _mlm_head(ckpt, info)
    builder = info["builder"]
    if builder == "text_transformer":
        tf = _import_transformers()
        if encoder.causal:
            config, state = _gpt2(tf, encoder)
        else:
            config, state = _megatron_bert(tf, encoder, head)
        pooling = encoder.pooling
    elif builder.startswith("vit"):
        tf = _import_transformers()
        config, state = _vit(tf, encoder)
        pooling = "mean of the patch tokens (last_hidden_state[:, 1:])"
    else:
        raise UserError(f"--format hf exports transformer encoders (text_transformer, vit_*); a {builder} run has "
                        "no transformers class that computes it unchanged: use --format safetensors")  # fmt: skip
    config.selfsup = {"builder": builder, "pooling": pooling, "exported_from": str(run)}
    config.save_pretrained(str(tmp))
    save_file(_tensors(state), str(tmp / WEIGHTS), metadata={"format": "pt"})
    if tokenizer is not None:
        _write_hf_tokenizer(tmp, tokenizer, encoder.spec)
    else:
        _write_image_processor(tmp, encoder)
    (tmp / "README.md").write_text(_hf_readme(config, encoder, builder, head is not None))


def _split_qkv(prefix: str, w: Tensor, b: Tensor, names: tuple[str, str, str]) -> dict[str, Tensor]:
    out = {}
    for name, wi, bi in zip(names, w.chunk(3, dim=0), b.chunk(3, dim=0)):
        out[f"{prefix}{name}.weight"], out[f"{prefix}{name}.bias"] = wi, bi
    return out


def _linear(dst: str, src: str, s: dict[str, Tensor], transpose: bool = False) -> dict[str, Tensor]:
    w = s[f"{src}.weight"]
    return {f"{dst}.weight": w.t() if transpose else w, f"{dst}.bias": s[f"{src}.bias"]}


def _bert_layer(s: dict[str, Tensor], i: int, dst: str, norm1: str, attn: str, norm2: str) -> dict[str, Tensor]:
    """Our block ``i`` as a BERT-family layer (MegatronBERT, ViT) under ``dst``: the two pre-norms, split q/k/v under
    ``attn``, ``attention.output.dense``, ``intermediate.dense`` and ``output.dense``."""
    src = f"transformer.blocks.{i}."
    return {**_linear(dst + norm1, f"{src}norm1", s),
            **_split_qkv(dst + attn, s[f"{src}attn.qkv.weight"], s[f"{src}attn.qkv.bias"], ("query", "key", "value")),
            **_linear(f"{dst}attention.output.dense", f"{src}attn.proj", s), **_linear(dst + norm2, f"{src}norm2", s),
            **_linear(f"{dst}intermediate.dense", f"{src}mlp.0", s), **_linear(f"{dst}output.dense", f"{src}mlp.2", s)}


def _megatron_bert(tf, encoder, head):
    spec, t = encoder.spec, encoder.transformer
    hidden = t.blocks[0].mlp[0].out_features
    config = tf.MegatronBertConfig(
        vocab_size=spec.vocab_size, hidden_size=encoder.dim, num_hidden_layers=t.depth, num_attention_heads=t.heads,
        intermediate_size=hidden, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=spec.max_len, type_vocab_size=2, layer_norm_eps=1e-6, pad_token_id=spec.pad_id,
        tie_word_embeddings=True)  # fmt: skip
    config.architectures = ["MegatronBertForMaskedLM" if head is not None else "MegatronBertModel"]
    s = encoder.state_dict()
    state = {
        "bert.embeddings.word_embeddings.weight": s["tok_embed.weight"],
        "bert.embeddings.position_embeddings.weight": s["pos_embed.weight"],
        "bert.embeddings.token_type_embeddings.weight": torch.zeros(2, encoder.dim, dtype=s["tok_embed.weight"].dtype),
        "bert.encoder.ln.weight": s["transformer.norm.weight"],
        "bert.encoder.ln.bias": s["transformer.norm.bias"],
    }
    for i in range(t.depth):
        state.update(_bert_layer(s, i, f"bert.encoder.layer.{i}.", "attention.ln", "attention.self.", "ln"))
    if head is not None:
        state.update(_linear("cls.predictions.transform.dense", "dense", head))
        state.update(_linear("cls.predictions.transform.LayerNorm", "norm", head))
        state["cls.predictions.bias"] = head["bias"]
        state["cls.predictions.decoder.bias"] = head["bias"]  # transformers 4 shares it with cls.predictions.bias
    return config, state


def _gpt2(tf, encoder):
    spec, t = encoder.spec, encoder.transformer
    hidden = t.blocks[0].mlp[0].out_features
    eot = spec.eos_id if spec.eos_id is not None else spec.pad_id
    config = tf.GPT2Config(
        vocab_size=spec.vocab_size, n_positions=spec.max_len, n_embd=encoder.dim, n_layer=t.depth, n_head=t.heads,
        n_inner=hidden, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-6, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        tie_word_embeddings=True)  # fmt: skip
    config.architectures = ["GPT2LMHeadModel"]
    s = encoder.state_dict()
    state = {
        "transformer.wte.weight": s["tok_embed.weight"],
        "transformer.wpe.weight": s["pos_embed.weight"],
        "transformer.ln_f.weight": s["transformer.norm.weight"],
        "transformer.ln_f.bias": s["transformer.norm.bias"],
    }
    for i in range(t.depth):
        src, dst = f"transformer.blocks.{i}.", f"transformer.h.{i}."
        state.update(_linear(f"{dst}ln_1", f"{src}norm1", s))
        # Conv1D computes x @ W + b with W [in, out]: nn.Linear's weight transposed; the fused output is
        # q | k | v, each split into heads the same way as ours
        state.update(_linear(f"{dst}attn.c_attn", f"{src}attn.qkv", s, transpose=True))
        state.update(_linear(f"{dst}attn.c_proj", f"{src}attn.proj", s, transpose=True))
        state.update(_linear(f"{dst}ln_2", f"{src}norm2", s))
        state.update(_linear(f"{dst}mlp.c_fc", f"{src}mlp.0", s, transpose=True))
        state.update(_linear(f"{dst}mlp.c_proj", f"{src}mlp.2", s, transpose=True))
    return config, state


def _vit(tf, encoder):
    t = encoder.transformer
    config = tf.ViTConfig(
        hidden_size=encoder.dim, num_hidden_layers=t.depth, num_attention_heads=t.heads,
        intermediate_size=t.blocks[0].mlp[0].out_features, hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6, image_size=encoder.image_size,
        patch_size=encoder.patch_size, num_channels=encoder.input.mean.shape[1], qkv_bias=True)  # fmt: skip
    config.architectures = ["ViTModel"]
    s = encoder.state_dict()
    state = {
        "embeddings.cls_token": s["cls_token"],
        "embeddings.position_embeddings": s["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": s["patch_embed.weight"],
        "embeddings.patch_embeddings.projection.bias": s["patch_embed.bias"],
        "layernorm.weight": s["transformer.norm.weight"],
        "layernorm.bias": s["transformer.norm.bias"],
    }
    for i in range(t.depth):
        state.update(_bert_layer(s, i, f"encoder.layer.{i}.", "layernorm_before", "attention.attention.",
                                 "layernorm_after"))  # fmt: skip
    return config, state


SEQUENCE_TOKENIZER = "sequence_tokenizer.json"


def _write_hf_tokenizer(tmp: Path, tokenizer: Path, spec) -> None:
    if getattr(spec, "alphabet", ""):  # residues / k-mers: selfsup's own tokenizer, which tokenizers cannot express
        shutil.copyfile(tokenizer, tmp / SEQUENCE_TOKENIZER)
        return
    shutil.copyfile(tokenizer, tmp / TOKENIZER)
    vocab = json.loads(tokenizer.read_text(encoding="utf-8"))
    added = {t["id"]: t["content"] for t in vocab.get("added_tokens", [])}
    if spec.causal:
        eot = added.get(spec.eos_id, "<|endoftext|>")
        specials = {"bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot}
    else:
        names = {"pad_token": spec.pad_id, "unk_token": spec.unk_id, "cls_token": spec.cls_id,
                 "sep_token": spec.sep_id, "mask_token": spec.mask_id}  # fmt: skip
        specials = {k: added[i] for k, i in names.items() if i is not None and i in added}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": spec.max_len,
              "padding_side": "right", "truncation_side": "right", "clean_up_tokenization_spaces": False,
              "model_input_names": ["input_ids", "attention_mask"], **specials}  # fmt: skip
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def _write_image_processor(tmp: Path, encoder) -> None:
    mean = [float(v) for v in encoder.input.mean.flatten()]
    std = [float(v) for v in encoder.input.std.flatten()]
    config = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
              "size": {"height": encoder.image_size, "width": encoder.image_size}, "resample": 3,
              "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean,
              "image_std": std}  # fmt: skip
    (tmp / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


def _hf_readme(config, encoder, builder: str, has_head: bool) -> str:
    masked_mean = "(h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)"
    last = "h[torch.arange(len(h)), mask.sum(1) - 1]"
    if builder == "text_transformer" and encoder.causal:
        cls = "GPT2LMHeadModel"
        feature = {"last": last, "mean": masked_mean}[encoder.pooling]
        code = f"""from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

OUT = "path/to/this/folder"
lm = AutoModelForCausalLM.from_pretrained(OUT)  # next-token logits
model = AutoModel.from_pretrained(OUT)  # GPT2Model: hidden states
tok = AutoTokenizer.from_pretrained(OUT)
texts = ["some text", "another, longer text"]
# selfsup's evaluation rows end each text with <|endoftext|>; add it for the same features
batch = tok([t + tok.eos_token for t in texts], padding=True, return_tensors="pt")
h, mask = model(**batch).last_hidden_state, batch["attention_mask"]
features = {feature}  # selfsup's pooling: {encoder.pooling}"""
        notes = ("GPT-2's layout, renamed weights; the config sets exact (erf) GELU and LayerNorm eps 1e-6 "
                 "as selfsup's encoder.")  # fmt: skip
    elif builder == "text_transformer":
        cls = "MegatronBertForMaskedLM" if has_head else "MegatronBertModel"
        feature = {"cls": "h[:, 0]", "mean": masked_mean, "last": last}[encoder.pooling]
        code = f"""from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

OUT = "path/to/this/folder"
mlm = AutoModelForMaskedLM.from_pretrained(OUT)  # masked-token logits
model = AutoModel.from_pretrained(OUT, add_pooling_layer=False)  # hidden states (selfsup has no pooler)
tok = AutoTokenizer.from_pretrained(OUT)  # adds [CLS] ... [SEP], as selfsup's rows
batch = tok(["some text", "another, longer text"], padding=True, return_tensors="pt")
h, mask = model(**batch).last_hidden_state, batch["attention_mask"]
features = {feature}  # selfsup's pooling: {encoder.pooling}"""
        notes = ("MegatronBERT is the pre-LayerNorm BERT of transformers: the same computation as selfsup's "
                 "encoder. Its token-type embeddings are zero. " +
                 ("The MLM head is the run's." if has_head else
                  "The run has no MLM head: AutoModelForMaskedLM would start a new, random one."))  # fmt: skip
    else:
        cls = "ViTModel"
        code = """from transformers import AutoImageProcessor, AutoModel

OUT = "path/to/this/folder"
images = [...]  # PIL images, or uint8 arrays as selfsup caches them
model = AutoModel.from_pretrained(OUT, add_pooling_layer=False)  # selfsup's ViT has no pooler
processor = AutoImageProcessor.from_pretrained(OUT)  # resize, / 255, the run's mean and std
pixels = processor(images=images, return_tensors="pt")["pixel_values"]
h = model(pixel_values=pixels).last_hidden_state  # [B, 1 + patches, D], the class token first
features = h[:, 1:].mean(1)  # selfsup's pooled feature: the mean of the patch tokens"""
        notes = ("selfsup's ViT normalizes its input inside the model; here the image processor does it "
                 "(pixel_values = (image / 255 - mean) / std). The fixed sine-cosine position embedding is "
                 "stored as position_embeddings; at another resolution pass interpolate_pos_encoding=True "
                 "(bicubic, as selfsup).")  # fmt: skip
    if getattr(getattr(encoder, "spec", None), "alphabet", ""):
        notes += (f" This run reads {encoder.spec.alphabet} sequences as residue / k-mer tokens "
                  f"(k={encoder.spec.kmer}); that tokenizer is selfsup's own ({SEQUENCE_TOKENIZER}, read by "
                  "selfsup.data.seq_tokens.SeqTokenizer.from_str), which AutoTokenizer cannot load: make "
                  "input_ids with it.")  # fmt: skip
    return f"""# {builder} exported from selfsup as {cls}

Load it with Hugging Face transformers (`config.json` records selfsup's pooling under `selfsup`):

```python
import torch
{code}
```

{notes}
"""
