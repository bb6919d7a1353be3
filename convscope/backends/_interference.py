"""Is somebody else using the CPU while we time?  Samples taken around each timed run.

Three signals, best first:

* **CPU pressure** (Linux PSI, ``/proc/pressure/cpu``, microseconds): the time during which at least
  one runnable task waited for a CPU.  With no more threads than cores our own threads never wait
  for each other, so any stall is someone else's work taking a core we wanted.  On this 2-core
  machine a second busy process shows up as a stall of 30–50% of the run's wall time, a quiet run
  as 0.
* **other processes' CPU time**: busy time of all CPUs (``/proc/stat``, 10 ms ticks) minus our own
  process's CPU time.  Coarse; only trusted over windows of 100 ms and more.
* **steal time** (``/proc/stat``): a hypervisor gave our virtual CPU to another guest.  Invisible
  to PSI; on this VM it comes in bursts (0.4 s of 5 s) and turns a 2 ms layer into 12 ms.  Any
  stolen tick inside a run shorter than 100 ms disturbs it; over longer runs, more than
  ``STEAL_LIMIT``.
* **major page faults** of our own process (``getrusage``): the kernel had dropped pages of our
  code or data (memory pressure from others, proactive reclaim) and the run waited for the disk.

A run is *disturbed* when its stall share exceeds ``STALL_LIMIT`` (or, without PSI, when other
processes used more than ``OTHER_LIMIT`` of the machine's CPU time over a long enough window), or its
steal share exceeds ``STEAL_LIMIT``, or it took a major page fault.  Without ``/proc`` (macOS, Windows) nothing is detected and
every run counts as clean; :func:`available` says which signals exist.
"""

from __future__ import annotations

import os
import time

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "Disturbance", "sample", "disturbance", "available", "wait_quiet", "STALL_LIMIT"]

STALL_LIMIT = 0.03  # share of wall time some task waited for a CPU
OTHER_LIMIT = 0.10  # share of all CPUs' time used by other processes (fallback)
STEAL_LIMIT = 0.05
_PSI = Path("/proc/pressure/cpu")
_STAT = Path("/proc/stat")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NCPU = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Sample:
    wall: float  # seconds (perf_counter)
    own_cpu: float  # seconds of CPU time used by this process
    stall_us: int | None  # PSI "some" total, microseconds
    busy_ticks: int | None  # all CPUs: user + nice + system + irq + softirq
    steal_ticks: int | None
    major_faults: int = 0  # this process's page faults that needed the disk


@dataclass(frozen=True, slots=True)
class Disturbance:
    stall_share: float | None
    other_share: float | None
    steal_share: float | None
    disturbed: bool
    major_faults: int = 0

    def describe(self) -> str:
        parts = []
        if self.stall_share is not None:
            parts.append(f"CPU stall {100 * self.stall_share:.0f}%")
        if self.other_share is not None:
            parts.append(f"other processes {100 * self.other_share:.0f}%")
        if self.steal_share:
            parts.append(f"steal {100 * self.steal_share:.0f}%")
        if self.major_faults:
            parts.append(f"{self.major_faults} major page faults")
        return ", ".join(parts) or "no signal"


def _psi() -> int | None:
    try:
        with _PSI.open() as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def _stat() -> tuple[int | None, int | None]:
    try:
        with _STAT.open() as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None, None
    # user nice system idle iowait irq softirq steal ...
    return v[0] + v[1] + v[2] + v[5] + v[6], (v[7] if len(v) > 7 else 0)


def available() -> tuple[str, ...]:
    out = []
    if _psi() is not None:
        out.append("psi")
    if _stat()[0] is not None:
        out.append("proc-stat")
    return tuple(out)


def sample(*, end: bool = False) -> Sample:
    """The state now.  The clocks are read last for a start sample and first for an end sample, so
    that reading /proc never falls inside the timed interval."""
    if end:
        wall, cpu = time.perf_counter(), time.process_time()
        faults = _faults()
        busy, steal = _stat()
        return Sample(wall, cpu, _psi(), busy, steal, faults)
    busy, steal = _stat()
    stall = _psi()
    faults = _faults()
    return Sample(time.perf_counter(), time.process_time(), stall, busy, steal, faults)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt if resource is not None else 0


def disturbance(a: Sample, b: Sample, *, oversubscribed: bool = False) -> Disturbance:
    """What happened between two samples.  ``oversubscribed``: we run more threads than cores, so
    stalls are our own and only the other signals count."""
    wall = max(b.wall - a.wall, 1e-9)
    stall = None if a.stall_us is None or b.stall_us is None else (b.stall_us - a.stall_us) / 1e6 / wall
    other = steal = None
    if a.busy_ticks is not None and b.busy_ticks is not None:
        busy = (b.busy_ticks - a.busy_ticks) / _TICK
        other = max(0.0, busy - (b.own_cpu - a.own_cpu)) / (wall * _NCPU)
        steal = (b.steal_ticks - a.steal_ticks) / _TICK / (wall * _NCPU)  # type: ignore[operator]
    bad = False
    if stall is not None and not oversubscribed:
        bad = stall > STALL_LIMIT
    elif other is not None and wall >= 0.1:
        bad = other > OTHER_LIMIT
    if steal is not None and steal > 0 and (wall < 0.1 or steal > STEAL_LIMIT):
        bad = True  # any stolen tick inside a short run is 10 ms lost out of a few
    faults = b.major_faults - a.major_faults
    return Disturbance(stall, other, steal, bad or faults > 0, faults)


def wait_quiet(*, threads: int = _NCPU, timeout_s: float = 60.0, window_s: float = 0.5) -> bool:
    """Wait until other processes leave us ``threads`` CPUs for one window (their CPU time below
    what the remaining CPUs can absorb, plus 10%).  True when quiet, False at the timeout.  Without
    /proc it returns True at once."""
    if _stat()[0] is None:
        return True
    allowed = max(0.0, (_NCPU - threads) / _NCPU) + OTHER_LIMIT
    end = time.perf_counter() + timeout_s
    while True:
        a = sample()
        time.sleep(window_s)
        d = disturbance(a, sample(end=True))
        if d.other_share is not None and d.other_share <= allowed:
            return True
        if time.perf_counter() >= end:
            return False
