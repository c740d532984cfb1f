"""Metalink at the surface: reading ``-M FILE``, and following Metalink URLs.

A job whose URL names a Metalink document (``.meta4``, ``.metalink``) is, by
default, not saved: as aria2's ``--follow-metalink``, the document is fetched first,
by the same engine, into a scratch directory, and the files it lists take its place
in the batch.  A document that cannot be fetched, or is not a usable Metalink, is
that URL's failure; the rest of the batch runs.  Parsing is the core's
(core/metalink.py); this module only reads files and runs the fetch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator

from .core.errors import DownloadError, InputError
from .core.jobs import Job, Options
from .core.metalink import MetalinkError, parse_metalink, read_metalink
from .core.results import Failure, Results
from .run import Run

MAX_DOCUMENT = 16 << 20  # bytes: a Metalink lists files; one larger is not one

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    Source = str | os.PathLike[str] | bytes


def load(source: Source, locations: Collection[str] = ()) -> list[Job]:
    """The jobs of a Metalink given as a file name or as the document's bytes
    (``locations``: see ``read_metalink``)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return parse_metalink(bytes(source), "<metalink>", locations)
    try:
        name = os.fspath(source)
    except TypeError:
        raise InputError(f"metalink: expected a file name or bytes, got {source!r}") from None
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_DOCUMENT + 1)
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror}") from None
    if len(data) > MAX_DOCUMENT:
        raise InputError(f"{name}: larger than {MAX_DOCUMENT} bytes: not a Metalink")
    return parse_metalink(data, name, locations)


@contextlib.contextmanager
def fetching(documents: list[Job], options: Options) -> Iterator[Run]:
    """A run that fetches ``documents`` into a scratch directory, removed afterwards;
    read its outcome with ``expand`` inside the ``with``."""
    import tempfile  # with shutil and random: only a batch with a Metalink URL pays

    with tempfile.TemporaryDirectory(prefix="midair-metalink-") as scratch:
        yield Run(documents, _fetch_options(options, scratch))


def _fetch_options(options: Options, scratch: str) -> Options:
    """The batch's options for fetching the documents themselves: into ``scratch``, no
    journal, no cookie file written, none of the files' checksum, a size bound."""
    limit = min(options.max_filesize or MAX_DOCUMENT, MAX_DOCUMENT)
    return options.replace(
        directory=scratch,
        journal=None,
        save_cookies=None,
        checksum=None,
        max_filesize=limit,
        overwrite=True,
        fsync=False,
    )


def expand(
    jobs: list[Job], fetched: Results, locations: Collection[str] = ()
) -> tuple[list[Job], list[Failure]]:
    """``jobs`` with each fetched document replaced by the files it lists; the
    documents that could not be fetched or read, as failures."""
    listed: dict[str, list[Job]] = {}
    failures = list(fetched.failures)
    for success in fetched.successes:
        try:
            listed[success.url] = _read(success.path, locations)
        except MetalinkError as exc:
            reason = f"not a usable Metalink: {exc}"
            failures.append(Failure(success.url, DownloadError(success.url, reason)))
    followed = {success.url for success in fetched.successes}
    followed.update(failure.url for failure in failures)
    expanded: list[Job] = []
    for job in jobs:
        if job.url.text in followed:
            expanded.extend(listed.pop(job.url.text, ()))  # once, if it came twice
        else:
            expanded.append(job)
    return expanded, failures


def _read(path: str, locations: Collection[str]) -> list[Job]:
    with open(path, "rb") as f:
        return read_metalink(f.read(), locations)
