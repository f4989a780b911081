"""``selfsup compare``: which pretext task suits this data, and what does it cost?

Every method is pretrained on the same data with the same budget, seed and batch size, each in
its own process (so peak memory is each run's own), into ``OUT/<method>``; every run is then
scored with the same protocols at the same label fractions. The result is a leaderboard ranked on
validation (accuracy, wall time, samples/s, peak memory, training FLOPs), printed as a table and
written as ``OUT/compare.json``, ``OUT/compare.png`` and ``OUT/report.html``.

A comparison is resumable: a method whose run finished is not trained again, one that was
interrupted after a checkpoint is resumed from it, one killed before its first checkpoint starts
afresh, and a run already scored with the same settings is not scored again.

Options meant for one encoder family apply to the runs whose encoder has them: ``--width`` and
``--set encoder.width=...`` reach the ResNet runs, ``--set encoder.dim=...`` the ViT runs; each run
says which of them it ignored.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from selfsup import runs
from selfsup.config import parse_labels
from selfsup.errors import UserError
from selfsup.registry import METHODS, PROTOCOLS
from selfsup.report.leaderboard import format_leaderboard, leaderboard

# CLI flags of `selfsup pretrain` that every run of a comparison shares
SHARED_FLAGS = ("budget", "seed", "batch_size", "width", "image_size", "limit", "device", "precision", "encoder")


def _method_list(methods: str | list[str] | None, modality: str | None = None, sequences: bool = False) -> list[str]:
    import selfsup.methods  # noqa: F401  (registers)

    if methods is None or methods == "all":  # every method of the modality (token data: of its kind, raw_kinds)
        kind = "sequence" if sequences else "text"
        return [name for name, cls in METHODS.items() if cls.modality == (modality or "image")
                and (cls.modality != "tokens" or kind in getattr(cls, "raw_kinds", ("text",)))]  # fmt: skip
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    names = [m for m in names if m]
    if not names:
        raise UserError("--methods is empty; name at least one, e.g. --methods rotation,simclr")
    for m in names:
        METHODS.get(m)
    if len(set(names)) != len(names):
        raise UserError(f"--methods {','.join(names)} names a method twice")
    return names


def _encoder_sets(method: str, encoder: str | None, sets: list[str], width, log) -> list[str]:
    """The ``--set`` items for one run: encoder fields its encoder does not have are left out (and said)."""
    from selfsup.encoders import encoder_fields

    name = encoder or getattr(METHODS.get(method), "default_encoder", "resnet18")
    fields = encoder_fields(name)
    items = list(sets) + ([f"encoder.width={width}"] if width is not None else [])
    kept, dropped = [], []
    for item in items:
        key = item.split("=", 1)[0].strip()
        if key.startswith("encoder.") and key.split(".", 1)[1] not in fields | {"name", "params"}:
            dropped.append(key)
        else:
            kept.append(item)
    if dropped:
        log(f"  {method} ({name}): {', '.join(dropped)} left out, {name} has no such field")
    return kept


def _pretrain_cmd(method: str, run: Path, data: str, shared: dict, sets: list[str]) -> list[str]:
    if runs.latest_checkpoint(run) is not None:  # interrupted after a checkpoint: continue it
        return [sys.executable, "-m", "selfsup", "pretrain", "--resume", str(run)]
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--data", data, "--method", method, "--out", str(run)]
    for key, value in shared.items():
        if value is not None and key != "width":
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    for item in sets:
        cmd += ["--set", item]
    return cmd


SCORED_WITH = runs.SCORED_WITH  # the evaluation settings a run's eval.json was made with, by compare
AUDITED = "compare_audit.json"  # compare --group: the run's audit for this comparison


def _scored(run: Path, protocols: list[str], labels: list[float], limits: dict) -> list[dict] | None:
    """The run's eval.json rows of this task if compare made them with these settings and they cover these
    protocols and fractions (an evaluation by hand since then removes SCORED_WITH)."""
    made_with = run / SCORED_WITH
    if not made_with.is_file() or json.loads(made_with.read_text()) != limits:
        return None
    task = limits.get("task", "classify")
    rows = [r for r in runs.read_eval_rows(run) if r.get("task", "classify") == task]
    if not rows or any("split" not in r for r in rows):
        return None
    have = {(r["protocol"], r["labels"]) for r in rows if r["encoder"] == "pretrained"}
    return rows if have >= {(p, f) for p in protocols for f in labels} else None


def _arch(run: Path) -> str:
    from selfsup.encoders import describe_encoder

    info = runs.read_encoder_json(run)
    spec = info.get("spec", {})
    tokens = f" {spec['kmer']}-mers" if spec.get("alphabet") and spec.get("kmer", 1) > 1 else ""
    return describe_encoder(info["builder"], info["params"]) + tokens  # k-mer and residue networks differ


VARIANTS = ("as-is", "imbalanced", "balance-by")  # pretraining data: as it is; resampled to --pretrain-groups;
# resampled (when --pretrain-groups is given) and drawn with a group-balanced sampler (--balance-by)


def _variants(variants, sets: list[str], group: str | None) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """[(variant name, its data.* sets)] and the other sets: ``--variants`` turns --pretrain-groups / --balance-by
    into per-run settings (without it every run takes them as given: one variant, named "")."""
    if not variants:
        return [("", [])], list(sets)
    names = [v.strip() for v in variants.split(",")] if isinstance(variants, str) else list(variants)
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names or len(set(names)) != len(names):
        raise UserError(f"--variants {','.join(names)}: choose distinct names among {', '.join(VARIANTS)}")
    pick = lambda key: next((i.split("=", 1)[1] for i in sets if i.startswith(f"data.{key}=")), None)  # noqa: E731
    shares, balance = pick("pretrain_groups"), pick("balance_by")
    rest = [i for i in sets if not i.startswith(("data.pretrain_groups=", "data.balance_by="))]
    if "imbalanced" in names and not shares:
        raise UserError("--variants imbalanced needs --pretrain-groups ATTR=VALUE:SHARE (e.g. accent=en-gb-x-rp:0.02)")
    attr = balance or (shares.split("=", 1)[0].strip() if shares else None) or group
    if "balance-by" in names and not attr:
        raise UserError("--variants balance-by needs --balance-by ATTR (or --pretrain-groups / --group to name it)")
    resample = [f"data.pretrain_groups={shares}"] if shares else []
    table = {"as-is": [], "imbalanced": resample, "balance-by": [*resample, f"data.balance_by={attr}"]}
    return [(v, table[v]) for v in names], rest


def _score(run: Path, protocols, fractions, limits: dict, baselines: bool, group: str | None) -> list[dict]:
    """Evaluate ``run`` (with ``group``: audit it, which evaluates it too) and write its eval.json."""
    from selfsup.evaluate import evaluate

    overrides = {k: v for k, v in limits.items() if v is not None and k not in ("group",)}
    if group is None:
        return evaluate(run, protocol=protocols, labels=fractions, baselines=baselines, log=lambda s: None,
                        **overrides)  # fmt: skip
    from selfsup.evaluate.audit import audit

    result = audit(run, group, protocol=protocols, labels=fractions, baselines=baselines, log=lambda s: None,
                   **overrides)  # fmt: skip
    runs.atomic_write_text(run / AUDITED, json.dumps(result, indent=1))  # RUN/audit.json is the latest audit's
    runs.write_eval_rows(run, result["eval_rows"])
    return result["eval_rows"]


def compare(data: str = "fashion-mnist", methods: str | list[str] | None = None, budget: str = "5m",
            out: str | Path | None = None, protocol: str | list[str] | None = None, labels=None,
            train_limit: int | None = None, test_limit: int | None = None, sets: list[str] | None = None,
            pretrain_data: str | None = None, task: str | None = None, variants=None, group: str | None = None,
            log=print, **shared) -> dict:  # fmt: skip
    """Pretrain each method under the same budget, score each the same way; returns compare.json's content.

    ``pretrain_data``: pretrain on this corpus and score on ``data`` (the usual case in biology: pretrain on
    genomic sequence, evaluate on a labelled task); by default both are ``data``. ``task``: what is scored
    (classify by default; speech: verify, ctc), with its protocols by default (classify: knn, linear) and its
    metric ranking the runs (error rates: lowest first).

    ``variants`` (a subset of ``VARIANTS``): each method is pretrained once per variant of its data (as it is,
    resampled to ``data.pretrain_groups``, and with a ``data.balance_by`` sampler), into ``OUT/<method>-<variant>``.
    ``group``: every run is audited by that group (``selfsup audit``) and the per-group table is printed and kept.

    ``shared`` takes the pretrain options every run shares: seed, batch_size, width, image_size,
    limit, device, precision, encoder. ``sets`` are ``KEY=VALUE`` config overrides for every run.
    """
    from selfsup.data import data_modality, is_sequence_data
    from selfsup.registry import TASKS

    pretrain_data = pretrain_data or data
    names = _method_list(methods, data_modality(pretrain_data), is_sequence_data(pretrain_data))
    import selfsup.evaluate  # noqa: F401  (registers the tasks)

    task_cls = TASKS.get(task or "classify")
    protocol = protocol or ",".join(task_cls.default_protocols)
    protocols = [p.strip() for p in protocol.split(",")] if isinstance(protocol, str) else list(protocol)
    for p in protocols:
        PROTOCOLS.get(p)
        if p not in task_cls.protocols:
            raise UserError(f"task {task_cls.name} has no protocol {p!r}; choose from {', '.join(task_cls.protocols)}")
    fractions = [1.0] if task_cls.name == "verify" else parse_labels(labels or "1%,10%,100%")  # verify: no labels
    plan, sets = _variants(variants, sets or [], group)
    unknown = set(shared) - set(SHARED_FLAGS)
    if unknown:
        known = ", ".join(SHARED_FLAGS)
        raise UserError(f"compare does not take {', '.join(sorted(unknown))}; options every run shares: {known}")
    out = Path(out or f"runs/compare-{Path(data).name}")
    out.mkdir(parents=True, exist_ok=True)
    shared = {"budget": budget, **shared}
    limits = {"train_limit": train_limit, "test_limit": test_limit}
    if pretrain_data != data:
        limits["data"] = data  # scored on other data than the runs were pretrained on (eval.data)
    if task_cls.name != "classify":
        limits["task"] = task_cls.name
    if group:
        limits["group"] = group

    results, baselines_done, audits = [], set(), {}
    todo = [(m, v, extra) for m in names for v, extra in plan]
    for i, (method, variant, extra) in enumerate(todo, 1):
        name = f"{method}-{variant}" if variant else method
        run = out / name
        tag = f"[{i}/{len(todo)}] {name}"
        if runs.is_finished(run):
            log(f"{tag}: finished run in {run}, not trained again")
        else:
            run_sets = _encoder_sets(method, shared.get("encoder"), [*sets, *extra], shared.get("width"), log)
            cmd = _pretrain_cmd(method, run, pretrain_data, shared, run_sets)
            log(f"{tag}: pretraining into {run} ({budget}) ...")
            sys.stdout.flush()
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL)
            if done.returncode != 0 or not runs.is_finished(run):
                raise UserError(f"pretraining {name} failed (exit {done.returncode}); see the messages above, "
                                f"fix them and rerun the same compare command to continue")  # fmt: skip
        arch = _arch(run)
        want_baselines = arch not in baselines_done
        rows = _scored(run, protocols, fractions, limits)
        if rows is not None and group and not (run / AUDITED).is_file():
            rows = None
        if rows is not None and want_baselines and not any(r["encoder"] == "random_init" for r in rows):
            rows = None  # scored before without the baselines this architecture now needs
        if rows is None:
            log(f"{tag}: {'auditing' if group else 'scoring'} with {','.join(protocols)} ...")
            rows = _score(run, protocols, fractions, limits, want_baselines, group)
            runs.atomic_write_text(run / SCORED_WITH, json.dumps(limits))
        if any(r["encoder"] in ("random_init", "supervised") for r in rows):
            baselines_done.add(arch)
        if group:
            audits[name] = json.loads((run / AUDITED).read_text())
        cost = json.loads((run / "cost.json").read_text())
        cfg = runs.load_config(run)
        results.append({"method": name, "encoder": arch, "run": str(run), "steps": cfg.train.steps,
                        "rows": rows, "cost": cost})  # fmt: skip

    summary = leaderboard(results, protocols, fractions, task_cls.metric)
    report = {"data": data, "pretrain_data": pretrain_data, "budget": budget, "task": task_cls.name,
              "metric": task_cls.metric, "shared": {k: v for k, v in shared.items() if v is not None},
              "sets": list(sets or []), "variants": {v: extra for v, extra in plan if v},
              "evaluation": limits, "protocols": protocols, "labels": fractions,
              "ranked_on": "validation", "leaderboard": summary, "runs": results}  # fmt: skip
    if group:
        from selfsup.report.audit import by_run

        report["audit"] = by_run(audits, group)
    runs.atomic_write_text(out / "compare.json", json.dumps(report, indent=1))
    from selfsup.report.compare import write_compare_report

    write_compare_report(out, report)
    log(format_leaderboard(summary, protocols, fractions))
    if group:
        from selfsup.report.audit import format_audit

        log(format_audit(report["audit"]))  # the runs (and baselines) as its encoders
    log(f"wrote {out / 'compare.json'}, {out / 'compare.png'} and {out / 'report.html'}")
    return report
