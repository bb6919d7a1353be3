"""The latency cache: where it lives, its keys, concurrent writers, interrupted writes, corrupt files."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fixtures import TINY

from convscope.backends import _cache
from convscope.backends._cache import (Calibration, CacheWarning, Fingerprint, LayerTiming, cache_path,
                                       device_fingerprint, open_store)

FP = Fingerprint("aaaa", (("cpu", "test cpu"), ("cores", "2")))
OTHER = Fingerprint("bbbb", (("cpu", "other cpu"), ("cores", "8")))
T = LayerTiming(1.5, 1.4, 1.7, 12)


def test_cache_path_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "dir"))
    assert cache_path() == tmp_path / "dir" / "latency.sqlite"
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "mine.sqlite"))
    assert cache_path() == tmp_path / "mine.sqlite"
    monkeypatch.delenv("CONVSCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path() == tmp_path / "xdg" / "convscope" / "latency.sqlite"


def test_keys_separate_device_backend_threads_dtype(tmp_path: Path) -> None:
    st = open_store(tmp_path / "c.sqlite")
    st.put_layer(FP, "torch", 2, "fp32", "sig1", T)
    assert st.layers(FP, "torch", 2, "fp32", ["sig1", "sig2"]) == {"sig1": T}
    assert st.layers(FP, "torch", 1, "fp32", ["sig1"]) == {}  # another thread count
    assert st.layers(OTHER, "torch", 2, "fp32", ["sig1"]) == {}  # another machine
    assert st.layers(FP, "onnxruntime", 2, "fp32", ["sig1"]) == {}
    assert st.layers(FP, "torch", 2, "fp16", ["sig1"]) == {}
    st.put_layer(FP, "torch", 2, "fp32", "sig1", LayerTiming(2.0, 1.9, 2.1, 5))  # replaced, not duplicated
    assert st.layers(FP, "torch", 2, "fp32", ["sig1"])["sig1"].ms == 2.0
    assert st.count_layers() == 1


def test_calibration_roundtrip_and_its_keys(tmp_path: Path) -> None:
    st = open_store(tmp_path / "c.sqlite")
    cal = Calibration(1.02, 0.003, 0.1, (0.9, 1.1), (("net", 5.0, 5.1),), "test cpu")
    st.put_device(FP)
    st.put_calibration(FP, "torch", 2, "fp32", cal)
    assert st.calibration(FP, "torch", 2, "fp32") == cal
    assert st.calibration(FP, "torch", 4, "fp32") is None
    assert st.calibration(OTHER, "torch", 2, "fp32") is None
    assert [r[1:4] for r in st.calibrations()] == [("torch", 2, "fp32")]


def test_fingerprint_changes_with_the_library_version(monkeypatch: pytest.MonkeyPatch) -> None:
    a = device_fingerprint("torch")
    assert dict(a.description)["torch"] and a.key == device_fingerprint("torch").key
    monkeypatch.setattr(_cache, "_version", lambda dist: "9.9.9")
    assert device_fingerprint("torch").key != a.key
    assert device_fingerprint("onnxruntime").key != device_fingerprint("torch").key


def _writer(path: str, worker: int, n: int) -> None:
    st = open_store(path)
    for i in range(n):
        st.put_layer(FP, "torch", 2, "fp32", f"w{worker}-{i}", LayerTiming(float(i), 0.0, 0.0, 1))
        if i % 10 == 0:
            st.put_calibration(FP, "torch", worker, "fp32", Calibration(1.0, 0.0, float(i), (1, 1), (), ""))
    st.close()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    open_store(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    st = open_store(path)
    assert st.count_layers() == 240
    assert all(st.calibration(FP, "torch", w, "fp32").fixed_ms == 50.0 for w in range(4))  # type: ignore[union-attr]


def _die_mid_write(path: str) -> None:
    st = open_store(path)
    conn = st._conn
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO layers VALUES ('aaaa', 'torch', 2, 'fp32', 'half', 1, 1, 1, 1, 0)")
    os._exit(1)  # killed before COMMIT


def test_an_interrupted_write_leaves_no_partial_row(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    st = open_store(path)
    st.put_layer(FP, "torch", 2, "fp32", "whole", T)
    p = mp.get_context("spawn").Process(target=_die_mid_write, args=(path,))
    p.start()
    p.join(60)
    assert p.exitcode == 1
    st2 = open_store(path)
    assert st2.layers(FP, "torch", 2, "fp32", ["whole", "half"]) == {"whole": T}
    st2.put_layer(FP, "torch", 2, "fp32", "after", T)  # the lock was released
    assert st2.count_layers() == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_file_is_moved_aside_and_rebuilt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "c.sqlite"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        st = open_store(path)
        for i in range(300):
            st.put_layer(FP, "torch", 2, "fp32", f"s{i}" * 20, T)
        st._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        st.close()
        data = path.read_bytes()
        path.write_bytes(data[:100] + b"\x00" * 50 + data[150:len(data) // 2])
    with pytest.warns(CacheWarning, match="was unreadable"):
        st = open_store(path)
    assert list(tmp_path.glob("c.sqlite.corrupt-*"))
    st.put_layer(FP, "torch", 2, "fp32", "new", T)
    assert st.layers(FP, "torch", 2, "fp32", ["new"]) == {"new": T}
    assert st.warnings and "moved it to" in st.warnings[0]
    sqlite3.connect(str(path)).execute("PRAGMA integrity_check").fetchone()


def test_the_cli_says_so_in_one_plain_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from convscope.cli import main

    (tmp_path / "latency.sqlite").write_text("garbage")
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path))
    assert main(["calibrate", "--list"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("convscope calibrate: warning: latency cache") and "was unreadable" in err
    assert "CacheWarning" not in err and len(err.strip().splitlines()) == 1


# -- a cache location that cannot be used, a read-only cache, a locked one -------------------------



def _calibrated(path: Path, spec: Path) -> float:
    """A cache at ``path`` that calibrates this machine for the network in ``spec``; its local prediction."""
    from convscope.analyses._latency_kernels import kernels
    from convscope.frontends.from_spec import graph_from_spec_text

    spec.write_text(TINY)
    g = graph_from_spec_text(TINY, file=str(spec))
    st = open_store(path)
    fp, n = device_fingerprint("torch"), _cache.default_threads()
    ks = kernels(g, "torch")
    for k in ks:
        st.put_layer(fp, "torch", n, "fp32", k.signature, LayerTiming(0.5, 0.5, 0.5, 5))
    st.put_device(fp)
    st.put_calibration(fp, "torch", n, "fp32", Calibration(1.0, 0.0, 0.25, (0.9, 1.1), (("x", 1.0, 1.0),), "cpu"))
    st.close()
    return 0.5 * len(ks) + 0.25


@pytest.mark.parametrize("where", ["a file", "uncreatable"])
def test_an_unusable_cache_location_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], where: str) -> None:
    from convscope.analyses.latency import predict
    from convscope.cli import main
    from convscope.errors import InputError
    from convscope.frontends.from_spec import graph_from_spec_text

    if where == "a file":
        env = tmp_path / "cachefile"
        env.write_text("not a directory")
        why = "is a file, not a directory"
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc, where nobody can create a directory")
        env = Path("/proc/nonexistent/x")
        why = "cannot create /proc/nonexistent/x"
    monkeypatch.setenv("CONVSCOPE_CACHE", str(env))
    said = f"CONVSCOPE_CACHE={env} is not a usable directory"
    with pytest.raises(InputError, match=f"{said}: .*{why}"):
        open_store()
    with pytest.raises(InputError, match=said):
        _cache.lookup_store(required=True)
    g = graph_from_spec_text(TINY, file="tiny.yaml")
    if where == "a file":
        with pytest.warns(CacheWarning, match=said):
            assert predict(g) is None  # plain analyze: no local tier, and a warning why
    else:
        assert predict(g) is None  # plain analyze creates nothing to find out, so it cannot tell
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    lists = [["calibrate", "--list"]] if where == "a file" else []
    for argv in (["calibrate", str(spec)], ["analyze", str(spec), "--device", "local"], *lists):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and why in err and "internal error" not in err and "run `convscope calibrate" not in err
    assert not env.is_dir()


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Makes the cache at a path read-only: permissions where they bind, else (root) an SQLite that
    refuses to open it for writing, and opens a WAL file read-only only as immutable, as on a
    read-only file system."""
    restore: list[tuple[Path, int]] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            for p in (path, path.parent):
                restore.append((p, p.stat().st_mode))
                p.chmod(0o555 if p.is_dir() else 0o444)
            return
        real = sqlite3.connect

        def connect(database: Any, *args: Any, **kw: Any) -> sqlite3.Connection:
            name = unquote(str(database))
            if str(path) in name and not kw.get("uri"):
                raise sqlite3.OperationalError("attempt to write a readonly database")
            if str(path) in name and "immutable=1" not in name:
                raise sqlite3.OperationalError("unable to open database file")
            return real(database, *args, **kw)

        monkeypatch.setattr(sqlite3, "connect", connect)

    yield make
    for p, mode in reversed(restore):
        p.chmod(mode)


def test_a_read_only_cache_is_read_and_never_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         read_only: Callable[[Path], None]) -> None:
    import warnings

    from convscope.analyses.latency import predict
    from convscope.cli import main
    from convscope.errors import InputError
    from convscope.frontends.from_spec import graph_from_spec_text

    path = tmp_path / "ro" / "latency.sqlite"
    spec = tmp_path / "tiny.yaml"
    expect = _calibrated(path, spec)
    before = path.read_bytes()
    monkeypatch.setenv("CONVSCOPE_CACHE", str(path.parent))
    read_only(path)
    g = graph_from_spec_text(TINY, file=str(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # reading a read-only cache is nothing to warn about
        for device in (None, "local"):
            pred = predict(g, device=device)
            assert pred is not None and pred.tier == "local" and pred.ms == pytest.approx(expect)
        assert [r[1:4] for r in open_store(path).calibrations()] == [("torch", _cache.default_threads(), "fp32")]
    with pytest.raises(InputError, match=f"latency cache {path} is read-only"):
        open_store(path).put_device(FP)  # calibrate writing there
    st = open_store(path, lookup=True)  # a lookup measuring what is missing keeps it for this run
    with pytest.warns(CacheWarning, match="not kept"):
        st.put_layer(FP, "torch", 2, "fp32", "new", T)
    assert st.layers(FP, "torch", 2, "fp32", ["new"]) == {"new": T}
    assert main(["analyze", str(spec)]) == 0 and main(["calibrate", "--list"]) == 0
    assert "internal error" not in capsys.readouterr().err
    assert main(["calibrate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"latency cache {path} is read-only" in err and "internal error" not in err
    assert path.read_bytes() == before and not list(path.parent.glob("*.corrupt-*"))


def test_a_locked_cache_is_not_corrupt_and_a_lookup_does_not_wait_for_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from convscope.analyses.latency import predict
    from convscope.errors import InputError
    from convscope.frontends.from_spec import graph_from_spec_text

    path = tmp_path / "latency.sqlite"
    expect = _calibrated(path, tmp_path / "tiny.yaml")
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")  # without WAL an exclusive lock keeps readers out too
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(_cache, "READ_WAIT_S", 0.2, raising=False)
    monkeypatch.setattr(_cache, "WRITE_WAIT_S", 0.2, raising=False)
    g = graph_from_spec_text(TINY, file="tiny.yaml")
    t0 = time.perf_counter()
    with pytest.warns(CacheWarning, match="locked by another process"):
        assert predict(g) is None  # as if uncalibrated
    assert time.perf_counter() - t0 < 10
    with pytest.raises(InputError, match=f"latency cache {path} is locked by another process"):
        open_store(path)  # calibrate
    assert not list(tmp_path.glob("*.corrupt-*"))
    holder.execute("ROLLBACK")
    holder.close()
    pred = predict(g)
    assert pred is not None and pred.ms == pytest.approx(expect)


@pytest.mark.parametrize("message, corrupt", [
    ("file is not a database", True), ("database disk image is malformed", True),
    ("attempt to write a readonly database", False), ("database is locked", False),
    ("unable to open database file", False), ("disk I/O error", False)])
def test_only_real_corruption_counts_as_corrupt(message: str, corrupt: bool) -> None:
    cls = sqlite3.DatabaseError if corrupt else sqlite3.OperationalError
    assert (_cache._kind(cls(message)) == "corrupt") is corrupt


def test_another_programs_database_is_neither_moved_nor_written(tmp_path: Path) -> None:
    from convscope.errors import InputError

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        conn.execute("INSERT INTO orders (item) VALUES ('camera')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match="another program's SQLite database \\(tables orders\\)"):
        open_store(path)  # calibrate writing there
    with pytest.warns(CacheWarning, match="another program's SQLite database"):
        st = open_store(path, lookup=True)  # a lookup: no cached figures, nothing touched
    assert st.layers(FP, "torch", 2, "fp32", ["x"]) == {}
    st.close()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_file_corrupt_twice_in_one_second_keeps_both_copies(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    for k in range(2):
        path.write_bytes(f"not a database, copy {k}".encode() * 100)
        with pytest.warns(CacheWarning, match="was unreadable"):
            open_store(path).close()
    kept = sorted(p.read_bytes()[:22] for p in tmp_path.glob("c.sqlite.corrupt-*") if "-wal" not in p.name
                  and "-shm" not in p.name)
    assert kept == [b"not a database, copy 0", b"not a database, copy 1"]
