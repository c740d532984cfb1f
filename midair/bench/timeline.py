"""Start-up and exit costs, seen from the server.

A client's wall time in a short run is mostly what it does before its first
request and after its last response, and only the server sees those instants.
nginx logs each request's start and end to the millisecond (the access log the
bench's config writes, ``midair.serve.nginx``); ``midair serve`` records when
each request arrived but not when its response ended, so with it only the
start-up is known. The bench's own clock is the same wall clock, so:

    first request = first request's start - the exec (Measurement.started_at)
    exit          = the exit (Measurement.ended_at) - last response's end

``check_clock`` proves the log millisecond-accurate in every run: it sends a
request itself and the logged start must fall between its send and its reply.

What "exit" holds besides the exit itself: nginx logs a response's end when it
has handed the last bytes to the kernel, not when the client has read them, and
``limit_rate`` hands them over in bursts (it grants a second's worth at each
second boundary of its seconds clock). In ``seed`` all ten responses end with
such a burst at once, about 10 MiB the client still has to read and write: by
strace, curl reads its last byte ~7 ms after the logged end and exits 1.3 ms
later; midair ~11 ms and 1.5 ms. So "exit" is draining the last burst plus the
exit proper, the same for every client; spreading the bursts (nginx's
``sendfile_max_chunk``) would show the exit alone but changes the rate nginx
really serves (seed's 4 MiB took 3.9 s instead of 3.0), so it is not done.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from midair.serve.nginx import parse_access_line
from midair.serve.stats import LOG_SIZE

__all__ = [
    "ClockCheck",
    "NginxLog",
    "RequestLog",
    "Seen",
    "StatsLog",
    "Timing",
    "check_clock",
    "collect",
]

RESOLUTION = 0.001  # nginx truncates its clock to the millisecond
_FLUSH_WAIT = 0.5  # seconds to wait for nginx's buffered log (flushed every 20 ms)
_POLL = 0.02
_PROBES = 5
_KEEP = 5.0  # seconds of log lines kept before the newest instant asked for


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the server saw it (epoch seconds; end None = not recorded)."""

    start: float
    end: float | None
    connection: int | None


class RequestLog(Protocol):
    """What a server logged: every request that started at or after ``t``."""

    def since(self, t: float) -> list[Seen]: ...


class NginxLog:
    """Reads the timing access log as it grows; old lines are dropped as runs move on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._seen: list[Seen] = []

    def since(self, t: float) -> list[Seen]:
        self._seen = [s for s in self._seen + self._read_new() if s.start >= t - _KEEP]
        return [s for s in self._seen if s.start >= t - RESOLUTION]

    def _read_new(self) -> list[Seen]:
        """Complete lines after the last read (a line being written waits for the next)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        whole = data[: data.rfind(b"\n") + 1]
        self._offset += len(whole)
        lines = [parse_access_line(line) for line in whole.decode(errors="replace").splitlines()]
        return [Seen(r.start, r.end, r.connection) for r in lines if r is not None]


class StatsLog:
    """``midair serve``'s ``/__stats`` request log: arrival times only, last LOG_SIZE."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.url = f"{parts.scheme}://{parts.netloc}/__stats?rate=0"  # unthrottled

    def since(self, t: float) -> list[Seen]:
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            log = json.loads(resp.read())["log"]
        if len(log) >= LOG_SIZE and log[0]["time"] >= t:
            return []  # the run's first requests may have fallen out of the log
        return [Seen(r["time"], None, None) for r in log if r["time"] >= t - RESOLUTION]


@dataclass(frozen=True)
class Timing:
    """A run's costs outside the transfers, in ms, as the server saw them."""

    first_request_ms: float | None  # exec -> first request at the server
    exit_ms: float | None  # last response's end -> exit
    requests: int
    connections: int | None  # distinct connections (nginx): keep-alive at work


def collect(log: RequestLog, started: float, ended: float, expected: int) -> Timing:
    """Timing of the run between ``started`` and ``ended`` that made ``expected`` requests.

    nginx writes its log in 64 KiB batches at most 20 ms late, so this waits
    (bounded) until the expected requests are in.
    """
    deadline = time.monotonic() + _FLUSH_WAIT
    mine = _within(log.since(started), ended)
    while len(mine) < expected and time.monotonic() < deadline:
        time.sleep(_POLL)
        mine = _within(log.since(started), ended)
    return timing(mine, started, ended)


def _within(seen: list[Seen], ended: float) -> list[Seen]:
    return [s for s in seen if s.start <= ended]


def timing(seen: list[Seen], started: float, ended: float) -> Timing:
    """First request and exit costs of the requests one run made."""
    if not seen:
        return Timing(None, None, 0, None)
    ends = [s.end for s in seen if s.end is not None]
    ids = {s.connection for s in seen if s.connection is not None}
    first = (min(s.start for s in seen) - started) * 1000
    exit_ms = (ended - max(ends)) * 1000 if len(ends) == len(seen) else None
    return Timing(first, exit_ms, len(seen), len(ids) if ids else None)


@dataclass(frozen=True)
class ClockCheck:
    """The bench's probes: how far the logged start fell outside [send, reply], in ms."""

    probes: int
    worst_ms: float  # 0 = every logged start within the window, to the log's resolution
    window_ms: float  # the longest send -> reply of the probes

    @property
    def accurate(self) -> bool:
        return self.probes > 0 and self.worst_ms <= RESOLUTION * 1000


def check_clock(log: RequestLog, url: str) -> ClockCheck:
    """Request ``url`` (a missing file, ``?rate=0`` so ``midair serve`` answers at once)
    ``_PROBES`` times and compare."""
    misses, windows = [], []
    for _ in range(_PROBES):
        sent, replied = _probe(url)
        found = _wait_for_one(log, sent, replied)
        if found is not None:
            misses.append(max(0.0, sent - RESOLUTION - found.start, found.start - replied))
            windows.append(replied - sent)
    worst = max(misses) * 1000 if misses else float("inf")
    return ClockCheck(len(misses), worst, max(windows, default=0.0) * 1000)


def _probe(url: str) -> tuple[float, float]:
    """Send one GET over a fresh connection and read the reply: (sent, replied) instants."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as sock:
        sent = time.time()
        sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        while sock.recv(65536):
            pass
        return sent, time.time()


def _wait_for_one(log: RequestLog, sent: float, replied: float) -> Seen | None:
    deadline = time.monotonic() + _FLUSH_WAIT
    while True:
        seen = _within(log.since(sent), replied + RESOLUTION)
        if seen or time.monotonic() > deadline:
            return seen[0] if seen else None
        time.sleep(_POLL)
