"""Bodies that skip Python on Linux: socket -> pipe with splice(2), then pipe -> part file.

Once a plain-HTTP response's head is parsed, an engine asks the session how much
of a Content-Length body is left (``Session.pipeable``).  From ``MIN_BUDGET`` on,
instead of ``recv`` it splices what the socket holds into a pipe (up to the
pipe's size and the budget) and reports the count as ``Piped``; the store moves
the pipe's bytes into the part file at the download's offset, with splice again,
in the same session call.  The body's bytes never enter a Python buffer: one
kernel copy into the page cache instead of two copies through user space.

Not spliced: TLS (the bytes must be decrypted by Python's ssl), chunked and
close-delimited bodies (the framing needs the bytes), the last bytes before a
body limit (they come as bytes, and fail as bytes do).  Where the kernel
refuses splice for the socket (EINVAL and the like), the engine turns it off
and reads as before.  A ``--checksum`` job is spliced too: the store hashes
the part file when it publishes it, never the bytes in flight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket

from ..core.http import Piped

__all__ = ["MIN_BUDGET", "Splicer", "make_splicer", "pipe_max_size"]

MIN_BUDGET = 64 * 1024  # below this, a recv into the loop's buffer costs no more
# A pipe as big as the kernel lets anyone have: fewer, bigger moves.  Up to a cap, as
# what sits in a pipe is pinned kernel memory, one pipe per connection in the blocking
# driver.  (Asking more than pipe-max-size is EPERM even for root in a container.)
PIPE_CAP = 4 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# What a kernel or socket without splice support answers.
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def pipe_max_size() -> int:
    """/proc/sys/fs/pipe-max-size: 1 MiB unless an administrator raised it."""
    try:
        with open("/proc/sys/fs/pipe-max-size", "rb") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 1 << 20


PIPE_SIZE = min(pipe_max_size(), PIPE_CAP)


def make_splicer() -> Splicer | None:
    """A pipe to splice through, or None where there is no splice, or no descriptor left
    for a pipe (EMFILE): a pipe is an extra, recv is not."""
    if not (hasattr(os, "splice") and hasattr(os, "pipe2")):
        return None
    try:
        return Splicer()
    except OSError:
        return None


class Splicer:
    """One pipe, filled from one socket at a time and emptied by the store before the next:
    ``epoll`` has one; the blocking driver one per connection, since each owner fills
    its own outside the session's lock.

    Both ends are non-blocking: the store finding the pipe empty gets EAGAIN, never
    a hang.  ``working`` goes False for good once the kernel refuses a splice.
    """

    def __init__(self) -> None:
        self.read, self.write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a lower pipe-max-size: keep the default
            fcntl.fcntl(self.write, _F_SETPIPE_SZ, PIPE_SIZE)
        self.size = fcntl.fcntl(self.write, _F_GETPIPE_SZ)
        self.working = True

    def worth(self, budget: int) -> bool:
        return self.working and budget >= MIN_BUDGET

    def fill(self, sock: socket.socket, budget: int) -> Piped | None:
        """Move what ``sock`` holds, up to ``budget`` bytes, into the pipe.

        Returns them as a ``Piped`` chunk (a count of 0 is EOF), or None when the kernel
        refuses to splice this socket: read it with recv.  Blocks as ``sock``'s descriptor
        does: a non-blocking socket with nothing to read raises BlockingIOError.
        """
        try:
            count = os.splice(sock.fileno(), self.write, min(budget, self.size), flags=_FLAGS)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self.working = False
            return None
        return Piped(count, self.read)

    def clear(self) -> None:
        """Empty the pipe: bytes the store did not take (a download whose file failed
        in that call) must not be taken for the next body."""
        with contextlib.suppress(OSError):  # EAGAIN: empty, as it should be
            while os.read(self.read, self.size):
                pass

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)
