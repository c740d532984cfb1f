"""The session starts a big batch in steps: connections first, the rest of the files after.

No network: the tests call the session's entry points as an engine would and
look at what it hands back and what the store was asked.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from midair.api import make_options
from midair.core.actions import Connect, Failed, Finished, OnDisk, Prepare, Retrying, Started
from midair.core.jobs import Job
from midair.run import REPORTS, Run
from midair.session import PREPARE_STEP, YOUNG_OBJECTS, Session
from midair.store import Store

JOBS = 3 * PREPARE_STEP + 10  # more than the first window, not a whole number of steps


class CountingStore(Store):
    """A real store that counts the files it was asked to prepare."""

    def __init__(self) -> None:
        super().__init__(fsync=False)
        self.prepared: list[str] = []

    def prepare(self, action: Prepare) -> OnDisk:
        self.prepared.append(action.path)
        return super().prepare(action)


def session_for(tmp_path: Path, names: list[str], **options: object) -> tuple[Session, Run]:
    jobs = [Job.from_url(f"http://127.0.0.1:9/{name}") for name in names]
    run = Run(jobs, make_options(str(tmp_path), concurrency=4, per_host=4, **options))
    return Session(run, store=CountingStore()), run


def prepared(session: Session) -> list[str]:
    return session.store.prepared  # type: ignore[attr-defined, no-any-return]


def step_until_idle(session: Session) -> int:
    """Call ``timer`` while it is due at once, as an engine's loop does; return the calls."""
    calls = 0
    while session.timeout() == 0.0:
        session.timer()
        calls += 1
        assert calls <= JOBS, "timer due forever"
    return calls


def test_connections_go_out_before_every_file_is_prepared(tmp_path: Path) -> None:
    session, _ = session_for(tmp_path, [f"f{i}.bin" for i in range(JOBS)])
    net = session.start()
    assert sum(type(action) is Connect for action in net) == 4
    assert len(prepared(session)) == 2 * PREPARE_STEP
    assert session.timeout() == 0.0  # the rest is due at once, a step per call
    frozen = gc.get_freeze_count()
    assert step_until_idle(session) == 2  # 256, then the last 10
    assert gc.get_freeze_count() > frozen  # the downloads made in steps: frozen too
    assert len(prepared(session)) == JOBS
    assert [Path(path).name for path in prepared(session)] == [f"f{i}.bin" for i in range(JOBS)]
    session.close()


def test_a_name_clash_in_the_backlog_still_fails_before_anything_is_fetched(
    tmp_path: Path,
) -> None:
    names = [f"f{i}.bin" for i in range(JOBS - 1)] + ["f0.bin?v=2"]  # the last clashes
    session, run = session_for(tmp_path, names, no_clobber=True)
    session.start()
    assert len(run.results.failures) == 1  # failed at the start, not when its step comes
    assert len(prepared(session)) == 2 * PREPARE_STEP
    step_until_idle(session)
    [failure] = run.results.failures
    assert failure.url.endswith("/f0.bin?v=2") and "also the target of" in str(failure.error)
    assert len(prepared(session)) == JOBS - 1  # the clash is never prepared
    session.close()


def test_a_stop_during_the_backlog_prepares_nothing_more(tmp_path: Path) -> None:
    session, run = session_for(tmp_path, [f"f{i}.bin" for i in range(JOBS)])
    session.start()
    run.request_stop()
    assert session.timer() == []
    assert len(prepared(session)) == 2 * PREPARE_STEP
    assert session.done
    assert session.next_deadline() is None and not session.due()  # nothing left to tick
    session.close()


def fetch_one(tmp_path: Path, listens_to: frozenset[type]) -> tuple[Run, list[object]]:
    """One file through a session by hand, whole in one read, with a listener of
    ``listens_to``; the run and what its listener heard."""
    heard: list[object] = []
    job = Job.from_url("http://127.0.0.1:9/one.bin")
    run = Run([job], make_options(str(tmp_path)), listener=heard.append, listens_to=listens_to)
    session = Session(run)
    [connect] = session.start()
    assert isinstance(connect, Connect)
    session.connected(connect.conn)
    session.received(connect.conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    for _ in range(1000):  # its publication: on the store's thread, within a few polls
        if session.done:
            break
        time.sleep(session.timeout() or 0.0)
        session.timer()
    session.close()
    assert run.results.ok and (tmp_path / "one.bin").read_bytes() == b"hi"
    return run, heard


def test_a_quiet_listener_hears_only_its_kinds_and_no_transfer_is_followed(
    tmp_path: Path,
) -> None:
    run, heard = fetch_one(tmp_path, frozenset({Failed}))
    assert heard == [] and run.tracker.files_done == 1 and not run.tracker.follows
    assert Started not in run.heeded() and {Finished, Failed, Retrying} <= run.heeded()


def test_a_listener_of_every_kind_hears_the_start_and_the_end(tmp_path: Path) -> None:
    run, heard = fetch_one(tmp_path, REPORTS)
    assert [type(action) for action in heard] == [Started, Finished]
    assert run.tracker.follows and run.heeded() == REPORTS


def test_the_collector_waits_longer_during_a_run_and_as_before_after_it(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])  # Python's default, whatever another test left
    try:
        session, _ = session_for(tmp_path, ["a.bin"])
        session.start()
        assert gc.get_threshold()[0] == YOUNG_OBJECTS
        session.close()
        assert gc.get_threshold() == (700, *before[1:])
        gc.set_threshold(0)  # collection turned off by the caller: a run leaves it off
        session, _ = session_for(tmp_path, ["b.bin"])
        session.start()
        assert gc.get_threshold()[0] == 0
        session.close()
    finally:
        gc.set_threshold(*before)
