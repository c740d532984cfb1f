"""bulk's ceiling: every plain writer moves the whole response, byte for byte."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from midair.bench import runner
from midair.bench.ceiling import WRITERS, measure_ceiling
from midair.bench.report import describe
from midair.bench.scenarios import Scenario

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)  # more than any buffer or pipe, not a multiple


def _tcp_pair(timeout: float | None = 5.0) -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=timeout)
        peer, _ = server.accept()
    return client, peer


def _send_and_close(peer: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        with peer:
            peer.sendall(data)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize("writer", list(WRITERS))
def test_each_writer_copies_the_stream_exactly(writer: str, tmp_path: Path) -> None:
    client, peer = _tcp_pair()
    sender = _send_and_close(peer, PAYLOAD)
    out = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with client:
            assert WRITERS[writer](client, out) == len(PAYLOAD)
    finally:
        os.close(out)
        sender.join()
    assert (tmp_path / "f").read_bytes() == PAYLOAD


@pytest.mark.parametrize("writer", [w for w in WRITERS if w.startswith("recv")])
def test_a_recv_writer_counts_without_a_file(writer: str) -> None:
    client, peer = _tcp_pair()
    sender = _send_and_close(peer, PAYLOAD)
    with client:
        assert WRITERS[writer](client, None) == len(PAYLOAD)
    sender.join()


@pytest.mark.skipif("splice" not in WRITERS, reason="no splice(2) on this platform")
def test_splice_times_out_as_recv_would(tmp_path: Path) -> None:
    client, peer = _tcp_pair(timeout=0.05)
    out = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with client, peer, pytest.raises(TimeoutError):
            WRITERS["splice"](client, out)
    finally:
        os.close(out)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_measure_ceiling_reads_into_a_file_and_removes_it(writer: str, tmp_path: Path) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(PAYLOAD)}\r\n\r\n".encode()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(head + PAYLOAD)

        thread = threading.Thread(target=serve)
        thread.start()
        gbps = measure_ceiling(f"http://127.0.0.1:{port}/x", 5.0, tmp_path / "c", writer)
        thread.join()
    assert gbps > 0
    assert not (tmp_path / "c").exists()


def test_the_ceiling_is_the_best_writer_of_the_best_rep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = iter([2.0, 2.1, 1.0, 1.5, 1.2, 2.0, 2.0, 0.9, 1.9, 1.1])  # socket x2, 3 writers
    events: list[str] = []

    def fake(url: str, timeout: float, into: Path | None = None, writer: str = "") -> float:
        events.append(writer if into else "socket")
        return next(seen)

    monkeypatch.setattr(runner, "WRITERS", {"a": None, "b": None, "c": None})
    monkeypatch.setattr(runner, "measure_ceiling", fake)
    monkeypatch.setattr(runner, "prefault", lambda path, size: events.append(f"prefault {size}"))
    scn = Scenario("bulk", 1, 1 << 20, 1, 0)
    result = runner.ScenarioResult(scn, "nginx")
    served = runner.Served("nginx", ["http://127.0.0.1:1/"], None)  # type: ignore[arg-type]
    data = type("D", (), {"names": ["f"]})()
    ctx = runner.Context("nginx", tmp_path, tmp_path, 2, {}, {}, 1024, prefault=True)
    for _ in range(2):
        runner._baseline(scn, served, data, ctx, result)  # type: ignore[arg-type]
    ready = f"prefault {1 << 20}"
    # Each writer into a file starts on memory just used, as each client does.
    assert events[:8] == ["socket", "socket", ready, "a", ready, "b", ready, "c"]
    assert result.ceiling == 2.1 and result.file_ceiling == 1.9  # not a median of reps
    assert result.file_ceiling_by == {"a": [1.0, 0.9], "b": [1.5, 1.9], "c": [1.2, 1.1]}
    assert "b 1.90" in describe(result) and "1.90 GB/s (the 100% below)" in describe(result)
