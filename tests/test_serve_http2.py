"""``midair serve --http2`` against a bare h2 client: each fault as a stream sees it.

The client keeps h2's default 64 KiB windows and opens them only as it reads, so
a body larger than a window exercises the server's flow control (a sender that
waits for WINDOW_UPDATE, then resumes); midair's own 16 MiB windows never would.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from midair.serve import ServerThread, expected_bytes


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with ServerThread(addresses=1, http2=True) as server:
        yield server


@dataclass
class Stream:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False  # END_STREAM
    reset: bool = False  # RST_STREAM
    unprocessed: bool = False  # above a GOAWAY's last stream


def fetch(
    url: str, *paths: str, until: float = 5.0, tls: ssl.SSLContext | None = None
) -> list[Stream]:
    """GET ``paths`` as concurrent streams of one connection; what each received."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=until)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=parts.hostname)
        assert sock.selected_alpn_protocol() == "h2"
    client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    client.initiate_connection()
    streams: dict[int, Stream] = {}
    for path in paths:
        number = client.get_next_available_stream_id()
        request = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path.encode())]
        client.send_headers(number, [*request, (b":authority", parts.netloc.encode())], True)
        streams[number] = Stream()
    sock.sendall(client.data_to_send())
    with sock:
        while not all(s.ended or s.reset for s in streams.values()):
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break  # a stall: what arrived so far is the answer
            if not data:
                break
            for event in client.receive_data(data):
                _record(client, streams, event)
            sock.sendall(client.data_to_send())
    return [streams[n] for n in sorted(streams)]


def _record(client: h2.connection.H2Connection, streams: dict[int, Stream], event: object) -> None:
    if isinstance(event, h2.events.ResponseReceived):
        fields = dict(event.headers or [])
        streams[event.stream_id].status = int(fields.pop(b":status"))
        streams[event.stream_id].headers = fields
    elif isinstance(event, h2.events.DataReceived):
        streams[event.stream_id].body += event.data or b""
        client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    elif isinstance(event, h2.events.StreamEnded):
        streams[event.stream_id].ended = True
    elif isinstance(event, h2.events.StreamReset):
        streams[event.stream_id].reset = True
    elif isinstance(event, h2.events.ConnectionTerminated):
        for number, stream in streams.items():
            stream.unprocessed = number > (event.last_stream_id or 0)


def test_bodies_beyond_the_window_arrive_whole_side_by_side(srv: ServerThread) -> None:
    sizes = (0, 1, 70_000, 300_000)  # 300 KB: several 64 KiB windows, opened as it reads
    answers = fetch(srv.url(0), *(f"/gen/w{size}.bin?size={size}" for size in sizes))
    for size, answer in zip(sizes, answers, strict=True):
        assert (answer.status, answer.ended) == (200, True)
        assert answer.headers[b"content-length"] == str(size).encode()
        assert answer.body == expected_bytes(f"w{size}.bin", size)


def test_faults_end_their_stream_only(srv: ServerThread) -> None:
    reset, good, chunked = fetch(
        srv.url(0),
        "/gen/r.bin?size=100000&reset_after=2000",
        "/gen/g.bin?size=5000",
        "/gen/c.bin?size=4000&chunked=1",
    )
    assert reset.reset and not reset.ended and len(reset.body) == 2000
    assert good.ended and good.body == expected_bytes("g.bin", 5000)
    assert chunked.ended and chunked.body == expected_bytes("c.bin", 4000)
    assert b"transfer-encoding" not in chunked.headers and b"connection" not in chunked.headers


@pytest.mark.parametrize(
    ("query", "message"),
    [("truncate=1000", "Expected 100000 bytes, received 1000"), ("length=10", "Expected 10")],
)
def test_a_body_short_of_or_past_its_length_is_refused_by_h2_itself(
    srv: ServerThread, query: str, message: str
) -> None:
    """END_STREAM where the bytes stop: a client must refuse it (RFC 9113 8.1.1)."""
    with pytest.raises(h2.exceptions.InvalidBodyLengthError, match=message):
        fetch(srv.url(0), f"/gen/bad.bin?size=100000&{query}")


def test_goaway_after_names_the_streams_before_it_then_closes(srv: ServerThread) -> None:
    before, dropped, after = fetch(
        srv.url(0),
        "/gen/b.bin?size=3000",
        "/gen/g.bin?size=100000&goaway_after=1000",
        "/gen/a.bin?size=200000&trickle=0.01",
    )
    assert before.ended and before.body == expected_bytes("b.bin", 3000)
    assert not before.unprocessed
    assert dropped.unprocessed and not dropped.ended and len(dropped.body) == 1000
    assert after.unprocessed and not after.ended


def test_a_stalled_stream_holds_back_nothing_else(srv: ServerThread) -> None:
    stalled, other = fetch(
        srv.url(0), "/gen/s.bin?size=50000&stall_after=1000", "/gen/o.bin?size=9000", until=1.0
    )
    assert not stalled.ended and not stalled.reset and len(stalled.body) == 1000
    assert other.ended and other.body == expected_bytes("o.bin", 9000)


def test_range_and_statuses_as_over_http1(srv: ServerThread) -> None:
    ranged, missing, moved = fetch(
        srv.url(0), "/gen/x.bin?size=1000&x=1", "/gen/m.bin?status=404", "/gen/y.bin?redirect=1"
    )
    assert ranged.status == 200 and len(ranged.body) == 1000
    assert missing.status == 404
    assert moved.status == 302 and b"redirect=0" in moved.headers[b"location"]
    stats = srv.stats()
    assert [r.target for r in stats.log][-3:] == [
        "/gen/x.bin?size=1000&x=1",
        "/gen/m.bin?status=404",
        "/gen/y.bin?redirect=1",
    ]


# --- HTTPS: h2 or HTTP/1.1, as ALPN settles ----------------------------------------------
@pytest.fixture(scope="module")
def tls_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, str]]:
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.1.1").configure_cert(context)
    ca_path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with ServerThread(addresses=1, http2=True, tls=context) as server:
        yield server, str(ca_path)


def client_context(ca_path: str, offer: list[str] | None) -> ssl.SSLContext:
    """Trusting ``ca_path``, offering ``offer`` by ALPN (None: no ALPN at all)."""
    context = ssl.create_default_context(cafile=ca_path)
    if offer is not None:
        context.set_alpn_protocols(offer)
    return context


def test_tls_serves_h2_to_a_client_that_offers_it_faults_per_stream(tls_srv) -> None:
    srv, ca_path = tls_srv
    good, reset = fetch(
        srv.url(0),
        "/gen/t.bin?size=200000",
        "/gen/r.bin?size=100000&reset_after=3000",
        tls=client_context(ca_path, ["h2", "http/1.1"]),
    )
    assert good.ended and good.body == expected_bytes("t.bin", 200000)
    assert reset.reset and len(reset.body) == 3000
    assert [r.version for r in srv.stats().log[-2:]] == ["HTTP/2", "HTTP/2"]


@pytest.mark.parametrize("offer", [["http/1.1"], None], ids=["http1-offered", "no-alpn"])
def test_tls_serves_http1_to_a_client_that_offers_only_that_or_nothing(tls_srv, offer) -> None:
    srv, ca_path = tls_srv
    parts = urlsplit(srv.url(0))
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port, context=client_context(ca_path, offer), timeout=5
    )
    try:
        connection.request("GET", "/gen/one.bin?size=5000")
        response = connection.getresponse()
        assert (response.status, response.version) == (200, 11)
        assert response.read() == expected_bytes("one.bin", 5000)
    finally:
        connection.close()
    assert srv.stats().log[-1].version == "HTTP/1.1"


def test_cli_serves_h2_over_tls_and_refuses_a_bad_certificate(tmp_path) -> None:
    import subprocess
    import sys

    import trustme

    ca = trustme.CA()
    cert, key, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued = ca.issue_cert("127.0.1.1")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    serve = [sys.executable, "-m", "midair", "serve", "--addresses", "1", "--port", "0"]
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    with subprocess.Popen(
        [*serve, "--http2", *tls, "--duration", "30"], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            url = (server.stdout.readline() if server.stdout else "").strip()
            assert url.startswith("https://127.0.1.1:")
            h2_only = client_context(str(ca_path), ["h2"])
            (answer,) = fetch(url, "/gen/c.bin?size=90000", tls=h2_only)
            assert answer.ended and answer.body == expected_bytes("c.bin", 90000)
        finally:
            server.terminate()
        assert server.wait(10) == 0
    bad = subprocess.run([*serve, "--tls-cert", str(key), "--duration", "1"], capture_output=True)
    assert bad.returncode == 2 and b"--tls-cert" in bad.stderr
