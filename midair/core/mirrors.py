"""Several sources for one file (aria2's tab-separated URIs): which one a download
tries next, and why the others were dropped.

A download starts on the job's first URI.  When a source fails for good (its retries
spent, or an error a retry cannot mend), the next one takes over: the part on disk is
kept and resumed only when the new source proves it is the same file (``If-Range``
with the validator of the bytes already written; another ETag answers 200 and the
file restarts from zero), and a source that serves another size is dropped.  The file
fails only when every source failed, with each one's reason.
"""

from __future__ import annotations

from collections import deque

from .errors import DestinationError, DownloadError
from .urls import URL


class Sources:
    """The sources still to try for one download, and what went wrong with the others."""

    __slots__ = ("dropped", "left", "size")

    def __init__(self, mirrors: tuple[URL, ...], size: int | None = None) -> None:
        self.left = deque(mirrors)
        self.dropped: list[tuple[str, str]] = []  # (URL, reason), in the order tried
        # The file's size: the job's own (a Metalink's), else the one an earlier source
        # declared, if any.
        self.size = size

    def next_after(self, error: DownloadError, size: int | None) -> URL | None:
        """The source to try after ``error``, or None: the download fails.  A local
        failure (the destination) is no source's fault: no other source can mend it."""
        self.dropped.append((error.url, error.reason))
        if isinstance(error, DestinationError) or not self.left:
            return None
        if size is not None and self.size is None:
            self.size = size
        return self.left.popleft()

    def wrong_size(self, size: int | None) -> str | None:
        """Why a source declaring ``size`` is not serving the file an earlier one did."""
        if size is None or self.size is None or size == self.size:
            return None
        return f"serves {size} bytes where another mirror served {self.size}"

    def every_reason(self, error: DownloadError, url: str) -> DownloadError:
        """The one error of a file (first URI ``url``) whose every source failed, naming
        each one's reason."""
        if len(self.dropped) < 2:
            return error
        reasons = "; ".join(f"{url}: {reason}" for url, reason in self.dropped)
        return type(error)(url, f"every mirror failed: {reasons}", status=error.status)
