"""bulk's ceilings: what one plain connection gives, measured by the bench itself.

- *socket only*: the file read over one plain socket into a reused buffer (no
  parsing, no file): what loopback and the server give one connection.
- *into a new file*: the same bytes written into a new file in the downloads
  directory (closed, not fsynced, then removed) by each plain writer in
  ``WRITERS``, the best kept: what any downloader could reach there.

One writer alone is not a ceiling.  It used to be ``recv_into`` a 1 MiB buffer,
then ``write``: wget2 (100 KiB reads and writes) beat it by a few percent, as a
buffer that stays in the CPU's cache between the two copies costs less than
one that does not.  Neither is the best a writer can do on Linux either: a
splice through a pipe copies the bytes once instead of twice.  So every kind
is tried and the best one counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from midair.engines._splice import pipe_max_size

__all__ = ["WRITERS", "measure_ceiling"]

# A writer moves a response from the socket to ``out`` (None: nowhere) and counts it.
Writer = Callable[[socket.socket, int | None], int]
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _recv_write(size: int) -> Writer:
    """``recv_into`` one reused buffer of ``size`` bytes, then ``write`` what came."""

    def move(sock: socket.socket, out: int | None) -> int:
        buf = bytearray(size)
        view, total = memoryview(buf), 0
        while n := sock.recv_into(buf):
            total += n
            if out is not None:
                _write_all(out, view[:n])
        return total

    return move


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _splice(sock: socket.socket, out: int | None) -> int:
    """socket -> pipe -> file with splice(2): the bytes never enter user space."""
    assert out is not None
    read, write = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # the kernel's own limit for a pipe
            fcntl.fcntl(write, _F_SETPIPE_SZ, pipe_max_size())
        total = 0
        while n := _splice_in(sock, write):
            total += n
            while n:
                n -= os.splice(read, out, n)
        return total
    finally:
        os.close(read)
        os.close(write)


def _splice_in(sock: socket.socket, pipe: int) -> int:
    """As much as the socket holds and the pipe takes; waits as ``sock.recv`` would (a
    socket with a timeout does not block, so splice answers EAGAIN)."""
    while True:
        try:
            return os.splice(sock.fileno(), pipe, 1 << 30)
        except BlockingIOError:
            if not select.select([sock], [], [], sock.gettimeout())[0]:
                raise TimeoutError("ceiling: no bytes within the timeout") from None


# The plain writers a new file's ceiling is the best of, by the name reported.
WRITERS: dict[str, Writer] = {
    "recv 128 KiB + write": _recv_write(128 * 1024),  # wget2's kind: 100 KiB
    "recv 1 MiB + write": _recv_write(1 << 20),
}
if hasattr(os, "splice"):
    WRITERS["splice"] = _splice


def measure_ceiling(
    url: str, timeout: float, into: Path | None = None, writer: str = "recv 1 MiB + write"
) -> float:
    """GB/s of one plain socket reading ``url`` (no parsing), and with ``into`` writing
    it to that new file as well, by ``writer`` (see ``WRITERS``)."""
    parts = urlsplit(url)
    move = WRITERS[writer]
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(
            socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        )
        start = time.perf_counter()
        out = os.open(into, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) if into else None
        if out is not None:
            stack.callback(os.close, out)
        sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        total = move(sock, out)
    seconds = time.perf_counter() - start
    if into is not None:
        into.unlink()
    return total / seconds / 1e9
