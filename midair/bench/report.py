"""Medians over reps, one Markdown table per scenario (best first, ranked), and the JSON.

Medians are taken over a client's passing reps only (a run that failed fast
would otherwise look fast); failures are counted in the status column. Each
scenario states the target issue 8 sets for the default ``midair get``, and on
a disk the cost of durable publication (the default against ``--no-fsync``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from midair.bench.clients import DEFAULT_CLIENT, NO_FSYNC_CLIENT
from midair.bench.runner import Run, ScenarioResult
from midair.bench.scenarios import Scenario
from midair.bench.startup import RUNS, StartupRow

__all__ = [
    "GOALS",
    "TARGETS",
    "Row",
    "durability",
    "markdown",
    "rows_for",
    "table_kind",
    "write_json",
]

TARGETS = {"first_request_ms": 50.0, "exit_ms": 20.0, "version_ms": 100.0}  # issue 8
GOALS = {  # issue 8's "What to reach" (split: issue 10's), for the default `midair get`
    "seed": "<= 1.02x floor; first request <= 50 ms after exec, exit <= 20 ms after the last "
    "response",
    "crowd": "wall <= wget2's, CPU <= aria2c's",
    "c10k": "<= 2.5x floor and ahead of wget2, RSS per in-flight transfer <= 20 KiB",
    "bulk": ">= wget2's GB/s and >= 90% of the new-file ceiling",
    "small": "files/s >= wget2's, CPU per file <= curl's",
    "list": "first request <= 1 s after exec, peak RSS <= 200 MiB flat in list length (issue 9)",
    "split": "-s 16 within 1.2x of the floor, beside aria2c -x16 -s16 and axel -n 16 (issue 10)",
    "mirrors": "ahead of aria2c -x16 -s16 with the same three mirrors (issue 10)",
}


@dataclass
class Row:
    """Medians of one client's reps at one point: one table line."""

    client: str
    version: str
    files: int
    in_flight: int
    status: str
    wall_s: float | None = None
    cpu_s: float | None = None
    rss_mib: float | None = None
    ratio: float | None = None  # wall / floor (throttled scenarios)
    of_ceiling: float | None = None  # throughput / new-file ceiling (bulk)
    gbps: float | None = None
    files_per_s: float | None = None
    first_request_ms: float | None = None  # exec -> first request at the server
    exit_ms: float | None = None  # last response's end -> exit
    connections: float | None = None  # distinct connections the server saw
    rank: int | None = None  # 1 = best of the passing clients' rows
    reference: bool = False  # a measuring loop, not a client: shown, never ranked

    @property
    def ok(self) -> bool:
        return self.wall_s is not None

    @property
    def cpu_ms_per_file(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s * 1000 / self.files

    @property
    def rss_kib_per_transfer(self) -> float | None:
        return None if self.rss_mib is None else self.rss_mib * 1024 / self.in_flight


def rows_for(result: ScenarioResult, files: int | None = None) -> list[Row]:
    """One row per client (at one sweep point), sorted best first, failures last."""
    runs = [r for r in result.runs if files is None or r.files == files]
    rows = sorted(
        [
            _row(result, [r for r in runs if r.client == c])
            for c in dict.fromkeys(r.client for r in runs)
        ],
        key=_sort_key,
    )
    for rank, row in enumerate((r for r in rows if r.ok and not r.reference), start=1):
        row.rank = rank
    return rows


def _row(result: ScenarioResult, mine: Sequence[Run]) -> Row:
    first = mine[0]
    row = Row(first.client, first.version, first.files, first.in_flight, _status(mine))
    row.reference = first.reference
    ms = [r.measurement for r in mine if r.status == "ok" and r.measurement is not None]
    if not ms:
        return row
    row.wall_s = statistics.median(m.wall_s for m in ms)
    row.cpu_s = statistics.median(m.cpu_s for m in ms)
    row.rss_mib = statistics.median(m.maxrss_mib for m in ms)
    row.gbps = first.bytes / row.wall_s / 1e9
    row.files_per_s = first.files / row.wall_s
    if result.floor:
        row.ratio = row.wall_s / result.floor
    elif result.file_ceiling or result.ceiling:
        row.of_ceiling = row.gbps / (result.file_ceiling or result.ceiling or 1.0)
    _add_timing(row, [r for r in mine if r.status == "ok"])
    return row


def _add_timing(row: Row, runs: Sequence[Run]) -> None:
    timings = [r.timing for r in runs if r.timing is not None]
    row.first_request_ms = _median([t.first_request_ms for t in timings])
    row.exit_ms = _median([t.exit_ms for t in timings])
    row.connections = _median([t.connections for t in timings])


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _status(runs: Sequence[Run]) -> str:
    bad = [r for r in runs if r.status != "ok"]
    if not bad:
        return "ok"
    if bad[0].status == "SKIPPED":
        return f"skipped: {bad[0].detail}"
    return f"FAILED {len(bad)}/{len(runs)}: {bad[0].detail}"


def _sort_key(row: Row) -> tuple[int, float]:
    """Shortest wall first (= best ratio, GB/s or files/s), then failed, then skipped."""
    if row.wall_s is None:
        return (2 if row.status.startswith("skipped") else 1, 0.0)
    return (0, row.wall_s)


# --- Markdown -----------------------------------------------------------------


def _num(value: float | None, digits: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _fine(value: float | None) -> str:
    """Three decimals below 1 (CPU ms per file of a fast client), two above."""
    return _num(value, 3 if value is not None and value < 1 else 2)


def _table(head: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in lines]
    return "\n".join(out)


COLUMNS: dict[str, tuple[str, Callable[[Row], str]]] = {
    "rank": ("#", lambda r: "ref" if r.reference else str(r.rank) if r.rank else "-"),
    "client": ("client", lambda r: r.client + (" (reference loop)" if r.reference else "")),
    "version": ("version", lambda r: r.version),
    "wall": ("wall s", lambda r: _num(r.wall_s, 2)),
    "ratio": ("x floor", lambda r: _num(r.ratio, 2, "x")),
    "gbps": ("GB/s", lambda r: _num(r.gbps, 2)),
    "of_ceiling": ("% of ceiling", lambda r: _pct(r.of_ceiling)),
    "files_per_s": ("files/s", lambda r: _num(r.files_per_s, 0)),
    "cpu": ("CPU s", lambda r: _num(r.cpu_s, 2)),
    "cpu_per_file": ("CPU ms/file", lambda r: _fine(r.cpu_ms_per_file)),
    "rss": ("peak RSS MiB", lambda r: _num(r.rss_mib, 1)),
    "rss_per_transfer": ("RSS KiB/transfer", lambda r: _num(r.rss_kib_per_transfer, 1)),
    "first_request": ("first request ms", lambda r: _num(r.first_request_ms, 0)),
    "exit": ("exit ms", lambda r: _num(r.exit_ms, 0)),
    "connections": ("connections", lambda r: _num(r.connections, 0)),
    "in_flight": ("in flight", lambda r: str(r.in_flight)),
    "status": ("status", lambda r: r.status),
}
_COSTS = ["cpu", "cpu_per_file", "rss"]
_EDGES = ["first_request", "exit"]
LAYOUTS: dict[str, list[str]] = {  # table_kind -> columns
    "throttled": [
        "rank",
        "client",
        "version",
        "wall",
        "ratio",
        *_COSTS,
        "rss_per_transfer",
        *_EDGES,
        "in_flight",
        "status",
    ],
    "bulk": ["rank", "client", "version", "wall", "gbps", "of_ceiling", *_COSTS, *_EDGES, "status"],
    "small": [
        "rank",
        "client",
        "version",
        "wall",
        "files_per_s",
        *_COSTS,
        "connections",
        *_EDGES,
        "status",
    ],
}


def table_kind(scn: Scenario) -> str:
    """sweep (a table per measure), throttled (x floor), bulk (GB/s) or small (files/s)."""
    if scn.counts:
        return "sweep"
    if scn.throttled:
        return "throttled"
    return "bulk" if scn.files == 1 else "small"


def scenario_table(kind: str, rows: list[Row]) -> str:
    columns = [COLUMNS[c] for c in LAYOUTS[kind]]
    return _table([head for head, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


SWEEP_METRICS: list[tuple[str, Callable[[Row], float | None], int]] = [
    ("wall s", lambda r: r.wall_s, 2),
    ("x floor", lambda r: r.ratio, 2),
    ("CPU ms per file", lambda r: r.cpu_ms_per_file, 2),
    ("peak RSS KiB per transfer", lambda r: r.rss_kib_per_transfer, 0),
]


# A list of N one-byte files (``list:counts=...``): what list length costs.
LENGTH_METRICS: list[tuple[str, Callable[[Row], float | None], int]] = [
    ("files/s", lambda r: r.files_per_s, 0),
    ("CPU ms per file", lambda r: r.cpu_ms_per_file, 3),
    ("peak RSS MiB", lambda r: r.rss_mib, 1),
    ("first request ms", lambda r: r.first_request_ms, 0),
]


def sweep_metrics(scn: Scenario) -> list[tuple[str, Callable[[Row], float | None], int]]:
    """What a scenario measured at several N shows: in-flight cost, or list-length cost."""
    return LENGTH_METRICS if scn.tiny else SWEEP_METRICS


def sweep_tables(result: ScenarioResult) -> str:
    """One table per measure: a row per client, a column per N."""
    counts = sorted({r.files for r in result.runs})
    by_n = {n: {row.client: row for row in rows_for(result, n)} for n in counts}
    order = list(by_n[counts[-1]]) if counts else []
    parts = []
    for title, get, digits in sweep_metrics(result.scenario):
        lines = [[c] + [_cell(by_n[n].get(c), get, digits) for n in counts] for c in order]
        parts.append(f"**{title}**\n\n" + _table(["client"] + [f"N={n:,}" for n in counts], lines))
    return "\n\n".join(parts)


def _cell(row: Row | None, get: Callable[[Row], float | None], digits: int) -> str:
    if row is None:
        return "-"
    if not row.ok:
        return "skip" if row.status.startswith("skipped") else "FAIL"
    return _num(get(row), digits)


def scenario_markdown(result: ScenarioResult) -> str:
    scn = result.scenario
    parts = [f"### {scn.name}\n\n{describe(result)}"]
    if result.skipped:
        parts.append(f"Skipped: {result.skipped}.")
    if not result.runs:
        return "\n\n".join(parts)
    kind = table_kind(scn)
    parts.append(
        sweep_tables(result) if kind == "sweep" else scenario_table(kind, rows_for(result))
    )
    parts += _reference_lines(result)
    parts += _durability_lines(result)
    failed = [r for r in result.runs if r.status == "FAILED"]
    parts += [f"Failed runs: {len(failed)} (details in the JSON)."] if failed else []
    return "\n\n".join(parts)


def durability(result: ScenarioResult, files: int | None = None) -> dict[str, float] | None:
    """What fsync-before-rename costs the default ``midair get``, per file: its figures
    minus those of the same command with --no-fsync (None unless both passed)."""
    rows = {r.client: r for r in rows_for(result, files)}
    durable, loose = rows.get(DEFAULT_CLIENT), rows.get(NO_FSYNC_CLIENT)
    if durable is None or loose is None or not (durable.ok and loose.ok):
        return None
    assert durable.wall_s is not None and loose.wall_s is not None
    assert durable.cpu_s is not None and loose.cpu_s is not None
    return {
        "wall_ms_per_file": (durable.wall_s - loose.wall_s) * 1000 / durable.files,
        "cpu_ms_per_file": (durable.cpu_s - loose.cpu_s) * 1000 / durable.files,
    }


def _reference_lines(result: ScenarioResult) -> list[str]:
    rows = [r for r in rows_for(result) if r.ok]
    if not any(r.reference for r in rows):
        return []
    text = (
        "Rows marked ref are a reference loop, not a client, and are not ranked: "
        "python_floor.py, one CPython thread over epoll doing only what a client must "
        "(a GET, a 200 and its length, the file written), no retries, resume or checks "
        "beyond those. -direct writes to the final name (as curl), -atomic to a part "
        "file then renames it (as midair), -tagged also sets midair's user.midair tag: "
        "what CPython itself needs per file with each kind of publication."
    )
    return [text + _against_curl(rows)]


def _against_curl(rows: list[Row]) -> str:
    """`` CPU per file against curl's: a 0.80x, b 2.20x.`` for the loop's rows and the
    default ``midair get`` (nothing without a passing curl)."""
    curl = next((r for r in rows if r.client == "curl"), None)
    if curl is None or not curl.cpu_s:
        return ""
    shown = [r for r in rows if r.reference or r.client == DEFAULT_CLIENT]
    ratios = [f"{r.client} {(r.cpu_s or 0.0) / curl.cpu_s:.2f}x" for r in shown]
    return f" CPU per file against curl's: {', '.join(ratios)}."


def _durability_lines(result: ScenarioResult) -> list[str]:
    counts = sorted({r.files for r in result.runs}) if result.scenario.counts else [None]
    lines = []
    for n in counts:
        cost = durability(result, n)
        if cost is not None:
            at = f" at N={n:,}" if n else ""
            lines.append(
                f"Durable publication{at} ({DEFAULT_CLIENT} against "
                f"{NO_FSYNC_CLIENT}): {cost['wall_ms_per_file']:+.2f} ms wall and "
                f"{cost['cpu_ms_per_file']:+.3f} ms CPU per file."
            )
    return lines


def describe(result: ScenarioResult) -> str:
    scn = result.scenario
    what = (
        f"N = {', '.join(f'{n:,}' for n in scn.counts)} files"
        if scn.counts
        else f"{scn.files:,} file{'s' if scn.files > 1 else ''}"
    )
    rate = f"{size_text(scn.rate)}/s per connection" if scn.throttled else "unthrottled"
    where = f"{scn.hosts} address{'es' if scn.hosts > 1 else ''}"
    text = f"{what} x {size_text(scn.size)} over {where}, {rate}, server: {result.server}."
    point = scn.points()[-1]
    text += (
        f" In flight: {point.jobs:,} (per host {point.per_host})."
        if not scn.counts
        else (" All N in flight, over min(N, addresses) addresses.")
    )
    if result.floor and scn.mirrors:
        rates = ", ".join(f"{size_text(scn.rate >> k)}/s" for k in range(scn.mirrors))
        text += (
            f" {scn.mirrors} mirrors per file at {rates} per connection. Floor: "
            f"{result.floor:.2f} s, the size over {scn.split} connections to the fastest."
        )
    elif result.floor and scn.split:
        text += (
            f" Floor: {result.floor:.2f} s, the size over {scn.split} connections at the rate"
            f" (-s {scn.split}; nginx sends each range's first second at once, so beating it"
            " is possible)."
        )
    elif result.floor:
        text += (
            f" Floor (one file alone, curl): {result.floor:.2f} s "
            f"(expected {expected_floor(scn, result.server):.2f} s)."
        )
    if result.ceiling:
        text += (
            f" Loopback ceiling (one plain socket, no file, best rep): {result.ceiling:.2f} GB/s"
        )
        text += (
            f"; into a new file in the downloads directory: {result.file_ceiling:.2f} "
            f"GB/s (the 100% below), the best of the plain writers{_writers(result)}."
            if result.file_ceiling
            else "."
        )
    text += f" {result.reps} rep{'s' if result.reps > 1 else ''}"
    text += " (medians)." if result.reps > 1 else "."
    text += clock_text(result)
    goal = GOALS.get(scn.name)
    return text + (f"\n\nTarget for {DEFAULT_CLIENT}: {goal}." if goal else "")


def _writers(result: ScenarioResult) -> str:
    """Each plain writer's best GB/s into the new file: which one set the ceiling."""
    each = [f"{w} {max(g):.2f}" for w, g in result.file_ceiling_by.items() if g]
    return f" ({', '.join(each)})" if each else ""


def clock_text(result: ScenarioResult) -> str:
    """How far the server's log can be trusted for the first request / exit columns."""
    clock = result.clock
    if clock is None:
        return ""
    if not clock.accurate:
        return (
            f" Server log clock NOT millisecond-accurate (worst probe {clock.worst_ms:.1f} "
            "ms off): first request and exit are approximate."
        )
    text = (
        f" Server log clock checked: {clock.probes} probes logged within their "
        f"send-reply window (<= {clock.window_ms:.1f} ms) to 1 ms."
    )
    if result.server.startswith("midair"):
        text += " midair serve logs arrivals only: no exit figures."
    return text


def expected_floor(scn: Scenario, server: str) -> float:
    """nginx sends one second's worth at once, then a second's worth per second."""
    if server.startswith("nginx"):
        return max(0, math.ceil(scn.size / scn.rate) - 1)
    return scn.size / scn.rate


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def startup_markdown(rows: list[StartupRow]) -> str:
    """The ``startup`` table: each command's median wall, fastest run and CPU."""
    target = TARGETS["version_ms"]
    lines = [
        [
            r.label,
            _num(r.median_ms, 1),
            _num(r.min_ms, 1),
            _num(r.cpu_ms, 1),
            f"<= {target:.0f} ms" if r.label == "midair --version" else "",
            f"FAILED {r.failures}/{r.failures + len(r.walls_s)}" if r.failures else "ok",
        ]
        for r in rows
    ]
    table = _table(
        ["command", "median ms", "fastest ms", "CPU ms", "target (issue 8)", "status"], lines
    )
    return (
        f"### startup\n\nEach command {RUNS} times, interleaved (one of each per round); "
        "median and fastest wall time from exec to exit, median CPU (user + sys). midair "
        "runs as the bench runs it, `python -m midair`.\n\n" + table
    )


def markdown(
    header: str, results: list[ScenarioResult], startup: list[StartupRow] | None = None
) -> str:
    sections = [header] + ([startup_markdown(startup)] if startup else [])
    return "\n\n".join(sections + [scenario_markdown(r) for r in results]) + "\n"


def write_json(
    path: Path,
    meta: dict[str, object],
    results: list[ScenarioResult],
    startup: list[StartupRow] | None = None,
) -> None:
    scenarios = [
        {
            "name": r.scenario.name,
            "params": r.scenario.__dict__ | {"counts": r.scenario.counts},
            "server": r.server,
            "reps": r.reps,
            "floor_s": r.floor_s,
            "ceiling_gbps": r.ceiling_gbps,
            "file_ceiling_gbps": r.file_ceiling_gbps,
            "file_ceiling_by": r.file_ceiling_by,
            "skipped": r.skipped,
            "clock_check": asdict(r.clock) if r.clock else None,
            "durable_publication": durability(r) if not r.scenario.counts else None,
            "runs": [run.as_dict() for run in r.runs],
        }
        for r in results
    ]
    document = {**meta, "startup": [row.as_dict() for row in startup or []], "scenarios": scenarios}
    path.write_text(json.dumps(document, indent=1))
