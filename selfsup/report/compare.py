"""The pictures and the page of ``selfsup compare``: accuracy per method beside what it cost."""

from __future__ import annotations

import html
import json
from pathlib import Path

from selfsup.report.plots import _PALETTE, _style, new_figure, save_png


def compare_chart(report: dict, path: Path) -> Path:
    """Left: accuracy of each method for every protocol at the largest label fraction, with the
    baselines as vertical lines. Right: mean accuracy against training FLOPs (log scale)."""
    entries = report["leaderboard"]
    protocols, frac = report["protocols"], max(report["labels"])
    methods = [e for e in entries if e["kind"] == "method"][::-1]  # best at the top
    baselines = [e for e in entries if e["kind"] == "baseline"]
    legend_rows = -(-(len(protocols) * (len(baselines) + 1)) // 2)  # the left legend, two columns below the bars
    fig = new_figure(13, 0.45 * len(methods) + 2.4 + 0.22 * legend_rows)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    _style(ax)
    _style(ax2)
    height = 0.8 / max(1, len(protocols))
    colours = _PALETTE
    lo = 1.0
    for j, proto in enumerate(protocols):
        cell = f"{proto}@{frac:g}"
        vals = [100 * (e["accuracy"].get(cell) or 0) for e in methods]
        lo = min([lo * 100, *[v for v in vals if v > 0]]) / 100
        ys = [i + (j - (len(protocols) - 1) / 2) * height for i in range(len(methods))]
        ax.barh(ys, vals, height=height, color=colours[j % len(colours)], label=f"{proto} ({100 * frac:g}% labels)")
        for y, v in zip(ys, vals):
            ax.text(v + 0.2, y, f"{v:.1f}", va="center", fontsize=7)
        for k, b in enumerate(baselines):
            acc = b["accuracy"].get(cell)
            if acc is not None:
                ax.axvline(100 * acc, color=colours[j % len(colours)], linestyle=("--", ":", "-.")[k % 3],
                           linewidth=1, label=f"{b['name']}, {proto}")  # fmt: skip
                lo = min(lo, acc)
    ax.set_yticks(range(len(methods)), [e["name"] for e in methods])
    ax.set_xlabel("test accuracy (%)")
    ax.set_xlim(max(0, 100 * lo - 8), 100)
    ax.set_title(f"{report['data']}, budget {report['budget']} per method")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)

    for i, e in enumerate(methods):
        if e.get("flops") and e.get("mean_accuracy") is not None:
            ax2.scatter(e["flops"], 100 * e["mean_accuracy"], color=colours[i % len(colours)], s=40)
            wall = f", {e['wall_s']:.0f} s" if e.get("wall_s") is not None else ""
            ax2.annotate(f"{e['name']}{wall}", (e["flops"], 100 * e["mean_accuracy"]), fontsize=8,
                         xytext=(4, 3), textcoords="offset points")  # fmt: skip
    for k, b in enumerate(baselines):
        if b.get("mean_accuracy") is not None:
            ax2.axhline(100 * b["mean_accuracy"], color="grey", linestyle=("--", ":", "-.")[k % 3], linewidth=1,
                        label=b["name"])  # fmt: skip
    ax2.set_xscale("log")
    ax2.set_xlabel("training FLOPs (forward + backward)")
    ax2.set_ylabel("mean test accuracy over protocols and label fractions (%)")
    ax2.set_title("accuracy against compute")
    if baselines:
        ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    return save_png(fig, path)


def write_compare_report(out: Path, report: dict) -> Path:
    """``OUT/compare.png`` and a self-contained ``OUT/report.html``."""
    from selfsup.report.html import write_report
    from selfsup.report.leaderboard import leaderboard_table

    chart = compare_chart(report, out / "compare.png")
    head, rows = leaderboard_table(report["leaderboard"], report["protocols"], report["labels"])
    shared = ", ".join(f"{k} {v}" for k, v in report["shared"].items())
    intro = (f"Each method was pretrained on <b>{html.escape(report['data'])}</b> with the same settings ({shared}), "
             f"then scored with {', '.join(report['protocols'])} at "
             f"{', '.join(f'{100 * f:g}%' for f in report['labels'])} of the training labels. "
             "Methods are ranked by their mean validation score over all of these (validation is carved from the "
             "labelled training split); the cells are test scores, reported and never ranked on. Baselines are the "
             "same encoder at random initialization and a probe on the raw input. Wall time, samples/s and peak memory "
             "are "
             "each run's own (one process per run); training FLOPs are forward + backward FLOPs of a step, "
             "counted with torch.utils.flop_counter, times the steps.")  # fmt: skip
    runs = [[r["method"], r["run"], str(r["steps"]), r["cost"].get("device", "-")] for r in report["runs"]]
    sections = [
        ("Leaderboard", [("text", intro), ("table", (head, rows))]),
        ("Accuracy and cost", [("image", chart)]),
        ("Runs", [("table", (["method", "run folder", "steps", "device"], runs))]),
    ]
    if report.get("audit"):
        from selfsup.report.audit import compare_sections

        sections += compare_sections(out, report["audit"])
    settings = {k: report.get(k) for k in ("data", "budget", "task", "shared", "variants", "protocols", "labels")}
    sections.append(("Settings (compare.json has every number)", [("code", json.dumps(settings, indent=1))]))
    return write_report(out / "report.html", f"selfsup compare: {report['data']}", sections)
