"""The latency cache: an embedded SQLite store of measured kernel times and calibrations.

Where: ``$CONVSCOPE_CACHE`` (a directory, or a file ending in ``.sqlite``/``.db``), else
``$XDG_CACHE_HOME/convscope/latency.sqlite`` (``~/.cache/convscope/latency.sqlite``).

Keys: every timing belongs to a *device fingerprint* (CPU model, logical cores, OS/architecture, the
backend library's version, the GPU for ``cuda``), a backend, a thread count, a dtype and a kernel
signature (op, attributes, input layouts, batch, dtype — never a layer name).  A different machine,
library version or thread count therefore never reuses another's numbers.

Safety: WAL journal, a busy timeout, and every write in its own transaction, so concurrent
``calibrate`` runs interleave and an interrupted run leaves only whole rows.  A file that is not a
readable store (corrupt, truncated, another program's) is moved aside to ``*.corrupt-<time>`` and
rebuilt, with a :class:`CacheWarning`.  Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["CacheWarning", "cache_path", "default_threads", "Fingerprint", "device_fingerprint", "LayerTiming", "Calibration",
           "LatencyStore", "open_store"]

SCHEMA = 1
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (fingerprint TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
  fingerprint TEXT NOT NULL, backend TEXT NOT NULL, threads INTEGER NOT NULL, dtype TEXT NOT NULL,
  signature TEXT NOT NULL, ms REAL NOT NULL, p10_ms REAL NOT NULL, p90_ms REAL NOT NULL,
  runs INTEGER NOT NULL, measured_at REAL NOT NULL,
  PRIMARY KEY (fingerprint, backend, threads, dtype, signature));
CREATE TABLE IF NOT EXISTS calibrations (
  fingerprint TEXT NOT NULL, backend TEXT NOT NULL, threads INTEGER NOT NULL, dtype TEXT NOT NULL,
  data TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (fingerprint, backend, threads, dtype));
"""


class CacheWarning(UserWarning):
    """The cache file was unreadable and has been rebuilt."""


def cache_path() -> Path:
    env = os.environ.get("CONVSCOPE_CACHE")
    if env:
        p = Path(env).expanduser()
        return p if p.suffix in (".sqlite", ".db") else p / "latency.sqlite"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convscope" / "latency.sqlite"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    key: str  # a short hash of ``description``
    description: tuple[tuple[str, str], ...]

    def label(self) -> str:
        d = dict(self.description)
        return f"{d.get('cpu', '?')} ({d.get('cores', '?')} cores)" + (f", {d['gpu']}" if "gpu" in d else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def core_cache_bytes() -> int:
    """The largest cache private to one core (L2 on most CPUs; Linux sysfs), 2 MiB if unknown."""
    best = 0
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (d / "type").read_text().strip() == "Instruction":
                continue
            if len((d / "shared_cpu_list").read_text().strip().replace("-", ",").split(",")) > 1:
                continue  # shared between cores (an L3)
            size = (d / "size").read_text().strip().upper()
            n = int(size.rstrip("KMG"))
            best = max(best, n * {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1))
        except (OSError, ValueError):
            continue
    return best or 2 * 2**20


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _gpu_name() -> str:
    import torch  # only for the cuda backend

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda device"


def device_fingerprint(backend: str) -> Fingerprint:
    """What makes timings comparable: the machine, and the library that runs the backend."""
    d = {"cpu": _cpu_model(), "cores": str(os.cpu_count() or 0), "machine": platform.machine(),
         "system": platform.system(), "backend": backend}
    if backend in ("torch", "cuda"):
        d["torch"] = _version("torch")
    if backend == "onnxruntime":
        d["onnxruntime"] = _version("onnxruntime")
    if backend == "cuda":
        d["gpu"] = _gpu_name()
        d["layer timing"] = "enqueued"  # layers timed back to back, one synchronisation per sample
    desc = tuple(sorted(d.items()))
    key = hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]
    return Fingerprint(key, desc)


@dataclass(frozen=True, slots=True)
class LayerTiming:
    ms: float  # median time of one call
    p10_ms: float
    p90_ms: float
    runs: int


@dataclass(frozen=True, slots=True)
class Calibration:
    """The per-network part of the local tier: ``scale·Σ kernels + per_node_ms·nodes +
    cold_ms_per_mb·cold weight MB + fixed_ms`` (see ``convscope.backends.calibrate``)."""

    scale: float
    per_node_ms: float
    fixed_ms: float
    band: tuple[float, float]  # multipliers: leave-one-out measured/predicted extremes
    networks: tuple[tuple[str, float, float], ...]  # (name, measured ms, predicted ms) used in the fit
    device: str = ""
    cold_ms_per_mb: float = 0.0  # weights that sat in cache when their kernel was timed alone
    cache_bytes: int = 0  # the cache size that decides which weights those are (0: term unused)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "per_node_ms": self.per_node_ms, "fixed_ms": self.fixed_ms,
                "band": list(self.band), "networks": [list(n) for n in self.networks], "device": self.device,
                "cold_ms_per_mb": self.cold_ms_per_mb, "cache_bytes": self.cache_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        return cls(float(d["scale"]), float(d["per_node_ms"]), float(d["fixed_ms"]),
                   (float(d["band"][0]), float(d["band"][1])),
                   tuple((str(n), float(m), float(p)) for n, m, p in d["networks"]), str(d.get("device", "")),
                   float(d.get("cold_ms_per_mb", 0.0)), int(d.get("cache_bytes", 0)))


class LatencyStore:
    """One SQLite file.  Open with :func:`open_store`; every method is one short transaction."""

    def __init__(self, path: Path):
        self.path = path
        self.warnings: list[str] = []
        self._conn = self._open()

    # -- opening, and rebuilding a broken file ---------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
            self._init(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            return self._rebuild(str(exc))

    def _init(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("integrity check failed")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        with _transaction(conn):
            for stmt in _TABLES.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            elif row[0] != str(SCHEMA):
                raise sqlite3.DatabaseError(f"schema version {row[0]}, expected {SCHEMA}")

    def _rebuild(self, why: str) -> sqlite3.Connection:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                p.replace(Path(str(moved) + suffix))
        msg = f"latency cache {self.path} was unreadable ({why}); moved it to {moved.name} and started a new one"
        self.warnings.append(msg)
        warnings.warn(msg, CacheWarning, stacklevel=3)
        conn = self._connect()
        self._init(conn)
        return conn

    def close(self) -> None:
        self._conn.close()

    # -- layers ----------------------------------------------------------------------------------
    def put_device(self, fp: Fingerprint) -> None:
        with _transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO devices VALUES (?, ?)", (fp.key, json.dumps(fp.description)))

    def put_layer(self, fp: Fingerprint, backend: str, threads: int, dtype: str, signature: str,
                  t: LayerTiming) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (fp.key, backend, threads, dtype, signature, t.ms, t.p10_ms, t.p90_ms, t.runs, time.time()))

    def layers(self, fp: Fingerprint, backend: str, threads: int, dtype: str,
               signatures: Iterable[str]) -> dict[str, LayerTiming]:
        wanted = sorted(set(signatures))
        out: dict[str, LayerTiming] = {}
        for chunk in _chunks(wanted, 400):
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT signature, ms, p10_ms, p90_ms, runs FROM layers WHERE fingerprint = ? AND backend = ? "
                f"AND threads = ? AND dtype = ? AND signature IN ({marks})", (fp.key, backend, threads, dtype, *chunk))
            for sig, ms, lo, hi, runs in rows:
                out[sig] = LayerTiming(ms, lo, hi, runs)
        return out

    def count_layers(self, fp: Fingerprint | None = None) -> int:
        if fp is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM layers").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM layers WHERE fingerprint = ?", (fp.key,)).fetchone()[0])

    # -- calibrations ----------------------------------------------------------------------------
    def put_calibration(self, fp: Fingerprint, backend: str, threads: int, dtype: str, cal: Calibration) -> None:
        with _transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO calibrations VALUES (?, ?, ?, ?, ?, ?)",
                               (fp.key, backend, threads, dtype, json.dumps(cal.to_dict()), time.time()))

    def calibration(self, fp: Fingerprint, backend: str, threads: int, dtype: str) -> Calibration | None:
        row = self._conn.execute(
            "SELECT data FROM calibrations WHERE fingerprint = ? AND backend = ? AND threads = ? AND dtype = ?",
            (fp.key, backend, threads, dtype)).fetchone()
        return Calibration.from_dict(json.loads(row[0])) if row else None

    def calibrations(self) -> list[tuple[str, str, int, str, float]]:
        """(device description, backend, threads, dtype, created) of every calibration."""
        rows = self._conn.execute(
            "SELECT d.description, c.backend, c.threads, c.dtype, c.created FROM calibrations c "
            "LEFT JOIN devices d ON d.fingerprint = c.fingerprint ORDER BY c.created")
        return [(desc or "?", b, t, dt, cr) for desc, b, t, dt, cr in rows]


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def open_store(path: str | os.PathLike[str] | None = None) -> LatencyStore:
    return LatencyStore(Path(path) if path is not None else cache_path())


def default_threads() -> int:
    """The thread count used when none is given, computed without importing torch so that the
    local tier finds the calibration ``calibrate`` made: ``OMP_NUM_THREADS`` if set, else the number
    of physical cores this process may run on (PyTorch's own default on Linux), else logical CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "physical id":
                phys = val.strip()
            elif key == "core id":
                core = val.strip()
            elif not line.strip() and core:
                cores.add((phys, core))
                phys = core = ""
        if core:
            cores.add((phys, core))
    except OSError:
        pass
    return max(1, min(allowed, len(cores))) if cores else max(1, allowed)
