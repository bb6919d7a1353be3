"""Typed access to one layer's arguments in a spec, with errors that point into the file.

Also the ``$name`` / ``${expression}`` substitution used inside blocks: a tiny, safe arithmetic
language (numbers, argument names, + - * / // % and parentheses) evaluated with :mod:`ast`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from convscope.errors import SpecError
from convscope.frontends._yaml import Mark, YList, YMap, shown

__all__ = ["Args", "substitute", "has_dollar", "names_used", "fail"]


def fail(file: str, mark: Mark | None, message: str) -> NoReturn:
    line, col = mark if mark else (None, None)
    raise SpecError(message, file=file, line=line, column=col)


_BINOPS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Div: operator.truediv,
}


def _eval(node: ast.AST, env: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            known = ", ".join(sorted(env)) or "none"
            raise ValueError(f"'{text}' uses '{node.id}', which is not an argument here (arguments: {known})")
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, env, text), _eval(node.right, env, text)
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(node.op, ast.Div) and float(value).is_integer():
            value = int(value)
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, env, text)
    raise ValueError(f"'{text}' is not a valid expression (use numbers, argument names and + - * / // %)")


def _substitute_str(text: str, env: Mapping[str, Any]) -> Any:
    body = text[1:]
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    try:
        tree = ast.parse(body.strip(), mode="eval")
        return _eval(tree, env, text)
    except SyntaxError:
        raise ValueError(f"'{text}' is not a valid expression") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"the expression '{text[:40]}…' ({len(text)} characters) is too long or nested too "
                         "deeply to evaluate") from None


_INSIDE = re.compile(r"\$(\{[^{}]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def _interpolate(text: str, env: Mapping[str, Any]) -> str:
    """``conv_$tag`` / ``stage${i + 1}``: each substitution inside a longer string, as text."""
    return _INSIDE.sub(lambda m: str(_substitute_str("$" + m.group(1), env)), text)


def has_dollar(value: Any, memo: dict[int, bool] | None = None) -> bool:
    """Does ``value`` (deeply) contain a ``$`` substitution?  ``memo`` caches by object id."""
    if memo is not None and id(value) in memo:
        return memo[id(value)]
    if isinstance(value, str):
        found = "$" in value
    elif isinstance(value, dict):
        found = any(has_dollar(v, memo) for v in value.values())
    elif isinstance(value, list):
        found = any(has_dollar(v, memo) for v in value)
    else:
        found = False
    if memo is not None and isinstance(value, (dict, list)):
        memo[id(value)] = found
    return found


def _expr_names(body: str) -> set[str]:
    """The names an expression (the part after ``$``, braces removed) reads; none when it does not
    parse (the substitution itself says so, where it is used)."""
    try:
        tree = ast.parse(body.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def names_used(value: Any) -> set[str]:
    """The argument names the ``$name`` / ``${expression}`` substitutions in ``value`` (deeply, in
    the values :func:`substitute` replaces) read."""
    if isinstance(value, str):
        if "$" not in value:
            return set()
        if value.startswith("$"):
            body = value[1:]
            return _expr_names(body[1:-1] if body.startswith("{") and body.endswith("}") else body)
        return {n for m in _INSIDE.finditer(value) for n in _expr_names(m.group(1).strip("{}"))}
    if isinstance(value, dict):
        return {n for v in value.values() for n in names_used(v)}
    if isinstance(value, list):
        return {n for v in value for n in names_used(v)}
    return set()


def substitute(value: Any, env: Mapping[str, Any], file: str, mark: Mark | None,
               memo: dict[int, bool] | None = None) -> Any:
    """Replace ``$name`` and ``${expr}`` strings (deeply) by their values in ``env``.  Parts without
    any ``$`` are returned as they are (no copy)."""
    if isinstance(value, str):
        if "$" not in value:
            return value
        try:
            return _substitute_str(value, env) if value.startswith("$") else _interpolate(value, env)
        except (ValueError, ZeroDivisionError, TypeError) as exc:
            fail(file, mark, str(exc))
    if not isinstance(value, (dict, list)) or not has_dollar(value, memo):
        return value
    if isinstance(value, YMap):
        out = YMap({k: substitute(v, env, file, value.vmark(k), memo) for k, v in value.items()})
        out.mark, out.key_marks, out.value_marks = value.mark, value.key_marks, value.value_marks
        return out
    if isinstance(value, YList):
        seq = YList([substitute(v, env, file, value.imark(i), memo) for i, v in enumerate(value)])
        seq.mark, seq.marks = value.mark, value.marks
        return seq
    if isinstance(value, dict):
        return {k: substitute(v, env, file, mark, memo) for k, v in value.items()}
    return [substitute(v, env, file, mark, memo) for v in value]


MAX_INT = 1 << 24  # channels, kernels, strides, sizes: a larger value is a typo (and overflows the cost)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v <= MAX_INT


def _huge(v: Any) -> bool:
    items = v if isinstance(v, list) else [v]
    flat = [y for x in items for y in (x if isinstance(x, list) else [x])]
    return any(isinstance(x, int) and not isinstance(x, bool) and x > MAX_INT for x in flat)


# How PyTorch and other tools spell the spec's short argument names.
_SPELLED = {"kernel": "k", "kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d", "groups": "g",
            "out_channels": "out", "channels": "out", "out_features": "out", "output_padding": "op",
            "scale_factor": "scale", "reduction": "ratio", "upscale_factor": "factor",
            "downscale_factor": "factor", "r": "factor"}


class Args:
    """The arguments of one layer.  Each getter checks the type and records the key as used;
    :meth:`done` rejects keys that no getter asked for, listing what would be accepted."""

    def __init__(self, op: str, data: Any, file: str, mark: Mark | None):
        if data is None:
            data = YMap()
        if not isinstance(data, dict):
            fail(file, mark, f"{op}: arguments must be a mapping like {{k: 3}}, got {shown(data)}")
        self.op = op
        self.data: dict[str, Any] = data
        self.file = file
        self.mark = mark
        self.used: set[str] = set()

    def where(self, key: str | None = None) -> Mark | None:
        if key is not None and isinstance(self.data, YMap) and key in self.data:
            return self.data.vmark(key)
        return self.mark

    def error(self, key: str | None, message: str) -> NoReturn:
        if key is not None and isinstance(self.data, dict) and _huge(self.data.get(key)):
            message += f" (at most {MAX_INT})"
        fail(self.file, self.where(key), message)

    def missing(self, key: str) -> NoReturn:
        """A required argument is absent; if the item spells it another way (PyTorch's ``kernel_size``,
        ``stride``…), name that key."""
        import difflib

        present = [k for k in self.data if isinstance(k, str) and k not in self.used]
        alias = [k for k in present if _SPELLED.get(k) == key] or difflib.get_close_matches(key, present, 1, 0.6)
        hint = f" ('{alias[0]}' is not an argument of {self.op}: write '{key}')" if alias else ""
        where = self.data.kmark(alias[0]) if alias and isinstance(self.data, YMap) else self.mark
        fail(self.file, where, f"{self.op}: missing argument '{key}'{hint}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def int(self, key: str, default: Any = ..., *, minimum: int = 1) -> int:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.missing(key)
            return default  # type: ignore[no-any-return]
        v = self.data[key]
        if not _is_int(v) or v < minimum:
            self.error(key, f"{self.op}: '{key}' must be an integer >= {minimum}, got {shown(v)}")
        return v  # type: ignore[no-any-return]

    def number(self, key: str, default: Any = ..., *, positive: bool = False, low: float | None = None,
               high: float | None = None) -> float:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.missing(key)
            return default  # type: ignore[no-any-return]
        v = self.data[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and positive and v <= 0:
            ok = False
        if ok and low is not None and v < low:
            ok = False
        if ok and high is not None and v > high:
            ok = False
        if not ok:
            parts = ["> 0"] if positive else []
            if low is not None:
                parts.append(f">= {low:g}")
            if high is not None:
                parts.append(f"<= {high:g}")
            rng = f" {' and '.join(parts)}" if parts else ""
            self.error(key, f"{self.op}: '{key}' must be a number{rng}, got {shown(v)}")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        self.used.add(key)
        v = self.data.get(key, default)
        if not isinstance(v, bool):
            self.error(key, f"{self.op}: '{key}' must be true or false, got {shown(v)}")
        return v

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        self.used.add(key)
        v = self.data.get(key, default)
        if v not in choices:
            self.error(key, f"{self.op}: '{key}' must be one of {', '.join(choices)}, got {shown(v)}")
        return v  # type: ignore[no-any-return]

    def pair(self, key: str, default: Any = ..., *, minimum: int = 1) -> tuple[int, int]:
        """An int or an [h, w] list of ints."""
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.missing(key)
            return default  # type: ignore[no-any-return]
        v = self.data[key]
        if _is_int(v) and v >= minimum:
            return (v, v)
        if isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x >= minimum for x in v):
            return (v[0], v[1])
        self.error(key, f"{self.op}: '{key}' must be an integer >= {minimum} or a list [h, w] of them, got {shown(v)}")

    def padding(self, key: str, default: tuple[tuple[int, int], tuple[int, int]],
                same: tuple[tuple[int, int], tuple[int, int]] | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
        """``default`` when the key is absent; ``same`` (the caller's padding that keeps the size,
        ``default`` when not given), ``valid`` (no padding, PyTorch's word), an int, [h, w] or
        [[top, bottom], [left, right]]."""
        self.used.add(key)
        if key not in self.data:
            return default
        v = self.data[key]
        if v == "same":
            return default if same is None else same
        if v == "valid":
            return ((0, 0), (0, 0))
        if _is_int(v) and v >= 0:
            return ((v, v), (v, v))
        if isinstance(v, list) and len(v) == 2:
            if all(_is_int(x) and x >= 0 for x in v):
                return ((v[0], v[0]), (v[1], v[1]))
            if all(isinstance(x, list) and len(x) == 2 and all(_is_int(y) and y >= 0 for y in x) for x in v):
                return ((v[0][0], v[0][1]), (v[1][0], v[1][1]))
        self.error(key, f"{self.op}: '{key}' must be 'same', 'valid', an integer >= 0, [h, w] or "
                        f"[[top, bottom], [left, right]], got {shown(v)}")

    def done(self, accepted_extra: tuple[str, ...] = ()) -> None:
        extra = [k for k in self.data if k not in self.used and k not in accepted_extra]
        if extra:
            key = extra[0]
            accepted = sorted(self.used | set(accepted_extra))
            mark = self.data.kmark(key) if isinstance(self.data, YMap) else self.mark
            fail(self.file, mark,
                 f"{self.op}: unknown argument '{key}' (accepted: {', '.join(accepted) or 'none'})")
