"""The batch scheduler: many downloads over a bounded set of connections.

``Batch`` is the one object an engine drives.  Events go in (``connected``,
``received``, ``closed``, ``timer``, and the store's answers ``prepared`` and
``published``); each call returns the actions to carry out, in order.  It
never reads a clock — every call takes ``now`` — so a test can run a
million-file batch in virtual time.

Scheduling in one paragraph: downloads wait in a queue per origin.  A host is
*ready* when it has work, is below its open-connection limit and is not
paused (after a 429/503).  The limit adapts (``politeness.Aimd``): halved on a
429/503, a stall or a connection error, one more per window of successes, never
above ``per_host``.  Ready hosts take turns (round robin) while fewer
than ``concurrency`` connections are open.  A connection that finishes a
response cleanly takes the next download for its origin, else it is closed so
its slot goes to another host.  Stalls are found by a periodic sweep rather
than a timer per connection: one pass a second costs less than re-arming
thousands of timers on every chunk.

Jobs come from an iterator a window at a time (``take_jobs``, ``name_jobs``),
each named across the whole batch before its file is touched (core/intake.py):
a list of millions costs the memory of a few windows of jobs, plus one claimed
name per job.  An ended job is forgotten.

Control files cost a file creation each; a transfer that finishes within
``CHECKPOINT_AFTER`` seconds never needs one (a crash would lose at most that
much of it), so ``Checkpoint`` is asked for only once an attempt has been
receiving that long, and never with the body's last bytes (a batch of files
that all take about that long would write and remove a control file each, just
as they finish).  The store also writes them on every orderly exit.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping

from . import transfer as t
from .actions import (
    Action,
    Checkpoint,
    Close,
    Connect,
    ConnectionFailure,
    Discard,
    Disk,
    Failed,
    Finished,
    OnDisk,
    Open,
    Prepare,
    Publish,
    Resolve,
    Retrying,
    Save,
    Send,
    Started,
    StartTls,
    Write,
)
from .cookies import Cookies
from .errors import (
    DestinationError,
    DownloadError,
    HTTPStatusError,
    IntegrityError,
    NetworkError,
    ProtocolError,
    StallTimeout,
    TLSError,
)
from .http import Chunk, ClientConnection, FramingError, Head, Piped, encode_fields, field_key
from .intake import Intake
from .jobs import Job, Options
from .politeness import Aimd
from .rate import Spacing, Throttle, read_size
from .retry import backoff
from .segments import Plan, Split, judge
from .state import ENDS, DownloadState
from .urls import URL

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    import random
    from typing import ClassVar

    from .claims import Claims
    from .http2 import Http2Connection
    from .politeness import ConcurrencyPolicy
    from .proxy import Proxy, ProxyChoice
    from .segments import Piece
    from .tunnel import Tunnel

CHECKPOINT_AFTER = 1.0  # seconds of receiving before a control file is worth writing
# Jobs taken from the source at a time (at least 4 per connection): the next window is taken
# once fewer than this many are unended, so at most two windows' jobs are held at once.
# The states a batch moves its downloads to (state.MOVES says which moves are allowed).
PREPARING, QUEUED, WAITING = DownloadState.PREPARING, DownloadState.QUEUED, DownloadState.WAITING
FETCHING, PUBLISHING = DownloadState.FETCHING, DownloadState.PUBLISHING
FINISHED, FAILED = DownloadState.FINISHED, DownloadState.FAILED
# Why a download may not take the file on its path, by the store's ``OnDisk.kind``.
_NOT_OURS = {
    Disk.FOREIGN: "{} exists and was not made by midair (use --overwrite)",
    Disk.TAKEN: "{} exists, made by midair for another URL (--no-clobber)",
}
_SET_COOKIE = field_key(b"set-cookie")
_ACCEPT_RANGES = field_key(b"accept-ranges")


def _cookie_field(d: t.Download, value: str) -> bytes:
    """The jar's Cookie line for ``d``'s request, unless a user Cookie header rules."""
    if any(name.lower() == "cookie" for name, _ in d.user_headers()):
        return b""
    return encode_fields([("Cookie", value)])


class _Host:
    """One origin: its jobs waiting, its connections open, and when it may connect again.
    (This and ``_Conn`` are plain slotted classes, not dataclasses: the decorator costs
    ~0.4 ms of start-up per class.)"""

    __slots__ = (
        "failures",
        "gone",
        "link",
        "one",
        "open",
        "origin",
        "paused_until",
        "pending",
        "polite",
        "proxy",
        "queued",
        "wanted",
    )

    def __init__(
        self, origin: tuple[str, str, int], polite: ConcurrencyPolicy, prior_http2: bool = False
    ) -> None:
        self.origin = origin
        self.polite = polite  # how many connections it may have now (at most --per-host)
        # HTTP/2 known before connecting (h2c by prior knowledge): one connection, whose
        # streams carry the rest; ALPN tells only after a handshake, so TLS opens several.
        self.one = prior_http2 and origin[0] == "http"
        self.pending: deque[t.Download] = deque()
        # Files in segments that asked for one more connection (each entry), to this URL.
        self.wanted: deque[tuple[t.Download, Split, URL]] = deque()
        self.open = 0
        self.paused_until = 0.0
        self.queued = False  # in the ready queue
        # Why it cannot be reached for good (its name does not resolve, its connections
        # kept failing): each of its jobs fails with this, as this kind of error.
        self.gone: tuple[type[DownloadError], str] | None = None
        self.failures = 0  # connections in a row that failed before their request
        self.link: _Link | None = None  # its HTTP/2 connection, once one is open
        self.proxy: Proxy | None = None  # what its connections go through (once per origin)


class _Link:
    """One HTTP/2 connection: the engine's connection ``id``, carrying many ``_Stream``."""

    __slots__ = ("ended", "host", "http", "id", "streams")

    def __init__(self, id: int, host: _Host, http: Http2Connection) -> None:
        self.id = id
        self.host = host
        self.http = http
        self.streams: dict[int, _Stream] = {}  # by stream id
        self.ended = 0  # streams that ended cleanly on it


class _Conn:
    """One connection and the download on it; the sink of its responses, too."""

    __slots__ = (
        *("id", "host", "download", "last_active", "batch", "http", "window_start"),
        *("window_bytes", "body_limit", "checkpoint_at", "exchanges", "answered"),
        *("held", "saving", "tunnel", "proxy_fields", "piece", "source", "began"),
        "turn",
    )

    def __init__(
        self, id: int, host: _Host, download: t.Download, last_active: float, batch: Batch
    ) -> None:
        self.id = id
        self.host = host
        self.download = download
        self.last_active = last_active
        self.batch = batch
        self.window_start = 0.0  # lowest-speed accounting
        self.window_bytes = 0
        self.body_limit = math.inf  # the exchange's body may not pass this position
        self.checkpoint_at = math.inf  # when to ask for a control file, if not yet
        self.exchanges = 0  # requests sent on this connection
        self.answered = False  # the current request has a response head
        # Where the accepted response's body starts: its ``Open`` is held back (not even made)
        # until the body's first bytes show whether the whole body came in this read; then
        # ``saving`` holds it all until the end.
        self.held: int | None = None
        self.saving: Save | None = None
        # Through a proxy: the tunnel to set up before the first request, or, for plain http
        # through an HTTP proxy, the header lines each request adds (absolute-form targets).
        self.tunnel: Tunnel | None = None
        self.proxy_fields: bytes | None = None
        # A file in segments: the range it fetches, the URL it asks (a mirror's, maybe),
        # and when and from which byte of the range it began (the source's speed).
        self.piece: Piece | None = None
        self.source: URL | None = None
        self.began = (0.0, 0)
        self.turn: float | None = None  # --host-delay: the turn booked for its first request
        self.http = ClientConnection(self)

    # --- ResponseSink: straight to the batch, at the time of the bytes being fed -------
    def on_head(self, head: Head) -> None:
        self.batch._on_head(self, head, self.batch._now)

    def on_body(self, data: Chunk) -> None:
        self.batch._write(self, data, self.batch._now)

    def on_end(self) -> None:
        self.batch._on_end(self, self.batch._now)


class _Stream(_Conn):
    """A download on an HTTP/2 connection: a ``_Conn`` to every decision, but its bytes
    come from its ``link`` (so it keeps its own time of last data) and ``Close`` of it
    resets the stream."""

    __slots__ = ("link", "stream")

    def __init__(
        self,
        id: int,
        host: _Host,
        download: t.Download,
        last_active: float,
        batch: Batch,
        link: _Link,
    ) -> None:
        super().__init__(id, host, download, last_active, batch)
        self.link: _Link | None = link
        self.stream = 0

    def on_head(self, head: Head) -> None:
        self.last_active = self.batch._now
        self.batch._on_head(self, head, self.batch._now)

    def on_body(self, data: Chunk) -> None:
        self.last_active = self.batch._now
        self.window_bytes += len(data)
        throttle, link = self.batch._throttle, self.link
        if throttle is not None and link is not None:  # its file keeps to --max-rate
            throttle.transfer(link.id, self.download.id, len(data), self.batch._now)
        self.batch._write(self, data, self.batch._now)

    def on_broken(self, reason: str, refused: bool) -> None:
        self.batch._on_broken(self, reason, refused, self.batch._now)


class Batch:
    """Drive a set of jobs to completion; see the module docstring."""

    def __init__(
        self,
        jobs: Iterable[Job],
        options: Options,
        *,
        seed: int | None = None,
        ids: Iterable[int] | None = None,
        paths: Iterable[str | None] | None = None,
        cookies: Cookies | None = None,
        epoch: float | None = None,
        starts: bool = True,
        claims_kept: Callable[[Claims], Claims] | None = None,
    ):
        """``ids`` name the jobs in every action and answer (default: their positions); a
        shard of a bigger batch uses the whole batch's, so its reports need no renumbering.
        ``paths``: each job's ``first_path`` (None where it raises), if already known.
        ``cookies``: where Set-Cookie goes and Cookie comes from (None: no cookies).
        ``epoch``: the wall-clock time (POSIX seconds) at ``now`` 0, if known: the one
        rule that needs wall time (a Retry-After date without a Date) reads it so.
        ``starts``: report ``Started``; off when nobody follows transfers (``-q``).
        ``claims_kept``: where the names claimed are kept from now, given them, asked every
        window (None: in a dict); a list of millions moves them to disk past a bound
        (``midair.spool.claims_kept``)."""
        self.options = options
        self._cookies = cookies
        self._epoch = epoch
        # The jobs, a window at a time, and every name they claimed (core/intake.py).
        self._intake = Intake(jobs, options, ids, paths, claims_kept)
        self._jobs = self._intake.jobs  # taken and not ended
        self._downloads: dict[int, t.Download] = {}  # made as each job's file is prepared
        # Claimed at start, Prepare to come: id, path, and whether the job claims the path
        # alone, as its first choice or as the file its URL owns (``Prepare.by_name``).
        self._unprepared: deque[tuple[int, str, bool]] = deque()
        self._request_fields = t.RequestFields(options)
        self._unfinished = 0  # jobs taken from the source and not ended
        self.done = False  # every job ended; read on every event: no call
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        self._ready: deque[_Host] = deque()
        self._conns: dict[int, _Conn] = {}
        self._links: dict[int, _Link] = {}  # HTTP/2 connections, by the engine's id
        self._timers: list[tuple[float, int, t.Download | _Host | Send]] = []  # Send: spaced
        self._ids = itertools.count(1)
        self._sweep_every = min(1.0, options.timeout / 4)
        self._next_sweep: float | None = None
        self._seed = seed
        self._rng: random.Random | None = None  # made at the first retry
        self._out: list[Action] = []
        self._now = 0.0  # the time of the bytes being fed, for the response callbacks
        self.max_connections = options.concurrency
        self._starts = starts
        self._proxies = _proxy_choice(options)
        self._throttle = _throttle(options)  # --max-rate, --max-overall-rate (None: neither)
        self._spacing = Spacing(options.host_delay) if options.host_delay else None
        self.read_size = read_size(options.max_rate, options.max_overall_rate)

    def _jitter(self) -> float:
        """A random draw for a retry's backoff.  ``random`` is loaded at the first: its
        import is ~0.7 ms of start-up, and most batches never retry."""
        if self._rng is None:
            import random

            self._rng = random.Random(self._seed)
        return self._rng.random()

    def limit_connections(self, limit: int) -> None:
        """Open at most ``limit`` connections, below ``concurrency``.

        For engines that cannot keep more in the air (``sequential``): a
        connection the core has asked for is on the stall clock, so it must not
        wait in an engine's queue.
        """
        self.max_connections = max(1, min(limit, self.options.concurrency))

    # --- queries --------------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def pipeable(self, conn_id: int) -> int:
        """How many body bytes the engine may hand over as ``Piped`` on ``conn_id`` now: what
        is left of a Content-Length body, within the body limit (a body that would pass
        it comes as bytes, and fails where bytes do).  0 when there is no such body."""
        conn = self._conns.get(conn_id)
        if conn is None or self._throttle is not None:  # spliced bytes would pass a limit
            return 0
        if conn.piece is not None:  # what is left of its range: the rest is another's
            return int(min(conn.http.body_remaining, conn.piece.remaining))
        room = conn.body_limit - conn.download.position
        return int(min(conn.http.body_remaining, room))

    def next_deadline(self) -> float | None:
        """When ``timer`` must next be called, or None while nothing is timed."""
        if self.done:
            return None
        deadlines = [self._timers[0][0]] if self._timers else []
        if self._conns and self._next_sweep is not None:
            deadlines.append(self._next_sweep)
        if self._throttle is not None and (held := self._throttle.next_deadline()) is not None:
            deadlines.append(held)
        return min(deadlines, default=None)

    # --- intake: jobs taken in windows, named across the whole batch -------------------
    @property
    def unprepared(self) -> int:
        """Jobs whose name is claimed but whose ``Prepare`` is still to come (``prepare_more``)."""
        return len(self._unprepared)

    @property
    def wants_jobs(self) -> bool:
        """Whether to take the next window now (``take_jobs``, then ``name_jobs``): the source
        may hold more, and fewer than a window's jobs are taken and not ended."""
        return self._intake.more and self._unfinished < self._intake.size

    def to_survey(self) -> tuple[set[str], Container[str]]:
        """What the store looks at before ``start`` (``Store.survey``): ``take_jobs``'s answer
        for the first window (taken here if ``start`` has not taken it)."""
        if self._intake.untaken:
            return self.take_jobs()
        return self._intake.survey()

    def take_jobs(self) -> tuple[set[str], Container[str]]:
        """Take the next window of jobs from the source and find each one's first-choice path;
        return what the store surveys before ``name_jobs``: the directories not surveyed yet,
        and the paths it may pass over, each claimed by one job alone (``prepared`` will tell
        about those).  Which URL made each other file there is what keeps names stable
        across runs: a duplicate's ``NAME.1``, a server's name."""
        self._unfinished += self._intake.take()
        self.done = not (self._unfinished or self._intake.more)
        return self._intake.survey()

    def start(
        self, now: float, first: int | None = None, owners: Mapping[str, str | None] | None = None
    ) -> list[Action]:
        """Name the first window's jobs, then prepare the first ``first`` files (all when None).

        ``owners``: the store's survey, path -> the URL midair made the file for (None: a
        file midair did not make).  Every name of a window is settled before any of its files
        is touched, against every name claimed before it (core/intake.py), so a clash
        anywhere in the batch is found.  The rest of the files are prepared by ``prepare_more``:
        their ``Download`` and ``Prepare`` are made then, so the first connections need not
        wait for them.
        """
        self.to_survey()
        self._name_jobs(owners or {})
        return self.prepare_more(len(self._unprepared) if first is None else first, now)

    def name_jobs(self, owners: Mapping[str, str | None], now: float) -> list[Action]:
        """Settle the names of the window ``take_jobs`` took (see ``start``), after the store's
        survey of its directories; ``prepare_more`` prepares them."""
        self._name_jobs(owners)
        return self._flush(now)

    def prepare_more(self, count: int, now: float) -> list[Action]:
        """``Prepare`` the next ``count`` claimed files (fewer when fewer are left)."""
        unprepared, jobs, downloads, out = self._unprepared, self._jobs, self._downloads, self._out
        renames = self._intake.renames
        for _ in range(min(count, len(unprepared))):
            ident, path, by_name = unprepared.popleft()
            d = downloads[ident] = t.Download(ident, jobs[ident], self.options)
            d.path = path
            d.state = PREPARING  # NEW -> PREPARING, set directly: the one move of every file here
            if renames:
                d.renames = renames.pop(ident, 0)
            out.append(Prepare(ident, path, d.job.url.text, d.checksum, by_name))
        return self._flush(now)

    def _name_jobs(self, owners: Mapping[str, str | None]) -> None:
        """Carry out what ``Intake.name`` settled: a name that lands outside fails its job
        (``_prepare``), --no-clobber fails the jobs beaten to a path, the rest wait for
        ``prepare_more``."""
        named = self._intake.name(owners)
        for ident in named.escaping:
            d = self._downloads[ident] = t.Download(ident, self._jobs[ident], self.options)
            self._prepare(d, d.candidate_name())
        for ident, winner in named.beaten:
            self._beaten(ident, winner)
        self._unprepared.extend(named.ready)

    def _beaten(self, ident: int, winner: int) -> None:
        """--no-clobber: another job of the batch took this one's path; it fails now."""
        d = self._downloads[ident] = t.Download(ident, self._jobs[ident], self.options)
        path = t.first_path(d.job, self.options)
        message = f"{path} is also the target of {self._intake.url_of(winner)} (--no-clobber)"
        self._fail(d, DestinationError(d.job.url.text, message))

    # --- events in ------------------------------------------------------------------
    def prepared(self, ident: int, disk: OnDisk, now: float) -> list[Action]:
        """The store's answer to ``Prepare``: what is already on disk at the path."""
        d = self._downloads.get(ident)
        if d is None:  # ended meanwhile (a stop's late answer): nothing is held for it
            return self._flush(now)
        assert d.path is not None
        if disk.kind is Disk.COMPLETE:
            d.size = disk.offset
            self._finish(d, skipped=True)
        elif disk.kind is Disk.TAKEN and not self.options.no_clobber:  # another URL's file
            self._intake.on_disk(d.path)
            d.renames += 1
            self._prepare(d, d.candidate_name())
        elif disk.kind is Disk.TAKEN or (disk.kind is Disk.FOREIGN and not self.options.overwrite):
            self._fail(d, DestinationError(d.job.url.text, _NOT_OURS[disk.kind].format(d.path)))
        else:
            d.adopt(disk)
            self._enqueue(d, now)
        return self._flush(now)

    def connected(self, conn_id: int, now: float, protocol: str | None = None) -> list[Action]:
        """The connection is open; ``protocol``: what TLS negotiated by ALPN ("h2",
        "http/1.1"), None for plain TCP (HTTP/1.1 unless --http2-prior-knowledge)."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn.host.paused_until > now:
            # Opened before the host said "slow down": its download waits with the others.
            self._close(conn, now)
            if not self._still_split(conn.download, now):
                self._requeue(conn.host, conn.download)
        elif conn is not None and self._speaks_http2(conn, protocol) and _at_origin(conn):
            self._start_link(conn, now)
        elif conn is not None:
            conn.last_active = conn.window_start = now
            conn.host.failures = 0  # it answers: connections to it work
            if conn.tunnel is None or conn.tunnel.ready:  # (again, after a tunnel's StartTls)
                self._send_request(conn, now)
            else:
                self._open_tunnel(conn, now)
        return self._flush(now)

    def resolved(
        self, conn_id: int, address: str | None, now: float, reason: str = ""
    ) -> list[Action]:
        """The answer to ``Resolve``: the address to send the SOCKS proxy, or why none."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn.tunnel is not None:
            if address is None:
                self._attempt_failed(conn, self._proxy_error(conn, reason), now)
            else:
                self._out.append(Send(conn.id, conn.tunnel.start(address)))
        return self._flush(now)

    def received(self, conn_id: int, data: Chunk, now: float) -> list[Action]:
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.last_active = now
            if conn.tunnel is not None and not conn.tunnel.ready:
                self._through_tunnel(conn, bytes(data), now)  # type: ignore[arg-type]
                return self._flush(now)
            conn.window_bytes += len(data)
            if self._throttle is not None:  # whose bytes: the end may reuse conn for another
                self._throttle.transfer(conn_id, conn.download.id, len(data), now)
            self._feed(conn, data, now)
        elif conn_id in self._links:
            self._feed_link(self._links[conn_id], data, now)
        if self._throttle is not None:
            self._limit_rate(conn_id, len(data), now)
        return self._flush(now)

    def closed(
        self, conn_id: int, now: float, failure: ConnectionFailure | None = None
    ) -> list[Action]:
        """The connection is gone: EOF (``failure`` None) or an error from the engine."""
        conn = self._conns.get(conn_id)
        if conn is None:
            if conn_id in self._links:
                link = self._links[conn_id]
                self._end_link(link, lambda stream: self._link_error(stream, failure), None, now)
            return self._flush(now)
        if conn.exchanges > 1 and not conn.answered and (failure is None or failure.retryable):
            # The server closed a kept-alive connection just as we reused it: a race,
            # not a fault of this download.  Try again at once, uncounted (as urllib3 does).
            self._close(conn, now)
            if not self._still_split(conn.download, now):
                self._enqueue(conn.download, now)
            return self._flush(now)
        if conn.host.proxy is not None:
            failure = self._failure_via_proxy(conn, failure)
        if failure is None:
            self._feed(conn, b"", now)  # ends a close-delimited body, or reports it short
            if conn.id in self._conns:
                self._attempt_failed(
                    conn,
                    NetworkError(conn.download.url.text, "connection closed by the server"),
                    now,
                )
        elif failure.unresolved and not failure.retryable:
            error = self._connection_error(conn, failure)
            self._abandon_host(conn.host, type(error), error.reason)
            if conn.source is not None:  # in segments (a mirror's name, maybe): that source fails
                self._attempt_failed(conn, error, now)
            else:
                self._close(conn, now)
                self._enqueue(conn.download, now)  # fails it with the host's reason
        else:
            conn.host.polite.on_congestion()
            error = self._connection_error(conn, failure)
            if conn.exchanges or conn.source is not None or conn.host.proxy is not None:
                self._attempt_failed(conn, error, now)
            else:  # never reached the origin's server: the host backs off as a whole
                self._unreachable(conn, error, now)
        return self._flush(now)

    def _link_error(self, stream: _Stream, failure: ConnectionFailure | None) -> DownloadError:
        """What the end of an HTTP/2 connection means for a stream on it."""
        if failure is None:
            return NetworkError(stream.download.url.text, "connection closed by the server")
        return self._connection_error(stream, failure)

    def _connection_error(self, conn: _Conn, failure: ConnectionFailure) -> DownloadError:
        url = conn.download.url.text
        reason = failure.reason
        if failure.unresolved:
            reason = f"cannot resolve {conn.host.origin[1]}: {reason}"
        if not (failure.retryable or failure.tls):
            return DownloadError(url, reason)
        return (TLSError if failure.tls else NetworkError)(url, reason)

    def published(self, ident: int, now: float, error: DownloadError | None = None) -> list[Action]:
        """The store's answer to ``Publish`` (or to a failed ``Open``/``Write``)."""
        d = self._downloads.get(ident)
        if d is None or d.state in ENDS:  # a late answer, e.g. to a Publish after a failed Write
            return self._flush(now)
        if error is None:
            self._finish(d, skipped=False)
            return self._flush(now)
        for conn in [c for c in self._conns.values() if c.download is d]:
            self._close(conn, now)
        if d.state is QUEUED:  # a late answer to a Write of an earlier attempt
            self._hosts[d.url.origin].pending.remove(d)
        if isinstance(error, IntegrityError) and d.path:
            self._out.append(Discard(d.id, d.path))
            d.offset = 0
        self._fail(d, error)
        return self._flush(now)

    def rejected(self, ident: int, start: int, end: int, reason: str, now: float) -> list[Action]:
        """The store's word that bytes ``[start, end)`` of a file in segments failed their
        piece's digest (a Metalink's): they are fetched again, and the source that wrote
        them is blamed: dropped for the file while another is left, else it counts
        against --retries.  A file whose last piece it was goes back to fetching (the
        store refused its publication)."""
        d = self._downloads.get(ident)
        if d is None or d.split is None or d.state not in (FETCHING, PUBLISHING):
            return self._flush(now)
        split = d.split
        if d.state is PUBLISHING:
            d.move(FETCHING)
        for text in split.plan.redo(start, end):
            source = next((u for u in split.sources if u.text == text), None)
            if source is not None:
                self._blame(d, split, source, reason, now)
        if d.split is split:  # not failed for it
            self._want_pieces(d, now)
        return self._flush(now)

    def _blame(self, d: t.Download, split: Split, source: URL, reason: str, now: float) -> None:
        if len(split.sources) > 1:
            split.drop(source, reason)
        elif not self._source_retried(d, split, source, reason):
            self._drop_source(d, source, self._gave_up(reason), now)

    def timer(self, now: float) -> list[Action]:
        while self._timers and self._timers[0][0] <= now:
            _, _, item = heapq.heappop(self._timers)
            if isinstance(item, _Host):
                self._mark_ready(item, now)
            elif isinstance(item, Send):  # a request whose turn came (--host-delay)
                if item.conn in self._conns:
                    self._out.append(item)
            elif item.state is WAITING:  # not failed meanwhile (a late answer to a Write)
                self._enqueue(item, now)
        if self._throttle is not None:
            self._out += self._throttle.releases(now)
        if self._next_sweep is not None and now >= self._next_sweep:
            self._sweep(now)
        return self._flush(now)

    # --- one connection's exchange --------------------------------------------------
    def _send_request(self, conn: _Conn, now: float) -> None:
        d = conn.download
        if d.finished is not None:  # its control file lists ranges: resume them
            self._plan_from_record(d)
        if d.split is not None and not self._take_piece(conn, d.split):
            return
        d.position = d.offset
        conn.exchanges += 1
        conn.answered = False
        url = d.url
        if conn.piece is None:
            fields = self._request_fields.of(d)
        else:
            fields = self._piece_fields(conn, conn.piece)
            url = conn.source or url
        cookie = None if self._cookies is None else self._cookies.cookies_for(url)
        if cookie is not None:
            fields += _cookie_field(d, cookie)
        if conn.proxy_fields is None:
            data = conn.http.request_with(url.target, fields)
        else:  # to an HTTP proxy: the whole URL (absolute-form), and its credentials
            target = f"{url.scheme}://{url.host_header}{url.target}"
            data = conn.http.request_with(target, fields + conn.proxy_fields)
        self._send_spaced(conn, Send(conn.id, data), now)

    def _send_spaced(self, conn: _Conn, send: Send, now: float) -> None:
        """Send a request now, or at its host's turn (--host-delay): the connection waits,
        and its stall clock starts then."""
        at = now
        if self._spacing is not None:
            at = self._spacing.take(conn.host.origin[1], conn.turn, now)
            conn.turn = None
        if at <= now:
            self._out.append(send)
            return
        conn.last_active = conn.window_start = at
        heapq.heappush(self._timers, (at, next(self._ids), send))

    def _spaced(self, host: _Host, now: float) -> bool:
        """--host-delay: whether ``host`` must wait for its turn before a new connection or
        stream (then a timer marks it ready at that turn)."""
        if self._spacing is None or (at := self._spacing.free_at(host.origin[1])) <= now:
            return False
        heapq.heappush(self._timers, (at, next(self._ids), host))
        return True

    def _limit_rate(self, conn_id: int, count: int, now: float) -> None:
        """--max-rate, --max-overall-rate: hold the connection its bytes overdrew a limit on
        (core/rate.py).  A hold is no stall: its transfers' stall clocks start at its end."""
        assert self._throttle is not None
        link, conn = self._links.get(conn_id), self._conns.get(conn_id)
        watched: list[_Conn]
        if conn is not None:
            watched = [conn]
        elif link is not None:
            watched = list(link.streams.values())
        else:  # closed by its own bytes
            self._throttle.received_closed(count, now)
            return
        hold = self._throttle.received(conn_id, count, now)
        if hold is not None:
            self._out.append(hold)
            for transfer in watched:
                transfer.last_active = max(transfer.last_active, hold.until)

    # --- HTTP/2: one connection per origin, a stream per download -------------------
    def _speaks_http2(self, conn: _Conn, protocol: str | None) -> bool:
        if protocol is None:
            return self.options.http2_prior_knowledge and conn.host.origin[0] == "http"
        return protocol == "h2"

    def _start_link(self, conn: _Conn, now: float) -> None:
        """Make ``conn`` the host's HTTP/2 connection, its download the first stream.  A
        second connection opened before the first spoke HTTP/2 gives its download to it."""
        if conn.download.split is not None:  # no segments over HTTP/2: the stream takes it whole
            self._leave_split(conn, conn.download.split)
            self._drop_split(conn.download, now)
        del self._conns[conn.id]
        host = conn.host
        if host.link is not None:
            self._out.append(Close(conn.id))
            host.open -= 1
            self._requeue(host, conn.download)
            self._mark_ready(host, now)
            return
        from .http2 import Http2Connection  # h2 is imported only by runs that speak it

        link = host.link = self._links[conn.id] = _Link(conn.id, host, Http2Connection())
        self._out.append(Send(link.id, link.http.start()))
        self._open_stream(link, conn.download, now)
        self._mark_ready(host, now)  # its other downloads may go as streams now

    def _open_stream(self, link: _Link, d: t.Download, now: float) -> None:
        stream = _Stream(next(self._ids), link.host, d, now, self, link=link)
        stream.window_start = now
        self._conns[stream.id] = stream
        d.position = d.offset
        stream.exchanges = 1
        headers = d.request_headers()
        cookie = None if self._cookies is None else self._cookies.cookies_for(d.url)
        if cookie is not None and _cookie_field(d, cookie):  # the HTTP/1.1 rule, as a pair
            headers.append(("Cookie", cookie))
        if self._spacing is not None:  # its turn has come (``_fill``, ``_close_stream``)
            self._spacing.book(link.host.origin[1], now)
        stream.stream, data = link.http.request(stream, d.url.scheme, d.url.target, headers)
        link.streams[stream.stream] = stream
        self._out.append(Send(link.id, data))

    def _feed_link(self, link: _Link, data: Chunk, now: float) -> None:
        from .http2 import Goaway

        self._now = now
        try:
            reply = link.http.receive(bytes(data))  # type: ignore[arg-type]  # never Piped
        except Goaway as exc:
            goaway = str(exc)
            self._end_link(
                link, lambda s: NetworkError(s.download.url.text, goaway), exc.last_stream, now
            )
            return
        except FramingError as exc:
            broken = str(exc)
            self._end_link(link, lambda s: ProtocolError(s.download.url.text, broken), None, now)
            return
        for stream in list(link.streams.values()):
            if stream.held is not None or stream.saving is not None:
                self._unhold(stream)  # its body goes on after this read, as in ``_feed``
        if reply and link.id in self._links:
            self._out.append(Send(link.id, reply))

    def _on_broken(self, stream: _Stream, reason: str, refused: bool, now: float) -> None:
        self._unhold(stream)
        if refused:
            self._close(stream, now)
            self._enqueue(stream.download, now)  # never processed: no attempt counted
        else:
            self._attempt_failed(stream, NetworkError(stream.download.url.text, reason), now)

    def _end_link(
        self,
        link: _Link,
        error: Callable[[_Stream], DownloadError],
        processed: int | None,
        now: float,
    ) -> None:
        """Close ``link``; each stream on it is retried.  On a link that had served others
        (so a loop of these still makes progress), streams above ``processed`` (GOAWAY's
        last stream) and unanswered ones (the keep-alive race of ``closed``) go again
        uncounted."""
        self._close_link(link, now)
        for number, stream in link.streams.items():
            self._unhold(stream)
            del self._conns[stream.id]
            unprocessed = processed is not None and number > processed
            if link.ended and (unprocessed or not stream.answered):
                self._enqueue(stream.download, now)
            else:
                self._retry(stream.download, error(stream), now)
        link.streams.clear()

    def _close_link(self, link: _Link, now: float) -> None:
        del self._links[link.id]
        host = link.host
        if host.link is link:
            host.link = None
        host.open -= 1
        self._out.append(Close(link.id))
        if self._throttle is not None:
            self._throttle.forget(link.id)
        self._mark_ready(host, now)

    def _close_stream(self, stream: _Stream, now: float) -> None:
        link = stream.link
        assert link is not None
        if link.streams.pop(stream.stream, None) is None:
            return  # its link is being closed
        if link.id not in self._links:
            return
        data = link.http.reset(stream.stream)
        if data:
            self._out.append(Send(link.id, data))
        host = link.host
        if (
            host.pending
            and host.paused_until <= now
            and link.http.room > 0
            and (self._spacing is None or self._spacing.free_at(host.origin[1]) <= now)
        ):
            # The freed place goes to the host's next download, as a kept-alive HTTP/1.1
            # connection takes it: a link never idles with work waiting (``sequential``
            # would wait on it for good).
            self._open_stream(link, self._take(host), now)
            self._mark_ready(host, now)
        elif not link.streams and host.open == 1:  # none opening may bring it more work
            self._close_link(link, now)
        else:
            self._mark_ready(host, now)

    # --- segments: one file over several connections (core/segments.py) -----------
    def _maybe_split(self, conn: _Conn, head: Head, now: float) -> None:
        """Fetch the accepted file in segments when it is worth it and can be proven
        safe: a known size, a validator for If-Range, an answer that honours ranges."""
        d, opts = conn.download, self.options
        if d.size is None or not d.validator or d.size - d.position < 2 * opts.min_split_size:
            return
        if head.status != 206 and (head.text(_ACCEPT_RANGES) or "").strip().lower() != "bytes":
            return
        finished = [(0, d.position)] if d.position else []
        plan = Plan(d.size, opts.split, opts.min_split_size, finished)
        if len(plan.pieces) < 2:
            return
        d.split = self._new_split(d, plan, now, opened=True)  # conn.held is its Open
        self._take_piece(conn, d.split)  # the first piece: this answer's body starts it
        self._want_pieces(d, now)

    def _plan_from_record(self, d: t.Download) -> None:
        """Resume a file its control file says was fetched in segments: the ranges it
        lists stay, the gaps are fetched (as segments, with -s)."""
        finished, d.finished = d.finished, None
        assert finished is not None and d.size is not None
        plan = Plan(d.size, self.options.split, self.options.min_split_size, list(finished))
        if plan.complete:  # every byte is there: a range past the end (416) proves the version
            d.offset = d.size
            return
        d.split = self._new_split(d, plan, self._now)

    def _new_split(self, d: t.Download, plan: Plan, now: float, opened: bool = False) -> Split:
        """The split of ``d``: its ranges from the URL in use and from every mirror left
        (taken from ``d.sources``; those still usable go back if the split is dropped)."""
        mirrors: list[URL] = []
        if d.sources is not None:
            mirrors, d.sources.left = list(d.sources.left), deque()
        return Split(plan, now + CHECKPOINT_AFTER, [d.url, *mirrors], d.validator, opened)

    def _join(self, conn: _Conn, split: Split, url: URL, counted: bool = False) -> None:
        """``conn`` works on ``split``'s file, asking ``url`` (``counted``: as wanted)."""
        conn.source = url
        split.conns.add(conn.id)
        if not counted:
            split.using[url.text] += 1

    def _leave_split(self, conn: _Conn, split: Split) -> None:
        if conn.id in split.conns:
            split.conns.discard(conn.id)
            split.using[(conn.source or conn.download.url).text] -= 1
        if conn.piece is not None:
            split.plan.release(conn.piece)
            conn.piece = None

    def _take_piece(self, conn: _Conn, split: Split) -> bool:
        """Give ``conn`` the next range of ``split``'s file; False (and it is closed) when
        none is worth a request, or its source was dropped meanwhile."""
        if conn.id not in split.conns:  # a connection the download itself came with
            self._join(conn, split, conn.download.url)
        piece = None if conn.source not in split.sources else split.plan.take(conn.id)
        if piece is None:
            self._close(conn, self._now)
            return False
        conn.piece, conn.began = piece, (self._now, piece.done)
        piece.source = conn.source.text if conn.source is not None else None  # to blame
        return True

    def _piece_fields(self, conn: _Conn, piece: Piece) -> bytes:
        d, split = conn.download, conn.download.split
        assert split is not None and conn.source is not None
        validator = split.validators.get(conn.source.text)
        return encode_fields(d.request_headers(piece, conn.source, validator))

    def _want_pieces(self, d: t.Download, now: float) -> None:
        """Ask the sources' hosts for the connections ``d``'s plan can use now, one source
        at a time (``Split.pick``); ``_next_to_connect`` opens them."""
        split = d.split
        assert split is not None
        for _ in range(split.more_wanted()):
            url = split.pick()
            split.wanted += 1
            split.using[url.text] += 1
            host = self._host_for(url)
            host.wanted.append((d, split, url))
            self._mark_ready(host, now)

    def _next_to_connect(self, host: _Host) -> tuple[t.Download | None, URL | None]:
        """What a new connection to ``host`` is for: a file in segments that asked for one
        more (first: it is under way), and the source it asks; else the next download
        queued, and None."""
        while host.wanted:
            d, split, url = host.wanted.popleft()
            if split is d.split:
                split.wanted -= 1
                if d.state is FETCHING and url in split.sources:
                    return d, url
                split.using[url.text] -= 1
        return (self._take(host) if host.pending else None), None

    def _still_split(self, d: t.Download, now: float) -> bool:
        """Whether ``d`` goes on over its other connections (one more is asked for) after
        losing one uncounted; False: it has no other, and is queued as usual."""
        if d.split is None or not d.split.conns:
            return False
        self._want_pieces(d, now)
        return True

    def _on_piece_head(self, conn: _Conn, piece: Piece, head: Head, now: float) -> None:
        d, split, source, status = conn.download, conn.download.split, conn.source, head.status
        assert split is not None and source is not None and d.size is not None
        if status >= 400:
            if status in (429, 503):
                conn.host.polite.on_congestion()
            reason = f"HTTP {status} for bytes {piece.next}-{piece.end - 1}"
            self._attempt_failed(conn, HTTPStatusError(source.text, reason, status=status), now)
            return
        validator = t.validator_of(head)
        known = split.validators.get(source.text)  # None: a mirror's first answer
        verdict = judge(piece, status, t.content_range(head), validator, known, d.size)
        if verdict.action == "keep":
            split.validators.setdefault(source.text, validator)
            self._keep_piece(conn, split, piece, now)
        elif source != split.origin:  # a mirror not serving this file's bytes: not for it
            self._close(conn, now)
            self._drop_source(d, source, f"{verdict.reason} (as a mirror)", now)
        elif verdict.action == "degrade" and len(split.conns) > 1:
            split.plan.degrade()  # the others finish the file, taking this range too
            self._close(conn, now)
        else:
            self._restart_split(d, verdict.reason, now)

    def _keep_piece(self, conn: _Conn, split: Split, piece: Piece, now: float) -> None:
        d = conn.download
        if not split.opened:  # the run's first answer for it: the store opens the part
            split.opened = True
            conn.held = piece.next
            if self._starts:
                assert d.path is not None
                done = split.plan.bytes_done
                self._out.append(Started(d.id, d.job.url.text, d.path, done, d.size))
        self._want_pieces(d, now)

    def _write_piece(self, conn: _Conn, piece: Piece, data: Chunk, now: float) -> None:
        d, split = conn.download, conn.download.split
        assert split is not None
        if conn.held is not None:
            self._unhold(conn)
        at, count = piece.next, len(data)
        kept = split.plan.wrote(piece, count)
        if kept == count:
            self._out.append(Write(d.id, at, data))
        elif kept:  # the range shrank (another connection took its end) since ``pipeable``
            self._out.append(Write(d.id, at, _first(data, kept)))
        if split.plan.complete:
            self._close_split(split, now)
            self._publish(d)
        elif kept < count:  # the rest is another connection's range: this answer is done
            self._close(conn, now)
            self._want_pieces(d, now)
        elif now >= split.checkpoint_at:
            split.checkpoint_at = now + CHECKPOINT_AFTER
            self._out.append(Checkpoint(d.id))

    def _end_piece(self, conn: _Conn, piece: Piece, now: float) -> None:
        d, split = conn.download, conn.download.split
        if piece.remaining:
            reason = f"the range ended at byte {piece.next} of {piece.end}"
            self._attempt_failed(conn, ProtocolError(d.url.text, reason), now)
            return
        assert split is not None and conn.source is not None
        began, done = conn.began
        split.measured(conn.source, piece.done - done, now - began)
        split.plan.release(piece)
        conn.piece = None
        if conn.http.reusable and not split.better_than(conn.source):
            self._send_request(conn, now)  # its next range (or it is closed: none left)
        else:
            self._close(conn, now)
            self._want_pieces(d, now)

    def _piece_failed(self, d: t.Download, conn: _Conn, error: DownloadError, now: float) -> None:
        """One connection of a file in segments failed; the others go on.  Its source is
        dropped for this file once it failed --retries times, or for good at once."""
        split, source = d.split, conn.source
        assert split is not None and source is not None
        if error.retryable and self._source_retried(d, split, source, error.reason):
            self._want_pieces(d, now)
            return
        reason = self._gave_up(error.reason) if error.retryable else error.reason
        self._drop_source(d, source, reason, now, type(error), error.status)

    def _source_retried(self, d: t.Download, split: Split, source: URL, reason: str) -> bool:
        """Count a failure of ``source`` for ``d``; whether --retries allow another try
        (reported), else the caller drops the source."""
        split.failures[source.text] += 1
        tries = split.failures[source.text]
        if tries > self.options.retries:
            return False
        self._out.append(Retrying(d.id, d.job.url.text, reason, 0.0, tries))
        return True

    def _drop_source(
        self,
        d: t.Download,
        source: URL,
        reason: str,
        now: float,
        kind: type[DownloadError] = IntegrityError,
        status: int | None = None,
    ) -> None:
        """``source`` fails for this file; the file fails once every source has."""
        split = d.split
        assert split is not None
        split.drop(source, reason)
        if split.sources:
            self._want_pieces(d, now)
            return
        split.dropped.pop()  # ``_fail`` records the last one's reason, as any source's
        self._fail(d, kind(source.text, reason, status=status))

    def _close_split(self, split: Split, now: float) -> None:
        """Close every connection working on ``split``'s file."""
        for conn_id in list(split.conns):
            self._close(self._conns[conn_id], now)

    def _restart_split(self, d: t.Download, reason: str, now: float) -> None:
        """Another version answered a range: nothing on disk is spliced with it."""
        self._drop_split(d, now)
        d.size = d.etag = d.last_modified = None
        self._retry(d, ProtocolError(d.url.text, reason), now, wait=0.0)

    def _drop_split(self, d: t.Download, now: float) -> None:
        """Fetch ``d`` on one connection from now on (its others are closed); the ranges
        on disk are no prefix, so the next attempt starts from zero.  The mirrors still
        usable go back to ``d.sources``, for a failure to move to."""
        split, d.split = d.split, None
        assert split is not None
        self._close_split(split, now)
        if d.sources is not None:
            d.sources.left.extend(url for url in split.sources if url != d.url)
            d.sources.dropped += [(u, r) for u, r in split.dropped if u != d.url.text]
        d.offset = 0

    # --- through a proxy ----------------------------------------------------------
    def _connect_via(self, conn: _Conn, proxy: Proxy) -> None:
        """Connect to ``proxy``: a tunnel to the origin, or absolute-form requests."""
        scheme, name, port = conn.host.origin
        if scheme == "https" or proxy.tunnels_always:
            from .tunnel import make_tunnel

            conn.tunnel = make_tunnel(proxy, name, port, self.options.user_agent)
        else:
            authorization = proxy.authorization()
            conn.proxy_fields = (
                b""
                if authorization is None
                else f"Proxy-Authorization: {authorization}\r\n".encode()
            )
        self._out.append(Connect(conn.id, proxy.host, proxy.port, False))

    def _open_tunnel(self, conn: _Conn, now: float) -> None:
        tunnel = conn.tunnel
        assert tunnel is not None
        if tunnel.needs_address:  # socks5, socks4: the client resolves the origin's name
            self._out.append(Resolve(conn.id, conn.host.origin[1]))
            return
        self._tunnel_step(conn, tunnel.start, None, now)

    def _through_tunnel(self, conn: _Conn, data: bytes, now: float) -> None:
        tunnel = conn.tunnel
        assert tunnel is not None
        if not self._tunnel_step(conn, tunnel.receive, data, now) or not tunnel.ready:
            return
        scheme, name, _ = conn.host.origin
        if scheme == "https":  # TLS to the origin inside; then ``connected`` again
            self._out.append(StartTls(conn.id, name))
        else:
            self._send_request(conn, now)

    def _tunnel_step(
        self, conn: _Conn, step: Callable[..., bytes], arg: object, now: float
    ) -> bool:
        """Run one step of the tunnel and send what it answers; False if the proxy failed."""
        from .tunnel import TunnelError

        try:
            out = step(arg)
        except TunnelError as exc:
            error = self._proxy_error(conn, str(exc))
            final = error if exc.retryable else DownloadError(error.url, error.reason)
            self._attempt_failed(conn, final, now)
            return False
        if out:
            self._out.append(Send(conn.id, out))
        return True

    def _proxy_error(self, conn: _Conn, reason: str) -> NetworkError:
        assert conn.host.proxy is not None
        return NetworkError(conn.download.url.text, f"via proxy {conn.host.proxy.text}: {reason}")

    def _failure_via_proxy(
        self, conn: _Conn, failure: ConnectionFailure | None
    ) -> ConnectionFailure | None:
        """Name the proxy in the reason; an EOF before the tunnel is up is the proxy's."""
        proxy = conn.host.proxy
        assert proxy is not None
        if failure is None and conn.tunnel is not None and not conn.tunnel.ready:
            return ConnectionFailure(f"via proxy {proxy.text}: closed before the tunnel was set up")
        if failure is None:
            return None
        reason = failure.reason
        if failure.unresolved:  # the proxy's name, not the origin's: the host stays known
            reason = f"cannot resolve {proxy.host}: {reason}"
        return ConnectionFailure(
            f"via proxy {proxy.text}: {reason}", failure.retryable, failure.tls
        )

    def _feed(self, conn: _Conn, data: Chunk, now: float) -> None:
        """Parse ``data``; its head, body and end come back through ``conn``'s sink methods."""
        self._now = now
        try:
            conn.http.receive(data)
        except FramingError as exc:  # raised only while the exchange is live: conn is open
            self._unhold(conn)
            self._attempt_failed(conn, ProtocolError(conn.download.url.text, str(exc)), now)
            return
        if conn.held is not None or conn.saving is not None:  # the body goes on after this read
            self._unhold(conn)

    def _unhold(self, conn: _Conn) -> None:
        """Hand out what was held for a body that did not end in the read it began in: the
        store copies bytes out before the next event, so nothing may wait for one."""
        if conn.held is not None:
            d = conn.download
            assert d.path is not None
            pieces = None if d.split is None else d.job.pieces  # checked as they land
            self._out.append(Open(d.id, d.path, conn.held, d.record(), pieces))
        elif conn.saving is not None:
            self._out += conn.saving.split()
        conn.held = conn.saving = None

    def _on_head(self, conn: _Conn, head: Head, now: float) -> None:
        conn.answered = True
        d = conn.download
        if self._cookies is not None and head.find(_SET_COOKIE) is not None:
            self._cookies.store_cookies(d.url, head.every(_SET_COOKIE))  # redirects' too
        if conn.piece is not None:
            self._on_piece_head(conn, conn.piece, head, now)
            return
        decision = d.on_head(head, None if self._epoch is None else self._epoch + now)
        self._DECISIONS[type(decision)](self, conn, decision, head, now)

    # What each ``Download.on_head`` decision means for the connection and the download.
    def _accept(self, conn: _Conn, decision: t.Accept, head: Head, now: float) -> None:
        d = conn.download
        self._adopt_server_name(d, head)
        d.position = decision.offset
        conn.body_limit = d.body_limit()
        conn.checkpoint_at = now + CHECKPOINT_AFTER
        assert d.path is not None
        conn.held = decision.offset  # its Open, unless the body comes whole: see ``_write``
        if self.options.split > 1 and type(conn) is _Conn:
            self._maybe_split(conn, head, now)
        if self._starts:
            self._out.append(Started(d.id, d.job.url.text, d.path, decision.offset, d.size))

    def _follow(self, conn: _Conn, decision: t.Redirect, head: Head, now: float) -> None:
        self._close(conn, now)
        self._redirect(conn.download, decision.url, now)

    def _retry_later(self, conn: _Conn, decision: t.Retry, head: Head, now: float) -> None:
        if decision.pause_host:  # 429/503: fewer connections to it, before this one's slot frees
            conn.host.polite.on_congestion()
        self._close(conn, now)
        wait = self._retry(conn.download, decision.error, now, decision.wait)
        if decision.pause_host and wait:  # the whole host said "slow down"
            self._pause(conn.host, now + wait)

    def _restart(self, conn: _Conn, decision: t.Restart, head: Head, now: float) -> None:
        self._close(conn, now)
        d = conn.download
        d.offset, d.size, d.etag, d.last_modified = 0, None, None, None
        self._retry(d, ProtocolError(d.url.text, decision.reason), now, wait=0.0)

    def _refuse(self, conn: _Conn, decision: t.Fail, head: Head, now: float) -> None:
        self._close(conn, now)
        error = decision.error
        if head.status == 407 and conn.host.proxy is not None:  # the proxy's, not the origin's
            error = type(error)(error.url, self._proxy_error(conn, error.reason).reason, status=407)
        self._fail(conn.download, error)

    def _complete(self, conn: _Conn, decision: t.AlreadyComplete, head: Head, now: float) -> None:
        self._close(conn, now)
        self._publish(conn.download)

    _DECISIONS: ClassVar[dict[type, Callable[..., None]]] = {
        t.Accept: _accept,
        t.Redirect: _follow,
        t.Retry: _retry_later,
        t.Restart: _restart,
        t.Fail: _refuse,
        t.AlreadyComplete: _complete,
    }

    def _write(self, conn: _Conn, data: Chunk, now: float) -> None:
        if conn.piece is not None:
            self._write_piece(conn, conn.piece, data, now)
            return
        d = conn.download
        end = d.position + len(data)
        if conn.held is not None or conn.saving is not None:
            held = conn.held
            if held is not None and end == d.size and end <= conn.body_limit:
                conn.saving, conn.held = self._save(d, held, data), None  # ``_on_end`` next
                d.position = d.offset = end
                return
            self._unhold(conn)  # bytes past the whole body, or a body in pieces
        if end > conn.body_limit:
            self._attempt_failed(conn, d.body_overflow(end), now)
            return
        self._out.append(Write(d.id, d.position, data))
        d.position = d.offset = end
        if now >= conn.checkpoint_at and end != d.size:  # the last bytes: publication follows
            conn.checkpoint_at = math.inf
            self._out.append(Checkpoint(d.id))

    def _on_end(self, conn: _Conn, now: float) -> None:
        if conn.piece is not None:
            self._end_piece(conn, conn.piece, now)
            return
        d = conn.download
        saving, conn.saving = conn.saving, None
        if saving is None:
            self._unhold(conn)  # an empty body's Open
        problem = d.short_body()
        if problem is not None:
            self._attempt_failed(conn, problem, now)
            return
        d.size = d.position
        if saving is not None:
            d.move(PUBLISHING)
            self._out.append(saving)
        else:
            self._publish(d)
        if type(conn) is _Stream:
            conn.link.ended += 1  # type: ignore[union-attr]
            self._close(conn, now)
            return
        host = conn.host
        if host.polite.on_success():  # room for one more connection to it
            self._mark_ready(host, now)
        if (
            conn.http.reusable
            and host.pending
            and host.paused_until <= now
            and host.open <= host.polite.limit  # not kept past a lowered limit
        ):
            conn.download = self._take(host)
            self._send_request(conn, now)
        elif conn.proxy_fields is None or not conn.http.reusable or not self._move(conn, now):
            self._close(conn, now)

    def _move(self, conn: _Conn, now: float) -> bool:
        """Reuse a kept-alive connection to an HTTP proxy for another origin's download
        (absolute-form requests name their origin): keep-alive is per proxy there.  The
        origin that takes it must be ready (work, below --per-host, not paused)."""
        proxy = conn.host.proxy
        for host in self._ready:
            if (
                host.proxy is proxy
                and host.pending
                and host.open < host.polite.limit
                and host.paused_until <= now
            ):
                conn.host.open -= 1
                self._mark_ready(conn.host, now)
                host.open += 1
                conn.host, conn.download = host, self._take(host)
                self._send_request(conn, now)
                return True
        return False

    def _publish(self, d: t.Download) -> None:
        assert d.path is not None
        # The job's URL, not a redirect's: the store tags the file with it, and a re-run
        # recognises the file as its own only by the URL it was asked for.
        target, replace = d.target or d.path, self.options.overwrite
        d.move(PUBLISHING)
        self._out.append(Publish(d.id, d.path, d.size, d.checksum, d.job.url.text, target, replace))

    def _save(self, d: t.Download, offset: int, data: Chunk) -> Save:
        """The held ``Open``, ``data`` and what ``_publish`` would ask, in one action."""
        assert d.path is not None
        record, target, replace = d.record(), d.target or d.path, self.options.overwrite
        end = offset + len(data)
        return Save(
            d.id, d.path, offset, record, data, end, d.checksum, record.url, target, replace
        )

    def _attempt_failed(self, conn: _Conn, error: DownloadError, now: float) -> None:
        self._close(conn, now)
        d = conn.download
        # One of several connections of a file in segments (its source set as it joined).
        if d.split is not None and conn.source is not None and d.split.conns:
            self._piece_failed(d, conn, error, now)
        else:
            self._retry(d, error, now)

    def _sweep(self, now: float) -> None:
        """Abort attempts that stalled, or that crawl below --lowest-speed."""
        opts = self.options
        for conn in list(self._conns.values()):
            idle = now - conn.last_active
            if idle >= opts.timeout:
                conn.host.polite.on_congestion()  # a host that stalls is one to ask less of
                self._attempt_failed(
                    conn,
                    StallTimeout(
                        conn.download.url.text, f"timed out: no data for {opts.timeout:g} s"
                    ),
                    now,
                )
            elif (
                opts.lowest_speed
                and conn.exchanges  # connecting is --timeout's business
                and now - conn.window_start >= opts.lowest_speed_time
            ):
                rate = conn.window_bytes / (now - conn.window_start)
                if rate < opts.lowest_speed:
                    self._attempt_failed(
                        conn,
                        StallTimeout(
                            conn.download.url.text,
                            f"too slow: {rate:.0f} B/s < --lowest-speed {opts.lowest_speed}",
                        ),
                        now,
                    )
                conn.window_start, conn.window_bytes = now, 0
        self._next_sweep = now + self._sweep_every

    # --- downloads: naming, queueing, retries, endings ------------------------------
    def _prepare(self, d: t.Download, name: str) -> None:
        """Claim ``name`` for ``d`` and ``Prepare`` it, or the next free ``name.N``; fail
        ``d`` if it lands outside, or (--no-clobber) if another job has it."""
        names = self._intake
        names.release(d.id, d.path)
        try:
            path = d.resolve(name)
            while not names.free(path):
                if self.options.no_clobber and (other_id := names.claimant(path)) is not None:
                    other = names.url_of(other_id)
                    message = f"{path} is also the target of {other} (--no-clobber)"
                    self._fail(d, DestinationError(d.job.url.text, message))
                    return
                d.renames += 1
                path = d.resolve(d.candidate_name())
        except ValueError as exc:
            self._fail(d, DestinationError(d.job.url.text, str(exc)))
            return
        names.claim(d.id, path)
        d.path = path
        d.move(PREPARING)
        self._out.append(Prepare(d.id, path, d.job.url.text, d.checksum))

    def _redirect(self, d: t.Download, url: URL, now: float) -> None:
        """Follow to ``url``; the file keeps its name unless --trust-server-names."""
        d.url, d.hops = url, d.hops + 1
        if not self.options.trust_server_names or d.job.out is not None or d.path is None:
            self._enqueue(d, now)
            return
        if d.resolve(d.candidate_name()) == d.path:  # the same name: nothing to move
            self._enqueue(d, now)
            return
        d.renames = 0
        self._prepare(d, d.candidate_name())  # the store answers, then it is queued

    def _host_for(self, url: URL) -> _Host:
        host = self._hosts.get(url.origin)
        if host is None:
            prior = self.options.http2_prior_knowledge
            polite = Aimd(self.options.per_host)
            host = self._hosts[url.origin] = _Host(url.origin, polite, prior)
            if self._proxies is not None:
                host.proxy = self._proxies.for_origin(url.scheme, url.host)
        return host

    def _enqueue(self, d: t.Download, now: float) -> None:
        host = self._host_for(d.url)
        if host.gone is not None:
            kind, reason = host.gone
            self._fail(d, kind(d.url.text, reason))
            return
        d.move(QUEUED)
        host.pending.append(d)
        self._mark_ready(host, now)

    def _take(self, host: _Host) -> t.Download:
        """The next download queued at ``host``, now on a connection or a stream."""
        d = host.pending.popleft()
        d.move(FETCHING)
        return d

    def _requeue(self, host: _Host, d: t.Download) -> None:
        """Put ``d`` back first in ``host``'s queue (its connection is not to be used)."""
        d.move(QUEUED)
        host.pending.appendleft(d)

    def _abandon_host(self, host: _Host, kind: type[DownloadError], reason: str) -> None:
        """The host cannot be reached (its name does not exist, or its connections kept
        failing): its jobs, queued or still to come, fail with ``reason`` (one ``kind``
        of error) instead of each one trying again on its own."""
        host.gone = (kind, reason)
        while host.pending:
            d = host.pending.popleft()
            self._fail(d, kind(d.url.text, reason))

    def _unreachable(self, conn: _Conn, error: DownloadError, now: float) -> None:
        """A connection failed before its request (refused, timed out, TLS): the host's
        failure, not its download's.  The download waits at the front of the host's
        queue, uncounted, while the whole host backs off (the failures of one round of
        connections count once); after --retries such rounds in a row, or an error no
        retry mends, the host is given up and every job of it fails with one reason."""
        host, d = conn.host, conn.download
        self._close(conn, now)
        opts = self.options
        if host.paused_until <= now:  # the first of its round
            host.failures += 1
        if not error.retryable or host.failures > opts.retries:
            reason = self._gave_up(error.reason) if error.retryable else error.reason
            self._abandon_host(host, type(error), reason)
            self._fail(d, type(error)(d.url.text, reason, status=error.status))
            return
        self._requeue(host, d)
        if host.paused_until <= now:
            wait = backoff(host.failures, opts.retry_base, opts.max_retry_wait, self._jitter())
            self._out.append(Retrying(d.id, d.job.url.text, error.reason, wait, host.failures))
            self._pause(host, now + wait)

    def _retry(
        self, d: t.Download, error: DownloadError, now: float, wait: float | None = None
    ) -> float | None:
        """Schedule another attempt and return its delay, or fail ``d`` and return None."""
        if not self._may_retry(d, error):
            return None
        opts = self.options
        if wait is None:
            wait = backoff(d.attempts, opts.retry_base, opts.max_retry_wait, self._jitter())
        wait = min(wait, opts.max_retry_wait)
        self._out.append(Retrying(d.id, d.job.url.text, error.reason, wait, d.attempts))
        d.move(WAITING)
        heapq.heappush(self._timers, (now + wait, next(self._ids), d))
        return wait

    def _may_retry(self, d: t.Download, error: DownloadError) -> bool:
        """Count another attempt of ``d``, or fail it: ``error`` is final, or --retries
        are spent."""
        if not error.retryable:
            self._fail(d, error)
            return False
        d.attempts += 1
        if d.attempts > self.options.retries:
            reason = self._gave_up(error.reason)
            self._fail(d, type(error)(error.url, reason, status=error.status))
            return False
        return True

    def _gave_up(self, reason: str) -> str:
        """``reason`` once --retries are spent: the message says how many were tried."""
        return f"{reason} (gave up after {self.options.retries} retries)"

    def _adopt_server_name(self, d: t.Download, head: Head) -> None:
        """Publish under the server's Content-Disposition name, when it is usable.

        A server name is a suggestion: one that resolves outside the directory
        (impossible after sanitising, but checked) or that another job of this
        batch claims is ignored, and the URL's name stands.
        """
        name = d.server_name(head)
        if name is None:
            return
        try:
            target = d.resolve(name)
        except ValueError:
            return
        owner = self._intake.claimant(target)
        if target in (d.path, d.target) or owner not in (None, d.id):
            return
        self._intake.release(d.id, d.target)
        self._intake.claim(d.id, target)
        d.target = target

    def _pause(self, host: _Host, until: float) -> None:
        if until > host.paused_until:
            host.paused_until = until
            heapq.heappush(self._timers, (until, next(self._ids), host))

    def _finish(self, d: t.Download, *, skipped: bool) -> None:
        assert d.path is not None
        d.move(FINISHED)
        self._end(d)
        self._out.append(
            Finished(d.id, d.job.url.text, d.final_path or d.path, d.size or 0, skipped)
        )

    def _fail(self, d: t.Download, error: DownloadError) -> None:
        if d.split is not None:
            self._drop_split(d, self._now)
        if d.sources is not None:
            source = d.sources.next_after(error, d.size)
            # Not once publishing (a bad whole-file checksum): the part is discarded then,
            # and fetching it again elsewhere is not wired yet.
            if source is not None and d.state is not PUBLISHING:
                self._switch_source(d, source)
                return
            error = d.sources.every_reason(error, d.job.url.text)
        d.move(FAILED)
        self._end(d)
        self._out.append(Failed(d.id, d.job.url.text, error))

    def _switch_source(self, d: t.Download, source: URL) -> None:
        """Go on with the job's next URI, afresh: its own retries and redirects."""
        d.url = d.source = source
        d.attempts = d.hops = 0
        self._enqueue(d, self._now)

    def _end(self, d: t.Download) -> None:
        """Forget the ended job but for its names' claims (the batch's clashes need them)."""
        if self._throttle is not None:
            self._throttle.ended(d.id)
        self._unfinished -= 1
        self.done = not (self._unfinished or self._intake.more)
        self._downloads.pop(d.id, None)
        self._intake.ended(d.id, (d.path, d.target))

    # --- connections ----------------------------------------------------------------
    def _mark_ready(self, host: _Host, now: float) -> None:
        if (
            not host.queued
            and (host.pending or host.wanted)
            and self._has_room(host)
            and host.paused_until <= now
        ):
            host.queued = True
            self._ready.append(host)

    def _has_room(self, host: _Host) -> bool:
        """--per-host counts connections; over HTTP/2, one, with the streams it allows."""
        if host.link is not None:
            return host.link.http.room > 0
        if host.one and host.open:  # its streams wait for the first connection's SETTINGS
            return False
        return host.open < host.polite.limit

    def _fill(self, now: float) -> None:
        if self._throttle is not None and self._throttle.overdrawn(now):
            return  # no new transfer until the overall rate's debt is paid (core/rate.py)
        while self._ready and len(self._conns) < self.max_connections:
            host = self._ready.popleft()
            host.queued = False
            if not self._has_room(host) or host.paused_until > now:
                continue
            if self._spacing is not None and self._spaced(host, now):
                continue
            if host.link is not None:
                if host.pending:
                    self._open_stream(host.link, self._take(host), now)
                self._mark_ready(host, now)
                continue
            d, source = self._next_to_connect(host)
            if d is None:
                continue
            conn = _Conn(next(self._ids), host, d, now, self)
            if self._spacing is not None:  # one connection opens per turn, not all at once
                conn.turn = self._spacing.book(host.origin[1], now)
            if source is not None:  # a file in segments asked for it: it joins at once
                assert d.split is not None
                self._join(conn, d.split, source, counted=True)
            self._conns[conn.id] = conn
            host.open += 1
            if host.proxy is None:
                scheme, name, port = host.origin
                self._out.append(Connect(conn.id, name, port, scheme == "https"))
            else:
                self._connect_via(conn, host.proxy)
            self._mark_ready(host, now)
            if self._next_sweep is None:  # the first open connection: stalls are watched
                self._next_sweep = now + self._sweep_every

    def _close(self, conn: _Conn, now: float) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        if type(conn) is _Stream:
            self._close_stream(conn, now)
            return
        if self._throttle is not None:
            self._throttle.forget(conn.id)
        split = conn.download.split
        if split is not None:
            self._leave_split(conn, split)
        conn.http.abandon()
        self._out.append(Close(conn.id))
        conn.host.open -= 1
        self._mark_ready(conn.host, now)

    def _flush(self, now: float) -> list[Action]:
        if self._ready:
            self._fill(now)
        if self._links and self.done:  # kept for work that did not come
            for link in list(self._links.values()):
                self._close_link(link, now)
        if not self._conns:
            self._next_sweep = None  # nothing to watch until a connection opens
        out, self._out = self._out, []
        return out


def _first(data: Chunk, count: int) -> Chunk:
    """The first ``count`` bytes of ``data``; of ``Piped`` ones, the rest stays in the pipe
    (not ``emptied``: the engine clears it before its next body)."""
    return Piped(count, data.pipe) if isinstance(data, Piped) else data[:count]


def _proxy_choice(options: Options) -> ProxyChoice | None:
    """The batch's proxy rules, or None when no URL can go through a proxy (the usual
    case: then nothing about proxies is imported or asked per origin)."""
    if options.proxy is None and not options.proxies:
        return None
    from .proxy import ProxyChoice

    choice = ProxyChoice(options.proxy, dict(options.proxies), options.noproxy)
    return choice if choice.any else None


def _throttle(options: Options) -> Throttle | None:
    if not (options.max_rate or options.max_overall_rate):
        return None
    return Throttle(options.max_rate, options.max_overall_rate)


def _at_origin(conn: _Conn) -> bool:
    """Whether ``connected`` means the stream reaches the origin itself: not yet for a
    tunnel being set up, never for absolute-form requests to an HTTP proxy (HTTP/1.1)."""
    return conn.proxy_fields is None and (conn.tunnel is None or conn.tunnel.ready)
