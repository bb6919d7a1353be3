"""Self-contained HTML report of ``convscope probe``: the signals per layer against the predicted border.

Figures: (1) probe accuracy and saturation per weighted layer, chance level as a reference line,
the predicted border as a vertical marker; (2) rf_min / R per layer with R itself (1.0) marked;
(3) accuracy per training epoch.  Then the layer table.  Reuses the analysis report's page, table
and SVG charts.
"""

from __future__ import annotations

from pathlib import Path

from convscope.errors import InputError
from convscope.probe.results import CAPPED_NOTE, ProbeResult
from convscope.reports._svg import line_chart
from convscope.reports.html import esc, page, table
from convscope.units import fmt_rf

__all__ = ["history_chart", "probe_section", "rf_ratio_chart", "signals_chart", "write_probe_html"]


def _border_index(r: ProbeResult) -> int | None:
    return next((i for i, x in enumerate(r.layers) if x.name == r.border_layer), None)


def signals_chart(r: ProbeResult) -> str:
    b = _border_index(r)
    return line_chart(
        "probe-signals", f"Probe accuracy and saturation per layer — {r.model}",
        [("probe acc.", [x.probe_accuracy for x in r.layers]), ("saturation", [x.saturation for x in r.layers])],
        x_labels=[x.name for x in r.layers], y_label="share",
        hlines=[(f"chance {r.chance:.2f}", r.chance)],
        vline=(f"predicted border: {r.border_layer}", b) if b is not None else None,
    )


def rf_ratio_chart(r: ProbeResult) -> str:
    b = _border_index(r)
    return line_chart(
        "probe-rf", f"rf_min / input size per layer (input {r.resolution[0]}×{r.resolution[1]}; the head is global)",
        [("rf_min / R", [x.rf_ratio for x in r.layers])], x_labels=[x.name for x in r.layers],
        y_label="rf_min / R", hlines=[("R", 1.0)],
        vline=(f"predicted border: {r.border_layer}", b) if b is not None else None,
    )


def history_chart(r: ProbeResult) -> str:
    if not r.history:
        return ""
    return line_chart(
        "probe-history", "Accuracy per training epoch",
        [("train", [h.train_accuracy for h in r.history]), ("test", [h.test_accuracy for h in r.history])],
        x_labels=[str(h.epoch) for h in r.history], y_label="accuracy", hlines=[("chance", r.chance)],
    )


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "" if v is None else fmt.format(v)


def probe_section(r: ProbeResult) -> str:
    d, v, tr = r.data, r.verdict, r.training
    summary = [
        ("network", f"{r.model}, input {'×'.join(map(str, r.input))}"),
        ("data", f"{d.ref} ({d.kind}): {d.train} train / {d.test} test images, {len(d.classes)} classes"),
        ("training", f"{len(r.history)}/{r.epochs} epoch(s), {tr.get('optimizer')} lr {tr.get('lr')}, "
                     f"batch {tr.get('batch_size')}, seed {r.seed}, {r.device}"),
        ("accuracy", f"train {_f(r.train_accuracy) or '-'}, test {r.test_accuracy_text()} (chance {r.chance:.3f})"),
        ("predicted border", r.border_layer or "none"),
        ("probes stop improving at", v.plateau_layer or "-"),
    ]
    rows, classes = [], []
    for x in r.layers:
        rf = "∞" if x.rf_min is None else "×".join(fmt_rf(a) for a in x.rf_min)
        mark = "border" if x.name == r.border_layer else ("unproductive" if x.unproductive else "")
        sat = _f(x.saturation) + ("*" if x.saturation_capped else "")
        rows.append([x.name, x.op, rf, _f(x.rf_ratio, "{:.2f}"), x.width, sat, x.eigendirections or "",
                     _f(x.probe_accuracy), _f(x.probe_train_accuracy), x.probe_dims or "", x.error or mark])
        classes.append("border" if x.name == r.border_layer else ("unproductive" if x.unproductive else ""))
    verdict = (f'<div class="verdict"><b>verdict: {esc(v.status.replace("_", " "))}</b><ul>'
               + "".join(f"<li>{esc(s)}</li>" for s in v.reasons) + "</ul></div>")
    then = ("rerun the same command to resume from the checkpoint." if r.checkpoint else
            "no checkpoint was kept (--no-checkpoint), so a rerun starts over.")
    partial = "" if r.complete else f'<p class="verdict">Partial result of an interrupted run: {then}</p>'
    capped = [x for x in r.layers if x.saturation_capped]
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in ((CAPPED_NOTE,) if capped else ()) + r.notes)
    return (
        f'<section class="probe"><h2>{esc(r.model)}: measured signals against the predicted border</h2>'
        + partial + table(["", ""], summary, cls="summary") + verdict
        + f"<figure>{signals_chart(r)}</figure><figure>{rf_ratio_chart(r)}</figure>"
        + (f"<figure>{history_chart(r)}</figure>" if r.history else "")
        + table(["layer", "op", "rf min", "rf/R", "width", "saturation", "k (99%)", "probe acc", "probe train acc",
                 "probe dims", ""], rows, cls="layers", row_classes=classes)
        + notes + "</section>"
    )


def write_probe_html(r: ProbeResult, path: str) -> None:
    title = f"convscope probe — {r.model} on {r.data.ref}"
    try:
        Path(path).write_text(page(title, f"<h1>{esc(title)}</h1>{probe_section(r)}"), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--html {path}: cannot write: {exc.strerror or exc}") from None
