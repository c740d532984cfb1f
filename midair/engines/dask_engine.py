"""``dask``: host shards as tasks on a ``dask.distributed`` cluster.

"Use ten different computers": the same plan as ``processes`` (``_shards``),
with each shard one task that runs an event-driven engine inside a dask worker
and writes straight into the download directory — which must therefore be a
filesystem every worker sees at the same path (it is made absolute here).

Progress streams home through a ``distributed.Queue`` (pickled ``Summary``
records, every ``interval`` seconds), and each task also returns its shard's
endings, which are merged when it completes: the stream is for displays, the
return value is what the results rest on, so a dropped message costs a late
progress bar, never a result.

A worker that dies mid-shard is the scheduler's to handle: it runs the task
again on another worker (up to ``distributed.scheduler.allowed-failures``
times; ``retries`` covers a task that raised).  The re-run knows it is one (the
shard's ``-ran-`` event is set) and asks home for the jobs its shard has ended
(``_RESUME``): what the merge took, which is what the run's journal recorded, as
the journal hears the same reports.  It runs only the rest, so a lost worker's
hosts resume elsewhere without fetching a file again once it was reported done;
a partial file resumes from its part.  (Endings the dead worker had not sent
home yet are run again; the store finds their files.)  The host stays whole: a
re-run is the same task, which the scheduler never runs twice at once, so
``--per-host`` holds across the cluster.  A shard that still cannot finish fails
its remaining jobs, naming the shard.  A shard whose run had an internal error
returns it (a re-run would only repeat the bug), and that fails the whole run.

A stop request (Ctrl-C, SIGTERM, an error), seen within ``interval``, sets a
``distributed.Event`` the shards poll; each stops its run, closes its part
files and returns.  Only the shards that said they began (their run
committed) are waited for: one still inside its core's start, which a worker
thread cannot interrupt, has no file yet.  Its worker would finish that start
before closing, seconds later, so a local cluster closes its workers with a
short grace after a stop, then kills those still busy.  So is a shard whose flush
outlasts the wait (its store's last publication held up by a slow sync): the
second a stop may take wins over a complete flush, and what the kill leaves —
complete parts never renamed, missing control files — a re-run resumes or fetches
again; a final name only ever comes from a rename of a verified part.

Without ``scheduler`` a ``LocalCluster`` of ``workers`` processes is started
and closed here; with an address, the engine only connects a ``Client``.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..core.actions import Report
from ..core.jobs import Job, Options
from ..run import Run
from ._shards import (
    Merger,
    Shard,
    ShardError,
    Summary,
    pack_jobs,
    plan_shards,
    run_shard,
    shard_engine,
    unpack_jobs,
)

# A stop must end the run within a second (the engine contract, tests/test_contract.py):
# it is seen here within ``interval`` (0.2 s), then the shards that began get
# ``_STOP_WAIT`` to see it (within their own ``interval``) and flush their files (ms:
# 0.1-0.3 s from the signal to every shard returned, measured), then the local
# cluster's workers ``_CLOSE_GRACE`` to close before those still busy are killed, and
# the teardown takes ~0.05 s.  A shard killed mid-flush (its store's close waiting on a
# sync that a loaded disk stretches) leaves part files that are complete but unrenamed
# or control files that lag its last writes: never a partial file under a final name,
# and a re-run resumes or fetches again (tests/test_dask_stop.py).  0.6 s here made
# such a stop take 0.9-1.0 s.
_STOP_WAIT = 0.4
_CLOSE_GRACE = 0.2
# A worker in these states still has its client: a summary it cannot send is a fault.
_SENDING = ("running", "paused")
# What a re-run shard sends home first, with a token naming the answer it waits for.
_RESUME = "resume"


class DaskEngine:
    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int = 2,
        inner: str = "reactor",
        shards: int | None = None,
        interval: float = 0.2,
        retries: int = 2,
    ) -> None:
        self.scheduler = scheduler
        self.workers = workers
        self.inner = inner
        shard_engine(inner)  # a bad name fails here, not on every worker
        self.shards = shards  # default: one per worker thread of the cluster
        self.interval = interval
        self.retries = retries

    def run(self, run: Run) -> None:
        from distributed import Queue

        with self._client(run) as client:
            shards = plan_shards(
                run.jobs, run.options, self.shards or sum(client.nthreads().values())
            )
            merger = Merger(run, shards)
            queue = Queue(f"midair-{uuid.uuid4().hex}", client=client)
            run.commit()  # shards about to write files: from here a signal only stops
            futures = self._submit(client, run, shards, queue.name)
            home = _Home(queue, merger, client)
            try:
                _follow(futures, home, self.interval)
            finally:
                if futures and (run.stopping or not all(f.done() for f in futures)):
                    _stop(client, queue.name, futures, home)  # shards flush files and end
                elif futures:  # a lost result's re-run, still running, ends at once
                    _stop_event(client, queue.name).set()
                queue.close()

    def _submit(self, client: Any, run: Run, shards: list[Shard], name: str) -> dict[Any, int]:
        """One task per shard (until a stop): future -> shard number."""
        futures = {}
        for shard in shards:
            packed = pack_jobs([run.jobs[i] for i in shard.indexes], lambda: run.stopping)
            if packed is None:
                break
            future = client.submit(
                _shard_task,
                packed,
                shard.options,
                self.inner,
                name,
                shard.number,
                self.interval,
                shard.indexes,
                pure=False,
                retries=self.retries,
                key=f"{name}-shard-{shard.number}",
            )
            futures[future] = shard.number
        return futures

    @contextlib.contextmanager
    def _client(self, run: Run) -> Iterator[Any]:
        from distributed import Client

        if self.scheduler is not None:
            with Client(self.scheduler) as client:
                yield client
            return
        with local_cluster(self.workers) as cluster, Client(cluster) as client:
            try:
                yield client
            finally:
                if run.stopping:
                    _close_workers_now(cluster)


def local_cluster(workers: int) -> Any:
    """A ``LocalCluster`` of ``workers`` single-threaded processes, no dashboard.

    The scheduler's small HTTP server (health, metrics) still listens: on a free
    port, not on 8787, which another cluster may hold.  Each worker process
    ignores SIGINT and SIGTERM (``dask_setup``, run there as a preload): a Ctrl-C
    at the terminal, or a supervisor's SIGTERM, reaches the whole process group,
    and a worker that died of it would take its shard down without closing the
    part files (and its nanny would start another, slowing the stop past a
    second); the engine stops the shards itself, and its nanny still kills a
    stuck worker with SIGKILL.  (Ignoring them here while the workers start
    would lose a signal meant for this process.)
    """
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        preload=[__name__],
        scheduler_kwargs={"dashboard_address": ":0"},
    )


def dask_setup(worker: Any) -> None:
    """In each worker process of ``local_cluster``, on its main thread: ignore SIGINT
    and SIGTERM (the engine stops its shards)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _close_workers_now(cluster: Any) -> None:
    """Close every worker of ``cluster``, killing it after ``_CLOSE_GRACE`` if still busy.

    Closing the cluster as usual waits for each worker's running task, and a
    shard inside its core's start takes seconds more; it has nothing to flush.
    """
    import asyncio

    async def close_all() -> None:
        workers = list(cluster.workers.values())
        await asyncio.gather(*(w.close(timeout=_CLOSE_GRACE) for w in workers))

    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    nanny.setLevel(logging.ERROR)  # "still alive after 0.2 seconds, killing" is the intent
    try:
        with contextlib.suppress(Exception):  # the cluster's own close comes next anyway
            cluster.sync(close_all)
    finally:
        nanny.setLevel(level)


class _Home:
    """What the shards send home: summaries for the merge, which shards began, and
    re-run shards asking which of their jobs have ended."""

    def __init__(self, queue: Any, merger: Merger, client: Any) -> None:
        self.queue, self.merger, self.client = queue, merger, client
        self.began: set[int] = set()

    def drain(self) -> None:
        for item in self.queue.get(batch=True):
            number, summary = pickle.loads(item)
            if summary is None:
                self.began.add(number)
            elif isinstance(summary, tuple):  # (_RESUME, token)
                self.answer(number, summary[1])
            else:
                self.merger.apply(number, summary)

    def answer(self, number: int, token: str) -> None:
        """Tell a re-run of shard ``number`` the jobs of its that have ended.  The queue
        keeps order, so every summary its dead run sent is merged already."""
        from distributed import Event, Variable

        name = _answer_name(self.queue.name, token)
        Variable(name, client=self.client).set(self.merger.ended_in(number))
        Event(name, client=self.client).set()


def _follow(futures: dict[Any, int], home: _Home, interval: float) -> None:
    """Merge streamed summaries until every shard's task has ended, then its endings."""
    from distributed import wait

    merger = home.merger
    pending = dict(futures)
    while pending and not merger.run.stopping:
        with contextlib.suppress(TimeoutError):
            wait(list(pending), timeout=interval, return_when="FIRST_COMPLETED")
        finished = [(f, n) for f, n in pending.items() if f.done()]
        home.drain()  # after looking: all a finished shard sent before returning is in
        for future, number in finished:
            del pending[future]
            if future.status == "finished":
                try:
                    outcome = _result(future, home, interval)
                except Exception as exc:  # lost with its worker, then failed
                    _failed(merger, number, exc)
                    continue
                if outcome is None:
                    return  # stopping
                endings, error = outcome
                merger.reports(number, endings)
                if error is not None:
                    merger.run.fail(ShardError(f"dask shard {number} crashed: {error}"))
                merger.lost(number, f"dask shard {number} ended without finishing its jobs")
            else:
                _failed(merger, number, future.exception())


def _result(future: Any, home: _Home, interval: float) -> Any:
    """A finished shard's return value, or None once the run is stopping.  Home is drained
    meanwhile: a result held by a worker that dies before handing it over is computed
    again, by a re-run that waits for home's answer to ``_RESUME``."""
    while not home.merger.run.stopping:
        with contextlib.suppress(TimeoutError):
            return future.result(timeout=interval)
        home.drain()
    return None


def _failed(merger: Merger, number: int, error: BaseException) -> None:
    """A lost worker fails the shard's jobs; any other exception of its task, the run."""
    from distributed import KilledWorker

    reason = f"dask shard {number} failed: {_describe(error)}"
    if not isinstance(error, KilledWorker):
        merger.run.fail(ShardError(reason))
    merger.lost(number, reason)


def _stop(client: Any, name: str, futures: dict[Any, int], home: _Home) -> None:
    """Tell the shards to stop; wait for those with files open to flush them."""
    from distributed import wait

    _stop_event(client, name).set()
    home.drain()  # after the stop is set: a shard that begins later sees the stop
    flushing = [f for f, number in futures.items() if number in home.began]
    if flushing:
        with contextlib.suppress(Exception):
            wait(flushing, timeout=_STOP_WAIT)
    client.cancel(list(futures))


def _stop_event(client: Any, name: str) -> Any:
    from distributed import Event

    return Event(f"{name}-stop", client=client)


def _answer_name(queue_name: str, token: str) -> str:
    return f"{queue_name}-ended-{token}"


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# --- on a dask worker ----------------------------------------------------------------
def _shard_task(
    packed: list[bytes],
    options: Options,
    inner: str,
    queue_name: str,
    number: int,
    interval: float,
    ids: tuple[int, ...],
) -> tuple[list[Report], str | None]:
    """The shard's endings, and its internal error if it had one: returned, not raised,
    because dask re-runs a task that raised, and a bug would only happen again."""
    from distributed import Event, Queue, get_worker

    queue = Queue(queue_name)
    stop = Event(f"{queue_name}-stop")
    worker = get_worker()

    def send(summary: Summary | tuple[str, str] | None) -> None:
        try:
            queue.put(pickle.dumps((number, summary)))
        except Exception:
            if worker.status.value in _SENDING:
                raise
            # The worker is closing after a stop's grace: nobody is listening any more,
            # and a traceback from the reporter thread would only litter the terminal.

    try:
        jobs = unpack_jobs(packed, stop.is_set)
        if jobs is not None:
            jobs, ids = _still_to_run(jobs, ids, queue_name, number, send, stop.is_set, interval)
        if not jobs:  # stopped, or a re-run whose every job had ended
            return [], None
        endings = run_shard(
            jobs,
            options,
            inner,
            send,
            interval,
            stopped=stop.is_set,
            began=lambda: send(None),
            ids=ids,
        )
        return endings, None
    except Exception as exc:
        return [], f"{type(exc).__name__}: {exc}"
    finally:
        queue.close()


def _still_to_run(
    jobs: list[Job],
    ids: tuple[int, ...],
    queue_name: str,
    number: int,
    send: Callable[[Any], None],
    stopped: Callable[[], bool],
    interval: float,
) -> tuple[list[Job], tuple[int, ...]]:
    """``jobs`` (and their ``ids``) but those an earlier run of this task ended; none
    once ``stopped``."""
    ended = _ended_before(queue_name, number, send, stopped, interval)
    if ended is None:
        return [], ()
    return _without(jobs, ids, ended)


def _ended_before(
    queue_name: str,
    number: int,
    send: Callable[[Any], None],
    stopped: Callable[[], bool],
    interval: float,
) -> frozenset[int] | None:
    """The shard's jobs that ended in an earlier run of this task (a lost worker's): none
    on its first run; else home's answer to ``_RESUME``, or None once ``stopped``."""
    from distributed import Event, Variable

    ran = Event(f"{queue_name}-ran-{number}")
    if not ran.is_set():
        ran.set()
        return frozenset()
    token = uuid.uuid4().hex
    send((_RESUME, token))
    name = _answer_name(queue_name, token)
    answered = Event(name)
    while not stopped():
        if answered.wait(timeout=interval):  # an Event, not Variable.get's timeout,
            answer = Variable(name)  # which logs a traceback on the scheduler
            ended = frozenset(answer.get())
            answer.delete()
            return ended
    return None


def _without(
    jobs: list[Job], ids: tuple[int, ...], ended: frozenset[int]
) -> tuple[list[Job], tuple[int, ...]]:
    """``jobs`` and their ``ids`` but those in ``ended``."""
    if not ended:
        return jobs, ids
    kept = [(job, i) for job, i in zip(jobs, ids, strict=True) if i not in ended]
    return [job for job, _ in kept], tuple(i for _, i in kept)
