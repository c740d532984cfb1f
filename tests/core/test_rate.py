"""Rate limits and request spacing (core/rate.py), alone and through a batch, in virtual time."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midair.core.actions import Close, Connect, Finished, Hold, OnDisk, Release, Send
from midair.core.batch import Batch
from midair.core.errors import InputError
from midair.core.jobs import Job, Options
from midair.core.rate import READS_PER_SECOND, Bucket, Spacing, Throttle, read_size
from midair.core.units import parse_amount

from .sim import FileServer, Sim, run

H = "http://h.example"
K = 1024


# --- the bucket alone ----------------------------------------------------------------
def read_at_the_limit(bucket: Bucket, reads: list[int]) -> list[tuple[float, int]]:
    """(time, bytes so far) after each read, each read made as soon as the bucket allows."""
    now, total, seen = 0.0, 0, []
    for count in reads:
        now = max(now, bucket.spend(count, now))  # the next read waits out the debt
        total += count
        seen.append((now, total))
    return seen


@given(
    rate=st.integers(1, 10 << 20),
    reads=st.lists(st.integers(1, 256 * K), min_size=1, max_size=60),
)
def test_a_bucket_never_lets_more_through_than_its_rate_allows(rate: int, reads: list[int]) -> None:
    """By the time a read may go on, the bytes before it are within depth + rate * t: a
    connection whose reads wait for the bucket averages at most the rate, whatever the
    size of its reads."""
    bucket = Bucket(rate, 0.0)
    for now, total in read_at_the_limit(bucket, reads):
        assert total <= bucket.depth + rate * now + 1e-6 * total


def test_a_bucket_lets_a_reader_keep_up_with_its_rate() -> None:
    """Reads of a thirty-second's worth: 4 s at 256 KiB/s pass ~1 MiB, not much less."""
    rate = 256 * K
    seen = read_at_the_limit(Bucket(rate, 0.0), [rate // READS_PER_SECOND] * 4 * READS_PER_SECOND)
    now, total = seen[-1]
    assert total == 4 * rate
    assert now == pytest.approx(4.0 - 1 / READS_PER_SECOND)  # the first read was saved up


def test_a_quiet_bucket_saves_up_no_more_than_its_depth() -> None:
    bucket = Bucket(3200, 0.0)  # its depth: 100 bytes
    assert bucket.spend(100, 100.0) == 100.0  # saved up over 100 s, yet only its depth
    assert bucket.spend(3200, 100.0) == pytest.approx(101.0)  # the rest: a second's wait


def test_read_size_is_a_small_part_of_the_lowest_rate_and_none_without_one() -> None:
    assert read_size(0, 0) is None
    assert read_size(256 * K, 0) == 8 * K
    assert read_size(256 * K, 64 * K) == 2 * K
    assert read_size(100, 0) == 1024  # never tiny reads


# --- the throttle: holds and releases --------------------------------------------------
def read(throttle: Throttle, conn: int, transfer: int, count: int, now: float) -> Hold | None:
    """One read of ``count`` bytes of ``transfer`` on ``conn``, as the batch counts it."""
    throttle.transfer(conn, transfer, count, now)
    return throttle.received(conn, count, now)


def test_a_connection_over_its_rate_is_held_then_released() -> None:
    throttle = Throttle(per_transfer=1000, overall=0)
    assert read(throttle, 1, 0, 10, 0.0) is None  # within what it saved up
    hold = read(throttle, 1, 0, 1000, 0.0)
    assert isinstance(hold, Hold) and hold.conn == 1 and hold.until == pytest.approx(1.01 - 1 / 32)
    assert throttle.next_deadline() == hold.until
    assert throttle.releases(hold.until - 0.01) == []
    assert throttle.releases(hold.until) == [Release(1)]
    assert throttle.releases(hold.until + 5) == []  # once


def test_a_closed_connection_is_never_released() -> None:
    throttle = Throttle(per_transfer=1000, overall=0)
    hold = read(throttle, 1, 0, 5000, 0.0)
    assert hold is not None
    throttle.forget(1)
    assert throttle.releases(hold.until) == []


def test_a_connection_held_again_is_released_at_the_later_end_only() -> None:
    throttle = Throttle(per_transfer=1000, overall=0)
    first = read(throttle, 1, 0, 2000, 0.0)
    second = read(throttle, 1, 0, 2000, 0.5)  # bytes an engine had read already
    assert first is not None and second is not None and second.until > first.until
    assert throttle.releases(first.until) == []
    assert throttle.releases(second.until) == [Release(1)]


def test_the_overall_rate_holds_whichever_connection_overdraws_it() -> None:
    throttle = Throttle(per_transfer=0, overall=1000)
    assert read(throttle, 1, 0, 30, 0.0) is None
    hold = read(throttle, 2, 1, 1000, 0.0)  # connection 2's bytes empty the batch's bucket
    assert hold is not None and hold.conn == 2
    later = read(throttle, 1, 0, 500, 0.0)  # and 1 is held at its next read, behind 2
    assert later is not None and later.until == pytest.approx(hold.until + 0.5)


def test_a_file_on_several_connections_keeps_to_one_rate() -> None:
    """-s: the ranges of one file share its bucket, so the file, not each connection,
    keeps to --max-rate; each connection is held at its own read."""
    throttle = Throttle(per_transfer=1000, overall=0)
    first = read(throttle, 1, 0, 1000, 0.0)
    second = read(throttle, 2, 0, 1000, 0.0)  # the same file on another connection
    assert first is not None and second is not None
    assert second.conn == 2 and second.until == pytest.approx(first.until + 1.0)
    assert read(throttle, 3, 9, 10, 0.0) is None  # another file: its own bucket
    throttle.ended(0)
    assert read(throttle, 1, 0, 10, 0.0) is None  # a bucket made afresh (ids stay unique)


def test_an_http2_connection_is_held_for_its_most_overdrawn_stream() -> None:
    """Each stream's file keeps to --max-rate: the connection carrying them is held until
    the file most in debt is paid back, not granted the sum of their rates."""
    throttle = Throttle(per_transfer=1000, overall=0)
    throttle.transfer(7, 101, 10, 0.0)
    throttle.transfer(7, 102, 2000, 0.0)  # the busy one
    hold = throttle.received(7, 2010, 0.0)
    assert hold is not None and hold.conn == 7
    assert hold.until == pytest.approx((2000 - 1000 / 32) / 1000)
    assert read(throttle, 7, 101, 10, 0.0) is None  # the quiet stream alone owes nothing


def test_a_closed_connection_leaves_no_debt_to_the_next_read() -> None:
    throttle = Throttle(per_transfer=1000, overall=0)
    throttle.transfer(7, 101, 5000, 0.0)
    throttle.forget(7)  # closed by the bytes it read
    assert throttle.received(7, 10, 0.0) is None


def test_spacing_books_each_hosts_requests_apart() -> None:
    spacing = Spacing(2.0)
    assert spacing.free_at("a") == 0.0
    assert [spacing.book("a", 0.0), spacing.book("a", 0.5), spacing.book("b", 0.5)] == [
        0.0,
        2.0,
        0.5,
    ]
    assert spacing.free_at("a") == 4.0
    assert spacing.book("a", 10.0) == 10.0  # a quiet host goes at once


# --- the options ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "amount"),
    [("512", 512), ("256K", 262144), ("1.5M", 1572864), ("2m", 2 << 20), ("1G", 1 << 30)],
)
def test_amounts_read_as_aria2_and_curl_read_them(text: str, amount: int) -> None:
    assert parse_amount(text) == amount


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_rate", -1, "--max-rate: expected a whole number >= 0"),
        ("max_overall_rate", 1.5, "--max-overall-rate: expected a whole number >= 0"),
        ("host_delay", -0.1, "--host-delay: expected a number of seconds >= 0"),
    ],
)
def test_bad_values_are_refused_naming_the_option(name: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Options(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["max_rate", "max_overall_rate"])
def test_a_lowest_speed_above_a_rate_limit_is_refused(name: str) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(InputError, match=f"--lowest-speed 2000 is above {flag} 1000"):
        Options(**{name: 1000}, lowest_speed=2000)  # type: ignore[arg-type]
    assert Options(**{name: 1000}, lowest_speed=1000)  # type: ignore[arg-type]


# --- through a batch --------------------------------------------------------------------
def connected(**options: object) -> Batch:
    batch = Batch([Job.from_url(f"{H}/f")], Options(directory="/d", **options), seed=1)  # type: ignore[arg-type]
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    return batch


def test_a_batch_holds_a_connection_its_bytes_overdrew_and_releases_it_on_time() -> None:
    batch = connected(max_rate=1000)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    actions = batch.received(1, head + b"x" * 2000, 0.2)
    [hold] = [a for a in actions if isinstance(a, Hold)]
    assert hold.conn == 1 and hold.until > 2.0
    assert batch.next_deadline() is not None and batch.next_deadline() <= hold.until
    assert batch.pipeable(1) == 0  # no splicing past a limit
    assert Release(1) not in batch.timer(hold.until - 0.1)
    assert Release(1) in batch.timer(hold.until)


def test_a_held_connection_is_not_taken_for_stalled() -> None:
    batch = connected(max_rate=1000, timeout=1.0)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n"
    [hold] = [a for a in batch.received(1, head + b"x" * 20000, 0.2) if isinstance(a, Hold)]
    assert hold.until > 10  # ten times the stall timeout
    actions = batch.timer(hold.until - 0.5)
    assert batch.open_connections == 1 and not any(isinstance(a, Close) for a in actions)


def sim_run(size: int, **options: object) -> Sim:
    server = FileServer(piece=4 * K, gap=0.0001)  # far faster than the limits
    server.add("/a", b"a" * size)
    server.add("/b", b"b" * size)
    return run([f"{H}/a", f"{H}/b"], {H: server}, **options)


def finish_times(sim: Sim) -> list[float]:
    return sorted(t for t, a in sim.log if isinstance(a, Finished))


def test_each_transfer_keeps_to_max_rate_in_virtual_time() -> None:
    sim = sim_run(256 * K, max_rate=64 * K)
    assert len(sim.finished) == 2
    assert all(t >= 3.5 for t in finish_times(sim))  # 256 KiB at 64 KiB/s: ~4 s each
    assert finish_times(sim)[-1] < 4.5  # side by side, not one after the other
    assert sim.actions(Release)  # the held connections were read again


def test_all_transfers_together_keep_to_max_overall_rate() -> None:
    sim = sim_run(256 * K, max_overall_rate=64 * K)
    assert len(sim.finished) == 2
    assert finish_times(sim)[-1] >= 7.5  # 512 KiB at 64 KiB/s: ~8 s in all


def test_host_delay_spaces_the_requests_to_one_host() -> None:
    server = FileServer()
    for n in "abcd":
        server.add(f"/{n}", b"x" * 100)
    sim = run([f"{H}/{n}" for n in "abcd"], {H: server}, host_delay=2.0)
    times = sorted(request.time for _, request in sim.sends)
    assert len(times) == 4
    assert all(b - a >= 2.0 - 1e-9 for a, b in itertools.pairwise(times))


def test_host_delay_keeps_reused_connections_waiting_their_turn() -> None:
    server = FileServer()
    for n in "abc":
        server.add(f"/{n}", b"x" * 100)
    sim = run([f"{H}/{n}" for n in "abc"], {H: server}, host_delay=1.0, per_host=1)
    assert sum(sim.connects.values()) == 1  # one kept-alive connection, each request in turn
    times = sorted(request.time for _, request in sim.sends)
    assert [round(b - a, 6) >= 1.0 for a, b in itertools.pairwise(times)] == [True] * 2


def connects(actions: list) -> list[Connect]:
    return [a for a in actions if isinstance(a, Connect)]


def sends(actions: list) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def test_a_spaced_host_gets_one_new_connection_per_turn() -> None:
    """Not --per-host connections at once, to sit idle waiting their turns: one opens per
    turn, and its request goes as it connects."""
    batch = Batch(
        [Job.from_url(f"{H}/a"), Job.from_url(f"{H}/b")],
        Options(directory="/d", host_delay=5.0, per_host=2),
        seed=1,
    )
    batch.start(0.0)
    [first] = connects(batch.prepared(0, OnDisk("fresh"), 0.0))
    assert not connects(batch.prepared(1, OnDisk("fresh"), 0.0))  # b waits for its turn
    assert sends(batch.connected(first.conn, 0.1))  # a goes: the next turn is at 5.1
    assert not connects(batch.timer(5.0))
    [second] = connects(batch.timer(5.1))
    [send] = sends(batch.connected(second.conn, 5.2))
    assert send.data.startswith(b"GET /b ")


def test_a_request_whose_turn_was_taken_while_connecting_waits_for_the_next() -> None:
    spacing = Spacing(1.0)
    turn = spacing.book("h", 0.0)  # a connection opens for it
    assert spacing.take("h", turn, 0.2) == 0.2  # connected: its request goes, gap from 0.2
    assert spacing.free_at("h") == 1.2
    turn = spacing.book("h", 1.2)
    spacing.book("h", 1.3)  # another connection's request took the turn after it
    assert spacing.take("h", turn, 1.4) == 3.2  # then it waits for the next free one
    assert spacing.take("h", None, 1.4) == 4.2  # (a kept-alive connection books as it asks)


def test_many_small_files_keep_to_max_overall_rate() -> None:
    """Each file comes whole in one read on a connection that ends with it, where no hold
    reaches: the overall rate holds by opening no new connection while in debt.  (What
    the connections open at once bring is a burst: -j 5 here.)"""
    servers = {}
    for i in range(40):
        server = servers[f"http://h{i}.example"] = FileServer(keep_alive=False)
        server.add("/f", b"x" * 1000)
    sim = run([f"{url}/f" for url in servers], servers, max_overall_rate=10_000, concurrency=5)
    assert len(sim.finished) == 40
    assert finish_times(sim)[-1] >= 3.0  # 40,000 bytes at 10,000 B/s, less one burst


def test_an_overdrawn_batch_opens_nothing_until_its_debt_is_paid() -> None:
    throttle = Throttle(per_transfer=0, overall=1000)
    assert not throttle.overdrawn(0.0)
    throttle.received_closed(2000, 0.0)
    assert throttle.overdrawn(0.5)
    wake = throttle.next_deadline()
    assert wake == pytest.approx(2 - 1 / 32)  # the timer comes when the debt is paid
    assert throttle.overdrawn(0.6) and throttle.next_deadline() == wake  # one timer
    assert throttle.releases(wake) == []  # nothing held: a wake-up only
    assert not throttle.overdrawn(wake)
