"""The blocking-style engines and the epoll engine against ``midair serve``.

Every case runs on every engine: exact bytes, a 404 failing, a reset and a
stall each retried, refused connections, the per-host limit as the server saw
it, and HTTPS with a private CA.  File names carry the engine's name, so the
server's ``fail_times`` counters never leak from one case into another.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import test_engines

import midair
from midair.core.actions import Retrying
from midair.engines import ENGINES
from midair.serve import ServerThread, expected_bytes

ENGINE_NAMES = ["sequential", "threads", "green", "epoll"]


def _engine_param(name: str) -> object:
    skip = pytest.mark.skipif(
        not ENGINES[name].available,
        reason=f"engine {name!r} needs {', '.join(ENGINES[name].requires)}",
    )
    return pytest.param(name, marks=skip)


engines = pytest.mark.parametrize("engine", [_engine_param(n) for n in ENGINE_NAMES])


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(addresses=3) as srv:
        yield srv


def _check(results: midair.Results, sizes: dict[str, int]) -> None:
    """Every success is byte-exact: the file name is the /gen/ name."""
    assert results.ok, results.failures
    assert len(results.successes) == len(sizes)
    for success in results.successes:
        name = Path(success.path).name
        assert Path(success.path).read_bytes() == expected_bytes(name, sizes[name]), name


@engines
def test_files_byte_exact_and_404_fails(engine: str, server: ServerThread, tmp_path: Path) -> None:
    sizes = {f"{engine}-{i}.bin": 1000 + 70_001 * i for i in range(6)}
    urls = [
        server.url(i % 3, f"/gen/{name}?size={size}")
        for i, (name, size) in enumerate(sizes.items())
    ]
    missing = server.url(1, f"/gen/{engine}-missing?status=404")
    results = midair.download([*urls, missing], tmp_path, engine=engine)
    assert [f.url for f in results.failures] == [missing]
    assert results.failures[0].error.status == 404
    results.failures.clear()
    _check(results, sizes)


@engines
def test_reset_and_stall_are_retried(engine: str, server: ServerThread, tmp_path: Path) -> None:
    size = 200_000
    urls = [
        server.url(0, f"/gen/{engine}-reset?size={size}&reset_after=50000&fail_times=1"),
        server.url(1, f"/gen/{engine}-stall?size={size}&stall_after=50000&fail_times=1"),
    ]
    retries: list[str] = []

    def listen(event: object) -> None:
        if isinstance(event, Retrying):
            retries.append(event.url)

    results = midair.download(
        urls, tmp_path, engine=engine, timeout=1.0, retry_base=0.05, on_event=listen
    )
    _check(results, {f"{engine}-reset": size, f"{engine}-stall": size})
    if engine == "sequential":  # see test_sequential_queue_wait_is_not_a_stall
        assert set(retries) == set(urls)
    else:
        assert sorted(retries) == sorted(urls)


def test_sequential_queue_wait_is_not_a_stall(tmp_path: Path) -> None:
    sizes = {f"queued-{i}.bin": 40_000 for i in range(3)}
    retries: list[object] = []
    with ServerThread(addresses=1, rate=64 * 1024) as srv:  # 0.6 s per file
        urls = [srv.url(0, f"/gen/{name}?size={size}") for name, size in sizes.items()]
        results = midair.download(
            urls,
            tmp_path,
            engine="sequential",
            timeout=1.0,
            on_event=lambda e: retries.append(e) if isinstance(e, Retrying) else None,
        )
    _check(results, sizes)
    assert retries == []


def test_threads_start_connections_once_the_session_lock_is_released(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting a thread takes a while, and a new connection's first report needs the
    lock: 10,000 started under it kept the first request waiting ~6 s (c10k)."""
    from midair.engines import _blocking_driver, blocking

    drivers: list[_blocking_driver.Driver] = []
    held: list[bool] = []
    init, submit = _blocking_driver.Driver.__init__, blocking._Pool.submit

    def spy_init(self: _blocking_driver.Driver, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        drivers.append(self)

    def spy_submit(pool: blocking._Pool, *args: object) -> None:
        lock = drivers[0].lock  # held by this thread: not to be had (others let it go)
        free = lock.acquire(timeout=2.0)
        if free:
            lock.release()
        held.append(not free)
        submit(pool, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_blocking_driver.Driver, "__init__", spy_init)
    monkeypatch.setattr(blocking._Pool, "submit", spy_submit)
    sizes = {f"unlocked-{i}.bin": 2_000 for i in range(8)}
    urls = [
        server.url(i % 3, f"/gen/{name}?size={size}")
        for i, (name, size) in enumerate(sizes.items())
    ]
    _check(midair.download(urls, tmp_path, engine="threads", concurrency=8), sizes)
    assert len(held) >= 3 and not any(held)  # one connection per address at least


def test_a_connection_spawned_after_the_pool_began_to_join_keeps_no_thread_waiting() -> None:
    """The driver spawns outside the session's lock, so a connection the core opened just
    before the abort may reach the pool once ``join`` has queued its Nones: a new thread
    for it, started after them, waited for work for ever, and ``join`` with it (a run that
    printed its result and never exited)."""
    import threading

    from midair.engines import blocking

    ran: list[str] = []
    busy, joining = threading.Event(), threading.Thread(target=lambda: pool.join(), daemon=True)
    pool = blocking._Pool(4, lambda: False)
    pool.submit(lambda _: busy.wait(5), None)  # type: ignore[arg-type]
    joining.start()  # one None queued, for the one (busy) thread
    while not pool._joining:  # type: ignore[attr-defined]
        time.sleep(0.001)
    pool.submit(ran.append, "late")  # type: ignore[arg-type]
    busy.set()
    joining.join(5)
    assert not joining.is_alive()  # join returned
    assert ran == [] and not any(thread.is_alive() for thread in pool._threads)


@engines
def test_refused_connection_fails(engine: str, tmp_path: Path) -> None:
    with socket.socket() as unused:  # bound, never listening: connecting is refused
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/x.bin"
        results = midair.download(url, tmp_path, engine=engine, retries=1, retry_base=0.01)
    assert [f.url for f in results.failures] == [url]
    assert "refused" in results.failures[0].error.reason


@engines
def test_per_host_limit_honoured(engine: str, tmp_path: Path) -> None:
    sizes = {f"{engine}-c{i}.bin": 16_384 for i in range(20)}
    with ServerThread(addresses=1, rate=128 * 1024) as srv:  # 1/8 s per file
        urls = [srv.url(0, f"/gen/{name}?size={size}") for name, size in sizes.items()]
        results = midair.download(urls, tmp_path, engine=engine, per_host=4)
        stats = srv.stats().addresses[srv.hosts[0]]
    _check(results, sizes)
    assert stats.max_concurrent == (1 if engine == "sequential" else 4)
    assert stats.requests == 20 and stats.connections < 20  # connections were reused


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, str]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.1.1", "127.0.1.2").configure_cert(server_ctx)
    ca_path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with ServerThread(addresses=2, tls=server_ctx) as srv:
        yield srv, str(ca_path)


@engines
def test_https_with_private_ca(
    engine: str, tls_server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    server, ca_path = tls_server
    sizes = {f"{engine}-tls{i}.bin": 300_000 + i for i in range(4)}
    urls = [
        server.url(i % 2, f"/gen/{name}?size={size}")
        for i, (name, size) in enumerate(sizes.items())
    ]
    results = midair.download(urls, tmp_path, engine=engine, ca_certificate=ca_path)
    _check(results, sizes)


@engines
def test_https_untrusted_certificate_fails(
    engine: str, tls_server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    server, _ = tls_server
    url = server.url(0, f"/gen/{engine}-untrusted?size=10")
    results = midair.download(url, tmp_path, engine=engine)
    assert [f.url for f in results.failures] == [url]
    assert "certificate" in results.failures[0].error.reason


def test_would_block_knows_plain_and_tls_sockets() -> None:
    """One test of "nothing to read or write right now" for every socket, ssl or not."""
    from midair.engines._common import would_block

    assert would_block(BlockingIOError()) and would_block(ssl.SSLWantReadError())
    assert would_block(ssl.SSLWantWriteError())
    assert not would_block(ConnectionResetError()) and not would_block(ssl.SSLEOFError())


def test_resolve_sends_an_ascii_host_as_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from midair.engines import _resolver

    asked: list[object] = []
    monkeypatch.setattr(_resolver.socket, "getaddrinfo", lambda host, *a, **k: asked.append(host))
    _resolver.lookup("h.example")
    _resolver.literal("127.0.0.1", 80)
    _resolver.lookup("bücher.example")
    assert asked == [b"h.example", b"127.0.0.1", "bücher.example"]


@pytest.mark.parametrize("green", [False, True])
def test_a_waker_waits_on_descriptors_past_fd_setsize(green: bool) -> None:
    """At thousands of connections a socket's number passes 1024, which select(2) refuses:
    the waker's waits (an HTTP/2 link's owner in threads and green) must still work."""
    import os
    import resource

    from midair.engines._common import Waker

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"needs 1,200 open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    if green:
        gevent_select = pytest.importorskip("gevent.select")
        waker = Waker(gevent_select.poll)
    else:
        waker = Waker()
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    a, b = socket.socketpair()
    try:
        assert a.fileno() > 1024
        waker.set()
        assert not waker.wait_with(a.fileno())  # woken by the waker, the socket is quiet
        waker.clear()
        b.send(b"x")
        assert waker.wait_with(a.fileno())
    finally:
        a.close()
        b.close()
        waker.close()
        for fd in fillers:
            os.close(fd)


@pytest.mark.parametrize("engine_any", [e for e in test_engines() if e != "dask"])
def test_an_untrusted_host_fails_every_job_with_one_reason_in_few_connections(
    engine_any: str, tls_server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    """A host is given up as a whole (issue 9): 40 jobs, a certificate that does not
    verify, one round of connections, one reason; every engine but dask (whose cluster
    costs seconds; its shards are the processes engine's), shards included."""
    server, _ = tls_server
    before = sum(a.connections for a in server.stats().addresses.values())
    urls = [server.url(0, f"/gen/{engine_any}-host{i}?size=10") for i in range(40)]
    options = {"workers": 2} if engine_any == "processes" else {}
    downloader = midair.Downloader(tmp_path, engine=engine_any, engine_options=options)
    for url in urls:
        downloader.enqueue(url)
    results = downloader.run()
    assert len(results.failures) == 40
    assert len({f.error.reason for f in results.failures}) == 1
    after = sum(a.connections for a in server.stats().addresses.values())
    assert after - before <= 2 * 6  # a shard or two, --per-host each: not 40
