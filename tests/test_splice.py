"""Big plain-HTTP bodies spliced socket -> pipe -> part file (``midair.engines._splice``).

Every engine that splices is run in process against ``midair serve``, with
``os.splice`` wrapped so a test can see the path really taken, and the store's
plain ``pwrite`` path counted so it can see how few body bytes crossed Python.
Faults mid-body (short body, reset, stall) must end byte-exact after a retry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import test_engines

import midair
import midair.store
from midair.core.actions import Retrying
from midair.core.batch import Batch
from midair.core.http import Piped
from midair.engines._blocking_driver import READ_SIZE, poll_readable
from midair.engines._splice import MIN_BUDGET, Splicer
from midair.engines.epoll import HEAD_READ_SIZE
from midair.serve import ServerThread, expected_bytes
from midair.serve.content import GeneratedResource

SPLICING = [e for e in ("epoll", "threads", "sequential", "green") if e in test_engines()]
SIZE = 4 << 20
FAST = {"retry_base": 0.01, "max_retry_wait": 0.05}


@dataclass
class Trace:
    """What crossed which path: splice calls by kind, bytes pwritten by the store."""

    to_pipe: int = 0  # splice calls from a socket into a pipe
    to_file: int = 0  # splice calls from the pipe into a part file (an offset given)
    written: int = 0  # body bytes the store wrote from Python buffers
    refuse: set[str] = field(default_factory=set)  # "socket", "file": answer EINVAL


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Trace:
    found = Trace()
    real_splice, real_write = os.splice, midair.store._write_at

    def splice(src: int, dst: int, count: int, *args: Any, **kwargs: Any) -> int:
        to_file = kwargs.get("offset_dst") is not None
        kind = "file" if to_file else "socket"
        if kind in found.refuse:
            raise OSError(errno.EINVAL, "refused by the test")
        moved = real_splice(src, dst, count, *args, **kwargs)  # EAGAIN counts no move
        if to_file:
            found.to_file += 1
        else:
            found.to_pipe += 1
        return moved

    def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
        found.written += len(data)
        real_write(fd, data, offset)

    monkeypatch.setattr(os, "splice", splice)
    monkeypatch.setattr(midair.store, "_write_at", write_at)
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(addresses=1) as srv:
        yield srv


@pytest.fixture(params=SPLICING)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Fetched:
    results: Any
    retries: list[Retrying]

    @property
    def ok(self) -> bool:
        return bool(self.results.ok)

    @property
    def failures(self) -> list[Any]:
        return list(self.results.failures)


def fetch(server: ServerThread, tmp: Path, engine: str, query: str = "", **options: Any) -> Fetched:
    """Download the big file; ``tmp`` makes the URL unique, so ``fail_times`` counts afresh."""
    url = server.url(0, f"/gen/big?size={SIZE}{query}&test={abs(hash(str(tmp)))}")
    events: list[object] = []
    results = midair.download(
        [url], str(tmp), engine=engine, on_event=events.append, **{**FAST, **options}
    )
    return Fetched(results, [e for e in events if isinstance(e, Retrying)])


def body(tmp: Path) -> bytes:
    return (tmp / "big").read_bytes()


def test_a_big_body_is_spliced_and_byte_exact(server, tmp_path, engine, trace) -> None:
    results = fetch(server, tmp_path, engine)
    assert results.ok, results.failures
    assert body(tmp_path) == expected_bytes("big", SIZE)
    assert trace.to_pipe > 0 and trace.to_file >= trace.to_pipe
    # Only the bytes read with the head, and a tail below MIN_BUDGET, came through Python;
    # epoll reads a head in HEAD_READ_SIZE, the blocking driver in its READ_SIZE.
    head_read = HEAD_READ_SIZE if engine == "epoll" else READ_SIZE
    assert trace.written < head_read + MIN_BUDGET


def test_a_socket_the_kernel_will_not_splice_is_read(server, tmp_path, engine, trace) -> None:
    trace.refuse.add("socket")
    results = fetch(server, tmp_path, engine)
    assert results.ok, results.failures
    assert body(tmp_path) == expected_bytes("big", SIZE)
    assert trace.to_pipe == 0 and trace.written == SIZE


def test_a_file_that_will_not_take_a_splice_is_written(server, tmp_path, engine, trace) -> None:
    trace.refuse.add("file")
    results = fetch(server, tmp_path, engine)
    assert results.ok, results.failures
    assert body(tmp_path) == expected_bytes("big", SIZE)
    assert trace.to_pipe > 0 and trace.to_file == 0
    assert trace.written == SIZE  # the piped bytes too, read from the pipe


def test_resume_splices_at_the_offset(server, tmp_path, engine, trace) -> None:
    resource = GeneratedResource("big", SIZE)
    url = server.url(0, f"/gen/big?size={SIZE}")
    kept = 1 << 20
    # Zeros on disk, not the server's bytes: a resume keeps them, a restart would not.
    (tmp_path / "big.midair-part").write_bytes(bytes(kept))
    record = {"url": url, "size": SIZE, "etag": resource.etag, "last_modified": None}
    (tmp_path / "big.midair-ctl").write_text(json.dumps(record))
    results = midair.download([url], str(tmp_path), engine=engine, **FAST)
    assert results.ok, results.failures
    assert body(tmp_path) == bytes(kept) + expected_bytes("big", SIZE)[kept:]
    assert trace.to_pipe > 0


@pytest.mark.parametrize(
    "fault",
    [
        "truncate=3000000",  # FIN mid-body: a short body
        "reset_after=3000000",  # RST mid-body
        "length=5000000",  # declares more than it sends, then closes
    ],
)
def test_a_body_cut_mid_splice_is_retried_byte_exact(server, tmp_path, engine, trace, fault):
    results = fetch(server, tmp_path, engine, f"&{fault}&fail_times=1")
    assert results.ok, results.failures
    assert results.retries, "the fault was not hit"  # length=: a 416 and a restart follow
    assert body(tmp_path) == expected_bytes("big", SIZE)
    assert trace.to_pipe > 0


def test_a_stall_mid_splice_times_out_and_is_retried(server, tmp_path, engine, trace) -> None:
    results = fetch(server, tmp_path, engine, "&stall_after=3000000&fail_times=1", timeout=1.0)
    assert results.ok, results.failures
    assert [r.reason for r in results.retries] == ["timed out: no data for 1 s"]
    assert body(tmp_path) == expected_bytes("big", SIZE)
    assert trace.to_pipe > 0


def test_a_checksum_job_is_spliced_and_verified_from_the_file(server, tmp_path, trace) -> None:
    digest = hashlib.sha256(expected_bytes("big", SIZE)).hexdigest()
    results = fetch(server, tmp_path / "good", "epoll", checksum=f"sha256={digest}")
    assert results.ok, results.failures
    assert trace.to_pipe > 0
    bad = fetch(server, tmp_path / "bad", "epoll", checksum="sha256=" + "0" * 64, retries=0)
    assert not bad.ok and "checksum mismatch" in bad.failures[0].error.reason
    assert not (tmp_path / "bad" / "big").exists()


def test_max_filesize_still_holds_for_a_big_body(server, tmp_path, trace) -> None:
    results = fetch(server, tmp_path, "epoll", max_filesize=2_000_000)
    assert not results.ok and "exceeds --max-filesize" in results.failures[0].error.reason
    assert not (tmp_path / "big").exists()


# --- the pipe itself -------------------------------------------------------------------------
def test_clear_empties_the_pipe() -> None:
    splicer = Splicer()
    try:
        os.write(splicer.write, b"x" * 70_000)
        splicer.clear()
        with pytest.raises(BlockingIOError):
            os.read(splicer.read, 1)
    finally:
        splicer.close()


def test_a_failed_move_leaves_the_pipe_empty(tmp_path) -> None:
    splicer = Splicer()
    readonly = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        os.write(splicer.write, b"y" * 100_000)
        piped = Piped(100_000, splicer.read)
        with pytest.raises(OSError):
            midair.store._move_from_pipe(piped, readonly, 0)
        with pytest.raises(BlockingIOError):
            os.read(splicer.read, 1)
        assert piped.emptied  # the engine may trust it: no read of its own needed
    finally:
        os.close(readonly)
        splicer.close()


def test_a_move_marks_the_chunk_emptied(tmp_path) -> None:
    splicer = Splicer()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(splicer.write, b"w" * 70_000)
        piped = Piped(70_000, splicer.read)
        assert not piped.emptied
        midair.store._move_from_pipe(piped, fd, 5)
        assert piped.emptied and os.pread(fd, 70_010, 5) == b"w" * 70_000
    finally:
        os.close(fd)
        splicer.close()


@pytest.fixture
def clears(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each time an engine empties its pipe itself (a read per call at least)."""
    calls: list[int] = []
    real = Splicer.clear

    def clear(self: Splicer) -> None:
        calls.append(1)
        real(self)

    monkeypatch.setattr(Splicer, "clear", clear)
    return calls


def test_no_pipe_is_emptied_twice_while_the_store_takes_every_chunk(
    server, tmp_path, engine, trace, clears
) -> None:
    results = fetch(server, tmp_path, engine)
    assert results.ok, results.failures
    assert trace.to_pipe > 1 and not clears


def test_a_chunk_the_store_did_not_take_is_emptied_by_the_engine(
    server, tmp_path, engine, trace, clears, monkeypatch
) -> None:
    def fail_before_moving(piped: Piped, fd: int, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (the test)")

    monkeypatch.setattr(midair.store, "_move_from_pipe", fail_before_moving)
    results = fetch(server, tmp_path, engine)
    assert not results.ok and "disk full" in results.failures[0].error.reason
    assert clears  # what stayed in the pipe never reaches another body
    assert not (tmp_path / "big").exists()


def test_a_move_of_bytes_the_pipe_lacks_fails(tmp_path) -> None:
    splicer = Splicer()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(splicer.write, b"z" * 10)
        with pytest.raises(OSError):  # EAGAIN on the empty pipe, never a hang
            midair.store._move_from_pipe(Piped(20, splicer.read), fd, 0)
        assert os.pread(fd, 100, 0) == b"z" * 10
    finally:
        os.close(fd)
        splicer.close()


def test_an_error_in_pipeable_ends_the_run_with_it(server, tmp_path, engine, monkeypatch) -> None:
    def broken(self: Batch, conn_id: int) -> int:
        raise RuntimeError("pipeable broke")

    monkeypatch.setattr(Batch, "pipeable", broken)
    with pytest.raises(RuntimeError, match="pipeable broke"):
        fetch(server, tmp_path, engine)


# --- waiting for a socket before a splice, past select(2)'s FD_SETSIZE ----------------------
@pytest.fixture
def high_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is descriptor 1500: where 1,000 connections put sockets."""
    read, write = os.pipe()
    high = os.dup2(read, 1500)
    os.close(read)
    try:
        yield high, write
    finally:
        os.close(high)
        os.close(write)


def readable_waits() -> list[Any]:
    waits: list[Any] = [poll_readable]
    try:
        import gevent  # noqa: F401

        from midair.engines.blocking import _green_readable
    except ImportError:
        return waits
    return [*waits, _green_readable]


@pytest.mark.parametrize("readable", readable_waits(), ids=lambda f: f.__name__)
def test_the_wait_before_a_splice_takes_a_descriptor_past_1024(high_pipe, readable) -> None:
    fd, write = high_pipe
    assert readable(fd, 0.01) is False
    os.write(write, b"x")
    assert readable(fd, 5) is True
