"""The engines' resolver: literals at once, one lookup per name, answers kept, off the loop.

Lookups here are fakes that count their calls (the real one, behind a slow DNS
server, is in ``test_dns``); the pool's parallelism is shown with a barrier that
only opens when enough lookups run at once, not with a timing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import stop_once, test_engines

from midair.api import Downloader
from midair.core.actions import ConnectionFailure
from midair.engines import _resolver
from midair.engines._common import classify
from midair.engines._resolver import AddrInfo, Answer, Resolver
from midair.serve import ServerThread

ADDRESS = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
NX = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
AGAIN = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


class Counting:
    """A lookup that counts its calls per name and answers ``answer`` (raising an error)."""

    def __init__(self, answer: Answer = ADDRESS, gate: threading.Event | None = None) -> None:
        self.answer, self.gate = answer, gate
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> list[AddrInfo]:
        with self._lock:
            self.calls[host] = self.calls.get(host, 0) + 1
        if self.gate is not None:
            assert self.gate.wait(10)
        if isinstance(self.answer, OSError):
            raise self.answer
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_literals_and_localhost_are_answered_at_once_without_a_thread(host: str) -> None:
    look = Counting()
    resolver = Resolver(look)
    threads = _resolver.POOL.threads
    [*_, address] = resolver.resolve(host, 8080, _never)[0]  # type: ignore[index]
    assert address[1] == 8080 and not look.calls  # localhost: /etc/hosts, not ``look``
    assert _resolver.POOL.threads == threads


def test_one_lookup_per_name_however_many_connections_wait_for_it() -> None:
    gate = threading.Event()
    look = Counting(gate=gate)
    resolver = Resolver(look)
    answers: list[Answer] = []
    done = threading.Semaphore(0)

    def collect(answer: Answer) -> None:
        answers.append(answer)
        done.release()

    assert all(resolver.resolve("h.test", port, collect) is None for port in range(80, 90))
    gate.set()
    for _ in range(10):
        assert done.acquire(timeout=10)
    assert look.calls == {"h.test": 1}
    assert sorted(a[0][4][1] for a in answers) == list(range(80, 90))  # type: ignore[index]
    assert resolver.resolve("h.test", 443, _never) == [(*ADDRESS[0][:4], ("127.0.0.1", 443))]


def test_lookups_of_different_names_run_at_once_on_the_pool() -> None:
    """Eight lookups each wait at a barrier for all eight: a pool that ran fewer at a
    time would break the barrier (after its timeout) and fail the answers."""
    barrier = threading.Barrier(8, timeout=10)

    def look(host: str) -> list[AddrInfo]:
        barrier.wait()
        return ADDRESS

    resolver, answers = Resolver(look), Answers()
    for i in range(8):
        resolver.resolve(f"h{i}.test", 80, answers.add)
    assert answers.wait(8) and all(isinstance(a, list) for a in answers.got)


def test_a_missing_name_is_kept_and_raised_for_later_connections() -> None:
    look = Counting(NX)
    resolver, answers = Resolver(look), Answers()
    resolver.resolve("nx.test", 80, answers.add)
    assert answers.wait(1) and isinstance(answers.got[0], socket.gaierror)
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        resolver.resolve("nx.test", 80, _never)
    with pytest.raises(socket.gaierror):
        resolver.resolve_blocking("nx.test", 80)
    assert look.calls == {"nx.test": 1}


def test_a_temporary_failure_is_not_kept() -> None:
    look = Counting(AGAIN)
    resolver = Resolver(look)
    for _ in range(2):
        with pytest.raises(socket.gaierror, match="Temporary"):
            resolver.resolve_blocking("h.test", 80)
    assert look.calls == {"h.test": 2}


def test_answers_are_kept_for_cache_seconds_then_looked_up_again() -> None:
    look, clock = Counting(), Clock()
    resolver = Resolver(look, clock=clock)
    resolver.resolve_blocking("h.test", 80)
    clock.now = _resolver.CACHE_SECONDS - 1
    resolver.resolve_blocking("h.test", 80)
    assert look.calls == {"h.test": 1}
    clock.now = _resolver.CACHE_SECONDS + 1
    resolver.resolve_blocking("h.test", 80)
    assert look.calls == {"h.test": 2}


def test_blocking_callers_share_the_first_callers_lookup() -> None:
    gate = threading.Event()
    look = Counting(gate=gate)
    resolver = Resolver(look)
    got: list[list[AddrInfo]] = []
    threads = [
        threading.Thread(target=lambda: got.append(resolver.resolve_blocking("h.test", 80)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(got) == 5 and look.calls == {"h.test": 1}


def test_a_stop_ends_a_blocking_callers_wait_while_the_lookup_goes_on() -> None:
    """The lookup is held at a gate: the waiting caller returns (with an error) on the
    stop alone; the lookup's answer, given later, is kept for the next caller."""
    gate = threading.Event()
    look = Counting(gate=gate)
    resolver = Resolver(look)
    errors: list[OSError] = []

    def wait() -> None:
        try:
            resolver.resolve_blocking("h.test", 80)
        except OSError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    while not look.calls:  # the lookup started: the caller is waiting for it
        threading.Event().wait(0.01)
    resolver.stop()
    waiter.join(10)
    assert not waiter.is_alive() and "stopped" in str(errors[0])
    with pytest.raises(OSError, match="stopped"):  # later callers do not wait either
        resolver.resolve_blocking("other.test", 80)
    gate.set()
    assert _eventually(lambda: resolver.now("h.test", 80) is not None)


def _eventually(check: Callable[[], bool]) -> bool:
    for _ in range(1000):
        if check():
            return True
        threading.Event().wait(0.01)
    return False


def test_prefetched_names_are_answered_from_what_was_kept() -> None:
    look = Counting()
    resolver = Resolver(look)
    resolver.prefetch(["a.test", "b.test", "127.0.0.1"])
    assert resolver.resolve_blocking("a.test", 1)[0][4] == ("127.0.0.1", 1)
    resolver.resolve_blocking("b.test", 2)
    assert look.calls == {"a.test": 1, "b.test": 1}


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (NX, ConnectionFailure("Name or service not known", retryable=False, unresolved=True)),
        (AGAIN, ConnectionFailure(str(AGAIN.strerror), retryable=True, unresolved=True)),
    ],
)
def test_classify_marks_a_name_that_did_not_resolve(
    error: socket.gaierror, failure: ConnectionFailure
) -> None:
    assert classify(error) == failure


class Answers:
    def __init__(self) -> None:
        self.got: list[Answer] = []
        self._ready = threading.Semaphore(0)

    def add(self, answer: Answer) -> None:
        self.got.append(answer)
        self._ready.release()

    def wait(self, count: int) -> bool:
        return all(self._ready.acquire(timeout=15) for _ in range(count))


_never: Callable[[Answer], None] = lambda answer: pytest.fail("answered later")  # noqa: E731


IN_PROCESS = ("epoll", "asyncio", "reactor", "threads", "sequential", "green")


@pytest.mark.parametrize(
    "engine", [e for e in IN_PROCESS if e in test_engines()]
)  # green: an extra
def test_a_stop_while_a_name_is_looked_up_ends_the_run_without_waiting_for_it(
    server: ServerThread, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup of ``slow.test`` holds until the run has returned (or 20 s passed): an
    event loop that waited for it would return only after the release."""
    release, asked, gave_up = threading.Event(), threading.Event(), threading.Event()
    real = socket.getaddrinfo

    def held(host: object, port: object, *args: object, **kwargs: object) -> object:
        if host == b"slow.test" and not kwargs.get("flags"):  # a lookup, not a literal's parse
            asked.set()
            if not release.wait(20):
                gave_up.set()
            host = "127.0.1.1"
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", held)
    port = server.port
    dl = Downloader(str(tmp_path), engine=engine).enqueue(f"http://slow.test:{port}/gen/a")
    try:
        # settle: sequential prefetches, so its connection must be waiting by the stop
        results = dl.run(around=lambda run: stop_once(asked, run, settle=0.3))
        assert asked.is_set() and not gave_up.is_set()  # returned with the lookup held
    finally:
        release.set()
    assert results.successes == [] and results.failures == []  # stopped: nothing ended
