"""Every client the bench can run, each with the batch flags its docs recommend.

A client turns a ``Job`` (these URLs, one per line in ``list_file``, into
``out``, this many in flight, this many per host) into a command line. Peers:
curl ``--parallel``, aria2c, wget2, a sequential curl loop, and the Python
libraries in ``midair.bench.peers``; midair appears once per engine as
``midair-ENGINE``. Each is used only if installed; versions are recorded.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from midair.bench.measure import package_version, tool_version

__all__ = ["CURL_PARALLEL_CAP", "PEERS", "Client", "Job", "engine_clients", "select_clients"]

CURL_PARALLEL_CAP = 300  # curl clamps --parallel-max to 300 before 8.16


@dataclass(frozen=True)
class Job:
    """What a client is asked to do: these URLs into ``out``."""

    urls: list[str]
    list_file: Path
    out: Path
    jobs: int
    per_host: int


@dataclass(frozen=True)
class Client:
    """How to run one client in batch mode, as fast as its own options allow."""

    name: str
    command: Callable[[Job], list[str]]
    version: Callable[[], str | None]  # None = not installed
    sequential: bool = False  # one transfer at a time, whatever ``jobs`` says
    only: tuple[str, ...] = ()  # scenarios it runs in (empty = all)
    cap: Callable[[str], int | None] = lambda version: None  # most it keeps in flight
    note: str = ""

    def in_flight(self, files: int, jobs: int, version: str) -> int:
        """How many transfers this client really keeps in the air for this job."""
        wanted = 1 if self.sequential else min(files, jobs)
        cap = self.cap(version)
        return min(wanted, cap) if cap else wanted


def _curl_cmd(job: Job) -> list[str]:
    """curl reads URL/output pairs from a config file (-K): no argv length limit."""
    config = job.list_file.with_suffix(".curl")
    config.write_text("".join(f'url = "{u}"\noutput = "{job.out / _name(u)}"\n'
                              for u in job.urls))
    return ["curl", "-q", "--parallel", "--parallel-immediate", "--parallel-max",
            str(job.jobs), "--fail", "-sS", "-K", str(config)]


def _curl_loop_cmd(job: Job) -> list[str]:
    """What many scripts do: one curl process per file, one after another."""
    script = ('while IFS= read -r u; do '
              'curl -q -sS --fail -o "$2/${u##*/}" "$u" || exit 1; done <"$1"')
    return ["sh", "-c", script, "curl-loop", str(job.list_file), str(job.out)]


def _aria2_cmd(job: Job) -> list[str]:
    return ["aria2c", "-i", str(job.list_file), "--deferred-input=true", "-d", str(job.out),
            "-j", str(job.jobs), "-x", "1", "-s", "1", "--file-allocation=none",
            "--quiet=true", "--console-log-level=error", "--summary-interval=0",
            "--auto-file-renaming=false", "--allow-overwrite=true", "--no-conf=true"]


def _wget2_cmd(job: Job) -> list[str]:
    return ["wget2", "--no-config", "-q", "--progress=none", "--max-threads", str(job.jobs),
            "-i", str(job.list_file), "-P", str(job.out), "--no-hsts", "--no-hpkp",
            "--no-netrc"]


def _python_peer(module: str) -> Callable[[Job], list[str]]:
    def command(job: Job) -> list[str]:
        return [sys.executable, "-m", f"midair.bench.peers.{module}", str(job.list_file),
                str(job.out), "--concurrency", str(job.jobs), "--per-host", str(job.per_host)]
    return command


def _binary_version(name: str) -> Callable[[], str | None]:
    def version() -> str | None:
        path = shutil.which(name)
        return tool_version([path, "--version"]) if path else None
    return version


def _package(dist: str, *needs: str) -> Callable[[], str | None]:
    def version() -> str | None:
        if any(package_version(n) is None for n in needs):
            return None
        return package_version(dist)
    return version


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _curl_cap(version: str) -> int | None:
    """300 for curl < 8.16, none after (it lifted the clamp)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return CURL_PARALLEL_CAP if found and (int(found[1]), int(found[2])) < (8, 16) else None


PEERS: dict[str, Client] = {c.name: c for c in [
    Client("curl", _curl_cmd, _binary_version("curl"), cap=_curl_cap,
           note="--parallel: no per-host cap before 8.16 (--parallel-max-host); "
                "--parallel-max clamped to 300 before 8.16"),
    Client("aria2c", _aria2_cmd, _binary_version("aria2c"),
           note="-j N -x 1 -s 1: -x is per download, so no cross-download per-host cap"),
    Client("wget2", _wget2_cmd, _binary_version("wget2"),
           note="--max-threads N: one thread per transfer, no per-host cap"),
    Client("curl-loop", _curl_loop_cmd, _binary_version("curl"), sequential=True,
           only=("seed",), note="one curl process per file, one after another (seed only)"),
    Client("parfive", _python_peer("parfive_peer"), _package("parfive", "aiohttp"),
           note="Downloader(max_conn=N, max_splits=1), aiohttp pool sized to N"),
    Client("requests", _python_peer("requests_peer"), _package("requests"),
           note="ThreadPoolExecutor(N), one Session per thread"),
    Client("aiohttp", _python_peer("aiohttp_peer"), _package("aiohttp"),
           note="TCPConnector(limit=N, limit_per_host=per-host), gather + semaphore"),
    Client("httpx", _python_peer("httpx_peer"), _package("httpx"),
           note="AsyncClient(limits=Limits(max_connections=N)); no per-host cap"),
]}


def _midair_cmd(engine: str) -> Callable[[Job], list[str]]:
    def command(job: Job) -> list[str]:
        return [sys.executable, "-m", "midair", "get", "--engine", engine, "-j", str(job.jobs),
                "--per-host", str(job.per_host), "-q", "-i", str(job.list_file),
                "-d", str(job.out)]
    return command


def engine_clients(names: list[str]) -> dict[str, Client]:
    """``midair-ENGINE`` for each name; an engine that cannot run here reports None."""
    from midair import __version__
    from midair.engines import ENGINES

    def version(name: str) -> Callable[[], str | None]:
        return lambda: __version__ if _engine_ready(ENGINES[name]) else None

    return {f"midair-{n}": Client(f"midair-{n}", _midair_cmd(n), version(n),
                                  sequential=n == "sequential", note=ENGINES[n].model)
            for n in names}


def _engine_ready(info: object) -> bool:
    import importlib.util

    module = getattr(info, "module", "")
    return bool(getattr(info, "available", False)) and importlib.util.find_spec(module) is not None


def default_engines() -> list[str]:
    """Every engine that can run here except dask: a LocalCluster start dominates."""
    from midair.engines import ENGINES

    return [n for n, info in ENGINES.items() if n != "dask" and _engine_ready(info)]


def select_clients(engines: list[str], peers: list[str]) -> dict[str, Client]:
    """midair engines first, then peers, in the order asked for."""
    from midair.engines import ENGINES

    for kind, asked, known in [("engine", engines, list(ENGINES)), ("peer", peers, list(PEERS))]:
        unknown = [a for a in asked if a not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {', '.join(unknown)}; "
                             f"known: {', '.join(known)}")
    return {**engine_clients(engines), **{p: PEERS[p] for p in peers}}
