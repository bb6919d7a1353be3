"""The built-in zoo: reference networks as spec files (``zoo:NAME``), plus generated families.

``zoo:nasbench201:ARCH`` builds a NAS-Bench-201 network from its arch string (without ``:ARCH``,
the all-``nor_conv_3x3`` cell).  See :mod:`convscope.zoo.nasbench201`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

from convscope.errors import InputError
from convscope.ir.graph import Graph

__all__ = ["ZooEntry", "zoo_entries", "load_zoo", "zoo_spec_text", "GENERATED"]


@dataclass(frozen=True, slots=True)
class ZooEntry:
    name: str
    description: str
    input: tuple[int, ...]
    classes: int | None
    generated: bool = False


def _generated() -> dict[str, tuple[str, Callable[[str | None, Sequence[int] | None], Graph]]]:
    from convscope.zoo import nasbench201, fbnet

    return {
        "nasbench201": (nasbench201.DESCRIPTION, nasbench201.build_graph),
        "fbnet": (fbnet.DESCRIPTION, fbnet.build_graph),
    }


GENERATED = ("nasbench201", "fbnet")


def _spec_names() -> list[str]:
    root = resources.files("convscope.zoo")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def zoo_spec_text(name: str) -> str:
    if name not in _spec_names():
        raise InputError(_unknown(name))
    return (resources.files("convscope.zoo") / f"{name}.yaml").read_text(encoding="utf-8")


def _unknown(name: str) -> str:
    names = _spec_names() + list(GENERATED)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join('zoo:' + c for c in close)}?)" if close else ""
    return f"zoo:{name} is not in the zoo{hint}; `convscope zoo list` shows what is"


def zoo_entries() -> list[ZooEntry]:
    from convscope.frontends._yaml import load_yaml

    out = []
    for name in _spec_names():
        data = load_yaml(zoo_spec_text(name), f"zoo:{name}")
        out.append(ZooEntry(name, data.get("description", ""), tuple(data["input"]), data.get("classes")))
    for name, (desc, build) in _generated().items():
        g = build(None, None)
        out.append(ZooEntry(name, desc, g.input_shape, g.meta_dict().get("classes"), generated=True))
    return out


def load_zoo(ref: str, *, input_shape: Sequence[int] | None = None) -> Graph:
    """``ref`` is NAME or NAME:ARGS (for generated families)."""
    name, _, arg = ref.partition(":")
    gen = _generated()
    if name in gen:
        return gen[name][1](arg or None, input_shape)
    if arg:
        raise InputError(f"zoo:{name} takes no ':' argument (only {', '.join(GENERATED)} do)")
    from convscope.frontends.from_spec import graph_from_spec_text

    return graph_from_spec_text(zoo_spec_text(name), file=f"zoo:{name}", input_shape=input_shape)
