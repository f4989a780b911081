"""The ``ctc`` task's ``bilstm`` protocol: a recurrent CTC head on the frozen encoder's tokens.

SUPERB's speech-recognition downstream (Yang et al. 2021; s3prl's ``asr`` task) reads an upstream's frozen frame
features with a 2-layer bidirectional LSTM and a linear CTC output layer. A linear head (the ``linear`` protocol)
maps each token to a character on its own; English spelling needs the neighbouring sounds, which the recurrent
head reads from both sides. Scaled to a CPU: 2 layers of ``eval.ctc_lstm_hidden`` units a direction (SUPERB:
1024), dropout 0.2 between them, AdamW at ``eval.ctc_lstm_lr``, gradients clipped to norm 5, seeded batches of
``eval.ctc_lstm_batch_size`` utterances; scored on validation after each of ``eval.ctc_lstm_epochs`` epochs
(10, 20, 40, 80; at most ``eval.ctc_max_steps`` steps), and the epoch with the lowest validation CER is kept.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import Tensor, nn

from selfsup.data import SequenceLabels
from selfsup.data.audio import CTC_CLASSES, transcript_text
from selfsup.evaluate.features import TokenFeatures
from selfsup.fmt import fmt_duration

CLIP_NORM = 5.0
DROPOUT = 0.2


class LSTMHead(nn.Module):
    """Tokens [B, T, D] with lengths [B] -> per-token CTC logits [B, T, C]: a bidirectional LSTM over the valid
    tokens of each clip (padding never read), then a linear map of its two directions' states."""

    def __init__(self, dim: int, hidden: int = 256, layers: int = 2, num_outputs: int = len(CTC_CLASSES)):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, bidirectional=True, batch_first=True,
                            dropout=DROPOUT if layers > 1 else 0.0)  # fmt: skip
        self.out = nn.Linear(2 * hidden, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu().clamp_min(1), batch_first=True,
                                                   enforce_sorted=False)  # fmt: skip
        h, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        return self.out(h)


def decode_lstm(head: LSTMHead, feats: TokenFeatures, batch: int = 64, device: str = "cpu") -> list[str]:
    """Greedy transcripts of every clip under ``head`` (evaluation mode)."""
    from selfsup.evaluate.ctc import greedy_decode

    head.eval()
    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            x, lens = feats.batch(torch.arange(i, min(len(feats), i + batch)))
            logits = head(x.to(device), lens).cpu()
            out += [transcript_text(greedy_decode(logits[b, : int(n)])) for b, n in enumerate(lens.tolist())]
    return out


def fit_ctc_lstm(train: TokenFeatures, train_y: SequenceLabels, val: TokenFeatures, val_y: SequenceLabels, *,
                 hidden: int = 256, layers: int = 2, lr: float = 1e-3, epochs=(10, 20, 40, 80), batch_size: int = 16,
                 seed: int = 0, num_outputs: int = len(CTC_CLASSES), max_steps: int | None = None,
                 device: str = "cpu", log=None) -> tuple:  # fmt: skip
    """Train an :class:`LSTMHead` on (standardized) token features; after each of ``epochs`` epochs (an epoch:
    ceil(N / batch) steps, at least ``ctc.MIN_STEPS_PER_EPOCH``; epochs past ``max_steps`` steps left out, never
    the first) score it on the validation set. Returns the head at the epoch with the lowest validation CER (ties
    to fewer epochs), what was chosen ({"lr", "epochs", "hidden"}) and its validation error rates. The weights
    and the batches come from ``seed`` alone. ``log`` (a callable) receives a line after each scored epoch: the
    head trains for minutes on a CPU."""
    from selfsup.distributed import local_device
    from selfsup.evaluate.ctc import MIN_STEPS_PER_EPOCH, ctc_loss, ctc_stops, error_rates, texts

    dev = local_device(device)
    g_cpu = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = LSTMHead(train.dim, hidden, layers, num_outputs)
    head.to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.01)
    n = len(train)
    bs = min(batch_size, n)
    per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(n / bs))
    refs = texts(val_y)
    best, order, done = None, torch.empty(0, dtype=torch.long), 0
    stops, t0 = ctc_stops(epochs, per_epoch, max_steps), time.perf_counter()
    flush = torch.set_flush_denormal(True)
    try:
        for stop in stops:
            head.train()
            with torch.enable_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1_000_003 + stop)  # dropout's masks: from the seed, not the global state
                for _ in range((stop - done) * per_epoch):
                    while len(order) < bs:
                        order = torch.cat([order, torch.randperm(n, generator=g_cpu)])
                    idx, order = order[:bs], order[bs:]
                    x, lens = train.batch(idx)
                    logits = head(x.to(dev), lens)
                    loss = ctc_loss(logits, lens, train_y.take(idx.numpy()))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(head.parameters(), CLIP_NORM)
                    opt.step()
            done = stop
            rates = error_rates(decode_lstm(head, val, device=dev), refs)
            if best is None or rates["cer"] < best[2]["cer"]:
                kept = copy.deepcopy(head).cpu()
                best = (kept, {"lr": lr, "epochs": stop, "hidden": hidden}, rates)
            if log is not None:
                spent = time.perf_counter() - t0
                left = spent / (stop * per_epoch) * (stops[-1] - stop) * per_epoch
                log(f"    bilstm epoch {stop}/{stops[-1]}: validation CER {100 * rates['cer']:.1f}% "
                    f"({fmt_duration(spent)}, {fmt_duration(left)} left)")  # fmt: skip
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return best
