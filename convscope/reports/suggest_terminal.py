"""Terminal output of ``convscope suggest`` (rich).  Reads an :class:`Advice`; prints nothing else."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from convscope.analyses.advice import Advice, Suggestion
from convscope.reports._text import esc as escape
from convscope.reports._text import plain
from convscope.reports.terminal import render_caveats, table_layout
from convscope.results import Analysis
from convscope.units import fmt_count, fmt_ms, fmt_rf, fmt_share

__all__ = ["render_advice"]


def _delta(new: float, old: float, digits: int = 1) -> str:
    if not old:
        return ""
    r = new / old - 1
    return "±0%" if abs(r) < 0.5 * 10 ** -(2 + digits) else f"{100 * r:+.{digits}f}%"


def _unprod(a: Analysis) -> str:
    p, m = a.unproductive_share
    return "none" if not p and not m and not a.unproductive_layers() else f"{fmt_share(p)} / {fmt_share(m)}"


def _layers(s: Suggestion) -> str:
    parts = []
    if s.removed:
        parts.append(f"−{len(s.removed)}")
    if s.changed:
        parts.append(f"~{len(s.changed)}")
    if s.added:
        parts.append(f"+{len(s.added)}")
    first = (s.removed + s.changed + s.added)[:1]
    more = " …" if len(s.layers_touched) > 1 else ""
    return f"{' '.join(parts)}: {', '.join(first)}{more}" if parts else ""


def _row(label: str, a: Analysis, base: Analysis, has_ms: bool) -> list[str]:
    row = [label, fmt_count(a.totals.params), _delta(a.totals.params, base.totals.params),
           fmt_count(a.totals.macs), _delta(a.totals.macs, base.totals.macs)]
    if has_ms:
        ms = a.latency.ms if a.latency else None
        row += [fmt_ms(ms), _delta(ms, base.latency.ms) if ms is not None and base.latency else ""]
    row += [a.border_layer or "none", _unprod(a)]
    return row


def _narrow_row(label: str, a: Analysis, base: Analysis, has_ms: bool) -> list[str]:
    """Value and change in one cell, border layer and unproductive share in one: 80 columns."""
    def cell(new: float | None, old: float | None, fmt: object) -> str:
        if new is None:
            return "?"
        d = _delta(new, old, 0) if old else ""
        return f"{fmt(new)} {d}".strip()  # type: ignore[operator]
    row = [label, cell(a.totals.params, base.totals.params, fmt_count), cell(a.totals.macs, base.totals.macs, fmt_count)]
    if has_ms:
        row.append(cell(a.latency.ms if a.latency else None, base.latency.ms if base.latency else None, fmt_ms))
    un = _unprod(a)
    row.append(f"{a.border_layer or 'none'}" + ("" if un == "none" else f" ({un})"))
    return row


def _narrow_table(adv: Advice, has_ms: bool, kw: dict[str, object]) -> Table:
    t = Table(title=_title(adv), title_justify="left", header_style="bold", **kw)  # type: ignore[arg-type]
    t.add_column("#", justify="right")
    t.add_column("rewrite", overflow="fold")
    for col in ("params", "MACs") + (("ms",) if has_ms else ()):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("border (unprod. params / MACs)", overflow="fold")
    t.add_row("", *map(escape, _narrow_row("original", adv.base, adv.base, has_ms)), style="bold")
    for i, s in enumerate(adv.suggestions, start=1):
        label = s.key + ("" if s.recommended else " (refused)")
        t.add_row(str(i), *map(escape, _narrow_row(label, s.analysis, adv.base, has_ms)),
                  style=None if s.recommended else "red")
    return t


def _title(adv: Advice) -> str:
    shape = "×".join(map(str, adv.input))
    by = "predicted ms" if adv.sorted_by == "ms" else "MACs"
    return f"suggest: {escape(adv.model)} — input {shape}; sorted by {by} saved"


def _table(adv: Advice, has_ms: bool) -> Table:
    t = Table(title=_title(adv), title_justify="left", header_style="bold")
    t.add_column("#", justify="right")
    t.add_column("rewrite", no_wrap=True)
    for col in ("params", "Δ", "MACs", "Δ"):
        t.add_column(col, justify="right")
    if has_ms:
        t.add_column("ms", justify="right")
        t.add_column("Δ", justify="right")
    t.add_column("border layer", overflow="fold")
    t.add_column("unprod. params / MACs", justify="right")
    t.add_column("layers −gone ~edited +new", overflow="fold")
    t.add_row("", *map(escape, _row("original", adv.base, adv.base, has_ms)), "", style="bold")
    for i, s in enumerate(adv.suggestions, start=1):
        style = None if s.recommended else "red"
        label = s.key + ("" if s.recommended else " (refused)")
        t.add_row(str(i), *map(escape, [*_row(label, s.analysis, adv.base, has_ms), _layers(s)]), style=style)
    return t


def render_advice(adv: Advice, console: Console, *, written: dict[str, Path] | None = None,
                  explain: bool = True) -> None:
    has_ms = adv.base.latency is not None
    narrow, kw = table_layout(console)
    console.print(_narrow_table(adv, has_ms, kw) if narrow else _table(adv, has_ms))
    if has_ms and adv.base.latency is not None:
        lat = adv.base.latency
        console.print(plain(f"latency: tier {lat.tier} · {lat.device} · {lat.backend} · batch {lat.batch}"))
    if adv.latency_note:
        console.print(Text(adv.latency_note, style="dim"))
    for w in adv.depth.warnings:
        console.print(Text(f"depth warning: {w.message} — {w.rule}", style="yellow"))
    if explain:
        for i, s in enumerate(adv.suggestions, start=1):
            line = Text(f"{i}. ", style="bold")
            line.append(f"{s.title} [{s.key}]: ", style="bold")
            line.append(s.explanation)
            console.print(line)
            for n in s.notes:
                console.print(plain(f"   note: {n}"))
            if s.refused:
                console.print(Text(f"   refused: {s.refused}", style="red"))
    if adv.not_applicable:
        console.print("[bold]not applicable[/bold]")
        for _key, title, reason in adv.not_applicable:
            console.print(Text(f"  {title}: {reason}", style="dim"))
    lo, hi = adv.base.feasible_resolution
    console.print(Text(f"feasible input resolution (no unproductive convolution, last layer sees the whole input): "
                       f"{fmt_rf(lo)}–{fmt_rf(hi)} px"))
    render_caveats(adv.base, console)
    if written:
        d = next(iter(written.values())).parent
        console.print(Text(f"wrote {len(written)} spec file(s) to {d}/ (the original and "
                           f"{len(written) - 1} recommended variant(s)); `convscope analyze FILE` reads each back"))
