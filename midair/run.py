"""What one run is, apart from whoever drives it: jobs, options, reports, and how it ends.

A ``Run`` is shared by the surface that starts it, the engine that drives it
and (for the sharding engines) the merge of what shards report.  It holds the
two ways a run ends early, both safe to request from any thread or from a
signal handler:

- ``request_stop(reason)``: SIGINT, SIGTERM, a listener that broke, or a
  caller's own stop.  Engines register a waker with ``on_stop`` so a stop
  interrupts whatever they wait in, at once.
- ``fail(exc)``: an internal error (core, store, engine).  The first one is
  kept and re-raised by ``raise_outcome`` once the engine has flushed its
  files, so a bug is never reported as success.

Nothing here raises into the core: a listener that raises (``BrokenPipeError``
from a closed stdout included) becomes a stop with that error recorded.

Signals (``stop_on_signals``): until the engine first acts on the batch
(``commit``), nothing has touched the network or the disk, so a signal still
raises at once — building a 300,000-job batch takes seconds, and its
half-built state is thrown away.  From ``commit`` on, a signal only requests a
stop, so no exception ever lands in the middle of a Batch transition.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from types import FrameType

from .core.actions import Action, Report, Started
from .core.intake import window_size
from .core.jobs import Job, Options
from .core.progress import Tracker
from .core.results import Results
from .fair import Fair
from .spool import LIMIT, SpilledSet, Spool, chunk

Listener = Callable[[Action], None]
TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

    from .cookies import JarCookies

# The kinds a listener may hear (``Report`` is a ``types.UnionType``: its ``__args__`` are
# what ``typing.get_args`` gives, without typing's import, ~2 ms of start-up).
REPORTS: frozenset[type] = frozenset(Report.__args__)
SIGINT, SIGTERM, ERROR, LISTENER, REQUESTED = "SIGINT", "SIGTERM", "error", "listener", "requested"
_SIGNAL_REASONS = {signal.SIGINT: SIGINT, signal.SIGTERM: SIGTERM}


class Terminated(BaseException):
    """A run (or the CLI) ended by SIGTERM; cleanup runs as for Ctrl-C."""


_STOP_EXCEPTIONS: dict[str, type[BaseException]] = {SIGINT: KeyboardInterrupt, SIGTERM: Terminated}


def distinct(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` without repeats: the same URL to the same ``out=``/``dir=`` is one download
    (the first of its lines), with one report and one entry in the results."""
    jobs = list(jobs)
    if len({job.url.text for job in jobs}) == len(jobs):  # nearly every list: no URL twice
        return jobs
    return list(iter_distinct(jobs))


def iter_distinct(jobs: Iterable[Job], spool: Spool | None = None) -> Iterator[Job]:
    """``distinct`` as the jobs come: what is remembered per job is its URL's text alone
    (and its ``out=``/``dir=`` where given), not the job; past ``spool.LIMIT`` of them, on
    disk (in ``spool``, the run's; a temporary one if None)."""
    seen: set[str] = set()
    spilled: SpilledSet | None = None
    for job in jobs:
        key = job.url.text if job.out is None and job.subdir is None else _key(job)
        if key in seen or (spilled is not None and key in spilled):
            continue
        seen.add(key)
        if len(seen) >= LIMIT:  # some move to disk (which: it makes no difference)
            spilled = spilled or SpilledSet(Spool() if spool is None else spool)
            spilled.absorb([seen.pop() for _ in range(chunk(LIMIT))])
        yield job


def _key(job: Job) -> str:
    """The text of a job with ``out=``/``dir=``: NUL is in no URL, and None is not ''."""
    out = "" if job.out is None else "o" + job.out
    subdir = "" if job.subdir is None else "d" + job.subdir
    return f"{job.url.text}\0{out}\0{subdir}"


def _drained(jobs: list[Job]) -> Iterator[Job]:
    """``jobs`` in order, each let go of as it is taken (a head read ahead is not held)."""
    jobs.reverse()
    while jobs:
        yield jobs.pop()


class Run:
    """One batch's jobs, options, listener and results, and its stop and failure state."""

    def __init__(
        self,
        jobs: Iterable[Job],
        options: Options,
        *,
        listener: Listener | None = None,
        ids: Iterable[int] | None = None,
        paths: Iterable[str | None] | None = None,
        listens_to: Collection[type] = REPORTS,
        keeps_successes: bool = True,
        screen: Callable[[Iterator[Job]], Iterator[Job]] | None = None,
    ) -> None:
        """``listens_to``: the kinds of report ``listener`` is called for (a quiet display
        hears only ``Failed``); the transfers in the air are followed (``Tracker.active``)
        only when ``Started``, the report that begins one, is among them.
        ``jobs`` are read as the run needs them (``intake``), unless something asks for them
        all (``jobs``: the sharding engines' plans).  ``keeps_successes``: False keeps no
        entry per finished file in ``results`` (the CLI, which prints counts only).
        ``screen``: what the jobs pass through, without repeats, before the run takes them
        (the journal's, which settles the jobs an earlier run did)."""
        # A shard's jobs (``ids``, ``paths`` given) are a share of a run's, without repeats.
        self._jobs: list[Job] | None = list(jobs) if ids is not None or paths is not None else None
        self._source: Iterable[Job] | None = jobs
        self.spool = Spool()  # what the run remembers per job, once memory would not do
        self.fair: Fair | None = None  # the jobs, fairly across hosts, once ``intake`` began
        self._ahead: list[Job] | None = None  # jobs ``head`` read before the run took them
        self._given: list[Job] | tuple[Job, ...] | None = None  # a list ``head`` read into
        self._screen = screen
        self.options = options
        # The ids the jobs' reports carry, one per job; None: their positions in ``jobs``.
        # A shard's run uses the whole batch's, so what it reports needs no renumbering.
        self.ids = ids
        # The jobs' first-choice paths when a shard's plan found them already, else None:
        # the batch claims them as they are rather than naming each job again.
        self.paths = paths
        self._listener = listener
        self._listens_to = frozenset(listens_to)
        self.tracker = Tracker(follows=Started in self._listens_to, keeps=keeps_successes)
        if self._jobs is not None:
            self.tracker.jobs = len(self._jobs)
        self._reporters: dict[type, Callable[[Any], None] | None] = {}
        # Appends are atomic, so a signal handler may add to these while a thread reads them.
        # ``stops`` is read-only outside: its truth is ``stopping`` without a call, for a
        # driver that looks before every action.
        self.stops: list[str] = []
        self._errors: list[BaseException] = []
        self._wakers: list[Callable[[], None]] = []
        self.committed = False  # the engine has begun acting on the batch: signals only stop
        self._cookies: JarCookies | None = None
        # Who else hears a kind of report besides the tracker and listener (the journal):
        # set before the engine starts, as reporters are made once.
        self.recorders: dict[type, Callable[[Any], None]] = {}

    @property
    def jobs(self) -> list[Job]:
        """Every job of the run, read whole (once): for an engine that plans over them all."""
        if self._jobs is None:
            self._jobs = distinct(self._take_source())
            self.tracker.jobs = len(self._jobs)
        return self._jobs

    def intake(self) -> Iterator[Job]:
        """The jobs one by one, without repeats, counted (``Tracker.jobs``) as they are
        taken: a list of millions is never held whole.  Once only, or after ``jobs``."""
        if self._jobs is not None:
            return iter(self._jobs)
        options = self.options
        origins = -(-options.concurrency // max(1, options.per_host))  # to use every connection
        self.fair = Fair(
            self._take_source(), self.spool, window=window_size(options), origins=origins
        )
        return self._counted(self.fair)

    def head(self, count: int) -> tuple[list[Job], bool]:
        """The first ``count`` jobs (read ahead, still to come from ``intake``), and whether
        they are all the run's: enough to choose an engine without reading a long list."""
        if self._jobs is not None:
            return self._jobs[:count], len(self._jobs) <= count
        if self._ahead is None:
            if isinstance(self._source, list | tuple):  # still there to read again after
                self._given = self._source
            rest = self._take_source()
            self._ahead = list(itertools.islice(rest, count + 1))  # one more: is there more?
            self._source = itertools.chain(_drained(self._ahead[:]), rest)
        return self._ahead[:count], len(self._ahead) <= count

    def _take_source(self) -> Iterable[Job]:
        """The jobs given, read once: a list (held anyway) may be read again (``jobs`` after
        the run, as the tests do), an iterator not."""
        source = self._source
        if source is None and self._given is not None:  # a list ``head`` read into: again
            source, self._ahead = self._given, None
        if not isinstance(source, list | tuple):
            self._source = None
        if source is None:
            raise RuntimeError("a run's jobs are read once")
        if self._ahead is not None:  # screened already
            self._ahead = []  # the head is the source's now, let go of as the run takes it
            return source
        jobs = iter_distinct(source, self.spool)
        return jobs if self._screen is None else self._screen(jobs)

    def _counted(self, jobs: Iterable[Job]) -> Iterator[Job]:
        tracker = self.tracker
        for job in jobs:
            tracker.jobs += 1
            yield job

    @property
    def cookies(self) -> JarCookies:
        """The run's one jar (--load-cookies' file in it), made on first use: its session's,
        or the one a sharded run's workers send their cookies home to."""
        if self._cookies is None:
            from .cookies import JarCookies

            self._cookies = JarCookies.from_options(self.options)
        return self._cookies

    def save_cookies(self) -> None:
        """Write the jar to --save-cookies' file, if given, however the run ended; a file
        that cannot be written fails the run (``raise_outcome``), never silently."""
        if self.options.save_cookies:
            try:
                self.cookies.save(self.options.save_cookies)
            except Exception as exc:
                self.fail(exc)

    @property
    def results(self) -> Results:
        return self.tracker.results

    @property
    def stopping(self) -> bool:
        return bool(self.stops)

    @property
    def stop_reason(self) -> str | None:
        return self.stops[0] if self.stops else None

    @property
    def error(self) -> BaseException | None:
        return self._errors[0] if self._errors else None

    def commit(self) -> None:
        """From now on the batch has state worth flushing: a signal must not raise."""
        self.committed = True

    # --- ending early --------------------------------------------------------------------
    def request_stop(self, reason: str = REQUESTED) -> None:
        """Ask the engine to end now (flushing part files); the first reason is kept."""
        self.stops.append(reason)
        for wake in list(self._wakers):
            wake()

    def fail(self, exc: BaseException, reason: str = ERROR) -> None:
        """Record an internal error (the first is kept) and stop."""
        self._errors.append(exc)
        self.request_stop(reason)

    def on_stop(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (thread- and signal-safe, quick) when a stop is requested."""
        self._wakers.append(wake)
        if self.stopping:
            wake()

    def raise_outcome(self) -> None:
        """After the engine returned: raise what ended the run early, if anything did."""
        if self.error is not None:
            raise self.error
        stop = _STOP_EXCEPTIONS.get(self.stop_reason or "")
        if stop is not None:
            raise stop

    # --- reports -------------------------------------------------------------------------
    def report(self, action: Action) -> None:
        """Count ``action`` and tell the listener; a listener's exception stops the run."""
        step = self.reporter(type(action))
        if step is not None:
            step(action)

    def heeded(self) -> frozenset[type]:
        """The kinds of report that change anything here: the tracker counts them, or the
        listener hears them.  A shard sends home only these."""
        return frozenset(kind for kind in REPORTS if self.heeds(kind))

    def heeds(self, kind: type) -> bool:
        """Whether a report of ``kind`` changes anything here (see ``heeded``)."""
        return self.reporter(kind) is not None

    def reporter(self, kind: type) -> Callable[[Any], None] | None:
        """``report`` for actions of ``kind`` alone, made once (None: it does nothing), for
        a driver that dispatches by kind: most files' ``Started`` is heard by nobody."""
        if kind not in self._reporters:
            self._reporters[kind] = self._make_reporter(kind)
        return self._reporters[kind]

    def _make_reporter(self, kind: type) -> Callable[[Any], None] | None:
        count = _both(self.tracker.counter(kind), self.recorders.get(kind))
        listener = self._listener if kind in self._listens_to else None
        if listener is None:
            return count

        def tell(action: Any) -> None:
            if count is not None:
                count(action)
            try:
                listener(action)
            except BaseException as exc:
                self.fail(exc, LISTENER)

        return tell


def _both(
    first: Callable[[Any], None] | None, second: Callable[[Any], None] | None
) -> Callable[[Any], None] | None:
    """One callable doing what each given one does (None when neither is)."""
    if first is None or second is None:
        return first or second

    def both(action: Any) -> None:
        first(action)
        second(action)

    return both


@contextlib.contextmanager
def stop_on_signals(run: Run) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM only request a stop; previous handlers back after.

    Signal handlers can only be set in the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: FrameType | None) -> None:
        reason = _SIGNAL_REASONS[signal.Signals(signum)]
        if not run.committed:  # nothing to flush or undo yet: end at once
            raise _STOP_EXCEPTIONS[reason]
        run.request_stop(reason)

    previous = {signum: signal.signal(signum, request) for signum in _SIGNAL_REASONS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
