"""A small HTTP/2 (h2c, prior knowledge) server on loopback for the faults nginx will not
play, built on h2's server side: a thread per connection, answers chosen by path.

    /ok/NAME?size=N        N bytes (``body(NAME, N)``), Range ``bytes=K-`` honoured
    /reset-once/NAME?...   the first request of NAME: RST_STREAM; then as /ok/
    /goaway-once/NAME?...  the first: GOAWAY naming the stream before it, then EOF
    /cut-once/NAME?...     the first: head and half the body, then EOF
    /wrong-length/NAME     Content-Length 10, and 20 bytes of DATA (h2 checks bypassed)
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events


def body(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class H2FaultServer:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)
        self.seen: dict[str, int] = {}  # requests per path, faults included
        self.connections = 0
        self.ranges: list[str] = []  # paths asked with Range
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @contextlib.contextmanager
    def running(self) -> Iterator[H2FaultServer]:
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        try:
            yield self
        finally:
            self._stop = True
            accept.join(5)
            self.sock.close()
            for thread in self._threads:
                thread.join(5)

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue  # a closed listening socket does not wake accept(): look at _stop
            except OSError:
                return
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        server = h2.connection.H2Connection(config)
        server.initiate_connection()
        conn.settimeout(10)
        with conn:
            conn.sendall(server.data_to_send())
            while not self._stop:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                requests = [
                    e for e in server.receive_data(data) if isinstance(e, h2.events.RequestReceived)
                ]
                if not all(self._answer(server, conn, event) for event in requests):
                    _linger(conn)  # the fault ends the connection
                    return
                conn.sendall(server.data_to_send())

    def _answer(
        self, server: h2.connection.H2Connection, conn: socket.socket, event: object
    ) -> bool:
        assert isinstance(event, h2.events.RequestReceived)
        fields = dict(event.headers)
        stream = event.stream_id
        target = urlsplit(fields[b":path"].decode())
        kind, _, name = target.path.lstrip("/").partition("/")
        size = int(parse_qs(target.query).get("size", ["1000"])[0])
        with self._lock:
            count = self.seen[target.path] = self.seen.get(target.path, 0) + 1
        first = count == 1
        data = body(name, size)
        if kind == "reset-once" and first:
            server.reset_stream(stream, error_code=2)
            return True
        if kind == "goaway-once" and first:
            server.close_connection(last_stream_id=max(0, stream - 2))
            conn.sendall(server.data_to_send())
            return False
        if kind == "wrong-length":
            server.send_headers(stream, [(b":status", b"200"), (b"content-length", b"10")])
            server._get_stream_by_id(stream)._expected_content_length = None  # play broken
            server.send_data(stream, b"x" * 20, end_stream=True)
            return True
        start = 0
        if b"range" in fields:
            start = int(fields[b"range"].split(b"=")[1].rstrip(b"-"))
            with self._lock:
                self.ranges.append(target.path)
        head = [
            (b":status", b"206" if start else b"200"),
            (b"content-length", str(size - start).encode()),
            (b"etag", b'"' + hashlib.md5(data).hexdigest().encode() + b'"'),
        ]
        if start:
            head.append((b"content-range", f"bytes {start}-{size - 1}/{size}".encode()))
        server.send_headers(stream, head)
        part = data[start:]
        if kind == "cut-once" and first:
            half = part[: len(part) // 2]
            for at in range(0, len(half), 16384):
                server.send_data(stream, half[at : at + 16384])
            conn.sendall(server.data_to_send())
            return False
        for at in range(0, len(part), 16384):
            server.send_data(stream, part[at : at + 16384])
        server.end_stream(stream)
        return True


def _linger(conn: socket.socket) -> None:
    """Close after the client read everything: closing with its bytes unread would send
    RST, and the client's kernel could drop what was sent before it."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(2)
        while conn.recv(65536):
            pass
