"""The batch scheduler, end to end in virtual time over the simulator in ``sim.py``."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from midair.core.actions import (
    Action,
    Checkpoint,
    Close,
    Connect,
    ConnectionFailure,
    Failed,
    Finished,
    OnDisk,
    Open,
    Prepare,
    Publish,
    Resume,
    Retrying,
    Save,
    Send,
    Started,
    Write,
)
from midair.core.batch import Batch
from midair.core.errors import (
    DestinationError,
    DownloadError,
    HTTPStatusError,
    IntegrityError,
    NetworkError,
    RedirectError,
    StallTimeout,
    TLSError,
)
from midair.core.jobs import Checksum, Job, Options
from midair.core.transfer import claimable_path
from midair.core.urls import parse_url
from midair.store import CONTROL_SUFFIX, PART_SUFFIX

from .sim import (
    DiskStore,
    FileServer,
    MemoryStore,
    Reply,
    Request,
    Sim,
    Step,
    origin,
    reply,
    response,
    run,
)

H = "http://h.example"
H2 = "http://mirror.example"


def body(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def options(directory: Path, **kwargs: object) -> Options:
    return Options(directory=str(directory), **kwargs)  # type: ignore[arg-type]


# --- by hand: the whole API, one event at a time -------------------------------------
def test_driving_a_batch_by_hand() -> None:
    batch = Batch([Job.from_url(f"{H}/f")], Options(directory="/d"), seed=1)
    assert batch.start(0.0) == [Prepare(0, "/d/f", f"{H}/f", None, by_name=True)]
    assert batch.prepared(0, OnDisk("fresh"), 0.0) == [Connect(1, "h.example", 80, False)]
    assert batch.next_deadline() == 0.0 + min(1.0, batch.options.timeout / 4)  # the sweep
    [send] = batch.connected(1, 0.1)
    assert isinstance(send, Send) and send.data.startswith(b"GET /f HTTP/1.1\r\n")
    actions = batch.received(1, b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: "e"\r\n\r\nhi', 0.2)
    record = Resume(f"{H}/f", 2, '"e"', None)
    assert actions == [  # head and whole body in one read: one Save opens, writes, publishes
        Started(0, f"{H}/f", "/d/f", 0, 2),
        Save(0, "/d/f", 0, record, b"hi", 2, None, f"{H}/f", "/d/f", False),
        Close(1),
    ]
    assert batch.published(0, 0.3) == [Finished(0, f"{H}/f", "/d/f", 2, skipped=False)]
    assert batch.done and batch.open_connections == 0 and batch.next_deadline() is None


def test_a_batch_whose_starts_nobody_follows_reports_none_and_acts_the_same() -> None:
    def actions(starts: bool) -> list[object]:
        batch = Batch([Job.from_url(f"{H}/f")], Options(directory="/d"), seed=1, starts=starts)
        batch.start(0.0)
        batch.prepared(0, OnDisk("fresh"), 0.0)
        batch.connected(1, 0.1)
        got = batch.received(1, HEAD + b"ab", 0.2) + batch.received(1, b"cd", 0.3)
        return got + batch.published(0, 0.4)

    assert STARTED in actions(True)
    assert actions(False) == [a for a in actions(True) if a != STARTED]


def connected_batch() -> Batch:
    batch = Batch([Job.from_url(f"{H}/f")], Options(directory="/d"), seed=1)
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    return batch


HEAD = b'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nETag: "e"\r\n\r\n'
OPEN = Open(0, "/d/f", 0, Resume(f"{H}/f", 4, '"e"', None))
STARTED = Started(0, f"{H}/f", "/d/f", 0, 4)
PUBLISH = Publish(0, "/d/f", 4, None, f"{H}/f", target="/d/f")
SAVE = Save(0, "/d/f", 0, OPEN.record, b"abcd", 4, None, f"{H}/f", "/d/f", False)


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([HEAD, b"abcd"], [[STARTED, OPEN], [Write(0, 0, b"abcd"), PUBLISH, Close(1)]]),
        (
            [HEAD + b"ab", b"cd"],
            [[STARTED, OPEN, Write(0, 0, b"ab")], [Write(0, 2, b"cd"), PUBLISH, Close(1)]],
        ),
        ([HEAD[:20], HEAD[20:] + b"abcd"], [[], [STARTED, SAVE, Close(1)]]),
    ],
)
def test_a_body_that_does_not_come_whole_with_its_head_is_opened_written_published(
    reads: list[bytes], expected: list[list[Action]]
) -> None:
    """The held Open goes out at the end of the read whose body did not end there: the
    store copies bytes out before the next event, so nothing waits for one."""
    batch = connected_batch()
    got = [batch.received(1, data, 0.2) for data in reads]
    assert got == expected


def test_an_empty_body_is_opened_then_published() -> None:
    batch = connected_batch()
    head = b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "e"\r\n\r\n'
    record = Resume(f"{H}/f", 0, '"e"', None)
    assert batch.received(1, head, 0.2) == [
        Started(0, f"{H}/f", "/d/f", 0, 0),
        Open(0, "/d/f", 0, record),
        Publish(0, "/d/f", 0, None, f"{H}/f", target="/d/f"),
        Close(1),
    ]


def started_batch(**kwargs: object) -> Batch:
    batch = Batch(
        [Job.from_url(f"{H}/f")],
        Options(directory="/d", **kwargs),  # type: ignore[arg-type]
        seed=1,
    )
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.0)
    return batch


def test_a_tls_failure_is_not_retried() -> None:
    actions = started_batch().closed(
        1, 0.5, ConnectionFailure("certificate verify failed", retryable=False, tls=True)
    )
    [failed] = [a for a in actions if isinstance(a, Failed)]
    assert isinstance(failed.error, TLSError)
    assert str(failed.error) == f"{H}/f: certificate verify failed"
    assert not [a for a in actions if isinstance(a, Retrying)]


def test_a_failure_the_engine_calls_final_is_not_retried() -> None:
    actions = started_batch().closed(1, 0.5, ConnectionFailure("name not known", retryable=False))
    [failed] = [a for a in actions if isinstance(a, Failed)]
    assert not failed.error.retryable and "name not known" in str(failed.error)


NOT_FOUND = ConnectionFailure("Name or service not known", retryable=False, unresolved=True)


def two_host_batch(*jobs: str) -> tuple[Batch, list[Connect]]:
    batch = Batch([Job.from_url(u) for u in jobs], Options(directory="/d", per_host=2), seed=1)
    batch.start(0.0)
    actions = [a for i in range(len(jobs)) for a in batch.prepared(i, OnDisk("fresh"), 0.0)]
    return batch, [a for a in actions if isinstance(a, Connect)]


def test_a_name_that_does_not_exist_fails_every_job_of_its_host_with_one_reason() -> None:
    batch, connects = two_host_batch(*[f"{H}/f{i}" for i in range(5)], f"{H2}/g")
    first, second = [c.conn for c in connects if c.host == "h.example"]
    actions = batch.closed(first, 0.5, NOT_FOUND)  # its own job and the three queued fail
    assert len([a for a in actions if isinstance(a, Failed)]) == 4
    actions += batch.closed(second, 0.6, NOT_FOUND)  # it was waiting for the same answer
    failed = [a for a in actions if isinstance(a, Failed)]
    assert sorted(f.url for f in failed) == [f"{H}/f{i}" for i in range(5)]
    assert {f.error.reason for f in failed} == {
        "cannot resolve h.example: Name or service not known"
    }
    assert not [a for a in actions if isinstance(a, (Retrying, Connect))]
    assert batch.open_connections == 1 and not batch.done  # mirror.example's job goes on


def test_a_redirect_to_a_host_known_not_to_exist_fails_without_connecting() -> None:
    batch, connects = two_host_batch(f"{H}/a", f"{H2}/b")
    by_host = {c.host: c.conn for c in connects}
    batch.closed(by_host["h.example"], 0.5, NOT_FOUND)
    batch.connected(by_host["mirror.example"], 0.5)
    moved = b"HTTP/1.1 302 Found\r\nLocation: http://h.example/c\r\nContent-Length: 0\r\n\r\n"
    actions = batch.received(by_host["mirror.example"], moved, 0.6)
    if any(isinstance(a, Prepare) for a in actions):  # a name that follows the redirect
        actions += batch.prepared(1, OnDisk("fresh"), 0.6)
    [failed] = [a for a in actions if isinstance(a, Failed)]
    assert failed.error.reason == "cannot resolve h.example: Name or service not known"
    assert not [a for a in actions if isinstance(a, Connect)] and batch.done


def test_a_temporary_resolution_failure_is_retried_naming_the_host() -> None:
    failure = ConnectionFailure("Temporary failure in name resolution", unresolved=True)
    actions = started_batch().closed(1, 0.5, failure)
    [retrying] = [a for a in actions if isinstance(a, Retrying)]
    assert retrying.reason == "cannot resolve h.example: Temporary failure in name resolution"
    assert not [a for a in actions if isinstance(a, Failed)]


def test_events_for_unknown_or_closed_connections_are_ignored() -> None:
    batch = started_batch()
    assert batch.received(99, b"junk", 0.1) == []
    assert batch.closed(99, 0.1) == []
    assert batch.connected(99, 0.1) == []
    batch.closed(1, 0.2, ConnectionFailure("reset"))  # retried later, on a new connection
    assert batch.received(1, b"HTTP/1.1 200 OK\r\n", 0.3) == []


def test_a_late_store_answer_does_not_end_a_download_twice() -> None:
    batch = started_batch()
    error = DestinationError(f"{H}/f", "cannot write /d/f: disk full")
    first = batch.published(0, 0.1, error)
    assert [type(a) for a in first] == [Close, Failed] and batch.done
    assert batch.published(0, 0.1, IntegrityError(f"{H}/f", "short")) == []
    assert batch.published(0, 0.1) == []


# --- limits -------------------------------------------------------------------------
@pytest.mark.parametrize(("concurrency", "per_host"), [(1, 1), (3, 6), (7, 2), (100, 6)])
def test_concurrency_and_per_host_limits_hold_at_every_step(
    concurrency: int, per_host: int
) -> None:
    servers = {f"http://h{i}.example": FileServer(piece=100, gap=0.05) for i in range(5)}
    jobs, expected = [], {}
    for i, (url, server) in enumerate(servers.items()):
        for k in range(12):
            data = body(300 + k, seed=i * 100 + k)
            server.add(f"/f{k}", data)
            expected[len(jobs)] = data
            jobs.append(Job.from_url(f"{url}/f{k}", subdir=f"h{i}"))
    sim = run(jobs, servers, concurrency=concurrency, per_host=per_host)  # checks every step
    assert not sim.failed
    assert all(sim.content(i) == data for i, data in expected.items())
    assert sim.max_open == min(concurrency, 5 * per_host)  # the limits are used, not only kept
    assert max(sim.max_per_origin.values()) == min(per_host, concurrency)


def test_limit_connections_below_concurrency() -> None:
    server = FileServer(piece=10)
    for k in range(6):
        server.add(f"/f{k}", body(100, k))
    sim = Sim([f"{H}/f{k}" for k in range(6)], options(Path("/sim"), concurrency=10), {H: server})
    sim.batch.limit_connections(1)  # what the sequential engine asks for
    sim.run()
    assert not sim.failed and sim.max_open == 1


def test_a_slow_host_does_not_starve_the_others() -> None:
    slow, fast = FileServer(piece=10, gap=1.0), FileServer()
    for k in range(10):
        slow.add(f"/s{k}", body(100, k))
        fast.add(f"/f{k}", body(100, k))
    jobs = [f"{H}/s{k}" for k in range(10)] + [f"{H2}/f{k}" for k in range(10)]
    sim = run(jobs, {H: slow, H2: fast}, concurrency=4, per_host=2)
    assert not sim.failed
    fast_done = max(t for t, a in sim.log if isinstance(a, Finished) and "mirror" in a.url)
    assert fast_done < 5.0 < sim.now


# --- connection reuse ---------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_keep_alive_connections_are_reused(framing: str) -> None:
    server = FileServer()
    for k in range(10):
        server.add(f"/f{k}", body(50, k), framing=framing)
    sim = run([f"{H}/f{k}" for k in range(10)], {H: server}, per_host=2)
    assert not sim.failed
    assert sim.connects[origin(H)] == 2
    assert len(server.requests) == 10
    assert len({r.conn for r in server.requests}) == 2


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_stray_empty_line_after_each_response_costs_no_retry(framing: str) -> None:
    # It arrives after the batch reused the connection: the next head skips it.
    def answer(req: Request) -> Reply:
        data, _ = response(200, body(50, int(req.target[2:])), framing=framing)
        return Reply(data + b"\r\n", pieces=(len(data),))

    server = FileServer()
    for k in range(5):
        server.route(f"/f{k}", answer)
    sim = run([f"{H}/f{k}" for k in range(5)], {H: server}, per_host=1)
    assert [sim.content(k) for k in range(5)] == [body(50, k) for k in range(5)]
    assert not sim.retrying and sim.connects[origin(H)] == 1


def test_connection_close_responses_are_not_reused() -> None:
    server = FileServer(keep_alive=False)
    for k in range(10):
        server.add(f"/f{k}", body(50, k))
    sim = run([f"{H}/f{k}" for k in range(10)], {H: server}, per_host=2)
    assert not sim.failed
    assert sim.connects[origin(H)] == 10


def test_close_delimited_bodies() -> None:
    server = FileServer()
    server.add("/f", body(500), framing="close")
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == body(500)


# --- retries --------------------------------------------------------------------------
def test_503_then_200_succeeds() -> None:
    server = FileServer()
    server.add("/f", body(100), Step(status=503))
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == body(100)
    [(_, retrying)] = sim.retrying
    assert (retrying.attempt, retrying.reason) == (1, "HTTP 503")


def test_404_fails_at_once_with_the_status() -> None:
    sim = run([f"{H}/missing"], {H: FileServer()})
    error = sim.failed[0].error
    assert isinstance(error, HTTPStatusError) and error.status == 404
    assert str(error) == f"{H}/missing: HTTP 404"
    assert not sim.retrying
    assert len(sim.sends) == 1


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_retries_exhausted(retries: int) -> None:
    server = FileServer()
    server.add("/f", body(10), *[Step(status=500)] * (retries + 1))
    sim = run([f"{H}/f"], {H: server}, retries=retries)
    error = sim.failed[0].error
    assert str(error) == f"{H}/f: HTTP 500 (gave up after {retries} retries)"
    assert error.status == 500
    assert len(server.requests) == retries + 1
    assert [r.attempt for _, r in sim.retrying] == list(range(1, retries + 1))
    assert sim.content(0) is None


def test_backoff_grows_and_stays_under_the_cap() -> None:
    server = FileServer()
    server.add("/f", body(10), *[Step(status=502)] * 6)
    sim = run([f"{H}/f"], {H: server}, retries=6, retry_base=1.0, max_retry_wait=8.0, seed=3)
    delays = [r.delay for _, r in sim.retrying]
    assert all(0 <= d <= min(8.0, 2 ** (i)) for i, d in enumerate(delays))
    times = [r.time for r in server.requests]
    assert all(b - a >= d for a, b, d in zip(times, times[1:], delays, strict=False))


def test_the_same_seed_gives_the_same_run() -> None:
    def once() -> list[tuple[float, str]]:
        server = FileServer(piece=30)
        for k in range(6):
            server.add(f"/f{k}", body(100, k), Step(status=503), Step(cut=40))
        sim = run([f"{H}/f{k}" for k in range(6)], {H: server}, seed=11, per_host=2)
        return [(t, repr(a)) for t, a in sim.log]

    assert once() == once()


@pytest.mark.parametrize(
    ("retry_after", "cap", "waited"), [("7", 60.0, 7.0), ("5", 5.0, 5.0), ("0", 60.0, 0.0)]
)
def test_retry_after_is_honoured_and_capped(retry_after: str, cap: float, waited: float) -> None:
    server = FileServer()
    server.add("/f", body(10), Step(status=503, headers=(("Retry-After", retry_after),)))
    sim = run([f"{H}/f"], {H: server}, max_retry_wait=cap)
    assert sim.content(0) == body(10)
    [(answered, retrying)] = sim.retrying
    assert retrying.delay == waited
    _, second = server.requests
    assert answered + waited <= second.time < answered + waited + 0.1


def test_retry_after_as_an_http_date() -> None:
    server = FileServer()
    server.add(
        "/f",
        body(10),
        Step(
            status=503,
            headers=(
                ("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("Retry-After", "Wed, 21 Oct 2015 07:28:09 GMT"),
            ),
        ),
    )
    sim = run([f"{H}/f"], {H: server})
    assert [r.delay for _, r in sim.retrying] == [9.0]


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ((("Retry-After", "\xb2"),), None),  # a latin-1 byte that str.isdigit() accepts
        (
            (
                ("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("Retry-After", "Wed Oct 21 07:28:05 2015"),
            ),
            5.0,
        ),  # asctime: a naive datetime against an aware one
    ],
)
def test_odd_retry_after_values_do_not_crash_the_batch(
    headers: tuple[tuple[str, str], ...], delay: float | None
) -> None:
    server = FileServer()
    server.add("/f", body(10), Step(status=503, headers=headers))
    sim = run([f"{H}/f"], {H: server}, retry_base=0.5)
    assert sim.content(0) == body(10)
    [(_, retrying)] = sim.retrying
    if delay is None:  # unusable: an ordinary backoff
        assert 0 <= retrying.delay <= 0.5
    else:
        assert retrying.delay == delay


def test_429_pauses_the_whole_host() -> None:
    server, other = FileServer(piece=100, gap=0.5), FileServer(piece=100, gap=0.5)
    server.add("/limited", body(10), Step(status=429, headers=(("Retry-After", "10"),)))
    server.add("/long", body(1000))  # still streaming when the 429 comes
    for k in range(4):
        server.add(f"/f{k}", body(100, k))
        other.add(f"/o{k}", body(1000, k))
    jobs = [
        f"{H}/limited",
        f"{H}/long",
        *[f"{H}/f{k}" for k in range(4)],
        *[f"{H2}/o{k}" for k in range(4)],
    ]
    sim = run(jobs, {H: server, H2: other}, per_host=2)
    assert not sim.failed
    [(paused_at, retrying)] = sim.retrying
    assert retrying.delay == 10.0
    during = [r for o, r in sim.sends if paused_at < r.time < paused_at + 10.0]
    assert during, "the other host goes on meanwhile"
    assert all(r.header("host") == "mirror.example" for r in during), "no request to h"
    assert sim.content(1) == body(1000)  # the exchange in flight was finished, not cut


def test_429_without_retry_after_backs_off_that_download_only() -> None:
    server = FileServer()
    server.add("/limited", body(10), Step(status=429))
    server.add("/other", body(10))
    sim = run([f"{H}/limited", f"{H}/other"], {H: server}, per_host=1)
    assert not sim.failed and len(sim.retrying) == 1


def test_a_connection_that_opens_during_a_host_pause_waits_too() -> None:
    batch = Batch(
        [Job.from_url(f"{H}/a"), Job.from_url(f"{H}/b")],
        Options(directory="/d", per_host=2),
        seed=1,
    )
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    assert batch.prepared(1, OnDisk("fresh"), 0.0) == [Connect(2, "h.example", 80, False)]
    batch.connected(1, 0.1)
    answer = batch.received(
        1, b"HTTP/1.1 429 Slow Down\r\nRetry-After: 10\r\nContent-Length: 0\r\n\r\n", 0.2
    )
    assert Close(1) in answer
    # Connection 2 was asked for before the 429 and opens during the pause: it must not ask.
    assert batch.connected(2, 0.3) == [Close(2)]
    assert batch.next_deadline() == 10.2
    # Both jobs wait for the pause; the 429 halved the host's limit, so one connection.
    assert [type(a) for a in batch.timer(10.2)] == [Connect]


def test_connection_refused_is_retried_then_fails() -> None:
    sim = run(["http://nobody.example/f"], {}, retries=2)
    error = sim.failed[0].error
    assert isinstance(error, NetworkError)
    assert str(error) == "http://nobody.example/f: connection refused (gave up after 2 retries)"


# --- stalls and resets: resume from the bytes on disk ----------------------------------
def test_stall_times_out_and_resumes_with_range() -> None:
    data = body(2000)
    server = FileServer()
    server.add("/f", data, Step(cut=500, then="stall"))
    sim = run([f"{H}/f"], {H: server}, timeout=5.0)
    assert sim.content(0) == data
    first, second = server.requests
    [(timed_out, retrying)] = sim.retrying
    assert isinstance(retrying, Retrying) and "timed out: no data for 5 s" in retrying.reason
    last_byte = first.time + 0.01
    assert last_byte + 5.0 <= timed_out <= last_byte + 5.0 + 1.0 + 1e-9  # one sweep late at most
    assert second.header("range") == "bytes=500-"
    assert second.header("if-range") == '"v1-2000"'


def test_a_connection_that_never_answers_times_out() -> None:
    server = FileServer()
    server.route("/f", lambda req: reply(200, b"x", cut=0, then="stall"))  # type: ignore[arg-type]
    sim = run([f"{H}/f"], {H: server}, timeout=2.0, retries=1)
    error = sim.failed[0].error
    assert isinstance(error, StallTimeout)
    assert "(gave up after 1 retries)" in str(error)
    assert sim.now < 10


def test_too_slow_is_aborted_with_lowest_speed() -> None:
    server = FileServer(piece=1, gap=1.0)  # one byte a second, but never silent
    server.add("/f", body(200))
    sim = run(
        [f"{H}/f"], {H: server}, timeout=30.0, lowest_speed=100, lowest_speed_time=5.0, retries=1
    )
    error = sim.failed[0].error
    assert isinstance(error, StallTimeout) and "too slow" in str(error)


def test_lowest_speed_does_not_judge_a_connection_still_connecting() -> None:
    # The speed window starts when the connection is up (a slow connect is --timeout's
    # business); before, a sweep measured it from time zero and called it 0 B/s.
    server = FileServer()
    server.add("/f", body(2000))
    sim = Sim(
        [f"{H}/f"],
        options(Path("/sim"), lowest_speed=100, lowest_speed_time=1.0, retries=0),
        {H: server},
        connect_delay=3.0,
    ).run()
    assert sim.content(0) == body(2000), sim.failed


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize(("etag", "last_modified"), [(True, False), (False, True)])
@pytest.mark.parametrize("cut", [0, 1, 700, 1999])
def test_reset_mid_body_resumes_with_range_and_if_range(
    framing: str, etag: bool, last_modified: bool, cut: int
) -> None:
    data = body(2000)
    server = FileServer(piece=256)
    res = server.add(
        "/f", data, Step(cut=cut), framing=framing, etag=etag, last_modified=last_modified
    )
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == data
    _, second = server.requests
    writes = (Write, Save)  # a body that came whole with its head is saved in one action
    written = sum(len(a.data) for t, a in sim.log if isinstance(a, writes) and t < second.time)
    if written:
        assert second.header("range") == f"bytes={written}-"
        assert (
            second.header("if-range") == dict(res.validators())["ETag" if etag else "Last-Modified"]
        )
        assert sum(len(a.data) for _, a in sim.log if isinstance(a, writes)) == len(data)
    else:
        assert second.header("range") is None


OPENS = (Open, Save)  # a body that came whole with its head is opened by its Save


def test_without_validators_a_reset_starts_over() -> None:
    data = body(2000)
    server = FileServer()
    server.add("/f", data, Step(cut=1000), etag=False)
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == data
    assert [r.header("range") for r in server.requests] == [None, None]
    opens = [a.offset for a in sim.actions(OPENS)]
    assert opens == [0, 0]


def test_a_changed_file_is_fetched_whole_again() -> None:
    server = FileServer()
    server.add("/f", body(2000), Step(cut=1000), Step(change=body(1500, seed=9)))
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == body(1500, seed=9)
    assert [a.offset for a in sim.actions(OPENS)] == [0, 0]


def test_a_server_ignoring_if_range_is_caught_by_the_etag() -> None:
    server = FileServer()
    server.add(
        "/f", body(2000), Step(cut=1000), Step(change=body(2000, seed=9), ignore_if_range=True)
    )
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == body(2000, seed=9)
    assert "the ETag changed" in sim.retrying[-1][1].reason


def test_resume_after_all_bytes_but_before_the_end_of_a_chunked_body() -> None:
    data = body(100)
    server = FileServer()
    res = server.add("/f", data, framing="chunked")
    cut = len(
        b"".join(
            b"%x\r\n%s\r\n" % (len(data[i : i + 7]), data[i : i + 7]) for i in range(0, 100, 7)
        )
    )
    res.steps.append(Step(cut=cut))  # every body byte arrives, the last chunk does not
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == data
    assert server.requests[1].header("range") == "bytes=100-"  # answered 416: already complete


# --- redirects ------------------------------------------------------------------------
def test_relative_redirect() -> None:
    server = FileServer()
    server.redirect("/dir/start", "../other/file.bin")
    server.add("/other/file.bin", body(10))
    sim = run([f"{H}/dir/start"], {H: server})
    assert sim.finished[0].path == "/sim/start"  # named from the URL given, as curl -O does
    assert sim.content(0) == body(10)
    assert sim.finished[0].url == f"{H}/dir/start"
    trusting = run([f"{H}/dir/start"], {H: server}, trust_server_names=True)
    assert trusting.finished[0].path == "/sim/file.bin"  # from the last URL, as wget's flag


def test_a_redirect_to_a_dotfile_is_saved_under_the_url_given() -> None:
    server = FileServer()
    server.redirect("/report.pdf", "/cdn/.hidden-report.pdf")
    server.add("/cdn/.hidden-report.pdf", body(10))
    sim = run([f"{H}/report.pdf"], {H: server})
    assert sim.finished[0].path == "/sim/report.pdf"
    trusting = run([f"{H}/report.pdf"], {H: server}, trust_server_names=True)
    assert trusting.finished[0].path == "/sim/hidden-report.pdf"  # never a dotfile


def chain(server: FileServer, hops: int) -> None:
    for k in range(hops):
        server.redirect(f"/r{k}", f"/r{k + 1}", status=(301, 302, 303, 307, 308)[k % 5])
    server.add(f"/r{hops}", body(10))


def test_a_chain_of_ten_redirects_is_followed() -> None:
    server = FileServer()
    chain(server, 10)
    sim = run([Job.from_url(f"{H}/r0", out="file")], {H: server})
    assert sim.content(0) == body(10)
    assert len(server.requests) == 11


def test_eleven_redirects_fail() -> None:
    server = FileServer()
    chain(server, 11)
    sim = run([f"{H}/r0"], {H: server})
    error = sim.failed[0].error
    assert isinstance(error, RedirectError)
    assert str(error) == f"{H}/r0: more than 10 redirects"
    assert sim.content(0) is None


def test_a_redirect_loop_fails() -> None:
    server = FileServer()
    server.redirect("/a", f"{H2}/b")
    mirror = FileServer()
    mirror.redirect("/b", f"{H}/a")
    sim = run([f"{H}/a"], {H: server, H2: mirror})
    assert isinstance(sim.failed[0].error, RedirectError)
    assert len(server.requests) + len(mirror.requests) == 11


def test_a_redirect_to_ftp_is_refused() -> None:
    server = FileServer()
    server.redirect("/f", "ftp://files.example/f")
    sim = run([f"{H}/f"], {H: server})
    error = sim.failed[0].error
    assert isinstance(error, RedirectError)
    assert "redirect refused: unsupported scheme 'ftp'" in str(error)
    assert list(sim.connects) == [origin(H)]


def test_credentials_do_not_follow_a_redirect_to_another_origin() -> None:
    server, mirror = FileServer(), FileServer()
    server.redirect("/f", "/g")
    server.redirect("/g", f"{H2}/f")
    mirror.add("/f", body(10))
    job = Job.from_url(f"{H}/f", headers=(("Authorization", "Bearer s3cret"), ("X-Trace", "1")))
    sim = run([job], {H: server, H2: mirror})
    assert sim.content(0) == body(10)
    assert all(r.header("authorization") == "Bearer s3cret" for r in server.requests)
    [request] = mirror.requests
    assert request.header("authorization") is None and request.header("x-trace") == "1"


def test_a_jobs_headers_stay_on_its_own_requests() -> None:
    server = FileServer()
    for name in "abc":
        server.add(f"/{name}", body(10))
    secret = Job.from_url(f"{H}/b", headers=(("Authorization", "Bearer s3cret"),))
    sim = run([f"{H}/a", secret, f"{H}/c"], {H: server}, per_host=1)  # one connection, in turn
    assert len(sim.finished) == 3
    sent = {r.target: r.header("authorization") for r in server.requests}
    assert sent == {"/a": None, "/b": "Bearer s3cret", "/c": None}


def test_a_redirect_after_a_partial_attempt_moves_the_download(tmp_path: Path) -> None:
    server = FileServer()
    # After one attempt that wrote 1000 bytes, the URL redirects to a file of another name.
    server.add(
        "/old", body(3000), Step(cut=1000), Step(status=302, headers=(("Location", "/new"),))
    )
    server.add("/new", body(500, seed=5))
    trust = options(tmp_path, trust_server_names=True)
    sim = Sim([f"{H}/old"], trust, {H: server}, store=DiskStore()).run()
    assert [r.target for r in server.requests] == ["/old", "/old", "/new"]
    assert sim.finished[0].path == str(tmp_path / "new")
    assert (tmp_path / "new").read_bytes() == body(500, seed=5)
    assert sorted(os.listdir(tmp_path)) == ["new", "old" + PART_SUFFIX]  # not the other's


def test_a_redirect_after_a_partial_attempt_keeps_the_name_by_default(tmp_path: Path) -> None:
    server = FileServer()
    server.add(
        "/old", body(3000), Step(cut=1000), Step(status=302, headers=(("Location", "/new"),))
    )
    server.add("/new", body(500, seed=5))
    sim = Sim([f"{H}/old"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert sim.finished[0].path == str(tmp_path / "old")
    assert (tmp_path / "old").read_bytes() == body(500, seed=5)
    assert sorted(os.listdir(tmp_path)) == ["old"]


# --- names ----------------------------------------------------------------------------
def test_two_jobs_for_one_name_with_no_clobber_the_second_fails() -> None:
    a, b = FileServer(), FileServer()
    a.add("/f", body(10))
    b.add("/f", body(20))
    sim = run([f"{H2}/f", f"{H}/f"], {H: a, H2: b}, no_clobber=True)
    assert sim.content(0) == body(20)
    error = sim.failed[1].error
    assert isinstance(error, DestinationError)
    assert str(error) == f"{H}/f: /sim/f is also the target of {H2}/f (--no-clobber)"
    assert not a.requests


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_two_jobs_for_one_name_are_numbered_by_url_not_by_order(order: list[int]) -> None:
    a, b = FileServer(), FileServer()
    a.add("/f", body(10))
    b.add("/f", body(20))
    a.add("/f.1", body(30))
    urls = [f"{H}/f", f"{H2}/f", f"{H}/f.1"]
    sim = run([urls[i] for i in order], {H: a, H2: b}, auto_rename=True)  # a no-op now
    paths = {sim.finished[n].url: sim.finished[n].path for n in range(3)}
    # h.example sorts before mirror.example; f.1 is its own URL's name, so f.2 is next.
    assert paths == {urls[0]: "/sim/f", urls[1]: "/sim/f.2", urls[2]: "/sim/f.1"}
    assert {sim.content(n) for n in range(3)} == {body(10), body(20), body(30)}


def names_batch(names: list[str], **kwargs: object) -> Batch:
    jobs = [Job.from_url(f"{H}/{name}") for name in names]
    return Batch(jobs, Options(directory="/d", **kwargs), seed=1)  # type: ignore[arg-type]


def outcome(actions: Sequence[object]) -> dict[int, str]:
    """Each download's Prepare path, or its failure's text."""
    seen: dict[int, str] = {}
    for action in actions:
        if isinstance(action, Prepare):
            seen[action.download] = action.path
        elif isinstance(action, Failed):
            seen[action.download] = str(action.error)
    return seen


def test_a_clash_is_failed_at_the_start_before_the_clashing_file_is_prepared() -> None:
    batch = names_batch(["a", "b", "c", "a"], no_clobber=True)
    first = batch.start(0.0, first=1)
    assert [type(a) for a in first] == [Failed, Prepare]  # the clash, then the first file
    clash = f"{H}/a: /d/a is also the target of {H}/a (--no-clobber)"
    assert outcome(first) == {3: clash, 0: "/d/a"}
    assert batch.unprepared == 2
    assert outcome(batch.prepare_more(1, 0.0)) == {1: "/d/b"}
    assert outcome(batch.prepare_more(5, 0.0)) == {2: "/d/c"}
    assert batch.unprepared == 0 and batch.prepare_more(5, 0.0) == []


NAMES = ["f", "f.1", "f.1.1", "g", "sub%2Fg", "%2e%2e", "."]  # clashing, some only once sanitised


@pytest.mark.parametrize("auto_rename", [False, True])
@settings(derandomize=True, database=None, deadline=None)
@given(
    names=st.lists(st.sampled_from(NAMES), max_size=8),
    first=st.integers(min_value=0, max_value=9),
    step=st.integers(min_value=1, max_value=3),
)
def test_a_start_in_steps_names_every_file_as_a_whole_start_does(
    auto_rename: bool, names: list[str], first: int, step: int
) -> None:
    whole = outcome(names_batch(names, auto_rename=auto_rename).start(0.0))
    batch = names_batch(names, auto_rename=auto_rename)
    actions = batch.start(0.0, first=first)
    while batch.unprepared:
        actions += batch.prepare_more(step, 0.0)
    assert outcome(actions) == whole
    assert sorted(whole) == list(range(len(names)))  # every job: prepared or failed,
    assert sum(isinstance(a, Prepare | Failed) for a in actions) == len(names)  # once


@pytest.mark.parametrize("auto_rename", [False, True])
@settings(derandomize=True, database=None, deadline=None)
@given(names=st.lists(st.sampled_from([*NAMES, "../x", "a/%2E%2E"]), max_size=8))
def test_a_batch_given_its_first_paths_starts_as_one_that_finds_them(
    auto_rename: bool, names: list[str]
) -> None:
    found = names_batch(names, auto_rename=auto_rename)
    jobs, options = [Job.from_url(f"{H}/{name}") for name in names], found.options
    paths = [claimable_path(job, options) for job in jobs]
    given = Batch(jobs, options, seed=1, paths=paths)
    assert outcome(given.start(0.0)) == outcome(found.start(0.0))
    with pytest.raises(ValueError):  # one path per job
        Batch(jobs, options, paths=[*paths, None]).start(0.0)


def test_a_batch_numbers_its_downloads_with_the_ids_it_is_given() -> None:
    jobs = [Job.from_url(f"{H}/{name}") for name in ("a", "b", "a")]
    batch = Batch(jobs, Options(directory="/d"), seed=1, ids=[7, 3, 12])
    actions = batch.start(0.0)
    assert outcome(actions) == {
        7: "/d/a",
        3: "/d/b",
        12: "/d/a.1",  # the same URL twice (a Run keeps it once): the second numbered
    }
    assert batch.prepared(3, OnDisk("fresh"), 0.0) == [Connect(1, "h.example", 80, False)]
    with pytest.raises(ValueError):  # one id per job, found as the jobs are taken
        Batch(jobs, Options(directory="/d"), ids=[1, 2]).start(0.0)


def test_out_and_dir_are_honoured(tmp_path: Path) -> None:
    server = FileServer()
    server.add("/f", body(10))
    job = Job.from_url(f"{H}/f", out="renamed.bin", subdir="a/b")
    sim = Sim([job], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert sim.finished[0].path == str(tmp_path / "a" / "b" / "renamed.bin")
    assert (tmp_path / "a" / "b" / "renamed.bin").read_bytes() == body(10)


@pytest.mark.parametrize("out", ["../evil", "/etc/evil", "a/../../evil"])
def test_an_out_that_escapes_is_refused(out: str) -> None:
    # Jobs made by hand skip relative_path(); the batch must still refuse.
    server = FileServer()
    server.add("/f", body(10))
    sim = run([Job(parse_url(f"{H}/f"), out=out)], {H: server})
    error = sim.failed[0].error
    assert isinstance(error, DestinationError) and "resolves outside" in str(error)
    assert not server.requests


@pytest.mark.parametrize(
    "path", ["/..%2F..%2Fevil", "/%2E%2E", "/a/%2E%20%2E%2E", "/..%5C..%5Cevil"]
)
def test_url_names_stay_in_the_directory(path: str, tmp_path: Path) -> None:
    server = FileServer()
    server.add(parse_url(H + path).target, body(10))
    sim = Sim([H + path], options(tmp_path / "d"), {H: server}, store=DiskStore()).run()
    assert os.path.dirname(sim.finished[0].path) == str(tmp_path / "d")
    assert os.listdir(tmp_path) == ["d"]


def test_a_redirect_to_a_dot_dot_name_does_not_crash_the_batch() -> None:
    # ". .." once sanitised to "..": Batch._redirect raised ValueError out of received().
    server = FileServer()
    server.redirect("/f", "/%2E%20%2E%2E")
    server.add("/%2E%20%2E%2E", body(10))
    sim = run([f"{H}/f"], {H: server}, trust_server_names=True)
    assert sim.finished[0].path == "/sim/index.html"


def test_a_redirect_cannot_name_a_file_outside() -> None:
    server = FileServer()
    server.redirect("/f", "/x/%2E%2E%2F%2E%2E%2Fevil")
    server.add("/x/%2E%2E%2F%2E%2E%2Fevil", body(10))
    sim = run([f"{H}/f"], {H: server}, trust_server_names=True)
    assert sim.finished[0].path == "/sim/evil"


# --- what is already on disk ----------------------------------------------------------
def test_a_finished_file_is_skipped_without_connecting(tmp_path: Path) -> None:
    server = FileServer()
    server.add("/f", body(100))
    Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    again = Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert again.finished[0] == Finished(0, f"{H}/f", str(tmp_path / "f"), 100, skipped=True)
    assert not again.connects and len(server.requests) == 1


def test_a_partial_file_is_resumed_by_the_next_run(tmp_path: Path) -> None:
    data = body(5000)
    server = FileServer()
    server.add("/f", data, Step(cut=2000))
    first = Sim([f"{H}/f"], options(tmp_path, retries=0), {H: server}, store=DiskStore()).run()
    assert isinstance(first.failed[0].error, NetworkError)
    assert not (tmp_path / "f").exists()
    assert (tmp_path / ("f" + PART_SUFFIX)).stat().st_size == 2000
    second = Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert second.content(0) == data
    assert server.requests[-1].header("range") == "bytes=2000-"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def write_partial(path: Path, data: bytes, url: str, etag: str) -> None:
    """What a run killed after the last byte but before publishing leaves."""
    Path(str(path) + PART_SUFFIX).write_bytes(data)
    Path(str(path) + CONTROL_SUFFIX).write_text(
        json.dumps({"url": url, "size": len(data), "etag": etag, "last_modified": None})
    )


def test_a_complete_part_file_is_published_after_416(tmp_path: Path) -> None:
    data = body(100)
    server = FileServer()
    server.add("/f", data)
    write_partial(tmp_path / "f", data, f"{H}/f", '"v1-100"')
    sim = Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert sim.finished[0].size == 100 and not sim.finished[0].skipped
    assert (tmp_path / "f").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["f"]
    again = Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert again.finished[0].skipped


def test_a_file_published_after_416_behind_a_redirect_is_ours_next_time(tmp_path: Path) -> None:
    data = body(100)
    server = FileServer()
    server.redirect("/f", "/mirror/f")
    server.add("/mirror/f", data)
    write_partial(tmp_path / "f", data, f"{H}/f", '"v1-100"')
    Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    again = Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert again.finished[0].skipped, again.failed
    assert not again.connects


def test_a_foreign_file_is_not_overwritten(tmp_path: Path) -> None:
    server = FileServer()
    server.add("/f", body(10))
    (tmp_path / "f").write_bytes(b"mine")
    sim = Sim([f"{H}/f"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert "exists and was not made by midair (use --overwrite)" in str(sim.failed[0].error)
    assert (tmp_path / "f").read_bytes() == b"mine" and not server.requests


def test_a_foreign_file_with_overwrite(tmp_path: Path) -> None:
    server = FileServer()
    server.add("/f", body(10))
    (tmp_path / "f").write_bytes(b"mine, but much longer than the download")
    Sim([f"{H}/f"], options(tmp_path, overwrite=True), {H: server}, store=DiskStore()).run()
    assert (tmp_path / "f").read_bytes() == body(10)


def test_duplicates_are_numbered_past_foreign_files(tmp_path: Path) -> None:
    a, b = FileServer(), FileServer()
    a.add("/f", body(10))
    b.add("/f", body(20))
    (tmp_path / "f.1").write_bytes(b"also mine")
    sim = Sim([f"{H2}/f", f"{H}/f"], options(tmp_path), {H: a, H2: b}, store=DiskStore()).run()
    assert [sim.finished[n].path for n in (0, 1)] == [str(tmp_path / "f.2"), str(tmp_path / "f")]
    assert (tmp_path / "f.1").read_bytes() == b"also mine"


def test_a_file_made_for_another_url_is_numbered_past(tmp_path: Path) -> None:
    a, b = FileServer(), FileServer()
    a.add("/f", body(10))
    b.add("/f", body(20))
    Sim([f"{H}/f"], options(tmp_path), {H: a}, store=DiskStore()).run()
    sim = Sim([f"{H2}/f"], options(tmp_path), {H2: b}, store=DiskStore()).run()
    assert sim.finished[0].path == str(tmp_path / "f.1")
    assert (tmp_path / "f").read_bytes() == body(10)
    clobber = options(tmp_path, no_clobber=True)
    failed = Sim([f"{H2}/f?x"], clobber, {H2: b}, store=DiskStore()).run().failed[0]
    assert "made by midair for another URL (--no-clobber)" in str(failed.error)


def test_a_matching_checksum_on_disk_is_complete(tmp_path: Path) -> None:
    data = body(10)
    (tmp_path / "f").write_bytes(data)
    job = Job.from_url(f"{H}/f", checksum=Checksum("sha256", hashlib.sha256(data).hexdigest()))
    sim = Sim([job], options(tmp_path), {H: FileServer()}, store=DiskStore()).run()
    assert sim.finished[0].skipped and not sim.connects


# --- verification and local failures -----------------------------------------------------
def test_checksum_mismatch_fails_and_discards(tmp_path: Path) -> None:
    server = FileServer()
    server.add("/f", body(10))
    job = Job.from_url(f"{H}/f", checksum=Checksum("sha256", "0" * 64))
    sim = Sim([job], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert isinstance(sim.failed[0].error, IntegrityError)
    assert os.listdir(tmp_path) == []


def test_checksum_match(tmp_path: Path) -> None:
    server = FileServer()
    server.add("/f", body(10))
    job = Job.from_url(f"{H}/f", checksum=Checksum("sha256", hashlib.sha256(body(10)).hexdigest()))
    sim = Sim([job], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert sim.content(0) == body(10)


def test_max_filesize() -> None:
    server = FileServer()
    server.add("/big", body(1000))
    server.add("/chunked", body(1000), framing="chunked")
    sim = run([f"{H}/big", f"{H}/chunked"], {H: server}, max_filesize=999)
    assert all(isinstance(f.error, IntegrityError) for f in sim.failed.values())
    assert len(sim.failed) == 2


def test_an_unwritable_directory_fails_every_job_cleanly(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    server = FileServer()
    for k in range(3):
        server.add(f"/f{k}", body(10))
    sim = Sim(
        [f"{H}/f{k}" for k in range(3)],
        options(tmp_path / "file" / "sub"),
        {H: server},
        store=DiskStore(),
    ).run()
    assert len(sim.failed) == 3
    for ident, failed in sim.failed.items():
        assert isinstance(failed.error, DestinationError)
        assert str(tmp_path / "file" / "sub" / f"f{ident}") in str(failed.error)
    assert not server.requests


class FailingStore(DiskStore):
    """A disk that fills up while ``victim`` is being written."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def write(self, action: Write) -> None:
        if self._parts[action.download].endswith(self.victim + PART_SUFFIX) and action.offset:
            raise DestinationError("u", "cannot write: disk full")
        super().write(action)


@pytest.mark.parametrize(
    ("framing", "piece"), [("length", 100), ("chunked", 100), ("chunked", None)]
)
def test_a_write_error_fails_that_download_only(
    tmp_path: Path, framing: str, piece: int | None
) -> None:
    # Unsplit, the failing write and the end of the body come in one call: the session
    # still carries out the Publish, and the store's answer must not end the download twice.
    server = FileServer(piece=piece)
    for k in range(4):
        server.add(f"/f{k}", body(300, k), framing=framing)
    sim = Sim(
        [f"{H}/f{k}" for k in range(4)],
        options(tmp_path, per_host=1),
        {H: server},
        store=FailingStore("f1"),
    ).run()
    assert isinstance(sim.failed[1].error, DestinationError)
    assert not (tmp_path / "f1").exists()
    assert [sim.content(k) for k in (0, 2, 3)] == [body(300, k) for k in (0, 2, 3)]


def test_checkpoint_only_for_transfers_that_take_a_while(tmp_path: Path) -> None:
    server = FileServer(piece=100, gap=0.2)
    server.add("/slow", body(2000))
    server.add("/quick", body(50))
    sim = Sim([f"{H}/slow", f"{H}/quick"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert [a.download for a in sim.actions(Checkpoint)] == [0]


def test_no_checkpoint_with_the_last_bytes_of_a_body(tmp_path: Path) -> None:
    # Two pieces: the head and most of the body, then, past the deadline, the rest; the
    # control file would be written and removed at once.
    server = FileServer(piece=1500, gap=1.5)
    server.add("/late", body(2000))
    sim = Sim([f"{H}/late"], options(tmp_path), {H: server}, store=DiskStore()).run()
    assert sim.content(0) == body(2000)
    assert sim.actions(Checkpoint) == []


# --- properties ---------------------------------------------------------------------------
STEP = st.builds(
    lambda status, cut, then, change, pieces, retry_after, ignore: dict(
        status=status,
        cut=cut,
        then=then,
        change=change,
        pieces=tuple(pieces),
        retry_after=retry_after,
        ignore=ignore,
    ),
    st.sampled_from([200, 200, 200, 500, 503]),
    st.none() | st.integers(0, 1600) | st.integers(0, 300),
    st.sampled_from(["reset", "close", "stall"]),
    st.none() | st.integers(0, 1500),
    st.lists(st.integers(1, 3000), max_size=6),
    st.none() | st.integers(0, 3),
    st.booleans(),
)
RESOURCE = st.fixed_dictionaries(
    {
        "size": st.integers(0, 1500),
        "validators": st.sampled_from(["etag", "last-modified", "both", "none"]),
        "framing": st.sampled_from(["length", "chunked", "close"]),
        "steps": st.lists(STEP, max_size=4),
        "host": st.integers(0, 1),
    }
)


def make_step(spec: dict[str, object], resource: dict[str, object], seed: int) -> Step:
    headers = () if spec["retry_after"] is None else (("Retry-After", str(spec["retry_after"])),)
    change = None if spec["change"] is None else body(spec["change"], seed)  # type: ignore[arg-type]
    then = spec["then"]
    if then == "close" and resource["framing"] == "close":
        then = "reset"  # EOF is the end of a close-delimited body: a cut would go unnoticed
    # A server ignoring If-Range is only detectable through a changing ETag.
    ignore = bool(spec["ignore"]) and resource["validators"] in ("etag", "both")
    return Step(
        status=spec["status"],
        headers=headers,
        change=change,  # type: ignore[arg-type]
        cut=spec["cut"] if spec["status"] == 200 else None,  # type: ignore[arg-type]
        then=then,
        pieces=spec["pieces"],
        ignore_if_range=ignore,
    )  # type: ignore[arg-type]


# MIDAIR_SIM_EXAMPLES=20000 for a long hunt; the default keeps the suite fast.
@settings(
    max_examples=int(os.environ.get("MIDAIR_SIM_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    resources=st.lists(RESOURCE, min_size=1, max_size=5),
    retries=st.integers(0, 4),
    per_host=st.integers(1, 3),
    concurrency=st.integers(1, 4),
    keep_alive=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_every_job_ends_exact_or_failed_without_a_file(
    resources: list[dict[str, object]],
    retries: int,
    per_host: int,
    concurrency: int,
    keep_alive: bool,
    seed: int,
) -> None:
    servers = {H: FileServer(keep_alive=keep_alive), H2: FileServer(keep_alive=keep_alive)}
    jobs, files = [], []
    for i, spec in enumerate(resources):
        validators = str(spec["validators"])
        server = servers[(H, H2)[int(spec["host"])]]  # type: ignore[call-overload]
        steps = [
            make_step(s, spec, seed=1000 * i + k)  # type: ignore[arg-type]
            for k, s in enumerate(spec["steps"])
        ]  # type: ignore[attr-defined]
        files.append(
            server.add(
                f"/f{i}",
                body(spec["size"], i),
                *steps,  # type: ignore[arg-type]
                etag=validators in ("etag", "both"),
                last_modified=validators in ("last-modified", "both"),
                framing=spec["framing"],
            )
        )
        jobs.append(f"{(H, H2)[int(spec['host'])]}/f{i}")  # type: ignore[call-overload]
    with tempfile.TemporaryDirectory() as directory:
        sim = Sim(
            jobs,
            options(
                Path(directory),
                retries=retries,
                per_host=per_host,
                concurrency=concurrency,
                timeout=5.0,
                max_retry_wait=3.0,
                retry_base=0.1,
            ),
            servers,
            store=DiskStore(),
            seed=seed,
            max_steps=20_000,
        ).run()
        for i, resource in enumerate(files):
            path = Path(directory) / f"f{i}"
            if i in sim.finished:
                assert path.read_bytes() == resource.body, f"job {i} finished with wrong bytes"
                assert sim.finished[i].size == len(resource.body)
            else:
                error = sim.failed[i].error
                assert isinstance(error, DownloadError) and "\n" not in str(error)
                assert not path.exists(), f"job {i} failed but left {path}"
            # Every failed attempt uses up one step of the script, so with enough retries
            # every job must get through.
            if retries >= len(resources[i]["steps"]):  # type: ignore[arg-type]
                assert i in sim.finished, sim.failed[i].error
            assert not Path(str(path) + PART_SUFFIX).exists() or i in sim.failed
    assert sim.now < 10_000
    ranges = [r for s in servers.values() for r in s.requests if r.header("range")]
    event(f"resumed with Range: {bool(ranges)}")
    event(f"failed: {bool(sim.failed)}")
    event(f"restarted: {any('changed' in r.reason for _, r in sim.retrying)}")


# Names a hostile server might give, colliding with each other and with the URLs' names.
SERVER_NAMES = [
    "f0",
    "f1",
    "same",
    "../same",
    "/etc/same",
    ".same",
    "..",
    "f0.midair-part",
    "f1.midair-ctl",
]
PAUSE_STEP = st.builds(
    lambda status, retry_after: Step(
        status=status, headers=() if retry_after is None else (("Retry-After", str(retry_after)),)
    ),
    st.sampled_from([200, 429, 503]),
    st.none() | st.integers(0, 4),  # within --max-retry-wait: a longer ask ends the file
)


@settings(
    max_examples=int(os.environ.get("MIDAIR_SIM_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    resources=st.lists(
        st.tuples(
            st.integers(0, 1),
            st.none() | st.sampled_from(SERVER_NAMES),
            st.lists(PAUSE_STEP, max_size=3),
        ),
        min_size=1,
        max_size=6,
    ),
    per_host=st.integers(1, 3),
    connect_delay=st.sampled_from([0.01, 0.5, 3.0]),
    keep_alive=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_hostile_names_and_slow_downs(
    resources: list[tuple[int, str | None, list[Step]]],
    per_host: int,
    connect_delay: float,
    keep_alive: bool,
    seed: int,
) -> None:
    """Server names never leave the directory, never take another job's file; after a
    429/503 no request reaches that host until the pause is over, not even on a
    connection that was being opened when the host said so."""
    servers = {H: FileServer(keep_alive=keep_alive), H2: FileServer(keep_alive=keep_alive)}
    jobs, bodies = [], []
    for i, (host, name, script) in enumerate(resources):
        cd = () if name is None else (("Content-Disposition", f'attachment; filename="{name}"'),)
        steps = [Step(status=s.status, headers=s.headers + cd) for s in script]
        servers[(H, H2)[host]].add(f"/f{i}", body(50 + i, i), *steps, *[Step(headers=cd)] * 8)
        jobs.append(f"{(H, H2)[host]}/f{i}")
        bodies.append(body(50 + i, i))
    with tempfile.TemporaryDirectory() as directory:
        top = Path(directory) / "d"
        sim = Sim(
            jobs,
            options(top, per_host=per_host, retries=4, max_retry_wait=4.0, retry_base=0.1),
            servers,
            store=DiskStore(),
            seed=seed,
            connect_delay=connect_delay,
            max_steps=20_000,
        ).run()
        paths = [sim.finished[i].path for i in sim.finished]
        assert len(set(paths)) == len(paths), "two jobs published to one name"
        for i, finished in sim.finished.items():
            assert os.path.dirname(finished.path) == str(top)
            assert not os.path.basename(finished.path).startswith(".")
            assert not finished.path.endswith((PART_SUFFIX, CONTROL_SUFFIX))
            assert Path(finished.path).read_bytes() == bodies[i]
        assert os.listdir(directory) == ["d"] or not os.listdir(directory)
        assert not set(sim.failed), [f.error for f in sim.failed.values()]  # 3 < 4 retries
    for answered, retrying in sim.retrying:
        if retrying.reason not in ("HTTP 429", "HTTP 503"):
            continue
        host = origin(retrying.url)
        during = [
            r
            for o, r in sim.sends
            if o == host and answered < r.time < answered + retrying.delay - 1e-9
        ]
        assert not during, f"asked {host} during its pause after {retrying}"


# --- scale ----------------------------------------------------------------------------------
def test_twenty_thousand_jobs_over_a_hundred_hosts_in_virtual_time() -> None:
    hosts = [f"http://h{i}.example" for i in range(100)]
    servers = {h: FileServer(delay=0.05) for h in hosts}
    jobs = []
    for k in range(20_000):
        host = hosts[k % 100]
        servers[host].add(f"/f{k}", b"%d" % k)
        jobs.append(f"{host}/f{k}")
    started = time.perf_counter()
    sim = Sim(
        jobs,
        options(Path("/sim"), concurrency=300, per_host=4),
        servers,
        store=MemoryStore(),
        log=False,
        max_steps=1_000_000,
    ).run()
    elapsed = time.perf_counter() - started
    assert len(sim.finished) == 20_000 and not sim.failed
    assert sum(sim.connects.values()) == 300  # all the slots, every connection kept alive
    assert sim.content(12345) == b"12345"
    assert elapsed < 20, f"{elapsed:.1f} s: the scheduler is slower than linear"


# --- a host that cannot be reached backs off as a whole ---------------------------------
def test_a_refusing_host_is_given_up_as_a_whole_with_one_reason() -> None:
    jobs = [f"http://nobody.example/f{i}" for i in range(300)]
    sim = run(jobs, {}, retries=3)
    reasons = {str(f.error).split(": ", 1)[1] for f in sim.failed.values()}
    assert reasons == {"connection refused (gave up after 3 retries)"}
    # Rounds of --per-host connections, one per retry: not 300 jobs x 4 attempts.
    assert sim.connects[origin("http://nobody.example")] <= 4 * 6
    assert all(isinstance(f.error, NetworkError) for f in sim.failed.values())


def test_a_tls_failure_at_connect_fails_every_job_of_the_host_at_once() -> None:
    jobs = [f"https://bad-cert.example/f{i}" for i in range(50)]
    server = FileServer()
    sim = Sim(jobs, options(Path("/sim")), {"https://bad-cert.example": server})
    failure = ConnectionFailure("certificate verify failed", retryable=False, tls=True)
    sim.connect_failures[origin("https://bad-cert.example")] = failure
    sim.run()
    assert len(sim.failed) == 50 and not sim.retrying
    assert {str(f.error).split(": ", 1)[1] for f in sim.failed.values()} == {
        "certificate verify failed"
    }
    assert sim.connects[origin("https://bad-cert.example")] <= 6


def test_a_host_that_refuses_a_while_then_serves_loses_no_job_and_burns_no_retries() -> None:
    server = FileServer()
    for i in range(40):
        server.add(f"/f{i}", body(100, seed=i))
    sim = Sim([f"{H}/f{i}" for i in range(40)], options(Path("/sim"), retries=5), {H: server})
    sim.refusals[origin(H)] = 8  # a round of six; then AIMD's single connections, refused twice
    sim.run()
    assert len(sim.finished) == 40 and not sim.failed
    assert all(sim.content(i) == body(100, seed=i) for i in range(40))
    assert len(sim.retrying) == 3  # one a round, for the host: no job spent its own retries
