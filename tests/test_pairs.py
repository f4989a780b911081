"""Segment pairs for nsp / sop (selfsup.views.pairs) checked token by token, and the two methods: their errors,
a step with and without masked LM, and a toy whose pair task is learnable."""

import pytest
import torch

from selfsup.data.spec import TokenSpec
from selfsup.encoders import build_encoder
from selfsup.errors import UserError
from selfsup.methods._pairs import PairParams
from selfsup.methods.nsp import NSP
from selfsup.methods.sop import SOP
from selfsup.views.pairs import IGNORE, make_pairs

CLS, SEP, PAD, MASK = 2, 3, 0, 4
SPECIALS = (0, 1, 2, 3, 4)
T = 16
BIG = TokenSpec(5 + 64 * T, T, PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, unk_id=1, special_ids=SPECIALS)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rows(n, seed, min_content=0, max_content=T - 2):
    """Pretraining rows ``[CLS] content [SEP] pad..`` whose every content token is unique: token 5 + i * T + t is
    row i's t-th content token, so a token tells its row and place. -> (ids int32 [n, T], lengths [n])."""
    content = torch.randint(min_content, max_content + 1, (n,), generator=gen(seed))  # [n]
    x = torch.full((n, T), PAD, dtype=torch.int32)
    for i, c in enumerate(content.tolist()):
        x[i, 0] = CLS
        x[i, 1 : 1 + c] = 5 + i * T + torch.arange(c)
        x[i, 1 + c] = SEP
    return x, content + 2


def split(row: list[int], length: int) -> tuple[list[int], list[int]]:
    """A pair row -> (first, second) after checking its frame: [CLS] first [SEP] second [SEP], then padding."""
    assert row[0] == CLS and row[length - 1] == SEP and all(t == PAD for t in row[length:])
    body = row[1 : length - 1]
    assert body.count(SEP) == 1 and not set(body) & {CLS, PAD, MASK, 1}
    m = body.index(SEP)
    first, second = body[:m], body[m + 1 :]
    assert first and second
    return first, second


def origin(tokens: list[int]) -> tuple[set[int], list[int]]:
    """Rows the tokens come from, and their places in their row's content."""
    return {(t - 5) // T for t in tokens}, [(t - 5) % T for t in tokens]


def consecutive(places: list[int]) -> bool:
    return places == list(range(places[0], places[0] + len(places)))


def truncated(a: int, b: int, budget: int) -> tuple[int, int]:
    """BERT's truncate_seq_pair on lengths: one token at a time from the longer segment (B on a tie)."""
    while a + b > budget:
        if a > b:
            a -= 1
        else:
            b -= 1
    return a, b


def test_nsp_pairs_are_the_row_split_or_its_first_part_with_another_rows_tokens():
    negatives = labelled = 0
    for seed in range(40):
        x, lengths = rows(32, seed, min_content=2, max_content=T - 3)  # fits: no truncation here
        pairs, new_len, labels = make_pairs(x, lengths, BIG, gen(100 + seed), "nsp")
        assert pairs.shape == x.shape and pairs.dtype == torch.long and (new_len <= T).all()
        assert (labels != IGNORE).all()  # every row has at least 2 content tokens
        for i, (row, n, y) in enumerate(zip(pairs.tolist(), new_len.tolist(), labels.tolist())):
            a, b = split(row, n)
            content = x[i, 1 : lengths[i] - 1].tolist()
            a_rows, a_places = origin(a)
            assert a == content[: len(a)], "A is the start of the row's own content"
            if y == 0:
                assert a + b == content and n == len(content) + 3
            else:
                b_rows, b_places = origin(b)
                assert len(b_rows) == 1 and b_rows != {i}, "B is taken from one other row"
                assert consecutive(b_places), "B is a run of that row's content"
                assert len(b) == min(len(content) - len(a), lengths[b_rows.pop()].item() - 2)
                negatives += 1
            labelled += 1
    assert abs(negatives / labelled - 0.5) < 0.04


def test_sop_pairs_are_the_row_split_in_order_or_swapped():
    swapped = labelled = 0
    for seed in range(40):
        x, lengths = rows(32, seed, min_content=2, max_content=T - 3)
        pairs, new_len, labels = make_pairs(x, lengths, BIG, gen(200 + seed), "sop")
        assert (new_len == lengths + 1).all(), "one [SEP] more, nothing cut"
        for i, (row, n, y) in enumerate(zip(pairs.tolist(), new_len.tolist(), labels.tolist())):
            first, second = split(row, n)
            content = x[i, 1 : lengths[i] - 1].tolist()
            assert sorted(first + second) == sorted(content), "the row's own tokens, each once"
            assert (second + first if y == 1 else first + second) == content
            swapped += y
            labelled += 1
    assert abs(swapped / labelled - 0.5) < 0.04


@pytest.mark.parametrize("mode", ["nsp", "sop"])
def test_full_rows_are_cut_as_truncate_seq_pair_keeping_the_junction(mode):
    x, lengths = rows(64, 1, min_content=T - 2)  # full rows: a pair needs one token more than the row has
    pairs, new_len, labels = make_pairs(x, lengths, BIG, gen(3), mode)
    assert (new_len == T).all() and (labels >= 0).all()
    for i, (row, y) in enumerate(zip(pairs.tolist(), labels.tolist())):
        first, second = split(row, T)
        a, b = (second, first) if mode == "sop" and y == 1 else (first, second)
        if mode == "nsp" and y == 1:
            continue  # B is another row's: checked above
        places = origin(a + b)[1]
        assert origin(a + b)[0] == {i} and consecutive(places), "A ends where B starts"
        k = places[len(a)]  # the split: B's first place in the content
        assert (len(a), len(b)) == truncated(k, T - 2 - k, T - 3)


def test_rows_too_short_to_split_keep_their_tokens_and_no_label():
    x, lengths = rows(8, 4, max_content=1)  # 0 or 1 content tokens
    for mode in ("nsp", "sop"):
        pairs, new_len, labels = make_pairs(x, lengths, BIG, gen(5), mode)
        assert (labels == IGNORE).all() and torch.equal(new_len, lengths) and torch.equal(pairs, x.long())


def test_rows_without_cls_sep_or_lengths_are_all_content():
    x = torch.arange(5, 5 + 4 * T).reshape(4, T)  # no [CLS] / [SEP], no padding
    pairs, new_len, labels = make_pairs(x, None, BIG, gen(6), "sop")
    assert (new_len == T).all() and (labels >= 0).all()
    for i, (row, y) in enumerate(zip(pairs.tolist(), labels.tolist())):
        first, second = split(row, T)
        a, b = (second, first) if y == 1 else (first, second)
        assert consecutive(origin(a + b)[1]) and origin(a + b)[0] == {i} and len(a + b) == T - 3


@pytest.mark.parametrize("mode", ["nsp", "sop"])
def test_the_generator_decides_the_pairing(mode):
    x, lengths = rows(32, 7, min_content=4)
    first = make_pairs(x, lengths, BIG, gen(8), mode)
    again = make_pairs(x, lengths, BIG, gen(8), mode)
    other = make_pairs(x, lengths, BIG, gen(9), mode)
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[2], other[2])
    g = gen(10)  # one generator, drawn from step after step: a new pairing each time a row is seen
    assert not torch.equal(make_pairs(x, lengths, BIG, g, mode)[0], make_pairs(x, lengths, BIG, g, mode)[0])


# --- the methods --------------------------------------------------------------------------------------------------

SMALL = TokenSpec(32, 8, PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, unk_id=1, special_ids=SPECIALS)


def tiny(spec=SMALL, **params):
    return build_encoder("text_transformer", spec, {"dim": 32, "depth": 1, "heads": 2, **params})


@pytest.mark.parametrize("cls", [NSP, SOP])
def test_bad_params_are_one_line_user_errors(cls):
    with pytest.raises(UserError, match="mlm_weight"):
        cls(tiny(), PairParams(mlm_weight=-1.0), SMALL)
    short = TokenSpec(32, 4, PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, special_ids=SPECIALS)
    with pytest.raises(UserError, match="--max-len 5"):
        cls(tiny(short), PairParams(), short)
    with pytest.raises(UserError, match="mask_prob"):
        cls(tiny(), PairParams(mask_prob=0.0), SMALL)
    with pytest.raises(UserError, match=cls.mode):
        cls(tiny(causal=True), PairParams(), SMALL)
    no_mask = TokenSpec(32, 8, PAD, cls_id=CLS, sep_id=SEP, special_ids=(0, 1, 2, 3))
    with pytest.raises(UserError, match="method.mlm=false"):
        cls(tiny(no_mask), PairParams(), no_mask)
    cls(tiny(no_mask), PairParams(mlm=False), no_mask)  # the pair task alone needs no mask token


def test_mlm_masks_the_pair_rows_but_never_their_frame():
    torch.manual_seed(0)
    method = SOP(tiny(BIG), PairParams(mask_prob=0.5), BIG)
    x, lengths = rows(64, 11, min_content=2)
    inputs, labels, chosen, pairs, new_len = method.views(x, gen(12), lengths)
    assert chosen.any() and not torch.isin(pairs[chosen], torch.tensor(SPECIALS)).any()
    frame = torch.isin(pairs, torch.tensor(SPECIALS))
    assert torch.equal(inputs[frame], pairs[frame]), "[CLS], [SEP] and padding are never replaced"
    assert torch.equal(inputs[~chosen], pairs[~chosen])
    out = method((inputs, labels, chosen, pairs, new_len))
    assert set(out.metrics) == {"sop_acc", "mlm_acc"} and out.embedding.shape == (64, 32)
    alone = SOP(tiny(BIG), PairParams(mlm=False), BIG)
    views = alone.views(x, gen(12), lengths)
    assert views[2] is None and torch.equal(views[0], views[3]) and set(alone(views).metrics) == {"sop_acc"}


def toy_rows(n):
    """Every row the same run of increasing ids, [CLS] 5 6 7 8 9 10 [SEP]: the order (sop) and the continuation
    (nsp) can be read from the tokens and their places."""
    x = torch.full((n, SMALL.max_len), SEP, dtype=torch.int32)
    x[:, 0] = CLS
    x[:, 1:-1] = 5 + torch.arange(SMALL.max_len - 2)
    return x, torch.full((n,), SMALL.max_len)


@pytest.mark.parametrize("cls, mlm", [(NSP, False), (SOP, False), (NSP, True), (SOP, True)])
def test_the_pair_task_learns_a_toy(cls, mlm):
    torch.manual_seed(0)
    method = cls(tiny(), PairParams(mlm=mlm), SMALL)
    opt = torch.optim.Adam(method.parameters(), lr=5e-3)
    g = gen(0)
    x, lengths = toy_rows(32)
    losses, accs = [], []
    for _ in range(60):
        out = method(method.views(x, g, lengths))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        accs.append(out.metrics[f"{cls.mode}_acc"].item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05
    if not mlm:  # the pair loss alone: the task itself is learnt (chance is 0.5)
        assert sum(accs[-10:]) / 10 > 0.7, accs
