"""The scenarios, their defaults, their ``--quick`` versions and overrides.

    seed   10 x 4 MiB, one per address, 10 addresses at 1 MiB/s
    crowd  1,000 x 256 KiB over 100 addresses at 128 KiB/s, all in flight
    c10k   10,000 x 64 KiB over 100 addresses at 16 KiB/s, all in flight
    bulk   1 x 2 GiB from one unthrottled server: GB/s against the loopback ceiling
    small  20,000 x 8 KiB from one unthrottled server, 100 at a time: files per second
    small-h2  small over TLS and HTTP/2 (ALPN h2): midair, curl --http2 and httpx only;
           nginx only, so run when named, not by default
    split  1 x 256 MiB at 1 MiB/s per connection over 16 connections (-s 16): midair,
           aria2c -x16 -s16 and axel -n 16 only; floor size / (16 x rate); when named
    mirrors  split's clients, 1 x 64 MiB from 3 mirrors (addresses) at 1 MiB/s, 512 KiB/s
           and 256 KiB/s per connection (midair serve: a rate per URL); floor as split's
           on the fastest; when named
    sweep  c10k's files and rate with N = 10, 100, 1,000, 10,000 transfers in flight
           (a point identical to one already run, e.g. N = 10,000 after c10k, reuses it)

Any field can be overridden on the command line: ``crowd:files=2000,rate=64K``
(sizes and rates take K/M/G; ``counts=10/100/1000`` for sweep). ``jobs`` (in
flight at once) defaults to every file, ``per_host`` to an even share of it;
``reps`` to ``--reps`` (so one run can repeat the short scenarios three times
and c10k once: ``c10k:reps=1``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from midair.cli._units import parse_size

__all__ = ["DEFAULTS", "NAMES", "OPT_IN", "QUICK", "Point", "Scenario", "parse_scenario"]

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SEED = "midair-bench-v1"


@dataclass(frozen=True)
class Point:
    """One measured configuration: N files over ``hosts`` addresses, ``jobs`` in flight."""

    files: int
    hosts: int
    jobs: int
    per_host: int


@dataclass(frozen=True)
class Scenario:
    name: str
    files: int
    size: int
    hosts: int
    rate: int  # bytes/s per connection; 0 = unthrottled
    jobs: int = 0  # 0 = all files in flight
    per_host: int = 0  # 0 = jobs spread evenly over the addresses
    timeout: float = 120.0  # seconds per client run
    counts: tuple[int, ...] = ()  # sweep only: the N values
    reps: int = 0  # 0 = --reps
    tls: bool = False  # nginx over TLS with HTTP/2 offered; only clients that can trust it
    split: int = 0  # connections per file (-s): only clients that fetch ranges in parallel
    mirrors: int = 0  # URLs per file, one per address, the k-th at rate / 2**k

    @property
    def throttled(self) -> bool:
        return self.rate > 0

    def points(self) -> list[Point]:
        """One point, or one per N for sweep (over min(N, hosts) addresses)."""
        return [self._point(n) for n in (self.counts or (self.files,))]

    def _point(self, files: int) -> Point:
        hosts = min(files, self.hosts)
        jobs = self.jobs or files
        per_host = self.per_host or max(1, math.ceil(min(jobs, files) / hosts))
        return Point(files, hosts, jobs, per_host)

    def key(self, point: Point) -> tuple[int, ...]:
        """Two points with the same key measure the same thing (sweep's top = c10k)."""
        return (
            point.files,
            point.hosts,
            point.jobs,
            point.per_host,
            self.size,
            self.rate,
            self.tls,
            self.split,
            self.mirrors,
        )

    @property
    def dataset_files(self) -> int:
        return max(self.counts or (self.files,))


DEFAULTS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("seed", 10, 4 * MIB, 10, 1 * MIB, timeout=120),
        Scenario("crowd", 1000, 256 * KIB, 100, 128 * KIB, timeout=120),
        Scenario("c10k", 10_000, 64 * KIB, 100, 16 * KIB, timeout=120),
        Scenario("bulk", 1, 2 * GIB, 1, 0, timeout=120),
        Scenario("small", 20_000, 8 * KIB, 1, 0, jobs=100, per_host=100, timeout=180),
        Scenario("small-h2", 20_000, 8 * KIB, 1, 0, jobs=100, per_host=100, timeout=180, tls=True),
        Scenario("split", 1, 256 * MIB, 1, 1 * MIB, per_host=16, timeout=120, split=16),
        Scenario("mirrors", 1, 64 * MIB, 3, 1 * MIB, per_host=16, split=16, mirrors=3),
        Scenario(
            "sweep", 10_000, 64 * KIB, 100, 16 * KIB, timeout=120, counts=(10, 100, 1000, 10_000)
        ),
    ]
}
NAMES = [s.name for s in DEFAULTS.values() if not (s.tls or s.split)]  # the default run
OPT_IN = [s.name for s in DEFAULTS.values() if s.tls or s.split]  # asked by name

QUICK: dict[str, Scenario] = {
    s.name: s
    for s in [  # each transfer ~1 s on nginx
        Scenario("seed", 4, 48 * KIB, 4, 32 * KIB, timeout=30),
        Scenario("crowd", 200, 12 * KIB, 20, 8 * KIB, timeout=30),
        Scenario("c10k", 400, 6 * KIB, 20, 4 * KIB, timeout=30),
        Scenario("bulk", 1, 64 * MIB, 1, 0, timeout=30),
        Scenario("small", 1000, 8 * KIB, 1, 0, jobs=100, per_host=100, timeout=30),
        Scenario("small-h2", 1000, 8 * KIB, 1, 0, jobs=100, per_host=100, timeout=30, tls=True),
        Scenario("split", 1, 32 * MIB, 1, 512 * KIB, per_host=16, timeout=30, split=16),
        Scenario("mirrors", 1, 8 * MIB, 3, 256 * KIB, per_host=16, timeout=30, split=16, mirrors=3),
        Scenario("sweep", 400, 6 * KIB, 20, 4 * KIB, timeout=30, counts=(10, 400)),
    ]
}

_INTS = {"files", "hosts", "jobs", "per_host", "reps", "split", "mirrors"}
_SIZES = {"size", "rate"}


def parse_scenario(text: str, quick: bool) -> Scenario:
    """``NAME`` or ``NAME:key=value,...`` -> a Scenario; ValueError says what is wrong."""
    name, _, overrides = text.partition(":")
    base = (QUICK if quick else DEFAULTS).get(name)
    if base is None:
        choices = ", ".join(NAMES + OPT_IN)
        raise ValueError(f"unknown scenario {name!r}; choose from {choices}")
    changes: dict[str, Any] = {}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        changes[key.strip()] = _value(name, key.strip(), value.strip())
    return dataclasses.replace(base, **changes)


def _value(scenario: str, key: str, value: str) -> object:
    try:
        if key in _INTS:
            return int(value)
        if key in _SIZES:
            return parse_size(value)
        if key == "timeout":
            return float(value)
        if key == "counts":
            return tuple(int(v) for v in value.split("/"))
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"{scenario}: bad value for {key}: {value!r}") from exc
    known = sorted(_INTS | _SIZES | {"timeout", "counts"})
    raise ValueError(f"{scenario}: unknown field {key!r}; known: {', '.join(known)}")
