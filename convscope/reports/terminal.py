"""Terminal tables (rich).  Renderers take a result and a Console; they only read the result."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from convscope.results import Analysis, LayerRow
from convscope.reports._text import esc, plain
from convscope.units import fmt_bytes, fmt_count, fmt_jump, fmt_ms, fmt_pair, fmt_rf, fmt_share, plural, printable

__all__ = ["render_analysis", "render_zoo_list", "MAIN_OPS"]

# Ops shown without --all: the layers that shape the receptive field or hold weights, and merges.
MAIN_OPS = frozenset({
    "conv", "convT", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "gap", "gmp",
    "upsample", "pixel_shuffle", "pixel_unshuffle", "linear", "add", "concat", "matmul", "attention",
    "unknown",
})


def _kernel(r: LayerRow) -> str:
    if r.kernel is None:
        return ""
    k = f"{r.kernel[0]}" if r.kernel[0] == r.kernel[1] else f"{r.kernel[0]}×{r.kernel[1]}"
    parts = [k]
    if r.stride and r.stride != (1, 1):
        parts.append(f"/{r.stride[0]}" if r.stride[0] == r.stride[1] else f"/{r.stride[0]}×{r.stride[1]}")
    if r.dilation and r.dilation != (1, 1):
        d = r.dilation
        parts.append(f" d{d[0]}" if d[0] == d[1] else f" d{d[0]}×{d[1]}")
    if r.groups and r.groups > 1:
        parts.append(f" g{r.groups}")
    return "".join(parts)


def _wrap_path(name: str, width: int) -> str:
    """A module path on lines of at most ``width`` characters, broken after its dots where it can
    (``features.17.conv.`` / ``1.0``, never ``features.17.c`` / ``onv.1.0``)."""
    lines: list[str] = []
    cur = ""
    for part in name.replace(".", ".\0").split("\0"):
        if cur and len(cur) + len(part) > width:
            lines.append(cur)
            cur = ""
        cur += part
    lines.append(cur)
    return "\n".join(lines)


NARROW = 110  # below this many columns the layer table is compacted (80-column terminals, pipes)


def table_layout(console: Console, narrow_below: int = NARROW) -> tuple[bool, dict[str, Any]]:
    """(narrow, Table keyword arguments): below ``narrow_below`` columns a table loses its borders
    and outer padding, and the caller drops or merges columns, so that 80 columns stay readable."""
    narrow = console.width < narrow_below
    return narrow, ({"box": box.SIMPLE_HEAD, "pad_edge": False, "padding": (0, 1, 0, 0)} if narrow else {})


def render_analysis(a: Analysis, console: Console, *, all_layers: bool = False) -> None:
    has_ms = a.latency is not None
    title = f"{esc(a.model)} — input {'×'.join(map(str, a.input))}, {a.dtype}, batch {a.batch}"
    narrow, kw = table_layout(console)
    t = Table(title=title, title_justify="left", show_lines=False, header_style="bold", **kw)
    if narrow:  # 80 columns: op and kernel share a column, rf min–max one, no jump, short marks
        t.add_column("layer", overflow="fold", min_width=12)
        for col in ("op", "out", "params", "MACs", "rf") + (("ms",) if has_ms else ()):
            t.add_column(col, no_wrap=True, justify="left" if col in ("op", "out") else "right")
    else:
        for col in ("layer", "op", "kernel", "out shape"):
            t.add_column(col, overflow="fold" if col == "layer" else "ellipsis")
        for col in ("params", "MACs", "rf min", "rf max", "jump") + (("ms",) if has_ms else ()):
            t.add_column(col, justify="right")
    t.add_column("", overflow="fold")
    rows: list[tuple[list[str], str | None]] = []
    for r in a.layers:
        is_border = r.name == a.border_layer
        if not (all_layers or r.op in MAIN_OPS or r.unproductive or is_border):
            continue
        mark = f"weights of {r.shares}" if r.shares else ""
        style = None
        if r.unproductive:
            mark, style = "unproductive" if not narrow else "unprod.", "red"
        if is_border:
            mark = "◀ border" + ((" · unproductive" if not narrow else " unprod.") if r.unproductive else "")
            style = "bold yellow" if not r.unproductive else "bold red"
        if r.is_unknown:
            mark, style = f"unknown op: {r.target}", "magenta"
        sizes = [fmt_count(r.params) if r.params else "", fmt_count(r.macs) if r.macs else ""]
        shape = "×".join(map(str, r.out_shape))
        if narrow:
            rf = fmt_pair(r.rf_min) if r.rf_min == r.rf_max else f"{fmt_pair(r.rf_min)}–{fmt_pair(r.rf_max)}"
            row = [r.name, f"{r.op} {_kernel(r)}".strip(), shape, *sizes, rf]
        else:
            row = [r.name, r.op, _kernel(r), shape, *sizes, fmt_pair(r.rf_min), fmt_pair(r.rf_max), fmt_jump(r.rf_max, r.jump)]
        if has_ms:
            row.append(fmt_ms(r.ms) if r.ms else "")
        row.append(mark)
        rows.append((row, style))
    if narrow and rows:  # long module paths break at their dots, in the width the other columns leave
        others = sum(max(len(str(c.header)), *(len(row[i]) for row, _ in rows)) + 2  # padding and rule
                     for i, c in enumerate(t.columns) if i > 0)
        width = max(12, console.width - others - 1)
        rows = [([_wrap_path(row[0], width), *row[1:]], style) for row, style in rows]
        t.columns[0].min_width = max(len(line) for row, _ in rows for line in row[0].split("\n"))
    for row, style in rows:
        t.add_row(*(plain(c) for c in row), style=style)
    console.print(t)
    tot = a.totals
    console.print(
        f"[bold]total[/bold] params {fmt_count(tot.params)} ({fmt_bytes(tot.weight_bytes)} of weights) · "
        f"MACs {fmt_count(tot.macs)} · elementwise {fmt_count(tot.elementwise_ops)} · "
        f"peak activations {fmt_bytes(tot.peak_activation_bytes)} · memory traffic {fmt_bytes(tot.bytes_moved)}"
    )
    if a.latency is not None:
        lat = a.latency
        threads = f", {plural(lat.threads, 'thread')}" if lat.threads else ""
        console.print(
            f"[bold]latency[/bold] {fmt_ms(lat.ms)} (band {fmt_ms(lat.low_ms)} – {fmt_ms(lat.high_ms)}) · "
            f"tier {lat.tier} · {esc(lat.device)} · {lat.backend}{threads} · batch {lat.batch}"
        )
        for note in lat.notes:
            console.print(plain(f"  note: {note}"))
    lo, hi = a.feasible_resolution
    n_un = len(a.unproductive_layers())
    summary = Text()
    summary.append("summary ", style="bold")
    summary.append(f"at {a.resolution[0]}×{a.resolution[1]}: border layer ")
    blind = len(a.unjudged_layers())
    if blind:
        none = (f"none among the layers whose receptive field is known ({blind} layer{'s' if blind != 1 else ''} "
                "after unknown ops cannot be judged)")
    else:
        signal = a.resolution[0] == 1 < a.resolution[1]  # a 1xL signal: its length is what is seen
        none = ("none (no layer's rf_min exceeds the input's length)" if signal
                else "none (no layer's rf_min exceeds the input on both axes)")
    summary.append(printable(a.border_layer) if a.border_layer else none, style="yellow" if a.border_layer else None)
    summary.append(f"; {n_un} unproductive layer{'s' if n_un != 1 else ''}")
    if n_un:
        summary.append(f" holding {fmt_share(a.unproductive_share[0])} of params and "
                       f"{fmt_share(a.unproductive_share[1])} of MACs", style="red")
    if a.resolution[0] == 1 < a.resolution[1]:
        summary.append(f"; feasible input length {fmt_rf(lo)}–{fmt_rf(hi)}")
    else:
        summary.append(f"; feasible input resolution {fmt_rf(lo)}–{fmt_rf(hi)} px")
    console.print(summary)
    render_caveats(a, console)


def render_caveats(a: Analysis, console: Console) -> None:
    """What a reader of the numbers must know: an empty feasible range, the front end's notes, the
    ops convscope does not know (analyze and suggest both print these)."""
    lo, hi = a.feasible_resolution
    if lo is not None and hi is not None and lo > hi:
        console.print("  (no resolution is both free of unproductive layers and fully seen by the last layer)")
    for note in a.notes:
        console.print(plain(f"note: {note}"))
    if a.unknown_ops:
        console.print(f"[magenta]{len(a.unknown_ops)} unknown op(s)[/magenta]: "
                      + esc(", ".join(f"{n} ({t})" for n, t in a.unknown_ops))
                      + " — their cost is not counted and receptive fields after them are unknown")


def render_zoo_list(entries: list, console: Console) -> None:  # type: ignore[type-arg]
    t = Table(title="convscope zoo", title_justify="left", header_style="bold")
    t.add_column("name")
    t.add_column("input")
    t.add_column("classes", justify="right")
    t.add_column("description", overflow="fold")
    for e in entries:
        name = f"zoo:{e.name}" + (":ARCH" if e.generated else "")
        t.add_row(name, "×".join(map(str, e.input)), str(e.classes or ""), e.description)
    console.print(t)
