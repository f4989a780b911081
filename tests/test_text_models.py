"""The text encoder, masked-LM corruption and the mlm / gpt objectives, against formulas written here."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.data.spec import TokenSpec, random_samples
from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.methods.gpt import GPT, GPTParams
from selfsup.methods.mlm import MLM, MLMParams
from selfsup.views.masking import corrupt_tokens, select_tokens, word_starts

SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
BIDI = TokenSpec(300, 24, 0, cls_id=2, sep_id=3, mask_id=4, unk_id=1, special_ids=SPECIALS)
CAUSAL = TokenSpec(300, 24, 0, bos_id=0, eos_id=0, special_ids=(0,), causal=True)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def bert_rows(n, seed=0):
    """Rows as the tokenizer lays them out: [CLS] tokens [SEP] then padding."""
    x, lengths = random_samples(BIDI, n, gen(seed))
    x = x.long()
    x[:, 0] = 2
    x[torch.arange(n), lengths - 1] = 3
    return x, lengths


@pytest.mark.parametrize("spec,pooling", [(BIDI, "cls"), (BIDI, "mean"), (CAUSAL, "last"), (CAUSAL, "mean")])
def test_a_sample_alone_and_in_a_padded_batch_has_the_same_features(spec, pooling):
    torch.manual_seed(0)
    enc = build_encoder("text_transformer", spec, {"size": "tiny", "pooling": pooling}).eval()
    x, lengths = random_samples(spec, 6, gen(1))
    with torch.no_grad():
        batch = enc(x, lengths=lengths)
        for i in range(6):
            alone = enc(x[i : i + 1, : lengths[i]], lengths=lengths[i : i + 1])
            assert torch.allclose(alone.pooled, batch.pooled[i : i + 1], atol=1e-5), i
            assert torch.allclose(alone.tokens[0], batch.tokens[i, : lengths[i]], atol=1e-5), i


@pytest.mark.parametrize("spec,pooling", [(BIDI, "cls"), (CAUSAL, "last")])
def test_a_document_of_several_windows_pools_its_windows_by_their_tokens(spec, pooling):
    """A row of K windows (every one full but the last, then padding) gives each window's features as if it were
    alone, and pooled = the windows' pooled features averaged with their valid tokens as weights."""
    torch.manual_seed(0)
    enc = build_encoder("text_transformer", spec, {"size": "tiny", "pooling": pooling}).eval()
    L, K = spec.max_len, 3
    x, last = random_samples(spec, 12, gen(6))  # 4 documents of 3 windows each
    x = x.view(4, K, L)
    n_windows = torch.tensor([1, 2, 3, 3])
    lengths = (n_windows - 1) * L + last.view(4, K)[torch.arange(4), n_windows - 1]
    x[torch.arange(4)[:, None], torch.arange(K)[None]] *= (torch.arange(K)[None] < n_windows[:, None])[..., None]
    with torch.no_grad():
        out = enc(x.reshape(4, K * L), lengths=lengths)
        for d in range(4):
            per = [L] * (int(n_windows[d]) - 1) + [int(lengths[d]) - L * (int(n_windows[d]) - 1)]
            alone = [enc(x[d, j : j + 1, : per[j]], lengths=torch.tensor([per[j]])) for j in range(len(per))]
            want = sum(a.pooled * n for a, n in zip(alone, per)) / sum(per)
            assert torch.allclose(out.pooled[d : d + 1], want, atol=1e-5), d
            for j, a in enumerate(alone):
                assert torch.allclose(out.tokens[d, j * L : j * L + per[j]], a.tokens[0], atol=1e-5), (d, j)
        one = enc(x[:1, 0], lengths=lengths[:1])  # a one-window document reads as before
        assert torch.allclose(out.pooled[:1], one.pooled, atol=1e-5)
    with pytest.raises(ValueError, match="whole number of windows"):
        enc(torch.zeros(1, L + 1, dtype=torch.long))


def test_padding_content_never_reaches_the_features():
    enc = build_encoder("text_transformer", BIDI, {"size": "tiny", "pooling": "mean"}).eval()
    x, lengths = random_samples(BIDI, 4, gen(2))
    y = x.clone()
    pad = torch.arange(BIDI.max_len)[None] >= lengths[:, None]
    y[pad] = 77  # garbage where the padding is
    with torch.no_grad():
        assert torch.allclose(enc(x, lengths=lengths).pooled, enc(y, lengths=lengths).pooled, atol=1e-6)


def test_causal_outputs_never_depend_on_later_tokens():
    enc = build_encoder("text_transformer", CAUSAL, {"size": "tiny"}).eval()
    x, _ = random_samples(CAUSAL, 2, gen(3))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % CAUSAL.vocab_size
    with torch.no_grad():
        hx, hy = enc(x).tokens, enc(y).tokens
    assert torch.allclose(hx[:, :10], hy[:, :10], atol=1e-6)
    assert not torch.allclose(hx[:, 10:], hy[:, 10:], atol=1e-4)
    bidi = build_encoder("text_transformer", BIDI, {"size": "tiny"}).eval()
    with torch.no_grad():  # the bidirectional encoder does look ahead
        assert not torch.allclose(bidi(x % 300).tokens[:, :10], bidi(y % 300).tokens[:, :10], atol=1e-4)


def test_masking_statistics_follow_bert():
    x, lengths = bert_rows(512, seed=4)
    chosen = select_tokens(x, 0.15, SPECIALS, lengths, gen(5))
    ordinary = ~torch.isin(x, torch.tensor(SPECIALS)) & (torch.arange(x.shape[1])[None] < lengths[:, None])
    assert not (chosen & ~ordinary).any()  # never a special token or padding
    share = chosen.sum() / ordinary.sum()
    assert abs(share.item() - 0.15) < 0.01
    out = corrupt_tokens(x, chosen, 4, 300, SPECIALS, gen(6))
    n = chosen.sum().item()
    masked = (out[chosen] == 4).sum().item() / n
    kept = (out[chosen] == x[chosen]).sum().item() / n
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 / 300 * 0) < 0.02  # random ids rarely hit the original
    assert torch.equal(out[~chosen], x[~chosen])  # nothing else changes
    assert (out[chosen & (out != 4) & (out != x)] > 4).all()  # random replacements are ordinary tokens


def test_masking_is_redrawn_each_time_and_follows_the_generator():
    x, lengths = bert_rows(8, seed=7)
    a = select_tokens(x, 0.15, SPECIALS, lengths, gen(1))
    b = select_tokens(x, 0.15, SPECIALS, lengths, gen(1))
    c = select_tokens(x, 0.15, SPECIALS, lengths, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_span_masking_hides_runs_of_tokens():
    x = torch.randint(5, 300, (64, 200), generator=gen(8))
    chosen = select_tokens(x, 0.15, SPECIALS, None, gen(9), span=6)
    assert abs(chosen.float().mean().item() - 0.15) < 0.04
    starts = chosen[:, 1:] & ~chosen[:, :-1]
    runs = chosen.sum().item() / max(1, starts.sum().item() + chosen[:, 0].sum().item())
    assert runs > 4  # mostly runs of ~6, not isolated tokens


def test_whole_word_masking_hides_every_piece_of_a_chosen_word():
    x, lengths = bert_rows(512, seed=12)
    continues = torch.arange(300) >= 200  # ids 200.. are "##" pieces
    starts = word_starts(x, continues, SPECIALS)
    assert starts[:, 0].all() and starts[:, 1].all()  # [CLS] and whatever follows it open a word
    chosen = select_tokens(x, 0.15, SPECIALS, lengths, gen(13), starts=starts)
    ordinary = ~torch.isin(x, torch.tensor(SPECIALS)) & (torch.arange(x.shape[1])[None] < lengths[:, None])
    assert not (chosen & ~ordinary).any()
    assert abs((chosen.sum() / ordinary.sum()).item() - 0.15) < 0.015
    piece = ordinary & ~starts  # a continuation inside a word: chosen exactly when the piece before it is
    prev = F.pad(chosen[:, :-1], (1, 0))
    assert torch.equal(chosen[piece], prev[piece])
    assert (chosen & piece).sum() > 100  # many words of several pieces were hidden whole
    plain = select_tokens(x, 0.15, SPECIALS, lengths, gen(13))
    assert not torch.equal(plain[piece], F.pad(plain[:, :-1], (1, 0))[piece])  # token masking splits words


def test_mlm_whole_word_needs_the_word_pieces():
    enc = build_encoder("text_transformer", BIDI, {"size": "tiny"})
    m = MLM(enc, MLMParams(whole_word=True), BIDI)
    x, lengths = bert_rows(4, seed=14)
    with pytest.raises(RuntimeError, match="set_word_pieces"):
        m.views(x, gen(1), lengths)
    with pytest.raises(UserError, match="tokenizer"):
        m.set_word_pieces(torch.zeros(10, dtype=torch.bool))
    m.set_word_pieces(torch.arange(300) >= 200)
    inputs, chosen, ids, _ = m.views(x, gen(1), lengths)
    assert chosen.any() and "continues" not in m.state_dict()  # the table comes from the tokenizer, not weights
    with pytest.raises(UserError, match="whole_word"):
        MLM(enc, MLMParams(whole_word=True, mask_span=3), BIDI)


def test_mlm_loss_is_cross_entropy_at_the_chosen_positions_only():
    torch.manual_seed(0)
    enc = build_encoder("text_transformer", BIDI, {"size": "tiny"})
    m = MLM(enc, MLMParams(), BIDI)
    x, lengths = bert_rows(6, seed=10)
    inputs, chosen, ids, lens = m.views(x, gen(11), lengths)
    out = m((inputs, chosen, ids, lens))
    h = enc.hidden(inputs, lens)
    logits = m.head.norm(F.gelu(m.head.dense(h))) @ enc.tok_embed.weight.T + m.head.bias  # [B, T, V]
    expected = F.cross_entropy(logits[chosen], x[chosen])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    out.loss.backward()
    assert enc.tok_embed.weight.grad is not None  # the output embedding is the input one (tied)


def test_gpt_loss_is_next_token_cross_entropy_and_ignores_padding():
    torch.manual_seed(0)
    enc = build_encoder("text_transformer", CAUSAL, {"size": "tiny"})
    m = GPT(enc, GPTParams(), CAUSAL)
    x, lengths = random_samples(CAUSAL, 4, gen(12))
    out = m(m.views(x, gen(0), lengths))
    logits = enc.lm_logits(enc.hidden(x, lengths))
    terms = [F.cross_entropy(logits[i, : lengths[i] - 1], x[i, 1 : lengths[i]].long(), reduction="sum")
             for i in range(4)]  # fmt: skip
    expected = torch.stack(terms).sum() / (lengths - 1).sum()
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_methods_refuse_the_wrong_encoder_family():
    with pytest.raises(UserError, match="bidirectional"):
        MLM(build_encoder("text_transformer", CAUSAL, {"size": "tiny"}), MLMParams(), CAUSAL)
    with pytest.raises(UserError, match="causal"):
        GPT(build_encoder("text_transformer", BIDI, {"size": "tiny"}), GPTParams(), BIDI)
    with pytest.raises(UserError, match="pooling"):
        build_encoder("text_transformer", CAUSAL, {"size": "tiny", "pooling": "cls"})


def test_random_replacements_never_draw_a_special_id_wherever_it_sits():
    from selfsup.views.masking import random_ordinary

    g = torch.Generator().manual_seed(0)
    draws = random_ordinary((20000,), 12, [11, 0, 5], g, "cpu")
    assert set(draws.tolist()) == set(range(12)) - {0, 5, 11}  # every ordinary id, no special one (GPT-2: eos last)
    same = random_ordinary((50,), 12, [0, 1, 2], torch.Generator().manual_seed(1), "cpu")
    before = torch.randint(3, 12, (50,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(same, before)  # specials first: the same draws as a plain range above them
