"""midair: download many files from many slow servers at once.

    >>> import midair
    >>> results = midair.download(["https://example.org/a.iso"], "downloads")
    >>> results.ok, results.paths

The layers, each importing only those before it: ``midair.core`` (sans-IO
rules), ``midair.store`` (files), ``midair.engines`` (I/O models), and the
surfaces — this API and the ``midair`` command.

Names are imported on first use (PEP 562), so ``midair --version`` and the
start of ``midair get`` do not pay for modules they never touch.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# Not `from typing import TYPE_CHECKING`: typing takes ~2 ms to import, and
# `midair --version` needs nothing from it (type checkers read this name as True).
TYPE_CHECKING = False

_WHERE = {
    "Downloader": "api",
    "download": "api",
    "download_async": "api",
    "read_journal": "journal",
    "Checksum": "core.jobs",
    "Job": "core.jobs",
    "Options": "core.jobs",
    "Failure": "core.results",
    "Results": "core.results",
    "Success": "core.results",
    **dict.fromkeys(
        [
            "DestinationError",
            "DownloadError",
            "HTTPStatusError",
            "InputError",
            "IntegrityError",
            "MidairError",
            "NetworkError",
            "ProtocolError",
            "RedirectError",
            "StallTimeout",
            "TLSError",
        ],
        "core.errors",
    ),
}

if TYPE_CHECKING:
    from typing import Any

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
    from .journal import read_journal


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'midair' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"midair.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


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
    "read_journal",
]
