"""The presentation of ``selfsup audit``: terminal tables, a per-group chart and report.html.

Everything here reads the audit dict of ``selfsup/evaluate/audit.py`` (also ``RUN/audit.json``): ``rows`` (one per
task, protocol, labels, encoder, metric and group, with a bootstrap interval; the group ``"all"`` is the whole test
split), ``gaps`` and ``leakage``. Values are fractions, shown as percentages. The worst group is the largest error
rate or the smallest accuracy (``selfsup.evaluate.tasks.higher_is_better``); the gaps shown are recomputed from the
rows by :func:`group_gaps`, so the tables, the chart and the page always agree with one another.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from selfsup.report.html import run_summary, write_report
from selfsup.report.plots import _ENCODER_COLORS, _PALETTE, _style, encoder_label, new_figure, save_png

ALL = "all"  # the group name of the whole test split
GAP_TITLE = "gap (worst - best)"
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

Key = tuple  # (task, protocol, labels, metric)


def _higher_is_better(metric: str) -> bool:
    from selfsup.evaluate.tasks import higher_is_better  # imported late: keeps `selfsup.report` free of torch

    return higher_is_better(metric)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _frac(labels: float | None) -> str:
    return "-" if labels is None else f"{100 * labels:g}%"


def _metric_title(metric: str) -> str:
    """'cer' -> 'CER (lower is better)', 'accuracy' -> 'accuracy'."""
    name = metric.upper() if len(metric) <= 3 else metric
    return name if _higher_is_better(metric) else f"{name} (lower is better)"


def _test_rows(audit: dict) -> list[dict]:
    return [r for r in audit.get("rows", []) if r.get("split", "test") == "test"]


def _group_order(groups) -> list[str]:
    """Groups sorted by name, the whole test split ("all") last."""
    names = sorted({str(g) for g in groups if str(g) != ALL})
    return names + ([ALL] if any(str(g) == ALL for g in groups) else [])


def _panels(rows: list[dict]) -> dict[Key, list[dict]]:
    """Rows by (task, protocol, labels, metric), in the order they first appear."""
    out: dict[Key, list[dict]] = {}
    for r in rows:
        out.setdefault((r.get("task"), r["protocol"], r.get("labels"), r["metric"]), []).append(r)
    return out


def _encoders(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["encoder"] for r in rows))


def _cell(r: dict | None) -> str:
    """'41.2% [38.0, 45.0]', 'too small (n=7)', or '-' when there is no number."""
    if r is None:
        return "-"
    if r.get("too_small"):
        return f"too small (n={r.get('n', '?')})"
    if r.get("value") is None:
        return "-"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    if lo is None or hi is None:
        return _pct(r["value"])
    return f"{_pct(r['value'])} [{100 * lo:.1f}, {100 * hi:.1f}]"


def group_gaps(rows: list[dict]) -> list[dict]:
    """Worst and best group per (task, protocol, labels, encoder, metric), over the groups with a number that are not
    too small ("all" excluded); only where at least two groups qualify. ``gap`` = |worst - best| >= 0."""
    pools: dict[tuple, list[tuple[str, float]]] = {}
    for r in rows:
        key = (r.get("task"), r["protocol"], r.get("labels"), r["encoder"], r["metric"])
        pools.setdefault(key, [])
        if str(r["group"]) != ALL and not r.get("too_small") and r.get("value") is not None:
            pools[key].append((str(r["group"]), float(r["value"])))
    gaps = []
    for (task, proto, labels, enc, metric), pts in pools.items():
        if len(pts) < 2:
            continue
        pts.sort(key=lambda p: (p[1], p[0]))
        (lo_g, lo_v), (hi_g, hi_v) = pts[0], pts[-1]
        (best_g, best), (worst_g, worst) = ((hi_g, hi_v), (lo_g, lo_v)) if _higher_is_better(metric) else (
            (lo_g, lo_v), (hi_g, hi_v))  # fmt: skip
        gaps.append({"task": task, "protocol": proto, "labels": labels, "encoder": enc, "metric": metric,
                     "worst_group": worst_g, "worst": worst, "best_group": best_g, "best": best,
                     "gap": abs(worst - best), "groups": len(pts)})  # fmt: skip
    return gaps


def _gap_text(g: dict | None) -> str:
    if g is None:
        return "- (fewer than two groups with enough test samples; --min-group-size N lowers the bar)"
    return (f"{100 * g['gap']:4.1f} points: worst {g['worst_group']} {_pct(g['worst'])}, "
            f"best {g['best_group']} {_pct(g['best'])} ({g['groups']} groups)")  # fmt: skip


def _panel_table(rows: list[dict], attr: str) -> tuple[list[str], list[list]]:
    """One panel's rows as (header, table): a line per group, ``n``, then a column per encoder."""
    encs = _encoders(rows)
    by = {(str(r["group"]), r["encoder"]): r for r in rows}
    table = []
    for g in _group_order({r["group"] for r in rows}):
        ns = [by[(g, e)].get("n") for e in encs if (g, e) in by and by[(g, e)].get("n") is not None]
        table.append([g, ns[0] if ns else None, *[_cell(by.get((g, e))) for e in encs]])
    return [attr, "n", *[encoder_label(e) for e in encs]], table


def _panel_title(key: Key, attr: str, with_task: bool = True) -> str:
    task, proto, labels, metric = key
    parts = ([task] if with_task and task else []) + [proto, f"{_frac(labels)} labels"]
    return " · ".join(parts) + f" · test {_metric_title(metric)} by {attr}"


def _text_table(header: list[str], table: list[list]) -> list[str]:
    cols = [[str(h)] + ["-" if row[i] is None else str(row[i]) for row in table] for i, h in enumerate(header)]
    widths = [max(len(c) for c in col) for col in cols]

    def line(i: int) -> str:
        cells = [col[i] for col in cols]
        return (f"{cells[0]:<{widths[0]}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells[1:], widths[1:]))).rstrip()

    lines = [line(0)]
    lines.append("-" * len(lines[0]))
    lines += [line(i) for i in range(1, len(cols[0]))]
    return lines


def _leakage_table(audit: dict) -> tuple[list[str], list[list]]:
    header = ["encoder", "balanced accuracy test (val)", "chance", "classes", "n test", "L2"]
    table = []
    for lk in audit.get("leakage", []):
        l2 = (lk.get("chosen") or {}).get("l2")
        table.append([encoder_label(lk["encoder"]),
                      f"{_pct(lk.get('balanced_accuracy'))} ({_pct(lk.get('val_balanced_accuracy'))})",
                      _pct(lk.get("chance")), lk.get("classes"), lk.get("n_test"),
                      None if l2 is None else f"{l2:g}"])  # fmt: skip
    return header, table


def format_audit(audit: dict) -> str:
    """The audit as terminal tables: per (task, protocol, labels, metric) a line per group and a column per encoder,
    then the gap between the worst and the best group per encoder; then the leakage probe."""
    attr = audit.get("group_attr") or "group"
    rows = _test_rows(audit)
    panels = _panels(rows)
    gaps = {(g["task"], g["protocol"], g["labels"], g["metric"], g["encoder"]): g for g in group_gaps(rows)}
    with_task = len({k[0] for k in panels}) > 1
    blocks = []
    for key, prow in panels.items():
        lines = [_panel_title(key, attr, with_task), *_text_table(*_panel_table(prow, attr))]
        encs = _encoders(prow)
        width = max(len(encoder_label(e)) for e in encs)
        lines.append(GAP_TITLE)
        lines += [f"  {encoder_label(e):<{width}}  {_gap_text(gaps.get((*key, e)))}" for e in encs]
        blocks.append("\n".join(lines))
    if not panels:
        blocks.append(f"no audit rows by {attr}")
    if audit.get("leakage"):
        title = f"leakage: a linear probe predicting {attr} from frozen features (balanced accuracy)"
        blocks.append("\n".join([title, *_text_table(*_leakage_table(audit))]))
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------- the chart


def _draw_panel(ax, key: Key, rows: list[dict], attr: str, with_task: bool, small_label: str) -> bool:
    """Groups on x, a marker series per encoder with its bootstrap interval, its "all" value dashed.
    Returns whether a too-small marker was drawn."""
    task, proto, labels, metric = key
    encs = _encoders(rows)
    groups = [g for g in _group_order({r["group"] for r in rows}) if g != ALL]
    pos = {g: i for i, g in enumerate(groups)}
    step = min(0.18, 0.8 / max(1, len(encs)))
    small_x: set[int] = set()
    for i, enc in enumerate(encs):
        color = _ENCODER_COLORS.get(enc, _PALETTE[i % len(_PALETTE)])
        off = (i - (len(encs) - 1) / 2) * step
        mine = [r for r in rows if r["encoder"] == enc]
        pts = [r for r in mine if str(r["group"]) in pos and r.get("value") is not None and not r.get("too_small")]
        x = np.array([pos[str(r["group"])] + off for r in pts], dtype=float)
        y = np.array([r["value"] for r in pts], dtype=float)
        lo = np.array([r["value"] if r.get("ci_low") is None else r["ci_low"] for r in pts], dtype=float)
        hi = np.array([r["value"] if r.get("ci_high") is None else r["ci_high"] for r in pts], dtype=float)
        yerr = np.vstack([np.maximum(y - lo, 0), np.maximum(hi - y, 0)]) if len(pts) else None
        ax.errorbar(x, y, yerr=yerr, fmt=_MARKERS[i % len(_MARKERS)], color=color, markersize=5, capsize=2.5,
                    elinewidth=1.1, linestyle="none", label=encoder_label(enc))  # fmt: skip
        small_x |= {pos[str(r["group"])] for r in mine if str(r["group"]) in pos and r.get("too_small")}
        whole = [r["value"] for r in mine if str(r["group"]) == ALL and r.get("value") is not None]
        if whole:
            ax.axhline(whole[0], color=color, linestyle="--", linewidth=1.0, alpha=0.7)
    has_values = any(r.get("value") is not None for r in rows)
    if not has_values:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no group has a value", transform=ax.transAxes, ha="center", va="center", color="#666")
    if small_x:
        ax.scatter(sorted(small_x), [0.03] * len(small_x), marker="x", color="#555", s=30, zorder=3,
                   transform=ax.get_xaxis_transform(), label=small_label)  # fmt: skip
    ax.set_xticks(range(len(groups)))
    many = len(groups) > 8 or sum(len(g) for g in groups) > 30  # long names (accents) overlap level
    rotation = 90 if len(groups) > 20 else (45 if many else 0)
    ax.set_xticklabels(groups, rotation=rotation, ha="right" if rotation == 45 else "center", fontsize=7 if many else 9)
    ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
    ax.set_xlabel(attr)
    ax.set_ylabel(f"test {_metric_title(metric)}")
    name = metric.upper() if len(metric) <= 3 else metric
    ax.set_title(" · ".join(([task] if with_task and task else []) + [proto, f"{_frac(labels)} labels", name]),
                 fontsize=10)  # fmt: skip
    _style(ax)
    ax.grid(False, axis="x")
    return bool(small_x)


def audit_chart(audit: dict, path: str | Path) -> Path:
    """A PNG: one panel per (protocol, labels, metric), groups on x, one marker series per encoder with its bootstrap
    interval as an error bar, each encoder's whole-test-split value as a dashed line, too-small groups as an x."""
    attr = audit.get("group_attr") or "group"
    rows = _test_rows(audit)
    panels = _panels(rows) or {(audit.get("task"), "-", None, "accuracy"): []}
    n_groups = max(1, max(len({r["group"] for r in p} - {ALL}) for p in panels.values()))
    panel_w = max(5.0, 0.3 * n_groups + 1.8)
    most = max(1, min(4, int(16 // panel_w)))  # panels side by side, then balanced rows
    nrows = math.ceil(len(panels) / most)
    ncols = math.ceil(len(panels) / nrows)
    panel_h = 3.6 + (0.8 if n_groups > 8 else 0)
    fig = new_figure(min(ncols * panel_w, 18.0), nrows * panel_h + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    with_task = len({k[0] for k in panels}) > 1
    small = False
    n = audit.get("min_group_size")
    small_label = "too small" + (f" (n < {n}, not scored)" if n is not None else " (not scored)")
    for ax, (key, prow) in zip(axes, panels.items()):
        small |= _draw_panel(ax, key, prow, attr, with_task, small_label)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    legend: dict[str, object] = {}
    for ax in axes[: len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    if small_label in legend:
        legend[small_label] = legend.pop(small_label)  # last, after the encoders
    if any(r.get("value") is not None and str(r["group"]) == ALL for r in rows):
        legend["all test samples (dashed)"] = Line2D([], [], color="#555", linestyle="--", linewidth=1.0)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 6),
                   frameon=False, fontsize=8)  # fmt: skip
    fig.suptitle(f"{audit.get('run') or 'audit'}: test results by {attr}, with bootstrap {_ci_percent(audit)}% "
                 "intervals", fontsize=10)  # fmt: skip
    return save_png(fig, path)


def _ci_percent(audit: dict) -> str:
    lo, hi = audit.get("ci") or (0.025, 0.975)
    return f"{100 * (hi - lo):g}"


# ----------------------------------------------------------------------------- report.html


def _eval_tables(rows: list[dict]) -> list[tuple[str, tuple]]:
    """The plain eval.json test rows: one table per metric, protocol x labels down, encoders across."""
    rows = [r for r in rows if r.get("split", "test") == "test"]
    blocks: list[tuple[str, tuple]] = []
    for metric in dict.fromkeys(r.get("metric", "accuracy") for r in rows):
        mine = [r for r in rows if r.get("metric", "accuracy") == metric]
        encs = _encoders(mine)
        val = {(r["protocol"], r.get("labels"), r["encoder"]): r.get("value") for r in mine}
        keys = list(dict.fromkeys((r["protocol"], r.get("labels")) for r in mine))
        table = [[p, _frac(f), *[None if val.get((p, f, e)) is None else _pct(val[(p, f, e)]) for e in encs]]
                 for p, f in keys]  # fmt: skip
        blocks.append(("text", f"Test {html.escape(_metric_title(metric))} on all test samples."))
        blocks.append(("table", (["protocol", "labels", *[encoder_label(e) for e in encs]], table)))
    return blocks


def _audit_blocks(audit: dict, chart: Path) -> list:
    attr = audit.get("group_attr") or "group"
    task = audit.get("task") or "-"
    unit = "trials" if task == "verify" else "test samples"
    rows = _test_rows(audit)
    e = html.escape
    text = (f"Each metric of the <b>{e(task)}</b> task on <b>{e(str(audit.get('data', '')))}</b>, broken down by "
            f"<b>{e(attr)}</b>, for each encoder and protocol; <i>all</i> is the whole test split. The intervals are "
            f"{_ci_percent(audit)}% bootstrap percentile intervals over the {unit} of each group, from "
            f"{audit.get('bootstrap', '?')} resamples. Groups with fewer than {audit.get('min_group_size', '?')} "
            f"test samples are reported as too small, not as a number, and are left out of the gaps.")  # fmt: skip
    caption = f"Test results by {attr}: error bars are the bootstrap intervals, dashed lines each encoder on all test."
    blocks: list = [("text", text), ("image", (chart, caption))]
    panels = _panels(rows)
    with_task = len({k[0] for k in panels}) > 1
    for key, prow in panels.items():
        blocks.append(("text", f"<b>{e(_panel_title(key, attr, with_task))}</b>"))
        blocks.append(("table", _panel_table(prow, attr)))
    return blocks


def _gaps_block(audit: dict) -> list:
    gaps = group_gaps(_test_rows(audit))
    if not gaps:
        return [("text", "No panel has two groups large enough to compare.")]
    header = ["task", "protocol", "labels", "metric", "encoder", "worst group", "worst", "best group", "best",
              "gap (points)", "groups"]  # fmt: skip
    table = [[g["task"], g["protocol"], _frac(g["labels"]), _metric_title(g["metric"]), encoder_label(g["encoder"]),
              g["worst_group"], _pct(g["worst"]), g["best_group"], _pct(g["best"]), f"{100 * g['gap']:.1f}",
              g["groups"]] for g in gaps]  # fmt: skip
    return [("text", "The worst and the best group of each encoder (the largest and the smallest error rate, or "
                     "the smallest and the largest accuracy), over the groups large enough to be scored."),
            ("table", (header, table))]  # fmt: skip


def _leakage_block(audit: dict) -> list:
    attr = html.escape(audit.get("group_attr") or "group")
    if not audit.get("leakage"):
        return [("text", "No leakage probe in this audit.")]
    return [("text", f"A linear probe on frozen features (L2 chosen on validation) predicts the {attr} itself. "
                     "Balanced accuracy is the mean recall over the classes, so a probe that ignores the features "
                     f"scores chance (1 / classes) however uneven the groups are; the further above chance, the more "
                     f"the features encode {attr}."),
            ("table", _leakage_table(audit))]  # fmt: skip


def write_audit_report(run: Path, cfg, audit: dict, log: Callable[[str], None] = print) -> list[Path]:
    """RUN/audit_<group_attr>.png and RUN/report.html (run, audit by group, gaps, leakage, and the plain evaluation:
    ``audit["eval_rows"]``, else RUN/eval.json when it exists). Returns the paths written."""
    run = Path(run)
    attr = audit.get("group_attr") or "group"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in attr)
    chart = audit_chart(audit, run / f"audit_{safe}.png")
    sections = [("Run", [("kv", run_summary(cfg))]),
                (f"Audit by {attr}", _audit_blocks(audit, chart)),
                ("Gaps", _gaps_block(audit)),
                ("Leakage", _leakage_block(audit))]  # fmt: skip
    eval_rows, eval_path = audit.get("eval_rows"), run / "eval.json"
    if not eval_rows and eval_path.is_file():
        eval_rows = json.loads(eval_path.read_text())
    if eval_rows:
        sections.append(("Evaluation", _eval_tables(eval_rows)))
    page = write_report(run / "report.html", f"selfsup audit: {run.name} by {attr}", sections, subtitle=str(run))
    for p in (chart, page):
        log(f"wrote {p}")
    return [chart, page]


# ----------------------------------------------------------------------------- several runs (compare --group)


def by_run(audits: dict[str, dict], attr: str) -> dict:
    """The audits of several runs (``{run name: audit}``, e.g. compare's variants) as one audit whose encoders are
    the runs (their pretrained encoder) and the baselines (from the first run that has each)."""
    runs_rows: dict[str, list] = {"rows": [], "leakage": []}  # each run's pretrained encoder, renamed to the run
    base_rows: dict[str, list] = {"rows": [], "leakage": []}  # each baseline once, from the first run with it
    base_from: dict = {}
    for name, a in audits.items():
        for key in ("rows", "leakage"):
            for r in a.get(key, []):
                if r["encoder"] == "pretrained":
                    runs_rows[key].append({**r, "encoder": name})
                elif base_from.setdefault((key, r["encoder"]), name) == name:
                    base_rows[key].append(dict(r))
    rows = runs_rows["rows"] + base_rows["rows"]
    leaks = runs_rows["leakage"] + base_rows["leakage"]
    first = next(iter(audits.values()), {})
    keep = ("data", "task", "min_group_size", "bootstrap", "ci", "seed")
    return {**{k: first.get(k) for k in keep}, "group_attr": attr, "runs": list(audits), "rows": rows,
            "gaps": group_gaps(rows), "leakage": leaks}  # fmt: skip


def compare_sections(out: Path, merged: dict) -> list:
    """The per-group sections of compare's report.html: the chart, the tables, the gaps and the leakage."""
    attr = merged.get("group_attr") or "group"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in attr)
    chart = audit_chart({**merged, "run": "compare"}, Path(out) / f"audit_{safe}.png")
    return [(f"By {attr}", _audit_blocks(merged, chart)), ("Gaps", _gaps_block(merged)),
            ("Leakage", _leakage_block(merged))]  # fmt: skip


__all__ = ["audit_chart", "by_run", "compare_sections", "format_audit", "group_gaps",
           "write_audit_report"]  # fmt: skip
