"""The dask engine at scale: 100,000 URLs over 1,000 hosts on a LocalCluster of 2 workers.

Issue 9, "At scale, distributed": shards are planned by host from the run's jobs (after
the journal settled what an earlier run did), so ``--per-host`` holds across the cluster,
and a lost worker's shard runs again elsewhere without fetching what was reported done.

``midair serve --addresses HOSTS`` (its own process) answers every ``/gen/`` URL with a
one-byte body; the run goes through the library with a journal.  ``--kill-after N``
SIGKILLs one worker once N files are done, so the resume is measured too.  Printed: wall
time, files/s, peak RSS of this process and of the largest worker, and from the server's
own counters: requests (against URLs: what the lost worker had in the air is asked for
again) and the most connections any one address had open at once (the per-host limit); and of
the last 1,000 requests (all the server logs), how many asked for a file after this
process had heard it finished (the journal records what it hears: must be 0).  Then the
same command runs again: the journal settles every job, and the server sees no request.

    python -m midair.bench.dask_scale --urls 100000 --hosts 1000 --kill-after 30000

A benchmark, not a test (tests/test_dask_journal.py runs the same story small).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from midair.api import Downloader
from midair.core.actions import Action, Finished
from midair.core.jobs import Job
from midair.core.results import Results


@contextmanager
def serve(hosts: int) -> Iterator[list[str]]:
    """``midair serve`` on ``hosts`` addresses in its own process: their base URLs."""
    argv = [sys.executable, "-m", "midair", "serve", "--addresses", str(hosts), "--port", "0"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            yield [proc.stdout.readline().strip().rstrip("/") for _ in range(hosts)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def server_stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/__stats", timeout=30) as answer:
        stats: dict[str, Any] = json.load(answer)
    return stats


class Killer:
    """Counts finished files; SIGKILLs one worker once ``after`` are done (0: never)."""

    def __init__(self, pids: list[int], after: int) -> None:
        self.pids, self.after = pids, after
        self.done = 0
        self.killed_at: float | None = None
        self.finished_at: dict[str, float] = {}  # URL path -> when this process heard it

    def __call__(self, event: Action) -> None:
        if type(event) is not Finished:
            return
        self.done += 1
        self.finished_at[urlsplit(event.url).path] = time.time()
        if self.after and self.done == self.after:
            os.kill(self.pids[0], signal.SIGKILL)
            self.killed_at = time.monotonic()


def run(urls: int, hosts: int, per_host: int, concurrency: int, kill_after: int) -> dict[str, Any]:
    from distributed import Client

    from midair.engines.dask_engine import local_cluster

    with tempfile.TemporaryDirectory(prefix="midair-dask-") as dest, serve(hosts) as bases:
        batch = [f"{bases[i % hosts]}/gen/f{i}?size=1" for i in range(urls)]
        limits = {"per_host": per_host, "concurrency": concurrency}
        with local_cluster(2) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            killer = Killer(list(client.run(os.getpid).values()), kill_after)
            results, wall = download(dest, cluster.scheduler_address, batch, killer, limits)
            stats = server_stats(bases[0])
            again, rerun_wall = download(
                dest, cluster.scheduler_address, batch, Killer([], 0), limits
            )
        rerun_requests = requests(server_stats(bases[0])) - requests(stats)
    log = stats["log"]
    after_done = [
        r for r in log if r["time"] > killer.finished_at.get(urlsplit(r["target"]).path, 1e100)
    ]
    return {
        "urls": urls,
        "hosts": hosts,
        "per_host": per_host,
        "ok": len(results.successes),
        "failed": len(results.failures),
        "wall_s": round(wall, 1),
        "files_per_s": round(urls / wall),
        "killed_worker_after": kill_after or None,
        "requests": requests(stats),
        "logged_requests": len(log),  # the server keeps the last 1,000
        "logged_after_done": len(after_done),  # of those, asked for after heard done
        "max_concurrent_per_host": max(a["max_concurrent"] for a in stats["addresses"].values()),
        "rss_parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "rss_largest_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
        "rerun_ok": len(again.successes),  # the same command again: the journal settles all
        "rerun_wall_s": round(rerun_wall, 1),
        "rerun_requests": rerun_requests,
    }


def download(
    dest: str, scheduler: str, batch: list[str], killer: Killer, limits: dict[str, int]
) -> tuple[Results, float]:
    """``batch`` into ``dest`` on the cluster at ``scheduler``, with a journal: the results
    and the wall time."""
    downloader = Downloader(
        dest,
        engine="dask",
        engine_options={"scheduler": scheduler},
        on_event=killer,
        journal="",
        fsync=False,
        **limits,
    )
    downloader.listens_to = {Finished}
    downloader.add_jobs(Job.from_url(url) for url in batch)
    start = time.monotonic()
    results = downloader.run()
    return results, time.monotonic() - start


def requests(stats: dict[str, Any]) -> int:
    return sum(a["requests"] for a in stats["addresses"].values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4000)
    parser.add_argument("--kill-after", type=int, default=0, help="files done, then kill one")
    args = parser.parse_args(argv)
    report = run(args.urls, args.hosts, args.per_host, args.concurrency, args.kill_after)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
