"""A network, servers and a clock in memory, for driving ``Batch`` in virtual time.

- ``FileServer`` is a scripted HTTP/1.1 server for one origin: it serves
  resources with ETag/Last-Modified, Range and If-Range, and plays a per-request
  script of faults (``Step``: another status, a cut after N bytes followed by a
  reset, EOF or stall, a new version of the file, pieces of any size).
- ``Sim`` is the driver loop an engine would be.  It drives the engines' own
  glue (``midair.session.Session``, which carries out the store actions)
  with a seeded ``Batch``, a real ``DiskStore`` or the in-memory
  ``MemoryStore``, and a virtual clock, all injected; it delivers server bytes in time order
  and jumps the clock to the next delivery or to ``next_deadline()``.

After every call the driver checks the connection limits (global and per
origin), that it agrees with the batch about which connections are open, that
no download ends twice; every run is bounded in steps, so a scheduler that
never finishes fails instead of hanging.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field

from midair.core.actions import (
    Action,
    Checkpoint,
    Close,
    Connect,
    ConnectionFailure,
    Discard,
    Disk,
    Failed,
    Finished,
    Hold,
    NetAction,
    OnDisk,
    Open,
    Prepare,
    Publish,
    Release,
    Resume,
    Retrying,
    Save,
    Send,
    Write,
)
from midair.core.batch import Batch
from midair.core.cookies import Cookies
from midair.core.errors import DownloadError, IntegrityError
from midair.core.jobs import Job, Options
from midair.core.urls import parse_url
from midair.run import Run
from midair.session import Session
from midair.store import Store

Origin = tuple[str, str, int]
REASONS = {
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    404: "Not Found",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def origin(url: str) -> Origin:
    return parse_url(url).origin


# --- what a server sees and answers -----------------------------------------------------
@dataclass(frozen=True)
class Request:
    target: str
    headers: dict[str, str]  # names lower-cased
    time: float
    conn: int

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_request(data: bytes, time: float, conn: int) -> Request:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and not rest, f"a GET request is one head and nothing else: {data!r}"
    line, *fields = head.decode("ascii").split("\r\n")
    method, target, version = line.split(" ")
    assert (method, version) == ("GET", "HTTP/1.1"), line
    headers: dict[str, str] = {}
    for f in fields:
        name, _, value = f.partition(":")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    return Request(target, headers, time, conn)


@dataclass
class Reply:
    """Response bytes and how they travel.

    ``pieces`` are offsets into ``data`` where the bytes are split; ``cut``
    sends only ``data[:cut]``; ``then`` says what the connection does after
    what was sent: ``keep`` (stays open for the next request), ``close`` (EOF),
    ``reset`` (an error), ``stall`` (silence).
    """

    data: bytes
    pieces: tuple[int, ...] = ()
    cut: int | None = None
    then: str = "keep"
    delay: float = 0.01
    gap: float = 0.01


def response(
    status: int,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    framing: str = "length",
    chunk: int = 7,
    close: bool = False,
) -> tuple[bytes, int]:
    """Response bytes and the length of the head.  ``framing``: length, chunked or close."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Whatever')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        encoded = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk])
                for i in range(0, len(body), chunk)
            )
            + b"0\r\n\r\n"
        )
    elif framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        encoded = body
    else:
        encoded = body
    if close or framing == "close":
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + encoded, len(head)


def reply(
    status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), **kwargs: object
) -> Reply:
    """A plain keep-alive reply (``close=True`` for Connection: close)."""
    close = bool(kwargs.pop("close", False))
    data, _ = response(status, body, headers, close=close)
    kwargs.setdefault("then", "close" if close else "keep")
    return Reply(data, **kwargs)  # type: ignore[arg-type]


Handler = Callable[[Request], Reply]


@dataclass
class Step:
    """What the server does for one request of a resource, instead of the plain answer.

    ``status`` other than 200 answers that status (``headers`` added, e.g.
    Retry-After or Location).  ``change`` first replaces the content (a new
    version with new validators).  ``cut`` sends only that many bytes of the
    response, then ``then``.  ``ignore_if_range`` serves the range even when
    the validator does not match (a broken server); ``ignore_range`` answers 200
    with the whole body whatever Range asks.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    change: bytes | None = None
    cut: int | None = None
    then: str = "reset"
    pieces: tuple[int, ...] = ()
    ignore_if_range: bool = False
    ignore_range: bool = False
    close: bool = False


@dataclass
class Resource:
    body: bytes
    etag: bool = True
    last_modified: bool = False
    framing: str = "length"
    version: int = 1
    steps: deque[Step] = field(default_factory=deque)
    ranges: bool = True  # honours Range (and says so: Accept-Ranges)

    def validators(self) -> list[tuple[str, str]]:
        out = [("Accept-Ranges", "bytes")] if self.ranges else []
        if self.etag:
            out.append(("ETag", f'"v{self.version}-{len(self.body)}"'))
        if self.last_modified:
            out.append(("Last-Modified", f"Mon, 01 Jan 2024 00:00:{self.version % 60:02d} GMT"))
        return out


class FileServer:
    """One origin's files.  Call it with a ``Request`` to get the ``Reply``."""

    def __init__(
        self,
        *,
        keep_alive: bool = True,
        delay: float = 0.01,
        gap: float = 0.01,
        piece: int | None = None,
    ) -> None:
        self.resources: dict[str, Resource] = {}
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.keep_alive, self.delay, self.gap, self.piece = keep_alive, delay, gap, piece

    def add(self, path: str, body: bytes, *steps: Step, **kwargs: object) -> Resource:
        res = Resource(body, steps=deque(steps), **kwargs)  # type: ignore[arg-type]
        self.resources[path] = res
        return res

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.route(path, lambda req: reply(status, headers=[("Location", location)]))

    def __call__(self, req: Request) -> Reply:
        self.requests.append(req)
        if req.target in self.routes:
            return self.routes[req.target](req)
        res = self.resources.get(req.target)
        if res is None:
            return reply(404, b"not here")
        step = res.steps.popleft() if res.steps else Step()
        if step.change is not None:
            res.body, res.version = step.change, res.version + 1
        close = step.close or not self.keep_alive
        if step.status != 200:
            data, _ = response(step.status, b"no", step.headers, close=close)
            return self._travel(data, 0, step, close)
        status, headers, body = self._answer(res, req, step)
        framing = "length" if status == 416 else res.framing
        data, head_len = response(
            status, body, [*headers, *step.headers], framing=framing, close=close
        )
        return self._travel(data, head_len, step, close or framing == "close")

    def _answer(
        self, res: Resource, req: Request, step: Step
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = res.validators()
        wanted = req.header("range")
        if wanted is None or not res.ranges or step.ignore_range:
            return 200, headers, res.body
        assert wanted.startswith("bytes="), wanted
        first, _, last = wanted[6:].partition("-")
        start = int(first)
        validator = req.header("if-range")
        matches = validator is None or validator in [v for _, v in headers]
        if not matches and not step.ignore_if_range:
            return 200, headers, res.body
        size = len(res.body)
        if start >= size:
            return 416, [("Content-Range", f"bytes */{size}")], b""
        end = min(int(last) + 1, size) if last else size
        return (
            206,
            [*headers, ("Content-Range", f"bytes {start}-{end - 1}/{size}")],
            res.body[start:end],
        )

    def _travel(self, data: bytes, head_len: int, step: Step, close: bool) -> Reply:
        pieces = step.pieces
        if not pieces and self.piece:
            pieces = tuple(range(self.piece, len(data), self.piece))
        cut = None if step.cut is None else min(head_len + step.cut, len(data) - 1)
        then = step.then if cut is not None else ("close" if close else "keep")
        return Reply(data, pieces, cut, then, self.delay, self.gap)


# --- stores ----------------------------------------------------------------------------
class DiskStore(Store):
    """The real store, plus what the tests ask of it: it publishes in the caller's thread,
    so a run in virtual time is deterministic."""

    def __init__(self) -> None:
        super().__init__(background=False)

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


class MemoryStore:
    """The store's rules over dicts: fast, for large virtual runs."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.tags: dict[str, tuple[str, int]] = {}
        self.parts: dict[str, bytearray] = {}
        self.controls: dict[str, Resume] = {}
        self._records: dict[int, tuple[str, Resume]] = {}

    def prepare(self, action: Prepare) -> OnDisk:
        path = action.path
        if path in self.files:
            data, tag = self.files[path], self.tags.get(path)
            ours = tag is not None and tag[0] == action.url
            if action.checksum is not None:
                digest = hashlib.new(action.checksum.algorithm, data).hexdigest()
                if digest == action.checksum.hexdigest:
                    return OnDisk(Disk.COMPLETE, len(data))
            elif ours and tag is not None and tag[1] == len(data):
                return OnDisk(Disk.COMPLETE, len(data))
            if ours:
                return OnDisk(Disk.FRESH)
            return OnDisk(Disk.TAKEN) if tag is not None else OnDisk(Disk.FOREIGN)
        if path in self.parts:
            return OnDisk(Disk.PARTIAL, len(self.parts[path]), self.controls.get(path))
        return OnDisk(Disk.FRESH)

    def survey(self, directories: Iterable[str], claimed: Container[str]) -> dict[str, str | None]:
        """``Store.survey`` over the dicts: the owner of every file not ``claimed``."""
        wanted = {d.rstrip("/") or "/" for d in directories}
        owners: dict[str, str | None] = {}
        for path, record in self.controls.items():
            if path in self.parts and path not in self.files:
                owners[path] = record.url
        for path in self.files:
            tag = self.tags.get(path)
            owners[path] = tag[0] if tag is not None else None
        return {
            path: url
            for path, url in owners.items()
            if path not in claimed and (path.rpartition("/")[0] or "/") in wanted
        }

    def open(self, action: Open | Save) -> None:
        part = self.parts.setdefault(action.path, bytearray())
        if not action.record.ranges:  # a part written in segments keeps what it holds
            del part[action.offset :]
            part.extend(bytes(action.offset - len(part)))
        self._records[action.download] = (action.path, action.record)
        if action.path in self.controls:
            self.controls[action.path] = action.record

    def checkpoint(self, action: Checkpoint) -> None:
        path, record = self._records[action.download]
        self.controls[path] = record

    def write(self, action: Write | Save) -> None:
        path, record = self._records[action.download]
        part = self.parts[path]
        if record.ranges is not None:  # in segments: a write lands anywhere
            part.extend(bytes(max(0, action.offset - len(part))))
        assert len(part) >= action.offset, "a write leaves a hole"
        part[action.offset : action.offset + len(action.data)] = action.data

    def publish(self, action: Publish | Save) -> None:
        part = self.parts[action.path]
        if action.size is not None and len(part) != action.size:
            raise IntegrityError(action.url, f"has {len(part)} bytes, expected {action.size}")
        if action.checksum is not None:
            digest = hashlib.new(action.checksum.algorithm, part).hexdigest()
            if digest != action.checksum.hexdigest:
                raise IntegrityError(action.url, "checksum mismatch")
        record = self._records.pop(action.download, None)
        self.files[action.path] = bytes(self.parts.pop(action.path))
        self.controls.pop(action.path, None)
        self.tags[action.path] = (record[1].url if record else action.url, len(part))

    def save(self, action: Save) -> bool:
        self.open(action)
        self.write(action)
        return self.submit(action)

    def submit(self, action: Publish | Save) -> bool:
        self.publish(action)
        return False  # published here and now: nothing for ``collect``

    def collect(self) -> list[tuple[int, DownloadError | None]]:
        return []

    pending = 0

    def discard(self, action: Discard) -> None:
        self._records.pop(action.download, None)
        self.parts.pop(action.path, None)
        self.controls.pop(action.path, None)

    def close(self) -> None:
        for path, record in self._records.values():
            self.controls.setdefault(path, record)

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)


AnyStore = DiskStore | MemoryStore


class LoggingStore:
    """Wraps a store: records every file action with the virtual time, then carries it out."""

    def __init__(self, inner: AnyStore, sim: Sim) -> None:
        self.inner, self.sim = inner, sim

    def __getattr__(self, name: str) -> Callable[..., object]:
        method = getattr(self.inner, name)
        if name not in ("prepare", "open", "checkpoint", "write", "save", "submit", "discard"):
            return method  # type: ignore[no-any-return]

        def logged(action: Action) -> object:
            if isinstance(action, Prepare):
                self.sim.paths[action.download] = action.path
            if self.sim.keep_log:
                self.sim.log.append((self.sim.now, action))
            return method(action)

        return logged


# --- the driver ------------------------------------------------------------------------
@dataclass
class _SimConn:
    origin: Origin
    connected: bool = False
    alive: bool = True
    doomed: bool = False  # the server is done with it: no more answers
    ready_at: float = 0.0  # the server's next byte cannot leave before this
    held: bool = False  # a rate limit's Hold: what arrives waits until its Release
    waiting: list[tuple[str, bytes]] = field(default_factory=list)


class Sim:
    """Run a batch against in-memory servers in virtual time; see the module docstring."""

    def __init__(
        self,
        jobs: Iterable[Job | str],
        options: Options,
        servers: dict[str, Handler],
        *,
        store: AnyStore | None = None,
        seed: int = 0,
        connect_delay: float = 0.01,
        max_steps: int = 200_000,
        log: bool = True,
        cookies: Cookies | None = None,
        epoch: float | None = None,
    ) -> None:
        self.jobs = [j if isinstance(j, Job) else Job.from_url(j) for j in jobs]
        self.options = options
        self.servers = {origin(url): handler for url, handler in servers.items()}
        self.now = 0.0
        self.store: AnyStore = store if store is not None else MemoryStore()
        # The engines' own glue, with a seeded batch, the chosen store and the virtual clock.
        self.run_state = Run(self.jobs, options, listener=self._report)
        self.jobs = self.run_state.jobs  # a URL given twice (to one name) is one job
        self.batch = Batch(self.run_state.jobs, options, seed=seed, cookies=cookies, epoch=epoch)
        self.session = Session(
            self.run_state,
            batch=self.batch,
            clock=lambda: self.now,
            store=LoggingStore(self.store, self),
        )  # type: ignore[arg-type]
        self.connect_delay = connect_delay
        self.max_steps = max_steps
        self.keep_log = log
        self.steps = 0
        self.log: list[tuple[float, Action]] = []
        self.paths: dict[int, str] = {}
        self.finished: dict[int, Finished] = {}
        self.failed: dict[int, Failed] = {}
        self.retrying: list[tuple[float, Retrying]] = []
        self.connects: Counter[Origin] = Counter()
        self.sends: list[tuple[Origin, Request]] = []
        self.max_open = 0
        self.delivered: Counter[Origin] = Counter()  # bytes each origin's answers delivered
        # Connections to refuse before an origin accepts (counted down), and origins whose
        # every connection fails so (a TLS handshake, say).
        self.refusals: Counter[Origin] = Counter()
        self.connect_failures: dict[Origin, ConnectionFailure] = {}
        self._failures: dict[int, ConnectionFailure] = {}
        self.max_per_origin: Counter[Origin] = Counter()
        self.opened: list[tuple[float, Origin, int]] = []  # at each Connect: open to it then
        self._conns: dict[int, _SimConn] = {}
        self._open: Counter[Origin] = Counter()
        self._queue: list[tuple[float, int, int, str, bytes]] = []
        self._seq = itertools.count()

    # --- running ----------------------------------------------------------------
    def run(self) -> Sim:
        self._call(self.session.start)
        while not self.session.done:
            self.steps += 1
            assert self.steps <= self.max_steps, f"no end after {self.max_steps} steps"
            t_net = self._queue[0][0] if self._queue else None
            t_timer = self.session.next_deadline()  # the batch's, or the session's backlog
            assert t_net is not None or t_timer is not None, "stuck: nothing to wait for"
            if t_net is not None and (t_timer is None or t_net <= t_timer):
                self._deliver(*heapq.heappop(self._queue))
            else:
                assert t_timer is not None
                self.now = max(self.now, t_timer)
                self._call(self.session.timer)
        assert not any(c.alive for c in self._conns.values()), "connections left open"
        assert len(self.finished) + len(self.failed) == len(self.jobs)
        results = self.run_state.results
        assert (len(results.successes), len(results.failures)) == (
            len(self.finished),
            len(self.failed),
        )
        self.session.close()
        return self

    def _deliver(self, time: float, _: int, conn: int, kind: str, data: bytes) -> None:
        self.now = max(self.now, time)
        c = self._conns[conn]
        if not c.alive:
            return
        if c.held and kind != "connected":  # the engine reads nothing of it meanwhile
            c.waiting.append((kind, data))
            return
        if kind == "connected":
            c.connected = True
            self._call(self.session.connected, conn)
        elif kind == "data":
            self.delivered[c.origin] += len(data)
            self._call(self.session.received, conn, data)
        elif kind == "eof":
            self._call(self.session.closed, conn)
        else:
            failure = self._failures.pop(conn, None) or ConnectionFailure(kind)
            self._call(self.session.closed, conn, failure)
        if kind not in ("connected", "data"):
            assert not c.alive, f"the batch kept connection {conn} after it closed"

    def _call(self, method: Callable[..., list[NetAction]], *args: object) -> None:
        actions = method(*args)
        if self.run_state.error is not None:  # the session keeps it from engines; not from tests
            raise self.run_state.error
        for action in actions:
            if self.keep_log:
                self.log.append((self.now, action))
            if isinstance(action, Connect):
                self._connect(action)
            elif isinstance(action, Send):
                self._send(action)
            elif isinstance(action, Hold | Release):
                self._hold(action)
            else:
                self._close(action)
        assert sum(self._open.values()) == self.batch.open_connections

    def _report(self, action: Action) -> None:
        if self.keep_log:
            self.log.append((self.now, action))
        if isinstance(action, Finished | Failed):
            ident = action.download
            assert ident not in self.finished and ident not in self.failed, (
                f"download {ident} ended twice"
            )
            if isinstance(action, Finished):
                self.finished[ident] = action
            else:
                self.failed[ident] = action
        elif isinstance(action, Retrying):
            self.retrying.append((self.now, action))

    def _connect(self, action: Connect) -> None:
        key: Origin = ("https" if action.tls else "http", action.host, action.port)
        assert action.conn not in self._conns
        self._conns[action.conn] = _SimConn(key)
        self.connects[key] += 1
        self._open[key] += 1
        total = sum(self._open.values())
        assert total <= self.batch.max_connections <= self.options.concurrency, total
        assert self._open[key] <= self.options.per_host, f"{self._open[key]} to {key}"
        self.max_open = max(self.max_open, total)
        self.max_per_origin[key] = max(self.max_per_origin[key], self._open[key])
        self.opened.append((self.now, key, self._open[key]))
        kind = "connected" if key in self.servers else "connection refused"
        if self.refusals[key]:  # a server that refuses its next few connections
            self.refusals[key] -= 1
            kind = "connection refused"
        failure = self.connect_failures.get(key)
        if failure is not None:
            self._failures[action.conn] = failure
            kind = "failure"
        self._schedule(self.now + self.connect_delay, action.conn, kind)

    def _send(self, action: Send) -> None:
        c = self._conns[action.conn]
        assert c.alive and c.connected, f"Send on connection {action.conn} that is not up"
        request = parse_request(action.data, self.now, action.conn)
        self.sends.append((c.origin, request))
        if c.doomed:
            return
        answer = self.servers[c.origin](request)
        data = answer.data if answer.cut is None else answer.data[: answer.cut]
        t = max(self.now, c.ready_at) + answer.delay
        bounds = sorted({p for p in answer.pieces if 0 < p < len(data)} | {len(data)})
        start = 0
        for end in bounds:
            if end > start:
                self._schedule(t, action.conn, "data", data[start:end])
                t += answer.gap
            start = end
        c.ready_at = t
        if answer.then != "keep":
            c.doomed = True
            if answer.then == "close":
                self._schedule(t, action.conn, "eof")
            elif answer.then == "reset":
                self._schedule(t, action.conn, "connection reset by peer")

    def _hold(self, action: Hold | Release) -> None:
        c = self._conns[action.conn]
        assert c.alive, f"{action} of connection {action.conn} that is closed"
        c.held = isinstance(action, Hold)
        if not c.held:
            for kind, data in c.waiting:  # read now, in the order they came
                self._schedule(self.now, action.conn, kind, data)
            c.waiting.clear()

    def _close(self, action: Close) -> None:
        c = self._conns[action.conn]
        if c.alive:
            c.alive = False
            self._open[c.origin] -= 1

    def _schedule(self, time: float, conn: int, kind: str, data: bytes = b"") -> None:
        heapq.heappush(self._queue, (time, next(self._seq), conn, kind, data))

    # --- what tests look at -------------------------------------------------------
    def content(self, ident: int) -> bytes | None:
        return self.store.read(self.paths[ident])

    def actions(self, kind: type | tuple[type, ...]) -> list[Action]:
        return [a for _, a in self.log if isinstance(a, kind)]


def run(
    jobs: Iterable[Job | str],
    servers: dict[str, Handler],
    *,
    store: AnyStore | None = None,
    seed: int = 0,
    **options: object,
) -> Sim:
    """Build options (directory defaults to a virtual one) and run to the end."""
    options.setdefault("directory", "/sim")
    return Sim(jobs, Options(**options), servers, store=store, seed=seed).run()  # type: ignore[arg-type]
