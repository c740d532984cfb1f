"""Jobs taken fairly across hosts, however the list is ordered.

A batch takes its jobs a window at a time, in the order they come.  A list of
1,000,000 URLs on one host then 100 on others would keep the others out of the
batch until the million had nearly ended: their connections idle behind one
host's ``--per-host``, and 100 quick files waiting hours.  So past the first
window, the run takes its jobs through ``fair``: it reads ahead, queues each job
behind its origin, and hands them out one origin after another (round robin).

How far ahead: a window's worth always; further while the origins at hand are
too few to use every connection (fewer than ``concurrency / per_host``) — then
it reads on: ``STEP`` lines for each job it hands out, and ``search`` steps while
the driver has time (a quarter of its loop, see ``Session``), so one step never
holds a stop for long, and a long list is searched at reading speed, not at the
pace its jobs end.  What is queued past four windows' jobs goes to the run's
``Spool`` on disk, an origin's jobs in blocks, so the look-ahead costs no memory
per job; an origin's jobs keep their order.

A list shorter than a window is not reordered at all: the batch holds it whole
and serves its hosts in turn already.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

from .core.jobs import Job
from .core.urls import parse_urls

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    import sqlite3

    from .spool import Spool

STEP = 2  # lines read ahead, at most, per job handed out: a window taken reads two at most
BLOCK = 1024  # jobs of one origin written to disk at once
_PLAIN = Job.__init__.__defaults__  # a job that is its URL alone: saved as its text


class Fair:
    """``jobs``, the first ``window`` as they come, then round robin over their origins
    (see the module's docstring); ``origins``: how many it takes to use every connection."""

    def __init__(self, jobs: Iterable[Job], spool: Spool, *, window: int, origins: int) -> None:
        self._jobs: Iterator[Job] | None = iter(jobs)
        self._before = window  # jobs still to hand out as they come
        self._queues = _Queues(spool, window, origins)

    def __iter__(self) -> Iterator[Job]:
        return self

    def __next__(self) -> Job:
        if self._before:  # the first window: as they come
            self._before -= 1
            assert self._jobs is not None
            return next(self._jobs)
        self._read(STEP)
        if not self._queues.turns:
            raise StopIteration
        return self._queues.next()

    @property
    def searching(self) -> bool:
        """Whether reading on would find work for idle connections (``search``)."""
        return not self._before and self._jobs is not None and self._queues.searching

    def search(self, lines: int) -> None:
        """Read up to ``lines`` more jobs while ``searching``: a driver's idle step, so a
        long list is searched at reading speed, not at the pace jobs end."""
        for _ in range(lines):
            if not self.searching:
                return
            self._read(1)

    def _read(self, lines: int) -> None:
        queues = self._queues
        for _ in range(lines):
            if self._jobs is None or not queues.wants_more:
                return
            job = next(self._jobs, None)
            if job is None:
                self._jobs = None
                return
            queues.put(job)


class _Origin:
    """One origin's jobs not yet handed out: the oldest in memory (``head``), then blocks
    on disk, then the newest in memory (``tail``, a block in the making)."""

    __slots__ = ("blocks", "head", "tail")

    def __init__(self) -> None:
        self.head: deque[Job] = deque()
        self.blocks: deque[int] = deque()
        self.tail: list[Job] = []

    def __bool__(self) -> bool:
        """Whether it has jobs queued, anywhere."""
        return bool(self.head or self.blocks or self.tail)


class _Queues:
    def __init__(self, spool: Spool, window: int, origins: int) -> None:
        self._spool = spool
        self._window = window
        self._wanted = origins
        self._memory = 4 * window  # jobs queued in memory, at most (roughly)
        self._by_origin: dict[tuple[str, str, int], _Origin] = {}
        self.turns: deque[tuple[str, str, int]] = deque()  # origins with jobs queued, in turn
        self._queued = 0
        self._in_memory = 0
        self._tails = 0  # jobs in tails
        self._db: sqlite3.Connection | None = None
        self._table = ""
        self._blocks = itertools.count()

    @property
    def wants_more(self) -> bool:
        return self._queued < self._window or self.searching

    @property
    def searching(self) -> bool:
        return len(self.turns) < self._wanted

    def put(self, job: Job) -> None:
        key = job.url.origin
        origin = self._by_origin.get(key)
        if origin is None:
            origin = self._by_origin[key] = _Origin()
        if not origin:
            self.turns.append(key)
        self._queued += 1
        if self._in_memory < self._memory and not origin.blocks and not origin.tail:
            origin.head.append(job)
            self._in_memory += 1
            return
        origin.tail.append(job)
        self._tails += 1
        if self._tails >= BLOCK:
            self._write_tails()

    def next(self) -> Job:
        key = self.turns.popleft()
        origin = self._by_origin[key]
        if not origin.head:
            self._refill(origin)
        job = origin.head.popleft()
        self._queued -= 1
        self._in_memory -= 1
        if origin:
            self.turns.append(key)
        else:
            del self._by_origin[key]
        return job

    def _refill(self, origin: _Origin) -> None:
        if origin.blocks:
            jobs = self._read(origin.blocks.popleft())
        else:
            jobs, origin.tail = origin.tail, []
            self._tails -= len(jobs)
        origin.head.extend(jobs)
        self._in_memory += len(jobs)

    # --- blocks on disk ---------------------------------------------------------------
    def _write_tails(self) -> None:
        """Every tail to disk, each a block: what is queued in memory stays bounded."""
        for origin in self._by_origin.values():
            if origin.tail:
                origin.blocks.append(self._write(origin.tail))
                origin.tail = []
        self._tails = 0

    def _write(self, jobs: list[Job]) -> int:
        # Imported here: only a list longer than four windows spools, and pickle (with its
        # failed look-up of Jython's org.python.core) and zlib are ~2.5 ms of every start.
        import pickle
        import zlib

        if self._db is None:
            self._db, self._table = self._spool.table(", data BLOB NOT NULL")
        number = next(self._blocks)
        if all(_plain(job) for job in jobs):
            data = b"T" + zlib.compress("\n".join(job.url.text for job in jobs).encode(), 1)
        else:
            data = b"P" + zlib.compress(pickle.dumps(jobs, pickle.HIGHEST_PROTOCOL), 1)
        self._db.execute(f"INSERT INTO {self._table} VALUES (?, ?)", (_key(number), data))
        return number

    def _read(self, number: int) -> list[Job]:
        assert self._db is not None
        key = (_key(number),)
        (data,) = self._db.execute(f"SELECT data FROM {self._table} WHERE key = ?", key).fetchone()
        self._db.execute(f"DELETE FROM {self._table} WHERE key = ?", key)
        import pickle
        import zlib

        body = zlib.decompress(data[1:])
        if data[:1] == b"T":
            return [Job(url) for url in parse_urls(body.decode().split("\n"))]
        jobs: list[Job] = pickle.loads(body)
        return jobs


def _plain(job: Job) -> bool:
    """Whether ``job`` is its URL alone (every other field at its default)."""
    return (job.out, job.subdir, job.checksum, job.headers, job.mirrors, job.size, job.pieces) == (
        _PLAIN
    )


def _key(number: int) -> bytes:
    return number.to_bytes(8, "big")
