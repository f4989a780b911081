"""A Transformer over token ids for text and biological sequences, behind the Encoder contract.

The core's pre-norm transformer (``selfsup.encoders.transformer``) with learned token and position
embeddings, laid out as GPT-2 (Radford et al. 2019): ``h = tok_embed[x] + pos_embed[t]``, pre-norm
blocks (LayerNorm, attention with a fused q/k/v projection and an output projection, LayerNorm, MLP 4x
with GELU), a final LayerNorm. Bidirectional for masked-LM families, causal for next-token prediction
(``causal`` follows the spec's tokenizer family unless set). So that a causal run exports to Hugging
Face's ``GPT2Model`` by renaming weights, the layout, the LayerNorm epsilon (1e-6, set in the exported
config) and the exact GELU are GPT-2's with ``activation_function="gelu"``.

Sizes (``size``; ``dim`` / ``depth`` / ``heads`` override it):

* ``tiny``: 128-d x 2 blocks x 2 heads; ``mini``: 256-d x 4 x 4; ``small``: 512-d x 4 x 8 (the
  BERT-tiny / mini / small shapes of Turc et al. 2019);
* ``base``: 768-d x 12 x 12, BERT-base / GPT-2 124M.

Left unset, ``tiny`` on a CPU (a budget of minutes trains hundreds of steps, and evaluation extracts
features of 50,000 documents in minutes) and ``base`` on a GPU.

Padding: ``lengths`` [B] masks padded keys in attention, and pooling reads valid tokens only, so a
sample alone and the same sample in a padded batch have the same features. Pooling (``pooling``):
``mean`` (the default: masked LM trains every token's state and never the ``[CLS]`` one) or ``cls`` (the
first token: ``[CLS]``, BERT's choice) for bidirectional models, ``last`` (the last valid token) or ``mean``
for causal ones, where only the last token has seen the whole sample. A document longer than the context
is read as consecutive windows whose pooled features are averaged (``forward``).

Initialization as GPT-2 / BERT: embeddings and linears N(0, 0.02), zero biases, LayerNorm 1 / 0.
``lm_logits`` scores hidden states against the token embedding (tied input and output embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.data.spec import TokenSpec
from selfsup.encoders.base import Encoder, Features, masked_mean
from selfsup.encoders.transformer import Transformer
from selfsup.errors import UserError
from selfsup.registry import ENCODERS

SIZES = {"tiny": (128, 2, 2), "mini": (256, 4, 4), "small": (512, 4, 8), "base": (768, 12, 12)}  # dim, depth, heads
DEVICE_SIZE = {"cpu": "tiny", "cuda": "base"}
POOLINGS = ("cls", "mean", "last")


@dataclass
class TextTransformerParams:
    size: str | None = None  # tiny | mini | small | base; None: tiny on a CPU, base on a GPU
    dim: int | None = None  # None: the size's
    depth: int | None = None
    heads: int | None = None  # None: the size's, or dim // 64 (at least 1) for another dim
    mlp_ratio: float = 4.0
    causal: bool | None = None  # None: the spec's (the tokenizer family)
    pooling: str | None = None  # cls | mean | last; None: mean for bidirectional, last for causal

    SHOWN = ("size", "dim", "depth", "causal")  # a causal and a bidirectional network are two architectures

    def resolve(self, spec: TokenSpec, device_type: str, name: str = "text_transformer") -> TextTransformerParams:
        size = self.size or DEVICE_SIZE.get(device_type, "mini")
        if size not in SIZES:
            raise UserError(f"encoder.size={size!r} is not one of {', '.join(SIZES)}")
        s_dim, s_depth, s_heads = SIZES[size]
        dim = self.dim if self.dim is not None else s_dim
        depth = self.depth if self.depth is not None else s_depth
        heads = self.heads if self.heads is not None else (s_heads if dim == s_dim else max(1, dim // 64))
        for key, value in (("dim", dim), ("depth", depth), ("heads", heads)):
            if value < 1:
                raise UserError(f"encoder.{key}={value} must be a positive integer")
        if dim % heads:
            raise UserError(f"encoder.heads={heads} does not divide encoder.dim={dim}; "
                            f"pass --set encoder.heads=N with N a divisor of {dim}")  # fmt: skip
        causal = spec.causal if self.causal is None else bool(self.causal)
        pooling = self.pooling or ("last" if causal else "mean")
        if pooling not in POOLINGS:
            raise UserError(f"encoder.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        if causal and pooling == "cls":
            raise UserError("encoder.pooling=cls reads the first token, which a causal model computes before seeing "
                            "anything else; use last or mean")  # fmt: skip
        return TextTransformerParams(size, dim, depth, heads, self.mlp_ratio, causal, pooling)

    def size_note(self, name: str, device_type: str) -> str | None:
        if device_type == "cuda" or self.size is not None or (self.dim is not None and self.depth is not None):
            return None
        dim, depth, _ = SIZES["tiny"]
        return (f"encoder: {name} size tiny ({dim}-d x {depth} blocks) for a CPU (base is BERT-base, 768-d x 12); "
                "set --set encoder.size=tiny|mini|small|base to choose another")  # fmt: skip


class TextTransformer(Encoder):
    def __init__(self, spec: TokenSpec, dim: int = 256, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 causal: bool = False, pooling: str = "cls"):  # fmt: skip
        super().__init__()
        self.spec, self.dim, self.causal, self.pooling = spec, dim, causal, pooling
        self.max_len = spec.max_len
        self.tok_embed = nn.Embedding(spec.vocab_size, dim)
        self.pos_embed = nn.Embedding(spec.max_len, dim)
        self.transformer = Transformer(dim, depth, heads, mlp_ratio)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def hidden(self, x: Tensor, lengths: Tensor | None = None, embeds: Tensor | None = None) -> Tensor:
        """Token ids [B, T] (or input embeddings [B, T, D]) -> hidden states [B, T, D] after the final norm."""
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"{T} tokens exceed the encoder's context of {self.max_len}")
        h = self.tok_embed(x.long()) if embeds is None else embeds
        h = h + self.pos_embed.weight[:T]  # [B, T, D]
        if lengths is not None and bool((lengths >= T).all()):
            lengths = None  # no padding: the fast (causal) kernel path
        return self.transformer(h, lengths, self.causal)

    def pool(self, h: Tensor, lengths: Tensor | None) -> Tensor:
        if self.pooling == "cls":
            return h[:, 0]
        if self.pooling == "mean":
            return masked_mean(h, lengths)
        last = (lengths.to(h.device) - 1) if lengths is not None else torch.full((h.shape[0],), h.shape[1] - 1)
        return h[torch.arange(h.shape[0], device=h.device), last.to(h.device).long()]  # [B, D]

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Features:
        """x: token ids [B, T], padded after ``lengths`` [B]; ``mask`` is not taken (masked LM replaces tokens in
        its views) -> Features(tokens [B, T, D], pooled [B, D], lengths).

        T <= max_len is one window. A longer T (a multiple of max_len) is a document read as consecutive
        windows of max_len tokens, each laid out as a sample of its own (``[CLS] ... [SEP]``; causal: ``...
        eos``), every window full but the last: each window is encoded alone and ``pooled`` is the mean of
        the windows' pooled features weighted by their valid tokens (``selfsup.data.tokens`` lays evaluation
        rows out so)."""
        if mask is not None:
            raise ValueError("the text transformer takes token ids; masking is done on the ids (views)")
        if x.shape[1] > self.max_len:
            return self._windows(x, lengths)
        h = self.hidden(x, lengths)
        return Features(tokens=h, pooled=self.pool(h, lengths), lengths=lengths)

    def _windows(self, x: Tensor, lengths: Tensor | None) -> Features:
        B, T = x.shape
        L = self.max_len
        if T % L:
            raise ValueError(f"{T} tokens are neither one window of at most {L} nor a whole number of windows")
        K = T // L
        total = torch.full((B,), T, device=x.device) if lengths is None else lengths.to(x.device)
        per = (total[:, None] - L * torch.arange(K, device=x.device)[None]).clamp(0, L)  # [B, K] valid per window
        keep = (per > 0).flatten()
        keep[::K] = True  # an empty document still has its first window
        lw = per.flatten()[keep]
        width = max(1, int(lw.max())) if len(lw) else L  # trailing padding of every window cut (short sequences)
        h = self.hidden(x.reshape(B * K, L)[keep][:, :width], lw)
        f = self.pool(h, lw)  # [W, D]
        w = lw.to(f.dtype).clamp_min(1)[:, None]
        doc = torch.arange(B, device=x.device).repeat_interleave(K)[keep]
        pooled = torch.zeros(B, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, doc, f * w)
        pooled = pooled / torch.zeros(B, 1, dtype=f.dtype, device=f.device).index_add_(0, doc, w)
        tokens = h.new_zeros(B * K, L, h.shape[-1])
        tokens[keep, :width] = h
        return Features(tokens=tokens.reshape(B, T, -1), pooled=pooled, lengths=lengths)

    def lm_logits(self, h: Tensor) -> Tensor:
        """Hidden states [..., D] -> logits over the vocabulary [..., V] with the tied token embedding."""
        return h @ self.tok_embed.weight.T


def _build(spec: TokenSpec, params: TextTransformerParams) -> TextTransformer:
    return TextTransformer(spec, params.dim, params.depth, params.heads, params.mlp_ratio, params.causal,
                           params.pooling)  # fmt: skip


_build.Params, _build.spec_kind = TextTransformerParams, "tokens"
ENCODERS.register("text_transformer")(_build)
