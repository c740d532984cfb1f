"""Medians over reps, one Markdown table per scenario (best first), and the JSON.

Medians are taken over a client's passing reps only (a run that failed fast
would otherwise look fast); failures are counted in the status column.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from midair.bench.runner import Run, ScenarioResult
from midair.bench.scenarios import Scenario

__all__ = ["Row", "markdown", "rows_for", "write_json"]


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
    of_ceiling: float | None = None  # throughput / loopback ceiling (bulk)
    gbps: float | None = None
    files_per_s: float | None = None

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
    rows = [_row(result, [r for r in runs if r.client == c])
            for c in dict.fromkeys(r.client for r in runs)]
    return sorted(rows, key=_sort_key)


def _row(result: ScenarioResult, mine: Sequence[Run]) -> Row:
    first = mine[0]
    row = Row(first.client, first.version, first.files, first.in_flight, _status(mine))
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
    elif result.ceiling:
        row.of_ceiling = row.gbps / result.ceiling
    return row


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


def _table(head: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in lines]
    return "\n".join(out)


def throttled_table(rows: list[Row]) -> str:
    head = ["client", "version", "wall s", "x floor", "CPU s", "CPU ms/file", "peak RSS MiB",
            "RSS KiB/transfer", "in flight", "status"]
    return _table(head, [[r.client, r.version, _num(r.wall_s, 2), _num(r.ratio, 2, "x"),
                          _num(r.cpu_s, 2), _num(r.cpu_ms_per_file, 2), _num(r.rss_mib, 1),
                          _num(r.rss_kib_per_transfer, 1), str(r.in_flight), r.status]
                         for r in rows])


def bulk_table(rows: list[Row]) -> str:
    head = ["client", "version", "wall s", "GB/s", "% of ceiling", "CPU s", "peak RSS MiB",
            "status"]
    return _table(head, [[r.client, r.version, _num(r.wall_s, 2), _num(r.gbps, 2),
                          _pct(r.of_ceiling), _num(r.cpu_s, 2), _num(r.rss_mib, 1),
                          r.status] for r in rows])


def small_table(rows: list[Row]) -> str:
    head = ["client", "version", "wall s", "files/s", "CPU s", "CPU ms/file", "peak RSS MiB",
            "status"]
    return _table(head, [[r.client, r.version, _num(r.wall_s, 2), _num(r.files_per_s, 0),
                          _num(r.cpu_s, 2), _num(r.cpu_ms_per_file, 3), _num(r.rss_mib, 1),
                          r.status] for r in rows])


SWEEP_METRICS: list[tuple[str, Callable[[Row], float | None], int]] = [
    ("wall s", lambda r: r.wall_s, 2),
    ("x floor", lambda r: r.ratio, 2),
    ("CPU ms per file", lambda r: r.cpu_ms_per_file, 2),
    ("peak RSS KiB per transfer", lambda r: r.rss_kib_per_transfer, 0),
]


def sweep_tables(result: ScenarioResult) -> str:
    """One table per measure: a row per client, a column per N."""
    counts = sorted({r.files for r in result.runs})
    by_n = {n: {row.client: row for row in rows_for(result, n)} for n in counts}
    order = list(by_n[counts[-1]]) if counts else []
    parts = []
    for title, get, digits in SWEEP_METRICS:
        lines = [[c] + [_cell(by_n[n].get(c), get, digits) for n in counts] for c in order]
        parts.append(f"**{title}**\n\n" + _table(["client"] + [f"N={n:,}" for n in counts],
                                                   lines))
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
    if scn.counts:
        parts.append(sweep_tables(result))
    elif scn.throttled:
        parts.append(throttled_table(rows_for(result)))
    elif scn.files == 1:
        parts.append(bulk_table(rows_for(result)))
    else:
        parts.append(small_table(rows_for(result)))
    failed = [r for r in result.runs if r.status == "FAILED"]
    parts += [f"Failed runs: {len(failed)} (details in the JSON)."] if failed else []
    return "\n\n".join(parts)


def describe(result: ScenarioResult) -> str:
    scn = result.scenario
    what = (f"N = {', '.join(f'{n:,}' for n in scn.counts)} files" if scn.counts
            else f"{scn.files:,} file{'s' if scn.files > 1 else ''}")
    rate = f"{size_text(scn.rate)}/s per connection" if scn.throttled else "unthrottled"
    where = f"{scn.hosts} address{'es' if scn.hosts > 1 else ''}"
    text = f"{what} x {size_text(scn.size)} over {where}, {rate}, server: {result.server}."
    point = scn.points()[-1]
    text += f" In flight: {point.jobs:,} (per host {point.per_host})." if not scn.counts else (
        " All N in flight, over min(N, addresses) addresses.")
    if result.floor:
        text += (f" Floor (one file alone, curl): {result.floor:.2f} s "
                 f"(expected {expected_floor(scn, result.server):.2f} s).")
    if result.ceiling:
        text += f" Loopback ceiling (one plain socket, no disk): {result.ceiling:.2f} GB/s."
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


def markdown(header: str, results: list[ScenarioResult]) -> str:
    return "\n\n".join([header] + [scenario_markdown(r) for r in results]) + "\n"


def write_json(path: Path, meta: dict[str, object], results: list[ScenarioResult]) -> None:
    scenarios = [{
        "name": r.scenario.name, "params": r.scenario.__dict__ | {"counts": r.scenario.counts},
        "server": r.server, "floor_s": r.floor_s, "ceiling_gbps": r.ceiling_gbps,
        "skipped": r.skipped, "runs": [run.as_dict() for run in r.runs],
    } for r in results]
    path.write_text(json.dumps({**meta, "scenarios": scenarios}, indent=1))
