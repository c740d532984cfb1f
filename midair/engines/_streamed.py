"""A list too long to plan whole, streamed into shards as it is read.

``plan_shards`` (``_shards``) reads every job before the first shard starts; for
a list of millions that is minutes and gigabytes before the first request.  Here
the parent reads the list a chunk at a time and sends each job at once to the
shard that will run it, so the parent and every worker hold only the jobs in
the air (each shard's ``room``), whatever the list's length.

- **route** (``Router``): a job goes to the shard its first-choice name family
  hashes to, so every contender for a name (``f``, ``f.1``) meets in one batch,
  which numbers them as a single batch would — without the parent remembering
  any name.  Each origin's jobs are spread over every shard, so each shard runs
  with a share of ``--per-host`` (the shares add up to it) and the limit holds
  across shards, whatever the list holds.  Hence at most ``--per-host`` shards,
  and one with ``--host-delay`` (the gap between two requests to a host is kept
  by one batch).
- **feed** (``Feeder``): sends a shard jobs while it holds fewer than its
  ``room`` unended (a few of its batch's windows: ``room``), in pickled chunks;
  a job for a full shard waits, and the reading with it (backpressure).
- **account** (``Ledger``): what each shard holds and has not ended, by id, so a
  report is checked to be its shard's, a lost shard's jobs are failed (and
  the jobs routed to it later, at once), and the run is complete when every job
  read has ended — in memory that does not grow with the list.
- **take** (``Inbox``, in the worker): a side thread reads the chunks as they
  come; the batch takes jobs from it a window at a time, waiting only when the
  parent has sent none yet.
"""

from __future__ import annotations

import hashlib
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from ..core.actions import Failed, Report
from ..core.errors import NetworkError
from ..core.intake import window_size
from ..core.jobs import Job, Options
from ..core.naming import family
from ..core.transfer import claimable_path
from ..run import Run
from ._shards import ENDINGS, PACK_CHUNK, ShardError, Summary, _overall_share, _shard_base, split

Row = tuple[int, Job, "str | None"]  # a job's id in the whole batch, the job, its first path
END = b""  # sent as the last chunk: the list is over


def stream_options(options: Options, shards: int) -> list[Options]:
    """The options of each streamed shard: how many there are, and their shares."""
    base = _shard_base(options)
    count = 1 if options.host_delay else min(shards, options.per_host, options.concurrency)
    count = max(1, count)
    per_host = split(options.per_host, [1] * count)
    concurrency = split(options.concurrency, [options.concurrency] * count)
    rate = _overall_share(base.max_overall_rate, count)
    return [
        base.replace(concurrency=c, per_host=p, max_overall_rate=rate)
        for c, p in zip(concurrency, per_host, strict=True)
    ]


def room(options: Options) -> int:
    """How many unended jobs a streamed shard is sent at most: its batch's window (see
    ``Batch.wants_jobs``) taken, the next one ready, and one more on the way."""
    return 3 * window_size(options)


class Router:
    """The shard each job goes to, by a stable hash of its first path's name family."""

    def __init__(self, options: Options, count: int) -> None:
        self.options = _shard_base(options)
        self.count = count

    def route(self, job: Job) -> tuple[int, str | None]:
        """The job's shard, and its first-choice path (None: it would land outside)."""
        path = claimable_path(job, self.options)
        key = job.url.text if path is None else family(path)
        return _spread(key) % self.count, path


def _spread(key: str) -> int:
    """A stable hash of ``key`` whose low bits differ for keys a digit apart (crc32's do not:
    ``f-0.bin`` and ``f-2.bin`` would land in one shard of two)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Ledger:
    """The jobs each shard was sent and has not ended (id -> URL), and the shards lost."""

    def __init__(self, run: Run, count: int) -> None:
        self.run = run
        self.open: list[dict[int, str]] = [{} for _ in range(count)]
        self.lost_why: dict[int, str] = {}  # shard -> why its jobs failed
        self.sent = 0  # ids handed out so far: 0 .. sent - 1

    @property
    def complete(self) -> bool:
        return not any(self.open)

    def holds(self, number: int) -> int:
        return len(self.open[number])

    def add(self, number: int, ident: int, url: str) -> bool:
        """Note job ``ident`` as shard ``number``'s; False (and the job failed) if it was lost."""
        self.sent = max(self.sent, ident + 1)
        why = self.lost_why.get(number)
        if why is None:
            self.open[number][ident] = url
            return True
        self.run.report(Failed(ident, url, NetworkError(url, why)))
        return False

    def apply(self, number: int, summary: Summary) -> None:
        self.reports(number, summary.reports)
        self.run.tracker.add_progress(summary.written, summary.positions)
        if summary.cookies:
            self.run.cookies.add(summary.cookies)

    def reports(self, number: int, reports: tuple[Report, ...]) -> None:
        mine, report_to = self.open[number], self.run.report
        for report in reports:
            ident = report.download
            if ident not in mine:
                self.not_open(number, ident)
                continue
            if type(report) in ENDINGS:
                del mine[ident]
            report_to(report)

    def not_open(self, number: int, ident: int) -> None:
        """A report for a job shard ``number`` does not hold: ended already (dropped), or
        another shard's or never sent (a bug, never a result: the run fails)."""
        others = any(ident in held for n, held in enumerate(self.open) if n != number)
        if others or not 0 <= ident < self.sent:
            reason = f"worker {number} reported job {ident}, which is not in its shard"
            self.run.fail(ShardError(reason))

    def lost(self, number: int, reason: str) -> None:
        """Fail every unended job of shard ``number``, and those routed to it from now on."""
        self.lost_why[number] = reason
        held, self.open[number] = self.open[number], {}
        for ident, url in held.items():
            self.run.report(Failed(ident, url, NetworkError(url, reason)))


class Feeder:
    """Reads the run's jobs as the shards have room, and sends each shard its chunks."""

    def __init__(
        self,
        run: Run,
        router: Router,
        ledger: Ledger,
        rooms: list[int],
        send: Callable[[int, bytes], None],
    ) -> None:
        self.jobs = run.intake()
        self.router, self.ledger, self.rooms, self.send = router, ledger, rooms, send
        self.pending: list[list[Row]] = [[] for _ in rooms]
        self.held: tuple[int, Row] | None = None  # routed to a shard without room: waits
        self.ids = 0
        self.over = False  # the list is read and every shard told

    def feed(self, step: int = PACK_CHUNK) -> bool:
        """Route up to ``step`` jobs; whether there may be more to route at once."""
        if self.over:
            return False
        for _ in range(step):
            routed = self.held or self._next()
            if routed is None:
                self._end()
                return False
            if not self._place(*routed):
                self.held = routed
                self._flush_all()
                return False
            self.held = None
        self._flush_all()
        return True

    def _next(self) -> tuple[int, Row] | None:
        job = next(self.jobs, None)
        if job is None:
            return None
        number, path = self.router.route(job)
        ident, self.ids = self.ids, self.ids + 1
        return number, (ident, job, path)

    def _place(self, number: int, row: Row) -> bool:
        """Add ``row`` to shard ``number``'s next chunk if it has room (False: it waits)."""
        pending = self.pending[number]
        if self.ledger.holds(number) >= self.rooms[number]:
            return False
        if self.ledger.add(number, row[0], row[1].url.text):
            pending.append(row)
            if len(pending) >= PACK_CHUNK:
                self._flush(number)
        return True

    def _flush_all(self) -> None:
        for number in range(len(self.pending)):
            self._flush(number)

    def _flush(self, number: int) -> None:
        rows, self.pending[number] = self.pending[number], []
        if rows:
            self.send(number, pack_rows(rows))

    def _end(self) -> None:
        self._flush_all()
        for number in range(len(self.pending)):
            self.send(number, END)
        self.over = True


def pack_rows(rows: list[Row]) -> bytes:
    """Rows pickled as three columns (ids, jobs, paths): fewer, bigger objects to pickle."""
    ids, jobs, paths = zip(*rows, strict=True)
    return pickle.dumps((ids, jobs, paths), pickle.HIGHEST_PROTOCOL)


# --- in the worker ----------------------------------------------------------------------
class Inbox:
    """A streamed shard's jobs as the parent sends them, read on a side thread."""

    def __init__(self, conn: Connection) -> None:
        self.chunks: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._read, args=(conn,), name="midair-shard-inbox", daemon=True
        )
        self.thread.start()

    def _read(self, conn: Connection) -> None:
        try:
            while (packed := conn.recv_bytes()) != END:
                self.chunks.put(pickle.loads(packed))
        except (EOFError, OSError):
            pass  # the parent is gone: the lifeline stops this worker
        self.chunks.put(None)

    def stop(self) -> None:
        """The run stops: the batch waits for no more jobs (safe from a signal handler)."""
        self.chunks.put(None)

    def rows(self) -> Iterator[Row]:
        """Each job as it comes, until the list ends or the run stops."""
        while (chunk := self.chunks.get()) is not None:
            yield from zip(*chunk, strict=True)

    def columns(self) -> tuple[Iterator[int], Iterator[Job], Iterator[str | None]]:
        """``rows`` as ids, jobs and first paths, the three a shard's run takes."""
        return unzipped(self.rows())


def unzipped(rows: Iterator[Row]) -> tuple[Iterator[int], Iterator[Job], Iterator[str | None]]:
    """Three iterators over the columns of ``rows``, each pulling the next row when it needs
    one and leaving its other fields for the others: read in step, nothing piles up."""
    columns: tuple[list[Any], list[Any], list[Any]] = ([], [], [])

    def column(n: int) -> Iterator[Any]:
        mine = columns[n]
        while True:
            if not mine:
                row = next(rows, None)
                if row is None:
                    return
                for held, value in zip(columns, row, strict=True):
                    held.append(value)
            yield mine.pop(0)

    return column(0), column(1), column(2)
