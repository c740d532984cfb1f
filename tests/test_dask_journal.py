"""dask with a journal: a lost worker's hosts resume elsewhere without refetching done files.

A LocalCluster of 2 workers runs 240 files over 24 hosts of ``midair serve``.  The
directory is a spool: each file is moved away as soon as the parent hears it finished,
so only the run's record (the merge, and the journal that hears the same reports), not
the disk, can say it is done.  Once the parent has heard a dozen files of one shard
end, that shard's worker is killed (SIGKILL).  The scheduler runs the shard again on a
worker; the re-run asks home which of its jobs have ended (``dask_engine._ended_before``)
and fetches only the rest (without that ask, the files moved away are fetched again).  The
server's request log proves it: no file is requested after the parent (and its journal)
heard it finished.  Every file is byte-exact, ``--per-host`` held on every address, and
a second run of the same command skips everything through the journal.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from midair.api import Downloader, make_options
from midair.core.actions import Action, Finished
from midair.core.jobs import Job
from midair.engines._shards import plan_shards
from midair.journal import DONE, entries, journal_path
from midair.serve import ServerThread, expected_bytes

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("dask", "distributed")),
    reason="dask.distributed not installed",
)

HOSTS, PER_HOST_FILES, SIZE, PER_HOST = 24, 10, 8000, 2
KILL_AFTER = 12  # files of the killed shard heard finished before its worker dies


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(addresses=HOSTS) as srv:
        yield srv


def urls(srv: ServerThread) -> list[str]:
    # 8,000 bytes at 40,000 B/s: 0.2 s a file, so the kill lands mid-shard.
    return [
        srv.url(h, f"/gen/j{h}-{i}.bin?size={SIZE}&rate=40000")
        for h in range(HOSTS)
        for i in range(PER_HOST_FILES)
    ]


def download(dest: Path, scheduler: str, batch: list[str], on_event: object = None) -> Downloader:
    downloader = Downloader(
        str(dest),
        engine="dask",
        engine_options={"scheduler": scheduler},
        on_event=on_event,  # type: ignore[arg-type]
        journal="",
        per_host=PER_HOST,
        concurrency=48,
        fsync=False,
    )
    for url in batch:
        downloader.enqueue(url)
    downloader.run()
    return downloader


class Killer:
    """Hears the run's reports; kills shard 0's worker once it has ended ``KILL_AFTER`` files."""

    def __init__(self, client: object, shard_of: dict[str, int], taken: Path) -> None:
        self.client, self.shard_of, self.taken = client, shard_of, taken
        self.pids = client.run(os.getpid)  # type: ignore[attr-defined]
        self.finished_at: dict[str, float] = {}  # path -> when the parent heard it done
        self.killed: list[int] = []
        self.done_before_kill: set[str] = set()

    def __call__(self, event: Action) -> None:
        if type(event) is not Finished:
            return
        self.finished_at[urlsplit(event.url).path] = time.time()
        os.rename(event.path, self.taken / Path(event.path).name)  # the spool's consumer
        ours = [u for u in self.finished_at if self.shard_of.get(u) == 0]
        if not self.killed and len(ours) >= KILL_AFTER:
            self.kill_shard_zero(set(ours))

    def kill_shard_zero(self, done: set[str]) -> None:
        for worker, keys in self.client.processing().items():  # type: ignore[attr-defined]
            if any(str(k).endswith("-shard-0") for k in keys):
                os.kill(self.pids[worker], signal.SIGKILL)
                self.killed.append(self.pids[worker])
                self.done_before_kill = done
                return


def test_a_killed_workers_shard_resumes_elsewhere_without_refetching(
    server: ServerThread, tmp_path: Path, dask_cluster: str
) -> None:
    from distributed import Client

    batch = urls(server)
    taken = tmp_path / "taken"
    taken.mkdir()
    dest = tmp_path / "spool"
    options = make_options(str(dest), per_host=PER_HOST, concurrency=48)
    plan = plan_shards([Job.from_url(u) for u in batch], options, 2)
    shard_of = {urlsplit(batch[i]).path: s.number for s in plan for i in s.indexes}
    server.reset_stats()
    with Client(dask_cluster) as client:
        killer = Killer(client, shard_of, taken)
        ran = download(dest, dask_cluster, batch, killer)
    assert killer.killed, "shard 0's worker was never killed"
    results = ran.last_run.results  # type: ignore[union-attr]
    assert results.ok and len(results.successes) == len(batch), results.failures
    for success in results.successes:
        name = Path(success.path).name
        assert (taken / name).read_bytes() == expected_bytes(name, SIZE), name

    stats = server.stats()
    assert len(stats.log) == stats.requests  # the log holds every request
    refetched = [
        r.target
        for r in stats.log
        if r.time > killer.finished_at.get(urlsplit(r.target).path, float("inf"))
    ]
    assert refetched == [], "files fetched again after they were recorded done"
    requests = Counter(urlsplit(r.target).path for r in stats.log)
    assert all(requests[p] == 1 for p in killer.done_before_kill)
    # The killed shard ran again elsewhere: the downloads it had in the air were asked for
    # twice, and only those.
    twice = {p for p, n in requests.items() if n > 1}
    assert twice and all(shard_of[p] == 0 and p not in killer.done_before_kill for p in twice)
    assert max(a.max_concurrent for a in stats.addresses.values()) <= PER_HOST

    rows = list(entries(journal_path(str(dest))))
    assert len(rows) == len(batch) and all(row.state == DONE for row in rows)
    server.reset_stats()
    again = download(dest, dask_cluster, batch).last_run.results  # type: ignore[union-attr]
    assert again.ok and len(again.successes) == len(batch)
    assert server.stats().requests == 0, "a re-run fetched what the journal records as done"


def test_the_scale_bench_runs_small() -> None:
    """``midair.bench.dask_scale`` (100,000 x 1,000 in CHANGELOG) runs, killing a worker."""
    from midair.bench.dask_scale import run

    report = run(urls=600, hosts=6, per_host=2, concurrency=100, kill_after=200)
    assert report["ok"] == 600 and report["failed"] == 0
    assert report["requests"] >= 600 and report["logged_after_done"] == 0
    assert report["max_concurrent_per_host"] <= 2
    assert report["rerun_ok"] == 600 and report["rerun_requests"] == 0


def test_a_finished_shards_result_is_awaited_with_home_drained() -> None:
    """A result whose worker died before handing it over is computed again by a re-run
    that waits for home's answer: home must keep draining while the parent waits for it
    (it deadlocked), and give up once the run stops."""
    from types import SimpleNamespace

    from midair.engines.dask_engine import _result

    class Late:
        def __init__(self, waits: int) -> None:
            self.waits = waits

        def result(self, timeout: float) -> object:
            if self.waits:
                self.waits -= 1
                raise TimeoutError
            return ([], None)

    drained: list[int] = []
    run = SimpleNamespace(stopping=False)
    home = SimpleNamespace(merger=SimpleNamespace(run=run), drain=lambda: drained.append(1))
    assert _result(Late(3), home, 0.01) == ([], None)  # type: ignore[arg-type]
    assert len(drained) == 3
    run.stopping = True
    assert _result(Late(1), home, 0.01) is None  # type: ignore[arg-type]
