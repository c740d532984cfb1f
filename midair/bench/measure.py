"""Measured runs: one client in its own process group, with a limit, and its usage.

CPU: ``os.wait4`` returns the user + sys time of that child together with the
children it reaped (curl in a shell loop, the ``processes`` engine's workers),
so it belongs to the client alone, not to the bench or the server.

Peak RSS: ``ru_maxrss`` from wait4 is not enough on Linux. On exec the kernel
keeps the high-water mark of the memory image being replaced, which after
fork/vfork is the *bench's*; so ``/bin/true`` started from a 200 MiB parent
reports 200 MiB. Instead a sampler reads ``VmHWM`` (the peak of the current
image, which starts fresh at exec) of every process in the client's group
every 100 ms and keeps the largest sum over the live processes: a group's
peak, counting the worker processes of sharded clients. ``ru_maxrss`` is used
as well when it exceeds what the child inherited, since then it is the
client's own peak and also covers its last milliseconds.

Wall-clock instants (epoch seconds) of the exec and of the exit are kept too:
the server logs when each request started and ended on the same clock, which
gives a client's start-up and exit costs (``midair.bench.timeline``). Time
starts when ``Popen`` returns, which it does once the exec has happened (it
waits for the child's close-on-exec error pipe): forking the bench's own large
process (``spawn_s``, 1.5 ms typically, 7 ms on a busy machine) is no client's
cost, so it counts in neither the wall time nor the first request.

A run that outlives its limit is killed by process group, and so is anything
it left behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measurement", "machine_info", "package_version", "run_measured", "tool_version"]


@dataclass
class Measurement:
    """One child process: wall time, its own CPU and peak RSS (from wait4)."""

    argv: list[str]
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mib: float
    exit_code: int
    timed_out: bool
    output_tail: str = ""
    started_at: float = 0.0  # epoch seconds, just after the exec
    ended_at: float = 0.0  # epoch seconds, as soon as wait4 returned
    spawn_s: float = 0.0  # fork + exec, before started_at: the bench's cost

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_measured(argv: Sequence[str], timeout: float, log: Path) -> Measurement:
    """Run ``argv`` in its own process group; SIGKILL the group after ``timeout`` s."""
    timed_out = threading.Event()
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(log, "wb") as out:
        spawning = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        started_at, start = time.time(), time.perf_counter()  # the exec is done

    def expire() -> None:
        timed_out.set()
        _kill_group(proc.pid)

    timer = threading.Timer(timeout, expire)
    sampler = PeakSampler(proc.pid)
    timer.start()
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        wall, ended_at = time.perf_counter() - start, time.time()
    finally:
        timer.cancel()
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # stragglers the client left in its group
    own = usage.ru_maxrss if usage.ru_maxrss > inherited * 1.02 else 0
    return Measurement(
        argv=list(argv),
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        maxrss_mib=max(own, sampler.peak_kib) / 1024,
        exit_code=proc.returncode,
        timed_out=timed_out.is_set(),
        output_tail=_tail(log),
        started_at=started_at,
        ended_at=ended_at,
        spawn_s=start - spawning,
    )


class PeakSampler(threading.Thread):
    """Largest sum of ``VmHWM`` over the live processes of one process group, in KiB."""

    INTERVAL = 0.1

    def __init__(self, pgid: int) -> None:
        super().__init__(name=f"rss-{pgid}", daemon=True)
        self.pgid = pgid
        self.peak_kib = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.INTERVAL)

    def sample(self) -> None:
        total = sum(_hwm_kib(pid) for pid in _group_pids(self.pgid))
        self.peak_kib = max(self.peak_kib, total)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            pids.append(int(entry.name))
    return pids


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, limit: int = 2000) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode(errors="replace")


def tool_version(argv: Sequence[str]) -> str:
    """Version number from the first line of ``--version``, or '?' when it cannot say."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    if done.returncode != 0 or not lines:
        return "?"
    number = re.search(r"\d+(?:\.\d+)+", lines[0])
    return number.group(0) if number else lines[0].strip()[:40]


def package_version(name: str) -> str | None:
    """Installed version of a Python distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, object]:
    """Cores, memory, kernel, Python, open-file limit and load: the top of every report."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(pages / (1 << 30), 1),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": sys.version.split()[0],
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "load_1m": round(os.getloadavg()[0], 2),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"
