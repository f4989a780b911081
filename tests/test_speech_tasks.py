"""The speech tasks of evaluation: ``verify`` (speaker verification, EER) and ``ctc`` (speech to text, CER / WER).

Metrics on hand-worked cases, the trials and splits (seeded, speaker-disjoint), greedy CTC decoding, a linear CTC
head that learns, and `selfsup eval RUN --task verify|ctc` end to end on a tiny tera run over synth-speech small."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from selfsup.cli import main
from selfsup.config import DataConfig, EvalConfig
from selfsup.data import Dataset, SequenceLabels, Split, load_dataset
from selfsup.data.audio import Waveforms, transcript_text
from selfsup.data.spec import AudioSpec
from selfsup.errors import UserError
from selfsup.evaluate import format_table
from selfsup.evaluate.ctc import CTC, ctc_stops, edit_distance, error_rates, fit_ctc_heads, greedy_decode, logmel_tokens
from selfsup.evaluate.features import TokenFeatures
from selfsup.evaluate.tasks import higher_is_better
from selfsup.evaluate.verify import Verify, equal_error_rate, trials
from selfsup.registry import PROTOCOLS, TASKS
from tests.conftest import image_spec
from tests.test_speech_run import SMALL, voice

# ----------------------------------------------------------------------------- verify: EER and trials


def test_eer_on_hand_made_scores():
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    assert equal_error_rate([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], same) == 0.0  # perfectly separated
    assert equal_error_rate([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], same) == 1.0  # reversed
    assert equal_error_rate(np.full(6, 0.5), same) == pytest.approx(0.5)  # all tied: chance
    # targets 0.9, 0.6, 0.4; non-targets 0.7, 0.3, 0.2: at threshold 0.6 one false accept (0.7) of three and one
    # false reject (0.4) of three
    assert equal_error_rate([0.9, 0.6, 0.4, 0.7, 0.3, 0.2], same) == pytest.approx(1 / 3)
    # targets 0.9, 0.5; non-targets 0.7, 0.3, 0.1, 0.05: between thresholds 0.7 and 0.5 the rates cross at 1/4
    scores = [0.9, 0.5, 0.7, 0.3, 0.1, 0.05]
    assert equal_error_rate(scores, [1, 1, 0, 0, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        equal_error_rate([0.1, 0.2], [1, 1])


def test_trials_are_seeded_and_balanced():
    spk = np.repeat(["a", "b", "c"], [4, 3, 5])
    i, j, same = trials(spk, seed=0)
    assert same.sum() == 6 + 3 + 10 == (~same).sum()  # every same-speaker pair, as many different-speaker ones
    assert (i < j).all() and ((spk[i] == spk[j]) == same).all()
    assert len({(a, b) for a, b in zip(i, j)}) == len(i)  # no pair twice
    again = trials(spk, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, same), again))
    oi, oj, osame = trials(spk, seed=1)
    assert np.array_equal(np.c_[i, j][same], np.c_[oi, oj][osame])  # the same-speaker pairs: all of them
    assert not np.array_equal(np.c_[i, j][~same], np.c_[oi, oj][~osame])  # a different seeded sample
    i, j, same = trials(spk, seed=0, max_same=5)
    assert same.sum() == 5 == (~same).sum()


def test_trials_drawn_without_listing_every_pair(monkeypatch):
    from selfsup.evaluate import verify

    monkeypatch.setattr(verify, "_ENUMERATE", 10)  # as if the set were too large to list its pairs
    spk = np.repeat(np.arange(6), 5)
    i, j, same = trials(spk, seed=0)
    assert same.sum() == 6 * 10 == (~same).sum() and ((spk[i] == spk[j]) == same).all() and (i < j).all()
    assert len({(a, b) for a, b in zip(i, j)}) == len(i)


def test_metric_direction_and_table():
    assert higher_is_better("accuracy") and not higher_is_better("eer") and not higher_is_better("cer")
    assert not higher_is_better("wer") and TASKS.get("verify").higher_is_better is False
    assert PROTOCOLS.get("cosine").frozen and "cosine" in TASKS.get("verify").protocols
    rows = [{"task": "ctc", "protocol": "linear", "labels": 1.0, "encoder": "raw", "split": "test", "metric": m,
             "value": v} for m, v in (("cer", 0.25), ("wer", 0.5))]  # fmt: skip
    table = format_table(rows)
    assert "test cer (lower is better)" in table and "test wer (lower is better)" in table
    assert "25.0%" in table and "50.0%" in table and "100%" in table  # ctc trains on a fraction of the transcripts
    eer = [{**rows[0], "task": "verify", "protocol": "cosine", "metric": "eer", "value": 0.05}]
    line = format_table(eer).splitlines()[-1].split()
    assert line == ["cosine", "-", "5.0%"]  # verify trains on no labels: no fraction printed


# ----------------------------------------------------------------------------- ctc: decoding and error rates


def test_edit_distance_and_error_rates_by_hand():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("flaw", "lawn") == 2  # -f, +n
    assert edit_distance("intention", "execution") == 5
    assert edit_distance("", "abc") == 3 == edit_distance("abc", "")
    assert edit_distance("same", "same") == 0
    assert edit_distance("the cat sat".split(), "the cat sat down".split()) == 1
    assert edit_distance(np.array([1, 2, 3]), np.array([1, 3])) == 1
    # words: "sat" -> "sit" (substitution) and "the" deleted: 2 of 6; characters: a->i, and "the " deleted: 5 of 22
    rates = error_rates(["the cat sit on mat"], ["the cat sat on the mat"])
    assert rates["wer"] == pytest.approx(2 / 6) and rates["cer"] == pytest.approx(5 / 22)
    assert error_rates([""], ["abc de"]) == {"cer": 1.0, "wer": 1.0}  # an empty output deletes everything
    assert error_rates(["ab", "xyz"], ["ab", "xy"])["cer"] == pytest.approx(1 / 4)  # summed over the corpus


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    best = [0, 1, 1, 0, 1, 2, 2, 0, 0, 3, 3]
    logits = torch.nn.functional.one_hot(torch.tensor(best), 5).float()
    assert greedy_decode(logits).tolist() == [1, 1, 2, 3]  # "1 1" survives only through the blank between
    assert greedy_decode(logits.numpy()).tolist() == [1, 1, 2, 3]
    assert greedy_decode(torch.zeros(4, 5)).tolist() == []  # all blank (argmax ties go to 0)


def test_linear_ctc_head_learns_a_toy_alphabet():
    """Tokens that spell their transcript (a noisy code per character, a silence token after each): the grid's
    heads learn to read them, and validation picks a good one."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randn(29, 16, generator=gen)
    codes[0] = 0.0

    def make(n, seed):
        rng = np.random.default_rng(seed)
        seqs = [rng.integers(1, 29, rng.integers(3, 8)) for _ in range(n)]
        rows = [torch.stack([codes[c] if k % 2 == 0 else codes[0] for c in s for k in range(2)]) for s in seqs]
        flat = torch.cat(rows) + 0.1 * torch.randn(sum(len(r) for r in rows), 16, generator=gen)
        return TokenFeatures(flat, [len(r) for r in rows]), SequenceLabels.from_lists(seqs)

    (train, ty), (val, vy) = make(64, 1), make(16, 2)
    (w, b), chosen, rates = fit_ctc_heads(train, ty, val, vy, lrs=(0.03,), epochs=(5, 30), batch_size=16)
    assert rates["cer"] < 0.1 and chosen["lr"] == 0.03 and chosen["epochs"] in (5, 30)
    assert w.shape == (16, 29) and b.shape == (29,)
    # a step cap leaves the later epochs out: the head is the 5-epoch one
    _, capped, _ = fit_ctc_heads(train, ty, val, vy, lrs=(0.03,), epochs=(5, 30), batch_size=16, max_steps=100)
    assert capped["epochs"] == 5


def test_bilstm_ctc_head_reads_the_neighbouring_tokens_a_linear_head_cannot():
    """Each character is spelled by two tokens, and every token on its own is shared by three characters (1-9 as
    the pairs of three codes): a linear head, which reads one token at a time, cannot tell them apart; the
    recurrent head reads both and learns to. Seeded: the same call gives the same head."""
    from selfsup.evaluate.ctc_lstm import decode_lstm, fit_ctc_lstm

    gen = torch.Generator().manual_seed(0)
    codes = torch.randn(4, 8, generator=gen)  # 0: silence, 1-3: the pair codes

    def make(n, seed):
        rng = np.random.default_rng(seed)
        seqs = [rng.integers(1, 10, rng.integers(3, 7)) for _ in range(n)]
        rows = [torch.stack([codes[k] for c in s for k in (1 + (c - 1) // 3, 1 + (c - 1) % 3, 0)]) for s in seqs]
        flat = torch.cat(rows) + 0.05 * torch.randn(sum(len(r) for r in rows), 8, generator=gen)
        return TokenFeatures(flat, [len(r) for r in rows]), SequenceLabels.from_lists(seqs)

    (train, ty), (val, vy) = make(96, 1), make(24, 2)
    _, _, linear = fit_ctc_heads(train, ty, val, vy, lrs=(0.01, 0.03), epochs=(20, 60), batch_size=16)
    head, chosen, rates = fit_ctc_lstm(train, ty, val, vy, hidden=32, layers=1, lr=1e-2, epochs=(5, 20), batch_size=16)
    assert linear["cer"] > 0.3 and rates["cer"] < 0.1, (linear, rates)
    assert chosen["epochs"] in (5, 20) and chosen["hidden"] == 32
    assert error_rates(decode_lstm(head, val), [transcript_text(vy[i]) for i in range(len(vy))]) == rates
    again, _, same = fit_ctc_lstm(train, ty, val, vy, hidden=32, layers=1, lr=1e-2, epochs=(5, 20), batch_size=16)
    assert same == rates and all(torch.equal(a, b) for a, b in zip(head.state_dict().values(),
                                                                   again.state_dict().values()))  # fmt: skip


def test_ctc_stops_and_the_time_estimate():
    assert ctc_stops((20, 5, 10, 10), 10, None) == [5, 10, 20]
    assert ctc_stops((5, 10, 20), 100, 1000) == [5, 10]  # 20 epochs of 100 steps pass the cap
    assert ctc_stops((5, 10), 500, 1000) == [5]  # the first epoch count is always run
    ev = EvalConfig()
    clips = Waveforms.from_clips([np.zeros(16000 * 2, np.int16)] * 4)  # 2 s: 50 tokens a clip
    splits = {"pool": Split(clips)}
    assert CTC().probe_seconds(splits, [346], [32], ["knn"], ev) == {}
    one = CTC().probe_seconds(splits, [346], [32], ["linear"], ev)["linear"]
    more = CTC().probe_seconds(splits, [3456], [32], ["linear"], ev)["linear"]
    assert 0 < one < more  # 10,000 steps at most for 3,456 clips against 3,520 for 346
    both = CTC().probe_seconds(splits, [346], [32], ["linear", "bilstm"], ev)
    assert set(both) == {"linear", "bilstm"} and both["bilstm"] > 0


# ----------------------------------------------------------------------------- on synth-speech small


def test_verify_splits_are_speaker_disjoint_and_seeded(synth_small):
    task, ev = Verify(), EvalConfig()
    ds = load_dataset("synth-speech")
    background, verification = task.splits(DataConfig(name="synth-speech"), ds)
    assert not set(background.groups["speaker"]) & set(verification.groups["speaker"])
    assert set(background.groups["speaker"]) == set(synth_small["train"].groups["speaker"])  # pretraining's speakers
    carved = task.carve(background, verification, ev)
    val, test = carved.splits["val"], carved.splits["test"]
    assert len(val) + len(test) == len(verification) and list(carved.subsets) == [1.0]
    assert not set(carved.splits["pool"].groups["speaker"]) & set(test.groups["speaker"])
    again = task.carve(background, verification, ev)
    assert np.array_equal(again.splits["test"].x.flat, test.x.flat)


def test_verify_on_an_audio_folder_holds_out_whole_speakers(tmp_path, cache_root):
    rng = np.random.default_rng(0)
    for s, f0 in enumerate((100, 140, 190, 250, 330)):
        (tmp_path / f"spk{s}").mkdir()
        for i in range(5):
            sf.write(tmp_path / f"spk{s}" / f"u{i}.wav", voice(f0, 0.3, rng), 16000)
    ds = load_dataset(str(tmp_path), log=lambda _: None)
    background, verification = Verify().splits(DataConfig(name=str(tmp_path)), ds)
    held = set(verification.groups["speaker"])
    assert len(held) == 2 and not held & set(background.groups["speaker"])
    assert len(background) + len(verification) == 25
    with pytest.raises(UserError, match="transcri"):  # no transcripts: ctc does not fit this folder
        CTC().splits(DataConfig(name=str(tmp_path)), ds, log=lambda _: None)


def test_tasks_that_do_not_fit_the_data_are_one_line_errors():
    images = Dataset("digits", image_spec(), Split(np.zeros((4, 1, 16, 16), np.uint8), np.arange(4)))
    for task in (CTC(), Verify()):
        with pytest.raises(UserError, match="not audio") as e:
            task.splits(DataConfig(name="digits"), images)
        assert "\n" not in str(e.value)


def test_logmel_baseline_ctc_head_beats_all_blank(synth_small):
    """The raw-input model of ctc (stacked log-mel frames + a linear CTC head), trained on the 30 training
    utterances, transcribes unseen speakers' unseen sentences clearly better than emitting nothing (CER 1)."""
    spec = AudioSpec()
    train, test = synth_small["ctc_train"], synth_small["ctc_test"]
    tr, te = logmel_tokens(train.x, spec), logmel_tokens(test.x, spec)
    assert tr.dim == 320 and (tr.lengths == (spec.frames(torch.as_tensor(train.lengths)) + 3) // 4).all()
    mu, sd = tr.flat.mean(0), tr.flat.std(0)
    tr, te = tr.map(lambda t: (t - mu) / sd), te.map(lambda t: (t - mu) / sd)
    (w, b), _, _ = fit_ctc_heads(tr, train.y, tr, train.y, lrs=(1e-2,), epochs=(15,), batch_size=16)  # no choice
    x, lens = te.batch()
    logits = x @ w + b
    hyps = [greedy_decode(logits[i, : int(n)]) for i, n in enumerate(lens)]
    rates = error_rates([transcript_text(h) for h in hyps], [transcript_text(test.y[i]) for i in range(len(test))])
    assert rates["cer"] < 0.9  # all blank: 1.0


# ----------------------------------------------------------------------------- end to end


# tera_run: a tiny tera run on synth-speech (small), tests/conftest.py


def test_eval_task_verify(tera_run):
    earlier = [{"task": "ctc", "protocol": "linear", "labels": 0.1, "encoder": "pretrained", "split": "test",
                "metric": "cer", "value": 0.5}]  # fmt: skip
    (tera_run / "eval.json").write_text(json.dumps(earlier))
    assert main(["eval", str(tera_run), "--task", "verify"]) == 0
    written = json.loads((tera_run / "eval.json").read_text())
    assert written[:1] == earlier  # another task's rows stay
    rows = [r for r in written if r["task"] == "verify"]
    assert len(rows) == len(written) - 1
    assert {(r["task"], r["protocol"], r["metric"], r["labels"]) for r in rows} == {("verify", "cosine", "eer", 1.0)}
    assert {(r["encoder"], r["split"]) for r in rows} == {(e, s) for e in ("pretrained", "random_init", "raw")
                                                          for s in ("val", "test")}  # fmt: skip
    assert all(0 <= r["value"] <= 1 and r["chosen"]["norm"] in ("none", "center", "standardize") for r in rows)


def test_eval_task_ctc(tera_run, capsys):
    fast = ["--set", "ctc_lrs=0.01", "--set", "ctc_epochs=1,3", "--set", "finetune_min_steps=3",
            "--set", "finetune_epochs=1", "--set", "ctc_lstm_epochs=1,2", "--set", "ctc_lstm_hidden=16"]  # fmt: skip
    assert main(["eval", str(tera_run), "--task", "ctc", "--protocol", "linear,bilstm,finetune", "--labels",
                 "10%,100%", *fast]) == 0  # fmt: skip
    out = capsys.readouterr().out
    # the recurrent head reports each scored epoch (it trains for minutes): 2 fractions x 3 encoders x 2 epochs
    assert out.count("bilstm epoch 2/2: validation CER") == 6 and out.count("bilstm epoch 1/2") == 6
    assert "raw = log-mel frames (normalized per bin, 4 stacked) under the same head" in out  # the column said
    rows = [r for r in json.loads((tera_run / "eval.json").read_text()) if r["task"] == "ctc"]
    got = {(r["protocol"], r["encoder"]) for r in rows}
    frozen = {(p, e) for p in ("linear", "bilstm") for e in ("pretrained", "random_init", "raw")}
    assert got == frozen | {("finetune", "pretrained"), ("finetune", "supervised")}
    assert all(r["chosen"]["epochs"] in (1, 2) and r["chosen"]["hidden"] == 16 for r in rows
               if r["protocol"] == "bilstm")  # fmt: skip
    assert {r["metric"] for r in rows} == {"cer", "wer"} and {r["labels"] for r in rows} == {0.1, 1.0}
    assert all(r["value"] >= 0 for r in rows) and all(r["task"] == "ctc" for r in rows)
    assert all(r["chosen"]["epochs"] in (1, 3) for r in rows if r["protocol"] == "linear")


def test_eval_task_errors_are_one_line(tera_run, capsys):
    assert main(["eval", str(tera_run), "--task", "verify", "--protocol", "knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no protocol 'knn'" in err and "\n" not in err
    assert main(["eval", str(tera_run), "--task", "ctc", "--plot"]) == 2
    assert "--plot" in capsys.readouterr().err


def test_token_features_with_progress_reports_every_batch():
    """Frame-level features extracted in several batches with a progress callback (as evaluation shows it)."""
    from selfsup.data.audio import Waveforms
    from selfsup.encoders import build_encoder
    from selfsup.evaluate.features import extract_features

    enc = build_encoder("speech_transformer", AudioSpec(), {"dim": 32, "depth": 1, "heads": 2, "conv_channels": 8})
    rng = np.random.default_rng(0)
    clips = Waveforms.from_clips([(voice(f, s, rng) * 32767).astype(np.int16) for f, s in ((120, 0.3), (200, 0.5),
                                                                                              (300, 0.4))])  # fmt: skip
    seen = []
    out = extract_features(enc, clips, batch_size=2, device="cpu", progress=lambda d, n, s: seen.append((d, n)),
                           tokens=True)  # fmt: skip
    assert seen == [(2, 3), (3, 3)]
    assert isinstance(out, TokenFeatures) and len(out) == 3


def test_ctc_fine_tuning_overfits_a_few_utterances_to_cer_0(synth_small):
    """The ctc task's head and loss, trained end to end with the encoder on three utterances, transcribe them
    exactly: the CTC path (lengths, blank, decoding) has no error that would cap learning."""
    from selfsup.encoders import build_encoder
    from selfsup.evaluate.finetune import finetune, predict

    train = synth_small["ctc_train"]
    x, y = train.x[np.arange(3)], train.y.take(np.arange(3))
    task = TASKS.get("ctc")()
    torch.manual_seed(0)
    enc = build_encoder("speech_transformer", AudioSpec(), {"dim": 64, "depth": 2, "heads": 2, "conv_channels": 16})
    before = task.score(predict(finetune(enc, x, y, task, 29, None, min_steps=1, epochs=1, device="cpu"), x), y)
    model = finetune(enc, x, y, task, 29, None, epochs=1, lr=3e-3, batch_size=3, min_steps=200, device="cpu")
    assert before["cer"] > 0.5
    assert task.score(predict(model, x), y) == {"cer": 0.0, "wer": 0.0}


def test_eer_matches_a_brute_force_threshold_scan():
    """On random scores (with ties), the interpolated EER lies within one trial of min over thresholds of
    max(false acceptance, false rejection), scanned at every score."""
    rng = np.random.default_rng(3)
    for n_same, n_diff, shift in ((300, 500, 1.0), (1000, 200, 0.3), (50, 50, 2.0)):
        same = np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]
        scores = np.round(np.r_[rng.normal(shift, 1, n_same), rng.normal(0, 1, n_diff)], 2)  # ties
        best = min(max(np.mean(scores[~same] >= t), np.mean(scores[same] < t)) for t in np.unique(scores))
        assert abs(equal_error_rate(scores, same) - best) <= 1 / min(n_same, n_diff) + 1e-9


def test_compare_ranks_speech_runs_on_the_tasks_error_rate(synth_small, tmp_path, capsys):
    """compare --task verify: each run scored by EER, the leaderboard ranked lowest first on validation."""
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "synth-speech", "--methods", "tera,speaker-contrastive", "--task", "verify",
                 "--budget", "2steps", "--batch-size", "8", "--device", "cpu", "--out", str(out), *SMALL]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert (report["task"], report["metric"], report["protocols"], report["labels"]) == ("verify", "eer", ["cosine"],
                                                                                           [1.0])  # fmt: skip
    vals = [e["val_mean"] for e in report["leaderboard"]]
    assert all(v is not None for v in vals) and vals == sorted(vals)  # error rates: the lowest first
    assert {e["name"] for e in report["leaderboard"]} >= {"tera", "speaker-contrastive", "raw input"}


def test_eval_fields_that_are_also_flags_can_be_set(tera_run):
    """``--set baselines=false`` is ``--no-baselines`` (it was a TypeError traceback: the field is also a parameter)."""
    (tera_run / "eval.json").unlink(missing_ok=True)
    assert main(["eval", str(tera_run), "--task", "verify", "--set", "baselines=false", "--set", "task=verify"]) == 0
    rows = json.loads((tera_run / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"pretrained"}
    assert main(["eval", str(tera_run), "--set", "task=verify", "--set", "baselines=maybe"]) == 2


def test_ctc_says_whether_its_test_speakers_are_in_the_pool():
    """synth-speech scores unseen speakers; a folder's 20% hold-out shares them with the pool, and the line says so."""
    from selfsup.evaluate.ctc import _test_speakers

    split = lambda spk: Split(np.zeros((len(spk), 2)), None, groups={"speaker": np.array(spk)})  # noqa: E731
    assert _test_speakers({"pool": split(["a", "b"]), "test": split(["c", "d"])}) == " (unseen speakers)"
    mixed = {"pool": split(["a", "b"]), "test": split(["a", "c", "b", "b"])}
    assert _test_speakers(mixed) == " (75% of them by speakers in the pool)"
    assert _test_speakers({"pool": Split(np.zeros((2, 2))), "test": split(["a"])}) == ""
