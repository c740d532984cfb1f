"""A stop against the engines' own paths, by hand: no socket, a real session.

At c10k the threads engine took 2-7 s to honour SIGINT (the bound is 1 s): the
calling thread went on starting thousands of threads after the stop, and the owners
queued for the session's lock each made its call before the stop could take it.
The asyncio engine's tasks woken in the loop's last turn each fed the session their
chunk first (~0.4 s).  These pin down each path: a stop ends the spawning, no queued
owner or woken task calls the session, the calling thread leaves without the lock, a
pool thread ends without waiting for its None.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from midair.api import make_options
from midair.core.jobs import Job
from midair.engines import blocking
from midair.engines._blocking_driver import Driver, _Link
from midair.run import Run
from midair.session import Session

CONNECTIONS = 4


@pytest.fixture
def run(tmp_path: Path) -> Run:
    jobs = [Job.from_url(f"http://127.0.0.1:9/f{i}.bin") for i in range(CONNECTIONS)]
    options = make_options(str(tmp_path), concurrency=CONNECTIONS, per_host=CONNECTIONS)
    return Run(jobs, options)


@pytest.fixture
def spawned() -> list[_Link]:
    return []


@pytest.fixture
def driver(run: Run, spawned: list[_Link]) -> Iterator[Driver]:
    session = Session(run)
    driver = Driver(session, blocking.STDLIB, lambda _, link: spawned.append(link))
    yield driver
    driver.abort()
    session.close()


def test_a_stop_while_connections_are_spawned_spawns_no_more(run: Run) -> None:
    spawned: list[_Link] = []

    def spawn_and_stop(_: object, link: _Link) -> None:
        spawned.append(link)
        run.request_stop()  # as SIGINT does, between two spawns

    session = Session(run)
    driver = Driver(session, blocking.STDLIB, spawn_and_stop)
    driver.start()
    assert len(driver.links) == CONNECTIONS  # the core opened every one
    assert len(spawned) == 1
    driver.abort()  # closes the links never spawned
    session.close()
    assert driver.links == {} and all(link.closed for link in spawned)


def test_an_owner_queued_for_the_lock_when_a_stop_comes_makes_no_session_call(
    run: Run, driver: Driver, spawned: list[_Link]
) -> None:
    driver.start()
    called: list[int] = []
    driver.lock.acquire()  # as a busy owner holds it
    owner = threading.Thread(
        target=driver.report, args=(spawned[0], lambda conn, *_: called.append(conn) or [])
    )
    owner.start()
    time.sleep(0.05)  # queued for the lock by now
    run.request_stop()
    driver.lock.release()
    owner.join(2)
    assert not owner.is_alive() and called == []


def test_a_report_after_a_stop_does_not_wait_for_the_lock(
    run: Run, driver: Driver, spawned: list[_Link]
) -> None:
    driver.start()
    run.request_stop()
    with driver.lock:  # held elsewhere: the report must not queue for it
        done = threading.Event()
        threading.Thread(target=lambda: (driver.report_end(spawned[0], None), done.set())).start()
        assert done.wait(2)


def test_the_calling_thread_leaves_without_the_lock_once_stopping(run: Run, driver: Driver) -> None:
    """(The signal handler runs on the calling thread, so the stop is there first.)"""
    driver.start()
    run.request_stop()
    with driver.lock:  # thousands of owners hold and queue for it
        waiting = threading.Thread(target=driver.wait_done)
        waiting.start()
        waiting.join(2)
        assert not waiting.is_alive()


def test_a_pool_thread_ends_after_its_connection_once_stopping() -> None:
    """Not woken a second time for a None: 10,000 of those wakes cost a stop ~0.1 s."""
    stopped: list[bool] = []
    pool = blocking._Pool(2, lambda: bool(stopped))
    pool.submit(lambda _: stopped.append(True), None)  # type: ignore[arg-type]
    [thread] = pool._threads
    thread.join(2)
    assert not thread.is_alive()
    pool.join()


def test_an_asyncio_task_woken_after_a_stop_feeds_the_session_nothing(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from midair.engines import asyncio_engine

    fed: list[object] = []
    monkeypatch.setattr(Session, "received", lambda _, conn, data: fed.append(data) or [])

    class Transport:
        def abort(self) -> None:
            pass

    async def woken_after_the_stop() -> None:
        session = Session(run)
        driver = asyncio_engine._Driver(session)
        inbox = asyncio_engine._Inbox(asyncio.get_running_loop())
        inbox.data_received(b"HTTP/1.1 200 OK\r\n")  # read in the turn the stop came in
        driver.writers[1] = Transport()  # type: ignore[assignment]
        run.request_stop()
        try:
            await asyncio.wait_for(driver.pump(1, inbox), 2)
        finally:
            driver.abort()
            session.close()

    asyncio.run(woken_after_the_stop())
    assert fed == []


@pytest.mark.parametrize("engine", ["asyncio", "reactor"])
def test_a_connect_task_first_run_after_a_stop_opens_no_connection(
    run: Run, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """The first turn runs the first step of every connection's task (10,000 at c10k,
    ~0.7 s): a task whose turn comes after the stop must not connect, or the stop waits."""
    from midair.engines import asyncio_engine, reactor

    opened: list[object] = []

    async def refuse(*args: object) -> None:
        opened.append(args)

    monkeypatch.setattr(
        asyncio_engine if engine == "asyncio" else reactor, "open_connection", refuse
    )

    async def started_then_stopped() -> None:
        session = Session(run)
        if engine == "asyncio":
            driver: Any = asyncio_engine._Driver(session)
        else:
            driver = reactor._Reactor(session, asyncio.get_running_loop())
        driver.execute(session.start())  # every connection's task made, none run yet
        pending = driver.tasks if engine == "asyncio" else driver.connecting
        assert len(pending) == CONNECTIONS
        run.request_stop()
        try:
            await asyncio.wait_for(asyncio.gather(*pending.values()), 2)
        finally:
            driver.abort()
            session.close()
        assert pending == {}

    asyncio.run(started_then_stopped())
    assert opened == []


def test_epoll_connects_nothing_more_once_a_stop_comes_amid_the_first_connects(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epoll loop starts a batch's connects in one go (10,000 at c10k, ~0.7 s): a stop
    that comes meanwhile (a signal handler runs between them) ends the going."""
    from midair.engines import epoll

    session = Session(run)
    loop = epoll._Loop(session)
    started: list[int] = []

    def connect_then_a_signal(action: object) -> None:
        started.append(1)
        run.request_stop()

    monkeypatch.setattr(loop, "connect", connect_then_a_signal)
    try:
        loop.execute(session.start())
    finally:
        loop.close_all()
        session.close()
    assert started == [1]
