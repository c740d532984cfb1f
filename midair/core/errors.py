"""What can go wrong, as one tree.

    MidairError
    ├── InputError            bad usage or input: the run does not start (exit 2)
    └── DownloadError         one job failed; carries the URL it belongs to
        ├── HTTPStatusError   the server answered a status we cannot use
        ├── NetworkError      refused, reset, unreachable, closed early
        │   ├── StallTimeout  no bytes for too long, or too few
        │   └── TLSError      certificate or handshake failure (not retried)
        ├── ProtocolError     the response broke HTTP framing or our limits
        ├── RedirectError     loop, too many hops, or a scheme we refuse
        ├── IntegrityError    size or checksum mismatch (the bytes are wrong)
        └── DestinationError  the local side: file exists, disk full, unwritable

Every `DownloadError` knows whether retrying could help (`retryable`), so the
retry policy is one line in the core instead of a table in every engine.  They
pickle (``__reduce__``) because the process and dask engines send them home.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any


class MidairError(Exception):
    """Base of every error midair raises on purpose."""


class InputError(MidairError):
    """The user's input is wrong: a bad option, URL or input-file line."""


class DownloadError(MidairError):
    """One download failed; ``str()`` is the one-line message users see."""

    retryable: bool = False

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.reason), {"status": self.status})


class HTTPStatusError(DownloadError):
    """A status that is not a body, a redirect we follow, or a retry signal."""

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in self.RETRYABLE


class NetworkError(DownloadError):
    retryable = True


class StallTimeout(NetworkError):
    pass


class TLSError(NetworkError):
    retryable = False


class ProtocolError(DownloadError):
    retryable = True


class RedirectError(DownloadError):
    pass


class IntegrityError(DownloadError):
    pass


class DestinationError(DownloadError):
    pass
