"""The ``auto`` engine: which engine it picks for a batch's shape, and that it runs it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import midair
from midair.api import make_options
from midair.core.jobs import Job
from midair.engines import DEFAULT_ENGINE, get_engine
from midair.engines.auto import LONG_LIST, MANY_IN_FLIGHT, MANY_JOBS, choose
from midair.run import Run
from midair.serve import ServerThread


def batch(hosts: list[int], **options: int) -> Run:
    """One job per entry of ``hosts``, on the host that entry names."""
    jobs = [Job.from_url(f"http://h{h}.test/f{i}") for i, h in enumerate(hosts)]
    return Run(jobs, make_options("/tmp/x", **options))


def test_auto_is_the_default() -> None:
    assert DEFAULT_ENGINE == "auto"


def test_a_big_batch_mostly_from_one_origin_runs_on_every_core() -> None:
    hosts = [0] * MANY_JOBS + [1] * (MANY_JOBS // 2)
    assert choose(batch(hosts, per_host=8), cores=2) == "processes"


def test_thousands_in_flight_over_many_origins_run_on_every_core() -> None:
    """c10k's shape: 100 origins, ``--per-host 100``, everything in flight at once."""
    hosts = [i % 100 for i in range(MANY_IN_FLIGHT * 2)]
    assert choose(batch(hosts, per_host=100, concurrency=10_000), cores=2) == "processes"
    assert choose(batch(hosts, per_host=100, concurrency=10_000), cores=1) == "epoll"


@pytest.mark.parametrize(
    ("concurrency", "per_host"),
    [(MANY_IN_FLIGHT - 1, 100), (10_000, MANY_IN_FLIGHT // 100 - 1)],
    ids=["concurrency", "per-host-times-origins"],
)
def test_fewer_in_flight_stay_on_one_loop(concurrency: int, per_host: int) -> None:
    hosts = [i % 100 for i in range(MANY_IN_FLIGHT * 2)]
    options = {"per_host": per_host, "concurrency": concurrency}
    assert choose(batch(hosts, **options), cores=2) == "epoll"


@pytest.mark.parametrize(
    ("hosts", "options", "cores"),
    [
        ([0] * (MANY_JOBS - 1), {"per_host": 8}, 2),  # too few jobs to pay for the workers
        ([0] * MANY_JOBS, {"per_host": 8}, 1),  # one core
        ([0] * MANY_JOBS, {"per_host": 1}, 2),  # one connection to the origin at a time
        ([0] * MANY_JOBS, {"per_host": 8, "concurrency": 1}, 2),
        ([i % 10 for i in range(MANY_JOBS * 2)], {"per_host": 8}, 2),  # spread over origins
    ],
    ids=["few-jobs", "one-core", "per-host-1", "concurrency-1", "many-origins"],
)
def test_otherwise_one_loop(hosts: list[int], options: dict[str, int], cores: int) -> None:
    assert choose(batch(hosts, **options), cores=cores) == "epoll"


def test_a_list_longer_than_it_reads_ahead_streams_on_one_loop() -> None:
    """The processes engine plans over every job: a long list is streamed by one loop
    instead, after reading LONG_LIST jobs ahead, which the run then still takes, in order."""
    read = [0]

    def jobs() -> Iterator[Job]:
        for i in range(LONG_LIST + 10):
            read[0] += 1
            yield Job.from_url(f"http://h0.test/f{i}")

    run = Run(jobs(), make_options("/tmp/x", per_host=8))
    assert choose(run, cores=2) == "epoll"
    assert read[0] == LONG_LIST + 1  # no further than one past the head
    taken = [job.url.text for job in run.intake()]
    assert taken == [f"http://h0.test/f{i}" for i in range(LONG_LIST + 10)]
    assert run.tracker.jobs == LONG_LIST + 10
    whole = Run(iter(list(jobs())[:LONG_LIST]), make_options("/tmp/x", per_host=8))
    assert choose(whole, cores=2) == "processes"  # all of it read: planned on every core


def test_options_go_to_the_engine_chosen() -> None:
    many = batch([0] * MANY_JOBS, per_host=8)
    processes = get_engine("auto", workers=2).engine(many)  # type: ignore[attr-defined]
    assert (processes.name, processes.workers) == ("processes", 2)
    reactor = get_engine("auto", loop="asyncio").engine(batch([0]))  # type: ignore[attr-defined]
    assert reactor.name == "reactor"
    assert get_engine("auto", workers=1).engine(many).name == "epoll"  # type: ignore[attr-defined]


def test_the_default_downloads(tmp_path: Path) -> None:
    with ServerThread(addresses=2) as server:
        urls = [server.url(i % 2, f"/gen/auto-{i}.bin?size={1000 * (i + 1)}") for i in range(4)]
        results = midair.download(urls, tmp_path)
    assert results.ok
    assert sorted(p.stat().st_size for p in tmp_path.iterdir()) == [1000, 2000, 3000, 4000]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_list_is_read_ahead_without_collections_and_the_collector_is_left_as_found(
    enabled: bool,
) -> None:
    seen: list[bool] = []

    def jobs() -> Iterator[Job]:
        for i in range(MANY_JOBS):
            seen.append(gc.isenabled())
            yield Job.from_url(f"http://h0.test/f{i}")

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        get_engine("auto").engine(Run(jobs(), make_options("/tmp/x")))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert len(seen) == MANY_JOBS and not any(seen)
