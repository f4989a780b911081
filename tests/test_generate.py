"""``selfsup generate``: sampling from a causal run, against a manual greedy loop; stopping, the sliding window,
and one-line errors."""

import random
from pathlib import Path

import pytest
import torch
from torch import nn

import selfsup
from selfsup.cli import main
from selfsup.data.tokens import load_tokenizer
from selfsup.generate import generate_ids, next_token
from selfsup.runs import load_encoder

TINY = {"dim": 32, "depth": 1, "heads": 2}


def _corpus(path):
    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the big red house while a small bird sang".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(120)))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_root):
    """A causal (gpt) run and a bidirectional (mlm) one, two steps each on a tiny corpus."""
    root = tmp_path_factory.mktemp("generate")
    data = _corpus(root / "corpus.txt")
    common = dict(data=str(data), budget="2steps", device="cpu", max_len=16, vocab_size=300, batch_size=8,
                  encoder_params=TINY, log=lambda *a: None)  # fmt: skip
    gpt = Path(selfsup.pretrain(method="gpt", out=str(root / "gpt"), **common).path)
    mlm = Path(selfsup.pretrain(method="mlm", out=str(root / "mlm"), **common).path)
    return gpt, mlm


def manual_greedy(run, prompt, max_tokens):
    """The argmax chain written out: [eos] + prompt, the last max_len tokens each step, stop at eos."""
    enc = load_encoder(run)
    tok, _ = load_tokenizer(run / "tokenizer.json")
    eos = tok.token_to_id("<|endoftext|>")
    prompt_ids = tok.encode(prompt, add_special_tokens=False).ids
    ids, new = [eos, *prompt_ids], []
    with torch.no_grad():
        for _ in range(max_tokens):
            h = enc.hidden(torch.tensor([ids[-enc.max_len :]]))
            t = int((h[0, -1] @ enc.tok_embed.weight.T).argmax())
            if t == eos:
                break
            ids.append(t)
            new.append(t)
    return tok.decode(prompt_ids + new)


def test_same_seed_same_text_and_other_seeds_differ(runs):
    gpt, _ = runs
    a = selfsup.generate(gpt, "the cat", max_tokens=12, seed=3)
    b = selfsup.generate(gpt, "the cat", max_tokens=12, seed=3)
    assert a == b and len(a) == 1 and a[0].startswith("the cat")
    others = {selfsup.generate(gpt, "the cat", max_tokens=12, seed=s)[0] for s in range(4, 8)}
    assert len(others | {a[0]}) > 1, "sampling depends on the seed"
    two = selfsup.generate(gpt, "the cat", max_tokens=12, seed=2, num=2)
    assert two[1] == a[0], "sample i of --num uses seed + i"


def test_greedy_is_the_argmax_chain_and_top_k_1_is_greedy(runs):
    gpt, _ = runs
    for prompt in ("the dog ran to the big red house while a small", ""):  # the first outgrows the 16-token window
        want = manual_greedy(gpt, prompt, 20)
        assert selfsup.generate(gpt, prompt, max_tokens=20, temperature=0)[0] == want
        assert selfsup.generate(gpt, prompt, max_tokens=20, temperature=1.5, top_k=1, seed=9)[0] == want


class Counter(nn.Module):
    """A stand-in causal model: the next token is the last one + 1, and ``eos`` after ``stop``."""

    def __init__(self, vocab=10, max_len=4, eos=0, stop=7):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.vocab, self.max_len, self.eos, self.stop, self.windows = vocab, max_len, eos, stop, []

    def hidden(self, x):
        self.windows.append(x[0].tolist())
        return x[..., None].float()  # [1, T, 1]

    def lm_logits(self, h):
        last = int(h[0])
        nxt = self.eos if last == self.stop else (last + 1) % self.vocab
        return torch.nn.functional.one_hot(torch.tensor(nxt), self.vocab).float() * 10


def test_generation_stops_at_eos_and_slides_its_window():
    enc = Counter()
    assert generate_ids(enc, [0, 1], eos_id=0, max_tokens=50, temperature=0) == [2, 3, 4, 5, 6, 7]
    assert enc.windows[0] == [0, 1] and enc.windows[-1] == [4, 5, 6, 7], "the last max_len tokens"
    assert all(len(w) <= 4 for w in enc.windows)
    assert generate_ids(Counter(), [0, 1], eos_id=0, max_tokens=3, temperature=0) == [2, 3, 4], "max tokens"


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.tensor([0.0, 3.0, 2.9, 1.0, -1.0])
    g = torch.Generator().manual_seed(0)
    drawn = {next_token(logits, 5.0, 2, g) for _ in range(300)}
    assert drawn == {1, 2}
    drawn = {next_token(logits, 5.0, 0, g) for _ in range(300)}
    assert drawn == {0, 1, 2, 3, 4}, "top-k 0 keeps every token"


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("selfsup: error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_prints_prompt_and_continuation(runs, capsys):
    gpt, _ = runs
    assert main(["generate", str(gpt), "--prompt", "a small bird", "--max-tokens", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == selfsup.generate(gpt, "a small bird", max_tokens=5, seed=1)[0].strip()
    assert out.startswith("a small bird")


def test_errors_are_one_line_and_exit_2(runs, capsys, tmp_path):
    gpt, mlm = runs
    one_line_error(capsys, ["generate", str(mlm), "--prompt", "x"],
                   f"generate needs a causal run (method gpt); {mlm} was pretrained with mlm")  # fmt: skip
    one_line_error(capsys, ["generate", str(tmp_path), "--prompt", "x"], "is not a run folder")
    one_line_error(capsys, ["generate", str(gpt), "--temperature", "-0.5"], "--temperature")
    one_line_error(capsys, ["generate", str(gpt), "--top-k", "-1"], "--top-k")
