"""Reading deployment plans (FORMATS.md §2) into frozen records, with file:line:column errors."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.errors import SpecError
from convscope.frontends._spec_args import fail
from convscope.frontends._yaml import Mark, YList, YMap, load_yaml, read_text_file, shown

__all__ = ["KINDS", "NetRef", "Constraints", "Candidate", "Plan", "load_plan", "parse_plan", "is_plan_file"]

KINDS = ("single", "switch", "parallel", "trunk", "cascade")
_TOP = ("name", "input", "constraints", "device", "candidates", "description")
_CONSTRAINTS = ("fps", "weights_mb", "activation_mb", "worst_ms")
_FACTORY = re.compile(r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class NetRef:
    """A network reference as written in the plan, resolved against the plan's folder."""

    ref: str  # as written
    resolved: str  # what load_graph gets
    role: str  # 'network', 'day', 'gate', 'head 1' …
    mark: Mark = (0, 0)


@dataclass(frozen=True, slots=True)
class Constraints:
    fps: float | None = None
    weights_mb: float | None = None  # MB = 10^6 bytes
    activation_mb: float | None = None
    worst_ms: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in _CONSTRAINTS if getattr(self, k) is not None}


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    kind: str
    networks: tuple[NetRef, ...]
    shares: tuple[float, ...] = ()  # switch: schedule per network; trunk run one: head shares
    rate: float = 1.0  # cascade: share of frames the expert runs on
    cut: str | None = None  # trunk: run up to and including this layer
    cut_mark: Mark = (0, 0)  # where the plan writes the cut
    run: str = "all"  # trunk: all | one
    resident: str = "all"  # switch: all specialists in memory, or one (+ swap_ms on a change)
    swap_ms: float | None = None  # switch with resident one: the cost of loading another specialist
    mark: Mark = (0, 0)


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    input: tuple[int, int, int]
    candidates: tuple[Candidate, ...]
    constraints: Constraints = field(default_factory=Constraints)
    device: str = "local"
    file: str = "<plan>"
    device_mark: Mark = (0, 0)  # where the plan names its device (0, 0: it does not)


def is_plan_file(ref: str) -> bool:
    """True for a readable .yaml whose top level has ``candidates`` (a plan, not a network spec)."""
    p = Path(ref)
    if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file():
        return False
    import yaml

    try:  # the top level's keys only: nothing is constructed (a file of nested aliases stays small)
        node = yaml.compose(read_text_file(p, "plan"))
    except (yaml.YAMLError, SpecError, RecursionError):
        return False
    return isinstance(node, yaml.MappingNode) and any(
        isinstance(k, yaml.ScalarNode) and k.value == "candidates" for k, _ in node.value)


def load_plan(path: str | Path) -> Plan:
    text = read_text_file(path, "plan")
    return parse_plan(load_yaml(text, str(path)), file=str(path), base=Path(path).parent)


def _number(v: Any) -> bool:
    """A finite int or float (YAML's .nan and .inf are not numbers a plan can use)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Reader:
    def __init__(self, file: str, base: Path):
        self.file = file
        self.base = base

    def ref(self, v: Any, mark: Mark, cand: str, role: str) -> NetRef:
        """A network reference; ``role`` names it within its candidate (network, day, gate, head 1…)."""
        where = f"candidate '{cand}', {role}"
        if not isinstance(v, str) or not v.strip():
            fail(self.file, mark, f"{where}: a network reference must be a spec path, an .onnx path, zoo:NAME or "
                                  f"module.path:factory, got {shown(v)}")
        v = v.strip()
        if v.startswith("zoo:"):
            return NetRef(v, v, role, mark)
        low = v.lower()
        file_factory = _FACTORY.match(v) is not None and v.partition(":")[0].endswith(".py")
        if not file_factory and (low.endswith((".yaml", ".yml", ".onnx")) or "/" in v):
            target = (self.base / v) if not Path(v).is_absolute() else Path(v)
            if not target.exists():
                fail(self.file, mark, f"{where}: network file '{v}' not found (looked for {target})")
            return NetRef(v, str(target), role, mark)
        if _FACTORY.match(v):
            mod, _, fn = v.partition(":")
            if mod.endswith(".py"):
                target = self.base / mod if not Path(mod).is_absolute() else Path(mod)
                if not target.exists():
                    fail(self.file, mark, f"{where}: python file '{mod}' not found (looked for {target})")
                return NetRef(v, f"{target}:{fn}", role, mark)
            return NetRef(v, v, role, mark)
        fail(self.file, mark, f"{where}: '{v}' is not a network reference (a spec .yaml, an .onnx, zoo:NAME or "
                              "module.path:factory)")

    def shares(self, raw: Any, names: list[str], mark: Mark, what: str) -> tuple[float, ...]:
        if not isinstance(raw, dict):
            fail(self.file, mark, f"{what} must map each network to its share of frames, e.g. {{day: 0.5, night: 0.5}}")
        keys = {str(k): k for k in raw}  # a key YAML reads as a number or a boolean names its network too
        for k in raw:
            if str(k) not in names:
                fail(self.file, raw.kmark(k) if isinstance(raw, YMap) else mark,
                     f"{what}: '{k}' is not one of the networks ({', '.join(names)})")
        out = []
        for n in names:
            if n not in keys:
                fail(self.file, mark, f"{what}: no share for '{n}' (give every network its share of frames, "
                                      "0 if it never runs)")
            v = raw[keys[n]]
            vm = raw.vmark(keys[n]) if isinstance(raw, YMap) else mark
            if not _number(v) or v < 0:
                fail(self.file, vm, f"{what}: the share of '{n}' must be a number >= 0, got {shown(v)}")
            out.append(float(v))
        return _sum_to_one(out, self.file, mark, what)


SHARE_TOLERANCE = 1e-3  # thirds written to three or four decimals (0.333 ×3) are one third each


def _sum_to_one(shares: list[float], file: str, mark: Mark, what: str) -> tuple[float, ...]:
    """Shares of frames, scaled to sum to exactly 1 when they are within rounding of it."""
    total = sum(shares)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        fail(file, mark, f"{what}: shares must sum to 1 (within {SHARE_TOLERANCE:g}), they sum to {total:g}")
    return tuple(v / total for v in shares)


def parse_plan(data: Any, *, file: str = "<plan>", base: Path | None = None) -> Plan:
    r = _Reader(file, base or Path("."))
    if not isinstance(data, YMap):
        fail(file, getattr(data, "mark", (1, 1)), "a plan must be a mapping with 'name', 'input' and 'candidates'")
    if "layers" in data and "candidates" not in data:
        fail(file, data.kmark("layers"), "this is a network spec (it has 'layers'), not a deployment plan: analyse it "
                                         "with `convscope analyze`, or write a plan with 'candidates' (docs/FORMATS.md §2)")
    for k in data:
        if k not in _TOP:
            close = difflib.get_close_matches(str(k), _TOP, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            fail(file, data.kmark(k), f"unknown key '{k}'{hint} (accepted: {', '.join(_TOP)})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        fail(file, data.vmark("name") if "name" in data else data.mark, "'name' is required and must be a string")
    shape = data.get("input")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                                  for x in shape)):
        got = f"got {shown(shape)}" if "input" in data else "it is missing"
        fail(file, data.vmark("input") if "input" in data else data.mark,
             f"'input' is required and must be [C, H, W] (three positive integers), {got}")
    device = data.get("device", "local")
    if not isinstance(device, str) or not device:
        fail(file, data.vmark("device"), f"'device' must be local, a profile name or a profile file, got {shown(device)}")
    if device.lower().endswith((".yaml", ".yml")) and not Path(device).is_absolute():
        device = str((base or Path(".")) / device)
    constraints = _constraints(data, r)
    cands = data.get("candidates")
    if not isinstance(cands, YMap) or not cands:
        fail(file, data.vmark("candidates") if "candidates" in data else data.mark,
             "'candidates' must be a non-empty mapping of candidate name -> plan")
    for cname in cands:
        if cname is None or not str(cname).strip():
            fail(file, cands.kmark(cname), f"a candidate needs a name, got {shown(cname)}: the tables and the verdict "
                 "name each candidate")
    out = [_candidate(str(cname), body, cands.vmark(cname), r) for cname, body in cands.items()]
    return Plan(name, (shape[0], shape[1], shape[2]), tuple(out), constraints, device, file,
                data.vmark("device") if "device" in data else (0, 0))


def _constraints(data: YMap, r: _Reader) -> Constraints:
    raw = data.get("constraints")
    if raw is None:
        return Constraints()
    if not isinstance(raw, YMap):
        fail(r.file, data.vmark("constraints"), "'constraints' must be a mapping like {fps: 30, weights_mb: 50}")
    values: dict[str, float] = {}
    for k, v in raw.items():
        if k not in _CONSTRAINTS:
            fail(r.file, raw.kmark(k), f"unknown constraint '{k}' (accepted: {', '.join(_CONSTRAINTS)})")
        if not _number(v) or v <= 0:
            fail(r.file, raw.vmark(k), f"constraint '{k}' must be a positive number, got {shown(v)}")
        values[k] = float(v)
    return Constraints(**values)


def _candidate(name: str, body: Any, mark: Mark, r: _Reader) -> Candidate:
    if not isinstance(body, YMap):
        fail(r.file, mark, f"candidate '{name}' must be a mapping with one of: {', '.join(KINDS)}")
    kinds = [k for k in body if k in KINDS]
    if len(kinds) != 1:
        fail(r.file, mark, f"candidate '{name}' needs exactly one of {', '.join(KINDS)} (got: {', '.join(map(str, body)) or 'none'})")
    kind = kinds[0]
    allowed = {"single": (), "switch": (), "parallel": (), "cascade": (), "trunk": ("heads", "run", "schedule")}[kind]
    for k in body:
        if k != kind and k not in allowed:
            fail(r.file, body.kmark(k), f"candidate '{name}': unknown key '{k}' for a {kind} plan"
                                        + (f" (accepted: {', '.join(allowed)})" if allowed else ""))
    v, vm = body[kind], body.vmark(kind)
    return _KIND_READERS[kind](name, v, vm, body, r)


def _single(name: str, v: Any, vm: Mark, body: YMap, r: _Reader) -> Candidate:
    return Candidate(name, "single", (r.ref(v, vm, name, "network"),), mark=vm)


def _switch(name: str, v: Any, vm: Mark, body: YMap, r: _Reader) -> Candidate:
    if not isinstance(v, YMap) or "networks" not in v:
        fail(r.file, vm, f"candidate '{name}': switch needs 'networks' (a mapping name -> network) and an optional 'schedule'")
    for k in v:
        if k not in ("networks", "schedule", "resident", "swap_ms"):
            fail(r.file, v.kmark(k), f"candidate '{name}': unknown switch key '{k}' (accepted: networks, schedule, resident, swap_ms)")
    nets = v["networks"]
    if not isinstance(nets, YMap) or not nets:
        fail(r.file, v.vmark("networks"), f"candidate '{name}': 'networks' must map a name (day, night…) to a network")
    names = [str(k) for k in nets]
    refs = tuple(r.ref(nets[k], nets.vmark(k), name, str(k)) for k in nets)
    if "schedule" in v:
        shares = r.shares(v["schedule"], names, v.vmark("schedule"), f"candidate '{name}': schedule")
    else:
        shares = tuple(1.0 / len(names) for _ in names)
    resident = v.get("resident", "all")
    if resident not in ("all", "one"):
        fail(r.file, v.vmark("resident"), f"candidate '{name}': 'resident' must be all or one, got {shown(resident)}")
    swap = v.get("swap_ms")
    if swap is not None and (not _number(swap) or swap < 0):
        fail(r.file, v.vmark("swap_ms"), f"candidate '{name}': 'swap_ms' must be a number >= 0, got {shown(swap)}")
    if "swap_ms" in v and resident != "one":
        fail(r.file, v.kmark("swap_ms"), f"candidate '{name}': 'swap_ms' (the time to load the next specialist) "
                                         "needs resident: one; with resident: all nothing is swapped")
    return Candidate(name, "switch", refs, shares=shares, resident=resident,
                     swap_ms=float(swap) if swap is not None else None, mark=vm)


def _parallel(name: str, v: Any, vm: Mark, body: YMap, r: _Reader) -> Candidate:
    if isinstance(v, YMap):
        refs = tuple(r.ref(v[k], v.vmark(k), name, str(k)) for k in v)
    elif isinstance(v, YList) and v:
        refs = tuple(r.ref(x, v.imark(i), name, f"network {i + 1}") for i, x in enumerate(v))
    else:
        fail(r.file, vm, f"candidate '{name}': parallel needs a non-empty list of networks")
    return Candidate(name, "parallel", refs, mark=vm)


def _trunk(name: str, v: Any, vm: Mark, body: YMap, r: _Reader) -> Candidate:
    if not isinstance(v, YMap) or "network" not in v or "cut" not in v:
        fail(r.file, vm, f"candidate '{name}': trunk needs {{network: ..., cut: LAYER}}")
    for k in v:
        if k not in ("network", "cut"):
            fail(r.file, v.kmark(k), f"candidate '{name}': unknown trunk key '{k}' (accepted: network, cut)")
    cut = v["cut"]
    if not isinstance(cut, str) or not cut:
        fail(r.file, v.vmark("cut"), f"candidate '{name}': 'cut' must name a layer, got {shown(cut)}")
    trunk = r.ref(v["network"], v.vmark("network"), name, "trunk")
    heads = body.get("heads")
    if not isinstance(heads, YList) or not heads:
        fail(r.file, body.vmark("heads") if "heads" in body else vm, f"candidate '{name}': trunk needs a non-empty 'heads' list")
    refs = tuple(r.ref(h, heads.imark(i), name, f"head {i + 1}") for i, h in enumerate(heads))
    run = body.get("run", "all")
    if run not in ("all", "one"):
        fail(r.file, body.vmark("run"), f"candidate '{name}': 'run' must be all or one, got {shown(run)}")
    shares: tuple[float, ...] = ()
    if run == "one":  # one head per frame: an optional list of shares, in the order of 'heads'
        sched = body.get("schedule")
        if sched is None:
            shares = tuple(1.0 / len(refs) for _ in refs)
        else:
            if not isinstance(sched, YList) or len(sched) != len(refs) or not all(_number(x) and x >= 0 for x in sched):
                fail(r.file, body.vmark("schedule"), f"candidate '{name}': schedule must list one share >= 0 per head "
                                                     f"({len(refs)} heads), got {shown(sched)}")
            shares = _sum_to_one([float(x) for x in sched], r.file, body.vmark("schedule"),
                                 f"candidate '{name}': schedule")
    elif "schedule" in body:
        fail(r.file, body.kmark("schedule"), f"candidate '{name}': a schedule needs run: one")
    return Candidate(name, "trunk", (trunk, *refs), shares=shares, cut=cut, run=run, mark=vm, cut_mark=v.vmark("cut"))


def _cascade(name: str, v: Any, vm: Mark, body: YMap, r: _Reader) -> Candidate:
    if not isinstance(v, YMap) or "gate" not in v or "expert" not in v:
        fail(r.file, vm, f"candidate '{name}': cascade needs {{gate: ..., expert: ..., rate: 0.1}}")
    for k in v:
        if k not in ("gate", "expert", "rate"):
            fail(r.file, v.kmark(k), f"candidate '{name}': unknown cascade key '{k}' (accepted: gate, expert, rate)")
    if "rate" not in v:
        fail(r.file, vm, f"candidate '{name}': cascade needs 'rate', the share of frames the gate passes to the "
                         "expert (0 to 1, e.g. rate: 0.1)")
    rate = v["rate"]
    if not _number(rate) or not 0 <= rate <= 1:
        fail(r.file, v.vmark("rate"),
             f"candidate '{name}': 'rate' (the share of frames the expert runs on) must be in [0, 1], got {shown(rate)}")
    gate = r.ref(v["gate"], v.vmark("gate"), name, "gate")
    expert = r.ref(v["expert"], v.vmark("expert"), name, "expert")
    return Candidate(name, "cascade", (gate, expert), rate=float(rate), mark=vm)


_KIND_READERS = {"single": _single, "switch": _switch, "parallel": _parallel, "trunk": _trunk, "cascade": _cascade}
