"""Reusable benchmark pieces: data sets, measured client runs, verification, tables.

Why a harness: every scenario (and later ``midair bench``) must measure peers the
same way, or the ratios mean nothing. So one place decides how a data set is made
and checked, how a client is run (own process group, time limit, rusage of exactly
that child), what counts as a failure (non-zero exit, timeout, or any file
missing or wrong), and how results are summed up (medians, ratio to a floor).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"


# --- data sets ---------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """Files under ``root`` with their sha256, as recorded in the manifest."""

    root: Path
    size: int
    sha256: dict[str, str]


def _content(seed: str, index: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes: same seed, same files, on every machine."""
    return random.Random(f"{seed}:{index}").randbytes(size)


def make_dataset(root: Path, count: int, size: int, seed: str) -> Dataset:
    """Generate ``count`` files of ``size`` bytes once; later calls reuse the cache.

    The manifest is written last (atomically), so a half-made cache is never
    mistaken for a whole one; it is remade when the parameters change.
    """
    wanted = {"count": count, "size": size, "seed": seed}
    cached = _load_manifest(root, wanted)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    for i in range(count):
        name = f"f{i:05d}.bin"
        data = _content(seed, i, size)
        (root / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({**wanted, "sha256": sums}, indent=0))
    tmp.replace(root / MANIFEST)
    return Dataset(root, size, sums)


def _load_manifest(root: Path, wanted: dict[str, object]) -> Dataset | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if any(data.get(k) != v for k, v in wanted.items()):
        return None
    sums: dict[str, str] = data["sha256"]
    size = int(data["size"])
    if not all(_size(root / name) == size for name in sums):
        return None
    return Dataset(root, size, sums)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


# --- verification ------------------------------------------------------------

@dataclass(frozen=True)
class Verification:
    """What a client left in its output directory, compared with the manifest."""

    ok: int
    missing: list[str]
    wrong: list[str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.wrong


def verify(out_dir: Path, expected: dict[str, str]) -> Verification:
    """sha256 every expected file: a fast client that writes wrong bytes has failed."""
    ok, missing, wrong = 0, [], []
    for name, digest in sorted(expected.items()):
        path = out_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() == digest:
                ok += 1
            else:
                wrong.append(name)
    return Verification(ok, missing, wrong)


# --- measured runs -----------------------------------------------------------

@dataclass
class Measurement:
    """One child process: wall time, its own CPU and peak RSS (from wait4)."""

    argv: list[str]
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mib: float
    exit_code: int
    timed_out: bool
    output_tail: str = ""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: 1,000 sockets need more than 1,024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_measured(argv: Sequence[str], timeout: float, log: Path,
                 cwd: Path | None = None) -> Measurement:
    """Run ``argv`` in its own process group; kill the group after ``timeout`` s.

    ``os.wait4`` gives the rusage of this child (and whatever it reaped), not of
    everything the benchmark ever started, so CPU and RSS belong to the client.
    """
    timed_out = threading.Event()
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, process_group=0)

    def expire() -> None:
        timed_out.set()
        _kill_group(proc.pid)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # stragglers the client left in its group
    return Measurement(
        argv=list(argv), wall_s=wall, user_s=usage.ru_utime, sys_s=usage.ru_stime,
        maxrss_mib=usage.ru_maxrss / 1024, exit_code=proc.returncode,
        timed_out=timed_out.is_set(), output_tail=_tail(log),
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, limit: int = 2000) -> str:
    data = path.read_bytes()
    return data[-limit:].decode(errors="replace")


def tool_version(argv: Sequence[str]) -> str:
    """Version number from the first line of ``--version``, or '?' when it cannot say."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    if done.returncode != 0 or not lines:
        return "?"
    number = re.search(r"\d+(?:\.\d+)+", lines[0])
    return number.group(0) if number else lines[0].strip()[:40]


# --- clients -----------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """What a client is asked to do: these URLs (aria2-style list file) into ``out``."""

    urls: list[str]
    names: list[str]
    list_file: Path
    out: Path
    jobs: int
    per_host: int


@dataclass(frozen=True)
class Client:
    """How to run one peer in batch mode, as fast as its own options allow."""

    name: str
    binary: Callable[[], str | None]
    command: Callable[[Job], list[str]]
    version_argv: Callable[[str], list[str]]
    note: str = ""


def _midair_cmd(job: Job) -> list[str]:
    return [sys.executable, "-m", "midair", "get", "-j", str(job.jobs),
            "--per-host", str(job.per_host), "-q", "-i", str(job.list_file),
            "-d", str(job.out)]


def _curl_cmd(job: Job) -> list[str]:
    """curl takes the URL/output pairs from a config file (-K): no argv length limit."""
    config = job.list_file.with_suffix(".curl")
    config.write_text("".join(f'url = "{u}"\noutput = "{job.out / n}"\n'
                              for u, n in zip(job.urls, job.names, strict=True)))
    return ["curl", "-q", "--parallel", "--parallel-immediate", "--parallel-max",
            str(job.jobs), "--fail", "-sS", "-K", str(config)]


def _aria2_cmd(job: Job) -> list[str]:
    return ["aria2c", "-i", str(job.list_file), "-d", str(job.out), "-j", str(job.jobs),
            "-x", "1", "-s", "1", "--file-allocation=none", "--quiet=true",
            "--console-log-level=error", "--summary-interval=0",
            "--auto-file-renaming=false", "--allow-overwrite=true", "--no-conf=true"]


def _wget2_cmd(job: Job) -> list[str]:
    return ["wget2", "--no-config", "-q", "--progress=none", "--max-threads",
            str(job.jobs), "-i", str(job.list_file), "-P", str(job.out),
            "--no-hsts", "--no-hpkp", "--no-netrc"]


def _which(name: str) -> Callable[[], str | None]:
    return lambda: shutil.which(name)


CLIENTS: dict[str, Client] = {c.name: c for c in [
    Client("midair", lambda: sys.executable, _midair_cmd,
           lambda _: [sys.executable, "-m", "midair", "--version"]),
    Client("curl", _which("curl"), _curl_cmd, lambda b: [b, "--version"],
           note="no per-host cap before curl 8.16 (--parallel-max-host); "
                "--parallel-max capped at 300 before curl 8.16"),
    Client("aria2c", _which("aria2c"), _aria2_cmd, lambda b: [b, "--version"],
           note="-x is per download, so no cross-download per-host cap"),
    Client("wget2", _which("wget2"), _wget2_cmd, lambda b: [b, "--version"],
           note="no per-host cap"),
]}


def write_list(path: Path, urls: Sequence[str]) -> None:
    """The input list every list-reading client shares: one URL a line."""
    path.write_text("".join(u + "\n" for u in urls))


# --- results -----------------------------------------------------------------

@dataclass
class Run:
    """One client run, measured and verified; what ``--json`` dumps."""

    client: str
    version: str
    rep: int
    measurement: Measurement | None
    verified_ok: int = 0
    missing: int = 0
    wrong: int = 0
    status: str = "ok"
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.measurement is not None:
            data["measurement"]["cpu_s"] = self.measurement.cpu_s
        return data


def judge(run: Run, check: Verification) -> Run:
    """FAILED on timeout, non-zero exit, or any missing/wrong file; say which."""
    m = run.measurement
    assert m is not None
    run.verified_ok, run.missing, run.wrong = check.ok, len(check.missing), len(check.wrong)
    problems = []
    if m.timed_out:
        problems.append(f"timed out after {m.wall_s:.0f}s")
    if m.exit_code != 0:
        problems.append(f"exit {m.exit_code}")
    if check.missing:
        problems.append(f"{len(check.missing)} missing")
    if check.wrong:
        problems.append(f"{len(check.wrong)} wrong")
    if problems:
        run.status = "FAILED"
        last = m.output_tail.strip().splitlines()[-1:] if m.output_tail.strip() else []
        run.detail = ", ".join(problems) + (f": {last[0][:100]}" if last else "")
    return run


@dataclass
class Row:
    """Medians of one client's reps, as one table line."""

    client: str
    version: str
    wall_s: float | None
    ratio: float | None
    cpu_s: float | None
    rss_mib: float | None
    status: str
    notes: list[str] = field(default_factory=list)


def summarize(runs: Sequence[Run], floor_s: float | None) -> list[Row]:
    """One row per client: medians over its passing reps only, since a run that
    failed fast would otherwise look fast. Failures are counted in the status."""
    rows = []
    for client in dict.fromkeys(r.client for r in runs):
        mine = [r for r in runs if r.client == client]
        ms = [r.measurement for r in mine if r.status == "ok" and r.measurement is not None]
        failed = [r for r in mine if r.status != "ok"]
        wall = statistics.median(m.wall_s for m in ms) if ms else None
        rows.append(Row(
            client=client, version=mine[0].version, wall_s=wall,
            ratio=wall / floor_s if wall is not None and floor_s else None,
            cpu_s=statistics.median(m.cpu_s for m in ms) if ms else None,
            rss_mib=statistics.median(m.maxrss_mib for m in ms) if ms else None,
            status=_status(failed, len(mine)),
        ))
    return rows


def _status(failed: Sequence[Run], total: int) -> str:
    if not failed:
        return "ok"
    first = failed[0]
    if first.status == "SKIPPED":
        return f"SKIPPED: {first.detail}"
    return f"FAILED {len(failed)}/{total}: {first.detail}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The Markdown table the benchmark prints (and a README can paste)."""
    head = ["client", "version", "wall s", "ratio to floor", "CPU s", "peak RSS MiB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.client, r.version, _num(r.wall_s, 2), _num(r.ratio, 2, "x"),
                 _num(r.cpu_s, 2), _num(r.rss_mib, 1), r.status.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float | None, digits: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"
