"""Host names to addresses, never on an event loop: one lookup per name, shared and cached.

``getaddrinfo`` blocks, for as long as the DNS server takes; called inside a
loop it stalls every transfer (100 names answered 0.3 s late took 30.8 s with
``epoll``).  A run's ``Resolver`` therefore:

- answers IP literals and ``localhost`` at once, on the caller's thread
  (``getaddrinfo`` parses a literal, and reads /etc/hosts for ``localhost``:
  no DNS, no thread, so a batch on 127.0.0.1 pays nothing);
- looks every other name up once, however many connections want it: the first
  to ask starts the lookup, the others wait for the same answer;
- keeps the answer, and a failure that says the name does not exist, for
  ``CACHE_SECONDS`` (``getaddrinfo`` gives no TTL, so a fixed cap: long enough
  for a batch to reuse, short enough to follow a moved host); a temporary
  failure (EAI_AGAIN) is not kept, so the next attempt asks again.

Event engines (``resolve``) have the lookup run on ``POOL``, daemon threads
started on the first name that needs one (a lookup stuck on a dead server must
not hold up the exit), and the answer handed to a callback on a pool thread,
which posts it to the loop through the engine's own wake-up.  Blocking engines
(``resolve_blocking``) start the lookup the same way (or on a greenlet, with
their runtime's lookup) and wait for the answer on their runtime's event, never
inside ``getaddrinfo``: ``stop`` ends every such wait at once, so a stop ends the
run within a second however long the DNS server takes.  ``prefetch`` starts
lookups ahead, for ``sequential``, which would otherwise make one at a time.  What a failed lookup
means for the host's other jobs is the core's decision (``Batch.closed``).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    import queue
    from typing import Any

    AddrInfo = tuple[Any, ...]  # one getaddrinfo result
else:
    AddrInfo = tuple  # the same at run time, without typing's Any
Answer = list[AddrInfo] | OSError  # addresses, or why there are none
Lookup = Callable[[str], list[AddrInfo]]  # a blocking getaddrinfo of a name, port 0
Done = Callable[[Answer], None]

Task = Callable[[], None]

CACHE_SECONDS = 60.0
POOL_SIZE = 32  # lookups in flight at once: 100 names at 0.3 s each in ~1 s


def lookup(host: str) -> list[AddrInfo]:
    """``getaddrinfo`` for TCP to ``host``, port 0 (each caller sets its own).

    An ASCII host goes as bytes: a str goes through the ``idna`` codec first,
    whose import (with ``stringprep``) is ~0.6 ms of every start for nothing, the
    core's hosts being ASCII already.
    """
    return socket.getaddrinfo(_name(host), 0, type=socket.SOCK_STREAM)


def literal(host: str, port: int) -> list[AddrInfo] | None:
    """The address of an IP literal, parsed without any lookup; None for a name."""
    try:
        return socket.getaddrinfo(
            _name(host), port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        return None


def _name(host: str) -> bytes | str:
    return host.encode("ascii") if host.isascii() else host


def with_port(addresses: list[AddrInfo], port: int) -> list[AddrInfo]:
    """``addresses`` (looked up for port 0) for ``port``; IPv6 keeps flow and scope."""
    return [(*info[:4], (info[4][0], port, *info[4][2:])) for info in addresses]


def kept(answer: Answer) -> bool:
    """Whether an answer may serve later connections: not a temporary failure."""
    return not (isinstance(answer, socket.gaierror) and answer.errno == socket.EAI_AGAIN)


class Resolver:
    """One run's names: lookups in flight and answers kept; safe from any thread."""

    def __init__(
        self,
        look: Lookup = lookup,
        event: Callable[[], Any] = threading.Event,  # its set() and wait()
        clock: Callable[[], float] = time.monotonic,
        start: Callable[[Task], object] | None = None,
    ) -> None:
        """``look`` and ``event``: the runtime's blocking lookup and what a caller of
        ``resolve_blocking`` waits on (gevent's for green); ``clock`` ages answers;
        ``start`` runs a blocking caller's lookup elsewhere (``POOL``, or a greenlet)."""
        self.look, self.event, self.clock = look, event, clock
        self.start = start or _on_pool
        self._lock = threading.Lock()  # never held across a lookup
        self._answers: dict[str, tuple[float, Answer]] = {}  # name -> (expiry, answer)
        self._waiting: dict[str, list[Done]] = {}  # names being looked up -> who waits
        self.stopped = False  # the run stopped: blocking callers wait no more

    # --- what engines call ------------------------------------------------------------
    def resolve(self, host: str, port: int, done: Done) -> list[AddrInfo] | None:
        """Addresses now (raises OSError if known to fail), or None: ``done`` gets them
        later, on a pool thread."""
        now = self.now(host, port)
        if now is None and self.join(host, lambda answer: done(_for_port(answer, port))):
            POOL.submit(functools.partial(self.look_up, host))
        return now

    def answer(self, host: str, port: int, done: Done) -> Answer | None:
        """As ``resolve``, with a known failure returned instead of raised."""
        try:
            return self.resolve(host, port, done)
        except OSError as exc:
            return exc

    def resolve_blocking(self, host: str, port: int) -> list[AddrInfo]:
        """Addresses, waited for on the runtime's event; raises OSError once stopped."""
        now = self.now(host, port)
        if now is not None:
            return now
        wait = _Wait(self.event())
        if self.join(host, wait):
            self.start(functools.partial(self.look_up, host))
        if self.stopped:  # checked after joining: a stop between is not missed
            wait(STOPPED)
        wait.ready.wait()
        return addresses_of(_for_port(wait.answer, port))

    def stop(self) -> None:
        """The run stopped: every blocking caller's wait ends now, with ``STOPPED``.

        Call it where the runtime's events may be set (any thread for threading's; the
        hub's thread for gevent's).  The lookups go on; their answers are still kept."""
        self.stopped = True
        with self._lock:
            waits = [done for dones in self._waiting.values() for done in dones]
        for done in waits:
            if isinstance(done, _Wait):  # an event engine's callback is its loop's affair
                done(STOPPED)

    def prefetch(self, hosts: list[str]) -> None:
        """Start looking up ``hosts`` now, answers to be kept for the connections to come."""
        for host in hosts:
            if self.now(host, 0) is None and self.join(host, _ignore):
                POOL.submit(functools.partial(self.look_up, host))

    # --- the shared state -------------------------------------------------------------
    def now(self, host: str, port: int) -> list[AddrInfo] | None:
        """A literal's or a kept answer's addresses (raises a kept failure); else None."""
        if host == "localhost" or host.endswith(".localhost"):
            return lookup_now(host, port)
        addresses = literal(host, port)
        if addresses is not None:
            return addresses
        with self._lock:
            expiry, answer = self._answers.get(host, (0.0, []))
        if expiry <= self.clock():
            return None
        return addresses_of(_for_port(answer, port))

    def join(self, host: str, done: Done) -> bool:
        """Wait for ``host``'s answer; True for the first to wait, who must look it up."""
        with self._lock:
            expiry, answer = self._answers.get(host, (0.0, []))
            fresh = expiry > self.clock()  # kept since ``now`` looked: no second lookup
            first = not fresh and host not in self._waiting
            if not fresh:
                self._waiting.setdefault(host, []).append(done)
        if fresh:
            done(answer)
        return first

    def look_up(self, host: str) -> None:
        try:
            answer: Answer = self.look(host)
        except OSError as exc:  # gaierror, or a socket the system would not give
            answer = exc
        self.settle(host, answer)

    def settle(self, host: str, answer: Answer) -> None:
        """Keep ``answer`` (unless temporary) and hand it to everyone waiting for it."""
        with self._lock:
            if kept(answer):
                self._answers[host] = (self.clock() + CACHE_SECONDS, answer)
            waiting = self._waiting.pop(host, [])
        for done in waiting:
            done(answer)


def socks_address(host: str, answer: Answer) -> tuple[str | None, str]:
    """What to tell the session's ``resolved`` for a SOCKS proxy that takes addresses:
    ``host``'s first IPv4 address (SOCKS4 has no other), else its first; or None and why."""
    if isinstance(answer, OSError) or not answer:
        return None, f"cannot resolve host {host}: {_why(answer)}"
    ipv4 = [info for info in answer if info[0] == socket.AF_INET]
    return str((ipv4 or answer)[0][4][0]), ""


def _why(answer: Answer) -> str:
    if isinstance(answer, OSError):
        return str(answer.strerror or answer)
    return "no address"


def lookup_now(host: str, port: int) -> list[AddrInfo]:
    return with_port(lookup(host), port)


class _Wait:
    """A blocking caller's waiter: the answer, and the event its caller waits on."""

    def __init__(self, ready: Any) -> None:  # a threading.Event, or gevent's
        self.ready = ready
        self.answer: Answer = []

    def __call__(self, answer: Answer) -> None:
        if not self.ready.is_set():  # the first of the answer and a stop counts
            self.answer = answer
            self.ready.set()


STOPPED = OSError("stopped while the name was looked up")


def _on_pool(task: Task) -> None:
    POOL.submit(task)  # the pool of now: a forked child gets its own


def _ignore(answer: Answer) -> None:
    """A prefetch's waiter: the answer is kept, nobody needs it yet."""


def _for_port(answer: Answer, port: int) -> Answer:
    return answer if isinstance(answer, OSError) else with_port(answer, port)


def addresses_of(answer: Answer) -> list[AddrInfo]:
    """The addresses an answer holds, or its error raised."""
    if isinstance(answer, OSError):  # a copy: one kept error raised by many threads
        raise type(answer)(*answer.args)  # would gather all their tracebacks
    return answer


class Pool:
    """Daemon threads running lookups, started one per submission up to ``size``.

    Its queue is made on the first name (``queue`` is ~0.3 ms of import a batch on
    IP literals never needs)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.threads = 0
        self.tasks: queue.SimpleQueue[Task] | None = None
        self._lock = threading.Lock()

    def submit(self, task: Task) -> None:
        with self._lock:
            if self.tasks is None:
                import queue

                self.tasks = queue.SimpleQueue()
            if self.threads < self.size:
                self.threads += 1
                threading.Thread(
                    target=self._work, args=(self.tasks,), name="midair-resolve", daemon=True
                ).start()
        self.tasks.put(task)

    @staticmethod
    def _work(tasks: queue.SimpleQueue[Task]) -> None:
        while True:
            tasks.get()()


POOL = Pool(POOL_SIZE)


def _reset_after_fork() -> None:
    """A forked child has none of its parent's threads: give it a pool of its own."""
    global POOL
    POOL = Pool(POOL_SIZE)


os.register_at_fork(after_in_child=_reset_after_fork)
