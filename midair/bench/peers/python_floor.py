"""A reference loop, not a client: the least CPython spends per file on the bench's ``small``.

One thread, epoll, N keep-alive connections to one origin; per file: send a GET, read
until the head and a Content-Length body are in, write the body to a new file.  No
retries, no resume, no redirects, no checks beyond a 200 and the length: what a real
client may not skip is all it does, so what midair spends above it per file is
midair's own overhead, not Python's.  How the file is written is the variant:

- ``--direct``: straight to the final name, as curl and wget2 do;
- default: ``NAME.midair-part``, then a rename to NAME (atomic publication, as midair);
- ``--tag``: as the default, plus the ``user.midair`` extended attribute midair sets
  on a file it made (its re-run safety), set through the open descriptor.

The bench runs this file by its path, so it imports nothing of midair and its start-up
is CPython's alone; tests pin that its suffix and tag are midair's byte for byte.

    python python_floor.py URLS.txt OUT_DIR [--in-flight 100] [--direct | --tag]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii

HEAD_END = b"\r\n\r\n"
PART_SUFFIX = ".midair-part"  # midair.core.naming.PART_SUFFIX
XATTR = "user.midair"  # midair.store.XATTR
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW

Save = Callable[[str, str, memoryview], None]  # (url, final name, body)


class Connection:
    """One keep-alive connection: the URL it is fetching and the bytes received so far."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.url = ""
        self.received = bytearray()
        self.body_at = 0  # 0 until the head is in
        self.length = 0


def request(conn: Connection, url: str, host: bytes) -> None:
    conn.url, conn.received, conn.body_at = url, bytearray(), 0
    path = url.split("/", 3)[3].encode()
    conn.sock.send(b"GET /%s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % (path, host))


def parse_head(conn: Connection) -> bool:
    """True once the head is in: a 200 with a Content-Length, or ValueError naming the URL."""
    end = conn.received.find(HEAD_END)
    if end < 0:
        return False
    lines = bytes(conn.received[:end]).split(b"\r\n")
    if not lines[0].startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
        raise ValueError(f"{conn.url}: {lines[0].decode(errors='replace')}")
    conn.length = -1
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            conn.length = int(value)
    if conn.length < 0:
        raise ValueError(f"{conn.url}: no Content-Length")
    conn.body_at = end + len(HEAD_END)
    return True


def tag_value(url: str, size: int) -> bytes:
    """midair's tag (``midair.store._tag_value``): the JSON of the URL and size."""
    return b'{"url": %s, "size": %d}' % (encode_basestring_ascii(url).encode(), size)


def save_direct(url: str, name: str, body: memoryview) -> None:
    fd = os.open(name, _CREATE, 0o644)
    os.pwrite(fd, body, 0)
    os.close(fd)


def save_atomic(url: str, name: str, body: memoryview) -> None:
    fd = os.open(name + PART_SUFFIX, _CREATE, 0o644)
    os.pwrite(fd, body, 0)
    os.close(fd)
    os.rename(name + PART_SUFFIX, name)


def save_tagged(url: str, name: str, body: memoryview) -> None:
    fd = os.open(name + PART_SUFFIX, _CREATE, 0o644)
    os.pwrite(fd, body, 0)
    os.setxattr(fd, XATTR, tag_value(url, len(body)))
    os.close(fd)
    os.rename(name + PART_SUFFIX, name)


def run(urls: list[str], out: str, in_flight: int, save: Save) -> None:
    origin = urllib.parse.urlsplit(urls[0])
    host = origin.netloc.encode()
    pending: Iterator[str] = iter(urls)
    poller, conns, buffer = select.epoll(), {}, bytearray(65536)
    for _ in range(min(in_flight, len(urls))):
        sock = socket.create_connection((origin.hostname, origin.port or 80))
        sock.setblocking(False)
        conn = conns[sock.fileno()] = Connection(sock)
        poller.register(sock.fileno(), select.EPOLLIN)
        request(conn, next(pending), host)
    while conns:
        for fd, _ in poller.poll():
            conn = conns[fd]
            count = conn.sock.recv_into(buffer)
            if not count:
                raise ConnectionError(f"{conn.url}: the server closed the connection")
            conn.received += buffer[:count]
            if not (conn.body_at or parse_head(conn)):
                continue
            if len(conn.received) - conn.body_at < conn.length:
                continue
            body = memoryview(conn.received)[conn.body_at : conn.body_at + conn.length]
            save(conn.url, os.path.join(out, conn.url.rsplit("/", 1)[1]), body)
            body.release()
            url = next(pending, None)
            if url is None:
                poller.unregister(fd)
                conn.sock.close()
                del conns[fd]
            else:
                request(conn, url, host)


def one_origin(urls: list[str]) -> list[str]:
    """The URLs, if they share one plain-HTTP origin (all this loop can fetch)."""
    origins = {"/".join(url.split("/", 3)[:3]) for url in urls}
    if len(origins) != 1 or not urls[0].startswith("http://"):
        raise ValueError(f"one http:// origin only, got {len(origins)}: {sorted(origins)[:3]}")
    return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", help="one URL a line")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--in-flight", type=int, default=100)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--direct", action="store_const", dest="save", const=save_direct)
    how.add_argument("--tag", action="store_const", dest="save", const=save_tagged)
    args = parser.parse_args(argv)
    try:
        with open(args.urls) as lines:
            urls = one_origin([line.strip() for line in lines if line.strip()])
        os.makedirs(args.out, exist_ok=True)
        run(urls, args.out, max(1, args.in_flight), args.save or save_atomic)
    except (OSError, ValueError) as exc:
        print(f"python_floor: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
