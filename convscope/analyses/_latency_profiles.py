"""Device profiles: the numbers the analytic roofline needs, read from small YAML files.

A profile gives, for one device: achievable peak FLOP/s per op class (dense conv, grouped/depthwise
conv, matmul, elementwise), memory bandwidth, a per-kernel overhead per backend (launch + dispatch),
a throughput factor per supported dtype, and the uncertainty band of its predictions.  The shipped
ones live in ``convscope/analyses/profiles/*.yaml``, each number with its source in a comment; a
user writes their own in the same format (``convscope analyze net.yaml --device my_board.yaml``)::

    name: my-board
    description: what it is
    peak_gflops: {conv: 20, grouped: 4, matmul: 15, elementwise: 3}   # achievable GFLOP/s (fp32)
    bandwidth_gbs: 4.5                                                 # achievable GB/s
    overhead_us: {torch: 50, onnxruntime: 10, tflite: 8}               # per kernel, per backend
    dtypes: {fp32: 1.0, fp16: 1.0, int8: 2.0}                          # peak multiplier per dtype
    uncertainty: [0.6, 1.7]                                            # band: [ms*lo, ms*hi]
    sources: ["where the numbers come from"]
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from convscope.analyses._latency_kernels import BACKENDS, OpClass
from convscope.analyses.cost import DType
from convscope.errors import InputError, SpecError
from convscope.frontends._yaml import YMap, load_yaml, shown

__all__ = ["DeviceProfile", "load_profile", "profile_names", "parse_profile"]

_KEYS = ("name", "description", "peak_gflops", "bandwidth_gbs", "overhead_us", "dtypes", "uncertainty",
         "sources", "backend")
_REQUIRED = ("name", "peak_gflops", "bandwidth_gbs", "overhead_us")


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Numbers in SI units: FLOP/s, bytes/s, seconds."""

    name: str
    description: str
    peak_flops: tuple[tuple[OpClass, float], ...]  # FLOP/s per op class, fp32
    bandwidth: float  # bytes/s
    overhead_s: tuple[tuple[str, float], ...]  # per kernel, per backend
    dtypes: tuple[tuple[str, float], ...] = (("fp32", 1.0),)
    uncertainty: tuple[float, float] = (0.5, 2.0)
    sources: tuple[str, ...] = ()
    backend: str = "torch"  # the runtime the device is usually programmed with
    path: str | None = None

    def peak(self, cls: OpClass, dtype: DType | str = DType.FP32) -> float:
        """FLOP/s for ``cls`` in ``dtype``; DATA kernels have no arithmetic (infinite peak)."""
        if cls is OpClass.DATA:
            return float("inf")
        base = dict(self.peak_flops)[cls]
        return base * self.dtype_factor(dtype)

    def dtype_factor(self, dtype: DType | str) -> float:
        d = DType.parse(dtype).value
        table = dict(self.dtypes)
        if d not in table:
            where = f" ({self.path})" if self.path else ""
            raise InputError(f"device profile '{self.name}'{where} does not support {d} "
                             f"(its dtypes: {', '.join(table)}; add {d}: FACTOR under dtypes to use it)")
        return table[d]

    def overhead(self, backend: str) -> float:
        table = dict(self.overhead_s)
        if backend not in table:
            raise InputError(f"device profile '{self.name}' has no kernel overhead for backend '{backend}' "
                             f"(it lists {', '.join(table)}); add it under overhead_us")
        return table[backend]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description,
            "peak_gflops": {c.value: v / 1e9 for c, v in self.peak_flops},
            "bandwidth_gbs": self.bandwidth / 1e9,
            "overhead_us": {b: v * 1e6 for b, v in self.overhead_s},
            "dtypes": dict(self.dtypes), "uncertainty": list(self.uncertainty),
            "sources": list(self.sources), "backend": self.backend,
        }


def profile_names() -> list[str]:
    root = resources.files("convscope.analyses") / "profiles"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_profile(ref: str | os.PathLike[str]) -> DeviceProfile:
    """A shipped profile by name (``raspi4``) or a YAML file of the same format."""
    text_ref = os.fspath(ref)
    if not text_ref.strip():
        raise InputError(f"--device needs a profile name ({', '.join(profile_names())}), a profile file or local, got ''")
    if text_ref in profile_names():
        root = resources.files("convscope.analyses") / "profiles"
        return parse_profile((root / f"{text_ref}.yaml").read_text(encoding="utf-8"), f"profile:{text_ref}")
    path = Path(text_ref)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{text_ref}: cannot read the device profile: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{text_ref}: cannot read the device profile: not UTF-8 text ({exc.reason} at "
                             f"byte {exc.start})") from None
        return parse_profile(text, text_ref)
    close = difflib.get_close_matches(text_ref, profile_names(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise InputError(f"'{text_ref}' is not a device profile{hint}: give 'local', one of "
                     f"{', '.join(profile_names())}, or a profile .yaml file")


def _err(file: str, data: YMap, key: str | None, msg: str) -> SpecError:
    line, col = data.vmark(key) if key is not None else data.mark
    return SpecError(msg, file=file, line=line, column=col)


def _number(v: Any) -> float | None:
    """A finite number (``1e3`` included: the loader reads YAML 1.2 floats), else None."""
    if isinstance(v, bool):
        return None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


# What a device can plausibly have, per key: a number outside is a typo or a unit slip (1e-320 GB/s
# would predict infinite latency, 1e308 µs of overhead a number of 300 digits).
_RANGES = {"peak_gflops": (1e-6, 1e9), "bandwidth_gbs": (1e-6, 1e6), "overhead_us": (0.0, 1e7), "dtypes": (1e-3, 1e3)}


def _positive(file: str, m: YMap, key: Any, what: str, zero: bool = False) -> float:
    v = _number(m[key])
    raw = m[key]
    got = f"{shown(raw)} (infinite, or too large for a float)" if isinstance(raw, float) and math.isinf(raw) \
        else shown(raw)
    if v is None or not (v >= 0 if zero else v > 0):
        kind = "a finite number >= 0" if zero else "a positive finite number"
        raise _err(file, m, key, f"{what} must be {kind}, got {got}")
    lo, hi = _RANGES.get(what.split(".")[0], (0.0, math.inf))
    if v < lo or v > hi:
        raise _err(file, m, key, f"{what} must be between {lo:g} and {hi:g}, got {got} (a typo or another unit?)")
    return v


def _table(file: str, top: YMap, key: str, allowed: tuple[str, ...], required: bool,
           zero: bool = False) -> dict[str, float]:
    m = top[key]
    if not isinstance(m, YMap):
        raise _err(file, top, key, f"'{key}' must be a mapping like {{{allowed[0]}: 1.0}}, got {m!r}")
    for k in m:
        if k not in allowed:
            line, col = m.kmark(k)
            raise SpecError(f"unknown {key} entry '{k}' (expected {', '.join(allowed)})", file=file,
                            line=line, column=col)
    missing = [a for a in allowed if a not in m] if required else []
    if missing:
        raise _err(file, top, key, f"'{key}' lacks {', '.join(missing)}")
    return {str(k): _positive(file, m, k, f"{key}.{k}", zero) for k in m}


def parse_profile(text: str, file: str) -> DeviceProfile:
    """Validate a profile; every error names file:line:column and the offending key or value."""
    top = load_yaml(text, file)
    if not isinstance(top, YMap):
        raise SpecError("a device profile is a mapping (name, peak_gflops, bandwidth_gbs, overhead_us, …)",
                        file=file, line=1, column=1)
    for k in top:
        if k not in _KEYS:
            line, col = top.kmark(k)
            close = difflib.get_close_matches(str(k), _KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(f"unknown key '{k}'{hint}; a profile has {', '.join(_KEYS)}", file=file,
                            line=line, column=col)
    for k in _REQUIRED:
        if k not in top:
            raise SpecError(f"missing required key '{k}'", file=file, line=top.mark[0], column=top.mark[1])
    classes = tuple(c.value for c in OpClass if c is not OpClass.DATA)
    peaks = _table(file, top, "peak_gflops", classes, True)
    overhead = _table(file, top, "overhead_us", BACKENDS, False, zero=True)  # 0: a dataflow accelerator
    dtypes = _table(file, top, "dtypes", tuple(d.value for d in DType), False) if "dtypes" in top else {"fp32": 1.0}
    unc = _uncertainty(file, top)
    if not overhead:
        raise _err(file, top, "overhead_us", f"'overhead_us' needs at least one backend ({', '.join(BACKENDS)})")
    if "backend" in top and not isinstance(top["backend"], str):
        raise _err(file, top, "backend", f"'backend' must name a runtime ({', '.join(overhead)}), got {shown(top['backend'])}")
    backend = str(top.get("backend", next(iter(overhead))))
    if backend not in overhead:
        raise _err(file, top, "backend", f"backend '{backend}' has no entry in overhead_us ({', '.join(overhead)})")
    if not isinstance(top["name"], str) or not top["name"].strip():
        raise _err(file, top, "name", f"'name' must be a non-empty string, got {shown(top['name'])}")
    if "description" in top and not isinstance(top["description"], str):
        raise _err(file, top, "description", f"'description' must be a string, got {shown(top['description'])}")
    sources = top.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
        raise _err(file, top, "sources", "'sources' must be a list of strings")
    return DeviceProfile(
        name=str(top["name"]), description=str(top.get("description", "")),
        peak_flops=tuple((OpClass(c), v * 1e9) for c, v in peaks.items()),
        bandwidth=_positive(file, top, "bandwidth_gbs", "bandwidth_gbs") * 1e9,
        overhead_s=tuple((b, v * 1e-6) for b, v in overhead.items()),
        dtypes=tuple(dtypes.items()), uncertainty=unc, sources=tuple(str(s) for s in sources),
        backend=backend, path=file,
    )


def _uncertainty(file: str, top: YMap) -> tuple[float, float]:
    if "uncertainty" not in top:
        return (0.5, 2.0)
    u = top["uncertainty"]
    vals = [_number(x) for x in u] if isinstance(u, list) and len(u) == 2 else [None]
    lo, hi = (vals + [None])[:2]
    if lo is None or hi is None or not (0 < lo <= 1 <= hi):
        raise _err(file, top, "uncertainty", f"'uncertainty' must be [low, high] finite factors with "
                                             f"0 < low <= 1 <= high, got {shown(u)}")
    return (lo, hi)
