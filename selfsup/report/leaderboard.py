"""The leaderboard of ``selfsup compare``: entries from each run's eval rows and cost, and their tables.

Methods are ranked by the mean of their validation scores over every protocol x label fraction
(validation is carved from the labelled training split); the cells shown are test scores, which
are reported and never ranked on.
"""

from __future__ import annotations


def _cells(protocols: list[str], fractions: list[float]) -> list[str]:
    return [f"{p}@{f:g}" for p in protocols for f in fractions]


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _by_encoder(rows: list[dict], split: str, metric: str = "accuracy") -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("split") == split and r.get("metric", "accuracy") == metric:
            out.setdefault(r["encoder"], {})[f"{r['protocol']}@{r['labels']:g}"] = r["value"]
    return out


def leaderboard(results: list[dict], protocols: list[str], fractions: list[float], metric: str = "accuracy"
                ) -> list[dict]:  # fmt: skip
    """One entry per method plus the baselines (random init per architecture, raw input, supervised), ranked
    by the mean validation score of ``metric`` over every protocol x label fraction (best first: the highest
    accuracy, the lowest error rate); ``accuracy`` holds the test cells (of ``metric``) and ``mean_accuracy`` their
    mean."""
    from selfsup.evaluate.tasks import higher_is_better

    cells = _cells(protocols, fractions)
    entries, seen_base = [], set()
    for res in results:
        test, val = _by_encoder(res["rows"], "test", metric), _by_encoder(res["rows"], "val", metric)
        cost = res["cost"]
        pre, pre_val = test.get("pretrained", {}), val.get("pretrained", {})
        entries.append({"name": res["method"], "kind": "method", "encoder": res["encoder"],
                        "accuracy": {c: pre.get(c) for c in cells}, "mean_accuracy": _mean([pre.get(c) for c in cells]),
                        "val_accuracy": {c: pre_val.get(c) for c in cells},
                        "val_mean": _mean([pre_val.get(c) for c in cells]),
                        "wall_s": cost.get("wall_s"), "samples_per_s": cost.get("samples_per_s"),
                        "peak_memory_bytes": cost.get("peak_memory_bytes"), "flops": cost.get("flops"),
                        "steps": res["steps"]})  # fmt: skip
        for enc, label in (("random_init", f"random init ({res['encoder']})"), ("raw", "raw input"),
                           ("onehot", "one-hot residues"),
                           ("supervised", f"supervised from scratch ({res['encoder']})")):  # fmt: skip
            if enc in test and label not in seen_base:
                seen_base.add(label)
                acc = {c: test[enc].get(c) for c in cells}
                vacc = {c: val.get(enc, {}).get(c) for c in cells}
                arch = "-" if enc in ("raw", "onehot") else res["encoder"]
                entries.append({"name": label, "kind": "baseline", "encoder": arch,
                                "accuracy": acc, "mean_accuracy": _mean(list(acc.values())), "val_accuracy": vacc,
                                "val_mean": _mean(list(vacc.values()))})  # fmt: skip
    sign = -1 if higher_is_better(metric) else 1
    entries.sort(key=lambda e: sign * e["val_mean"] if e["val_mean"] is not None else float("inf"))
    return entries


def leaderboard_table(entries: list[dict], protocols: list[str], fractions: list[float]) -> tuple[list, list]:
    """Header and rows of strings (shared by the printed table, the README and report.html)."""
    from selfsup.report.html import fmt_bytes, fmt_si

    cells = _cells(protocols, fractions)
    head = ["#", "method", "encoder", *[f"{p} {100 * f:g}%" for p in protocols for f in fractions], "test mean",
            "val mean", "wall", "samples/s", "peak mem", "train FLOPs"]  # fmt: skip
    rows, rank = [], 0
    pct = lambda v: f"{100 * v:.1f}" if v is not None else "-"  # noqa: E731
    for e in entries:
        rank += e["kind"] == "method"
        acc = [pct(e["accuracy"].get(c)) for c in cells]
        means = [pct(e["mean_accuracy"]), pct(e.get("val_mean"))]
        if e["kind"] == "method":
            cost = [f"{e['wall_s']:.0f} s" if e.get("wall_s") is not None else "-",
                    f"{e['samples_per_s']:.0f}" if e.get("samples_per_s") is not None else "-",
                    fmt_bytes(e["peak_memory_bytes"]) if e.get("peak_memory_bytes") else "-",
                    fmt_si(float(e["flops"])) if e.get("flops") else "-"]  # fmt: skip
            rows.append([str(rank), e["name"], e["encoder"], *acc, *means, *cost])
        else:
            rows.append(["", e["name"], e["encoder"], *acc, *means, "-", "-", "-", "-"])
    return head, rows


def format_leaderboard(entries: list[dict], protocols: list[str], fractions: list[float]) -> str:
    head, rows = leaderboard_table(entries, protocols, fractions)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda r: "  ".join(str(c).rjust(w) if i not in (1, 2) else str(c).ljust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))  # fmt: skip
    return "\n".join([line(head), "-" * len(line(head)), *map(line, rows)])


def markdown_leaderboard(entries: list[dict], protocols: list[str], fractions: list[float]) -> str:
    head, rows = leaderboard_table(entries, protocols, fractions)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


__all__ = ["format_leaderboard", "leaderboard", "leaderboard_table", "markdown_leaderboard"]
