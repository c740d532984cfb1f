"""``midair status [DIR]``: what a directory's batch journal says about its batch.

Counts by state, failures grouped by reason and by host, bytes, and while a run holds
the journal its rate and ETA (from the bytes done since that run started).  ``--json``
prints one object with at least ``done``, ``failed``, ``queued`` and ``active``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from urllib.parse import urlsplit

from ..core.errors import InputError
from ..journal import STATES, active_run, entries, journal_path, latest_run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TOP = 10  # failure groups shown of each kind


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="what a batch journal says", description=__doc__)
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="download directory")
    p.add_argument("--journal", metavar="FILE", help="the journal file (default: in DIR)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = journal_path(args.dir, args.journal)
    if not os.path.isfile(path):
        raise InputError(f"{args.dir}: no batch journal here ({path}); run get with --journal")
    status = summarize(path)
    print(json.dumps(status) if args.json else _text(status))
    return 0


def summarize(path: str) -> dict[str, Any]:
    """The journal's counts and failure groups, plus rate and ETA while a run is active."""
    holder = active_run(path)
    since = holder[1] if holder is not None else float("inf")
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    hosts: Counter[str] = Counter()
    done_bytes = recent_files = recent_bytes = 0
    for entry in entries(path):
        counts[entry.state] += 1
        done_bytes += entry.bytes
        if entry.state == "done" and entry.updated >= since:  # this run's work
            recent_files += 1
            recent_bytes += entry.bytes
        if entry.state == "failed":
            reasons[entry.reason or "?"] += 1
            hosts[urlsplit(entry.url).hostname or "?"] += 1
    jobs, in_flight = latest_run(path)
    counts["active"] = in_flight if holder is not None else 0
    unsettled = jobs - counts["done"] - counts["failed"] - counts["active"]
    counts["queued"] = max(unsettled, counts["queued"])  # the latest run's jobs not ended
    status: dict[str, Any] = {state: counts[state] for state in STATES}
    status.update(bytes=done_bytes, reasons=dict(reasons.most_common(TOP)))
    status["hosts"] = dict(hosts.most_common(TOP))
    if holder is None:
        status["running"] = None
    else:
        status.update(_progress(holder, recent_files, recent_bytes, counts))
    return status


def _progress(
    holder: tuple[int, float], files: int, done: int, counts: Counter[str]
) -> dict[str, Any]:
    """The active run's PID, files/s and bytes/s since it began (from what it finished),
    and the ETA at that rate for the files left."""
    pid, started = holder
    elapsed = max(time.time() - started, 1e-3)
    files_rate = files / elapsed
    left = counts["queued"] + counts["active"]
    eta = left / files_rate if files_rate else None
    return {"running": pid, "files_per_s": files_rate, "bytes_per_s": done / elapsed, "eta_s": eta}


def _text(status: dict[str, Any]) -> str:
    lines = ["  ".join(f"{state} {status[state]}" for state in STATES)]
    lines.append(f"bytes {status['bytes']}")
    if status["running"] is not None:
        eta = status["eta_s"]
        lines.append(
            f"running: PID {status['running']}, {status['files_per_s']:.1f} files/s, "
            f"{status['bytes_per_s'] / 1e6:.2f} MB/s, ETA "
            + ("unknown" if eta is None else f"{eta:.0f} s")
        )
    lines += [f"failed: {n} x {reason}" for reason, n in status["reasons"].items()]
    lines += [f"failed on {host}: {n}" for host, n in status["hosts"].items()]
    return "\n".join(lines)
