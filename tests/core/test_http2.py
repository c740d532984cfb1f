"""HTTP/2 in the core, without sockets: h2's own server side in memory is the peer.

``H2Server`` answers GETs from a dict of bodies (or misbehaves as a test asks); the
batch is driven by hand through ``drive``, bytes passed whole or one at a time.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from midair.cookies import JarCookies
from midair.core.actions import (
    Close,
    Connect,
    Failed,
    Finished,
    OnDisk,
    Open,
    Prepare,
    Publish,
    Retrying,
    Save,
    Send,
    Write,
)
from midair.core.batch import Batch
from midair.core.http import FramingError, Head
from midair.core.http2 import WINDOW, Goaway, Http2Connection, head_of
from midair.core.jobs import Job, Options

H = "https://h.example"


def body(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class H2Server:
    """One server connection: ``feed`` the client's bytes, get the answer's bytes.

    ``answer(server, stream, path, headers)`` replaces the plain 200 for a test's faults.
    """

    def __init__(
        self,
        files: dict[str, bytes],
        *,
        max_streams: int = 100,
        answer: Callable[[H2Server, int, str, dict[bytes, bytes]], None] | None = None,
    ) -> None:
        self.files = files
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self.h2.initiate_connection()
        self.answer = answer or H2Server.ok
        self.requests: list[tuple[int, str, dict[bytes, bytes]]] = []
        self.most_open = 0
        self.gone = False

    def feed(self, data: bytes) -> bytes:
        if self.gone:  # after its GOAWAY: what the client sent meanwhile is dropped
            return b""
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                fields = dict(event.headers)
                path = fields[b":path"].decode()
                self.requests.append((event.stream_id, path, fields))
                self.most_open = max(self.most_open, self.h2.open_inbound_streams)
                self.answer(self, event.stream_id, path, fields)
        return self.h2.data_to_send()

    def ok(self, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        data = self.files[path]
        start = 0
        status = b"200"
        if b"range" in fields:
            start = int(fields[b"range"].split(b"=")[1].rstrip(b"-"))
            status = b"206"
        part = data[start:]
        head = [(b":status", status), (b"content-length", str(len(part)).encode())]
        if start:
            head.append((b"content-range", f"bytes {start}-{len(data) - 1}/{len(data)}".encode()))
        head.append((b"etag", b'"e"'))
        self.h2.send_headers(stream, head)
        self.send_body(stream, part)

    def send_body(self, stream: int, data: bytes, end: bool = True) -> None:
        """In frames of the size allowed; h2 refuses (FlowControlError) past the window."""
        size = self.h2.max_outbound_frame_size
        for at in range(0, len(data), size):
            self.h2.send_data(stream, data[at : at + size])
        if end:
            self.h2.end_stream(stream)


class Drive:
    """Carry out a batch's actions against ``H2Server``s, one per Connect, in memory."""

    def __init__(self, batch: Batch, server: Callable[[], H2Server], *, split: bool = False):
        self.batch, self.make_server, self.split = batch, server, split
        self.servers: dict[int, H2Server] = {}
        self.files: dict[str, bytearray] = {}
        self.paths: dict[int, str] = {}  # each download's part file, from its Open
        self.finished: dict[int, int] = {}
        self.failed: dict[int, Failed] = {}
        self.retries: list[Retrying] = []
        self.connects = 0
        self.now = 0.0

    def run(self, protocol: str | None = "h2", limit: int = 10_000) -> Drive:
        todo = list(self.batch.start(self.now))
        self.protocol = protocol
        for _ in range(limit):
            if not todo:
                deadline = self.batch.next_deadline()
                if self.batch.done or deadline is None:
                    return self
                self.now = max(self.now, deadline)
                todo = self.batch.timer(self.now)
                continue
            todo += self.act(todo.pop(0))  # breadth first: every Prepare answered early
        raise AssertionError("the batch did not end")

    def act(self, action: object) -> list[object]:
        b, now = self.batch, self.now
        match action:
            case Prepare(download=ident):
                return list(b.prepared(ident, OnDisk("fresh"), now))
            case Connect(conn=conn):
                self.connects += 1
                self.servers[conn] = self.make_server()
                return list(b.connected(conn, now, self.protocol))
            case Send(conn=conn, data=data):
                server = self.servers.get(conn)
                return [] if server is None else self.deliver(conn, server.feed(data))
            case Close(conn=conn):
                self.servers.pop(conn, None)
            case Open(download=ident, path=path, offset=offset):
                self.paths[ident] = path
                self.files.setdefault(path, bytearray())
                del self.files[path][offset:]
            case Write(download=ident, offset=offset, data=data):
                self.write(ident, offset, bytes(data))
            case Save(download=ident, path=path, offset=offset, data=data):
                self.files.setdefault(path, bytearray())
                del self.files[path][offset:]
                self.files[path] += bytes(data)
                return list(b.published(ident, now))
            case Publish(download=ident):
                return list(b.published(ident, now))
            case Finished(download=ident, size=size):
                self.finished[ident] = size
            case Failed(download=ident):
                self.failed[ident] = action
            case Retrying():
                self.retries.append(action)
        return []

    def write(self, ident: int, offset: int, data: bytes) -> None:
        self.files[self.paths[ident]][offset : offset + len(data)] = data

    def deliver(self, conn: int, data: bytes) -> list[object]:
        if not data:
            return []
        pieces = [data[i : i + 1] for i in range(len(data))] if self.split else [data]
        out: list[object] = []
        for piece in pieces:
            if conn in self.servers:
                out += self.batch.received(conn, piece, self.now)
        return out


def batch_of(paths: list[str], **kwargs: object) -> Batch:
    jobs = [Job.from_url(f"{H}/{path}") for path in paths]
    return Batch(jobs, Options(directory="/d", **kwargs), seed=1)  # type: ignore[arg-type]


# --- Http2Connection alone ---------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_head(self, head: Head) -> None:
        self.events.append(("head", head.status))

    def on_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_end(self) -> None:
        self.events.append(("end", None))

    def on_broken(self, reason: str, refused: bool) -> None:
        self.events.append(("broken", refused))


def joined(events: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Body chunks merged: how a body is split into frames is the server's business."""
    out: list[tuple[str, object]] = []
    for kind, value in events:
        if kind == "body" and out and out[-1][0] == "body":
            out[-1] = ("body", out[-1][1] + value)  # type: ignore[operator]
        else:
            out.append((kind, value))
    return out


@pytest.mark.parametrize("split", [False, True])
def test_two_streams_on_one_connection_each_get_head_body_end(split: bool) -> None:
    client = Http2Connection()
    server = H2Server({"/a": b"alpha", "/b": body(300_000)})
    wire = server.feed(client.start())
    a, b = Recorder(), Recorder()
    sa, data_a = client.request(a, "https", "/a", [("Host", "h.example"), ("Accept", "*/*")])
    sb, data_b = client.request(b, "https", "/b", [("Host", "h.example")])
    assert (sa, sb) == (1, 3) and client.streams == 2
    wire += server.feed(data_a + data_b)
    chunks = [wire[i : i + 1] for i in range(len(wire))] if split else [wire]
    for chunk in chunks:
        server.feed(client.receive(chunk))
    assert joined(a.events) == [("head", 200), ("body", b"alpha"), ("end", None)]
    assert joined(b.events) == [("head", 200), ("body", body(300_000)), ("end", None)]
    assert server.requests[0][2][b":authority"] == b"h.example"
    assert b"host" not in server.requests[0][2] and client.streams == 0


def test_windows_are_raised_at_start_so_a_big_body_needs_no_round_trip() -> None:
    """300 kB exceeds h2's default 64 KiB windows: the server could send it all at once
    only because the client raised the connection and stream windows."""
    client = Http2Connection()
    server = H2Server({"/b": body(300_000)})
    server.feed(client.start())
    assert server.h2.remote_settings.initial_window_size == WINDOW
    assert server.h2.outbound_flow_control_window == WINDOW
    _, data = client.request(Recorder(), "https", "/b", [("Host", "h")])
    server.feed(data)  # would raise FlowControlError past the window


def test_consumed_data_is_given_back_by_window_update() -> None:
    client = Http2Connection()
    big = body(WINDOW // 2 + 100_000)
    server = H2Server({"/b": big})
    wire = server.feed(client.start())
    _, data = client.request(Recorder(), "https", "/b", [("Host", "h")])
    wire += server.feed(data)
    before = server.h2.outbound_flow_control_window
    server.feed(client.receive(wire))
    assert server.h2.outbound_flow_control_window > before  # a WINDOW_UPDATE came back


def test_a_reset_stream_breaks_that_stream_only() -> None:
    def reset_b(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if path == "/b":
            server.h2.reset_stream(stream, error_code=2)
        else:
            server.ok(stream, path, fields)

    client = Http2Connection()
    server = H2Server({"/a": b"alpha"}, answer=reset_b)
    wire = server.feed(client.start())
    a, b = Recorder(), Recorder()
    _, one = client.request(a, "https", "/a", [("Host", "h")])
    _, two = client.request(b, "https", "/b", [("Host", "h")])
    client.receive(wire + server.feed(one + two))
    assert joined(a.events)[-1] == ("end", None)
    assert b.events == [("broken", False)]


def test_goaway_is_raised_with_the_last_stream_processed() -> None:
    client = Http2Connection()
    server = H2Server({"/a": b"alpha"})
    wire = server.feed(client.start())
    _, one = client.request(Recorder(), "https", "/a", [("Host", "h")])
    wire += server.feed(one)
    server.h2.close_connection(last_stream_id=1)
    with pytest.raises(Goaway) as caught:
        client.receive(wire + server.h2.data_to_send())
    assert caught.value.last_stream == 1


def test_bytes_that_are_not_http2_are_a_framing_error() -> None:
    client = Http2Connection()
    client.start()
    with pytest.raises(FramingError, match="does not speak HTTP/2"):
        client.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    one_byte_at_a_time = Http2Connection()
    one_byte_at_a_time.start()
    for byte in b"HTT":
        one_byte_at_a_time.receive(bytes([byte]))
    with pytest.raises(FramingError, match="does not speak HTTP/2"):
        one_byte_at_a_time.receive(b"P")
    framed = Http2Connection()
    framed.start()
    with pytest.raises(FramingError, match="HTTP/2 protocol error"):
        framed.receive(b"\0\0\6\4\0\0\0\0\1" + b"\0" * 6)  # SETTINGS on a stream
    with pytest.raises(FramingError, match="closed"):
        Http2Connection().receive(b"")


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ([(b":status", b"200"), (b"content-length", b"5")], True),
        ([(b":status", b"200")], True),
        ([(b":status", b"20")], False),
        ([(b":status", b"200"), (b"content-length", b"x5")], False),
        ([(b":status", b"200"), (b"content-length", b"5"), (b"content-length", b"5")], False),
    ],
)
def test_head_of_checks_what_decides_size(fields: list[tuple[bytes, bytes]], ok: bool) -> None:
    if ok:
        head = head_of(fields)
        assert head.status == 200 and head.content_length == (5 if len(fields) > 1 else None)
    else:
        with pytest.raises(FramingError):
            head_of(fields)


# --- the batch over HTTP/2 ---------------------------------------------------------------
@pytest.mark.parametrize("split", [False, True])
def test_many_downloads_are_streams_on_one_connection(split: bool) -> None:
    files = {f"/f{i}": body(1000 + i * 500, i) for i in range(12)}
    servers: list[H2Server] = []

    def server() -> H2Server:
        servers.append(H2Server(files, max_streams=5))
        return servers[-1]

    drive = Drive(batch_of([f"f{i}" for i in range(12)], per_host=1), server, split=split).run()
    assert len(drive.finished) == 12 and not drive.failed and drive.connects == 1
    assert all(drive.files[f"/d/f{i}"] == files[f"/f{i}"] for i in range(12))
    assert len(servers[0].requests) == 12


def held_server(files: dict[str, bytes], hold: int, max_streams: int = 100) -> H2Server:
    """A server that answers only once ``hold`` requests are open (or all of ``files``
    were asked): how many the client keeps open shows in ``most_open``."""
    held: list[tuple[int, str, dict[bytes, bytes]]] = []

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        held.append((stream, path, fields))
        if len(held) >= hold or len(server.requests) == len(files):
            for request in held:
                server.ok(*request)
            held.clear()

    return H2Server(files, max_streams=max_streams, answer=answer)


def test_streams_go_up_to_the_servers_max_concurrent_streams() -> None:
    files = {f"/f{i}": body(100, i) for i in range(12)}
    servers: list[H2Server] = []

    def server() -> H2Server:
        servers.append(held_server(files, hold=5, max_streams=5))
        return servers[-1]

    drive = Drive(batch_of([f"f{i}" for i in range(12)]), server).run()
    assert len(drive.finished) == 12 and servers[0].most_open == 5


def test_concurrency_caps_streams_too() -> None:
    files = {f"/f{i}": body(100, i) for i in range(9)}
    servers: list[H2Server] = []

    def server() -> H2Server:
        servers.append(held_server(files, hold=3))
        return servers[-1]

    drive = Drive(batch_of([f"f{i}" for i in range(9)], concurrency=3), server).run()
    assert len(drive.finished) == 9 and servers[0].most_open == 3


def test_connections_opened_before_http2_was_known_give_their_downloads_to_it() -> None:
    files = {f"/f{i}": body(100, i) for i in range(8)}
    drive = Drive(batch_of([f"f{i}" for i in range(8)], per_host=4), lambda: H2Server(files))
    drive.run()
    assert len(drive.finished) == 8 and drive.connects == 4  # per_host: 4 before h2 was known
    assert drive.servers == {}  # all closed: the three late ones at once, unused


def test_prior_knowledge_opens_one_connection_per_host_for_its_streams() -> None:
    files = {f"/f{i}": body(100, i) for i in range(8)}
    jobs = [Job.from_url(f"http://h.example/f{i}") for i in range(8)]
    options = Options(directory="/d", http2_prior_knowledge=True, per_host=4)
    drive = Drive(Batch(jobs, options, seed=1), lambda: H2Server(files)).run(protocol=None)
    assert len(drive.finished) == 8 and drive.connects == 1  # known h2: no extras to close


def test_a_freed_stream_goes_to_the_hosts_next_download_not_an_idle_link() -> None:
    """One transfer at a time (``sequential``) over two hosts: each link carries its
    host's downloads one after another and then closes; none waits idle, with work,
    while the other host's connection is opened (a blocking engine would wait on it)."""
    files = {f"/f{i}": body(100, i) for i in range(6)}
    jobs = [Job.from_url(f"http://h{i % 2}.example/f{i}") for i in range(6)]
    options = Options(directory="/d", http2_prior_knowledge=True, concurrency=1)
    batch = Batch(jobs, options, seed=1)
    open_links: list[int] = []
    drive = Drive(batch, lambda: H2Server(files))
    act = drive.act

    def watched(action: object) -> list[object]:
        if isinstance(action, Connect):
            assert not drive.servers, "a second connection while a link is still open"
            open_links.append(action.conn)
        return act(action)

    drive.act = watched  # type: ignore[method-assign]
    drive.run(protocol=None)
    assert len(drive.finished) == 6 and len(open_links) == 2  # one link per host, in turn


def test_http_1_1_by_alpn_takes_the_http_1_1_path() -> None:
    batch = batch_of(["f"])
    batch.start(0.0)
    [connect] = batch.prepared(0, OnDisk("fresh"), 0.0)
    [send] = batch.connected(connect.conn, 0.1, "http/1.1")
    assert isinstance(send, Send) and send.data.startswith(b"GET /f HTTP/1.1\r\n")


def test_prior_knowledge_speaks_http2_on_plain_http() -> None:
    jobs = [Job.from_url("http://h.example/f")]
    batch = Batch(jobs, Options(directory="/d", http2_prior_knowledge=True), seed=1)
    batch.start(0.0)
    [connect] = batch.prepared(0, OnDisk("fresh"), 0.0)
    [preface, request] = batch.connected(connect.conn, 0.1, None)
    assert preface.data.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # type: ignore[attr-defined]
    assert isinstance(request, Send) and request.conn == connect.conn
    assert batch.pipeable(connect.conn) == 0  # splice(2) is for HTTP/1.1 bodies only


def test_a_reset_stream_retries_that_download_only() -> None:
    files = {"/a": body(5000, 1), "/b": body(6000, 2)}
    resets = []

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if path == "/b" and not resets:
            resets.append(stream)
            server.h2.reset_stream(stream, error_code=2)
            return
        server.ok(stream, path, fields)

    drive = Drive(batch_of(["a", "b"], retry_base=0), lambda: H2Server(files, answer=answer))
    drive.run()
    assert drive.finished.keys() == {0, 1} and drive.files["/d/b"] == files["/b"]
    assert [r.download for r in drive.retries] == [1]
    assert "RST_STREAM" in drive.retries[0].reason


def test_goaway_retries_unprocessed_streams_uncounted_on_a_new_connection() -> None:
    files = {f"/f{i}": body(2000, i) for i in range(4)}
    servers: list[H2Server] = []

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if len(servers) == 1 and stream == 3:
            server.h2.close_connection(last_stream_id=1)  # stream 1 was answered already
            server.gone = True
            return
        if len(servers) > 1 or stream == 1:
            server.ok(stream, path, fields)

    def server() -> H2Server:
        servers.append(H2Server(files, answer=answer))
        return servers[-1]

    drive = Drive(batch_of([f"f{i}" for i in range(4)], per_host=1), server).run()
    assert len(drive.finished) == 4 and not drive.failed and len(servers) == 2
    assert drive.retries == []  # none was processed, so none counts as an attempt
    assert all(drive.files[f"/d/f{i}"] == files[f"/f{i}"] for i in range(4))


def test_a_body_cut_by_reset_resumes_with_range_on_the_next_stream() -> None:
    data = body(50_000, 7)
    cut = []

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if cut:
            server.ok(stream, path, fields)
            return
        cut.append(stream)
        server.h2.send_headers(
            stream,
            [(b":status", b"200"), (b"content-length", b"50000"), (b"etag", b'"e"')],
        )
        server.send_body(stream, data[:20_000], end=False)
        server.h2.reset_stream(stream, error_code=2)

    servers: list[H2Server] = []

    def server() -> H2Server:
        servers.append(H2Server({"/f": data}, answer=answer))
        return servers[-1]

    drive = Drive(batch_of(["f"], retry_base=0), server).run()
    assert drive.finished == {0: 50_000} and drive.files["/d/f"] == data
    last = servers[-1].requests[-1][2]
    assert last[b"range"] == b"bytes=20000-" and last[b"if-range"] == b'"e"'


@pytest.mark.parametrize(("sent", "reason"), [(20, "more body than the declared 10"), (5, "")])
def test_a_body_not_its_content_length_fails_that_download_only(sent: int, reason: str) -> None:
    """The core's length rules, not h2's (which would end every stream on the connection)."""

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if path != "/bad":
            server.ok(stream, path, fields)
            return
        server.h2.send_headers(stream, [(b":status", b"200"), (b"content-length", b"10")])
        # h2 checks what it sends too: bypass it to play a broken server
        server.h2._get_stream_by_id(stream)._expected_content_length = None
        server.send_body(stream, b"x" * sent)

    files = {"/good": body(3000)}
    batch = batch_of(["bad", "good"], retries=1, retry_base=0)
    drive = Drive(batch, lambda: H2Server(files, answer=answer)).run()
    assert list(drive.failed) == [0] and drive.finished == {1: 3000}
    assert reason in str(drive.failed[0].error) and "gave up" in str(drive.failed[0].error)


def test_a_malformed_head_fails_that_stream_only() -> None:
    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if path == "/bad":
            head = [(b":status", b"200"), (b"content-length", b"4"), (b"content-length", b"5")]
            server.h2._get_stream_by_id(stream).config.validate_outbound_headers = False
            server.h2.send_headers(stream, head)
            return
        server.ok(stream, path, fields)

    files = {"/good": body(3000)}
    batch = batch_of(["bad", "good"], retries=0)
    drive = Drive(batch, lambda: H2Server(files, answer=answer)).run()
    assert list(drive.failed) == [0] and drive.finished == {1: 3000}
    assert "Content-Length" in str(drive.failed[0].error)


def test_max_filesize_holds_over_http2() -> None:
    files = {"/f": body(5000)}
    drive = Drive(batch_of(["f"], max_filesize=1000), lambda: H2Server(files)).run()
    assert list(drive.failed) == [0] and "exceeds --max-filesize" in str(drive.failed[0].error)


def test_max_filesize_stops_a_body_of_no_declared_length_midway() -> None:
    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        server.h2.send_headers(stream, [(b":status", b"200")])
        server.send_body(stream, body(5000))

    options = {"max_filesize": 1000, "retries": 0}
    drive = Drive(batch_of(["f"], **options), lambda: H2Server({}, answer=answer)).run()
    assert list(drive.failed) == [0] and "--max-filesize" in str(drive.failed[0].error)


def test_a_redirect_over_http2_is_followed_on_a_stream() -> None:
    files = {"/to": body(700)}

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if path == "/from":
            server.h2.send_headers(
                stream, [(b":status", b"302"), (b"location", b"/to")], end_stream=True
            )
        else:
            server.ok(stream, path, fields)

    drive = Drive(batch_of(["from"]), lambda: H2Server(files, answer=answer)).run()
    assert drive.finished == {0: 700}


def test_a_server_that_always_sends_goaway_at_once_ends_in_failures_not_a_loop() -> None:
    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        server.h2.close_connection(last_stream_id=0)
        server.gone = True

    drive = Drive(
        batch_of(["a", "b"], retries=2, retry_base=0), lambda: H2Server({}, answer=answer)
    )
    drive.run()
    assert sorted(drive.failed) == [0, 1] and "GOAWAY" in str(drive.failed[0].error)


def test_credentials_and_cookies_go_as_http2_fields_too() -> None:
    """Userinfo becomes Authorization, and a Set-Cookie is sent back, on streams as on
    HTTP/1.1: the request fields are the download's own, whatever the protocol."""
    files = {"/b": body(100)}

    def answer(server: H2Server, stream: int, path: str, fields: dict[bytes, bytes]) -> None:
        if path == "/a":
            head = [(b":status", b"302"), (b"location", b"/b"), (b"set-cookie", b"k=v; Path=/")]
            server.h2.send_headers(stream, head, end_stream=True)
        else:
            server.ok(stream, path, fields)

    servers: list[H2Server] = []

    def server() -> H2Server:
        servers.append(H2Server(files, answer=answer))
        return servers[-1]

    jobs = [Job.from_url("https://user:pa%40ss@h.example/a")]
    batch = Batch(jobs, Options(directory="/d"), seed=1, cookies=JarCookies())
    drive = Drive(batch, server).run()
    assert drive.finished == {0: 100}
    requests = [fields for s in servers for _, _, fields in s.requests]
    assert requests[0][b"authorization"] == b"Basic dXNlcjpwYUBzcw=="
    assert requests[-1][b"cookie"] == b"k=v"


# --- what is cut from h2's and hpack's cost per stream -----------------------------------
def test_ended_and_reset_streams_are_forgotten_and_late_frames_still_handled() -> None:
    """h2 keeps every stream until its O(streams) walk drops the closed ones; here an
    ended or reset stream leaves h2's table at once, remembered as closed, so a frame
    that comes for it later is answered as h2 would (not a connection error)."""
    client = Http2Connection()
    files = {f"/{i}": body(100, i) for i in range(250)}
    server = H2Server(files)
    wire = server.feed(client.start())
    for i in range(250):
        _, data = client.request(Recorder(), "https", f"/{i}", [("Host", "h")])
        server.feed(client.receive(wire + server.feed(data)))
        wire = b""
        assert len(client._h2.streams) == 0 and client.streams == 0
    assert len(client._h2._closed_streams) == 250
    sink = Recorder()
    stream, data = client.request(sink, "https", "/0", [("Host", "h")])
    answer = server.feed(data)  # sent before the server hears of the reset
    client.reset(stream)
    assert stream not in client._h2.streams
    client.receive(answer)  # late HEADERS and DATA on a stream reset and forgotten
    assert sink.events == []


def test_the_stream_limit_counts_the_open_sinks() -> None:
    """h2's own check (TooManyStreamsError) still holds without its walk."""
    import h2.exceptions

    client = Http2Connection()
    server = H2Server({"/a": b"a"}, max_streams=2)
    client.receive(server.feed(client.start()))
    for _ in range(2):
        client.request(Recorder(), "https", "/a", [("Host", "h")])
    assert client.room == 0
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        client.request(Recorder(), "https", "/a", [("Host", "h")])


def test_memoised_huffman_decodes_as_hpack_does() -> None:
    import hpack
    import hpack.hpack
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    from hpack.huffman_table import decode_huffman as original

    encoder = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    assert hpack.hpack.decode_huffman is not original  # midair.core.http2 installed it
    for text in [b"", b"Fri, 04 Dec 2026 21:00:00 GMT", b'"abc-2000"', bytes(range(256))]:
        coded = encoder.encode(text)
        assert hpack.hpack.decode_huffman(memoryview(coded)) == original(coded) == text
        assert hpack.hpack.decode_huffman(bytearray(coded)) == text  # cached: the same
    with pytest.raises(hpack.HPACKDecodingError):  # an error is not remembered as a value
        hpack.hpack.decode_huffman(b"\xff\xff\xff\xff")
    with pytest.raises(hpack.HPACKDecodingError):
        hpack.hpack.decode_huffman(b"\xff\xff\xff\xff")


def test_the_path_is_never_indexed_so_repeated_fields_stay_in_the_table() -> None:
    client = Http2Connection()
    server = H2Server({f"/{i}": b"x" for i in range(50)})
    client.receive(server.feed(client.start()))
    fields = [("Host", "h.example"), ("User-Agent", "midair/0.1.0")]
    sizes = []
    for i in range(50):
        _, data = client.request(Recorder(), "https", f"/{i}", fields)
        sizes.append(len(data))
        server.feed(data)
    assert [path for _, path, _ in server.requests] == [f"/{i}" for i in range(50)]
    assert all(f[b"user-agent"] == b"midair/0.1.0" for _, _, f in server.requests)
    table = client._h2.encoder.header_table.dynamic_entries
    assert not any(name == b":path" for name, _ in table)
    assert max(sizes[1:]) < sizes[0]  # Host and User-Agent went as indexes after the first
