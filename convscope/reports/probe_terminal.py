"""Terminal rendering of a :class:`~convscope.probe.results.ProbeResult` (rich); it only reads it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from convscope.probe.results import CAPPED_NOTE, LayerProbe, ProbeResult
from convscope.reports._text import plain
from convscope.reports.terminal import table_layout
from convscope.units import fmt_rf

__all__ = ["VERDICT_STYLE", "RichBars", "progress_bars", "render_probe"]

VERDICT_STYLE = {"agrees": "bold green", "partly": "bold yellow", "disagrees": "bold red",
                 "inconclusive": "bold magenta", "no_prediction": "bold"}
_BAR = 12


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return "" if v is None else fmt.format(v)


def _bar(v: float | None) -> str:
    if v is None:
        return ""
    n = max(0, min(_BAR, round(v * _BAR)))
    return "█" * n + "·" * (_BAR - n)


def _mark(r: LayerProbe, border: str | None) -> tuple[str, str | None]:
    if r.error:
        return f"not measured: {r.error}", "magenta"
    if r.name == border:
        return "◀ border" + (" · unproductive" if r.unproductive else ""), "bold yellow" if not r.unproductive else "bold red"
    if r.unproductive:
        return "unproductive", "red"
    if not r.is_spatial:
        return "head", "dim"
    return "", None


def _saturation(r: LayerProbe) -> str:
    return _num(r.saturation) + ("*" if r.saturation_capped else "")


def _rf(r: LayerProbe) -> str:
    if r.rf_min is None:
        return "∞"
    a, b = r.rf_min
    return fmt_rf(a) if a == b else f"{fmt_rf(a)}×{fmt_rf(b)}"


def render_probe(r: ProbeResult, console: Console) -> None:
    d = r.data
    title = (f"{r.model} — input {'×'.join(map(str, r.input))}, trained {len(r.history)}/{r.epochs} epoch(s) on "
             f"{d.ref} ({d.train} train / {d.test} test images, {len(d.classes)} classes)")
    # User text (paths, synthetic:scales…) goes in as Text, so rich reads no markup or :emoji: codes in it.
    narrow, kw = table_layout(console)
    t = Table(title=plain(title), title_justify="left", header_style="bold", **kw)
    cols = (("layer", "left"), ("op", "left"), ("rf min", "right"), ("rf/R", "right"), ("width", "right"),
            ("saturation", "right"), ("probe acc", "right"), ("probe", "left"), ("", "left"))
    keep = [i for i, (col, _) in enumerate(cols) if not (narrow and col in ("op", "probe"))]
    for i in keep:
        col, just = cols[i]
        t.add_column("sat." if narrow and col == "saturation" else col, justify=just,  # type: ignore[arg-type]
                     overflow="fold" if col in ("layer", "") else "ellipsis", no_wrap=narrow and col not in ("layer", ""))
    for row in r.layers:
        mark, style = _mark(row, r.border_layer)
        cells = (plain(row.name), row.op, _rf(row), _num(row.rf_ratio, "{:.2f}"), str(row.width),
                 _saturation(row), _num(row.probe_accuracy), _bar(row.probe_accuracy), Text(mark))
        t.add_row(*(cells[i] for i in keep), style=style)
    console.print(t)
    if any(x.saturation_capped for x in r.layers):
        console.print(Text(CAPPED_NOTE, style="dim"))
    tr = r.training
    console.print(f"[bold]accuracy[/bold] train {_num(r.train_accuracy) or '-'} · test {r.test_accuracy_text()} "
                  f"(chance {r.chance:.3f}) · {tr.get('optimizer')} lr {tr.get('lr'):g} · batch {tr.get('batch_size')} · "
                  f"seed {r.seed} · {r.device}")
    v = r.verdict
    line = Text()
    line.append("verdict ", style="bold")
    line.append(v.status.replace("_", " "), style=VERDICT_STYLE.get(v.status))
    line.append(f" — predicted border {r.border_layer or 'none'}")
    if v.plateau_layer:
        line.append(f"; probes stop improving at {v.plateau_layer}")
    console.print(line)
    for reason in v.reasons:
        console.print(plain(f"  {reason}"))
    for note in r.notes:
        console.print(Text(f"note: {note}", style="dim"))
    if not r.complete:
        done = sum(1 for x in r.layers if x.error is None)
        then = (f"rerun the same command to resume (checkpoint {r.checkpoint})" if r.checkpoint else
                "no checkpoint was kept (--no-checkpoint), so a rerun starts over")
        console.print(Text.assemble(("partial result", "bold yellow"), (
            f": {len(r.history)}/{r.epochs} epoch(s) trained, {done} layer(s) measured; {then}")))


class RichBars:
    """The probe's progress protocol (``start``/``advance``) as one rich bar, reused stage after stage."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task: Any = None

    def start(self, description: str, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(description, total=total)
        else:
            self.progress.reset(self.task, total=total, completed=0, description=description)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)


@contextmanager
def progress_bars(console: Console, prefix: str = "") -> Iterator[RichBars]:
    """Bars on ``console`` (stderr in the CLI) that vanish when the work is done."""
    columns = (TextColumn(prefix + "{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        yield RichBars(progress)
