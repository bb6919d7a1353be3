"""YAML loading that remembers where every key and value came from (1-based line and column).

PyYAML's composer gives nodes with marks; we turn them into plain dicts and lists subclassed to carry
those marks, so every later error can name file:line:column.  Duplicate keys are errors (PyYAML
would silently keep the last one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from convscope.errors import SpecError

__all__ = ["YMap", "YList", "Mark", "load_yaml", "mark_of", "read_text_file", "shown"]

Mark = tuple[int, int]

try:  # the C composer is ~10x faster; the Python constructor is only used for scalars
    _Base: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Base = yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """Safe loading, with YAML 1.2's floats and booleans: ``1e9`` and ``2.5E-3`` are numbers (YAML 1.1,
    which PyYAML follows, reads an exponent without a decimal point as a string), and only
    true/false are booleans (YAML 1.1 also reads on, off, yes, no, y and n as booleans: a switch
    whose specialists are ``on`` and ``off``, a candidate named ``no``)."""


_INT, _FLOAT, _BOOL = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"
# YAML 1.2's core schema: PyYAML's 1.1 resolvers for booleans, numbers and dates are replaced (010 is
# ten, not octal eight; 1_0, 0b1010 and 1:30 are words; 2024-01-01 is a word, not a date)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in entries if tag not in (_INT, _FLOAT, _BOOL, "tag:yaml.org,2002:timestamp")]
    for first, entries in _Loader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_INT_RX = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_Loader.add_implicit_resolver(_INT, _INT_RX, list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
MAX_FILE_BYTES = 16 * 2**20  # a spec or plan is a few KB
MAX_VALUES = 200_000  # aliases expanded: a spec or plan has a few thousand values; more is a bomb


def _int(node: yaml.ScalarNode, file: str) -> int:
    """An int in YAML 1.2's core schema (PyYAML's constructor reads 010 as octal)."""
    text = node.value
    try:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)
    except ValueError:  # an explicit !!int tag on something else
        line, col = _pos(node)
        raise SpecError(f"invalid YAML value: {text!r} is not an integer", file=file, line=line, column=col) from None


_SCALARS = yaml.SafeLoader("")


class YMap(dict):  # type: ignore[type-arg]
    """A mapping whose ``mark`` is its own position, ``key_marks``/``value_marks`` its entries'."""

    mark: Mark = (0, 0)

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.key_marks: dict[Any, Mark] = {}
        self.value_marks: dict[Any, Mark] = {}

    def kmark(self, key: Any) -> Mark:
        return self.key_marks.get(key, self.mark)

    def vmark(self, key: Any) -> Mark:
        return self.value_marks.get(key, self.mark)


class YList(list):  # type: ignore[type-arg]
    mark: Mark = (0, 0)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.marks: list[Mark] = []

    def imark(self, i: int) -> Mark:
        return self.marks[i] if i < len(self.marks) else self.mark


def shown(v: Any) -> str:
    """A value as the user wrote it in YAML, for error messages: null, true, .nan, [3, 32], {k: 3}
    (Python's repr would say None, True, nan)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return ".nan" if v != v else (".inf" if v > 0 else "-.inf")
    if isinstance(v, list):
        return "[" + ", ".join(shown(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {shown(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _pos(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node: yaml.Node, file: str, active: frozenset[int] = frozenset(), count: list[int] | None = None) -> Any:
    count = count if count is not None else [0]
    count[0] += 1
    if count[0] > MAX_VALUES:  # aliases of aliases: a few hundred bytes can name billions of values
        line, col = _pos(node)
        raise SpecError(f"YAML aliases (*name) expand to more than {MAX_VALUES:,} values: write the file without "
                        "nested aliases", file=file, line=line, column=col)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in active:  # an alias inside the very thing it names (&l [..., *l])
            line, col = _pos(node)
            raise SpecError("a YAML alias (*name) refers to a mapping or list that contains it: the structure "
                            "would be infinite", file=file, line=line, column=col)
        active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.mark = _pos(node)
        merged: list[tuple[Any, Any, Mark, Mark]] = []
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":  # <<: *defaults (or a list of them): keys written out win
                sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
                for src in sources:
                    got = _convert(src, file, active, count)
                    if not isinstance(got, YMap):
                        line, col = _pos(src)
                        raise SpecError("a merge key (<<) takes a mapping or a list of mappings", file=file,
                                        line=line, column=col)
                    merged += [(k, v, got.kmark(k), got.vmark(k)) for k, v in got.items()]
                continue
            key = _convert(knode, file, active, count)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                line, col = _pos(knode)
                raise SpecError("a key must be a plain value", file=file, line=line, column=col)
            if key in out:
                line, col = _pos(knode)
                first = out.key_marks[key][0]
                raise SpecError(f"duplicate key '{key}' (first given on line {first})", file=file,
                                line=line, column=col)
            out[key] = _convert(vnode, file, active, count)
            out.key_marks[key] = _pos(knode)
            out.value_marks[key] = _pos(vnode)
        for k, v, km, vm in merged:
            if k not in out:
                out[k] = v
                out.key_marks[k], out.value_marks[k] = km, vm
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YList()
        seq.mark = _pos(node)
        for item in node.value:
            seq.append(_convert(item, file, active, count))
            seq.marks.append(_pos(item))
        return seq
    if node.tag == _INT:
        return _int(node, file)
    return _SCALARS.construct_object(node, deep=True)


def read_text_file(path: str | os.PathLike[str], kind: str) -> str:
    """The text of a ``kind`` file ("spec", "plan"); a missing, directory or unreadable file is a
    SpecError naming it."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"no such {kind} file" if kind != "spec" else "no such file", file=str(path))
    if p.is_dir():
        raise SpecError(f"is a directory, not a {kind} file", file=str(path))
    if not p.is_file():  # /dev/zero, a FIFO: reading would never end
        raise SpecError(f"not a regular file: a {kind} file must be a file", file=str(path))
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise SpecError(f"{p.stat().st_size:,} bytes: too big for a {kind} file (at most {MAX_FILE_BYTES:,})",
                            file=str(path))
        data = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read: {exc}", file=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(data, exc.start)
        bom = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise SpecError(f"byte 0x{data[exc.start]:02x} is not UTF-8: a {kind} file must be UTF-8 text"
                        + (" (this one looks like UTF-16: save it as UTF-8)" if bom else " (save it as UTF-8)"),
                        file=str(path), line=line, column=col) from None


def _byte_position(data: bytes, offset: int) -> Mark:
    """The 1-based line and column (in characters) of the byte at ``offset``; the bytes before it
    are valid UTF-8 (it is the first that is not)."""
    start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, len(data[start:offset].decode("utf-8", errors="replace")) + 1


def load_yaml(text: str, file: str) -> Any:
    """Parse one YAML document; errors become :class:`SpecError` with the position."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.problem_mark is not None \
                and exc.context_mark.line != exc.problem_mark.line:
            problem += f" ({exc.context} that starts at line {exc.context_mark.line + 1}, " \
                       f"column {exc.context_mark.column + 1})"
        if "\t" in text and "cannot start any token" in problem:
            problem += " (a tab: indent YAML with spaces)"
        elif "mapping values are not allowed" in problem:
            problem += " (a value that contains ': ' must be quoted, or a nested mapping indented)"
        if mark is not None:
            raise SpecError(f"invalid YAML: {problem}", file=file, line=mark.line + 1,
                            column=mark.column + 1) from None
        raise SpecError(f"invalid YAML: {problem}", file=file) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: at a character offset
        pos = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        ch = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise SpecError(f"invalid YAML: the control character U+{ord(ch):04X} is not allowed (only tab, line "
                        "breaks and printable characters are)", file=file, line=line, column=col) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", file=file) from None
    if node is None:
        return None
    try:
        return _convert(node, file)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise SpecError(f"invalid YAML value: {exc.problem}", file=file, line=line, column=col) from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", file=file) from None


def mark_of(container: Any, key: Any = None) -> Mark | None:
    """The position of ``container[key]`` (or of the container) when it was loaded from YAML."""
    if key is None:
        return getattr(container, "mark", None)
    if isinstance(container, YMap):
        return container.vmark(key)
    if isinstance(container, YList) and isinstance(key, int):
        return container.imark(key)
    return getattr(container, "mark", None)
