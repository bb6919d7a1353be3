"""Helpers shared by the command modules: consoles, shapes, JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from convscope.api import parse_shape
from convscope.errors import InputError
from convscope.reports._text import plain

__all__ = ["console", "check_output", "write_json", "shape_arg", "int_list_arg", "add_json_arg", "json_to_stdout", "emit", "write_all"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """`convscope ... | head`: rich exits with status 1, which convscope documents as "nothing
        usable"; the reader has all it wanted, so stdout goes to /dev/null and the command ends as
        a closed pipe does in Python, with BrokenPipeError (exit status 0, see cli.main)."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise BrokenPipeError


def console(args: argparse.Namespace | None = None, *, stderr: bool = False) -> Console:
    width = getattr(args, "width", None) if args is not None else None
    # emoji=False: model names such as 'synthetic:scales:' must print as written, not as ⚖
    con = _Console(width=width, stderr=stderr, highlight=False, emoji=False)
    if width is None and con.width < 20:  # COLUMNS=5: as narrow as --width allows, not a garbled table
        con.width = 20
    return con


def json_to_stdout(args: argparse.Namespace) -> bool:
    return getattr(args, "json", None) == "-"


def check_output(flag: str, target: str | None) -> None:
    """Refuse an output file that cannot be written before the run, not after it (exit status 2)."""
    if not target or (flag == "--json" and target == "-"):
        return
    path = Path(target)
    if path.is_dir():
        raise InputError(f"{flag} {target}: is a directory, not a file")
    if not path.parent.is_dir():
        why = "is not a directory" if path.parent.exists() else "does not exist"
        raise InputError(f"{flag} {target}: cannot write: {path.parent} {why}")
    existed = path.exists()
    try:
        with open(path, "a", encoding="utf-8"):  # appends nothing: an existing file is left as it is
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise InputError(f"{flag} {target}: cannot write: {exc.strerror or exc}") from None


def write_json(data: Any, target: str) -> None:
    text = json.dumps(data, indent=2, allow_nan=False)
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    try:
        Path(target).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--json {target}: cannot write: {exc.strerror or exc}") from None


def shape_arg(text: str) -> tuple[int, ...]:
    return parse_shape(text, "--input")


def int_list_arg(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} must be a comma-separated list of integers, got '{text}'") from None
    if not values or any(v <= 0 for v in values):
        raise InputError(f"{what} must be positive integers, got '{text}'")
    return values


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (``nan``, ``inf`` and 0 are refused with exit status 2)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got '{text}'")
    return v


MAX_THREADS = 4096  # more than any machine's cores; far fewer than would exhaust its threads


def threads_arg(text: str) -> int:
    """An argparse type: a thread count from 1 to MAX_THREADS (exit status 2 otherwise; an
    absurd count made the runtime spawn threads until the process crashed)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_THREADS}, got '{text}'") from None
    if not 1 <= n <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_THREADS}, got {n}")
    return n


def html_arg(text: str) -> str:
    """An argparse type: the file an HTML report goes to ('-' is not one: a report is a file a browser
    opens, and stdout carries the table or the JSON)."""
    if text.strip() in ("", "-"):
        raise argparse.ArgumentTypeError(f"needs a file name for the report, got '{text}' (only --json writes to "
                                         "stdout with '-')")
    return text


def check_outputs(args: argparse.Namespace) -> None:
    """:func:`check_output` for ``--json`` and ``--html``, and refuse the same file for both (one
    would silently overwrite the other)."""
    json_, html = getattr(args, "json", None), getattr(args, "html", None)
    check_output("--json", json_)
    check_output("--html", html)
    if json_ and html and json_ != "-" and Path(json_).resolve() == Path(html).resolve():
        raise InputError(f"--json and --html name the same file ({html}): one would overwrite the other")


def json_arg(text: str) -> str:
    """An argparse type: a file for the JSON, or '-' for stdout; an empty name (a script's unset
    variable) is refused, never taken as "no JSON"."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"needs a file name, or '-' for stdout, got '{text}'")
    return text


def dir_arg(text: str) -> str:
    """An argparse type: a directory to write to; an empty name is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"needs a directory name, got '{text}'")
    return text


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE|-", type=json_arg,
                   help="write the result as JSON to FILE, or to stdout with '-' (the table is then not printed)")


def emit(result: Any, args: argparse.Namespace, render: Any, write_html: Any = None, data: Any = None) -> None:
    """A command's result: JSON with ``--json`` (``data``, default ``result.to_dict()``), an HTML file
    with ``--html`` (``write_html(result, path)``), and the terminal rendering (``render(result,
    console)``) unless JSON goes to stdout; one that cannot be written does not cost the others."""
    html = getattr(args, "html", None) if write_html is not None else None
    wrote: list[str] = []

    def html_out() -> None:
        write_html(result, html)
        wrote.append(html)

    def terminal() -> None:
        con = console(args)
        render(result, con)
        for path in wrote:
            con.print(plain(f"wrote {path}"))

    write_all(args.json and (lambda: write_json(result.to_dict() if data is None else data, args.json)),
              html and html_out, not json_to_stdout(args) and terminal)


def write_all(*steps: Any) -> None:
    """Every output a command was asked for (falsy steps are skipped): one that cannot be written
    (a full disk) does not cost the others; its error is raised after them."""
    failed: list[str] = []
    done = 0
    for step in steps:
        if not step:
            continue
        try:
            step()
            done += 1
        except InputError as exc:
            failed.append(str(exc))
    if failed:
        raise InputError("; ".join(failed) + (" (the other outputs were written)" if done else ""))
