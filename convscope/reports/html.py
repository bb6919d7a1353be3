"""Self-contained HTML reports (one file, inline CSS and SVG, no network access needed to view).

``analysis_section`` renders one :class:`~convscope.results.Analysis` (summary, receptive-field
growth against depth with the input resolution and the border marked, per-layer time when a
prediction exists, the layer table); ``page`` wraps sections in the document.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from convscope.errors import InputError
from convscope.reports._svg import bar_chart, line_chart
from convscope.reports._templates import PAGE
from convscope.results import Analysis
from convscope.units import fmt_bytes, fmt_count, fmt_jump, fmt_ms, fmt_pair, fmt_rf, fmt_share

__all__ = ["page", "analysis_section", "rf_growth_chart", "write_analysis_html", "table", "esc"]

_SPATIAL_OPS = ("conv", "convT", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "upsample")


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, cls: str = "", row_classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        rc = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        cells = "".join(f"<td>{c if isinstance(c, _Raw) else esc(c)}</td>" for c in r)
        body.append(f'<tr class="{rc}">{cells}</tr>' if rc else f"<tr>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class _Raw(str):
    """Marks a cell that is already HTML."""


def _num(v: object) -> float | None:
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    return f if math.isfinite(f) else None


def rf_growth_chart(a: Analysis, name: str = "rf-growth", plan_input: Sequence[int] | None = None) -> str:
    """rf_min and rf_max of the spatial layers against depth, the input side and the border marked.
    ``plan_input``: a head behind a deployment plan's trunk, whose receptive fields are in the pixels
    of the plan's input (H, W), not of the feature map it reads."""
    spatial = [r for r in a.layers if r.op in _SPATIAL_OPS and r.rf_min is not None]
    # The layers that grow the receptive field (1x1 convs, e.g. shortcuts, only repeat their input's),
    # or all spatial layers of a network that has only 1x1 ones (a head behind a trunk).
    rows = [r for r in spatial if not (r.kernel == (1, 1) and r.op in ("conv", "convT"))] or spatial
    if not rows:
        return ""
    side = plan_input[0] if plan_input is not None else a.resolution[0]
    where = (f"behind the trunk, in the plan's {plan_input[0]}×{plan_input[1]} input pixels" if plan_input is not None
             else f"at {a.resolution[0]}×{a.resolution[1]}")
    labels = [r.name for r in rows]
    rmin = [_num(r.rf_min[0]) for r in rows]  # type: ignore[index]
    rmax = [_num(r.rf_max[0]) if r.rf_max and _num(r.rf_max[0]) is not None else None for r in rows]
    border = next((i for i, r in enumerate(rows) if r.name == a.border_layer), None)
    return line_chart(
        name, f"Receptive field against depth — {a.model} {where}",
        [("rf_min", rmin), ("rf_max", rmax)], x_labels=labels, y_label="input pixels",
        hlines=[(f"input {side} px", float(side))],
        vline=(f"border: {a.border_layer}", border) if border is not None else None,
    )


def layer_time_chart(a: Analysis, name: str = "layer-time") -> str:
    if a.latency is None:
        return ""
    rows = [r for r in a.layers if r.ms]
    if not rows:
        return ""
    top = sorted(rows, key=lambda r: -(r.ms or 0))[:25]
    return bar_chart(name, f"Predicted time per layer — {a.model} (top {len(top)})",
                     [r.name for r in top], [r.ms or 0.0 for r in top], unit="ms")


def analysis_section(a: Analysis, *, anchor: str | None = None, plan_input: Sequence[int] | None = None) -> str:
    """One network's summary, receptive-field chart, layer-time chart and layer table; ``plan_input``
    for a head behind a plan's trunk (its receptive fields, border and feasible range are in the
    plan's input pixels)."""
    t = a.totals
    lo, hi = a.feasible_resolution
    n_un = len(a.unproductive_layers())
    summary = [
        ("input", "×".join(map(str, a.input))),
        ("parameters", f"{fmt_count(t.params)} ({fmt_bytes(t.weight_bytes)} as {a.dtype})"),
        ("MACs", fmt_count(t.macs)),
        ("peak activations", fmt_bytes(t.peak_activation_bytes)),
        ("border layer", a.border_layer or "none"),
        ("unproductive layers", f"{n_un} — {fmt_share(a.unproductive_share[0])} of params, "
                                f"{fmt_share(a.unproductive_share[1])} of MACs"),
        ("feasible resolution", f"{fmt_rf(lo)}–{fmt_rf(hi)} px"),
    ]
    if plan_input is not None:
        summary.insert(1, ("receptive fields", f"in the pixels of the plan's {plan_input[0]}×{plan_input[1]} input, "
                                               "as the head sees it behind the trunk"))
    if a.latency is not None:
        lat = a.latency
        summary.append(("predicted latency", f"{fmt_ms(lat.ms)} [{fmt_ms(lat.low_ms)} – {fmt_ms(lat.high_ms)}] "
                                             f"({lat.tier}, {lat.device}, {lat.backend}, batch {lat.batch})"))
    for note in a.notes:
        summary.append(("note", note))
    if a.unknown_ops:
        summary.append(("unknown ops", ", ".join(f"{n} ({w})" for n, w in a.unknown_ops)))
    rows, classes = [], []
    for r in a.layers:
        rows.append([r.name, r.op, "×".join(map(str, r.out_shape)), fmt_count(r.params) if r.params else "",
                     fmt_count(r.macs) if r.macs else "", fmt_pair(r.rf_min), fmt_pair(r.rf_max), fmt_jump(r.rf_max, r.jump),
                     fmt_ms(r.ms) if r.ms else "",
                     "border" if r.name == a.border_layer else ("unproductive" if r.unproductive else "")])
        classes.append("unproductive" if r.unproductive else ("border" if r.name == a.border_layer else ""))
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return (
        f'<section class="analysis"{ident}><h2>{esc(a.model)} at {a.resolution[0]}×{a.resolution[1]}</h2>'
        + table(["", ""], summary, cls="summary")
        + f'<figure>{rf_growth_chart(a, plan_input=plan_input)}</figure>'
        + (f"<figure>{layer_time_chart(a)}</figure>" if a.latency is not None else "")
        + "<details><summary>all layers</summary>"
        + table(["layer", "op", "out shape", "params", "MACs", "rf min", "rf max", "jump", "ms", ""],
                rows, cls="layers", row_classes=classes)
        + "</details></section>"
    )


def page(title: str, body: str) -> str:
    return PAGE.format(title=esc(title), body=body)


def write_analysis_html(results: Sequence[Analysis], path: str) -> None:
    body = "".join(analysis_section(a, anchor=f"r{i}") for i, a in enumerate(results))
    title = f"convscope — {results[0].model}" if results else "convscope"
    try:
        Path(path).write_text(page(title, f"<h1>{esc(title)}</h1>{body}"), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--html {path}: cannot write: {exc.strerror or exc}") from None
