"""The latency cache: where it lives, its keys, concurrent writers, interrupted writes, corrupt files."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pytest

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
