"""``selfsup compare``: which pretext task suits this data, and what does it cost?

Every method is pretrained on the same data with the same budget, seed and batch size, each in
its own process (so peak memory is each run's own), into ``OUT/<method>``; every run is then
scored with the same protocols at the same label fractions. The result is a leaderboard
(accuracy, wall time, samples/s, peak memory, training FLOPs) printed as a table and written as
``OUT/compare.json``, ``OUT/compare.png`` and ``OUT/report.html``.

A comparison is resumable: a method whose run finished is not trained again, one that was
interrupted is resumed from its last checkpoint, and a run already scored with the same
protocols and fractions is not scored again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from selfsup.config import load_yaml, parse_labels
from selfsup.errors import UserError
from selfsup.registry import EVALUATIONS, METHODS

# CLI flags of `selfsup pretrain` that every run of a comparison shares
SHARED_FLAGS = ("budget", "seed", "batch_size", "width", "image_size", "limit", "device", "precision", "encoder")


def _method_list(methods: str | list[str] | None) -> list[str]:
    import selfsup.methods  # noqa: F401  (registers)

    if methods is None or methods == "all":
        return [name for name, cls in METHODS.items() if cls.modality == "image"]
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    names = [m for m in names if m]
    if not names:
        raise UserError("--methods is empty; name at least one, e.g. --methods rotation,simclr")
    for m in names:
        METHODS.get(m)
    if len(set(names)) != len(names):
        raise UserError(f"--methods {','.join(names)} names a method twice")
    return names


def _finished(run: Path) -> bool:
    if not (run / "cost.json").is_file() or not (run / "config.yaml").is_file():
        return False
    latest = run / "checkpoints" / "latest"
    if not latest.is_file():
        return False
    steps = load_yaml(run / "config.yaml").train.steps
    return steps is not None and latest.read_text().strip() == f"step-{steps:06d}"


def _pretrain_cmd(method: str, run: Path, data: str, shared: dict, sets: list[str]) -> list[str]:
    if (run / "config.yaml").is_file():  # interrupted earlier: continue it
        return [sys.executable, "-m", "selfsup", "pretrain", "--resume", str(run)]
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--data", data, "--method", method, "--out", str(run)]
    for key, value in shared.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    for item in sets:
        cmd += ["--set", item]
    return cmd


SCORED_WITH = "compare_eval.json"  # the evaluation settings a run's eval.json was made with, by compare


def _scored(run: Path, protocols: list[str], labels: list[float], limits: dict) -> list[dict] | None:
    """The run's eval.json rows if they were made with these limits and cover these protocols and fractions."""
    path, made_with = run / "eval.json", run / SCORED_WITH
    if not path.is_file() or not made_with.is_file() or json.loads(made_with.read_text()) != limits:
        return None
    rows = json.loads(path.read_text())
    have = {(r["protocol"], r["labels"]) for r in rows if r["encoder"] == "pretrained"}
    return rows if have >= {(p, f) for p in protocols for f in labels} else None


def _arch(run: Path) -> str:
    cfg = load_yaml(run / "config.yaml")
    e = cfg.encoder
    if (e.name or "").startswith("resnet"):
        return f"{e.name} width {e.width}"
    parts = [f"{k} {getattr(e, k)}" for k in ("dim", "depth", "patch_size") if getattr(e, k) is not None]
    return " ".join([e.name or "?", *parts])


def compare(data: str = "fashion-mnist", methods: str | list[str] | None = None, budget: str = "5m",
            out: str | Path | None = None, protocol: str | list[str] = "knn,linear", labels="1%,10%,100%",
            train_limit: int | None = None, test_limit: int | None = None, sets: list[str] | None = None,
            log=print, **shared) -> dict:  # fmt: skip
    """Pretrain each method under the same budget, score each the same way; returns compare.json's content.

    ``shared`` takes the pretrain options every run shares: seed, batch_size, width, image_size,
    limit, device, precision, encoder. ``sets`` are ``KEY=VALUE`` config overrides for every run.
    """
    from selfsup.evaluate import evaluate

    names = _method_list(methods)
    protocols = [p.strip() for p in protocol.split(",")] if isinstance(protocol, str) else list(protocol)
    for p in protocols:
        EVALUATIONS.get(p)
    fractions = parse_labels(labels)
    unknown = set(shared) - set(SHARED_FLAGS)
    if unknown:
        known = ", ".join(SHARED_FLAGS)
        raise UserError(f"compare does not take {', '.join(sorted(unknown))}; options every run shares: {known}")
    out = Path(out or f"runs/compare-{Path(data).name}")
    out.mkdir(parents=True, exist_ok=True)
    shared = {"budget": budget, **shared}
    limits = {"train_limit": train_limit, "test_limit": test_limit}

    results, baselines_done = [], set()
    for i, method in enumerate(names, 1):
        run = out / method
        if _finished(run):
            log(f"[{i}/{len(names)}] {method}: finished run in {run}, not trained again")
        else:
            cmd = _pretrain_cmd(method, run, data, shared, sets or [])
            log(f"[{i}/{len(names)}] {method}: pretraining into {run} ({budget}) ...")
            sys.stdout.flush()
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL)
            if done.returncode != 0 or not _finished(run):
                raise UserError(f"pretraining {method} failed (exit {done.returncode}); see the messages above, "
                                f"fix them and rerun the same compare command to continue")  # fmt: skip
        arch = _arch(run)
        rows = _scored(run, protocols, fractions, limits)
        if rows is None:
            want_baselines = arch not in baselines_done
            log(f"[{i}/{len(names)}] {method}: scoring with {','.join(protocols)} ...")
            overrides = {k: v for k, v in limits.items() if v is not None}
            rows = evaluate(run, protocol=protocols, labels=fractions, baselines=want_baselines,
                               log=lambda s: None, **overrides)  # fmt: skip
            (run / SCORED_WITH).write_text(json.dumps(limits))
        if any(r["encoder"] in ("random_init", "supervised") for r in rows):
            baselines_done.add(arch)
        cost = json.loads((run / "cost.json").read_text())
        cfg = load_yaml(run / "config.yaml")
        results.append({"method": method, "encoder": arch, "run": str(run), "steps": cfg.train.steps,
                        "rows": rows, "cost": cost})  # fmt: skip

    summary = leaderboard(results, protocols, fractions)
    report = {"data": data, "budget": budget, "shared": {k: v for k, v in shared.items() if v is not None},
              "sets": list(sets or []), "evaluation": limits, "protocols": protocols, "labels": fractions,
              "leaderboard": summary, "runs": results}  # fmt: skip
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    from selfsup.report.compare import write_compare_report

    write_compare_report(out, report)
    log(format_leaderboard(summary, protocols, fractions))
    log(f"wrote {out / 'compare.json'}, {out / 'compare.png'} and {out / 'report.html'}")
    return report


def leaderboard(results: list[dict], protocols: list[str], fractions: list[float]) -> list[dict]:
    """One entry per method plus the baselines (random init per architecture, raw pixels), best first
    by the mean accuracy over every protocol x label fraction."""
    entries, seen_base = [], set()
    for res in results:
        by_enc: dict[str, dict] = {}
        for r in res["rows"]:
            by_enc.setdefault(r["encoder"], {})[f"{r['protocol']}@{r['labels']:g}"] = r["accuracy"]
        cells = [f"{p}@{f:g}" for p in protocols for f in fractions]
        cost = res["cost"]
        pre = by_enc.get("pretrained", {})
        entries.append({"name": res["method"], "kind": "method", "encoder": res["encoder"],
                        "accuracy": {c: pre.get(c) for c in cells},
                        "mean_accuracy": _mean([pre.get(c) for c in cells]),
                        "wall_s": cost.get("wall_s"), "samples_per_s": cost.get("samples_per_s"),
                        "peak_memory_bytes": cost.get("peak_memory_bytes"), "flops": cost.get("flops"),
                        "steps": res["steps"]})  # fmt: skip
        for enc, label in (("random_init", f"random init ({res['encoder']})"), ("raw", "raw pixels"),
                           ("supervised", f"supervised from scratch ({res['encoder']})")):  # fmt: skip
            if enc in by_enc and label not in seen_base:
                seen_base.add(label)
                acc = {c: by_enc[enc].get(c) for c in cells}
                entries.append({"name": label, "kind": "baseline", "encoder": res["encoder"] if enc != "raw" else "-",
                                "accuracy": acc, "mean_accuracy": _mean(list(acc.values()))})  # fmt: skip
    entries.sort(key=lambda e: -(e["mean_accuracy"] if e["mean_accuracy"] is not None else -1))
    return entries


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def leaderboard_table(entries: list[dict], protocols: list[str], fractions: list[float]) -> tuple[list, list]:
    """Header and rows of strings (shared by the printed table, the README and report.html)."""
    from selfsup.report.html import fmt_bytes, fmt_si

    cells = [f"{p}@{f:g}" for p in protocols for f in fractions]
    head = ["#", "method", "encoder", *[f"{p} {100 * f:g}%" for p in protocols for f in fractions], "mean",
            "wall", "samples/s", "peak mem", "train FLOPs"]  # fmt: skip
    rows = []
    rank = 0
    for e in entries:
        rank += e["kind"] == "method"
        acc = [f"{100 * e['accuracy'][c]:.1f}" if e["accuracy"].get(c) is not None else "-" for c in cells]
        mean = f"{100 * e['mean_accuracy']:.1f}" if e["mean_accuracy"] is not None else "-"
        if e["kind"] == "method":
            cost = [f"{e['wall_s']:.0f} s" if e.get("wall_s") is not None else "-",
                    f"{e['samples_per_s']:.0f}" if e.get("samples_per_s") is not None else "-",
                    fmt_bytes(e["peak_memory_bytes"]) if e.get("peak_memory_bytes") else "-",
                    fmt_si(float(e["flops"])) if e.get("flops") else "-"]  # fmt: skip
            rows.append([str(rank), e["name"], e["encoder"], *acc, mean, *cost])
        else:
            rows.append(["", e["name"], e["encoder"] if e["name"] != "raw pixels" else "-", *acc, mean,
                         "-", "-", "-", "-"])  # fmt: skip
    return head, rows


def format_leaderboard(entries: list[dict], protocols: list[str], fractions: list[float]) -> str:
    head, rows = leaderboard_table(entries, protocols, fractions)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda r: "  ".join(str(c).rjust(w) if i not in (1, 2) else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))  # fmt: skip
    return "\n".join([line(head), "-" * len(line(head)), *map(line, rows)])


def markdown_leaderboard(entries: list[dict], protocols: list[str], fractions: list[float]) -> str:
    head, rows = leaderboard_table(entries, protocols, fractions)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
