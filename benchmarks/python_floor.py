"""The least CPython can spend on the bench's ``small`` scenario: a floor for midair's cost.

One thread, epoll, N keep-alive connections to one server; per file: send a GET, read
until the head and a Content-Length body are in, open a part file, pwrite, close,
rename.  No retries, no resume, no checks beyond the length: nothing a real client may
skip.  What midair spends above this loop's CPU per file is midair's own overhead, not
Python's (on the issue-8 machine: this loop ~0.022 ms per file, curl 0.036, midair 0.155).

    python benchmarks/python_floor.py URLS.txt OUT_DIR [--in-flight 100]

Every URL in the list must be ``http://HOST:PORT/...`` on one origin answering 200 with a
Content-Length (nginx serving static files).  Prints CPU per file and files/s.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import time
import urllib.parse
from collections.abc import Iterator

HEAD_END = b"\r\n\r\n"


class Connection:
    """One keep-alive connection: the path it is fetching and the bytes received so far."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.path = ""
        self.received = bytearray()
        self.body_at = 0  # 0 until the head is in
        self.length = 0


def request(conn: Connection, path: str, host: bytes) -> None:
    conn.path, conn.received, conn.body_at = path, bytearray(), 0
    conn.sock.send(b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % (path.encode(), host))


def parse_head(conn: Connection) -> bool:
    """True once the head is in; reads Content-Length from it."""
    end = conn.received.find(HEAD_END)
    if end < 0:
        return False
    for line in bytes(conn.received[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            conn.length = int(value)
    conn.body_at = end + len(HEAD_END)
    return True


def save(conn: Connection, out: str) -> None:
    name = os.path.join(out, conn.path.rsplit("/", 1)[1])
    fd = os.open(name + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.pwrite(fd, memoryview(conn.received)[conn.body_at : conn.body_at + conn.length], 0)
    os.close(fd)
    os.rename(name + ".part", name)


def run(urls: list[str], out: str, in_flight: int) -> None:
    origin = urllib.parse.urlsplit(urls[0])
    paths: Iterator[str] = (urllib.parse.urlsplit(url).path for url in urls)
    poller, conns, buffer = select.epoll(), {}, bytearray(65536)
    for _ in range(min(in_flight, len(urls))):
        sock = socket.create_connection((origin.hostname, origin.port or 80))
        sock.setblocking(False)
        conn = conns[sock.fileno()] = Connection(sock)
        poller.register(sock.fileno(), select.EPOLLIN)
        request(conn, next(paths), origin.netloc.encode())
    while conns:
        for fd, _ in poller.poll():
            conn = conns[fd]
            count = conn.sock.recv_into(buffer)
            if not count:
                raise ConnectionError(f"the server closed the connection fetching {conn.path}")
            conn.received += buffer[:count]
            if not (conn.body_at or parse_head(conn)):
                continue
            if len(conn.received) - conn.body_at < conn.length:
                continue
            save(conn, out)
            path = next(paths, None)
            if path is None:
                poller.unregister(fd)
                conn.sock.close()
                del conns[fd]
            else:
                request(conn, path, origin.netloc.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls")
    parser.add_argument("out")
    parser.add_argument("--in-flight", type=int, default=100)
    args = parser.parse_args()
    with open(args.urls) as lines:
        urls = [line.strip() for line in lines if line.strip()]
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    run(urls, args.out, args.in_flight)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"{len(urls)} files in {wall:.2f} s ({len(urls) / wall:,.0f} files/s); "
        f"CPU {cpu:.2f} s = {cpu / len(urls) * 1000:.3f} ms per file (start-up included)"
    )


if __name__ == "__main__":
    main()
