"""The one object every single-loop engine drives: one Batch and one Store for a Run.

The contract: carry out ``Connect``/``Send``/``Close`` in order; report
``connected``, ``received``, ``closed`` (EOF or a classified failure) and call
``timer`` when ``due()``; report nothing for a connection after its ``Close``;
end promptly once ``done`` and call ``close()`` on every exit path.  Under a
rate limit (core/rate.py), read nothing from a connection between its ``Hold``
and its ``Release``, and at most ``read_size`` bytes at once.  A ``Send`` only
ever answers an event on its own connection (its connect, or the end of the
previous response), so a thread-per-connection engine may send from the
connection's own thread — except under ``--host-delay``, when ``timer`` sends a
request whose turn has come.

An engine's whole job is to turn ``Connect``/``Send``/``Close`` into socket
operations and to feed back what the sockets did.  Everything else — the file
actions, the store's answers, progress, results — is settled here, in the
same call, so no engine can get it subtly different.  So is failure: every
entry point is ``_guarded``, so an exception from the core, the store or a
listener records an internal error on the run and stops it; no engine sees it.

Finished files are published (verified, made durable, renamed) in groups: a
``Publish`` makes ``timer`` due at once, so the engine calls it after the rest
of its loop iteration, and ``timer`` has the store publish that iteration's
files together — on the store's publisher thread where they must wait for
stable storage (an fsync can take a millisecond, and ten thousand of them must
not stall the I/O loop), else right there.  While publications are pending,
``next_deadline`` asks for a short poll, and ``timer`` hands their outcomes to
the core — so engines need not know.

A batch starts transferring before every file is prepared, and before its
list is read: the batch takes its jobs a window at a time (``Batch.take_jobs``,
a few thousand), and ``start`` has it claim the first window's names and
prepare the first files (two steps' worth).  While some are left unprepared,
or the batch wants its next window (fewer than a window's jobs unended),
``timer`` is due at once and takes the next step: the next window, named after
the store's survey of its new directories (``Store.survey``: one listing per
directory, a tag read per file no job claims by its own name), then the next
``Prepare``s (``Batch.prepare_more``).  A window's names are settled against
every name claimed before, so duplicates are numbered before any of its files
is touched; a download is only queued for a connection once its ``Prepare``
is answered.  A step is at least one ``Prepare`` per connection: a connection
finishes at most one file per event, so the prepared downloads never run out
while some are left.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable

from .core.actions import (
    Action,
    Checkpoint,
    Close,
    Connect,
    ConnectionFailure,
    Discard,
    Hold,
    NetAction,
    Open,
    Prepare,
    Publish,
    Rejected,
    Release,
    Resolve,
    Save,
    Send,
    Started,
    StartTls,
    Write,
)
from .core.batch import Batch
from .core.errors import DestinationError, DownloadError
from .core.http import Chunk
from .core.jobs import Options
from .run import REPORTS, Run
from .spool import claims_kept
from .store import Store

PUBLISH_POLL = 0.005  # seconds between looks for finished publications
PREPARE_STEP = 256  # least files prepared per timer call while some wait (~1 ms of work)
SEARCH_STEP = 2048  # list lines read ahead per idle timer call (~10 ms of work)
YOUNG_OBJECTS = 10_000  # the collector's first threshold during a run (see ``_freeze``)
SEARCH_SHARE = 4  # a search step, then 3 times its length for the transfers
TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _Event = TypeVar("_Event", bound=Callable[..., Any])
    _Step = Callable[[Any], list[Action] | None]  # carries out one action; may answer with more


def _guarded(nothing: Callable[[], object] = list) -> Callable[[_Event], _Event]:
    """The one place an engine's call into the session can fail: record it, stop, and answer
    ``nothing()`` (no actions; 0 bytes to splice), as once the session is done."""

    def guard(event: _Event) -> _Event:
        @functools.wraps(event)
        def guarded(self: Session, *args: Any) -> object:
            if self.run.stops or self.batch.done:  # ``done``, without a call: every event asks
                return nothing()
            try:
                return event(self, *args)
            except Exception as exc:  # a bug in the core, the store or an engine's glue
                self.run.fail(exc)
                return nothing()

        return guarded  # type: ignore[return-value]

    return guard


def _unheeded(action: Action) -> None:
    """A report neither the tracker nor the listener takes (a quiet run's ``Started``)."""


class Session:
    """Drive one batch.  Not thread-safe: a threaded engine holds a lock around calls."""

    def __init__(
        self,
        run: Run,
        *,
        batch: Batch | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run = run
        self.options: Options = run.options
        self.cookies = run.cookies
        self.batch = batch if batch is not None else self._batch(run, clock)
        self.store = (
            store
            if store is not None
            else Store(sockets=run.options.concurrency, fsync=run.options.fsync)
        )
        self.clock = clock
        self._poll_at: float | None = None  # when to look for finished publications
        self._search_at = 0.0  # when the intake may next read ahead (``_search``)
        self._net: list[NetAction] = []  # what the current call hands the engine
        self._broken: set[int] = set()  # downloads whose file failed in the current call
        self._froze = False  # ``start`` moved the batch out of the collector's generations
        self._thresholds: tuple[int, ...] = gc.get_threshold()  # the caller's, for ``close``
        self._handlers = self._dispatch_table()

    def _batch(self, run: Run, clock: Callable[[], float]) -> Batch:
        epoch = time.time() - clock()  # the wall clock, for the core's one use of it
        return Batch(
            run.intake(),
            run.options,
            ids=run.ids,
            paths=run.paths,
            cookies=self.cookies,
            epoch=epoch,
            starts=run.heeds(Started),  # no Started made for a quiet run
            claims_kept=claims_kept(run.spool),  # on disk past spool.LIMIT names
        )

    @property
    def read_size(self) -> int | None:
        """The most bytes to read at once from a connection, under a rate limit (None: no
        limit); see core/rate.py."""
        return self.batch.read_size

    def limit_connections(self, limit: int) -> None:
        """For engines that keep fewer connections in the air than ``concurrency``."""
        self.batch.limit_connections(limit)

    # --- the events an engine reports ----------------------------------------------
    @_guarded()
    def start(self) -> list[NetAction]:
        now = self.clock()
        owners = self.store.survey(*self.batch.to_survey())  # which URL made which file
        actions = self.batch.start(now, 2 * self._prepare_step(), owners)  # a step ahead
        self.run.commit()  # from here on the store acts: signals only request a stop
        self._freeze()
        self._schedule(now)
        return self._carry_out(actions)

    @_guarded()
    def connected(self, conn: int, protocol: str | None = None) -> list[NetAction]:
        """``protocol``: what TLS negotiated by ALPN, None on plain TCP (see Batch)."""
        return self._carry_out(self.batch.connected(conn, self.clock(), protocol))

    @_guarded()
    def received(self, conn: int, data: Chunk) -> list[NetAction]:
        return self._carry_out(self.batch.received(conn, data, self.clock()))

    @_guarded()
    def resolved(self, conn: int, address: str | None, reason: str = "") -> list[NetAction]:
        """The engine's answer to ``Resolve``: the origin's address, or why there is none."""
        return self._carry_out(self.batch.resolved(conn, address, self.clock(), reason))

    @_guarded(int)
    def pipeable(self, conn: int) -> int:
        """Body bytes the engine may move into a pipe and report as ``Piped`` (see Batch)."""
        return self.batch.pipeable(conn)

    @_guarded()
    def closed(self, conn: int, failure: ConnectionFailure | None = None) -> list[NetAction]:
        return self._carry_out(self.batch.closed(conn, self.clock(), failure))

    @_guarded()
    def timer(self) -> list[NetAction]:
        now = self.clock()
        actions: list[Action] = []
        for ident, error in self.store.collect():
            actions += self.batch.published(ident, now, error)
        if self.batch.wants_jobs:  # the next window: named after the store's survey
            actions += self.batch.name_jobs(self.store.survey(*self.batch.take_jobs()), now)
        if self.batch.unprepared:
            actions += self.batch.prepare_more(self._prepare_step(), now)
            if not self.batch.unprepared:
                self._freeze()  # the downloads made since start: the batch is whole now
        elif self._searching and now >= self._search_at:  # read on for other hosts' jobs
            self._search(now)
        self._schedule(now)
        return self._carry_out(actions + self.batch.timer(now))

    def _schedule(self, now: float) -> None:
        """When ``timer`` is due on the session's own account: at once while files wait to
        be prepared (it takes the next step), soon while publications are pending."""
        if self.batch.unprepared or self.batch.wants_jobs:
            self._poll_at = now
        elif self._searching:
            self._poll_at = max(now, self._search_at)
        else:
            self._poll_at = now + PUBLISH_POLL if self.store.pending else None

    @property
    def _searching(self) -> bool:
        """Whether the run's intake reads ahead for other hosts' jobs (``Fair.searching``):
        while connections are left unused for want of them."""
        fair, batch = self.run.fair, self.batch
        return (
            fair is not None and fair.searching and batch.open_connections < batch.max_connections
        )

    def _search(self, now: float) -> None:
        """One step of reading ahead; the next waits three times as long as this one took,
        so the search has at most a quarter of the loop, and transfers the rest."""
        if self.run.fair is not None:
            self.run.fair.search(SEARCH_STEP)
            self._search_at = now + SEARCH_SHARE * (self.clock() - now)

    def _prepare_step(self) -> int:
        return max(PREPARE_STEP, self.options.concurrency)

    def _freeze(self) -> None:
        """Move what lives as long as the run (the batch's state) out of the collector's
        generations: then full collections do not walk it (on 20,000 files, ~40 ms of the
        collector's ~90).  Objects still die by refcount; ``close`` puts them back.

        The youngest generation may also grow to ``YOUNG_OBJECTS`` before it is collected:
        a file's objects (download, actions, head) live for a few events, and with Python's
        700 a pass came every few files, walking the files in the air and promoting them
        (small, epoll: ~2% of the run's instructions).  ``close`` restores the thresholds."""
        gc.freeze()
        if not self._froze:
            self._thresholds = gc.get_threshold()
            young, *older = self._thresholds
            if young:  # 0: the caller turned automatic collection off, and it stays so
                gc.set_threshold(max(young, YOUNG_OBJECTS), *older)
        self._froze = True

    # --- time, on the session's clock ------------------------------------------------
    def next_deadline(self) -> float | None:
        """On the session's clock (``time.monotonic`` unless a test passes another).  None
        once done: a stopped session calls for no timer (files left to prepare keep it due)."""
        if self.done:
            return None
        if self.batch.wants_jobs:  # jobs ended outside ``timer``: the next window is due
            return self.clock()
        deadline = self.batch.next_deadline()
        if self._poll_at is not None:  # a fixed instant: engines compare it with the clock
            return self._poll_at if deadline is None else min(deadline, self._poll_at)
        return deadline

    def timeout(self) -> float | None:
        """Seconds until ``timer`` is due (0 when it is), or None when nothing is timed."""
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - self.clock())

    def due(self) -> bool:
        return self.timeout() == 0.0

    # --- the end -----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Finished, or stopping: either way the engine ends now."""
        return bool(self.run.stops) or self.batch.done  # asked on every event: no call

    def close(self) -> None:
        """Finish publications, flush and close part files; call on every exit path."""
        try:
            self.store.close()
        except Exception as exc:  # a file that cannot be flushed is not a success
            self.run.fail(exc)
        finally:
            self.run.spool.close()
            if self._froze:  # what ``start`` froze: a caller's process collects it again
                gc.unfreeze()
                gc.set_threshold(*self._thresholds)

    # --- carrying out the core's actions ---------------------------------------------
    def _carry_out(self, actions: list[Action]) -> list[NetAction]:
        """Carry out ``actions`` in order, then the ones they answer with; return the network
        actions among them, for the engine.  ``actions`` is the session's to extend: every
        Batch call returns a new list."""
        net: list[NetAction] = []
        self._net, self._broken = net, set()
        queue, handlers, stops = actions, self._handlers, self.run.stops
        for action in queue:  # a list iterator also reaches what the loop appends
            if stops:  # e.g. SIGTERM while start() prepares 300,000 files
                return []
            more = handlers[type(action)](action)
            if more:
                queue += more
        return net

    def _dispatch_table(self) -> dict[type, _Step]:
        net = self._net_action
        file_steps: dict[type, _Step] = {
            Write: self.store.write,
            Open: self.store.open,
            Checkpoint: self.store.checkpoint,
            Rejected: self._rejected,
            Discard: self.store.discard,
            Prepare: self._prepare,
            Publish: self._publish,
            Save: self._save,
        }
        table: dict[type, _Step] = {
            Connect: net,
            Send: net,
            Close: net,
            StartTls: net,
            Resolve: net,
            Hold: net,
            Release: net,
        }
        for kind in REPORTS:  # a report nobody heeds is skipped
            table[kind] = self.run.reporter(kind) or _unheeded
        table.update({kind: self._file_step(kind, step) for kind, step in file_steps.items()})
        return table

    def _net_action(self, action: NetAction) -> None:
        self._net.append(action)

    def _file_step(self, kind: type, step: _Step) -> _Step:
        """Count the action (if the tracker counts its kind), skip it after a file error of
        its download, turn errors into the core's ``published(..., error)`` so only cleaning
        up is left for that download."""
        count = self.run.tracker.counter(kind)

        def carry_out(action: Any) -> list[Action] | None:
            if count is not None:
                count(action)
            if action.download in self._broken and type(action) is not Discard:
                return None
            try:
                return step(action)
            except DownloadError as error:
                self._broken.add(action.download)
                return self.batch.published(action.download, self.clock(), error)

        return carry_out

    def _prepare(self, action: Prepare) -> list[Action]:
        try:
            disk = self.store.prepare(action)
        except OSError as exc:
            raise DestinationError(action.url, f"cannot read {action.path}: {exc}") from exc
        return self.batch.prepared(action.download, disk, self.clock())

    def _rejected(self, action: Rejected) -> list[Action]:
        return self.batch.rejected(
            action.download, action.start, action.end, action.reason, self.clock()
        )

    def _publish(self, action: Publish) -> list[Action] | None:
        return self._submitted(action, self.store.submit(action))

    def _save(self, action: Save) -> list[Action] | None:
        return self._submitted(action, self.store.save(action))

    def _submitted(self, action: Publish | Save, queued: bool | None) -> list[Action] | None:
        """The store took ``action``: its outcome comes from ``collect`` (``queued``), or it
        stands published already (a store that publishes at once); None: it refused (a
        piece failed its digest: its ``Rejected`` follows), so nothing is answered."""
        if queued is None:
            return None
        if not queued:
            return self.batch.published(action.download, self.clock())
        now = self.clock()
        if self._poll_at is None or self._poll_at > now:  # one deadline for the whole group
            self._poll_at = now  # due now: ``timer`` publishes this iteration's group
        return None
