"""A million URLs over a hundred thousand simulated hosts, through the real core, in virtual time.

No sockets, no files, no clock: this driver is what an engine and a store would be to
``Batch``, over a network made of numbers (issue 9, "At scale, simulated").  Each
host gets, from a seeded draw, a latency, a rate per connection and a temper: most
serve, some answer a job's first request 429 (Retry-After), some refuse every
connection, some answer 500 to everything.  Events run in time order; the clock jumps
to the next one or to the batch's deadline.

Checked on every step, not sampled: open connections within ``--concurrency`` and each
host's within ``--per-host``; every job ends exactly once (finished or failed); every
job of a refusing or failing host fails, every other finishes.

    python -m midair.bench.virtual --urls 1000000 --hosts 100000

prints the CPU it took and what happened.  A benchmark, not a test (tests run it small).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from midair.core.actions import (
    Action,
    Close,
    Connect,
    ConnectionFailure,
    Disk,
    Failed,
    Finished,
    OnDisk,
    Prepare,
    Publish,
    Retrying,
    Save,
    Send,
)
from midair.core.batch import Batch
from midair.core.jobs import Job, Options

SERVES, THROTTLES, REFUSES, BREAKS = "serves", "throttles", "refuses", "breaks"
TEMPERS = [(SERVES, 0.90), (THROTTLES, 0.05), (REFUSES, 0.03), (BREAKS, 0.02)]
_FRESH = OnDisk(Disk.FRESH)
_ZEROS = bytes(64 << 10)
_PREPARE_AHEAD = 5000  # jobs prepared ahead of those ended, as the session keeps


@dataclass(frozen=True)
class Host:
    latency: float  # seconds to connect, and to the first byte of an answer
    rate: float  # bytes per second per connection
    temper: str


def hosts(count: int, seed: int) -> list[Host]:
    rng = random.Random(seed)
    names, weights = zip(*TEMPERS, strict=True)
    return [
        Host(
            rng.uniform(0.005, 0.2), rng.uniform(64 << 10, 4 << 20), rng.choices(names, weights)[0]
        )
        for _ in range(count)
    ]


@dataclass
class Outcome:
    urls: int
    hosts: int
    cpu_s: float = 0.0
    virtual_s: float = 0.0
    finished: int = 0
    failed: int = 0
    retries: int = 0
    connections: int = 0
    max_open: int = 0
    max_per_host: int = 0
    steps: int = 0
    ended: Counter[int] = field(default_factory=Counter)


class VirtualNet:
    """The driver: carries out a batch's actions over simulated hosts."""

    def __init__(self, urls: int, host_count: int, options: Options, seed: int = 0) -> None:
        self.hosts = hosts(host_count, seed)
        self.options = options
        jobs = [Job.from_url(f"http://h{i % host_count}.sim/f/{i}") for i in range(urls)]
        self.batch = Batch(jobs, options, seed=seed)
        self.outcome = Outcome(urls, host_count)
        self.now = 0.0
        self._events: list[tuple[float, int, str, int, bytes]] = []
        self._seq = itertools.count()
        self._conn_host: dict[int, int] = {}
        self._open: Counter[int] = Counter()
        self._asked: set[int] = set()  # jobs a throttling host answered 429 once

    # --- running ------------------------------------------------------------------------
    def run(self, max_steps: int = 50_000_000) -> Outcome:
        started = time.process_time()
        self._carry_out(self.batch.start(self.now, first=_PREPARE_AHEAD))
        while not self.batch.done:
            self.outcome.steps += 1
            assert self.outcome.steps <= max_steps, "no end in sight"
            self._step()
        self.outcome.cpu_s = time.process_time() - started
        self.outcome.virtual_s = self.now
        self._check_ends()
        return self.outcome

    def _step(self) -> None:
        deadline = self.batch.next_deadline()
        if self._events and (deadline is None or self._events[0][0] <= deadline):
            at, _, kind, conn, data = heapq.heappop(self._events)
            self.now = max(self.now, at)
            self._deliver(kind, conn, data)
        else:
            assert deadline is not None, "stuck: nothing to wait for"
            self.now = max(self.now, deadline)
            self._carry_out(self.batch.timer(self.now))
        ended = self.outcome.finished + self.outcome.failed
        prepared = self.outcome.urls - self.batch.unprepared
        if self.batch.unprepared and prepared - ended < _PREPARE_AHEAD:
            self._carry_out(self.batch.prepare_more(_PREPARE_AHEAD, self.now))

    def _deliver(self, kind: str, conn: int, data: bytes) -> None:
        if conn not in self._conn_host:
            return  # closed meanwhile
        if kind == "connected":
            self._carry_out(self.batch.connected(conn, self.now))
        elif kind == "data":
            self._carry_out(self.batch.received(conn, data, self.now))
        else:
            self._forget(conn)
            self._carry_out(self.batch.closed(conn, self.now, ConnectionFailure(kind)))

    # --- the batch's actions ------------------------------------------------------------
    def _carry_out(self, actions: list[Action]) -> None:
        queue: list[Action] = list(actions)
        for action in queue:  # the list grows as answers come
            match action:
                case Prepare():
                    queue += self.batch.prepared(action.download, _FRESH, self.now)
                case Save() | Publish():
                    queue += self.batch.published(action.download, self.now)
                case Connect():
                    self._connect(action)
                case Send():
                    self._answer(action)
                case Close():
                    self._forget(action.conn)
                case Finished() | Failed():
                    self._ended(action)
                case Retrying():
                    self.outcome.retries += 1

    def _connect(self, action: Connect) -> None:
        index = int(action.host[1:].partition(".")[0])
        host = self.hosts[index]
        self._conn_host[action.conn] = index
        self._open[index] += 1
        self.outcome.connections += 1
        total = len(self._conn_host)
        assert total <= self.options.concurrency, f"{total} connections open"
        assert self._open[index] <= self.options.per_host, f"{self._open[index]} to h{index}"
        self.outcome.max_open = max(self.outcome.max_open, total)
        self.outcome.max_per_host = max(self.outcome.max_per_host, self._open[index])
        kind = "connection refused" if host.temper == REFUSES else "connected"
        self._schedule(host.latency, kind, action.conn)

    def _answer(self, action: Send) -> None:
        index = self._conn_host[action.conn]
        host = self.hosts[index]
        target = action.data.split(b" ", 2)[1]
        job = int(target.rpartition(b"/")[2])
        size = 1024 + job % (63 << 10)
        if host.temper == BREAKS:
            response = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
        elif host.temper == THROTTLES and job not in self._asked:
            self._asked.add(job)
            response = b"HTTP/1.1 429 Slow down\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
            response = head + _ZEROS[:size]
        self._schedule(host.latency + len(response) / host.rate, "data", action.conn, response)

    def _schedule(self, delay: float, kind: str, conn: int, data: bytes = b"") -> None:
        heapq.heappush(self._events, (self.now + delay, next(self._seq), kind, conn, data))

    def _forget(self, conn: int) -> None:
        index = self._conn_host.pop(conn, None)
        if index is not None:
            self._open[index] -= 1

    def _ended(self, action: Finished | Failed) -> None:
        self.outcome.ended[action.download] += 1
        assert self.outcome.ended[action.download] == 1, f"job {action.download} ended twice"
        if type(action) is Finished:
            self.outcome.finished += 1
        else:
            self.outcome.failed += 1

    def _check_ends(self) -> None:
        """Every job ended once; a job fails exactly when its host refuses or breaks."""
        outcome = self.outcome
        assert len(outcome.ended) == outcome.urls, (len(outcome.ended), outcome.urls)
        count = len(self.hosts)
        bad = sum(
            1 for i in range(outcome.urls) if self.hosts[i % count].temper in (REFUSES, BREAKS)
        )
        assert outcome.failed == bad, (outcome.failed, bad)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--per-host", type=int, default=4)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = Options(
        directory="/virtual",
        concurrency=args.concurrency,
        per_host=args.per_host,
        retries=args.retries,
        max_retry_wait=4.0,
    )
    outcome = VirtualNet(args.urls, args.hosts, options, args.seed).run()
    print(
        f"{outcome.urls:,} URLs over {outcome.hosts:,} hosts: {outcome.cpu_s:.1f} s CPU, "
        f"{outcome.virtual_s:.0f} s virtual; {outcome.finished:,} finished, "
        f"{outcome.failed:,} failed, {outcome.retries:,} retries, "
        f"{outcome.connections:,} connections (at most {outcome.max_open:,} open, "
        f"{outcome.max_per_host} to one host); every check held"
    )


if __name__ == "__main__":
    main()
