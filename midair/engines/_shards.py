"""What the sharding engines share: the plan, the worker's side, the merge.

``processes`` and ``dask`` split one batch into shards, run each shard as its
own ``Run`` somewhere else, and fold what comes back into the caller's
run.  Each rule lives here once:

- **plan** (``plan_shards``): every job of one origin lands in the same shard,
  so ``--per-host`` holds across shards — unless one origin holds most jobs:
  then its jobs are spread too, and each shard gets a share of ``--per-host``.
  Jobs whose first-choice file names collide always share a shard, so the core
  still sees every contender for a name (a redirect that renames a file late is
  the one case it cannot foresee).  Shards are balanced by job count and split
  ``--concurrency`` between them.
- **worker** (``run_shard``): runs an event-driven engine over a shard and
  sends ``Summary`` records home every ``interval`` seconds from a side
  thread — reports in order, plus bytes written and positions since the last —
  and, when asked to stop (``stopped``, or SIGINT/SIGTERM in a worker
  process), stops the run so its part files are closed; an internal error of
  the shard's run is raised, for the caller to fail the whole run with.
- **merge** (``Merger``): shards number their downloads with the batch's ids
  (``Shard.indexes``), so reports are taken as they come, each checked to be
  its shard's job; it keeps the first ending per job (a re-run shard reports
  again), and gives every job of a lost shard a ``Failed`` so the results
  always hold one entry per job.
"""

from __future__ import annotations

import functools
import heapq
import operator
import os
import pickle
import threading
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, get_args

from ..core.actions import Failed, Finished, Report
from ..core.errors import InputError, NetworkError
from ..core.jobs import Job, Options
from ..core.naming import family
from ..core.transfer import claimable_path
from ..run import REPORTS, Run, stop_on_signals

if TYPE_CHECKING:
    from http.cookiejar import Cookie

ENDINGS = (Finished, Failed)
PACK_CHUNK = 2000  # jobs pickled at once (~60 ms): the longest a stop waits on packing
SHARDING = frozenset({"processes", "dask"})


@dataclass(frozen=True, slots=True)
class Shard:
    """Some of the batch's jobs, for one worker, and the options it runs them with."""

    number: int
    indexes: tuple[int, ...]  # positions in the caller's ``run.jobs``
    options: Options  # its share of --concurrency; an absolute directory
    # Every job's first-choice path under ``options`` (None: it would land outside), as
    # the plan found them, the whole batch's (``run.jobs`` order; one tuple shared by every
    # shard, inherited when a worker forks): its batch claims these, not naming jobs again.
    paths: tuple[str | None, ...] | None = None

    def own_paths(self) -> list[str | None] | None:
        """The first paths of this shard's jobs, in ``indexes`` order, if the plan gave them."""
        return None if self.paths is None else [self.paths[i] for i in self.indexes]


@dataclass(frozen=True, slots=True)
class Summary:
    """What a shard did since its last summary; ids are the whole batch's (``Shard.indexes``)."""

    reports: tuple[Report, ...]
    written: int  # bytes written to files
    positions: dict[int, int]  # active download -> bytes on disk
    cookies: tuple[Cookie, ...] = ()  # the shard's jar, in its last summary (--save-cookies)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by its constructor: a slots dataclass pickles through Python-level state
        methods, several times slower.  Each report is a constructor call too, so the
        receiving side builds it once, from C (``_reduce_report`` on multiprocessing's pipes)."""
        return Summary, (self.reports, self.written, self.positions, self.cookies)


def _reduce_report(report: Report) -> tuple[Any, ...]:
    """What ``Record.__reduce__`` gives, its fields read by one C call, not one per field."""
    kind: Any = type(report)
    return kind, _fields_of(kind)(report)


for _kind in get_args(Report):  # a shard's pipe to the parent pickles with these
    ForkingPickler.register(_kind, _reduce_report)


@functools.cache
def _fields_of(kind: Any) -> Callable[[Any], tuple[Any, ...]]:
    """Reads a report's fields as a tuple, in its constructor's order: ``download`` first."""
    names = list(kind.__match_args__)  # its fields, in constructor order
    if names[0] != "download" or len(names) < 2:
        raise TypeError(f"{kind.__name__} is not a report: its fields are {names}")
    return operator.attrgetter(*names)


class ShardError(RuntimeError):
    """A shard's run failed with an internal error (the text says which shard, and what)."""


# --- the plan ------------------------------------------------------------------------
def plan_shards(jobs: Sequence[Job], options: Options, shards: int) -> list[Shard]:
    """Cut the batch into at most ``shards`` shards, each with its options.

    Usually each origin's jobs share a shard, so its ``--per-host`` holds there.
    When one origin holds most jobs, that would leave the other cores idle:
    then jobs are grouped by name only, and every shard gets a share of
    ``--per-host`` (the shares add up to it), so each origin's limit still
    holds across shards, however its jobs were spread.  Not with ``--host-delay``:
    the gap between two requests to a host is kept by one batch, so a host's jobs
    stay in one shard.  ``--max-overall-rate`` is divided evenly between the shards
    (``_overall_share``): their sum holds, though a shard that finishes early leaves
    its share unused.
    """
    base = _shard_base(options)
    paths = [claimable_path(job, base) for job in jobs]
    # Jobs whose names a numbering may join (f, f.1, f.2) share a shard; str: never an origin.
    names = [path if path is None else family(path) for path in paths]
    origins = [job.url.origin for job in jobs]
    groups: list[list[int]] = []
    largest = max(Counter(origins).values(), default=0)
    if 2 * largest <= len(jobs):  # no origin holds most jobs; jobs joined by names may
        groups = sorted(_groups(list(zip(origins, names, strict=True))), key=len, reverse=True)
        largest = len(groups[0]) if groups else 0
    ways = _ways_to_split(largest, len(jobs), options, shards)
    if ways > 1 and _all_distinct(names):  # nearly every big list: dealt in turn, no groups
        bins = [list(range(b, len(jobs), ways)) for b in range(ways)]
        per_host = split(options.per_host, [1] * ways)
        return _shards_of(bins, [len(b) for b in bins], paths, base, per_host)
    if ways > 1:
        return _plan(_same_key(names), paths, base, ways, split(options.per_host, [1] * ways))
    if not groups:  # one origin holds most jobs, yet they cannot be spread
        groups = _groups(list(zip(origins, names, strict=True)))
    count = max(0, min(shards, len(groups), options.concurrency))
    return _plan(groups, paths, base, count, [options.per_host] * count)


def _ways_to_split(largest: int, total: int, options: Options, shards: int) -> int:
    """How many shards may share the largest group: 1 unless it holds most jobs."""
    if 2 * largest <= total or options.host_delay:
        return 1
    return max(1, min(shards, options.per_host, options.concurrency, largest))


def _all_distinct(keys: Sequence[object]) -> bool:
    """Whether no two keys are equal and none is None: then every job is a group alone,
    and ``_bins`` would deal them in turn (what ``plan_shards`` does then, without them)."""
    return None not in keys and len(set(keys)) == len(keys)


def _same_key(keys: Sequence[object]) -> list[list[int]]:
    """Job positions grouped by one key each (None joins nothing): ``_groups`` for the
    one-key case, without its union-find."""
    groups: dict[object, list[int]] = {}
    alone: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None:
            alone.append([i])
        else:
            groups.setdefault(key, []).append(i)
    return [*groups.values(), *alone]


def _shard_base(options: Options) -> Options:
    """``options`` with the paths in them absolute: a shard may run in another directory."""
    return options.replace(
        directory=os.path.abspath(options.directory),
        ca_certificate=options.ca_certificate and os.path.abspath(options.ca_certificate),
        load_cookies=options.load_cookies and os.path.abspath(options.load_cookies),
    )


def _plan(
    groups: Sequence[list[int]],
    paths: Sequence[str | None],
    base: Options,
    count: int,
    per_host: Sequence[int],
) -> list[Shard]:
    """Bin ``groups`` into ``count`` shards, largest first to the lightest; ``paths``: every
    job's first path under ``base``, the shards' options but for their shares."""
    bins, caps = _bins(sorted(groups, key=len, reverse=True), count, per_host)
    return _shards_of(bins, caps, paths, base, per_host)


def _shards_of(
    bins: Sequence[list[int]],
    caps: Sequence[int],
    paths: Sequence[str | None],
    base: Options,
    per_host: Sequence[int],
) -> list[Shard]:
    """One shard per bin of job positions: its share of ``--concurrency`` (within its
    ``caps``), of ``--per-host`` and of ``--max-overall-rate``."""
    count = len(bins)
    shares = split(base.concurrency, caps)
    shared = tuple(paths)
    rate = _overall_share(base.max_overall_rate, count)
    return [
        Shard(
            n,
            tuple(sorted(b)),
            base.replace(concurrency=c, per_host=p, max_overall_rate=rate),
            shared,
        )
        for n, (b, c, p) in enumerate(zip(bins, shares, per_host, strict=True))
    ]


def _overall_share(rate: int, shards: int) -> int:
    """Each shard's part of ``--max-overall-rate`` (0: none), at least a byte a second."""
    return max(1, rate // shards) if rate and shards else rate


def _bins(
    ordered: Sequence[list[int]], count: int, per_host: Sequence[int]
) -> tuple[list[list[int]], list[int]]:
    """Job positions per bin, each group in turn to the lightest bin, and how many
    connections each bin can use (its cap).  ``ordered``: largest group first."""
    if ordered and len(ordered[0]) == 1:  # one job each (most big batches): dealt in turn
        bins = [[group[0] for group in ordered[b::count]] for b in range(count)]
        return bins, [len(b) for b in bins]  # per_host is at least 1 in every bin
    bins = [[] for _ in range(count)]
    caps = [0] * count
    lightest_first = [(0, b) for b in range(count)]  # (jobs in bin, bin): a heap
    for group in ordered:
        size, lightest = lightest_first[0]
        heapq.heapreplace(lightest_first, (size + len(group), lightest))
        bins[lightest].extend(group)
        caps[lightest] += min(len(group), per_host[lightest])
    return bins, caps


def _groups(keys: Sequence[tuple[object, ...]]) -> list[list[int]]:
    """Job positions joined when they share a key (union-find); None joins nothing."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[object, int] = {}
    for i, job_keys in enumerate(keys):
        for key in job_keys:
            if key is None:
                continue
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(keys)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def split(total: int, caps: Sequence[int]) -> list[int]:
    """Share ``total`` connections: at least one each, none past a shard's cap while
    another shard can still use more, the rest evenly."""
    shares = [1] * len(caps)
    left = total - len(caps)
    while left > 0 and caps:
        wanting = [i for i, cap in enumerate(caps) if shares[i] < cap] or range(len(caps))
        for i in wanting[:left]:
            shares[i] += 1
            left -= 1
    return shares


# --- carrying jobs to a worker --------------------------------------------------------
def pack_jobs(jobs: Sequence[Job], stopped: Callable[[], bool]) -> list[bytes] | None:
    """``jobs`` pickled in chunks for another process, or None once ``stopped``.

    Pickling 100,000 jobs takes seconds; inside ``Process.start`` or
    ``Client.submit`` a stop could not interrupt it, so it happens here, a chunk
    at a time (and a list of bytes costs those calls nothing to pickle again).
    """
    packed = []
    for start in range(0, len(jobs), PACK_CHUNK):
        if stopped():
            return None
        packed.append(pickle.dumps(list(jobs[start : start + PACK_CHUNK]), pickle.HIGHEST_PROTOCOL))
    return packed


def unpack_jobs(packed: Sequence[bytes], stopped: Callable[[], bool]) -> list[Job] | None:
    """What ``pack_jobs`` packed, or None once ``stopped``."""
    jobs: list[Job] = []
    for chunk in packed:
        if stopped():
            return None
        jobs.extend(pickle.loads(chunk))
    return jobs


# --- the worker's side ---------------------------------------------------------------
def shard_engine(name: str) -> object:
    """The engine a shard runs: ``name`` if it is usable here, else ``asyncio``."""
    from . import get_engine

    if name in SHARDING:
        raise InputError(f"a shard cannot run the {name!r} engine; use an event-driven one")
    try:
        return get_engine(name)
    except (InputError, ImportError):
        return get_engine("asyncio")


def run_shard(
    jobs: Sequence[Job] | Iterator[Job],
    options: Options,
    inner: str,
    send: Callable[[Summary], None],
    interval: float = 0.2,
    stopped: Callable[[], bool] | None = None,
    began: Callable[[], None] | None = None,
    ids: Iterable[int] | None = None,
    paths: Iterable[str | None] | None = None,
    heeds: Collection[type] = REPORTS,
    keeps_endings: bool = True,
    on_stop: Callable[[], None] | None = None,
) -> list[Report]:
    """Download ``jobs``; ``send`` summaries meanwhile; return every ending.

    ``heeds``: the kinds of report sent home (the caller's ``Run.heeded``; endings always
    are): a quiet run's home hears no ``Started``, so 20,000 of them cross no pipe.

    Reports carry ``ids`` (one per job: the shard's ``indexes`` in the whole batch;
    by default the jobs' positions), so the merge has nothing to renumber.  ``paths``: the
    jobs' first paths, as the plan found them (``Shard.paths``), for the batch to claim.

    ``stopped`` is polled every ``interval``: once true, the run is asked to
    stop and the endings so far are returned.  A signal stop or an internal
    error is raised (``Run.raise_outcome``) after the part files are closed.
    ``began`` is called once the shard's run commits (its core's start is over and
    its files are about to be touched): until then a stopped shard has nothing to flush.

    ``jobs`` may be an iterator (a streamed shard, ``_streamed``; ``ids`` and ``paths``
    then too): the batch takes them as it needs them, and ``on_stop`` is called when the
    run stops, so a wait for more ends.  ``keeps_endings``: False returns no endings (a
    caller that has them from the summaries), so a shard of millions holds none.
    """
    if stopped is not None and stopped():  # before a batch start that cannot be interrupted
        return []
    outbox: deque[Any] = deque()  # the run hands its listener reports only
    run = _ShardRun(jobs, options, outbox.append, began, stopped, ids, paths, {*heeds, *ENDINGS})
    if on_stop is not None:
        run.on_stop(on_stop)
    engine = shard_engine(inner)
    reporter = _Reporter(run, outbox, send, stopped, keeps_endings)
    done = threading.Event()
    thread = threading.Thread(
        target=reporter.every, args=(done, interval), name="midair-shard-reporter", daemon=True
    )
    thread.start()
    try:
        with stop_on_signals(run):  # a worker process's main thread; elsewhere a no-op
            engine.run(run)  # type: ignore[attr-defined]
    finally:
        done.set()
        thread.join()
        # --save-cookies: the caller's run saves one jar, its shards' cookies merged in.
        reporter.flush(tuple(run.cookies.all()) if options.save_cookies else ())
    run.raise_outcome()
    return reporter.endings


class _ShardRun(Run):
    """A shard's ``Run`` that says when it commits, and looks for a stop right then.

    The look closes the gap between two polls of ``stopped``: whoever stops the
    shards sees ``began`` first, or the shard sees the stop before any file is
    touched (both go through the same scheduler, which serialises them).
    """

    def __init__(
        self,
        jobs: Sequence[Job] | Iterator[Job],
        options: Options,
        listener: Callable[[Any], None],
        began: Callable[[], None] | None,
        stopped: Callable[[], bool] | None,
        ids: Iterable[int] | None,
        paths: Iterable[str | None] | None,
        heeds: Collection[type],
    ) -> None:
        # Streamed jobs (an iterator) are taken as they come, not read whole.
        self._stream = jobs if isinstance(jobs, Iterator) else None
        given = [] if self._stream is not None else jobs
        super().__init__(
            given,
            options,
            listener=listener,
            ids=ids,
            paths=paths,
            listens_to=heeds,
            keeps_successes=False,  # the endings go home in summaries: none is kept here
        )
        self._began, self._stopped = began, stopped

    def intake(self) -> Iterator[Job]:
        return self._stream if self._stream is not None else super().intake()

    def commit(self) -> None:
        super().commit()
        if self._began is not None:
            self._began()
        if self._stopped is not None and not self.stopping and self._stopped():
            self.request_stop()


class _Reporter:
    """Drains the run's reports and samples its tracker, off the engine's thread."""

    def __init__(
        self,
        run: Run,
        outbox: deque[Any],
        send: Callable[[Summary], None],
        stopped: Callable[[], bool] | None,
        keeps_endings: bool = True,
    ) -> None:
        self.run, self.outbox, self.send, self.stopped = run, outbox, send, stopped
        self.written = 0
        self.endings: list[Report] = []
        self.keeps_endings = keeps_endings

    def every(self, done: threading.Event, interval: float) -> None:
        while not done.wait(interval):
            self.flush()
            if self.stopped is not None and not self.run.stopping and self.stopped():
                self.run.request_stop()

    def flush(self, cookies: tuple[Cookie, ...] = ()) -> None:
        reports: list[Report] = []
        while self.outbox:
            reports.append(self.outbox.popleft())
        # Sampled after the reports: a download ended above is no longer active here.
        tracker = self.run.tracker
        positions = {d: t.done for d, t in list(tracker.active.items())}
        written, self.written = tracker.bytes_done - self.written, tracker.bytes_done
        if self.keeps_endings:
            self.endings.extend(r for r in reports if type(r) in ENDINGS)
        if reports or written or positions or cookies:
            self.send(Summary(tuple(reports), written, positions, cookies))


# --- the merge -----------------------------------------------------------------------
class Merger:
    """Folds shard summaries into the caller's run, one ending per job.

    Shards report with the batch's ids already; each report is checked against
    the plan, so a job reported by a shard that does not hold it fails the run
    rather than ending a job twice or standing in for one left out.
    """

    def __init__(self, run: Run, shards: Sequence[Shard]) -> None:
        self.run = run
        self.shards = {shard.number: shard for shard in shards}
        self.owner: dict[int, int] = {}  # job -> the shard that runs it
        for shard in shards:
            self.owner.update(dict.fromkeys(shard.indexes, shard.number))
        self.ended: set[int] = set()

    @property
    def complete(self) -> bool:
        return len(self.ended) == len(self.run.jobs)

    def apply(self, number: int, summary: Summary) -> None:
        self.reports(number, summary.reports)
        self.run.tracker.add_progress(summary.written, summary.positions)
        if summary.cookies:
            self.run.cookies.add(summary.cookies)

    def reports(self, number: int, reports: Sequence[Report]) -> None:
        owner, ended, report_to = self.owner, self.ended, self.run.report
        for report in reports:
            ident = report.download
            if owner.get(ident) != number:
                self.stranger(number, ident)
                continue
            if ident in ended:
                continue  # a re-run shard repeating itself
            if type(report) in ENDINGS:
                ended.add(ident)
            report_to(report)

    def stranger(self, number: int, ident: int) -> None:
        """Shard ``number`` reported job ``ident``, which is not its: a bug, never a result."""
        reason = f"worker {number} reported job {ident}, which is not in its shard"
        self.run.fail(ShardError(reason))

    def ended_in(self, number: int) -> list[int]:
        """The jobs of shard ``number`` that have ended (what a re-run of it skips)."""
        return [ident for ident in self.shards[number].indexes if ident in self.ended]

    def lost(self, number: int, reason: str) -> None:
        """Fail every job of shard ``number`` that has not ended: ``reason`` says why."""
        for ident in self.shards[number].indexes:
            if ident not in self.ended:
                url = self.run.jobs[ident].url.text
                self.ended.add(ident)
                self.run.report(Failed(ident, url, NetworkError(url, reason)))
