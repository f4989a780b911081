"""Replaced-token detection (ELECTRA: Clark, Luong, Le, Manning, ICLR 2020, arXiv:2003.10555).

Two networks are trained together. A small generator, a masked LM, predicts the tokens at 15% of the
positions (chosen as BERT chooses them, ``selfsup.views.masking``) and a token is sampled from its softmax
at each of those positions; the sampled sequence goes to the discriminator (the run's encoder, the one
evaluated), which says for every real token whether it was replaced. A sampled token equal to the original
counts as original, as in the paper. Sampling is not differentiated: the generator learns from its MLM loss
only. Loss = generator MLM cross-entropy + ``disc_weight`` x the discriminator's binary cross-entropy over
every non-padding token ([CLS] and [SEP] included, as the reference code's input mask).

What is built here: the discriminator is the plain ``text_transformer`` encoder plus a head (dense, GELU,
dense to one logit per token), so evaluation and export see an ordinary bidirectional encoder; the generator
is a separate stack of blocks that reads the discriminator's token and position embeddings (shared, as in
the paper) and, when narrower, projects them down to its width and its states back up; its output is BERT's
prediction head on the shared (tied) token embedding (``selfsup.methods.mlm.LMHead``). The generator and
both heads live on the method, not on the encoder, so a run's saved encoder holds the discriminator only.

Paper hyperparameters (ELECTRA-Small): discriminator 12 layers x 256-d (128-d factorized embeddings),
generator 1/4 of the discriminator's width, FFN and heads at the same depth (1/3 for Base); mask 15%
(25% for Large), lambda = 50, sampling temperature 1; Adam, lr 5e-4, batch 128 x 128 tokens, weight decay
0.01, 10,000 warm-up steps then linear decay, dropout 0.1, 1M steps. The reference code puts [MASK] at 85%
of the chosen positions and leaves the other 15% unchanged (no random tokens); so does ``mask_token_p``.

Local choices: the generator's shape defaults to the paper's (``gen_width`` 1/4, ``gen_depth`` unset: the
discriminator's depth); embeddings are not factorized (the generator shares the width-D ones);
special tokens are never sampled (the generator's target is never one, and a sampled [MASK] would give the
replacement away); AdamW with the library's warm-up + cosine schedule and no dropout, as mlm; lr 1e-3 per
256 sequences (the paper's 5e-4 at batch 128, scaled linearly) and, on a CPU, mlm's 8e-3 per 256 (1e-3 at batch 32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.base import masked_mean
from selfsup.encoders.transformer import Transformer
from selfsup.errors import UserError
from selfsup.methods.base import Output
from selfsup.methods.mlm import LMHead, check_text_encoder
from selfsup.registry import METHODS
from selfsup.views.masking import corrupt_tokens, select_tokens


@dataclass
class ElectraParams:
    mask_prob: float = 0.15  # share of ordinary tokens the generator predicts and replaces
    mask_token_p: float = 0.85  # of those, shown to the generator as [MASK] (the rest unchanged)
    disc_weight: float = 50.0  # lambda: weight of the discriminator's loss
    gen_width: float = 0.25  # generator width / discriminator width (heads and MLP scale with it)
    gen_depth: int | None = None  # generator blocks; None: the discriminator's depth
    temperature: float = 1.0  # of the generator's softmax when sampling replacements


def _init_normal(module: nn.Module) -> None:
    """The text encoder's initialization (GPT-2 / BERT): linears N(0, 0.02) with zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """The small masked LM on the discriminator's embeddings: masked ids [B, T] -> logits [M, V] at the
    M chosen positions. The encoder is referenced, not owned: its embeddings are shared, and its weights
    stay under ``encoder.`` in the method's state_dict only."""

    def __init__(self, encoder: nn.Module, vocab_size: int, width: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        dim = encoder.dim
        self.dim = width
        self.project_in = nn.Linear(dim, width) if width != dim else nn.Identity()
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.project_out = nn.Linear(width, dim) if width != dim else nn.Identity()
        _init_normal(self)
        self.head = LMHead(encoder, vocab_size)  # its own dense + norm + bias; the tied embedding is shared
        self._encoder = [encoder]

    def forward(self, ids: Tensor, chosen: Tensor, lengths: Tensor | None = None) -> Tensor:
        enc = self._encoder[0]
        T = ids.shape[1]
        e = enc.tok_embed(ids) + enc.pos_embed.weight[:T]  # [B, T, D]: the discriminator's embeddings
        if lengths is not None and bool((lengths >= T).all()):
            lengths = None  # no padding: the fast kernel path
        h = self.transformer(self.project_in(e), lengths)  # [B, T, d]
        return self.head(self.project_out(h[chosen]))  # [M, V]


def generator_shape(dim: int, depth: int, heads: int, params: ElectraParams) -> tuple[int, int, int]:
    """(width, depth, heads) of the generator for a discriminator of ``dim`` x ``depth`` with ``heads``: the
    width scaled by ``gen_width``, the heads too (at least 1, a divisor of the width), as the paper's sizes."""
    width = max(1, round(dim * params.gen_width))
    h = max(1, min(width, round(heads * params.gen_width)))
    while width % h:
        h -= 1
    return width, params.gen_depth if params.gen_depth is not None else depth, h


def sample_tokens(logits: Tensor, u: Tensor, temperature: float, banned) -> Tensor:
    """One token per row from softmax(logits / temperature), never a ``banned`` id, by inverse CDF on the
    uniform draws ``u``: logits [M, V], u [M] in [0, 1) -> ids [M]. No gradient flows through it."""
    with torch.no_grad():
        z = logits.detach().float() / temperature
        if banned:
            z[:, list(banned)] = float("-inf")
        cdf = z.softmax(-1).cumsum(-1)  # [M, V]
        target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)  # [M, 1], below the total mass
        idx = torch.searchsorted(cdf, target, right=True).squeeze(1)  # first entry above the draw
        return idx.clamp_max(logits.shape[1] - 1)


@METHODS.register("electra")
class Electra(nn.Module):
    modality = "tokens"
    tokenizer_family = "wordpiece"
    Params = ElectraParams
    # lr per 256 sequences; on a CPU mlm's (1e-3 at batch 32), not measured for electra apart
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "cpu_batch_size": 32, "cpu_lr": 8e-3}
    default_encoder = "text_transformer"

    def __init__(self, encoder: nn.Module, params: ElectraParams, spec):
        super().__init__()
        check_text_encoder("electra", encoder, causal=False)
        if spec.mask_id is None:
            raise UserError("method electra needs a tokenizer with a mask token (a wordpiece tokenizer: drop "
                            "--tokenizer or pass one trained for mlm / electra)")  # fmt: skip
        p = params
        if not 0 < p.mask_prob < 1 or not 0 <= p.mask_token_p <= 1:
            raise UserError("method.mask_prob must be in (0, 1) and method.mask_token_p in [0, 1]")
        if p.disc_weight < 0 or p.temperature <= 0:
            raise UserError("method.disc_weight must be 0 or more and method.temperature above 0")
        if not 0 < p.gen_width <= 1 or (p.gen_depth is not None and p.gen_depth < 1):
            raise UserError("method.gen_width must be in (0, 1] (the generator's share of the encoder's width) and "
                            "method.gen_depth at least 1 (or unset: the encoder's depth)")  # fmt: skip
        self.encoder, self.params, self.spec = encoder, params, spec
        blocks = encoder.transformer
        mlp_ratio = blocks.blocks[0].mlp[0].out_features / encoder.dim
        width, depth, heads = generator_shape(encoder.dim, blocks.depth, blocks.heads, p)
        self.generator = Generator(encoder, spec.vocab_size, width, depth, heads, mlp_ratio)
        self.disc_head = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.GELU(), nn.Linear(encoder.dim, 1))
        _init_normal(self.disc_head)

    def views(self, x: Tensor, generator, lengths=None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """ids [B, T] -> (generator input [B, T], chosen bool [B, T], original ids [B, T], sampling draws [B, T],
        lengths); every draw from the step's generator, so the replacements are too."""
        ids = x.long()
        p, s = self.params, self.spec
        chosen = select_tokens(ids, p.mask_prob, s.special_ids, lengths, generator)
        masked = corrupt_tokens(ids, chosen, s.mask_id, s.vocab_size, s.special_ids, generator, p.mask_token_p, 0.0)
        u = torch.rand(ids.shape, generator=generator, device=ids.device)  # [B, T]: one draw per position
        return masked, chosen, ids, u, lengths

    def replace(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        """-> (generator logits [M, V] at the chosen positions, the discriminator's input [B, T]: the originals
        with the sampled tokens at the chosen positions, replaced bool [B, T]: where a sample differs)."""
        masked, chosen, ids, u, lengths = batch
        logits = self.generator(masked, chosen, lengths)  # [M, V]
        sampled = sample_tokens(logits, u[chosen], self.params.temperature, self.spec.special_ids)  # [M]
        fake = ids.masked_scatter(chosen, sampled.to(ids.dtype))  # [B, T], filled in row-major order as ids[chosen]
        return logits, fake, fake != ids

    def forward(self, batch) -> Output:
        _, chosen, ids, _, lengths = batch
        gen_logits, fake, replaced = self.replace(batch)
        target = ids[chosen]  # [M]
        gen_loss = F.cross_entropy(gen_logits.float(), target)
        h = self.encoder.hidden(fake, lengths)  # [B, T, D]
        scored = torch.ones_like(chosen)  # [B, T]: every real token, never padding
        if lengths is not None:
            scored = torch.arange(ids.shape[1], device=ids.device)[None] < lengths.to(ids.device)[:, None]
        disc_logits = self.disc_head(h[scored]).squeeze(-1).float()  # [N]
        labels = replaced[scored].float()  # [N]
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits, labels)
        loss = gen_loss + self.params.disc_weight * disc_loss
        metrics = {"gen_acc": (gen_logits.detach().argmax(1) == target).float().mean(),
                   "disc_acc": ((disc_logits.detach() > 0).float() == labels).float().mean(),
                   "replaced": labels.mean(),  # share of the scored tokens that were replaced
                   "gen_loss": gen_loss.detach(), "disc_loss": disc_loss.detach()}  # fmt: skip
        return Output(loss, metrics, masked_mean(h, lengths).detach())
