"""How a run looks: a rich live display on a terminal, plain lines in a log,
JSON lines for scripts, or only failures with ``-q``.

Every reporter gets the run's reports as they happen (``event``) and may
read the ``Tracker`` from its own refresh thread (``live``).  A refresh
thread that cannot write (a closed stdout) hands its error to ``on_error``,
which ends the run: the thread must not die alone while the run goes on.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

from ..core.actions import Action, Failed, Finished, Retrying, Started
from ..core.progress import Tracker

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any, TextIO

OnError = Callable[[BaseException], None] | None


def make_reporter(*, json: bool = False, quiet: bool = False) -> Reporter:
    if json:
        return JsonReporter()
    if quiet:
        return Reporter()
    if sys.stderr.isatty():
        return RichReporter()
    return PlainReporter()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class Reporter:
    """Quiet: failures only, one line each, and a summary only when something failed.

    ``kinds``: the reports ``event`` is called for.  Whoever shows the transfers in the
    air (``Tracker.active``) hears ``Started``: the run follows them only then."""

    kinds: frozenset[type] = frozenset({Failed})

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr

    def event(self, action: Action) -> None:
        if isinstance(action, Failed):
            self.line(failure_line(action))

    def line(self, text: str) -> None:
        print(printable(text), file=self.out, flush=True)

    @contextlib.contextmanager
    def live(self, tracker: Tracker, on_error: OnError = None) -> Iterator[None]:
        yield

    def summary(self, tracker: Tracker, seconds: float) -> None:
        if tracker.files_failed:
            self.line(summary_line(tracker, seconds))


def printable(text: str) -> str:
    """One line, escapes and all: URLs and reasons may carry what a server or list put there."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def failure_line(action: Failed) -> str:
    """``failed: URL: reason``, naming the URL the user gave, and where it failed if elsewhere."""
    error = action.error
    where = f" (at {error.url})" if error.url != action.url else ""
    return f"failed: {action.url}: {error.reason}{where}"


def summary_line(tracker: Tracker, seconds: float) -> str:
    skipped = sum(1 for s in tracker.results.successes if s.skipped)
    rate = tracker.bytes_done / seconds if seconds > 0 else 0.0
    return (
        f"midair: {tracker.files_done} done"
        + (f" ({skipped} already complete)" if skipped else "")
        + f", {tracker.files_failed} failed; {human_bytes(tracker.bytes_done)} in "
        f"{seconds:.1f} s ({human_bytes(rate)}/s)"
    )


class PlainReporter(Reporter):
    """A line per finished, failed or retried file: for logs and pipes."""

    kinds = frozenset({Finished, Retrying, Failed})

    def event(self, action: Action) -> None:
        if isinstance(action, Finished):
            note = "already complete" if action.skipped else human_bytes(action.size)
            self.line(f"done: {action.url} -> {action.path} ({note})")
        elif isinstance(action, Retrying):
            self.line(
                f"retry {action.attempt} in {action.delay:.1f} s: {action.url}: {action.reason}"
            )
        else:
            super().event(action)

    def summary(self, tracker: Tracker, seconds: float) -> None:
        self.line(summary_line(tracker, seconds))


class JsonReporter(Reporter):
    """One JSON object per line on stdout; overall progress at most every 0.5 s."""

    INTERVAL = 0.5
    kinds = frozenset({Started, Finished, Failed, Retrying})

    def __init__(self, out: TextIO | None = None) -> None:
        import json  # here, not at the top: a run without --json never loads it (~1 ms)

        super().__init__(out or sys.stdout)
        self._lock = threading.Lock()
        self._dumps = json.dumps

    def emit(self, record: dict[str, Any]) -> None:
        record["time"] = round(time.time(), 3)
        text = self._dumps(record)
        with self._lock:
            print(text, file=self.out, flush=True)

    def event(self, action: Action) -> None:
        if isinstance(action, Started):
            self.emit(
                {
                    "event": "start",
                    "url": action.url,
                    "path": action.path,
                    "offset": action.offset,
                    "size": action.size,
                }
            )
        elif isinstance(action, Finished):
            self.emit(
                {
                    "event": "done",
                    "url": action.url,
                    "path": action.path,
                    "size": action.size,
                    "skipped": action.skipped,
                }
            )
        elif isinstance(action, Failed):
            self.emit(
                {
                    "event": "failed",
                    "url": action.url,
                    "reason": action.error.reason,
                    "error": type(action.error).__name__,
                    "status": action.error.status,
                }
            )
        elif isinstance(action, Retrying):
            self.emit(
                {
                    "event": "retry",
                    "url": action.url,
                    "reason": action.reason,
                    "delay": round(action.delay, 3),
                    "attempt": action.attempt,
                }
            )

    @contextlib.contextmanager
    def live(self, tracker: Tracker, on_error: OnError = None) -> Iterator[None]:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.INTERVAL):
                try:
                    self.emit(self._progress(tracker))
                except Exception as exc:  # BrokenPipeError: `midair get --json | head -1`
                    if on_error is None:
                        raise
                    on_error(exc)
                    return

        thread = threading.Thread(target=tick, name="midair-json-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _progress(self, tracker: Tracker) -> dict[str, Any]:
        return {
            "event": "progress",
            "bytes": tracker.bytes_done,
            "files_done": tracker.files_done,
            "files_failed": tracker.files_failed,
            "active": len(tracker.active),
            "jobs": tracker.jobs,
        }

    def summary(self, tracker: Tracker, seconds: float) -> None:
        record = self._progress(tracker)
        record.update(event="summary", seconds=round(seconds, 3))
        self.emit(record)


class RichReporter(PlainReporter):
    """A live view on a terminal: totals, rate, ETA, and the busiest transfers."""

    SHOWN = 8
    kinds = frozenset({Started, Retrying, Failed})  # Started: the view shows what is active

    def event(self, action: Action) -> None:
        if isinstance(action, Failed | Retrying):
            super().event(action)

    def line(self, text: str) -> None:
        self.console.print(printable(text), markup=False, highlight=False)

    @contextlib.contextmanager
    def live(self, tracker: Tracker, on_error: OnError = None) -> Iterator[None]:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        view = _LiveView(tracker, self.SHOWN)
        with Live(view, console=self.console, refresh_per_second=4, transient=True):
            yield

    def summary(self, tracker: Tracker, seconds: float) -> None:
        self.line(summary_line(tracker, seconds))


class _LiveView:
    """Rendered by rich on each refresh; reads the tracker, never writes it."""

    def __init__(self, tracker: Tracker, shown: int) -> None:
        self.tracker = tracker
        self.shown = shown
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = []

    def rate(self) -> float:
        now, done = time.monotonic(), self.tracker.bytes_done
        self.samples = [s for s in self.samples if now - s[0] < 5.0] + [(now, done)]
        first = self.samples[0]
        return (done - first[1]) / (now - first[0]) if now > first[0] else 0.0

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        t = self.tracker
        rate = self.rate()
        expected = t.bytes_expected
        remaining = max(expected - t.bytes_done, 0)
        eta = f"{remaining / rate:.0f} s" if rate > 0 and remaining else "-"
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            f"[bold]{t.files_done}[/]/{t.jobs} files",
            f"[red]{t.files_failed} failed[/]",
            f"{human_bytes(t.bytes_done)}",
            f"{human_bytes(rate)}/s",
            f"ETA {eta}",
            f"{len(t.active)} in the air",
        )
        table = Table.grid(padding=(0, 1))
        table.add_row(ProgressBar(total=max(expected, 1), completed=t.bytes_done, width=50))
        table.add_row(grid)
        busiest = sorted(list(t.active.values()), key=lambda x: -(x.size or 0))[: self.shown]
        for transfer in busiest:
            name = transfer.path.rsplit("/", 1)[-1][:40]
            size = transfer.size or transfer.done or 1
            row = Table.grid(padding=(0, 1))
            row.add_row(
                ProgressBar(total=size, completed=transfer.done, width=20),
                f"{name}",
                human_bytes(transfer.done),
            )
            table.add_row(row)
        return table
