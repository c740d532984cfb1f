"""Running a scenario: data, server, the floor or ceiling, then every client x rep.

The ideal a client is compared with is measured in the same run, on the same
server, so ratios do not depend on the machine:

- throttled scenarios: the *floor*, one file alone fetched by one curl (or by
  ``midair get -j 1`` when curl is missing). With nginx this is shorter than
  size/rate: ``limit_rate`` lets the first second's worth of bytes out at once
  and then paces, so a file of S bytes at R bytes/s takes about S/R - 1 s
  (3 s, not 4, for 4 MiB at 1 MiB/s). ``midair serve`` paces from the first
  byte (about S/R). ratio = wall / floor; 1.00x means every file took as long
  as one file alone, i.e. all were in the air at once with no overhead.
- bulk: the *ceilings* (``midair.bench.ceiling``), the same file read over one
  plain socket by the bench itself (no parsing, no file): what loopback and the
  server can give one connection, read twice and the better kept, so the file
  is in the page cache as it is for every client after the first; and the same
  again written into a new file in the downloads directory (no fsync) by each
  plain writer, the best kept: what any downloader could reach there. Each
  ceiling is the best of every rep; "% of ceiling" is against the new-file one.

On a memory file system every measured writer (client or ceiling) starts right
after the bench wrote and deleted as many bytes there (``downloads.prefault``):
in a VM, memory freed seconds earlier may have gone back to the host, and
writing into it cost up to 5x the CPU, whoever wrote.

A run fails when it times out (it is then killed by process group), exits
non-zero, or leaves any file missing or different from the manifest. Neither a
run that timed out nor a one-at-a-time client is repeated in later reps. Each run
also gets its start-up and exit costs from the server's log
(``midair.bench.timeline``), whose clock is checked once per scenario.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from midair.bench.ceiling import WRITERS, measure_ceiling
from midair.bench.clients import Client, Job
from midair.bench.data import Dataset, Verification, into_page_cache, make_dataset, verify
from midair.bench.downloads import prefault
from midair.bench.measure import Measurement, run_measured
from midair.bench.scenarios import SEED, Point, Scenario
from midair.bench.servers import Served, serve
from midair.bench.timeline import ClockCheck, Timing, check_clock, collect

__all__ = ["Context", "Run", "ScenarioResult", "run_scenario"]

SEQUENTIAL_BUDGET = 90.0  # seconds a one-at-a-time client may need before it is skipped
_SETTLE = 0.1  # seconds between runs, for the last client's sockets to close
_FD_MARGIN = 256  # descriptors a client needs beyond one per transfer


@dataclass
class Context:
    """What every scenario shares: where, against what, how often, how reported."""

    server: str
    cache: Path
    work: Path
    reps: int
    clients: dict[str, Client]
    versions: dict[str, str | None]
    nofile: int
    timeout: float | None = None
    nginx_workers: int = 1
    prefault: bool = False  # downloads on a memory fs: back a run's bytes first (downloads)
    done: dict[tuple[int, ...], list[Run]] = field(default_factory=dict)  # by Scenario.key
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)


@dataclass
class Run:
    """One client run at one point, measured and verified: a line of the JSON."""

    scenario: str
    files: int
    client: str
    version: str
    rep: int
    in_flight: int
    bytes: int
    measurement: Measurement | None
    verified_ok: int = 0
    missing: int = 0
    wrong: int = 0
    status: str = "ok"  # ok | FAILED | SKIPPED
    detail: str = ""
    reused_from: str = ""  # the scenario that measured this identical point
    timing: Timing | None = None  # start-up and exit costs, from the server's log
    reference: bool = False  # a measuring loop beside the clients (Client.reference)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.measurement is not None:
            data["measurement"]["cpu_s"] = self.measurement.cpu_s
        return data


@dataclass
class ScenarioResult:
    scenario: Scenario
    server: str
    floor_s: list[float] = field(default_factory=list)
    ceiling_gbps: list[float] = field(default_factory=list)  # socket only
    file_ceiling_gbps: list[float] = field(default_factory=list)  # socket -> a new file
    file_ceiling_by: dict[str, list[float]] = field(default_factory=dict)  # each writer's
    runs: list[Run] = field(default_factory=list)
    skipped: str = ""
    clock: ClockCheck | None = None
    reps: int = 1

    @property
    def floor(self) -> float | None:
        return statistics.median(self.floor_s) if self.floor_s else None

    # A ceiling is the best the run saw, not a typical rep: on a shared machine a rep's
    # ceiling can land in a busy second that the clients' median then beats.
    @property
    def ceiling(self) -> float | None:
        return max(self.ceiling_gbps, default=None)

    @property
    def file_ceiling(self) -> float | None:
        return max(self.file_ceiling_gbps, default=None)


def run_scenario(scn: Scenario, ctx: Context) -> ScenarioResult:
    """Every point x rep x client of one scenario, against one server."""
    result = ScenarioResult(scn, ctx.server, reps=scn.reps or ctx.reps)
    points = [p for p in scn.points() if not _too_many_fds(p, ctx, result)]
    if not points:
        return result
    ctx.say(f"[{scn.name}] data: {scn.dataset_files} x {scn.size} bytes in {ctx.cache}")
    data = make_dataset(ctx.cache, scn.dataset_files, scn.size, SEED)
    work = ctx.work / scn.name
    work.mkdir(parents=True, exist_ok=True)
    hosts = max(scn.mirrors, *(p.hosts for p in points))  # each mirror its own address
    workers = nginx_workers(points, ctx)
    ca, tls = _certificate(work, hosts) if scn.tls else (None, None)
    kind = "midair" if scn.mirrors else ctx.server  # a rate per URL: midair serve's query
    with serve(kind, data.root, hosts, scn.rate, work, workers, tls) as served:
        result.server = served.kind + (
            f" ({workers} workers)" if served.kind == "nginx" and workers != 1 else ""
        )
        result.clock = check_clock(served.log, served.url(0, "midair-bench-clock-probe?rate=0"))
        for rep in range(result.reps):
            _baseline(scn, served, data, ctx, result)
            for point in points:
                result.runs += _reused(scn, point, rep, ctx) or _run_point(
                    scn, point, rep, served, data, work, ctx, result, ca
                )
    return result


def _certificate(work: Path, hosts: int) -> tuple[Path, tuple[Path, Path]]:
    """A private CA and a certificate for the served addresses (trustme: a test extra)."""
    import trustme

    from midair.serve.server import loopback_hosts

    ca = trustme.CA()
    cert = ca.issue_cert(*loopback_hosts(hosts))
    paths = work / "ca.pem", work / "cert.pem", work / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.cert_chain_pems[0].write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths[0], (paths[1], paths[2])


def _reused(scn: Scenario, point: Point, rep: int, ctx: Context) -> list[Run]:
    """The runs of an identical point measured earlier in this bench (same rep)."""
    earlier = [r for r in ctx.done.get(scn.key(point), []) if r.rep == rep]
    if earlier:
        ctx.say(f"[{scn.name}] N={point.files}: same point as {earlier[0].scenario}, reused")
    return [dataclasses.replace(r, scenario=scn.name, reused_from=r.scenario) for r in earlier]


def nginx_workers(points: list[Point], ctx: Context) -> int:
    """Enough nginx workers that none needs more descriptors than RLIMIT_NOFILE allows.

    An nginx worker holds two per connection (the socket and the file it sends),
    so 10,000 connections need two workers under a 20,000 hard limit (the
    listening sockets then use ``reuseport`` so the kernel splits them evenly).
    """
    connections = max(min(p.jobs, p.files) for p in points)
    needed = math.ceil((2 * connections + 4 * _FD_MARGIN) / ctx.nofile)
    return max(ctx.nginx_workers, needed) if ctx.nginx_workers > 0 else 0


def _too_many_fds(point: Point, ctx: Context, result: ScenarioResult) -> bool:
    needed = point.jobs + _FD_MARGIN
    if ctx.nofile >= needed:
        return False
    reason = (
        f"N={point.files} needs ~{needed} open files, RLIMIT_NOFILE hard limit is "
        f"{ctx.nofile} (raise it: ulimit -Hn)"
    )
    result.skipped = "; ".join(filter(None, [result.skipped, reason]))
    ctx.say(f"[{result.scenario.name}] SKIPPED {reason}")
    return True


def _baseline(
    scn: Scenario, served: Served, data: Dataset, ctx: Context, result: ScenarioResult
) -> None:
    """The floor (throttled) or the loopback ceilings (bulk), once per rep; each writer
    into memory that is ready as it is for the clients (``_ready``)."""
    work = ctx.work / scn.name
    if scn.split:  # what N connections at the rate take: one alone would take N times as long
        result.floor_s.append(scn.size / (scn.split * scn.rate))
    elif scn.throttled:
        result.floor_s.append(measure_floor(served.url(0, data.names[0]), work, scn.timeout))
    elif scn.files == 1:  # twice, best kept: the first read may come from disk, not cache
        url = served.url(0, data.names[0])
        result.ceiling_gbps.append(max(measure_ceiling(url, scn.timeout) for _ in range(2)))
        by = {}
        for writer in WRITERS:
            _ready(ctx, scn.size)
            by[writer] = measure_ceiling(url, scn.timeout, work / "ceiling.bin", writer)
        for writer, gbps in by.items():
            result.file_ceiling_by.setdefault(writer, []).append(gbps)
        result.file_ceiling_gbps.append(max(by.values()))


def measure_floor(url: str, work: Path, timeout: float) -> float:
    """One file alone, by one curl (or midair -j 1): the best any client can do per file."""
    if shutil.which("curl"):
        argv = ["curl", "-q", "-sS", "--fail", "-o", os.devnull, url]
    else:
        argv = [
            sys.executable,
            "-m",
            "midair",
            "get",
            "-j",
            "1",
            "-q",
            "--overwrite",
            "-d",
            str(work / "floor"),
            url,
        ]
    m = run_measured(argv, timeout, work / "floor.log")
    if m.exit_code != 0 or m.timed_out:
        raise RuntimeError(f"floor download of {url} failed: {m.output_tail.strip()[-300:]}")
    return m.wall_s


def _run_point(
    scn: Scenario,
    point: Point,
    rep: int,
    served: Served,
    data: Dataset,
    work: Path,
    ctx: Context,
    result: ScenarioResult,
    ca: Path | None = None,
) -> list[Run]:
    names = data.names[: point.files]
    lines = [_sources(scn, served, i % point.hosts, name) for i, name in enumerate(names)]
    urls = [line[0] for line in lines]
    list_file = work / f"urls-{point.files}.txt"
    list_file.write_text("".join("\t".join(line) + "\n" for line in lines))  # aria2's format
    expected = data.subset(point.files)
    runs = []
    for name, client in _rotated(list(ctx.clients.items()), rep):
        elsewhere = bool(client.only) and scn.name not in client.only
        if elsewhere or (scn.tls and not client.tls) or (scn.split and not client.splits):
            continue
        if _not_repeated(name, client, point, rep, result):
            continue
        out = work / f"{name}-{point.files}-{rep}"
        mirrors = lines if scn.mirrors else None
        job = Job(urls, list_file, out, point.jobs, point.per_host, ca, scn.split, mirrors)
        into_page_cache(data.root, names)  # the server sends from memory to everyone (data)
        runs.append(_run_client(scn, point, rep, name, client, job, expected, served, ctx, result))
    ctx.done.setdefault(scn.key(point), []).extend(runs)
    return runs


def _sources(scn: Scenario, served: Served, host: int, name: str) -> list[str]:
    """A file's URL, or (mirrors) one per address, the k-th at half the (k-1)-th's rate."""
    if not scn.mirrors:
        return [served.url(host, name)]
    return [served.url(k, name) + f"?rate={scn.rate >> k}" for k in range(scn.mirrors)]


def _rotated(clients: list[tuple[str, Client]], rep: int) -> list[tuple[str, Client]]:
    """Each rep starts with the next client.  The first run after the ceiling (or after
    the last rep's slowest client) was measured 2x slower in bulk, whoever it was: in a
    fixed order one client took that penalty in every rep, and its median with it."""
    shift = rep % len(clients) if clients else 0
    return clients[shift:] + clients[:shift]


def _not_repeated(
    name: str, client: Client, point: Point, rep: int, result: ScenarioResult
) -> bool:
    """After the first rep, skip a one-at-a-time client (its wall time is already a sum
    over every file, so a repeat adds little but minutes) and a client that timed out."""
    if rep == 0:
        return False
    mine = [r for r in result.runs if r.client == name and r.files == point.files]
    return client.sequential or any(
        r.measurement is not None and r.measurement.timed_out for r in mine
    )


def _run_client(
    scn: Scenario,
    point: Point,
    rep: int,
    name: str,
    client: Client,
    job: Job,
    expected: dict[str, str],
    served: Served,
    ctx: Context,
    result: ScenarioResult,
) -> Run:
    version = ctx.versions.get(name)
    run = Run(
        scn.name,
        point.files,
        name,
        version or "missing",
        rep,
        client.in_flight(point.files, point.jobs, version or ""),
        point.files * scn.size,
        None,
        reference=client.reference,
    )
    reason = _skip_reason(scn, point, client, version, result.floor, ctx.timeout or scn.timeout)
    if reason:
        run.status, run.detail = "SKIPPED", reason
        return run
    job.out.mkdir(parents=True)
    timeout = _timeout(scn, point, client, result.floor, ctx)
    _ready(ctx, run.bytes)
    run.measurement = m = run_measured(client.command(job), timeout, Path(f"{job.out}.log"))
    run.timing = collect(served.log, m.started_at, m.ended_at, point.files)
    judge(run, verify(job.out, expected))
    shutil.rmtree(job.out, ignore_errors=True)
    label = f"N={point.files} " if scn.counts else ""
    ctx.say(
        f"[{scn.name}] {label}{name} rep {rep + 1}: {m.wall_s:.2f} s{_costs(run.timing)} "
        f"{run.status} {run.detail}".rstrip()
    )
    time.sleep(_SETTLE)
    return run


def _ready(ctx: Context, size: int) -> None:
    """Just before a measured write of ``size`` bytes: on a memory fs, memory that the
    host backs for every writer alike (``downloads.prefault``)."""
    if ctx.prefault:
        prefault(ctx.work, size)


def _costs(timing: Timing | None) -> str:
    """`` (first request 180 ms, exit 35 ms)`` for the progress line, or nothing."""
    parts = [
        f"{label} {value:.0f} ms"
        for label, value in [
            ("first request", timing and timing.first_request_ms),
            ("exit", timing and timing.exit_ms),
        ]
        if value is not None
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _skip_reason(
    scn: Scenario,
    point: Point,
    client: Client,
    version: str | None,
    floor: float | None,
    timeout: float,
) -> str:
    if version is None:
        return "not installed"
    if client.sequential and scn.throttled and floor is not None:
        estimate = point.files * floor
        if estimate > min(SEQUENTIAL_BUDGET, timeout / 3):
            return f"one at a time would take ~{estimate:.0f} s ({point.files} x floor)"
    return ""


def _timeout(
    scn: Scenario, point: Point, client: Client, floor: float | None, ctx: Context
) -> float:
    base = ctx.timeout or scn.timeout
    if client.sequential and floor is not None:
        return max(base, point.files * floor * 1.5 + 20)
    return base


def judge(run: Run, check: Verification) -> Run:
    """FAILED on timeout, non-zero exit, or any missing/wrong file; say which."""
    m = run.measurement
    assert m is not None
    run.verified_ok, run.missing, run.wrong = check.ok, len(check.missing), len(check.wrong)
    problems = [f"timed out after {m.wall_s:.0f} s"] if m.timed_out else []
    problems += [f"exit {m.exit_code}"] if m.exit_code != 0 and not m.timed_out else []
    problems += [f"{run.missing} missing"] if run.missing else []
    problems += [f"{run.wrong} wrong"] if run.wrong else []
    if problems:
        run.status = "FAILED"
        last = m.output_tail.strip().splitlines()[-1:]
        run.detail = ", ".join(problems) + (f": {last[0][:120]}" if last else "")
    return run
