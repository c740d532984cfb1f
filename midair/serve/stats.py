"""What the server saw, so tests can check what a client did to it.

Per address: connections open now and at most at once (does the client honour
its per-host limit?), connections and requests in total (does it reuse
connections?), body bytes sent. And a log of the last requests with their
headers (did it send ``Range`` and ``If-Range``?). Counters live on the event
loop thread; ``snapshot`` copies them into frozen records, safe to hand out.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from midair.serve.request import Request

__all__ = ["LOG_SIZE", "STATS_PATH", "AddressStats", "RequestRecord", "ServerStats", "StatsBook"]

LOG_SIZE = 1000

STATS_PATH = "/__stats"  # what answers with the statistics, uncounted


@dataclass(frozen=True, slots=True)
class AddressStats:
    host: str
    current: int  # connections open now
    max_concurrent: int  # most connections open at once
    connections: int  # accepted in total
    requests: int
    bytes_sent: int  # body bytes, framing excluded


@dataclass(frozen=True, slots=True)
class RequestRecord:
    host: str  # the server address that received it
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased
    status: int
    time: float  # wall clock, seconds since the epoch
    version: str = "HTTP/1.1"  # "HTTP/2" over h2c or h2 (ALPN)

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name.lower()]
        return found[-1] if found else None


@dataclass(frozen=True, slots=True)
class ServerStats:
    addresses: Mapping[str, AddressStats]
    log: tuple[RequestRecord, ...]  # oldest first, at most LOG_SIZE

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.addresses.values())

    @property
    def connections(self) -> int:
        return sum(a.connections for a in self.addresses.values())

    def to_json(self) -> bytes:
        """The ``GET /__stats`` body."""
        addresses = {h: asdict(a) for h, a in self.addresses.items()}
        log = [asdict(r) for r in self.log]
        return json.dumps({"addresses": addresses, "log": log}, indent=1).encode()


class _Counts:
    __slots__ = ("bytes_sent", "connections", "current", "max_concurrent", "requests")

    def __init__(self) -> None:
        self.current = self.max_concurrent = self.connections = 0
        self.requests = self.bytes_sent = 0


class StatsBook:
    """The mutable counters behind ``ServerStats``; touch only from the loop thread."""

    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self._counts: dict[str, _Counts] = {host: _Counts() for host in hosts}
        self._log: deque[RequestRecord] = deque(maxlen=LOG_SIZE)

    def _of(self, host: str) -> _Counts:
        return self._counts.setdefault(host, _Counts())

    def opened(self, host: str) -> None:
        counts = self._of(host)
        counts.current += 1
        counts.connections += 1
        counts.max_concurrent = max(counts.max_concurrent, counts.current)

    def closed(self, host: str) -> None:
        self._of(host).current -= 1

    def request(self, host: str, req: Request, status: int) -> None:
        """Count and log ``req``, unless it asks for the statistics: looking at them must
        not change them."""
        if req.target.startswith(STATS_PATH):
            return
        self._of(host).requests += 1
        record = RequestRecord(
            host, req.method, req.target, req.headers, status, time.time(), req.version
        )
        self._log.append(record)

    def sent(self, host: str, nbytes: int) -> None:
        self._of(host).bytes_sent += nbytes

    def snapshot(self) -> ServerStats:
        addresses = {
            host: AddressStats(
                host, c.current, c.max_concurrent, c.connections, c.requests, c.bytes_sent
            )
            for host, c in self._counts.items()
        }
        return ServerStats(addresses, tuple(self._log))

    def reset(self) -> None:
        """Start a new measurement: totals to zero, maximum down to what is open now."""
        for counts in self._counts.values():
            counts.connections = counts.requests = counts.bytes_sent = 0
            counts.max_concurrent = counts.current
        self._log.clear()
