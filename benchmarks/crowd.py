"""Benchmark "crowd": 1,000 files of 256 KiB on 100 slow servers, every client in one run.

The scenario midair exists for: each server sends 128 KiB/s per connection, so
one file alone takes about the "floor" time, and a client that keeps all 1,000
transfers in the air finishes the batch in about that time too. The floor is
measured in the same run (one curl, one file), so the ratio column says how
close each client gets, independent of the machine.

    python benchmarks/crowd.py [--reps 3] [--clients curl,aria2c] [--json runs.json]

Files: 127.0.1.1 .. 127.0.1.100, ten files each, served by one nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import (
    CLIENTS,
    Dataset,
    Job,
    Run,
    judge,
    make_dataset,
    markdown_table,
    raise_nofile_limit,
    run_measured,
    summarize,
    tool_version,
    verify,
    write_list,
)

from midair.serve.nginx import Nginx, find_nginx

FILES = 1000
SIZE = 256 * 1024
HOSTS = 100
RATE = 128 * 1024
SEED = "midair-crowd-v1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=1, help="runs per client (medians shown)")
    p.add_argument("--clients", default=",".join(CLIENTS),
                   help=f"comma-separated subset of {','.join(CLIENTS)}")
    p.add_argument("--json", type=Path, help="dump every run here")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/midair-bench/crowd")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per client run")
    p.add_argument("--nginx-workers", type=int, default=1, help="0 = one per core")
    p.add_argument("--keep", action="store_true", help="keep output dirs for inspection")
    args = p.parse_args(argv)
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in args.clients if c not in CLIENTS]
    if unknown:
        p.error(f"unknown client(s) {unknown}; known: {list(CLIENTS)}")
    return args


def hosts() -> list[str]:
    return [f"127.0.1.{i}" for i in range(1, HOSTS + 1)]


def urls_for(server: Nginx, data: Dataset) -> tuple[list[str], list[str]]:
    """Ten files per address, in manifest order: file i lives on host i // 10."""
    names = sorted(data.sha256)
    per = len(names) // len(server.hosts)
    return [server.url(i // per, n) for i, n in enumerate(names)], names


def measure_floor(server: Nginx, name: str, work: Path, timeout: float) -> float:
    """One file alone, by one curl: the best any client can do per file here."""
    m = run_measured(["curl", "-q", "-sS", "--fail", "-o", os.devnull, server.url(0, name)],
                     timeout, work / "floor.log")
    if m.exit_code != 0:
        raise SystemExit(f"floor download failed: {m.output_tail.strip()}")
    return m.wall_s


def run_client(name: str, version: str, rep: int, job: Job, data: Dataset,
               timeout: float) -> Run:
    client = CLIENTS[name]
    job.out.mkdir(parents=True)
    m = run_measured(client.command(job), timeout, job.out.parent / f"{job.out.name}.log")
    run = judge(Run(name, version, rep, m), verify(job.out, data.sha256))
    print(f"  {name} rep {rep}: {m.wall_s:.2f}s {run.status} {run.detail}", file=sys.stderr)
    return run


def run_all(args: argparse.Namespace, data: Dataset, work: Path) -> tuple[list[Run], list[float]]:
    """Every client, one at a time, ``reps`` times; a floor measurement per rep."""
    available = {n: CLIENTS[n].binary() for n in args.clients}
    versions = {n: tool_version(CLIENTS[n].version_argv(b)) if b else "missing"
                for n, b in available.items()}
    runs: list[Run] = []
    floors: list[float] = []
    with Nginx(data.root, hosts=hosts(), limit_rate=RATE, workers=args.nginx_workers) as server:
        urls, names = urls_for(server, data)
        list_file = work / "urls.txt"
        write_list(list_file, urls)
        for rep in range(args.reps):
            floors.append(measure_floor(server, names[0], work, args.timeout))
            for name in args.clients:
                if available[name] is None:
                    runs.append(Run(name, "missing", rep, None, status="SKIPPED",
                                    detail="not installed"))
                    continue
                out = work / f"{name}-{rep}"
                job = Job(urls, names, list_file, out, jobs=FILES, per_host=FILES // HOSTS)
                run = run_client(name, versions[name], rep, job, data, args.timeout)
                runs.append(run)
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
                time.sleep(0.5)  # let the last client's sockets close before the next
    return runs, floors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if find_nginx() is None or shutil.which("curl") is None:
        print("crowd needs nginx and curl: apt-get install nginx-light curl", file=sys.stderr)
        return 2
    nofile = raise_nofile_limit()
    print(f"generating/checking data in {args.cache} ...", file=sys.stderr)
    data = make_dataset(args.cache, FILES, SIZE, SEED)
    work = Path(tempfile.mkdtemp(prefix="midair-crowd-"))
    try:
        runs, floors = run_all(args, data, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    floor = statistics.median(floors)
    print(f"\ncrowd: {FILES} files x {SIZE // 1024} KiB, {HOSTS} hosts, "
          f"nginx limit_rate {RATE // 1024}k/conn; floor (1 file, curl) = {floor:.2f} s; "
          f"{os.cpu_count()} CPUs, RLIMIT_NOFILE {nofile}\n")
    print(markdown_table(summarize(runs, floor)))
    notes = [f"- {n}: {CLIENTS[n].note}" for n in args.clients if CLIENTS[n].note]
    if notes:
        print("\n" + "\n".join(notes))
    if args.json:
        args.json.write_text(json.dumps({
            "scenario": {"name": "crowd", "files": FILES, "size": SIZE, "hosts": HOSTS,
                         "rate": RATE, "seed": SEED},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": sys.version.split()[0], "nofile": nofile},
            "floor_s": floors,
            "runs": [r.as_dict() for r in runs],
        }, indent=2))
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
