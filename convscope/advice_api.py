"""The Python API of design advice: ``suggest`` (any model reference -> :class:`Advice`) and
``write_variants`` (each suggested variant as a spec file that ``analyze`` reads back to the same
numbers).  Nothing here prints.

    >>> import convscope
    >>> adv = convscope.suggest("zoo:vgg16-cifar", input=(3, 32, 32))
    >>> [s.key for s in adv.recommended()][:3]
    >>> adv.suggestion("truncate").removed
"""

from __future__ import annotations

import os
import re
import shlex
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convscope.analyses.advice import Advice, Options, Progress, Suggestion, suggest_graph
from convscope.api import feasible_of, load_graph
from convscope.errors import InputError
from convscope.frontends.to_spec import SpecWriteError, graph_to_spec_text
from convscope.ir.graph import Graph
from convscope.units import fmt_count, fmt_share

__all__ = ["suggest", "write_variants", "origin_of"]

_FACTORY = re.compile(r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")


def origin_of(model: Any) -> str:
    """Where the network came from: spec, zoo, onnx, pytorch or graph (names then mean module paths
    for pytorch, node names for onnx)."""
    if isinstance(model, Graph):
        return "graph"
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str):
        low = model.lower()
        if model.startswith("zoo:"):
            return "zoo"
        if low.endswith((".yaml", ".yml")):
            return "spec"
        if low.endswith(".onnx"):
            return "onnx"
        if _FACTORY.match(model):
            return "pytorch"
        return "spec"
    return "pytorch"  # an nn.Module (load_graph refuses anything else)


def suggest(
    model: Any,
    *,
    input: Sequence[int] | None = None,
    device: str | None = None,
    backend: str | None = None,
    dtype: str = "fp32",
    batch: int = 1,
    threads: int | None = None,
    fit: Any = None,
    options: Options | None = None,
    only: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Advice:
    """Rewrite a network in the ways the seeds name and analyse each variant (see
    :mod:`convscope.analyses.advice`).  ``device`` as for latency prediction (None: this machine if
    calibrated; a profile name or file: analytic); without a latency model latency is left out."""
    graph = load_graph(model, input=input)
    return suggest_graph(graph, device=device, backend=backend, dtype=dtype, batch=batch, threads=threads,
                         fit=fit, options=options, only=only, progress=progress, origin=origin_of(model),
                         feasible=feasible_of(model, graph))


def _header(adv: Advice, s: Suggestion | None, ref: str, file: str) -> list[str]:
    shape = "x".join(map(str, adv.input))
    again = " ".join(["analyse it with: convscope analyze", shlex.quote(file), *adv.analyze_options])
    if s is None:
        lines = [f"convscope suggest: the original network {ref} at input {shape}, as a spec", again]
    else:
        a, b = s.analysis, adv.base
        border = a.border_layer or "none"
        lines = [
            f"convscope suggest: {s.title} ({s.key}) — a variant of {ref} at input {shape}",
            again,
            f"params {fmt_count(a.totals.params)} (was {fmt_count(b.totals.params)}), MACs "
            f"{fmt_count(a.totals.macs)} (was {fmt_count(b.totals.macs)}), border layer {border}, unproductive "
            f"{fmt_share(a.unproductive_share[0])} of params",
            *textwrap.wrap(s.explanation, 100),
            *[f"note: {n}" for n in s.notes],
        ]
        for what, names in (("changed", s.changed), ("removed", s.removed), ("added", s.added)):
            if names:
                lines += textwrap.wrap(f"{what}: {', '.join(names)}", 100, subsequent_indent="  ")
    if adv.left_out_params:
        lines += textwrap.wrap(f"the {fmt_count(adv.left_out_params)} parameters of the model that no layer holds "
                               "(forward never uses them) are not in this spec, nor in the numbers above: `convscope "
                               "analyze` of the model itself counts them in its params.", 100)
    if adv.origin == "pytorch":
        lines.append("PyTorch model: the layer names are module paths of your nn.Module (a functional call, "
                     "F.conv2d on your own weights, is named after the function: conv2d, conv2d_1…); the lines "
                     "above say which modules to change.")
    elif adv.origin == "onnx":
        lines.append("ONNX model: the layer names are the graph's node names.")
    return lines


_WRITTEN = re.compile(r"^\d\d-[a-z0-9.-]+\.yaml$")
_MARK = "# convscope suggest: "


def write_variants(adv: Advice, directory: str | os.PathLike[str], *, ref: str | None = None,
                   include_refused: bool = False) -> dict[str, Path]:
    """Write ``00-original.yaml`` and one spec per recommended suggestion (``01-truncate.yaml``, … in
    the advice's order) into ``directory`` (created if needed).  Returns {key: path}; the original is
    under the key ``original``.  Variant files an earlier run wrote there (``NN-key.yaml`` starting with
    convscope's header) are removed first, so the directory holds this advice only; other files are
    left alone, and a file of the user's with a name this would write is refused (nothing is written).  A network the spec cannot express, or a path that cannot be written, raises before
    anything is written (InputError / SpecWriteError naming the layer or the path)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InputError(f"--write {d}: exists and is not a directory")
    ref = ref or adv.model
    chosen = [s for s in adv.suggestions if include_refused or s.recommended]
    names = [("original", adv.graph, None, d / "00-original.yaml"),
             *((s.key, s.graph, s, d / f"{i:02d}-{s.key}.yaml") for i, s in enumerate(chosen, start=1))]
    texts = []
    for key, g, s, path in names:  # refuse before writing anything
        if path.exists() and not path.is_file():
            raise InputError(f"--write {d}: {path} exists and is not a file (nothing was written)")
        if path.is_file() and not _ours(path):
            raise InputError(f"--write {d}: {path} exists and is not a file convscope suggest wrote (it lacks the "
                             "'# convscope suggest:' header); nothing was written: move it, or write elsewhere")
        try:
            texts.append((key, path, graph_to_spec_text(g, comment=_header(adv, s, ref, str(path)))))
        except SpecWriteError as exc:
            raise SpecWriteError(f"{exc} (nothing was written to {d})") from None
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--write {d}: cannot create the directory: {exc.strerror or exc}") from None
    if not os.access(d, os.W_OK):
        raise InputError(f"--write {d}: the directory is not writable")
    for old in sorted(d.iterdir()):
        if _WRITTEN.match(old.name) and old.is_file() and _ours(old):
            old.unlink()
    out: dict[str, Path] = {}
    for key, path, text in texts:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot write: {exc.strerror or exc} (written so far: "
                             f"{', '.join(p.name for p in out.values()) or 'none'})") from None
        out[key] = path
    return out


def _ours(path: Path) -> bool:
    """A variant file an earlier `suggest --write` wrote (its first line is convscope's header)."""
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().startswith(_MARK)
    except (OSError, UnicodeDecodeError):
        return False
