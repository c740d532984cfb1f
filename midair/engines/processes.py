"""``processes``: one event loop per core, hosts sharded across processes.

Shared-nothing, the way Seastar and GHC's multicore I/O manager scale: the
batch is cut into shards by origin (see ``_shards``), and each shard runs in
its own process with its own ``Run`` and event-driven engine (``epoll`` by
default, the cheapest per file: on 20,000 small files, 7% less CPU than
``reactor``; ``asyncio`` if the one asked for cannot load).  Nothing is shared
but the download directory.  Each child sends ``Summary`` records home over a
pipe; this process folds them into the caller's run, so displays and
results look the same as with a single-loop engine.

A list longer than ``WHOLE_LIST`` is not read whole: the children start at
once and the list is streamed into them as it is read (``_streamed``: each job
routed by its name family, sent in chunks while its shard has room), so the
parent and every child hold the jobs in the air, not the list.

Endings: a child that finishes sends ``done``; one whose run failed with an
internal error sends why, and that fails the whole run (``ShardError``); one
that dies without a word (killed, out of memory) is seen as the end of its
pipe.  In every case each job of its shard with no ending yet is failed, with a
message naming the worker, so ``run`` always returns with one result per job.
A stop request here (Ctrl-C, SIGTERM, an error) sends every child SIGTERM,
which stops its run the same way: part files are closed, so a re-run resumes.
A child also stops so when this process ends without a word (SIGKILL,
``os._exit``): an orphan would go on downloading (``_die_with_parent``).

Children start with ``fork`` when this process has one thread (cheap: no
re-import, no pickled jobs: a child inherits its shard's; see
``start_context`` for why it is safe), else with ``spawn``.  As with any
``spawn`` user, a script that calls midair at import time needs an
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from ..core.jobs import Job
from ..run import Run, Terminated
from ._common import Waker, collector_paused
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
from ._streamed import Feeder, Inbox, Ledger, Router, room, stream_options

_JOIN_TIMEOUT = 10.0
_START_SECONDS = 0.5  # a worker's start: no prctl until then (see _die_with_parent)
# Up to this many jobs a list is read whole and planned (``plan_shards``: hosts kept
# together where they can be); a longer one is streamed (``_streamed``), its first request
# out at once and its memory flat.  Reading this many ahead takes ~0.2 s.
WHOLE_LIST = 50_000


class ProcessesEngine:
    name = "processes"

    def __init__(
        self,
        workers: int | None = None,
        inner: str = "epoll",
        start_method: str = "auto",
        interval: float = 0.2,
        whole_list: int = WHOLE_LIST,
    ) -> None:
        if start_method not in ("auto", "spawn", "forkserver"):
            raise ValueError("start_method must be 'auto', 'spawn' or 'forkserver'")
        self.workers = workers or len(os.sched_getaffinity(0))
        self.inner = inner
        shard_engine(inner)  # a bad name fails here, not in every child
        self.start_method = start_method
        self.interval = interval
        self.whole_list = whole_list

    def run(self, run: Run) -> None:
        if run.head(self.whole_list)[1]:
            self.run_planned(run)
        else:
            self.run_streamed(run)

    def run_streamed(self, run: Run) -> None:
        """A long list: the workers start at once, and take their jobs as it is read."""
        options = stream_options(run.options, self.workers)
        shards = [Shard(n, (), shard_options) for n, shard_options in enumerate(options)]
        children = _Children(start_context(self.start_method), shards, run)
        ledger = Ledger(run, len(shards))
        run.commit()  # children about to write files: from here a signal only stops
        with children.running():
            children.start_streamed(self.inner, self.interval)
            rooms = [room(shard_options) for shard_options in options]
            feeder = Feeder(run, Router(run.options, len(shards)), ledger, rooms, children.send)
            children.wait(ledger, feeder.feed)
            while not run.stopping and feeder.feed():  # every worker lost: fail the rest
                pass
            if not (run.stopping or ledger.complete):  # a job no report ended: a bug
                run.fail(ShardError(f"{sum(map(len, ledger.open))} jobs were never ended"))

    def run_planned(self, run: Run) -> None:
        """A list read whole: planned (``plan_shards``), each child given its shard."""
        with collector_paused():  # the list read whole (unless auto read it), then planned
            shards = plan_shards(run.jobs, run.options, self.workers)
        children = _Children(start_context(self.start_method), shards, run)
        run.commit()  # children about to write files: from here a signal only stops
        # The jobs and the plan live as long as the run: out of the collector's way, full
        # collections while reports are merged do not walk them (nor a child's copy of them).
        gc.freeze()
        merger = Merger(run, shards)
        try:
            with children.running():
                children.start(run.jobs, self.inner, self.interval)
                children.wait(merger)
                if not (run.stopping or merger.complete):  # a plan that left jobs out: a bug
                    missing = len(run.jobs) - len(merger.ended)
                    run.fail(ShardError(f"{missing} jobs were in no shard"))
        finally:
            gc.unfreeze()


def start_context(method: str) -> Any:
    """The multiprocessing context children start from: ``method``, or the cheapest safe one.

    ``fork`` copies only the calling thread.  Its hazard is state another
    thread held at that instant (a lock, a half-written buffer); with one
    thread there is none, and no event loop runs here (children make their
    own).  The child ends with ``os._exit``, so it flushes none of the buffers
    it inherited.  With other threads (a progress display), ``spawn``; not
    ``forkserver``, whose server keeps the environment of its first use, so a
    later run's proxy settings (or a test's injected fault) would not reach it.
    """
    if method != "auto":
        return multiprocessing.get_context(method)
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class _Children:
    """The worker processes and the parent's ends of their pipes."""

    def __init__(self, context: Any, shards: list[Shard], run: Run) -> None:
        self.context = context
        self.shards = shards
        self.run = run
        self.waker = Waker()  # a stop request interrupts the wait below
        run.on_stop(self.waker.set)
        self.processes: dict[int, BaseProcess] = {}
        self.pipes: dict[Connection, int] = {}  # reader -> shard number
        self.inboxes: dict[int, Connection] = {}  # streamed: shard number -> where its jobs go
        self.ends: dict[int, str] = {}  # shard number -> how it ended, once known
        # Nothing is ever sent on it: this process holds its only writer, so its end
        # (however it ends) is the end of the children's reader.
        self.lifeline, self.lifeline_writer = context.Pipe(duplex=False)

    def start(self, jobs: list[Job], inner: str, interval: float) -> None:
        forking = self.context.get_start_method() == "fork"
        heeds = self.run.heeded()
        for shard in self.shards:
            carried = self.carry([jobs[i] for i in shard.indexes], forking)
            if carried is None:  # stopped meanwhile: no more children
                return
            if not forking:  # the batch's paths would be pickled whole: the child names its own
                shard = replace(shard, paths=None)
            reader, writer = self.context.Pipe(duplex=False)
            process = self.context.Process(
                target=_child,
                name=f"midair-shard-{shard.number}",
                daemon=False,
                args=(
                    carried,
                    forking,
                    shard,
                    inner,
                    interval,
                    writer,
                    heeds,
                    self.lifeline_ends(),
                ),
            )
            process.start()
            writer.close()  # the child holds the only writer: its death ends the pipe
            self.processes[shard.number] = process
            self.pipes[reader] = shard.number

    def start_streamed(self, inner: str, interval: float) -> None:
        """One child per shard, each to be sent its jobs (``send``) on its own pipe."""
        heeds = self.run.heeded()
        for shard in self.shards:
            mine, its = self.context.Pipe(duplex=True)
            process = self.context.Process(
                target=_child,
                name=f"midair-shard-{shard.number}",
                daemon=False,
                args=(None, False, shard, inner, interval, its, heeds, self.lifeline_ends()),
            )
            process.start()
            its.close()  # the child holds the only other end: its death ends the pipe
            self.processes[shard.number] = process
            self.pipes[mine] = shard.number
            self.inboxes[shard.number] = mine

    def send(self, number: int, packed: bytes) -> None:
        """Send shard ``number`` a chunk of jobs (or the end of the list), unless it ended:
        then its jobs are failed (``Ledger.lost``) when its end is read."""
        conn = self.inboxes.get(number)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(packed)

    def lifeline_ends(self) -> tuple[Connection, Connection | None]:
        """The reader, and the writer a forked child inherits (it closes that copy at once;
        a spawned child gets none), as ``_die_with_parent`` takes them."""
        forking = self.context.get_start_method() == "fork"
        return self.lifeline, self.lifeline_writer if forking else None

    def carry(self, jobs: list[Job], forking: bool) -> list[Job] | list[bytes] | None:
        """A shard's jobs as its child gets them: as they are when it forks (it inherits
        this memory), else pickled in chunks a stop can interrupt; None once stopped."""
        if forking:
            return None if self.run.stopping else jobs
        return pack_jobs(jobs, lambda: self.run.stopping)

    def wait(self, merger: Merger | Ledger, feed: Callable[[], bool] | None = None) -> None:
        """Until every pipe ended; on a stop, SIGTERM the children and give them a while.
        ``feed``: sends the children more jobs; true while it has more to send at once."""
        watched: list[Any] = [self.waker]
        while self.pipes:
            if self.run.stopping and watched:
                watched = []
                self.terminate()
            busy = feed is not None and not self.run.stopping and feed()
            timeout = 0 if busy else None if watched else _JOIN_TIMEOUT
            ready = wait([*self.pipes, *watched], timeout)
            if not ready and not busy:
                return  # stopped children that did not end: ``reap`` kills them
            for reader in ready:
                if reader in self.pipes:  # not the waker
                    self.receive(reader, merger)

    def receive(self, reader: Connection, merger: Merger | Ledger) -> None:
        number = self.pipes[reader]
        try:
            kind, body = reader.recv()
        except (EOFError, OSError):
            kind, body = "eof", None
        if kind == "summary":
            merger.apply(number, body)
            return
        del self.pipes[reader]
        self.inboxes.pop(number, None)
        reader.close()
        if kind == "eof":
            body = self.death(number)
        elif kind == "crashed":
            self.run.fail(ShardError(f"worker {number} {body}"))
        if not self.run.stopping:  # a stopped run ends without a result for every job
            merger.lost(number, f"worker {number} {body}")

    def death(self, number: int) -> str:
        process = self.processes[number]
        process.join(_JOIN_TIMEOUT)
        code = process.exitcode
        if code is not None and code < 0:
            return f"died (killed by {signal.Signals(-code).name})"
        return f"died (exit status {code})"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """While the block drives the children: a bug in it stops every child, then goes
        through; they are reaped however it ends."""
        try:
            yield
        except BaseException:
            self.terminate()
            raise
        finally:
            self.reap()

    def terminate(self) -> None:
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()

    def reap(self) -> None:
        for process in self.processes.values():
            process.join(_JOIN_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
        for reader in self.pipes:
            reader.close()
        self.lifeline.close()
        self.lifeline_writer.close()
        self.waker.close()


# --- in the child --------------------------------------------------------------------
def _child(
    carried: list[Any] | None,
    forked: bool,
    shard: Shard,
    inner: str,
    interval: float,
    writer: Connection,
    heeds: frozenset[type],
    lifeline: tuple[Connection, Connection | None],
) -> None:
    """One shard; SIGINT and SIGTERM stop its run (``run_shard``), which flushes its files.
    ``carried`` None: a streamed shard, whose jobs come on ``writer`` as the parent reads them."""
    # A forked child inherits the parent's handlers, which would ask the parent's run
    # (a copy, here) to stop: start from a fresh process's handlers, as ``spawn`` does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(*lifeline)

    def send(summary: Summary) -> None:
        writer.send(("summary", summary))

    try:
        run_shard(
            send=send,
            inner=inner,
            interval=interval,
            heeds=heeds,
            keeps_endings=False,
            **_shard_jobs(carried, forked, shard, writer),
        )
        writer.send(("done", "ended without finishing its jobs"))
    except KeyboardInterrupt:
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    except Exception as exc:
        writer.send(("crashed", f"crashed: {type(exc).__name__}: {exc}"))
    finally:
        gc.freeze()  # the process ends next: skip a last full collection over every job


def _shard_jobs(
    carried: list[Any] | None, forked: bool, shard: Shard, conn: Connection
) -> dict[str, Any]:
    """``run_shard``'s jobs, ids, paths, options, and what to call on a stop: the shard's
    own, or (streamed) what comes on ``conn``."""
    if carried is None:
        inbox = Inbox(conn)
        ids, jobs, paths = inbox.columns()
        return {
            "jobs": jobs,
            "options": shard.options,
            "ids": ids,
            "paths": paths,
            "on_stop": inbox.stop,
        }
    # A SIGTERM while unpacking ends the process.
    given = carried if forked else unpack_jobs(carried, lambda: False) or []
    return {
        "jobs": given,
        "options": shard.options,
        "ids": shard.indexes,
        "paths": shard.own_paths(),
    }


def _die_with_parent(reader: Connection, inherited: Connection | None) -> None:
    """SIGTERM this worker (a stop, as the parent's own stop request) once the parent ends.

    A thread waits on the lifeline: the parent never writes to it, so it reads its end
    when the parent's copy of the writer closes, however the parent ended (already, too).
    It signals the main thread itself: a process-wide signal might be handled by this
    thread, and the main thread, blocked in its event loop's wait, would not notice until
    its next timer.  On Linux, ``PR_SET_PDEATHSIG`` has the kernel send SIGTERM as well
    (should another process hold a copy of the writer), asked for once the worker's start
    is over: its ``ctypes`` import (~1.3 ms) would delay the worker's first request.
    """
    if inherited is not None:
        inherited.close()  # a forked child's copy: only the parent's may keep it open
    watcher = threading.Thread(
        target=_watch_lifeline,
        args=(reader, threading.get_ident()),
        name="midair-lifeline",
        daemon=True,
    )
    watcher.start()


def _watch_lifeline(reader: Connection, main: int) -> None:
    with contextlib.suppress(EOFError, OSError):
        if not reader.poll(_START_SECONDS):
            _ask_for_parent_death_signal()
        reader.recv_bytes()
    signal.pthread_kill(main, signal.SIGTERM)


def _ask_for_parent_death_signal() -> None:
    """Linux: SIGTERM from the kernel when the parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # by now the store has usually loaded it (statfs)

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
