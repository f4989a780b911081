"""The ``ctc`` task: speech to text with a character CTC head (Graves et al. 2006) on the encoder's tokens.

- Head: a linear map of each token (the speech encoder's 4x-subsampled frames, ~25 a second) to the 29 CTC
  classes (``selfsup.data.audio.CTC_CLASSES``: 0 is the blank, 1..28 the characters of ``CHARS``), as SUPERB's
  and wav2vec 2.0's linear CTC probes; trained with the CTC loss (``zero_infinity``: an utterance with more
  characters than tokens adds nothing instead of an infinite loss).
- Protocols: ``linear`` (the encoder frozen: its tokens are extracted once, standardized with the training
  subset's statistics, and linear heads are trained with AdamW at each lr x L2 of ``eval.ctc_lrs`` x
  ``eval.ctc_weight_decays``, all in one pass over the same seeded batches, scored on validation after each of
  ``eval.ctc_epochs`` epochs, up to ``eval.ctc_max_steps`` steps; the (lr, L2, epochs) with the lowest
  validation CER is kept and scored on test)
  and ``finetune`` (encoder + head trained end to end with the fine-tuning recipe of ``evaluate/finetune.py``).
- Decoding: greedy (argmax per token, repeats collapsed, blanks dropped); nothing to choose.
- Metrics: CER (the task's metric) and WER, each a row: the edit distances summed over the split, divided by
  the reference's characters (words). An empty output scores CER 1 (every character deleted).
- Raw-input baseline: the encoder's own front end without the network: log-mel frames with each mel bin
  normalized over the utterance (``LogMel(spec, "bin")``, the CMVN of speech recognizers, whatever the encoder's
  ``norm``), 4 consecutive frames stacked into one 320-d vector per token (the encoder's token rate), under the
  same linear head.
- Data (``splits``): synth-speech's ``ctc_train`` / ``ctc_test`` (unseen speakers reading unseen sentences at
  test); an audio folder's transcribed clips (``load_audio_folder(labels="transcript")``). Validation: a seeded
  set of whole training speakers (about ``eval.val_fraction`` of the utterances), so that it is made of unseen
  speakers as test is; with a single speaker, a seeded ``val_fraction`` of the utterances. Label fractions:
  seeded, nested subsets of the remaining utterances.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data import SequenceLabels
from selfsup.data.audio import CHARS, CTC_CLASSES, transcript_text
from selfsup.data.spec import AudioSpec
from selfsup.errors import UserError
from selfsup.evaluate.features import TokenFeatures
from selfsup.evaluate.speech_data import audio_folder, speaker_validation
from selfsup.evaluate.tasks import Carve, GroupRows, group_sizes
from selfsup.registry import TASKS

STACK = 4  # log-mel frames per token of the raw-input baseline: the speech encoder's subsampling
MIN_STEPS_PER_EPOCH = 10  # a tiny label fraction still takes a few steps per "epoch"


# ----------------------------------------------------------------------------- decoding and scoring


def greedy_decode(logits: Tensor | np.ndarray, blank: int = 0) -> np.ndarray:
    """Per-token scores [T, C] -> class ids: the argmax of each token, repeats collapsed, blanks dropped."""
    best = np.asarray(logits.argmax(-1) if isinstance(logits, Tensor) else np.argmax(logits, -1)).reshape(-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    best = best[keep]
    return best[best != blank]


def edit_distance(a, b) -> int:
    """Levenshtein distance (substitutions, insertions, deletions, each 1) between two sequences of hashables
    (strings: characters; lists of words; integer arrays)."""
    if not all(isinstance(s, np.ndarray) and s.dtype.kind in "iu" for s in (a, b)):
        vocab: dict = {}
        a = [vocab.setdefault(t, len(vocab)) for t in a]
        b = [vocab.setdefault(t, len(vocab)) for t in b]
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return int(max(len(a), len(b)))
    pos = np.arange(len(b) + 1)
    prev = pos.copy()  # distances from a[:0] to every prefix of b
    for i, token in enumerate(a, 1):
        cand = np.empty(len(b) + 1, dtype=np.int64)
        cand[0] = i
        cand[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (b != token))  # deletion, substitution / match
        prev = np.minimum.accumulate(cand - pos) + pos  # insertions: d[j] = min_k<=j cand[k] + (j - k)
    return int(prev[-1])


def error_counts(hypotheses: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per utterance: character and word edit distances and the reference's characters and words (int64 [N])."""
    pairs = list(zip(hypotheses, references))
    count = lambda f: np.array([f(h, r) for h, r in pairs], dtype=np.int64).reshape(-1)  # noqa: E731
    return {"char_errors": count(edit_distance), "chars": count(lambda h, r: len(r)),
            "word_errors": count(lambda h, r: edit_distance(h.split(), r.split())),
            "words": count(lambda h, r: len(r.split()))}  # fmt: skip


def rate(errors, length) -> float:
    """Errors summed over utterances / reference units summed (NaN for no utterance)."""
    errors, length = np.asarray(errors), np.asarray(length)
    return float(errors.sum() / max(1, length.sum())) if len(errors) else float("nan")


def rates_of(counts: dict[str, np.ndarray]) -> dict[str, float]:
    return {"cer": rate(counts["char_errors"], counts["chars"]), "wer": rate(counts["word_errors"], counts["words"])}


def error_rates(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus CER and WER: edit distances summed over the pairs / the references' characters (words)."""
    return rates_of(error_counts(hypotheses, references))


def texts(y: SequenceLabels) -> list[str]:
    return [transcript_text(y[i]) for i in range(len(y))]


# ----------------------------------------------------------------------------- head and loss


class CTCHead(nn.Module):
    """A linear map of each token to the CTC classes: Features (tokens [B, T, D], lengths [B]) -> (logits
    [B, T, C], lengths [B])."""

    reads_features = True

    def __init__(self, dim: int, num_outputs: int = len(CTC_CLASSES)):
        super().__init__()
        self.proj = nn.Linear(dim, num_outputs)

    def forward(self, feats) -> tuple[Tensor, Tensor]:
        tokens = feats.tokens  # [B, T, D]
        lengths = feats.lengths if feats.lengths is not None else torch.full((tokens.shape[0],), tokens.shape[1])
        return self.proj(tokens), lengths.to(tokens.device)


def ctc_loss(logits: Tensor, lengths: Tensor, y: SequenceLabels, reduction: str = "mean") -> Tensor:
    """CTC loss of logits [B, T, C] (valid up to ``lengths``) against the transcripts ``y`` (blank 0); "mean": the
    loss per target character, averaged over the batch (torch's "mean"); "none": per utterance [B] (the same
    normalization)."""
    dev = logits.device
    logp = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
    targets = torch.from_numpy(y.values).to(dev)
    target_lengths = torch.from_numpy(y.lengths()).to(dev)
    loss = F.ctc_loss(logp, targets, lengths.to(dev).long(), target_lengths, blank=0, reduction="none",
                      zero_infinity=True)  # [B]  # fmt: skip
    loss = loss / target_lengths.clamp_min(1).float()
    return loss.mean() if reduction == "mean" else loss


# ----------------------------------------------------------------------------- frozen: linear heads on tokens


def logmel_tokens(x, spec, batch_size: int = 64) -> TokenFeatures:
    """The raw-input baseline's features: log-mel frames normalized per bin over the utterance, ``STACK``
    consecutive frames concatenated per token (zeros past the clip) -> TokenFeatures [ceil(F / STACK),
    STACK * n_mels] per clip."""
    from selfsup.encoders.speech import LogMel

    front, parts = LogMel(spec, "bin"), []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            wave, lengths = x[i : i + batch_size].batch()
            frames, n = front(wave, lengths)  # [B, F, M], [B]
            pad = (-frames.shape[1]) % STACK
            frames = F.pad(frames, (0, 0, 0, pad))
            B, T, M = frames.shape
            parts.append((frames.reshape(B, T // STACK, STACK * M), (n + STACK - 1) // STACK))
    return TokenFeatures.from_padded(parts, STACK * spec.n_mels)


def _logits(x: Tensor, weight: Tensor, bias: Tensor, groups: int) -> Tensor:
    """Tokens [B, T, D] under G linear heads stacked as one (weight [G * C, D], bias [G * C]) -> [G, B, T, C]."""
    B, T, _ = x.shape
    return F.linear(x, weight, bias).view(B, T, groups, -1).permute(2, 0, 1, 3)


def _decode_all(weight: Tensor, bias: Tensor, groups: int, feats: TokenFeatures, batch: int = 256) -> list[list[str]]:
    """Greedy transcripts of every sample under each of G linear heads (weight [G * C, D], bias [G * C])."""
    out: list[list[str]] = [[] for _ in range(groups)]
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            x, lens = feats.batch(torch.arange(i, min(len(feats), i + batch)))
            logits = _logits(x, weight, bias, groups)  # [G, B, T, C]
            for g in range(groups):
                out[g] += [transcript_text(greedy_decode(logits[g, b, : int(n)])) for b, n in enumerate(lens.tolist())]
    return out


def ctc_stops(epochs, per_epoch: int, max_steps: int | None) -> list[int]:
    """The epochs of the grid to score at, ascending: those within ``max_steps`` steps, and at least the first."""
    stops = sorted(set(int(e) for e in epochs))
    kept = [e for e in stops if max_steps is None or e * per_epoch <= max_steps]
    return kept or stops[:1]


def fit_ctc_heads(train: TokenFeatures, train_y: SequenceLabels, val: TokenFeatures, val_y: SequenceLabels, *,
                  lrs=(1e-3, 3e-3, 1e-2), weight_decays=(0.0,), epochs=(5, 10, 20), batch_size: int = 32,
                  seed: int = 0, num_outputs: int = len(CTC_CLASSES), max_steps: int | None = None,
                  device: str = "cpu") -> tuple:  # fmt: skip
    """Linear CTC heads on (standardized) token features, one per lr x weight decay, trained together on the same
    seeded batches with AdamW at a constant lr; after each of ``epochs`` epochs (an epoch: ceil(N / batch) steps,
    at least ``MIN_STEPS_PER_EPOCH``; epochs of more than ``max_steps`` steps are left out, but never the first)
    each is scored on the validation set. Returns the best (lowest validation
    CER; ties to fewer epochs, then to the grid's order) as (weight [D, C], bias [C]), what was chosen
    ({"lr", "l2", "epochs"}) and its validation error rates. The heads train on ``device``; features stay on the
    CPU and move a batch at a time."""
    from selfsup.distributed import local_device

    dev = local_device(device)
    grid = [(lr, wd) for lr in lrs for wd in weight_decays]
    g_cpu = torch.Generator().manual_seed(seed)
    D, G = train.dim, len(grid)
    heads = [nn.Linear(D, num_outputs) for _ in grid]
    for h in heads:
        with torch.no_grad():
            h.weight.copy_(torch.randn(h.weight.shape, generator=g_cpu) * 0.01)
            h.bias.zero_()
    heads = [h.to(dev) for h in heads]
    opt = torch.optim.AdamW([{"params": h.parameters(), "lr": lr, "weight_decay": wd}
                             for h, (lr, wd) in zip(heads, grid)], betas=(0.9, 0.999))  # fmt: skip
    n = len(train)
    bs = min(batch_size, n)
    per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(n / bs))
    refs = texts(val_y)
    best, order, done = None, torch.empty(0, dtype=torch.long), 0
    flush = torch.set_flush_denormal(True)  # Adam's tiny moments otherwise take the CPU's slow path
    try:
        for stop in ctc_stops(epochs, per_epoch, max_steps):
            with torch.enable_grad():
                for _ in range((stop - done) * per_epoch):
                    while len(order) < bs:
                        order = torch.cat([order, torch.randperm(n, generator=g_cpu)])
                    idx, order = order[:bs], order[bs:]
                    x, lens = (t.to(dev) for t in train.batch(idx))  # [B, T, D], [B]
                    y = train_y.take(idx.numpy())
                    weight = torch.cat([h.weight for h in heads])  # [G * C, D]: one matmul for every head
                    logits = _logits(x, weight, torch.cat([h.bias for h in heads]), G)  # [G, B, T, C]
                    tiled = SequenceLabels.from_lists([y[i] for _ in grid for i in range(len(y))])
                    losses = ctc_loss(logits.reshape(G * len(idx), *logits.shape[2:]), lens.repeat(G), tiled, "none")
                    loss = losses.view(G, -1).mean(1).sum()  # each head's mean loss; the heads share no parameter
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            done = stop
            with torch.no_grad():
                weight = torch.cat([h.weight for h in heads]).cpu()
                bias = torch.cat([h.bias for h in heads]).cpu()
            for g, hyps in enumerate(_decode_all(weight, bias, G, val)):
                rates = error_rates(hyps, refs)
                if best is None or rates["cer"] < best[2]["cer"]:
                    lr, wd = grid[g]
                    rows = slice(g * num_outputs, (g + 1) * num_outputs)
                    best = ((weight[rows].T.clone(), bias[rows].clone()), {"lr": lr, "l2": wd, "epochs": stop}, rates)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return best


# ----------------------------------------------------------------------------- the task


def _test_speakers(splits: dict) -> str:
    """' (unseen speakers)' or ' (N% of them by speakers in the pool)', where the splits name speakers."""
    pool, test = (splits[k].groups.get("speaker") for k in ("pool", "test"))
    if pool is None or test is None or not len(test):
        return ""
    seen = float(np.isin(test, pool).mean())
    return " (unseen speakers)" if seen == 0 else f" ({100 * seen:.0f}% of them by speakers in the pool)"


@TASKS.register("ctc")
class CTC:
    """Speech to text with a character CTC head; metric: character error rate (and WER rows)."""

    name = "ctc"
    metric = "cer"
    metrics = ("cer", "wer")
    higher_is_better = False
    protocols = ("linear", "bilstm", "finetune")
    default_protocols = ("linear",)
    features = "tokens"  # frozen protocols read the encoder's tokens

    def splits(self, data, ds, log=print):
        """(train, test) with transcripts: synth-speech's ctc_train / ctc_test, or an audio folder's transcribed
        clips; anything else is a one-line error."""
        if ds.spec.kind != "audio":
            raise UserError(f"--task ctc is speech to text; data {data.name!r} is not audio (use --task classify)")
        if data.name == "synth-speech":
            from selfsup.data import synth_speech_splits

            parts = synth_speech_splits()
            return parts["ctc_train"], parts["ctc_test"]
        if not audio_folder(data.name):
            raise UserError(f"--task ctc needs transcripts; data {data.name!r} has none (use synth-speech or an "
                            "audio folder with NAME.txt beside each clip or a metadata.csv)")  # fmt: skip
        from selfsup.data import load_audio_folder

        tds = load_audio_folder(data.name, strict=data.strict, labels="transcript", log=lambda m: None)  # the load
        # of the evaluation's data said what was skipped
        if tds.test is None or len(tds.test) == 0:
            raise UserError(f"{data.name} has too few transcribed clips for a test split; add transcripts")
        return tds.train, tds.test

    def carve(self, train, test, ev) -> Carve:
        pool_idx, val_idx = speaker_validation(train, ev.val_fraction, ev.seed)
        rng = np.random.default_rng(ev.seed)
        perm = rng.permutation(len(pool_idx))
        subsets = {f: np.sort(perm[: max(1, round(f * len(pool_idx)))]) for f in ev.labels}
        used = np.unique(np.concatenate(list(subsets.values())))  # the pool utterances some fraction trains on
        subsets = {f: np.searchsorted(used, idx) for f, idx in subsets.items()}  # positions within the kept pool
        splits = {"pool": train.take(pool_idx[used]), "val": train.take(val_idx),
                  "test": test.take(np.arange(len(test)))}  # fmt: skip
        note = (f"{len(pool_idx)} transcribed utterances to train on (" + ", ".join(
                    f"{100 * f:g}%: {len(subsets[f])}" for f in ev.labels) + "), "
                f"{len(val_idx)} validation (speakers not in the pool), {len(test)} test"
                + _test_speakers(splits))  # fmt: skip
        sizes = {"labelled_pool": len(pool_idx), "validation": len(val_idx), "test": len(test)}
        return Carve(splits, subsets, note, sizes)

    def num_outputs(self, ds) -> int:
        return len(CTC_CLASSES)

    def raw_features(self, split, spec) -> TokenFeatures:
        return logmel_tokens(split.x, spec)

    def frozen(self, protocol: str, train, eval_sets: dict, num_outputs: int, ev, keep: dict | None = None
               ) -> tuple[dict, dict]:  # fmt: skip
        """``linear``: CTC heads on the frozen standardized tokens, lr / L2 / epochs chosen on ``eval_sets["val"]``
        -> ({split: {"cer", "wer"}}, {"lr", "l2", "epochs"}); ``bilstm``: SUPERB's recurrent head
        (``evaluate/ctc_lstm.py``), its epochs chosen on validation; ``keep`` receives each split's
        ``error_counts``."""
        if protocol not in ("linear", "bilstm"):
            raise ValueError(f"ctc has no frozen protocol {protocol!r}")
        train_f, train_y = train
        mu = train_f.flat.mean(0)
        sd = train_f.flat.std(0).clamp_min(1e-6) if train_f.flat.shape[0] > 1 else torch.ones_like(mu)
        norm = lambda f: f.map(lambda t: (t - mu) / sd)  # noqa: E731
        val_f, val_y = eval_sets["val"]
        if protocol == "bilstm":
            from selfsup.evaluate.ctc_lstm import decode_lstm, fit_ctc_lstm

            recipe = dict(hidden=ev.ctc_lstm_hidden, layers=ev.ctc_lstm_layers, lr=ev.ctc_lstm_lr,
                          epochs=ev.ctc_lstm_epochs, batch_size=ev.ctc_lstm_batch_size, seed=ev.seed,
                          num_outputs=num_outputs, max_steps=ev.ctc_max_steps, device=getattr(self, "device", "cpu"),
                          log=getattr(self, "log", None))
            head, chosen, _ = fit_ctc_lstm(norm(train_f), train_y, norm(val_f), val_y, **recipe)
            decode = lambda f: decode_lstm(head, norm(f))  # noqa: E731
        else:
            grid = dict(lrs=ev.ctc_lrs, weight_decays=ev.ctc_weight_decays, epochs=ev.ctc_epochs,
                    batch_size=ev.ctc_batch_size, seed=ev.seed, num_outputs=num_outputs, max_steps=ev.ctc_max_steps,
                    device=getattr(self, "device", "cpu"))  # fmt: skip
            (w, b), chosen, _ = fit_ctc_heads(norm(train_f), train_y, norm(val_f), val_y, **grid)
            decode = lambda f: _decode_all(w.T, b, 1, norm(f))[0]  # noqa: E731
        scores = {}
        for split, (f, y) in eval_sets.items():
            counts = error_counts(decode(f), texts(y))
            scores[split] = rates_of(counts)
            if keep is not None:
                keep[split] = counts
        return scores, chosen

    def probe_seconds(self, splits: dict, sizes: list[int], dims: list[int], frozen: list[str], ev) -> dict:
        """Seconds the heads should take (``linear``, ``bilstm``): a few training steps, timed on random tokens of
        a batch of the pool's clip lengths (padded, with transcripts of 16 characters a second) at the widest
        feature size (the log-mel baseline's 320), times the steps of each label fraction and encoder."""
        lengths = np.asarray(splits["pool"].x.lengths)
        if not len(lengths) or not {"linear", "bilstm"} & set(frozen):
            return {}
        from selfsup.evaluate.ctc_lstm import fit_ctc_lstm

        spec, out = AudioSpec(), {}
        dim = max([d for d in dims if d > 1] + [STACK * spec.n_mels])
        for protocol in ("linear", "bilstm"):
            if protocol not in frozen:
                continue
            linear = protocol == "linear"
            bs, epochs = (ev.ctc_batch_size, ev.ctc_epochs) if linear else (ev.ctc_lstm_batch_size, ev.ctc_lstm_epochs)
            rng = np.random.default_rng(0)
            tokens = np.maximum(1, -(-rng.choice(lengths, bs) // (spec.hop * STACK)))  # [bs] tokens of each clip
            chars = np.maximum(1, (tokens * 16 * spec.hop * STACK / spec.sample_rate).astype(int))
            y = SequenceLabels.from_lists([[1 + i % (len(CTC_CLASSES) - 1) for i in range(c)] for c in chars])
            g = torch.Generator().manual_seed(0)
            feats = TokenFeatures.from_padded([(torch.randn(bs, int(tokens.max()), dim, generator=g),
                                                torch.from_numpy(tokens))], dim)  # fmt: skip
            one = (feats.take(np.arange(1)), y.take(np.arange(1)))
            for _ in range(2):  # the first steps in a process are slower: the second call is timed
                t0 = time.perf_counter()
                if linear:
                    heads = len(ev.ctc_lrs) * len(ev.ctc_weight_decays)
                    fit_ctc_heads(feats, y, *one, lrs=[1e-3] * heads, epochs=(1,), batch_size=bs)
                else:
                    fit_ctc_lstm(feats, y, *one, hidden=ev.ctc_lstm_hidden, layers=ev.ctc_lstm_layers, epochs=(1,),
                                 batch_size=bs)  # fmt: skip
            per_step = (time.perf_counter() - t0) / MIN_STEPS_PER_EPOCH
            steps = 0
            for n in sizes:
                per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(n / min(bs, n)))
                steps += max(ctc_stops(epochs, per_epoch, ev.ctc_max_steps)) * per_epoch
            out[protocol] = per_step * steps * len(dims)
        return out

    def head(self, dim: int, num_outputs: int, generator: torch.Generator | None = None) -> nn.Module:
        head = CTCHead(dim, num_outputs)
        with torch.no_grad():
            head.proj.weight.copy_(torch.randn(head.proj.weight.shape, generator=generator) * 0.01)
            head.proj.bias.zero_()
        return head

    def loss(self, outputs: tuple[Tensor, Tensor], y: SequenceLabels) -> Tensor:
        logits, lengths = outputs
        return ctc_loss(logits, lengths, y)

    def score(self, predictions: list[Tensor], y: SequenceLabels) -> dict[str, float]:
        """predictions: each utterance's logits [T_i, C] -> {"cer", "wer"} of the greedy transcripts."""
        return rates_of(self.outcome(predictions, y))

    def outcome(self, predictions: list[Tensor], y: SequenceLabels) -> dict[str, np.ndarray]:
        """Fine-tuning's logits -> each utterance's ``error_counts``."""
        return error_counts([transcript_text(greedy_decode(p)) for p in predictions], texts(y))

    def by_group(self, outcome: dict, groups: np.ndarray, metric: str, ev) -> GroupRows:
        """CER (WER) per group: one row per utterance, y_true its reference's characters (words), y_pred its edit
        distance; a group's rate is its errors summed / its reference length summed."""
        errors, length = ("char_errors", "chars") if metric == "cer" else ("word_errors", "words")
        return GroupRows(outcome[length], outcome[errors], np.asarray(groups).astype(str), _rate_of_rows,
                         group_sizes(groups))  # fmt: skip


def _rate_of_rows(length, errors) -> float:
    """``rate`` as a metric of (y_true: reference lengths, y_pred: edit distances)."""
    return rate(errors, length)


__all__ = ["CHARS", "CTC", "CTCHead", "ctc_loss", "edit_distance", "error_counts", "error_rates", "fit_ctc_heads",
           "greedy_decode", "logmel_tokens", "rate", "rates_of"]  # fmt: skip
