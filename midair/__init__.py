"""midair: download many files from many slow servers at once.

    >>> import midair
    >>> results = midair.download(["https://example.org/a.iso"], "downloads")
    >>> results.ok, results.paths

The layers, each importing only those before it: ``midair.core`` (sans-IO
rules), ``midair.store`` (files), ``midair.engines`` (I/O models), and the
surfaces — this API and the ``midair`` command.
"""

from __future__ import annotations

from .api import Downloader, download, download_async
from .core.errors import (
    DestinationError,
    DownloadError,
    HTTPStatusError,
    InputError,
    IntegrityError,
    MidairError,
    NetworkError,
    ProtocolError,
    RedirectError,
    StallTimeout,
    TLSError,
)
from .core.jobs import Checksum, Job, Options
from .core.results import Failure, Results, Success

__version__ = "0.1.0"

__all__ = [
    "Checksum",
    "DestinationError",
    "DownloadError",
    "Downloader",
    "Failure",
    "HTTPStatusError",
    "InputError",
    "IntegrityError",
    "Job",
    "MidairError",
    "NetworkError",
    "Options",
    "ProtocolError",
    "RedirectError",
    "Results",
    "StallTimeout",
    "Success",
    "TLSError",
    "__version__",
    "download",
    "download_async",
]
