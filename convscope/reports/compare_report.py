"""Rendering a deployment comparison: a terminal table and a self-contained HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convscope.analyses.deployment import Comparison
from convscope.errors import InputError
from convscope.reports._svg import bar_chart
from convscope.reports._text import esc as tesc
from convscope.reports._text import plain
from convscope.reports.html import _Raw, analysis_section, esc, page, table
from convscope.reports.terminal import table_layout
from convscope.units import fmt_count, fmt_mb, fmt_ms

__all__ = ["render_comparison", "comparison_html", "write_comparison_html"]


NARROW = 120  # below this many columns the tables drop what the verdict and the HTML report repeat


def render_comparison(cmp: Comparison, console: Console) -> None:
    measured = any(c.measured_ms is not None for c in cmp.candidates)
    narrow, box_kw = table_layout(console, NARROW + 14 * measured)  # the measured column needs room too
    t = Table(title=f"{tesc(cmp.plan)} — input {'×'.join(map(str, cmp.input))}, device {tesc(cmp.device)} ({cmp.tier} prediction"
                    f"{', ' + cmp.backend if cmp.backend else ''}{f', batch {cmp.batch}' if cmp.batch != 1 else ''})",
              title_justify="left", header_style="bold", **box_kw)
    cols = [("candidate", False), ("kind", False), ("MACs/frame", True), ("expected", True), ("band", True),
            ("worst", True), ("fps", True), ("weights", True), ("peak act.", True)] + [("measured", True)] * measured
    if narrow:  # the worst case beside the expected time, in brackets where it differs
        cols[3] = ("expected (worst)", True)
    keep = [i for i, (col, _) in enumerate(cols) if not (narrow and col in ("kind", "band", "worst", "peak act."))]
    for i in keep:
        col, right = cols[i]
        t.add_column(col, justify="right" if right else "left", no_wrap=i == 0 or right)
    v = cmp.verdict
    for c in cmp.ranked():
        mark = " ◀ best" if c.name == v.best else (" ≈ tie" if c.name in v.tied_with else "")
        expected = fmt_ms(c.latency_ms)
        if narrow and c.worst_ms > c.latency_ms * 1.0005:
            expected += f" ({fmt_ms(c.worst_ms).removesuffix(' ms')})"
        row = [c.name + mark, c.kind, fmt_count(c.macs_per_frame), expected,
               f"{fmt_ms(c.low_ms)}–{fmt_ms(c.high_ms)}", fmt_ms(c.worst_ms), f"{c.fps:.1f}", fmt_mb(c.weight_bytes),
               fmt_mb(c.peak_activation_bytes)]
        if measured:
            row.append(fmt_ms(c.measured_ms) if c.measured_ms is not None else "-")
        style = "bold green" if c.name == v.best else ("yellow" if c.name in v.tied_with else None)
        t.add_row(*(plain(row[i]) for i in keep), style=style)
    console.print(t)
    if narrow:  # one line per network: a seven-column table does not fit
        console.print("[bold]networks at the plan's input[/bold]")
        for c in cmp.candidates:
            for net in c.networks:
                a = net.analysis
                console.print(f"  {tesc(c.name)} · {net.role} · {tesc(net.ref)}: {fmt_count(a.totals.macs)} MACs, {fmt_ms(net.ms)}, "
                              f"border {tesc(a.border_layer or 'none')}, unproductive {100 * a.unproductive_share[0]:.0f}%/"
                              f"{100 * a.unproductive_share[1]:.0f}% (params/MACs)", highlight=False)
    else:
        n = Table(title="networks at the plan's input", title_justify="left", header_style="bold")
        for col in ("candidate", "role", "network", "MACs", "predicted", "border layer", "unproductive (params / MACs)"):
            n.add_column(col)
        for c in cmp.candidates:
            for net in c.networks:
                a = net.analysis
                n.add_row(*map(plain, (c.name, net.role, net.ref, fmt_count(a.totals.macs), fmt_ms(net.ms),
                                       a.border_layer or "none",
                                       f"{100 * a.unproductive_share[0]:.0f}% / {100 * a.unproductive_share[1]:.0f}%")))
        console.print(n)
    console.print("[bold]verdict[/bold]")
    for r in v.reasons:
        console.print(plain(f"  • {r}"))
    for c in cmp.candidates:
        for note in c.notes:
            console.print(plain(f"  note ({c.name}): {note}"))


def _anchors(cmp: Comparison) -> dict[tuple[int, int], str]:
    """An HTML id per (candidate, network) position: readable, without characters an id cannot hold,
    and unique (the positions make it so: 'x-y'/'z' and 'x'/'y-z' would read the same)."""
    return {(i, j): f"net-{i}-{j}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{c.name}-{n.role}")
            for i, c in enumerate(cmp.candidates) for j, n in enumerate(c.networks)}


def comparison_html(cmp: Comparison) -> str:
    v = cmp.verdict
    ranked = cmp.ranked()
    measured = [c.measured_ms for c in ranked]
    chart = bar_chart(
        "candidate-latency", f"Latency per frame on {cmp.device} ({cmp.tier} prediction, band = uncertainty)",
        [c.name for c in ranked], [c.latency_ms for c in ranked], low=[c.low_ms for c in ranked],
        high=[c.high_ms for c in ranked], unit="ms", highlight=next(i for i, c in enumerate(ranked) if c.name == v.best),
        marks=measured if any(m is not None for m in measured) else None, mark_label="measured here",
    )
    rows = []
    classes = []
    for c in ranked:
        rows.append([c.name, c.kind, fmt_count(c.macs_per_frame), fmt_ms(c.latency_ms), f"{fmt_ms(c.low_ms)}–{fmt_ms(c.high_ms)}",
                     fmt_ms(c.worst_ms), f"{c.fps:.1f}", fmt_mb(c.weight_bytes), fmt_mb(c.peak_activation_bytes),
                     fmt_ms(c.measured_ms) if c.measured_ms is not None else "—"])
        classes.append("best" if c.name == v.best else "")
    cand_table = table(["candidate", "kind", "MACs/frame", "expected", "band", "worst", "fps", "weights", "peak act.",
                        "measured"], rows, cls="candidates", row_classes=classes)
    anchors = _anchors(cmp)
    net_rows = []
    for i, c in enumerate(cmp.candidates):
        for j, n in enumerate(c.networks):
            a = n.analysis
            net_rows.append([c.name, n.role, n.ref, fmt_count(a.totals.macs), fmt_ms(n.ms), a.border_layer or "none",
                             f"{100 * a.unproductive_share[0]:.0f}% / {100 * a.unproductive_share[1]:.0f}%",
                             _Raw(f'<a href="#{esc(anchors[i, j])}">details</a>')])
    net_table = table(["candidate", "role", "network", "MACs", "predicted", "border layer", "unproductive", ""],
                      net_rows, cls="networks")
    verdict = "".join(f"<li>{esc(r)}</li>" for r in v.reasons)
    notes = "".join(f'<p class="note">note ({esc(c.name)}): {esc(note)}</p>' for c in cmp.candidates for note in c.notes)
    sections = []
    first: dict[str, str] = {}  # an analysis (its JSON) -> the anchor of its section
    for i, c in enumerate(cmp.candidates):
        for j, n in enumerate(c.networks):
            anchor = anchors[i, j]
            behind = cmp.input[1:] if c.kind == "trunk" and n.role.startswith("head") else None
            key = json.dumps([n.analysis.to_dict(), behind], sort_keys=True, default=str)
            if key in first:  # the same network with the same numbers (a specialist used twice)
                sections.append(f'<p id="{esc(anchor)}" class="note">{esc(c.name)} / {esc(n.role)}: {esc(n.ref)} — '
                                f'the same network and numbers as <a href="#{esc(first[key])}">above</a>.</p>')
                continue
            first[key] = anchor
            sections.append(analysis_section(n.analysis, anchor=anchor, plan_input=behind))
    constraints = ", ".join(f"{k} {x:g}" for k, x in cmp.constraints.to_dict().items()) or "none"
    body = (
        f"<h1>Which design is fastest? — {esc(cmp.plan)}</h1>"
        f'<p class="note">input {"×".join(map(str, cmp.input))} · device {esc(cmp.device)} · {esc(cmp.tier)} prediction · '
        f"constraints: {esc(constraints)} · plan {esc(cmp.file)}</p>"
        f'<div class="verdict"><b>Verdict: {esc(v.best)}</b>'
        + (f" (tied with {esc(', '.join(v.tied_with))})" if v.tied_with else "")
        + f"<ul>{verdict}</ul>{notes}</div>"
        f"<figure>{chart}</figure><h2>Candidates</h2>{cand_table}<h2>Networks</h2>{net_table}"
        + "".join(sections)
    )
    return page(f"convscope compare — {cmp.plan}", body)


def write_comparison_html(cmp: Comparison, path: str) -> None:
    try:
        Path(path).write_text(comparison_html(cmp), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--html {path}: cannot write: {exc.strerror or exc}") from None
