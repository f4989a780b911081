"""ELECTRA's replaced-token detection: labels, padding, the generator kept out of the encoder, shared
embeddings, gradients to both networks, and a short learning check."""

import pytest
import torch

from selfsup.data.spec import TokenSpec, random_samples
from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.methods.electra import Electra, ElectraParams, generator_shape, sample_tokens

SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def spec(vocab=64, max_len=16):
    return TokenSpec(vocab, max_len, 0, cls_id=2, sep_id=3, mask_id=4, unk_id=1, special_ids=SPECIALS)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make(s, seed=0, **params):
    torch.manual_seed(seed)
    enc = build_encoder("text_transformer", s, {"dim": 32, "depth": 2, "heads": 2})
    return Electra(enc, ElectraParams(**params), s)


def rows(s, n, seed=0):
    """[CLS] ordinary tokens [SEP] then padding, as the wordpiece layout."""
    x, lengths = random_samples(s, n, gen(seed))
    x = x.long().clamp_min(5)  # ordinary tokens
    x[:, 0] = 2
    x[torch.arange(n), lengths - 1] = 3
    x[torch.arange(s.max_len)[None] >= lengths[:, None]] = 0
    return x, lengths


def test_replaced_is_exactly_where_the_sample_differs_from_the_original():
    s = spec(vocab=8)  # 3 ordinary tokens: samples often equal the original
    m = make(s, gen_width=1.0, temperature=3.0)
    x, lengths = rows(s, 64)
    batch = m.views(x, gen(1), lengths)
    masked, chosen, ids, _, _ = batch
    with torch.no_grad():
        _, fake, replaced = m.replace(batch)
    assert torch.equal(fake[~chosen], ids[~chosen]), "only the chosen positions are resampled"
    assert torch.equal(replaced, chosen & (fake != ids))
    same = chosen & (fake == ids)
    assert same.any() and replaced.any(), "both cases occur, so the check above is not vacuous"
    assert not replaced[same].any(), "a sample equal to the original counts as original"
    assert not torch.isin(fake[chosen], torch.tensor(SPECIALS)).any(), "special tokens are never sampled"
    assert (masked[chosen] == 4).any() and (masked[chosen] != 4).any(), "85% [MASK], the rest unchanged"


def test_sampling_follows_the_softmax_and_the_draws():
    logits = torch.tensor([[0.0, 0.0, 2.0, 0.0]]).repeat(4000, 1)
    u = torch.rand(4000, generator=gen(0))
    ids = sample_tokens(logits, u, 1.0, banned=(0,))
    p = torch.tensor([0.0, 1.0, 7.389, 1.0]) / 9.389
    share = torch.bincount(ids, minlength=4).float() / 4000
    assert torch.allclose(share, p, atol=0.03), share
    assert torch.equal(ids, sample_tokens(logits, u, 1.0, banned=(0,))), "the same draws, the same tokens"
    assert torch.equal(sample_tokens(logits, u, 1e-4, banned=()), torch.full((4000,), 2)), "low temperature: argmax"


def test_views_and_replacements_follow_the_step_generator():
    s = spec()
    m = make(s)
    x, lengths = rows(s, 8)
    a, b, c = (m.views(x, gen(k), lengths) for k in (3, 3, 4))
    with torch.no_grad():
        fa, fb, fc = (m.replace(v)[1] for v in (a, b, c))
    assert torch.equal(fa, fb) and not torch.equal(fa, fc)


def test_padding_is_never_scored():
    s = spec()
    m = make(s)
    x, lengths = rows(s, 8, seed=2)
    assert (lengths < s.max_len).any()
    seen = []
    m.disc_head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    batch = m.views(x, gen(5), lengths)
    with torch.no_grad():
        out = m(batch)
        garbage = list(batch)
        pad = torch.arange(s.max_len)[None] >= lengths[:, None]
        garbage[2] = batch[2].masked_fill(pad, 7)  # other ids where the padding is
        garbage[0] = batch[0].masked_fill(pad, 7)
        out2 = m(tuple(garbage))
    assert seen[0] == int(lengths.sum()), "one discriminator score per real token"
    assert torch.allclose(out.loss, out2.loss, atol=1e-5), "padding content never reaches the loss"
    assert 0 < out.metrics["replaced"] < 0.3


def test_the_generator_is_not_part_of_the_saved_encoder_and_shares_its_embeddings():
    s = spec()
    m = make(s)
    enc_keys = set(m.encoder.state_dict())
    fresh = build_encoder("text_transformer", s, {"dim": 32, "depth": 2, "heads": 2})
    assert enc_keys == set(fresh.state_dict()), "the encoder is a plain text_transformer"
    gen_params = {id(p) for p in m.generator.parameters()} | {id(p) for p in m.disc_head.parameters()}
    assert not gen_params & {id(p) for p in m.encoder.parameters()}, "no generator weight inside the encoder"
    keys = set(m.state_dict())
    assert any(k.startswith("generator.transformer.blocks.") for k in keys)
    assert not any("embed" in k for k in keys if not k.startswith("encoder.")), "embeddings stored once"
    # the generator reads the encoder's embeddings: changing them changes its logits
    x, lengths = rows(s, 4)
    batch = m.views(x, gen(6), lengths)
    with torch.no_grad():
        before = m.generator(batch[0], batch[1], lengths)
        m.encoder.tok_embed.weight[5:].mul_(3.0)
        after = m.generator(batch[0], batch[1], lengths)
        m.encoder.pos_embed.weight.add_(1.0)
        moved = m.generator(batch[0], batch[1], lengths)
    assert not torch.allclose(before, after) and not torch.allclose(after, moved)


def test_generator_is_narrower_as_the_paper():
    assert generator_shape(256, 12, 4, ElectraParams()) == (64, 12, 1)  # ELECTRA-Small's generator
    assert generator_shape(768, 12, 12, ElectraParams(gen_width=1 / 3)) == (256, 12, 4)  # Base
    assert generator_shape(128, 2, 2, ElectraParams(gen_width=1.0, gen_depth=1)) == (128, 1, 2)
    m = make(spec())
    assert m.generator.dim == 8 and len(m.generator.transformer.blocks) == 2


def test_one_step_reaches_both_networks():
    s = spec()
    m = make(s)
    x, lengths = rows(s, 16, seed=3)
    out = m(m.views(x, gen(7), lengths))
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the generator's own loss alone reaches the shared embedding: the sampled ids carry no gradient
    m.zero_grad()
    batch = m.views(x, gen(7), lengths)
    logits, _, _ = m.replace(batch)
    torch.nn.functional.cross_entropy(logits, batch[2][batch[1]]).backward()
    assert m.encoder.tok_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.encoder.transformer.parameters()), "the discriminator is not involved"


def test_bad_params_are_one_line_errors():
    s = spec()
    for bad, field in (({"gen_width": 0.0}, "gen_width"), ({"temperature": 0.0}, "temperature"),
                       ({"mask_prob": 1.0}, "mask_prob"), ({"gen_depth": 0}, "gen_depth")):  # fmt: skip
        with pytest.raises(UserError, match=field):
            make(s, **bad)
    causal = TokenSpec(64, 16, 0, bos_id=0, eos_id=0, special_ids=(0,), causal=True)
    with pytest.raises(UserError, match="electra"):
        Electra(build_encoder("text_transformer", causal, {"dim": 32, "depth": 1}), ElectraParams(), causal)


def test_a_few_steps_learn():
    """Each row repeats one token: the generator learns to copy it from the context, and its loss, its accuracy
    and the total loss go down within 30 steps."""
    s = spec(vocab=32, max_len=16)
    m = make(s, gen_width=0.5)
    tok = torch.randint(5, 32, (32, 1), generator=gen(8))
    x = torch.cat([torch.full((32, 1), 2), tok.repeat(1, 14), torch.full((32, 1), 3)], 1)  # [32, 16]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    losses, gen_losses, accs = [], [], []
    g = gen(9)
    for _ in range(30):
        out = m(m.views(x, g))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        gen_losses.append(out.metrics["gen_loss"].item())
        accs.append(out.metrics["gen_acc"].item())

    def mean(v):
        return sum(v) / len(v)

    assert mean(losses[-5:]) < 0.8 * mean(losses[:5]), losses
    assert mean(gen_losses[-5:]) < mean(gen_losses[:5]) - 0.4, gen_losses
    assert mean(accs[-5:]) > mean(accs[:5]) + 0.2, accs
