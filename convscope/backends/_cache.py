"""The latency cache: an embedded SQLite store of measured kernel times and calibrations.

Where: ``$CONVSCOPE_CACHE`` (a directory, or a file ending in ``.sqlite``/``.db``), else
``$XDG_CACHE_HOME/convscope/latency.sqlite`` (``~/.cache/convscope/latency.sqlite``).

Keys: every timing belongs to a *device fingerprint* (CPU model, logical cores, OS/architecture, the
backend library's version, the GPU for ``cuda``), a backend, a thread count, a dtype and a kernel
signature (op, attributes, input layouts, batch, dtype — never a layer name).  A different machine,
library version or thread count therefore never reuses another's numbers.

Safety: WAL journal, a busy timeout, and every write in its own transaction, so concurrent
``calibrate`` runs interleave and an interrupted run leaves only whole rows.  A file that is not a
readable store (corrupt, truncated, another schema) is moved aside to ``*.corrupt-<time>`` and
rebuilt, with a :class:`CacheWarning`; only that: a cache that is read-only, locked or cannot be
opened is never moved, and another program's SQLite database is neither moved nor written (an
InputError, or for a lookup a warning and no cached figures).  A read-only cache is read (from a snapshot in memory); writing to it, or a
``CONVSCOPE_CACHE`` that cannot hold a cache (a file, a directory that cannot be created), is an
:class:`InputError`.  Looking figures up (the local tier) never waits long: a cache locked past
``READ_WAIT_S`` or unreadable is an empty one, with a warning.  Nothing here imports torch.
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

from convscope.errors import InputError

__all__ = ["CacheWarning", "cache_path", "default_threads", "Fingerprint", "device_fingerprint", "LayerTiming", "Calibration",
           "LatencyStore", "open_store", "lookup_store"]

SCHEMA = 1
READ_WAIT_S = 5.0  # how long a lookup waits for a locked cache before going on without it
WRITE_WAIT_S = 60.0  # how long a write (and calibrate) waits
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
    """The cache was unreadable and has been rebuilt, or could not be read or written."""


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
    """One SQLite file.  Open with :func:`open_store` (or :func:`lookup_store`); every method is one
    short transaction.

    ``lookup=False`` (``calibrate``, ``calibrate --list``): a cache that cannot be used is an
    :class:`InputError` naming it, a locked one is waited for up to ``WRITE_WAIT_S``.  ``lookup=True``
    (the local tier looking figures up): a cache that cannot be read (locked past ``READ_WAIT_S``,
    unreadable) is an empty one, with a :class:`CacheWarning`.  A cache this process cannot write
    (read-only file system, permissions) is read from a snapshot in memory: lookups work, and
    writing is an InputError, or with ``lookup=True`` kept in memory for this run only."""

    def __init__(self, path: Path, *, lookup: bool = False):
        self.path = path
        self.lookup = lookup
        self.warnings: list[str] = []
        self.readonly = False  # True: ``_conn`` is a snapshot in memory, not the file
        self._readonly_why = ""
        self._told: set[str] = set()
        self._conn = self._open()

    # -- opening, and rebuilding a broken file ---------------------------------------------------
    def _warn(self, msg: str, key: str | None = None) -> None:
        if key is not None:
            if key in self._told:
                return
            self._told.add(key)
        self.warnings.append(msg)
        warnings.warn(msg, CacheWarning, stacklevel=4)

    def _wait_s(self) -> float:
        return READ_WAIT_S if self.lookup else WRITE_WAIT_S

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self._wait_s(), isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._wait_s() * 1000)}")
        return conn

    def _connect_init(self) -> sqlite3.Connection:
        """A connection with the tables in place (closed again if that fails)."""
        conn = self._connect()
        try:
            self._init(conn)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        _make_dir(self.path)
        why = _not_writable(self.path)
        if why:
            return self._snapshot(why)
        try:
            return self._connect_init()
        except sqlite3.DatabaseError as exc:
            kind = _kind(exc)
            if kind == "corrupt":
                return self._rebuild(str(exc))
            if kind == "readonly":
                return self._snapshot(str(exc))
            return self._unavailable(kind, str(exc))

    def _init(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise _Unreadable("integrity check failed")
        schema = _schema(conn)
        if schema is None:
            theirs = sorted(_tables(conn) - _OURS)
            if theirs:  # before anything is written to it (the journal mode included)
                raise _Foreign(f"it is another program's SQLite database (tables {', '.join(theirs[:5])}), "
                               "which convscope leaves alone")
        if schema is not None and schema != str(SCHEMA):
            raise _Unreadable(f"schema version {schema}, expected {SCHEMA}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] not in ("wal", "memory"):
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if schema is not None and _has_tables(conn):
            return  # nothing to write: a reader takes no write lock
        with _transaction(conn):
            for stmt in _TABLES.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            elif row[0] != str(SCHEMA):
                raise _Unreadable(f"schema version {row[0]}, expected {SCHEMA}")

    def _connect_ro(self) -> sqlite3.Connection:
        """The file opened read-only, in a read transaction.  ``immutable=1`` where SQLite cannot
        open a WAL file read-only (no ``-shm`` beside it and none can be made: a read-only file
        system), where nobody else can be writing it either."""
        uri = self.path.absolute().as_uri()
        err: sqlite3.DatabaseError | None = None
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            conn = None
            try:
                conn = sqlite3.connect(uri + query, uri=True, timeout=self._wait_s(), isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(self._wait_s() * 1000)}")
                conn.execute("BEGIN")
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # takes the read lock
                return conn
            except sqlite3.DatabaseError as exc:
                if conn is not None:
                    conn.close()
                if _kind(exc) != "readonly":
                    raise
                err = exc
        assert err is not None
        raise err

    def _snapshot(self, why: str) -> sqlite3.Connection:
        """A cache this process cannot write: copied into memory, where lookups find its figures."""
        self.readonly, self._readonly_why = True, why
        try:
            src = self._connect_ro()
            try:
                if src.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise _Unreadable("integrity check failed")
                mem = sqlite3.connect(":memory:", isolation_level=None)
                src.backup(mem)
            finally:
                src.close()
            self._init(mem)
            return mem
        except sqlite3.DatabaseError as exc:
            kind = _kind(exc)
            detail = f"{exc}; it is read-only ({why}), so it cannot be moved aside" if kind == "corrupt" else str(exc)
            return self._unavailable(kind, detail)

    def _unavailable(self, kind: str, why: str) -> sqlite3.Connection:
        """No usable file: an InputError, or for a lookup an empty store in memory and a warning."""
        if kind == "busy":
            msg = f"latency cache {self.path} is locked by another process ({why})"
        elif kind == "corrupt":
            msg = f"latency cache {self.path} is unreadable ({why})"
        elif kind == "foreign":
            msg = f"latency cache {self.path}: {why}"
        else:
            msg = f"latency cache {self.path} cannot be opened ({why})"
        if not self.lookup:
            hint = "; try again when that process is done" if kind == "busy" else \
                "; set CONVSCOPE_CACHE to a directory this process can write"
            raise InputError(msg + hint)
        self.readonly, self._readonly_why = True, msg
        self._warn(msg + "; going on without cached timings")
        mem = sqlite3.connect(":memory:", isolation_level=None)
        self._init(mem)
        return mem

    def _rebuild(self, why: str) -> sqlite3.Connection:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while any(Path(str(moved) + sfx).exists() for sfx in ("", "-wal", "-shm")):  # twice in one second
            n += 1
            moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    p.replace(Path(str(moved) + suffix))
        except OSError as exc:
            return self._unavailable("corrupt", f"{why}; it cannot be moved aside: {exc.strerror or exc}")
        self._warn(f"latency cache {self.path} was unreadable ({why}); moved it to {moved.name} and started a new one")
        try:
            return self._connect_init()
        except sqlite3.DatabaseError as exc:
            return self._unavailable(_kind(exc), str(exc))

    def close(self) -> None:
        self._conn.close()

    # -- reading and writing ---------------------------------------------------------------------
    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            msg = f"latency cache {self.path} cannot be read ({exc})"
            if not self.lookup:
                raise InputError(msg) from None
            self._warn(msg + "; going on without cached timings", key="read")
            return []

    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self.readonly:
            if not self.lookup:
                raise InputError(f"latency cache {self.path} is read-only ({self._readonly_why}): timings cannot be "
                                 "stored there; set CONVSCOPE_CACHE to a directory this process can write")
            self._warn(f"latency cache {self.path} cannot be written ({self._readonly_why}): "
                       "the timings measured now are not kept", key="write")
            with _transaction(self._conn):  # the snapshot in memory
                yield
            return
        if self.lookup:  # a lookup waits briefly to read, as long as calibrate to write
            self._conn.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT_S * 1000)}")
        try:
            with _transaction(self._conn):
                yield
        except sqlite3.OperationalError as exc:
            raise InputError(f"latency cache {self.path}: timings cannot be stored ({exc})") from None
        finally:
            if self.lookup:
                self._conn.execute(f"PRAGMA busy_timeout = {int(READ_WAIT_S * 1000)}")

    # -- layers ----------------------------------------------------------------------------------
    def put_device(self, fp: Fingerprint) -> None:
        with self._writing():
            self._conn.execute("INSERT OR REPLACE INTO devices VALUES (?, ?)", (fp.key, json.dumps(fp.description)))

    def put_layer(self, fp: Fingerprint, backend: str, threads: int, dtype: str, signature: str,
                  t: LayerTiming) -> None:
        with self._writing():
            self._conn.execute(
                "INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (fp.key, backend, threads, dtype, signature, t.ms, t.p10_ms, t.p90_ms, t.runs, time.time()))

    def layers(self, fp: Fingerprint, backend: str, threads: int, dtype: str,
               signatures: Iterable[str]) -> dict[str, LayerTiming]:
        wanted = sorted(set(signatures))
        out: dict[str, LayerTiming] = {}
        for chunk in _chunks(wanted, 400):
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT signature, ms, p10_ms, p90_ms, runs FROM layers WHERE fingerprint = ? AND backend = ? "
                f"AND threads = ? AND dtype = ? AND signature IN ({marks})", (fp.key, backend, threads, dtype, *chunk))
            for sig, ms, lo, hi, runs in rows:
                out[sig] = LayerTiming(ms, lo, hi, runs)
        return out

    def count_layers(self, fp: Fingerprint | None = None) -> int:
        if fp is None:
            rows = self._read("SELECT COUNT(*) FROM layers")
        else:
            rows = self._read("SELECT COUNT(*) FROM layers WHERE fingerprint = ?", (fp.key,))
        return int(rows[0][0]) if rows else 0

    # -- calibrations ----------------------------------------------------------------------------
    def put_calibration(self, fp: Fingerprint, backend: str, threads: int, dtype: str, cal: Calibration) -> None:
        with self._writing():
            self._conn.execute("INSERT OR REPLACE INTO calibrations VALUES (?, ?, ?, ?, ?, ?)",
                               (fp.key, backend, threads, dtype, json.dumps(cal.to_dict()), time.time()))

    def calibration(self, fp: Fingerprint, backend: str, threads: int, dtype: str) -> Calibration | None:
        rows = self._read(
            "SELECT data FROM calibrations WHERE fingerprint = ? AND backend = ? AND threads = ? AND dtype = ?",
            (fp.key, backend, threads, dtype))
        return Calibration.from_dict(json.loads(rows[0][0])) if rows else None

    def calibrations(self) -> list[tuple[str, str, int, str, float]]:
        """(device description, backend, threads, dtype, created) of every calibration."""
        rows = self._read(
            "SELECT d.description, c.backend, c.threads, c.dtype, c.created FROM calibrations c "
            "LEFT JOIN devices d ON d.fingerprint = c.fingerprint ORDER BY c.created")
        return [(desc or "?", b, t, dt, cr) for desc, b, t, dt, cr in rows]


class _Foreign(sqlite3.DatabaseError):
    """The file is someone else's SQLite database: never moved, never written."""


class _Unreadable(sqlite3.DatabaseError):
    """The file opens but is not our store (failed integrity check, another schema): moved aside."""


def _kind(exc: sqlite3.Error) -> str:
    """Why SQLite failed: ``corrupt`` (only this moves a file aside), ``busy``, ``readonly`` or ``other``."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = str(exc).lower()
    if isinstance(exc, _Foreign):
        return "foreign"
    if isinstance(exc, _Unreadable) or name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) \
            or "not a database" in text or "malformed" in text:
        return "corrupt"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "busy"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) \
            or any(w in text for w in ("readonly", "read-only", "unable to open", "permission")):
        return "readonly"
    return "other"


def _schema(conn: sqlite3.Connection) -> str | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return None if row is None else str(row[0])


_OURS = frozenset({"meta", "devices", "layers", "calibrations"})


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}


def _has_tables(conn: sqlite3.Connection) -> bool:
    return _OURS <= _tables(conn)


def _not_writable(path: Path) -> str:
    """Why this process cannot write the cache at ``path`` (its directory must exist), or ``""``."""
    d = path.parent
    try:
        if os.statvfs(d).f_flag & getattr(os, "ST_RDONLY", 1):
            return "read-only file system"
    except (OSError, AttributeError):
        pass
    for p in (d, path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if (p == d or p.exists()) and not os.access(p, os.W_OK):
            return f"no permission to write {p}"
    return ""


def _location_problem(path: Path, *, probe: bool) -> str:
    """Why no cache can live at ``path``, or ``""``.  ``probe``: try to create a missing directory
    (and remove what was created) rather than assume it can be."""
    if path.is_dir():
        return f"{path} is a directory, not a database file"
    d = path.parent
    if d.is_dir():
        return ""
    made: list[Path] = []
    a = d
    while not a.exists() and a.parent != a:  # a missing directory, or one below a file
        made.append(a)
        a = a.parent
    if not a.is_dir():
        env = os.environ.get("CONVSCOPE_CACHE", "")
        hint = " (a cache file's name ends in .sqlite or .db)" if env and Path(env).expanduser() == a else ""
        return f"{a} is a file, not a directory{hint}"
    if not probe:
        return ""
    try:
        d.mkdir(parents=True)
    except OSError as exc:
        return f"cannot create {d}: {exc.strerror or exc}"
    for m in made:  # the probe leaves nothing behind
        try:
            m.rmdir()
        except OSError:
            break
    return ""


def _unusable(path: Path, why: str) -> str:
    env = os.environ.get("CONVSCOPE_CACHE")
    if env and cache_path() == path:
        what = "cache file" if Path(env).suffix in (".sqlite", ".db") else "directory"
        return f"CONVSCOPE_CACHE={env} is not a usable {what}: {why}"
    return f"the latency cache {path} cannot be used: {why}"


def _make_dir(path: Path) -> None:
    """The cache's directory, created if missing; an InputError where it cannot be."""
    why = _location_problem(path, probe=False)
    if not why and not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = f"cannot create {path.parent}: {exc.strerror or exc}"
    if why:
        raise InputError(_unusable(path, why))


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


def open_store(path: str | os.PathLike[str] | None = None, *, lookup: bool = False) -> LatencyStore:
    """The cache at ``path`` (default :func:`cache_path`), created if missing; see :class:`LatencyStore`
    for ``lookup``.  A location that cannot hold it is an :class:`InputError`."""
    return LatencyStore(Path(path) if path is not None else cache_path(), lookup=lookup)


def lookup_store(*, required: bool = False) -> LatencyStore | None:
    """The cache for looking figures up, or None where there is none yet: never created just to look
    into it.  A location that cannot hold a cache (``CONVSCOPE_CACHE`` naming a file, or a directory
    that cannot be created) is an :class:`InputError` if ``required``, else a :class:`CacheWarning`."""
    path = cache_path()
    if path.is_file():
        return open_store(path, lookup=True)
    why = _location_problem(path, probe=required)
    if why:
        msg = _unusable(path, why)
        if required:
            raise InputError(msg)
        warnings.warn(msg + "; the local latency tier is off", CacheWarning, stacklevel=2)
    return None


def default_threads() -> int:
    """The thread count used when none is given, computed without importing torch so that the
    local tier finds the calibration ``calibrate`` made: ``OMP_NUM_THREADS`` if set, else the number
    of physical cores this process may run on (PyTorch's own default on Linux), else logical CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdecimal() and int(env) > 0:
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
