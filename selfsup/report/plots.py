"""Small plotting functions with one style, written straight to PNG.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global backend switch), so they work on headless machines and inside notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

# How evaluation encoders are named in tables and plots (eval.json keeps the short keys).
ENCODER_LABELS = {"pretrained": "pretrained", "random_init": "random init", "raw": "raw input",
                  "onehot": "one-hot residues", "supervised": "supervised (from scratch)"}  # fmt: skip
_ENCODER_COLORS = {"pretrained": "#1f77b4", "random_init": "#7f7f7f", "raw": "#bcbd22", "onehot": "#17becf",
                   "supervised": "#d62728"}
_PROTOCOL_STYLES = {"knn": ("o", ":"), "linear": ("s", "--"), "finetune": ("^", "-")}
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]  # fmt: skip


def encoder_label(name: str) -> str:
    return ENCODER_LABELS.get(name, name)


def new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    """A figure on the Agg canvas, with the light grid every plot here uses."""
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax) -> None:
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def line_plot(path: str | Path, series: Sequence[dict], xlabel: str, ylabel: str, title: str | None = None,
              logx: bool = False, percent: bool = False, xticks: Sequence[float] | None = None) -> Path:  # fmt: skip
    """One line per series ``{"label", "x", "y"}`` (optional ``color``, ``marker``, ``linestyle``).

    ``percent``: y values are fractions, shown as percentages; ``xticks`` on a log axis are
    labelled as percentages too when they are fractions (label-efficiency curves).
    """
    fig = new_figure()
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        color = s.get("color", _PALETTE[i % len(_PALETTE)])
        ax.plot(s["x"], s["y"], label=s["label"], color=color, marker=s.get("marker", "o"),
                linestyle=s.get("linestyle", "-"), linewidth=1.8, markersize=5)  # fmt: skip
    if logx:
        ax.set_xscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%" if percent else f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _style(ax)
    if series:
        ax.legend(fontsize=8, frameon=False, loc="best")
    return save_png(fig, path)


def bar_plot(path: str | Path, labels: Sequence[str], values: Sequence[float], ylabel: str,
             title: str | None = None, percent: bool = False) -> Path:  # fmt: skip
    """Vertical bars, one per label, each with its value written above it."""
    fig = new_figure(max(4.0, 0.9 * len(labels) + 2), 4.2)
    ax = fig.add_subplot()
    bars = ax.bar(list(labels), list(values), color=[_PALETTE[i % len(_PALETTE)] for i in range(len(labels))])
    ax.bar_label(bars, labels=[f"{100 * v:.1f}%" if percent else f"{v:.3g}" for v in values], fontsize=8)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _style(ax)
    ax.grid(False, axis="x")
    return save_png(fig, path)


def label_efficiency_plot(rows: Sequence[dict], path: str | Path, title: str | None = None, split: str = "test"
                          ) -> Path:  # fmt: skip
    """The metric against label fraction (log x axis), one line per (protocol, encoder) of eval.json rows."""
    rows = [r for r in rows if r.get("split", split) == split]
    metric = rows[0].get("metric", "accuracy") if rows else "accuracy"
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        curves.setdefault((r["protocol"], r["encoder"]), []).append((r["labels"], r["value"]))
    series = []
    for (proto, enc), pts in curves.items():
        pts.sort()
        marker, style = _PROTOCOL_STYLES.get(proto, ("D", "-."))
        series.append({"label": f"{encoder_label(enc)} · {proto}", "x": [p[0] for p in pts], "y": [p[1] for p in pts],
                       "color": _ENCODER_COLORS.get(enc, _PALETTE[len(series) % len(_PALETTE)]), "marker": marker,
                       "linestyle": style})  # fmt: skip
    fractions = sorted({r["labels"] for r in rows})
    return line_plot(path, series, "labelled fraction of the training set", f"{split} {metric}", title, logx=True,
                     percent=True, xticks=fractions)  # fmt: skip


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE (scikit-learn, PCA init, seeded) of L2-normalized features [N, D] -> [N, 2]."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)


def scatter_plot(path: str | Path, xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 title: str | None = None) -> Path:  # fmt: skip
    """2-d points coloured by class, with a legend of class names."""
    fig = new_figure(7.2, 5.6)
    ax = fig.add_subplot()
    labels = np.asarray(labels)
    many = colormaps["tab20"]
    size = 5 if len(xy) > 1000 else 12
    for c in np.unique(labels):
        pts = xy[labels == c]
        name = class_names[c] if c < len(class_names) else str(c)
        color = _PALETTE[c] if len(class_names) <= len(_PALETTE) else many(int(c) % 20)
        ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.75, color=color, label=name, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    if len(class_names) <= 30:
        ax.legend(fontsize=8, frameon=False, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class")
    return save_png(fig, path)


def embedding_plot(path: str | Path, features: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   title: str | None = None, seed: int = 0) -> Path:  # fmt: skip
    """t-SNE picture of embeddings coloured by class."""
    return scatter_plot(path, tsne_2d(features, seed), labels, class_names, title)
