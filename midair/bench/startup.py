"""``startup``: how long a client takes to start and exit doing nothing.

For a handful of files a client's own start-up is much of its wall time, so
the bench times ``midair --version`` and ``midair get --help`` beside the
peers' ``--version`` and the bare interpreter (``python -c pass``, what any
Python client pays before its first import). The runs are interleaved, one of
each command per round, so a noisy moment hurts all of them alike; the median
of ``RUNS`` is reported, with the minimum.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from midair.bench.measure import Measurement, run_measured

__all__ = ["RUNS", "StartupRow", "measure_startup", "startup_commands"]

RUNS = 10
_TIMEOUT = 30.0


@dataclass
class StartupRow:
    """One command's runs: wall and CPU per run, and whether each exited 0."""

    label: str
    argv: list[str]
    walls_s: list[float] = field(default_factory=list)
    cpus_s: list[float] = field(default_factory=list)
    failures: int = 0

    def add(self, m: Measurement) -> None:
        if m.exit_code != 0 or m.timed_out:
            self.failures += 1
            return
        self.walls_s.append(m.wall_s)
        self.cpus_s.append(m.cpu_s)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.walls_s) * 1000 if self.walls_s else None

    @property
    def min_ms(self) -> float | None:
        return min(self.walls_s) * 1000 if self.walls_s else None

    @property
    def cpu_ms(self) -> float | None:
        return statistics.median(self.cpus_s) * 1000 if self.cpus_s else None

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "argv": self.argv,
            "walls_s": self.walls_s,
            "cpus_s": self.cpus_s,
            "failures": self.failures,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "cpu_ms": self.cpu_ms,
        }


def startup_commands() -> dict[str, list[str]]:
    """label -> argv, for midair (as the bench runs it) and each installed peer."""
    midair = [sys.executable, "-m", "midair"]
    commands = {
        "midair --version": [*midair, "--version"],
        "midair get --help": [*midair, "get", "--help"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    for tool in ("curl", "wget2", "aria2c"):
        path = shutil.which(tool)
        if path:
            commands[f"{tool} --version"] = [path, "--version"]
    return commands


def measure_startup(work: Path, runs: int = RUNS) -> list[StartupRow]:
    """Every command ``runs`` times, round-robin."""
    rows = [StartupRow(label, argv) for label, argv in startup_commands().items()]
    work.mkdir(parents=True, exist_ok=True)
    for _ in range(runs):
        for row in rows:
            row.add(run_measured(row.argv, _TIMEOUT, work / "startup.log"))
    return rows
