"""The network spec (FORMATS.md §1): YAML -> :class:`~convscope.ir.Graph`.

Structure: ``layers`` is a list of items; an item is an op (``relu`` or ``conv: {out: 16, k: 3}``),
a block call (``basic: {c: 16}``), ``repeat``, ``residual`` or ``parallel``.  Extensions beyond §1:
``from:`` (take other named layers as input; with ``add``/``mul``/``concat`` this writes any DAG),
``outputs:`` (graph outputs by name), ``start:`` on ``repeat`` (first copy index), and
``${expr}`` arithmetic on block arguments.

Generated names follow PyTorch module paths: the unnamed op at index 3 of the top-level list is
``layers.3.conv``; a composite item at index 4 is the scope ``layers.4`` (copies of a repeat are
``layers.4.0``, ``layers.4.1``…).  A ``name`` replaces the index path: at the top level it is used
as is (``stem``), inside a named scope it is prefixed by it (``layer3.0`` + ``conv2``).  Unnamed
``residual`` and ``parallel`` items are transparent for the names of their named children, so a
block ``[residual: {body: [conv: {name: conv1}, …]}, relu]`` called as ``layer1.0`` yields
``layer1.0.conv1``, and its shortcut ``layer1.0.downsample.0``/``.1`` and merge ``layer1.0.add``.
Those two names go together and follow from the positions alone: the first unnamed residual of a
scope (in file order, an outer one before those in its body) takes them there, unless a layer
before it already has one of them; any other residual puts both under its own path
(``layer1.0.1.downsample.0``, ``layer1.0.1.add``), whether or not an earlier one needed a
projection.  A repeat copy whose body is one unnamed composite item gives it its own scope.
Inside a block, ``$cin`` is the call's input channel count.
"""

from __future__ import annotations

import difflib
import keyword
import os
from collections.abc import Mapping, Sequence
from typing import Any

from convscope.errors import GraphError, SpecError
from convscope.frontends._spec_args import MAX_INT, Args, fail, names_used, substitute
from convscope.frontends._spec_ops import SHORTHAND, SIMPLE_OPS
from convscope.frontends._yaml import Mark, YList, YMap, load_yaml, read_text_file, shown
from convscope.ir import ops as O
from convscope.ir.graph import SCOPE_OUTPUTS, Graph, GraphBuilder, TensorInfo
from convscope.ir.ops import OpKind

__all__ = ["load_spec", "graph_from_spec_text", "graph_from_spec_data", "SPEC_OPS"]

STRUCTURAL = ("repeat", "residual", "parallel")
# Keys a layer item takes for itself, also inside its arguments (``basic: {c: 16, name: layer1.0}``):
# they never reach a block, so none can be a block argument.
ITEM_KEYS = ("name", "from", "shares")
SPEC_OPS = tuple(sorted(SIMPLE_OPS)) + STRUCTURAL
_TOP_KEYS = ("name", "input", "classes", "blocks", "layers", "description", "outputs")


def load_spec(path: str | os.PathLike[str], *, input_shape: Sequence[int] | None = None) -> Graph:
    """Read a spec file.  ``input_shape`` (C, H, W) overrides the file's ``input``."""
    text = read_text_file(path, "spec")
    return graph_from_spec_text(text, file=str(path), input_shape=input_shape)


def graph_from_spec_text(text: str, *, file: str = "<spec>", input_shape: Sequence[int] | None = None) -> Graph:
    data = load_yaml(text, file)
    return graph_from_spec_data(data, file=file, input_shape=input_shape, text=text)


def graph_from_spec_data(data: Any, *, file: str = "<spec>", input_shape: Sequence[int] | None = None,
                         text: str = "") -> Graph:
    if not isinstance(data, dict):
        fail(file, getattr(data, "mark", (1, 1)), "a network spec must be a mapping with 'name', 'input' and 'layers'")
    top = data if isinstance(data, YMap) else _wrap(data)
    if "candidates" in top and "layers" not in top:
        fail(file, top.kmark("candidates"), "this is a deployment plan (it has 'candidates'), not a network spec: "
                                            "compare its candidates with `convscope compare`, or give a network "
                                            "with 'layers' (docs/FORMATS.md §1)")
    for key in top:
        if key not in _TOP_KEYS:
            fail(file, top.kmark(key), f"unknown key '{key}'{_suggest(str(key), _TOP_KEYS)} "
                                        f"(accepted: {', '.join(_TOP_KEYS)})")
    name = top.get("name")
    if not isinstance(name, str) or not name:
        fail(file, top.vmark("name") if "name" in top else top.mark, "'name' is required and must be a string")
    shape = _input_shape(top, file) if input_shape is None else tuple(int(v) for v in input_shape)
    if "layers" not in top:
        fail(file, top.mark, "'layers' is required: the list of layers")
    layers = top["layers"]
    if not isinstance(layers, list):
        fail(file, top.vmark("layers"), f"'layers' must be a list of layers (like '- conv: {{out: 16, k: 3}}'), "
                                        f"got {_kind(layers)}")
    if not layers:
        fail(file, top.vmark("layers"), "the network is empty: 'layers' must be a non-empty list")
    notes: list[str] = []
    blocks = _blocks(top, file, notes)
    walker = _Walker(file, blocks, GraphBuilder(name), text, notes)
    try:
        walker.builder.add_input("input", shape, source=f"{file}:{top.vmark('input')[0]}")
    except GraphError as exc:
        fail(file, top.vmark("input"), f"input: {exc.detail}")
    try:
        last = walker.walk_list(_as_list(layers), "input", "", "layers", {}, ())
    except RecursionError:
        fail(file, top.vmark("layers"), "the layers nest too deeply (blocks, repeats, residuals or parallels "
                                        "inside each other more than a few hundred levels)")
    outputs = [last]
    if "outputs" in top:
        outs = top["outputs"]
        if not isinstance(outs, list) or not outs or not all(isinstance(o, str) for o in outs):
            fail(file, top.vmark("outputs"), "'outputs' must be a list of layer names")
        outputs = [walker.resolve(o, "", top.vmark("outputs"), key="outputs") for o in outs]
        twice = [o for o in dict.fromkeys(outputs) if outputs.count(o) > 1]
        if twice:
            fail(file, top.vmark("outputs"), f"'outputs' lists '{twice[0]}' more than once")
    meta: dict[str, Any] = {"source": file}
    if notes:
        meta["notes"] = tuple(dict.fromkeys(notes))
    ends = {s: out for s, out in walker.item_outputs.items() if not out.startswith(s + ".")}
    if ends:  # what a cut at such a scope means (the scope's last node would be inside a residual's body)
        meta[SCOPE_OUTPUTS] = tuple(sorted(ends.items()))
    for key in ("classes", "description"):
        if key in top:
            meta[key] = top[key]
    if "classes" in top and (not isinstance(top["classes"], int) or top["classes"] < 1):
        fail(file, top.vmark("classes"), f"'classes' must be a positive integer, got {shown(top['classes'])}")
    return walker.builder.build(outputs=outputs, meta=meta)


def _wrap(data: Any) -> Any:
    """Plain dicts/lists (from Python callers) behave like loaded YAML without positions."""
    if isinstance(data, dict) and not isinstance(data, YMap):
        m = YMap({k: _wrap(v) for k, v in data.items()})
        m.mark = (1, 1)
        return m
    if isinstance(data, list) and not isinstance(data, YList):
        seq = YList([_wrap(v) for v in data])
        seq.mark = (1, 1)
        return seq
    return data


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _input_shape(top: YMap, file: str) -> tuple[int, ...]:
    if "input" not in top:
        fail(file, top.mark, "'input' is required: [C, H, W]")
    v = top["input"]
    ok = isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    if not ok:
        fail(file, top.vmark("input"), f"'input' must be [C, H, W] (three integers), got {shown(v)}")
    if any(x <= 0 for x in v):
        fail(file, top.vmark("input"), f"'input' sizes must be positive, got {list(v)}")
    if any(x > MAX_INT for x in v):
        fail(file, top.vmark("input"), f"'input' sizes must be at most {MAX_INT}, got {list(v)}")
    return tuple(v)


def _as_list(v: Any) -> YList:
    if isinstance(v, YList):
        return v
    seq = YList([v])
    seq.mark = getattr(v, "mark", (1, 1))
    seq.marks = [seq.mark]
    return seq


def _blocks(top: YMap, file: str, notes: list[str]) -> dict[str, YMap]:
    raw = top.get("blocks")
    if raw is None:
        return {}
    if not isinstance(raw, YMap):
        fail(file, top.vmark("blocks"), "'blocks' must be a mapping of block name -> {args, layers}")
    for bname, body in raw.items():
        if not isinstance(bname, str):
            fail(file, raw.kmark(bname), f"block name must be a string, got {shown(bname)}")
        if bname in SIMPLE_OPS or bname in STRUCTURAL:
            fail(file, raw.kmark(bname), f"block name '{bname}' is already an op name")
        if not isinstance(body, YMap):
            fail(file, raw.vmark(bname), f"block '{bname}' must be a mapping with 'layers' (and optional 'args')")
        for key in body:
            if key not in ("args", "layers"):
                fail(file, body.kmark(key), f"block '{bname}': unknown key '{key}' (accepted: args, layers)")
        if not isinstance(body.get("layers"), list) or not body["layers"]:
            fail(file, body.vmark("layers") if "layers" in body else body.mark,
                 f"block '{bname}' needs a non-empty 'layers' list")
        args = body.get("args", YMap())
        if args is not None and not isinstance(args, YMap):
            fail(file, body.vmark("args"), f"block '{bname}': 'args' must be a mapping name -> default (null = required)")
        _check_block_args(bname, args or YMap(), body["layers"], file, notes)
    return dict(raw)


def _check_block_args(bname: str, args: YMap, layers: Any, file: str, notes: list[str]) -> None:
    """A declared argument must not take a key of the calling item; one the layers never use, or whose
    name cannot be written ``$name``, is valid but probably a slip: ``notes`` says so, with its place."""
    used = names_used(layers)
    for key in args:
        line, col = args.kmark(key)
        if key in ITEM_KEYS and args[key] is None:  # required, and no call can ever give it
            fail(file, (line, col), f"block '{bname}': '{key}' cannot be a required argument: a call's '{key}' "
                                    f"belongs to the layer item that calls the block (reserved: "
                                    f"{', '.join(ITEM_KEYS)}); choose another argument name")
        if key in ITEM_KEYS:
            notes.append(f"{file}:{line}:{col}: block '{bname}': a call's '{key}' belongs to the layer item that "
                         f"calls the block, so argument '{key}' always keeps its default {shown(args[key])}")
            continue
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            notes.append(f"{file}:{line}:{col}: block '{bname}': argument name {shown(key)} cannot be written "
                         f"${key} in the layers (an argument name is letters, digits and _, not starting with a "
                         "digit, and not a reserved word such as in, if, and, or, not, None): it is never used")
        elif key not in used:
            notes.append(f"{file}:{line}:{col}: block '{bname}' declares argument '{key}' but no layer uses ${key}; "
                         "a value given for it changes nothing")


def _without(args: dict[str, Any], keys: tuple[str, ...]) -> YMap:
    out = YMap({k: v for k, v in args.items() if k not in keys})
    if isinstance(args, YMap):
        out.mark, out.key_marks, out.value_marks = args.mark, args.key_marks, args.value_marks
    return out


def _join(ns: str, name: str) -> str:
    return f"{ns}.{name}" if ns else name


MAX_REPEAT = 10_000  # a larger count is a typo, and would take hours to build
MAX_LAYERS = 100_000  # nested repeats and blocks multiply: the largest real networks have a few thousand

# Ops whose weights ``shares:`` can point at (the others have none to share; an activation only
# when it has learnt slopes, PReLU).
SHARED_OPS = frozenset({OpKind.CONV, OpKind.CONV_T, OpKind.LINEAR, OpKind.BATCHNORM, OpKind.LAYERNORM,
                        OpKind.GROUPNORM, OpKind.ACT})


class _Ctx:
    """What a simple-op handler sees: its inputs and a way to add nodes under its name."""

    def __init__(self, walker: "_Walker", base: str, prev: str, inputs: tuple[str, ...] | None, mark: Mark,
                 shares: str | None = None):
        self.walker = walker
        self.base = base
        self.shares = shares  # the item whose weights this one uses again (its nodes, suffix by suffix)
        self.prev = prev
        self.from_given = inputs is not None
        self.inputs = inputs if inputs is not None else (prev,)
        self.x = self.inputs[0]
        self.mark = mark

    @property
    def info(self) -> TensorInfo:
        return self.walker.builder.info(self.x)

    def add(self, op: OpKind, attrs: Any, inputs: tuple[str, ...] | None = None, suffix: str | None = None) -> str:
        name = self.base if suffix is None else f"{self.base}.{suffix}"
        owner = None
        if self.shares is not None:
            if op in SHARED_OPS and (op is not OpKind.ACT or attrs.channels):
                owner = self.shares if suffix is None else f"{self.shares}.{suffix}"
            elif suffix is None:
                fail(self.walker.file, self.mark,
                     f"'shares': layer '{name}' ({getattr(attrs, 'fn', op.value)}) has no weights to share")
        return self.walker.add(name, op, attrs, inputs if inputs is not None else (self.x,), self.mark, shares=owner)


class _Walker:
    def __init__(self, file: str, blocks: dict[str, YMap], builder: GraphBuilder, text: str = "",
                 notes: list[str] | None = None):
        self.file = file
        self.text = text
        self._memo: dict[int, bool] = {}  # which YAML parts hold a $substitution (by id; the tree is fixed)
        self.blocks = blocks
        self.builder = builder
        self.generated: dict[str, str] = {}  # names convscope chose for layers the spec implies
        self.claimed: set[str] = set()  # prefixes a residual has taken for its downsample and add
        # the scope of a composite item (a named block call, residual, parallel or repeat; every
        # residual, whose add may sit outside its scope: ``layer3.0`` -> ``layer3.add``) -> its output:
        # what `from: NAME` reads and what a trunk cut at the scope ends at
        self.item_outputs: dict[str, str] = {}
        self.notes: list[str] = [] if notes is None else notes  # valid but probably a slip (the graph's notes)

    # -- helpers ---------------------------------------------------------------------------------
    def add(self, name: str, op: OpKind, attrs: Any, inputs: tuple[str, ...], mark: Mark,
            shares: str | None = None, generated: str | None = None) -> str:
        """``generated``: what convscope adds the layer for (a residual's shortcut or add), named by
        itself; a later layer that takes the name is told so."""
        if len(self.builder) >= MAX_LAYERS:
            fail(self.file, mark, f"the network grows past {MAX_LAYERS} layers here: nested 'repeat' or blocks "
                                  "multiply their counts (is one of them a typo?)")
        try:
            out = self.builder.add(name, op, attrs, inputs, source=f"{self.file}:{mark[0]}:{mark[1]}",
                                   shares=shares)
        except GraphError as exc:
            if name in self.generated:
                fail(self.file, mark, f"layer '{name}': the name is taken by the layer convscope generated for "
                                      f"{self.generated[name]}; choose another name")
            fail(self.file, mark, f"layer '{name}': {exc.detail}")
        if generated:
            self.generated[name] = generated
        return out

    def resolve(self, ref: Any, ns: str, mark: Mark, key: str = "from") -> str:
        if not isinstance(ref, str):
            fail(self.file, mark, f"'{key}' must name earlier layers, got {shown(ref)}")
        for cand in (_join(ns, ref), ref):
            if cand in self.builder or (key == "shares" and self.builder.has_scope(cand)):
                return cand
            if key != "shares" and cand in self.item_outputs:
                return self.item_outputs[cand]
        if key == "outputs":
            fail(self.file, mark, f"'outputs': no layer named '{ref}' (a layer's name, or a generated one "
                                  "such as layers.3.conv)")
        named = (f"name: {ref}", f"name: '{ref}'", f'name: "{ref}"')
        lines = self.text.splitlines()
        here = lines[mark[0] - 1] if 0 < mark[0] <= len(lines) else ""
        if any(n in here for n in named) and here.count("name:") == 1:  # the layer being written
            fail(self.file, mark, f"'{key}': '{ref}' is this layer itself: "
                                  + ("a layer cannot take its own output as input" if key == "from"
                                     else "a layer cannot share its own weights"))
        inside = [n for n in self.builder.node_names() if n.endswith("." + ref)]
        if inside:
            fail(self.file, mark, f"'{key}': no layer is named '{ref}' here; a layer inside a block is named by "
                                  f"its path: {', '.join(repr(n) for n in inside[:3])}")
        later = any(n in self.text for n in named)
        if later:
            rule = ("a layer can only take earlier layers as input (this would make a cycle)" if key == "from"
                    else "a layer can only use the weights of an earlier layer")
            fail(self.file, mark, f"'{key}': '{ref}' is defined later in the file; {rule}")
        fail(self.file, mark, f"'{key}': no earlier layer named '{ref}'"
                              + (f" (looked for '{_join(ns, ref)}' and '{ref}')" if ns else ""))

    # -- lists and items -------------------------------------------------------------------------
    def walk_list(self, items: YList, x: str, ns: str, path: str, env: Mapping[str, Any],
                  stack: tuple[str, ...], scope: str | None = None) -> str:
        if scope is not None and len(items) == 1 and self._composite_unnamed(items[0], env):
            return self.walk_item(items[0], 0, x, ns, path, env, stack, items.imark(0), scope=scope)
        for j, item in enumerate(items):
            x = self.walk_item(item, j, x, ns, path, env, stack, items.imark(j))
        return x

    def _composite_unnamed(self, item: Any, env: Mapping[str, Any]) -> bool:
        if isinstance(item, str):
            return item in self.blocks
        if not isinstance(item, dict) or "name" in item:
            return False
        keys = [k for k in item if k not in ("name", "from", "layers", "start")]
        if "repeat" in item:
            return True
        if len(keys) != 1:
            return False
        key = keys[0]
        args = item[key]
        if isinstance(args, dict) and "name" in args:
            return False
        return key in self.blocks or key in ("residual", "parallel")

    def walk_item(self, item: Any, j: int, x: str, ns: str, path: str, env: Mapping[str, Any],
                  stack: tuple[str, ...], mark: Mark, scope: str | None = None) -> str:
        item = substitute(item, env, self.file, mark, self._memo)
        shares = None
        if isinstance(item, str):
            key, args, item_name, from_ = item, None, None, None
        elif isinstance(item, dict):
            if "repeat" in item:
                return self._repeat(item, j, x, ns, path, env, stack, mark, scope)
            keys = [k for k in item if k not in ITEM_KEYS]
            if len(keys) != 1:
                fail(self.file, mark, "a layer is a mapping with exactly one op, like '- conv: {out: 16, k: 3}'"
                                      f" (got keys: {', '.join(map(str, item)) or 'none'})")
            key = keys[0]
            args = item[key]
            item_name = item.get("name")
            from_ = item.get("from")
            shares = item.get("shares")
        else:
            fail(self.file, mark, f"a layer must be an op name or a mapping, got {shown(item)}")
        if not isinstance(key, str):
            fail(self.file, mark, f"op name must be a string, got {shown(key)}")
        amark = item.vmark(key) if isinstance(item, YMap) else mark
        if key in SHORTHAND and args is not None and not isinstance(args, dict):
            args = YMap({SHORTHAND[key]: args})
            args.mark = amark
            args.value_marks = {SHORTHAND[key]: amark}
        if isinstance(args, dict) and any(k in args for k in ITEM_KEYS):
            if "shares" in args:
                if shares is not None:
                    fail(self.file, amark, "'shares' is given twice (on the item and in its arguments)")
                shares = args["shares"]
            if "name" in args:
                if item_name is not None:
                    fail(self.file, amark, "'name' is given twice (on the item and in its arguments)")
                item_name = args["name"]
            if "from" in args:
                if from_ is not None:
                    fail(self.file, amark, "'from' is given twice (on the item and in its arguments)")
                from_ = args["from"]
            args = _without(args, ITEM_KEYS)
        elif args is not None and not isinstance(args, dict) and (key in SIMPLE_OPS or key in self.blocks):
            fail(self.file, amark, f"{key}: arguments must be a mapping like {{k: 3}}, got {shown(args)}")
        if item_name is not None and (not isinstance(item_name, str) or not item_name):
            fail(self.file, mark, f"'name' must be a non-empty string, got {shown(item_name)}")
        inputs = None
        if from_ is not None:
            refs = from_ if isinstance(from_, list) else [from_]
            if not refs:
                fail(self.file, mark, "'from' must name at least one layer")
            inputs = tuple(self.resolve(r, ns, mark) for r in refs)
        owner = None
        if shares is not None:
            if key not in SIMPLE_OPS:
                fail(self.file, mark, f"'shares' applies to a single op (conv, linear, bn…), not to '{key}'")
            owner = self.resolve(shares, ns, mark, key="shares")
        if key in ("residual", "parallel") or key in self.blocks:
            start = inputs[0] if inputs else x
            if key == "residual":
                out = self._residual(args, j, start, ns, path, env, stack, amark, item_name, scope)
            elif key == "parallel":
                out = self._parallel(args, j, start, ns, path, env, stack, amark, item_name, scope)
            else:
                out = self._call(key, args, j, start, ns, path, stack, amark, item_name, scope)
            if item_name:  # `from: NAME` of a named block call, residual or parallel: its output
                self.item_outputs[_join(ns, item_name)] = out
            return out
        if key in SIMPLE_OPS:
            if inputs is not None and len(inputs) > 1 and key not in ("add", "mul", "concat"):
                fail(self.file, mark, f"{key} takes one input, but 'from' names {len(inputs)}")
            base = _join(ns, item_name) if item_name else f"{path}.{j}.{key}"
            ctx = _Ctx(self, base, x, inputs, mark, owner)
            out = SIMPLE_OPS[key](Args(key, args, self.file, amark), ctx)
            if item_name and out != base:  # an op that adds several layers (se: NAME.avgpool … NAME.scale):
                self.item_outputs[base] = out  # `from: NAME` takes its output
            return out
        known = list(SIMPLE_OPS) + list(STRUCTURAL) + list(self.blocks)
        fail(self.file, mark, f"unknown op or block '{key}'{_suggest(key, known)}; "
                              f"ops: {', '.join(sorted(SIMPLE_OPS))}; structure: {', '.join(STRUCTURAL)}"
                              + (f"; blocks: {', '.join(self.blocks)}" if self.blocks else ""))

    # -- structure -------------------------------------------------------------------------------
    def _scope(self, j: int, ns: str, path: str, name: str | None, scope: str | None) -> tuple[str, str]:
        """(scope of the item, namespace for its named children)."""
        if name:
            s = _join(ns, name)
            return s, s
        if scope is not None:
            return scope, scope
        return f"{path}.{j}", ns

    def _repeat(self, item: dict[str, Any], j: int, x: str, ns: str, path: str, env: Mapping[str, Any],
                stack: tuple[str, ...], mark: Mark, scope: str | None) -> str:
        a = Args("repeat", item, self.file, mark)
        n = a.int("repeat")
        if n > MAX_REPEAT:
            a.error("repeat", f"repeat: at most {MAX_REPEAT} copies, got {n}")
        start = a.int("start", 0, minimum=0)
        name = a.raw("name")
        layers = a.raw("layers")
        a.done()
        if name is not None and (not isinstance(name, str) or not name):
            a.error("name", f"'name' must be a non-empty string, got {shown(name)}")
        if not isinstance(layers, list) or not layers:
            a.error("layers" if "layers" in item else None, "repeat needs a non-empty 'layers' list")
        if name:
            rscope = _join(ns, name)
        else:
            rscope = scope if scope is not None else f"{path}.{j}"
        for k in range(n):
            copy = f"{rscope}.{start + k}"
            x = self.walk_list(_as_list(layers), x, copy, copy, env, stack, scope=copy)
        if name:
            self.item_outputs[rscope] = x
        return x

    def _residual(self, args: Any, j: int, x: str, ns: str, path: str, env: Mapping[str, Any],
                  stack: tuple[str, ...], mark: Mark, name: str | None, scope: str | None) -> str:
        a = Args("residual", args, self.file, mark)
        body = a.raw("body")
        shortcut = a.raw("shortcut", "auto")
        a.done()
        if not isinstance(body, list) or not body:
            a.error("body" if a.has("body") else None, "residual needs a non-empty 'body' list of layers")
        s, child_ns = self._scope(j, ns, path, name, scope)
        prefix = self._residual_prefix(s, child_ns, name)
        y = self.walk_list(_as_list(body), x, child_ns, s, env, stack)
        b = self.builder
        if shortcut == "identity":
            sc = x
        elif shortcut == "auto":
            sc = self._auto_shortcut(x, y, prefix, a)
        elif isinstance(shortcut, list):
            sc = self.walk_list(_as_list(shortcut), x, child_ns, f"{s}.shortcut", env, stack) if shortcut else x
        else:
            a.error("shortcut", f"residual: 'shortcut' must be auto, identity or a list of layers, got {shown(shortcut)}")
        if b.info(sc).shape != b.info(y).shape:
            a.error(None, f"residual: the body's output {list(b.info(y).shape)} and the shortcut's "
                          f"{list(b.info(sc).shape)} cannot be added")
        out = self.add(f"{prefix}.add", OpKind.ADD, O.NoAttrs(), (y, sc), mark,
                       generated=f"the residual's add at {self.file}:{mark[0]}:{mark[1]}")
        if s:
            self.item_outputs[s] = out
        return out

    def _residual_prefix(self, s: str, child_ns: str, name: str | None) -> str:
        """Where a residual's generated layers go (``PREFIX.downsample.0``/``.1``, ``PREFIX.add``):
        the namespace of its named children (``layer1.0``, as PyTorch's module path) for the first
        unnamed residual there, else its own scope ``s``.  Decided before its body is walked, from
        the positions alone: whether this or another residual needs a projection never changes it."""
        prefix = s
        if name is None and child_ns and child_ns != s and child_ns not in self.claimed \
                and not any(f"{child_ns}.{n}" in self.builder for n in ("add", "downsample.0", "downsample.1")):
            prefix = child_ns
        self.claimed.add(prefix)
        return prefix

    def _auto_shortcut(self, x: str, y: str, prefix: str, a: Args) -> str:
        xi, yi = self.builder.info(x), self.builder.info(y)
        if xi.shape == yi.shape:
            return x
        if not (xi.is_image and yi.is_image and len(xi.shape) == len(yi.shape) == 3):
            a.error(None, f"residual: auto shortcut needs feature maps, got {list(xi.shape)} -> {list(yi.shape)}")
        body = self._body_stride(x, y)
        strides = []
        for axis, (size, out) in enumerate(zip(xi.shape[1:], yi.shape[1:])):
            # the body's stride fits a 1-px map too (1 -> 1): kept, so the graph is the same at every size
            top = max(size, body[axis] if body else 1)
            fit = [s for s in range(1, top + 1) if (size - 1) // s + 1 == out]
            if not fit:
                a.error(None, f"residual: auto shortcut cannot map {list(xi.shape)} to {list(yi.shape)} "
                              "with a strided 1x1 convolution")
            # the body's own stride when it fits (a ResNet downsample), else the closest that does
            strides.append(body[axis] if body and body[axis] in fit else min(fit, key=lambda s: abs(s - size / out)))
        base = f"{prefix}.downsample"
        m = a.mark or (0, 0)
        why = f"the residual's auto shortcut at {self.file}:{m[0]}:{m[1]}"
        conv = self.add(f"{base}.0", OpKind.CONV,
                        O.ConvAttrs(out_channels=yi.shape[0], kernel=(1, 1), stride=(strides[0], strides[1])),
                        (x,), m, generated=why)
        return self.add(f"{base}.1", OpKind.BATCHNORM, O.NormAttrs(), (conv,), m, generated=why)

    def _body_stride(self, x: str, y: str) -> tuple[int, int] | None:
        """The product of the strides on the body's path from ``x`` to ``y`` (first inputs), or None
        when that path does not lead back to ``x`` through strided layers alone."""
        h = w = 1
        node = y
        while node != x:
            n = self.builder.get(node)
            if not n.inputs or n.op in (OpKind.CONV_T, OpKind.UPSAMPLE):
                return None
            stride = getattr(n.attrs, "stride", None)
            if stride is not None:
                h, w = h * stride[0], w * stride[1]
            node = n.inputs[0]
        return h, w

    def _parallel(self, args: Any, j: int, x: str, ns: str, path: str, env: Mapping[str, Any],
                  stack: tuple[str, ...], mark: Mark, name: str | None, scope: str | None) -> str:
        a = Args("parallel", args, self.file, mark)
        merge = a.choice("merge", "concat", ("concat", "add"))
        branches = a.raw("branches")
        a.done()
        if not isinstance(branches, list) or not branches:
            a.error("branches" if a.has("branches") else None, "parallel needs a non-empty 'branches' list")
        if len(branches) < 2:  # valid (a named group of layers), but perhaps a branch was forgotten
            line, col = a.where("branches") or mark
            self.notes.append(f"{self.file}:{line}:{col}: a parallel with one branch is that branch: nothing is "
                              f"merged ({merge} needs two or more)")
        s, child_ns = self._scope(j, ns, path, name, scope)
        outs = []
        for bi, br in enumerate(branches):
            br_list = br if isinstance(br, list) else _as_list(br)
            # an empty branch is the input itself: a shortcut, written [] (parallel: {branches: [[...], []]})
            outs.append(self.walk_list(br_list, x, child_ns, f"{s}.{bi}", env, stack) if br_list else x)
        kind = OpKind.CONCAT if merge == "concat" else OpKind.ADD
        attrs: Any = O.AxisAttrs(axis=0) if kind is OpKind.CONCAT else O.NoAttrs()
        if len(outs) == 1:
            return outs[0]
        return self.add(f"{s}.{merge}", kind, attrs, tuple(outs), mark)

    def _call(self, block: str, args: Any, j: int, x: str, ns: str, path: str, stack: tuple[str, ...],
              mark: Mark, name: str | None, scope: str | None) -> str:
        if block in stack:
            chain = " -> ".join((*stack[stack.index(block):], block))
            fail(self.file, mark, f"block '{block}' calls itself ({chain})")
        body = self.blocks[block]
        params = body.get("args") or YMap()
        given = args or {}
        env: dict[str, Any] = {}
        for key in given:
            if key not in params:
                kmark = given.kmark(key) if isinstance(given, YMap) else mark
                accepted = ", ".join(map(str, params)) or "none"
                fail(self.file, kmark, f"block '{block}': unknown argument '{key}'{_suggest(str(key), list(params))} "
                                       f"(accepted: {accepted})")
        for key, default in params.items():
            if key in given:
                env[key] = given[key]
            elif default is None:
                sig = ", ".join(str(k) if v is None else f"{k}={v}" for k, v in params.items())
                fail(self.file, mark, f"block '{block}': missing argument '{key}' (block '{block}' takes: {sig}; "
                                      "those without a default are required)")
            else:
                env[key] = default
        info = self.builder.info(x)
        if "cin" not in env and info.channels is not None:
            env["cin"] = info.channels  # the call's input channels, for expressions like ${cin*6}
        s, _ = self._scope(j, ns, path, name, scope)
        try:
            return self.walk_list(_as_list(body["layers"]), x, s, s, env, (*stack, block))
        except SpecError as exc:  # a problem inside the block: say which call led there
            raise SpecError(f"{exc.detail} (in block '{block}' called at {self.file}:{mark[0]}:{mark[1]})",
                            file=exc.file, line=exc.line, column=exc.column) from None


def _kind(v: Any) -> str:
    """A YAML value as a user wrote it: 'a mapping with keys conv', 'the string 'x'', ..."""
    if isinstance(v, dict):
        return f"a mapping (keys: {', '.join(map(str, v))})"
    if v is None:
        return "nothing"
    return f"{type(v).__name__} {shown(v)}"
