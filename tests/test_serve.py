"""``midair serve`` against plain sockets, http.client and urllib on loopback.

Each fault is checked from the client's side of the wire: what bytes arrive,
and how the connection ends. One server is shared by the module (names in URLs
keep ``fail_times`` counters apart); tests that read statistics start their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from midair.serve import ServerThread, SlowServer, expected_bytes, expected_sha256, loopback_hosts
from midair.serve.content import BLOCK_SIZE, LAST_MODIFIED

Response = tuple[int, Message, bytes]


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with ServerThread(addresses=2) as server:
        yield server


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    """One request on a fresh connection; no redirects followed."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request(
            method, parts.path + ("?" + parts.query if parts.query else ""), headers=headers or {}
        )
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def connect(server: ServerThread, index: int = 0, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((server.hosts[index], server.port), timeout=timeout)


def send(sock: socket.socket, target: str, *headers: str, method: str = "GET") -> None:
    lines = [f"{method} {target} HTTP/1.1", "Host: test", *headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


def exchange(sock: socket.socket, target: str, *headers: str) -> http.client.HTTPResponse:
    """Send a request on ``sock`` and parse the response head from it."""
    send(sock, target, *headers)
    response = http.client.HTTPResponse(sock, method="GET")
    response.begin()
    return response


def read_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


# --- content ----------------------------------------------------------------


def test_expected_bytes_are_deterministic_and_distinct() -> None:
    data = expected_bytes("a.bin", 5000)
    assert data == expected_bytes("a.bin", 5000) and len(data) == 5000
    assert data != expected_bytes("b.bin", 5000) and data != expected_bytes("a.bin", 5001)[:5000]
    assert data != expected_bytes("a.bin", 5000, version="2")
    assert expected_sha256("a.bin", 5000) == hashlib.sha256(data).hexdigest()
    big = expected_bytes("big", 2 * BLOCK_SIZE + 7)  # wraps the block: still one sequence
    assert len(big) == 2 * BLOCK_SIZE + 7 and big[:BLOCK_SIZE] == big[BLOCK_SIZE : 2 * BLOCK_SIZE]


def test_generated_file_body_and_validators(srv: ServerThread) -> None:
    status, headers, body = fetch(srv.url(0, "/gen/dir/f.bin?size=300000"))
    assert status == 200 and body == expected_bytes("dir/f.bin", 300000)
    assert headers["Content-Length"] == "300000" and headers["Accept-Ranges"] == "bytes"
    assert headers["Last-Modified"] == LAST_MODIFIED
    assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
    _, changed, new_body = fetch(srv.url(1, "/gen/dir/f.bin?size=300000&version=2"))
    assert changed["ETag"] != headers["ETag"] and new_body == expected_bytes(
        "dir/f.bin", 300000, "2"
    )


def test_head_sends_headers_only(srv: ServerThread) -> None:
    status, headers, body = fetch(srv.url(0, "/gen/h.bin?size=1234"), method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "1234", b"")


def test_big_unthrottled_file_matches_digest(srv: ServerThread) -> None:
    size = 20 * BLOCK_SIZE + 3
    with urllib.request.urlopen(srv.url(1, f"/gen/big.bin?size={size}"), timeout=10) as response:
        digest = hashlib.sha256(response.read()).hexdigest()
    assert digest == expected_sha256("big.bin", size)


# --- Range / If-Range --------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=5-5000", 5, 999),
        ("bytes=-5000", 0, 999),
    ],
)
def test_range_gives_206(srv: ServerThread, spec: str, first: int, last: int) -> None:
    status, headers, body = fetch(srv.url(0, "/gen/r.bin?size=1000"), {"Range": spec})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/1000"
    assert body == expected_bytes("r.bin", 1000)[first : last + 1]


@pytest.mark.parametrize("spec", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_gives_416(srv: ServerThread, spec: str) -> None:
    status, headers, _ = fetch(srv.url(0, "/gen/r.bin?size=1000"), {"Range": spec})
    assert (status, headers["Content-Range"]) == (416, "bytes */1000")


@pytest.mark.parametrize("spec", ["bytes=a-b", "items=1-2", "bytes=0-1,5-6", "bytes=9-3"])
def test_unparsable_range_is_ignored(srv: ServerThread, spec: str) -> None:
    status, _, body = fetch(srv.url(0, "/gen/r.bin?size=1000"), {"Range": spec})
    assert (status, len(body)) == (200, 1000)


def test_if_range(srv: ServerThread) -> None:
    url = srv.url(0, "/gen/ir.bin?size=100")
    etag = fetch(url, method="HEAD")[1]["ETag"]
    cases = {
        etag: 206,
        '"stale"': 200,
        "W/" + etag: 200,
        LAST_MODIFIED: 206,
        "Sun, 31 Dec 2023 00:00:00 GMT": 200,
        "not a date": 200,
    }
    for validator, expected in cases.items():
        status, _, _ = fetch(url, {"Range": "bytes=50-", "If-Range": validator})
        assert status == expected, validator


# --- connections ---------------------------------------------------------------


def test_keep_alive_serves_two_requests_on_one_socket(srv: ServerThread) -> None:
    with connect(srv) as sock:
        for name in ("k1", "k2"):
            response = exchange(sock, f"/gen/{name}?size=70000")
            assert response.read() == expected_bytes(name, 70000)
            assert not response.will_close


def test_pipelined_requests_are_answered_in_order(srv: ServerThread) -> None:
    with connect(srv) as sock:
        send(sock, "/gen/p1?size=10")
        send(sock, "/gen/p2?size=20", "Connection: close")
        raw = read_until_eof(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.endswith(expected_bytes("p2", 20)) and expected_bytes("p1", 10) in raw


def test_connection_close_is_honoured(srv: ServerThread) -> None:
    with connect(srv) as sock:
        send(sock, "/gen/c?size=10", "Connection: close")
        head, body = split_head(read_until_eof(sock))  # returns only because the server closed
    assert b"Connection: close" in head and body == expected_bytes("c", 10)


def test_bad_requests(srv: ServerThread) -> None:
    with connect(srv) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert read_until_eof(sock).startswith(b"HTTP/1.1 400 ")
    assert fetch(srv.url(0, "/gen/x?size=-1"))[0] == 400
    assert fetch(srv.url(0, "/gen/x?status=abc"))[0] == 400
    assert fetch(srv.url(0, "/gen/x"), method="POST")[0] == 405
    assert fetch(srv.url(0, "/nowhere"))[0] == 404


# --- faults --------------------------------------------------------------------


def test_status_with_retry_after(srv: ServerThread) -> None:
    status, headers, _ = fetch(srv.url(0, "/gen/s?status=503&retry_after=7"))
    assert (status, headers["Retry-After"]) == (503, "7")
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    status, headers, _ = fetch(srv.url(0, f"/gen/s?status=429&retry_after={quote(date)}"))
    assert (status, headers["Retry-After"]) == (429, date)
    assert fetch(srv.url(0, "/gen/s?size=5&status=404"))[0] == 404


def test_fail_times_then_success(srv: ServerThread) -> None:
    url = srv.url(0, "/gen/ft.bin?size=100&status=503&fail_times=2")
    assert [fetch(url)[0] for _ in range(2)] == [503, 503]
    status, _, body = fetch(srv.url(1, "/gen/ft.bin?size=100&status=503&fail_times=2"))
    assert (status, body) == (200, expected_bytes("ft.bin", 100))  # counted per server
    assert fetch(srv.url(0, "/gen/ft.bin?size=100&status=503&fail_times=3"))[0] == 200


def test_reset_after_gives_econnreset(srv: ServerThread) -> None:
    received = b""
    with connect(srv) as sock:
        send(sock, "/gen/rst?size=100000&reset_after=1000")
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, body = split_head(received)
    assert b"Content-Length: 100000" in head and len(body) <= 1000


def test_truncate_sends_k_bytes_then_fin(srv: ServerThread) -> None:
    with connect(srv) as sock:
        send(sock, "/gen/tr?size=5000&truncate=1234")
        head, body = split_head(read_until_eof(sock))
    assert b"Content-Length: 5000" in head and body == expected_bytes("tr", 5000)[:1234]
    with pytest.raises(http.client.IncompleteRead):
        fetch(srv.url(0, "/gen/tr?size=5000&truncate=1234"))


def test_goaway_after_over_http1_drops_the_connection_as_truncate(srv: ServerThread) -> None:
    with connect(srv) as sock:
        send(sock, "/gen/ga?size=5000&goaway_after=321")
        head, body = split_head(read_until_eof(sock))
    assert b"Content-Length: 5000" in head and body == expected_bytes("ga", 5000)[:321]


def test_stall_after_sends_nothing_more(srv: ServerThread) -> None:
    with connect(srv, timeout=0.4) as sock:
        send(sock, "/gen/st?size=5000&stall_after=100")
        received = b""
        with pytest.raises(TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
        sock.shutdown(socket.SHUT_WR)  # the client gives up: the server closes too
        sock.settimeout(5)
        assert sock.recv(10) == b""
    assert split_head(received)[1] == expected_bytes("st", 5000)[:100]


def test_wrong_length_declares_n_sends_real_body(srv: ServerThread) -> None:
    with connect(srv) as sock:
        send(sock, "/gen/wl?size=100&length=50")
        head, body = split_head(read_until_eof(sock))
    assert b"Content-Length: 50" in head and body == expected_bytes("wl", 100)


def test_chunked_framing(srv: ServerThread) -> None:
    with connect(srv) as sock:
        send(sock, "/gen/ch?size=300000&chunked=1", "Connection: close")
        head, body = split_head(read_until_eof(sock))
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body.endswith(b"\r\n0\r\n\r\n")
    status, _, decoded = fetch(srv.url(0, "/gen/ch?size=300000&chunked=1"))
    assert (status, decoded) == (200, expected_bytes("ch", 300000))


def test_redirect_chain_and_location(srv: ServerThread) -> None:
    status, headers, _ = fetch(srv.url(0, "/gen/rd?size=10&redirect=2"))
    assert (status, headers["Location"]) == (302, "/gen/rd?size=10&redirect=1")
    with urllib.request.urlopen(srv.url(0, "/gen/rd?size=10&redirect=3"), timeout=5) as resp:
        assert resp.read() == expected_bytes("rd", 10)
    target = srv.url(1, "/gen/elsewhere?size=3")
    status, headers, _ = fetch(srv.url(0, f"/gen/x?location={target}"))
    assert (status, headers["Location"]) == (302, target)


def test_content_disposition(srv: ServerThread) -> None:
    _, headers, _ = fetch(srv.url(0, "/gen/x?size=1&cd=report.pdf"))
    assert headers["Content-Disposition"] == 'attachment; filename="report.pdf"'
    _, headers, _ = fetch(srv.url(0, "/gen/x?size=1&cd=%C3%A9t%C3%A9.txt"))
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt"


def test_no_range_and_bad_range(srv: ServerThread) -> None:
    status, headers, body = fetch(srv.url(0, "/gen/nr?size=100&no_range=1"), {"Range": "bytes=10-"})
    assert (status, headers["Accept-Ranges"], len(body)) == (200, "none", 100)
    status, headers, body = fetch(
        srv.url(0, "/gen/br?size=100&bad_range=1"), {"Range": "bytes=10-"}
    )
    assert (status, headers["Content-Range"]) == (206, "bytes 11-99/100")
    assert body == expected_bytes("br", 100)[10:]


def test_trickle_sends_one_byte_per_interval(srv: ServerThread) -> None:
    started = time.monotonic()
    _, _, body = fetch(srv.url(0, "/gen/tk?size=4&trickle=0.05"))
    assert body == expected_bytes("tk", 4) and time.monotonic() - started >= 0.15


def test_rate_and_latency_are_lower_bounds(srv: ServerThread) -> None:
    started = time.monotonic()
    _, _, body = fetch(srv.url(0, "/gen/rate?size=65536&rate=131072"))
    assert len(body) == 65536 and time.monotonic() - started >= 0.35
    started = time.monotonic()
    fetch(srv.url(0, "/gen/lat?size=1&latency=0.2"))
    assert time.monotonic() - started >= 0.2


def test_server_wide_rate_and_latency_can_be_overridden() -> None:
    with ServerThread(addresses=1, rate=65536, latency=0.1) as server:
        started = time.monotonic()
        assert len(fetch(server.url(0, "/gen/sw?size=16384"))[2]) == 16384
        assert time.monotonic() - started >= 0.3  # 0.1 s latency + 0.25 s pacing
        started = time.monotonic()
        assert len(fetch(server.url(0, "/gen/sw?size=1000000&rate=0&latency=0"))[2]) == 1000000
        assert time.monotonic() - started < 2  # generous: only "not paced at 64 KiB/s"


def test_the_server_wide_rate_can_be_changed_between_responses() -> None:
    with ServerThread(addresses=1, rate=65536) as server:
        server.set_rate(0)
        started = time.monotonic()
        assert len(fetch(server.url(0, "/gen/free?size=1000000"))[2]) == 1000000
        assert time.monotonic() - started < 2  # paced at 64 KiB/s it would take 15 s
        server.set_rate(65536)
        started = time.monotonic()
        assert len(fetch(server.url(0, "/gen/paced?size=16384"))[2]) == 16384
        assert time.monotonic() - started >= 0.2
        with pytest.raises(ValueError, match="rate"):
            server.set_rate(-1)


# --- statistics, addresses, files, TLS, CLI -------------------------------------


def test_stats_count_concurrent_connections_per_address() -> None:
    with ServerThread(addresses=2) as server:
        a, b = server.hosts
        socks = [connect(server, 0) for _ in range(3)] + [connect(server, 1)]
        try:
            exchange(socks[0], "/gen/s?size=1", "X-Probe: yes").read()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # accepting happens on the server's thread
                now = server.stats().addresses
                if (now[a].current, now[b].current) == (3, 1):
                    break
                time.sleep(0.01)
        finally:
            for sock in socks:
                sock.close()
        stats = server.stats()
        assert stats.addresses[a].max_concurrent == 3 and stats.addresses[b].max_concurrent == 1
        assert stats.addresses[a].requests == 1 and stats.log[-1].header("x-probe") == "yes"
        _, _, raw = fetch(server.url(1, "/__stats"))
        assert json.loads(raw)["addresses"][a]["max_concurrent"] == 3


def test_addresses_share_one_port_and_only_loopback() -> None:
    assert loopback_hosts(3) == ("127.0.1.1", "127.0.1.2", "127.0.1.3")
    assert loopback_hosts(256)[-2:] == ("127.0.2.1", "127.0.2.2")  # .0 and .255 skipped
    with ServerThread(hosts=["127.0.0.1"]) as server:
        assert server.url(0, "x") == f"http://127.0.0.1:{server.port}/x"
        assert fetch(server.url(0, "/gen/one?size=3"))[2] == expected_bytes("one", 3)
    with pytest.raises(ValueError, match="loopback"):
        SlowServer(hosts=["10.1.2.3"])


def test_files_under_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_bytes(b"hello world")
    (tmp_path / "secret").write_bytes(b"secret")
    with ServerThread(addresses=1, root=root) as server:
        status, headers, body = fetch(server.url(0, "/files/sub/a.txt"), {"Range": "bytes=6-"})
        assert (status, body, headers["Content-Range"]) == (206, b"world", "bytes 6-10/11")
        for path in ("/files/../secret", "/files/%2e%2e/secret", "/files/sub", "/files/none"):
            assert fetch(server.url(0, path))[0] == 404, path


def test_tls() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.1.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with ServerThread(addresses=1, tls=server_ctx) as server:
        url = server.url(0, "/gen/tls.bin?size=200000")
        assert url.startswith("https://")
        with urllib.request.urlopen(url, context=client_ctx, timeout=5) as response:
            assert response.read() == expected_bytes("tls.bin", 200000)


def test_async_api() -> None:
    async def main() -> bytes:
        async with SlowServer(addresses=1) as server:
            reader, writer = await asyncio.open_connection(server.hosts[0], server.port)
            writer.write(b"GET /gen/as?size=10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            raw = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert server.stats().requests == 1
            return raw

    assert split_head(asyncio.run(main()))[1] == expected_bytes("as", 10)


def test_cli_runs_for_duration(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from midair.cli._units import parse_size as parse_rate
    from midair.cli.serve import add_parser, run

    assert [parse_rate(t) for t in ("512", "256K", "1M", "1.5m", "2KiB")] == [
        512,
        262144,
        1 << 20,
        3 << 19,
        2048,
    ]
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--addresses", "2", "--port", "0", "--duration", "0.2"])
    assert run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("http://127.0.1.2:")
