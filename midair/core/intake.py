"""A batch's jobs, taken a window at a time, each named across the whole batch.

``Batch`` takes its jobs from an iterator a window at a time (``take``), so a
list of millions costs the memory of a few windows of jobs; the ones taken and
not ended are in ``jobs``.  Before any file of a window is touched, its names
are settled (``name``) against every name claimed before it, in this window or
any earlier one: the later of two jobs for one path is numbered past the first
(``claims.settle``), so a clash anywhere in the batch is found.  That costs one
claimed name per job, kept to the batch's end (``claims``: a dict, or past a
bound a store of the run's on disk, ``midair.spool``).

What the store found on disk (``Store.survey``, once per directory) comes in
with each window: which URL midair made each file for keeps names stable across
runs (a duplicate's ``NAME.1``, a server's name), and files that are no job's to
take are passed over.

Here the names are decided; the batch carries the decisions out (a ``Prepare``,
or a failure), so this module knows nothing of downloads or actions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Container, Iterable, Iterator, Mapping

from . import claims, naming
from .jobs import Job, Options
from .records import Record
from .transfer import claimable_path

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final

    from .claims import Claims

WINDOW = 4096  # least jobs taken at a time
ENDED = -1  # the claim of a name whose job ended: still the batch's, no longer anyone's


def window_size(options: Options) -> int:
    """How many jobs a batch takes at a time (``take``): a few windows are in memory."""
    return max(WINDOW, 4 * options.concurrency)


class Named(Record):
    """A window's names, settled (``Intake.name``), for the batch to carry out."""

    __match_args__ = ("escaping", "beaten", "ready")
    __slots__ = __match_args__

    def __init__(
        self, escaping: list[int], beaten: list[tuple[int, int]], ready: list[tuple[int, str, bool]]
    ) -> None:
        self.escaping: Final = escaping  # jobs whose first path lands outside: they fail
        self.beaten: Final = beaten  # (job, the job that has its path): --no-clobber fails it
        # (job, its path, whether it claims the path alone: as its first choice or as the
        # file its URL owns, ``Prepare.by_name``), in list order: to prepare.
        self.ready: Final = ready


class Intake:
    """The jobs of one batch, and every name they claimed."""

    def __init__(
        self,
        jobs: Iterable[Job],
        options: Options,
        ids: Iterable[int] | None = None,
        paths: Iterable[str | None] | None = None,
        claims_kept: Callable[[Claims], Claims] | None = None,
    ) -> None:
        """``ids``, ``paths``, ``claims_kept``: see ``Batch``."""
        self.options = options
        self._source = _numbered(jobs, ids, paths)
        self._paths_given = paths is not None
        self.more = True  # the source may hold more jobs
        self.size = window_size(options)
        self.jobs: dict[int, Job] = {}  # taken and not ended
        # path -> the job that has it (ENDED once it ended): one entry per name of the
        # batch, kept to its end, so a clash with a name taken long before is still found.
        self.claims: Claims = dict[str, int]()
        self._claims_kept = claims_kept
        self._window: list[tuple[int, str | None]] = []  # the latest window's jobs, first paths
        self._clashes: dict[str, list[int]] = {}  # the window's first paths several jobs share
        self._escaping: list[int] = []  # the window's jobs whose first path lands outside
        self._directories: set[str] = set()  # where the jobs land, for the store's survey
        self._surveyed: set[str] = set()  # of those, the ones the store surveyed already
        # URL (``claims.identity``: signatures dropped) -> a file it owns under another name
        self._owned: dict[str, str] = {}  # (the survey's)
        self._taken: set[str] = set()  # on disk and no job's to take (the survey says)
        self.renames: dict[int, int] = {}  # job -> its path's number, for the few numbered

    @property
    def untaken(self) -> bool:
        """Whether the next window is still to take before it can be named."""
        return not self._window and self.more

    def survey(self) -> tuple[set[str], Container[str]]:
        """What the store looks at (``Store.survey``) before ``name``: the directories not
        surveyed yet, and the paths it may pass over, each claimed by one job alone (their
        ``Prepare`` will tell about those)."""
        fresh = self._directories - self._surveyed
        self._surveyed |= fresh
        return fresh, self.claims

    def take(self) -> int:
        """Take the next window of jobs and find each one's first-choice path; how many."""
        if self._claims_kept is not None:
            self.claims = self._claims_kept(self.claims)
        window = list(itertools.islice(self._source, self.size))
        self.more = len(window) == self.size
        self._group_first_paths(window)
        return len(window)

    def name(self, owners: Mapping[str, str | None]) -> Named:
        """Settle the paths of the window ``take`` took, after the store's survey of its
        directories (``owners``: path -> the URL midair made the file for, None: a file
        midair did not make): each job's first choice when it has it alone and its URL owns
        no other file (nearly every job of nearly every window)."""
        escaping, self._escaping = self._escaping, []
        if owners:
            self._note_owners(owners)
        window, claimed = self._window, self.claims
        beaten: list[tuple[int, int]] = []
        if self._clashes or (self._owned and any(self._owns(i) for i, _ in window)):
            placed = self._settle(beaten)
        else:
            placed = {}
        ready = []
        for ident, first in window:  # list order
            if ident in placed:  # a file its URL owns (by name), or a clash's (exact URL)
                path = placed[ident][0]
                ready.append((ident, path, self._owned_path(ident) == path))
            elif first is not None and claimed.get(first) == ident:
                ready.append((ident, first, True))
        self._window, self._clashes = [], {}
        return Named(escaping, beaten, ready)

    # --- names claimed as downloads go on -----------------------------------------------
    def free(self, path: str) -> bool:
        """Whether ``path`` may be claimed: no job's, and not on disk for another."""
        return path not in self.claims and path not in self._taken

    def claim(self, ident: int, path: str) -> None:
        self.claims[path] = ident

    def release(self, ident: int, path: str | None) -> None:
        """``ident`` gives ``path`` up (a name it leaves for another: a rename)."""
        if path is not None and self.claims.get(path) == ident:
            del self.claims[path]

    def on_disk(self, path: str) -> None:
        """``path`` holds another URL's file: no job of the batch takes it."""
        self._taken.add(path)

    def claimant(self, path: str) -> int | None:
        return self.claims.get(path)

    def ended(self, ident: int, paths: Iterable[str | None]) -> None:
        """Forget the ended job but for its names' claims (the batch's clashes need them)."""
        self.jobs.pop(ident, None)
        claimed = self.claims
        for path in paths:
            if path is not None and claimed.get(path) == ident:
                claimed[path] = ENDED

    def url_of(self, ident: int) -> str:
        """The URL of job ``ident``, for a message: one ended long ago is no longer held."""
        job = self.jobs.get(ident)
        return job.url.text if job is not None else "another URL of the list"

    # --- a window's names ---------------------------------------------------------------
    def _group_first_paths(self, taken: list[tuple[int, Job, str | None]]) -> None:
        """Each job's first-choice path: claimed by it alone, shared (a clash, with this
        window's jobs or with a name claimed before), or None (it lands outside)."""
        options, jobs, claimed = self.options, self.jobs, self.claims
        mine: dict[str, int] = {}  # claimed by one job of this window, so far
        clashes, directories = self._clashes, self._directories
        directories.add(naming.directory_of(options.directory))
        window = self._window = []
        for ident, job, given in taken:
            jobs[ident] = job
            path = given if self._paths_given else claimable_path(job, options)
            window.append((ident, path))
            if path is None:
                self._escaping.append(ident)
                continue
            if job.subdir or (job.out and "/" in job.out):
                directories.add(path.rpartition("/")[0] or "/")
            if path in clashes:
                clashes[path].append(ident)
            elif path in mine:
                clashes[path] = [mine.pop(path), ident]
            elif path in claimed:  # an earlier window's: it keeps it, as if first in the list
                clashes[path] = [ident]
            else:
                mine[path] = ident
        claimed.update(mine)

    def _note_owners(self, owners: Mapping[str, str | None]) -> None:
        """Remember what the survey found, for this window and the ones after it."""
        overwrite = self.options.overwrite
        self._taken.update(p for p, url in owners.items() if url is not None or not overwrite)
        for path in sorted(owners):  # the lowest path, should one URL own two
            url = owners[path]
            name = path.rpartition("/")[2]
            if url is not None and naming.sanitize(name) == name:  # a name midair gives
                self._owned.setdefault(claims.identity(url), path)

    def _owns(self, ident: int) -> bool:
        return self._owned_path(ident) is not None

    def _owned_path(self, ident: int) -> str | None:
        """The file job ``ident``'s URL owns (the survey says), signatures aside."""
        job = self.jobs.get(ident)
        return None if job is None else self._owned.get(claims.identity(job.url.text))

    def _settle(self, beaten: list[tuple[int, int]]) -> dict[int, tuple[str, int]]:
        escaping = {i for i, first in self._window if first is None}
        movers = [self._wish(i) for i, _ in self._window if i not in escaping and self._owns(i)]
        clashes = {p: [self._wish(i, p) for i in group] for p, group in self._clashes.items()}
        settled = claims.settle(
            self.claims,
            movers,
            clashes,
            self._owned,
            self._taken,
            no_clobber=self.options.no_clobber,
        )
        self.renames.update(
            (ident, number) for ident, (_, number) in settled.placed.items() if number
        )
        beaten.extend(settled.beaten.items())
        return settled.placed

    def _wish(self, ident: int, first: str | None = None) -> claims.Wish:
        job = self.jobs[ident]
        first = first or claimable_path(job, self.options)
        return claims.Wish(ident, claims.identity(job.url.text), first or "", job.out is not None)


def _numbered(
    jobs: Iterable[Job], ids: Iterable[int] | None, paths: Iterable[str | None] | None
) -> Iterator[tuple[int, Job, str | None]]:
    """Each job with its id (default: its position) and first path (None: not given)."""
    if paths is None and ids is None:
        return ((i, job, None) for i, job in enumerate(jobs))
    if paths is None:
        return ((i, job, None) for i, job in zip(ids, jobs, strict=True))  # type: ignore[arg-type]
    if ids is None:
        return ((i, job, path) for i, (job, path) in enumerate(zip(jobs, paths, strict=True)))
    return zip(ids, jobs, paths, strict=True)
