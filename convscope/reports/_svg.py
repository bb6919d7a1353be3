"""Small, dependency-free SVG charts for the HTML reports (inline, so a report is one file).

Each function returns an ``<svg>`` string with a ``data-plot`` attribute naming the chart, so tests
(and a headless browser) can find it.  Values are plotted as given; ``None`` points are skipped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["line_chart", "bar_chart", "PALETTE"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_W, _H = 760, 320
_L, _R, _T, _B = 64, 16, 28, 70


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9 * step:
        if t >= lo - 1e-9 * step:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}K"
    return f"{v:g}"


def line_chart(
    name: str,
    title: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    x_labels: Sequence[str] = (),
    y_label: str = "",
    hlines: Sequence[tuple[str, float]] = (),
    vline: tuple[str, int] | None = None,
    steps: bool = False,
) -> str:
    """Lines over an index axis.  ``hlines`` are labelled horizontal references (input resolution),
    ``vline`` a labelled vertical marker at an index (the border layer)."""
    n = max((len(v) for _, v in series), default=0)
    vals = [v for _, ys in series for v in ys if v is not None and math.isfinite(v)] + [v for _, v in hlines]
    if n == 0 or not vals:
        return f'<svg data-plot="{_esc(name)}" width="{_W}" height="40"><text x="8" y="24">no data</text></svg>'
    lo, hi = 0.0, max(vals) * 1.05
    pw, ph = _W - _L - _R, _H - _T - _B

    def px(i: float) -> float:
        return _L + (pw * i / max(1, n - 1))

    def py(v: float) -> float:
        return _T + ph - ph * (v - lo) / (hi - lo)

    parts = [f'<svg data-plot="{_esc(name)}" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
             f'role="img" aria-label="{_esc(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{_L}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    for t in _nice_ticks(lo, hi):
        y = py(t)
        parts.append(f'<line x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{_L - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{_fmt(t)}</text>')
    if y_label:
        parts.append(f'<text x="14" y="{_T + ph / 2:.0f}" font-size="11" transform="rotate(-90 14 {_T + ph / 2:.0f})" '
                     f'text-anchor="middle">{_esc(y_label)}</text>')
    every = max(1, n // 16)
    for i, lab in enumerate(x_labels):
        if i % every == 0:
            parts.append(f'<text x="{px(i):.1f}" y="{_H - _B + 14}" font-size="9" text-anchor="end" '
                         f'transform="rotate(-35 {px(i):.1f} {_H - _B + 14})">{_esc(lab)}</text>')
    for label, v in hlines:
        y = py(v)
        parts.append(f'<line x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555" stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{_W - _R - 4}" y="{y - 4:.1f}" font-size="11" text-anchor="end">{_esc(label)}</text>')
    if vline is not None:
        x = px(vline[1])
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_T}" y2="{_T + ph}" stroke="#d4a000" stroke-width="2"/>')
        parts.append(f'<text x="{x + 4:.1f}" y="{_T + 12}" font-size="11" fill="#8a6d00">{_esc(vline[0])}</text>')
    for k, (label, ys) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        pts = []
        for i, v in enumerate(ys):
            if v is None or not math.isfinite(v):
                continue
            if steps and pts:
                pts.append(f"{px(i):.1f},{float(pts[-1].split(',')[1]):.1f}")
            pts.append(f"{px(i):.1f},{py(min(v, hi)):.1f}")
        if pts:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>')
        lx = _W - _R - 90 * (len(series) - k)
        parts.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="15" font-size="11">{_esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    name: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    unit: str = "",
    highlight: int | None = None,
    marks: Sequence[float | None] | None = None,
    mark_label: str = "",
) -> str:
    """Horizontal bars with optional error whiskers [low, high] and extra point marks (measured)."""
    n = len(labels)
    row = 26
    height = _T + 20 + n * row + 30
    left = 190
    width = _W
    pw = width - left - 90
    vmax = max([*values, *(high or []), *[m for m in (marks or []) if m is not None]], default=1.0) or 1.0
    vmax *= 1.05

    def px(v: float) -> float:
        return left + pw * v / vmax

    parts = [f'<svg data-plot="{_esc(name)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{_esc(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="8" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    for t in _nice_ticks(0, vmax):
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_T + 8}" y2="{_T + 8 + n * row}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{_T + 22 + n * row}" font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = _T + 10 + i * row
        color = "#2ca02c" if i == highlight else PALETTE[0]
        parts.append(f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">{_esc(lab)}</text>')
        parts.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{max(0.0, px(v) - left):.1f}" height="{row - 8}" '
                     f'fill="{color}" fill-opacity="0.8"><title>{_esc(lab)}: {v:.3g} {_esc(unit)}</title></rect>')
        if low is not None and high is not None:
            parts.append(f'<line x1="{px(low[i]):.1f}" x2="{px(high[i]):.1f}" y1="{y + row / 2 - 1:.1f}" '
                         f'y2="{y + row / 2 - 1:.1f}" stroke="#222" stroke-width="1.5"/>')
            for xv in (low[i], high[i]):
                parts.append(f'<line x1="{px(xv):.1f}" x2="{px(xv):.1f}" y1="{y + 6}" y2="{y + row - 8}" stroke="#222"/>')
        if marks is not None and marks[i] is not None:
            parts.append(f'<circle cx="{px(marks[i]):.1f}" cy="{y + row / 2 - 1:.1f}" r="4" fill="#d62728">'
                         f'<title>{_esc(mark_label)}: {marks[i]:.3g} {_esc(unit)}</title></circle>')
        parts.append(f'<text x="{max(px(v), px(high[i]) if high else 0) + 6:.1f}" y="{y + 14}" font-size="11">'
                     f'{v:.3g} {_esc(unit)}</text>')
    if marks is not None and mark_label:
        parts.append(f'<circle cx="{left + 6}" cy="{height - 8}" r="4" fill="#d62728"/>'
                     f'<text x="{left + 14}" y="{height - 4}" font-size="11">{_esc(mark_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
