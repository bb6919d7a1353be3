"""Units, named once: ``macs`` (multiply-accumulates; ``flops = 2·macs``), ``*_bytes`` always bytes,
``*_ms`` milliseconds.  One formatter per kind of number, used by every report."""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["plural", "fmt_count", "fmt_bytes", "fmt_ms", "fmt_rf", "fmt_share", "json_number"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "layer")`` -> '1 layer', ``plural(3, "layer")`` -> '3 layers'."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def fmt_count(n: float) -> str:
    """1234 -> '1.23K', 4.1e9 -> '4.10G'."""
    n = float(n)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= limit:
            return f"{n / limit:.2f}{suffix}"
    return f"{n:.0f}"


def fmt_bytes(n: float) -> str:
    n = float(n)
    for limit, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= limit:
            return f"{n / limit:.2f} {suffix}"
    return f"{n:.0f} B"


def fmt_mb(n: float) -> str:
    """Decimal megabytes, as plan constraints (``weights_mb``) count them; kB or B below 0.1 MB, so a
    small network's weights do not read as 0.0 MB."""
    n = float(n)
    if abs(n) >= 1e5:
        return f"{n / 1e6:.1f} MB"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n:.0f} B"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.0f} µs"


def fmt_rf(v: object) -> str:
    """A receptive-field number: ints as is, fractions as 2.5, infinity as ∞, unknown as ?."""
    if v is None:
        return "?"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if isinstance(v, (Fraction, float)):
        return f"{float(v):g}"
    return str(v)


def fmt_pair(v: object) -> str:
    """A per-axis pair (h, w) of receptive-field numbers: one number when both axes agree."""
    if v is None:
        return "?"
    a, b = v  # type: ignore[misc]
    return fmt_rf(a) if a == b else f"{fmt_rf(a)}×{fmt_rf(b)}"


def fmt_jump(rf_max: object, jump: object) -> str:
    """A layer's jump: "–" on an axis a global op took (no grid left there, so no jump: after global
    pooling both, after a mean over the height that one), "?" when it is unknown."""
    if rf_max is None:
        return fmt_pair(jump)
    js = tuple(jump) if jump is not None else (None, None)  # type: ignore[call-overload]
    cells = ["–" if isinstance(r, float) and math.isinf(r) and j is None else fmt_rf(j)
             for r, j in zip(rf_max, js)]  # type: ignore[call-overload]
    return cells[0] if cells[0] == cells[1] else f"{cells[0]}×{cells[1]}"


def fmt_share(x: float) -> str:
    return f"{100 * x:.1f}%"


def json_number(v: object) -> int | float | None:
    """JSON has no infinity: ∞ (a global receptive field) is written as null; fractions as floats."""
    if v is None:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Fraction):
        return int(v) if v.denominator == 1 else float(v)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else v
    raise TypeError(f"not a number: {v!r}")


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in (0x09, 0x0A)}


def printable(text: object) -> str:
    """``text`` with control characters written out (``\\x1b``): a name from a user's file must not
    reach a terminal as an escape sequence."""
    return str(text).translate(_CONTROL)
