"""The one object every engine drives: core + store + clock + reports.

The contract: carry out ``Connect``/``Send``/``Close`` in order; report
``connected``, ``received``, ``closed`` (EOF or a classified failure) and call
``timer`` when ``next_deadline`` passes; report nothing for a connection after
its ``Close``.  A ``Send`` only ever answers an event on its own connection
(its connect, or the end of the previous response), so a thread-per-connection
engine may send from the connection's own thread.

An engine's whole job is to turn ``Connect``/``Send``/``Close`` into socket
operations and to feed back what the sockets did.  Everything else — the file
actions, the store's answers, progress, results — is settled here, in the
same call, so no engine can get it subtly different.

One exception to "in the same call": publishing a finished file (verify,
fsync, rename) runs on a publisher thread, because an fsync can take a
millisecond and ten thousand of them must not stall the I/O loop.  While
publications are pending, ``next_deadline`` asks for a short poll, and
``timer`` hands their outcomes to the core — so engines need not know.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from ..core.actions import (
    Action,
    Checkpoint,
    ConnectionFailure,
    Discard,
    Failed,
    Finished,
    NetAction,
    Open,
    Prepare,
    Publish,
    Retrying,
    Started,
    Write,
)
from ..core.batch import Batch
from ..core.errors import DestinationError, DownloadError
from ..core.jobs import Job, Options
from ..core.progress import Tracker
from ..core.results import Results
from ..store import Store

Listener = Callable[[Action], None]
PUBLISH_POLL = 0.005  # seconds between looks for finished publications
_REPORTS = (Started, Retrying, Finished, Failed)
NET_ACTIONS: tuple[type, ...] = NetAction.__args__  # type: ignore[attr-defined]


class Session:
    """Drive one batch.  Not thread-safe: a threaded engine holds a lock around calls."""

    def __init__(self, jobs: Iterable[Job], options: Options, *,
                 listener: Listener | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 background_publish: bool = True) -> None:
        jobs = list(jobs)
        self.options = options
        self.jobs = jobs
        self.batch = Batch(jobs, options)
        self.store = Store(sockets=options.concurrency, fsync=options.fsync)
        self.tracker = Tracker(jobs=len(jobs))
        self.clock = clock
        self._listener = listener
        self.store.background = background_publish  # off for deterministic simulations
        self._poll_at: float | None = None  # when to look for finished publications

    def limit_connections(self, limit: int) -> None:
        """For engines that keep fewer connections in the air than ``concurrency``."""
        self.batch.limit_connections(limit)

    # --- the events an engine reports ----------------------------------------------
    def start(self) -> list[NetAction]:
        return self._carry_out(self.batch.start(self.clock()))

    def connected(self, conn: int) -> list[NetAction]:
        return self._carry_out(self.batch.connected(conn, self.clock()))

    def received(self, conn: int, data: bytes) -> list[NetAction]:
        return self._carry_out(self.batch.received(conn, data, self.clock()))

    def closed(self, conn: int, failure: ConnectionFailure | None = None) -> list[NetAction]:
        return self._carry_out(self.batch.closed(conn, self.clock(), failure))

    def timer(self) -> list[NetAction]:
        now = self.clock()
        actions: list[Action] = []
        for ident, error in self.store.collect():
            actions += self.batch.published(ident, now, error)
        self._poll_at = now + PUBLISH_POLL if self.store.pending else None
        return self._carry_out(actions + self.batch.timer(now))

    def next_deadline(self) -> float | None:
        """On the session's clock (``time.monotonic`` unless a test passes another)."""
        deadline = self.batch.next_deadline()
        if self._poll_at is not None:  # a fixed instant: engines compare it with the clock
            return self._poll_at if deadline is None else min(deadline, self._poll_at)
        return deadline

    @property
    def done(self) -> bool:
        return self.batch.done

    @property
    def results(self) -> Results:
        return self.tracker.results

    def report(self, action: Action) -> None:
        """Take a report made elsewhere (a shard's worker) as if this batch made it."""
        self.tracker.observe(action)
        if self._listener is not None:
            self._listener(action)

    def close(self) -> None:
        """Finish publications, flush and close part files; call on every exit path."""
        self.store.close()

    # --- carrying out the core's actions ---------------------------------------------
    def _carry_out(self, actions: list[Action]) -> list[NetAction]:
        net: list[NetAction] = []
        queue = deque(actions)
        broken: set[int] = set()  # downloads whose file failed in this call
        while queue:
            action = queue.popleft()
            kind = type(action)
            if kind in NET_ACTIONS:
                net.append(action)  # type: ignore[arg-type]
                continue
            self.tracker.observe(action)
            if kind in _REPORTS:
                if self._listener is not None:
                    self._listener(action)
                continue
            # After a file error only cleaning up is left to do for that download.
            if kind is Discard or action.download not in broken:  # type: ignore[union-attr]
                queue.extend(self._file_action(action, broken))
        return net

    def _file_action(self, action: Action, broken: set[int]) -> list[Action]:
        store, now = self.store, self.clock
        try:
            if type(action) is Write:
                store.write(action)
            elif type(action) is Open:
                store.open(action)
            elif type(action) is Checkpoint:
                store.checkpoint(action)
            elif type(action) is Prepare:
                try:
                    disk = store.prepare(action)
                except OSError as exc:
                    raise DestinationError(action.url, f"cannot read {action.path}: {exc}") from exc
                return self.batch.prepared(action.download, disk, now())
            elif type(action) is Publish:
                if not store.submit(action):  # published already: no thread, or a simulation
                    return self.batch.published(action.download, now())
                if self._poll_at is None:
                    self._poll_at = now() + PUBLISH_POLL
            elif type(action) is Discard:
                store.discard(action)
        except DownloadError as error:
            broken.add(action.download)  # type: ignore[union-attr]
            return self.batch.published(action.download, now(), error)  # type: ignore[union-attr]
        return []
