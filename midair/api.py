"""The library API: ``download``, ``download_async`` and ``Downloader``.

All three build the same ``Options`` and jobs the CLI builds and hand them to
an engine through ``Downloader.run``/``run_async``, the one path the CLI takes
too, so the library and the command line cannot drift apart.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager

from .core.actions import Action
from .core.errors import DownloadError, InputError
from .core.jobs import Checksum, Job, Options, check_header, option_flag, parse_header
from .core.results import Failure, Results, Success
from .core.urls import redact
from .engines import DEFAULT_ENGINE, engine_info, get_engine
from .run import REPORTS, Run, distinct, stop_on_signals

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

    from .engines import Engine
    from .journal import Journal

    Followed = tuple[list[Job], list[Failure]]  # follow_metalinks': the jobs, the failures
    Around = Callable[[Run], AbstractContextManager[Any]]  # e.g. the CLI's live display

_OPTION_NAMES = set(Options.__match_args__)


def make_options(dest: str | os.PathLike[str] = ".", **options: Any) -> Options:
    """Build ``Options`` from keyword arguments named like the CLI's long options.

    Text forms are accepted where the CLI takes text (``checksum="sha-256=..."``,
    ``headers=["Name: value"]``); every value is then checked by ``Options`` itself.
    """
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        known = ", ".join(sorted(_OPTION_NAMES))
        raise InputError(f"unknown option {unknown[0]!r}; known: {known}")
    if isinstance(options.get("checksum"), str):
        options["checksum"] = _checksum(options["checksum"])
    if "headers" in options:
        options["headers"] = _headers(options["headers"])
    for name in ("max_rate", "max_overall_rate"):
        if isinstance(options.get(name), str):
            options[name] = _amount(name, options[name])
    places = options.get("metalink_location")
    if isinstance(places, str | list):  # "jp,us" as the CLI takes it, or a list
        from .core.metalink import parse_locations

        text = places if isinstance(places, str) else ",".join(map(str, places))
        options["metalink_location"] = parse_locations(text)
    ca = options.get("ca_certificate")
    if isinstance(ca, str) and ca and not os.path.isfile(ca):
        raise InputError(f"{ca}: CA certificate file not found")
    _read_files(options)
    try:
        directory = os.fspath(dest)
    except TypeError:
        raise InputError(f"--dir: expected a directory name, got {dest!r}") from None
    for name, value in proxies_from_environment(os.environ).items():
        options.setdefault(name, value)  # what the caller gave wins
    return Options(directory=directory, **options)


def _read_files(options: dict[str, Any]) -> None:
    """Read what the surface reads for the core: ``netrc=True`` ($NETRC or ~/.netrc, if it
    exists) or ``netrc="FILE"`` become entries; cookie files are checked before any fetch."""
    from .cookies import check_writable, load_jar
    from .credentials import default_netrc, read_netrc

    given = options.get("netrc")
    if given is True:
        options["netrc"] = read_netrc(default_netrc(), missing_ok=True)
    elif isinstance(given, str | os.PathLike):
        options["netrc"] = read_netrc(os.fspath(given))
    elif given is False or given is None:
        options.pop("netrc", None)
    elif isinstance(given, list):  # entries given as data: Options checks each
        options["netrc"] = tuple(tuple(e) if isinstance(e, list) else e for e in given)
    for name in ("load_cookies", "save_cookies"):
        if isinstance(options.get(name), os.PathLike):
            options[name] = os.fspath(options[name])
    if isinstance(options.get("load_cookies"), str):
        load_jar(options["load_cookies"])  # the session loads it again: this one only checks
    if isinstance(options.get("save_cookies"), str):
        check_writable(options["save_cookies"])


# The environment's proxy variables, as curl reads them: ``http_proxy`` in lower case only
# (a CGI script's ``HTTP_PROXY`` comes from a request's ``Proxy:`` header: "httpoxy").
_PROXY_VARIABLES = {
    "http": ("http_proxy",),
    "https": ("https_proxy", "HTTPS_PROXY"),
    "all": ("all_proxy", "ALL_PROXY"),
}


def proxies_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``proxies`` and ``noproxy`` for ``Options`` from the environment (empty ones skipped)."""
    found: dict[str, Any] = {}
    proxies = tuple(
        (scheme, value)
        for scheme, names in _PROXY_VARIABLES.items()
        for value in [next((environ[n] for n in names if environ.get(n)), "")]
        if value
    )
    if proxies:
        found["proxies"] = proxies
    noproxy = environ.get("no_proxy") or environ.get("NO_PROXY")
    if noproxy:
        found["noproxy"] = noproxy
    return found


def _checksum(text: str) -> Checksum:
    try:
        return Checksum.parse(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _amount(name: str, text: str) -> int:
    """A rate given as text (``"2M"``), as the CLI reads it."""
    from .core.units import parse_amount

    try:
        return parse_amount(text)
    except ValueError as exc:
        raise InputError(f"{option_flag(name)}: {exc}") from None


def _headers(headers: object) -> tuple[tuple[str, str], ...]:
    """``{"Name": "value"}``, ``["Name: value"]`` or ``[("Name", "value")]``."""
    if isinstance(headers, Mapping):
        headers = list(headers.items())
    if isinstance(headers, str) or not isinstance(headers, Iterable):
        raise InputError(f"--header: expected a mapping or a list of headers, got {headers!r}")
    return tuple(_header(item) for item in headers)


def _header(item: object) -> tuple[str, str]:
    if isinstance(item, str):
        return parse_header(item)
    if isinstance(item, tuple | list) and len(item) == 2:
        name, value = (v.strip() if isinstance(v, str) else v for v in item)
        check_header(name, value)
        return name, value
    raise InputError(f"--header: expected 'Name: value' or (name, value), got {item!r}")


class Downloader:
    """Collect jobs with ``enqueue``, then run them as one batch (``run`` or ``run_async``).

    While a run is active in the main thread, SIGINT and SIGTERM only ask it to
    stop; once the engine has flushed the part files, ``run`` raises
    ``KeyboardInterrupt`` or ``midair.run.Terminated``.  An internal error (core,
    store, engine) or an exception from ``on_event`` is raised the same way:
    a run that went wrong never returns as if it had succeeded.
    """

    def __init__(
        self,
        dest: str = ".",
        *,
        engine: str = DEFAULT_ENGINE,
        engine_options: Mapping[str, Any] | None = None,
        on_event: Callable[[Action], None] | None = None,
        **options: Any,
    ) -> None:
        self.options = make_options(dest, **options)
        engine_info(engine)  # an unknown name fails here, before any job is added
        if not isinstance(engine_options, Mapping | None):
            raise InputError(f"engine_options: expected a mapping, got {engine_options!r}")
        self.engine_name = engine
        self.engine_options = dict(engine_options or {})
        self.on_event = on_event
        self.listens_to: Collection[type] = REPORTS  # the kinds ``on_event`` is called for
        self.jobs: list[Job] = []
        self._streams: list[Iterable[Job]] = []  # add_jobs' iterators, read as a run goes
        # False: a run's ``Results`` holds no entry per finished file (the CLI's counts do).
        self.keeps_successes = True
        self.last_run: Run | None = None  # the latest run: its tracker and results

    def enqueue(
        self,
        url: str | None = None,
        *,
        urls: Sequence[str] = (),
        out: str | None = None,
        checksum: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Downloader:
        """Add one file: ``url``, or ``urls``, several places holding it (mirrors, tried
        in turn; named after the first).  Returns the downloader, so calls chain."""
        from .core.naming import relative_path

        given = _sources(url, urls)
        try:
            name = relative_path(out) if out else None
        except ValueError as exc:
            raise InputError(f"{redact(given[0])}: out={exc}") from None
        self.jobs.append(
            Job.from_urls(
                given,
                out=name,
                checksum=_checksum(checksum) if checksum else None,
                headers=_headers(headers or {}),
            )
        )
        return self

    def enqueue_metalink(self, source: str | os.PathLike[str] | bytes) -> Downloader:
        """Add every file of a Metalink (v4 ``.meta4`` or v3 ``.metalink``), given as a
        file name or as the document's bytes: each with its mirrors, checksum and size.
        A malformed document raises InputError naming it; nothing is added then."""
        from .metalink import load

        return self.add_jobs(load(source, self.options.metalink_location))

    def add_jobs(self, jobs: Iterable[Job]) -> Downloader:
        """Add jobs: a list (or tuple) at once, to ``jobs``; any other iterable (a generator, a
        file's entries) is read as the next run goes, a window at a time, so a list of
        millions is never held whole.  An iterator is read by one run only."""
        if isinstance(jobs, list | tuple):
            self.jobs.extend(jobs)
        else:
            self._streams.append(jobs)
        return self

    def _source(self, jobs: list[Job]) -> Iterable[Job]:
        """``jobs``, then the streamed ones (used up: an iterator is read by one run)."""
        streams, self._streams = self._streams, []
        return itertools.chain(jobs, *streams) if streams else list(jobs)

    def new_run(self, journal: Journal | None = None, followed: Followed | None = None) -> Run:
        """A new run of the jobs so far (an engine's ``run`` drives it); with ``journal``,
        of those it does not settle already (see ``midair.journal.sort_out``); with
        ``followed`` (``follow_metalinks``), of its jobs, its failures reported."""
        follow = self.options.follow_metalink

        def screen(jobs: Iterator[Job]) -> Iterator[Job]:
            settle = functools.partial(_count_settled, run)
            if follow:  # only a streamed job can still be one: the others were followed
                jobs = _unfollowed(jobs, settle)
            if journal is None:
                return jobs
            from .journal import sort_out

            return sort_out(journal, jobs, self.options, settle)

        run = Run(
            self._source(self.jobs if followed is None else followed[0]),
            self.options,
            listener=self.on_event,
            listens_to=self.listens_to,
            keeps_successes=self.keeps_successes,
            screen=screen if follow or journal is not None else None,
        )
        if journal is not None:
            run.recorders.update(journal.recorders())
            journal.watch(run.tracker, self.options.concurrency)
            if self.keeps_successes:  # a library run: past HELD jobs, read from the journal
                journal.hold_results()
        for failure in followed[1] if followed is not None else ():
            _count_settled(run, failure)
        self.last_run = run
        return run

    def follow_metalinks(self, engine: Engine) -> Followed | None:
        """The jobs with each Metalink URL replaced by the files its document lists,
        fetched with ``engine`` (see midair/metalink.py); None when there is none."""
        found = self._metalink_documents()
        if not found:
            return None
        from .metalink import expand, fetching

        with fetching(found, self.options) as run:
            with _running(None, run):
                engine.run(run)
            return expand(self.jobs, run.results, self.options.metalink_location)

    async def follow_metalinks_async(self, engine: Engine) -> Followed | None:
        found = self._metalink_documents()
        if not found:
            return None
        from .metalink import expand, fetching

        with fetching(found, self.options) as run:
            await self._run_async(engine, run, None)
            return expand(self.jobs, run.results, self.options.metalink_location)

    def _metalink_documents(self) -> list[Job]:
        """The jobs to follow as Metalink documents rather than save (none if not asked)."""
        if not self.options.follow_metalink:
            return []
        from .core.metalink import metalink_jobs

        return distinct(metalink_jobs(self.jobs))

    def engine(self) -> Engine:
        return get_engine(self.engine_name, **self.engine_options)  # InputError if it cannot

    def run(self, around: Around | None = None) -> Results:
        """Download every job; ``around(run)`` is entered for the run's duration."""
        engine = self.engine()
        followed = self.follow_metalinks(engine)
        with _journal(self.options) as journal:
            run = self.new_run(journal, followed)
            with _running(around, run):
                engine.run(run)
        return run.results

    async def run_async(self, around: Around | None = None) -> Results:
        engine = self.engine()
        followed = await self.follow_metalinks_async(engine)
        with _journal(self.options) as journal:
            return await self._run_async(engine, self.new_run(journal, followed), around)

    async def _run_async(self, engine: Engine, run: Run, around: Around | None) -> Results:
        run_async = getattr(engine, "run_async", None)
        with _running(around, run):
            if run_async is not None:
                await run_async(run)
            else:  # a blocking engine: keep the caller's loop free
                import asyncio

                await asyncio.to_thread(engine.run, run)
        return run.results


@contextlib.contextmanager
def _journal(options: Options) -> Iterator[Journal | None]:
    """The run's journal, open and locked for its duration (None: ``journal=None``)."""
    if options.journal is None:
        yield None
        return
    from .journal import Journal, journal_path

    journal = Journal(journal_path(options.directory, options.journal))
    try:
        yield journal
    finally:
        journal.close()


def _unfollowed(jobs: Iterable[Job], settle: Callable[[Failure], None]) -> Iterator[Job]:
    """``jobs`` but the Metalink URLs among them, which fail: a streamed list is read as the
    run goes, after the documents are followed (``follow_metalinks``)."""
    from .core.metalink import names_metalink

    for job in jobs:
        if not names_metalink(job):
            yield job
            continue
        url = job.url.text
        reason = (
            "a Metalink URL in a streamed list is not followed: give it as a URL or with -M "
            "(--no-follow-metalink saves it as a file)"
        )
        settle(Failure(url, DownloadError(url, reason)))


def _count_settled(run: Run, settled: Success | Failure) -> None:
    """A job the journal settled counts in the run's totals and results as if run: a
    failure is reported (so a display shows why), a done file only counted."""
    from .core.actions import Failed

    tracker = run.tracker
    tracker.jobs += 1
    if isinstance(settled, Failure):
        run.report(Failed(-1, settled.url, settled.error))  # -1: no download of this run
        return
    tracker.files_done += 1
    if tracker.keeps:
        tracker.results.successes.append(settled)


@contextlib.contextmanager
def _running(around: Around | None, run: Run) -> Iterator[None]:
    """The frame of one run: ``around`` entered, signals turned into stops; on the way out
    the cookies saved (every engine's, however it ended), then the outcome raised —
    inside ``around``, so a display shows no summary for a run that went wrong."""
    with _around(around, run), stop_on_signals(run):
        try:
            yield
        finally:
            run.save_cookies()
        run.raise_outcome()


def _around(around: Around | None, run: Run) -> AbstractContextManager[Any]:
    return around(run) if around is not None else contextlib.nullcontext()


def download(urls: Iterable[str] | str, dest: str = ".", **options: Any) -> Results:
    """Fetch ``urls`` into ``dest`` at once; see ``Options`` for every keyword."""
    return _downloader(urls, dest, options).run()


async def download_async(urls: Iterable[str] | str, dest: str = ".", **options: Any) -> Results:
    """``download`` for callers already inside an event loop."""
    return await _downloader(urls, dest, options).run_async()


def _downloader(urls: Iterable[str] | str, dest: str, options: dict[str, Any]) -> Downloader:
    engine = options.pop("engine", DEFAULT_ENGINE)
    on_event = options.pop("on_event", None)
    engine_options = options.pop("engine_options", None)
    downloader = Downloader(
        dest, engine=engine, engine_options=engine_options, on_event=on_event, **options
    )
    for url in [urls] if isinstance(urls, str) else urls:
        downloader.enqueue(url)
    return downloader


def _sources(url: str | None, urls: Sequence[str]) -> list[str]:
    """``enqueue``'s URLs: exactly one of ``url`` and ``urls`` is given."""
    if isinstance(urls, str):
        raise InputError("urls: expected a list of URLs, got one string (use url=)")
    given = ([url] if url is not None else []) + list(urls)
    if not given or (url is not None and urls):
        raise InputError("enqueue: give url or urls (a non-empty list), not both")
    return given
