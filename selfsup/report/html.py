"""A self-contained HTML report: sections of text, tables and PNGs embedded as data URIs.

``write_report(path, title, sections)`` takes ``(heading, body)`` pairs. A body is either an HTML
string (made with the ``html_*`` helpers, which escape what they are given) or a list of blocks
``(kind, payload)``:

- ``("text", html)``: a paragraph; the payload is inline HTML (escape untrusted parts yourself)
- ``("table", (header, rows))``: a table; numbers are right-aligned, None shows as a dash
- ``("kv", mapping)``: a two-column table of names and values
- ``("image", png)`` or ``("image", (png, caption))``: a PNG file or its bytes, embedded
- ``("code", text)``: preformatted, escaped text (JSON, a command line)
- ``("html", html)``: inserted as it is
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: none; font-weight: 600; color: #444; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; } figcaption { color: #666; font-size: 0.9em; }
"""  # fmt: skip


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def html_text(text: str) -> str:
    """A paragraph of plain text."""
    return f"<p>{html.escape(str(text))}</p>"


def html_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A table; numbers are right-aligned, None shows as an en dash."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for v in row:
            if v is None:
                cells.append('<td class="num">&ndash;</td>')
            else:
                cls = ' class="num"' if _is_number(v) or str(v).rstrip("%").replace(".", "", 1).isdigit() else ""
                cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_kv(items: Mapping[str, Any]) -> str:
    """A two-column table of names and values (None values are left out)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in items.items() if v is not None)  # fmt: skip
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def html_image(png: str | Path | bytes, alt: str, caption: str | None = None) -> str:
    """A PNG (a file or its bytes) embedded as a base64 data URI, with an optional caption."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{html.escape(alt, quote=True)}">{cap}</figure>'


def render_block(kind: str, payload: Any) -> str:
    """One ``(kind, payload)`` block of a section (see the module docstring) as HTML."""
    if kind == "text":
        return f"<p>{payload}</p>"
    if kind == "table":
        return html_table(*payload)
    if kind == "kv":
        return html_kv(payload)
    if kind == "image":
        png, caption = payload if isinstance(payload, tuple) else (payload, None)
        return html_image(png, Path(png).stem if isinstance(png, (str, Path)) else "figure", caption)
    if kind == "code":
        return f"<pre>{html.escape(str(payload))}</pre>"
    if kind == "html":
        return str(payload)
    raise ValueError(f"unknown report block {kind!r}; use text, table, kv, image, code or html")


def write_report(path: str | Path, title: str, sections: Iterable[tuple[str, str | list]],
                 subtitle: str | None = None) -> Path:  # fmt: skip
    """Write one self-contained HTML page: a title, then each ``(heading, body)`` section, where a
    body is an HTML string or a list of ``(kind, payload)`` blocks."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="sub">{html.escape(subtitle)}</p>')
    for heading, body in sections:
        if not isinstance(body, str):
            body = "\n".join(render_block(kind, payload) for kind, payload in body)
        parts.append(f"<section><h2>{html.escape(heading)}</h2>\n{body}\n</section>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")  # fmt: skip
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- run summaries


def fmt_si(value: float, unit: str = "") -> str:
    """1.23e15 -> '1.23 P' + unit."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    exp = min(6, max(0, int(math.floor(math.log10(abs(value)) / 3))))
    return f"{value / 1000**exp:.3g} {' kMGTPE'[exp].strip()}{unit}".strip()


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def fmt_seconds(s: float) -> str:
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def run_summary(cfg) -> dict[str, str]:
    """Data, method, encoder and budget of a RunConfig, as display strings."""
    d, e, m, t = cfg.data, cfg.encoder, cfg.method, cfg.train
    params = ", ".join(f"{k}={v}" for k, v in sorted(m.params.items()))
    from selfsup.encoders import describe_encoder

    enc = describe_encoder(e.name, e.params) if e.name else "(method default)"
    budget = f"{t.budget}" + (f" = {t.steps} steps" if t.steps else "") + f" of batch {t.batch_size}"
    optim = f"{t.optimizer or 'default'}, lr {t.lr:g}" if t.lr is not None else (t.optimizer or "default")
    return {
        "data": d.name + (f", {d.image_size} px" if d.image_size else "") + (f", first {d.limit}" if d.limit else ""),
        "method": m.name + (f" ({params})" if params else ""),
        "encoder": enc,
        "budget": budget,
        "optimizer": optim + (f", weight decay {t.weight_decay:g}" if t.weight_decay is not None else ""),
        "seed": str(t.seed),
    }


def cost_summary(cost: Mapping[str, Any]) -> dict[str, str]:
    """The figures of a run's cost.json, as display strings (absent keys are left out)."""
    out: dict[str, str] = {}
    if "wall_s" in cost:
        out["wall time"] = fmt_seconds(cost["wall_s"])
    if "steps" in cost:
        out["steps"] = f"{cost['steps']:,}"
    if "samples" in cost:
        out["samples"] = f"{cost['samples']:,}"
    if "samples_per_s" in cost:
        out["samples / s"] = f"{cost['samples_per_s']:,.1f}"
    if "peak_memory_bytes" in cost:
        out["peak memory"] = fmt_bytes(cost["peak_memory_bytes"])
    if cost.get("flops") is not None:
        out["training FLOPs"] = fmt_si(float(cost["flops"]), "FLOP")
    if "device" in cost:
        out["device"] = str(cost["device"]) + (f" x {cost['world_size']}" if cost.get("world_size", 1) > 1 else "")
    return out
