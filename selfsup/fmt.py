"""Small formatting helpers shared by training, evaluation and the CLI."""

from __future__ import annotations


def fmt_duration(seconds: float) -> str:
    """90 -> '1m30s', 4000 -> '1h06m', 7 -> '7s'."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "line")`` -> "1 line", ``count(3, "line")`` -> "3 lines"."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
