"""The reactor engine and the sharding engines (processes, dask) end to end.

Every case runs against ``midair serve`` on several loopback hosts: bytes must
match, a 404 is reported with its URL, the results hold one entry per job, the
per-host limit holds across shards, and a worker killed mid-run costs its
unfinished jobs (processes) or a re-run of its shard (dask) — never a hang.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pickle
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ShardKiller

from midair.api import Downloader, make_options
from midair.core.actions import Action, Failed, Finished, Retrying, Started
from midair.core.errors import NetworkError
from midair.core.jobs import Job
from midair.core.transfer import claimable_path
from midair.engines import get_engine
from midair.engines._shards import (
    Merger,
    Shard,
    ShardError,
    Summary,
    plan_shards,
    run_shard,
    split,
)
from midair.run import REPORTS, Run
from midair.serve import ServerThread, expected_bytes

HAVE_DASK = all(importlib.util.find_spec(m) for m in ("dask", "distributed"))
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(addresses=4) as srv:
        yield srv


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    from midair.engines.dask_engine import local_cluster

    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


ENGINES = [
    pytest.param("reactor", id="reactor"),
    pytest.param(
        "reactor-uvloop",
        id="reactor-uvloop",
        marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed"),
    ),
    pytest.param("processes", id="processes"),
    pytest.param("processes-streamed", id="processes-streamed"),
    pytest.param(
        "dask",
        id="dask",
        marks=pytest.mark.skipif(not HAVE_DASK, reason="dask.distributed not installed"),
    ),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(registry name, engine options) for ``Downloader``."""
    if request.param == "reactor-uvloop":
        return "reactor", {"loop": "uvloop"}
    if request.param == "processes":
        return "processes", {"workers": 2}
    if request.param == "processes-streamed":  # the list streamed, however short
        return "processes", {"workers": 2, "whole_list": 0}
    if request.param == "dask":
        return "dask", {"scheduler": request.getfixturevalue("dask_scheduler")}
    return "reactor", {}


def gen(srv: ServerThread, host: int, name: str, size: int, extra: str = "") -> str:
    return srv.url(host, f"/gen/{name}?size={size}{extra}")


def run(
    dest: Path,
    engine: tuple[str, dict[str, Any]],
    urls: list[str],
    on_event: Callable[[Action], None] | None = None,
    **options: Any,
) -> Run:
    """Run ``urls`` through the engine; return the run to inspect."""
    downloader = Downloader(
        str(dest), engine=engine[0], engine_options=engine[1], on_event=on_event, **options
    )
    for url in urls:
        downloader.enqueue(url)
    downloader.run()
    assert downloader.last_run is not None
    return downloader.last_run


def check_one_entry_per_job(session: Run) -> None:
    results = session.results
    ended = Counter([s.url for s in results.successes] + [f.url for f in results.failures])
    assert ended == Counter(j.url.text for j in session.jobs)


# --- every engine ---------------------------------------------------------------------
def test_byte_exact_with_a_404(
    server: ServerThread, tmp_path: Path, engine: tuple[str, dict[str, Any]]
) -> None:
    sizes = {f"f{h}{i}.bin": (h, 1000 * (h + 1) + 70_001 * i) for h in range(3) for i in range(3)}
    urls = [gen(server, h, name, size) for name, (h, size) in sizes.items()]
    urls.append(gen(server, 3, "chunked.bin", 123_457, "&chunked=1"))
    missing = gen(server, 1, "missing.bin", 10, "&status=404")
    urls.append(missing)
    events: list[Action] = []
    session = run(tmp_path, engine, urls, events.append)

    check_one_entry_per_job(session)
    [failure] = session.results.failures
    assert failure.url == missing and failure.error.status == 404
    assert str(failure.error).startswith(missing)
    sizes["chunked.bin"] = (3, 123_457)
    assert len(session.results.successes) == len(sizes)
    for success in session.results.successes:
        name = Path(success.path).name
        assert Path(success.path).read_bytes() == expected_bytes(name, sizes[name][1])
    # Reports carry the caller's download ids, whatever shard made them.
    for event in events:
        assert session.jobs[event.download].url.text == event.url  # type: ignore[union-attr]
    assert sum(type(e) is Finished for e in events) == len(sizes)
    tracker = session.tracker
    assert tracker.bytes_done == sum(size for _, size in sizes.values())
    assert (tracker.files_done, tracker.files_failed, tracker.active) == (len(sizes), 1, {})


def test_per_host_limit_holds(
    server: ServerThread, tmp_path: Path, engine: tuple[str, dict[str, Any]]
) -> None:
    urls = [
        gen(server, h, f"p{h}-{i}.bin", 40_000, "&rate=200000") for h in range(4) for i in range(5)
    ]
    server.reset_stats()
    session = run(tmp_path, engine, urls, per_host=2, concurrency=100)
    assert session.results.ok and len(session.results.successes) == len(urls)
    most = {stats.max_concurrent for stats in server.stats().addresses.values()}
    # Never past --per-host; a streamed list splits it between shards routed by file name,
    # whose turns at one host need not overlap, so a host may see fewer.
    assert max(most) == 2


def test_retry_after_503_uses_the_timer(
    server: ServerThread, tmp_path: Path, engine: tuple[str, dict[str, Any]]
) -> None:
    url = gen(server, 2, "flaky.bin", 5000, f"&status=503&fail_times=1&k={engine}")
    events: list[Action] = []
    session = run(tmp_path, engine, [url], events.append, retry_base=0.05)
    assert session.results.ok, session.results.failures
    assert session.tracker.retries == 1


# --- reactor ----------------------------------------------------------------------------
def test_reactor_reports_a_refused_connection(tmp_path: Path) -> None:
    with ServerThread(addresses=1) as srv:
        url = srv.url(0, "/gen/x.bin?size=10")
    session = run(tmp_path, ("reactor", {}), [url], retries=0)
    [failure] = session.results.failures
    assert "connection refused" in str(failure.error)


def test_reactor_raises_a_core_bug_instead_of_hanging(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloader = Downloader(str(tmp_path), engine="reactor")
    downloader.enqueue(gen(server, 0, "bug.bin", 1000))

    def broken(*args: object) -> list[Any]:
        raise RuntimeError("a bug in the core")

    monkeypatch.setattr("midair.session.Batch.received", broken)
    with pytest.raises(RuntimeError, match="a bug in the core"):
        downloader.run()


@pytest.mark.parametrize("name", ["reactor", "processes"])
def test_an_empty_batch_returns_at_once(tmp_path: Path, name: str) -> None:
    session = Downloader(str(tmp_path)).new_run()
    get_engine(name).run(session)
    assert session.results.successes == [] and session.results.failures == []


# --- processes --------------------------------------------------------------------------
def test_killed_worker_fails_only_its_unfinished_jobs(server: ServerThread, tmp_path: Path) -> None:
    urls = [
        gen(server, h, f"k{h}-{i}.bin", 60_000, "&rate=100000") for h in range(4) for i in range(2)
    ]
    kill = ShardKiller()
    session = run(tmp_path, ("processes", {"workers": 2}), urls, kill, per_host=1)
    assert kill.killed
    check_one_entry_per_job(session)
    results = session.results
    assert results.failures and results.successes
    for failure in results.failures:
        assert "worker 0 died (killed by SIGKILL)" in str(failure.error)
    shard_one = {
        session.jobs[i].url.text for i in plan_shards(session.jobs, session.options, 2)[1].indexes
    }
    assert {s.path.rsplit("/", 1)[1] for s in results.successes} == {
        u.split("/gen/")[1].split("?")[0] for u in shard_one
    }


@pytest.mark.parametrize("whole_list", [50_000, 0], ids=["planned", "streamed"])
def test_ctrl_c_stops_every_worker_and_keeps_part_files(
    server: ServerThread, tmp_path: Path, whole_list: int
) -> None:
    urls = [gen(server, h, f"c{h}.bin", 400_000, "&rate=100000") for h in range(4)]
    started: set[int] = set()

    def interrupt_once_all_started(event: Action) -> None:
        if type(event) is Started:
            started.add(event.download)
            if len(started) == len(urls):
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        engine = ("processes", {"workers": 2, "whole_list": whole_list})
        run(tmp_path, engine, urls, interrupt_once_all_started)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("midair")]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"c{h}.bin.midair-{kind}" for h in range(4) for kind in ("ctl", "part"))


def test_a_stopped_shard_returns_its_endings_and_flushes(
    server: ServerThread, tmp_path: Path
) -> None:
    fast = gen(server, 0, "fast.bin", 1000)
    slow = gen(server, 1, "slow.bin", 400_000, "&rate=100000")
    options = make_options(str(tmp_path))
    clock = time.monotonic() + 0.6
    summaries: list[Summary] = []
    endings = run_shard(
        [job(fast), job(slow)],
        options,
        "reactor",
        summaries.append,
        interval=0.05,
        stopped=lambda: time.monotonic() > clock,
    )
    assert [type(e) for e in endings] == [Finished] and endings[0].url == fast
    assert (tmp_path / "slow.bin.midair-ctl").exists()
    assert 0 < (tmp_path / "slow.bin.midair-part").stat().st_size < 400_000
    assert (
        sum(s.written for s in summaries)
        == 1000 + (tmp_path / "slow.bin.midair-part").stat().st_size
    )


@pytest.mark.parametrize("heeds", [REPORTS, frozenset({Failed})])
def test_a_shard_sends_home_the_kinds_its_home_heeds_and_every_ending(
    server: ServerThread, tmp_path: Path, heeds: frozenset[type]
) -> None:
    summaries: list[Summary] = []
    urls = [gen(server, 0, f"h{i}.bin", 1000) for i in range(3)]
    endings = run_shard(
        [job(url) for url in urls],
        make_options(str(tmp_path)),
        "epoll",
        summaries.append,
        heeds=heeds,
    )
    sent = [type(report) for summary in summaries for report in summary.reports]
    assert sorted(e.url for e in endings) == sorted(urls) and sent.count(Finished) == 3
    assert sent.count(Started) == (3 if Started in heeds else 0)
    assert not any(s.positions for s in summaries) or Started in heeds  # followed only then


def test_a_shard_says_when_it_began_and_sees_a_stop_set_before_that(
    server: ServerThread, tmp_path: Path
) -> None:
    """The stop is set while the shard is in its core's start (it was not stopped when
    it looked before): the shard sees it at its commit, so none of its downloads ends."""
    looks = iter([False])  # the look before the start; every later look: stopped
    began: list[bool] = []
    endings = run_shard(
        [job(gen(server, h, f"b{h}.bin", 400_000, "&rate=100000")) for h in range(2)],
        make_options(str(tmp_path)),
        "reactor",
        lambda _: None,
        interval=5,  # the reporter's poll comes too late to be what stopped it
        stopped=lambda: next(looks, True),
        began=lambda: began.append(True),
    )
    assert began == [True]
    assert endings == []
    assert not list(tmp_path.glob("b*.bin"))


def test_processes_through_the_library_api(server: ServerThread, tmp_path: Path) -> None:
    import midair

    urls = [gen(server, h, f"api{h}.bin", 2048) for h in range(3)]
    results = midair.download(
        urls, str(tmp_path), engine="processes", engine_options={"workers": 2}
    )
    assert results.ok and sorted(Path(p).name for p in results.paths) == [
        "api0.bin",
        "api1.bin",
        "api2.bin",
    ]


def test_a_job_left_out_of_every_shard_fails_the_run(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import midair.engines.processes as processes

    def plan_without_the_last_job(jobs: list[Job], options: Any, shards: int) -> list[Shard]:
        plan = plan_shards(jobs, options, shards)
        return [replace(s, indexes=tuple(i for i in s.indexes if i != len(jobs) - 1)) for s in plan]

    monkeypatch.setattr(processes, "plan_shards", plan_without_the_last_job)
    urls = [gen(server, h, f"left{h}.bin", 2048) for h in range(3)]
    with pytest.raises(ShardError, match="1 jobs were in no shard"):
        run(tmp_path, ("processes", {"workers": 2}), urls)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["left0.bin", "left1.bin"]


def test_a_job_in_two_shards_fails_the_run(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import midair.engines.processes as processes

    def plan_with_a_job_twice(jobs: list[Job], options: Any, shards: int) -> list[Shard]:
        first, *rest = plan_shards(jobs, options, shards)
        twice = first.indexes[0]
        return [first, *(replace(s, indexes=tuple(sorted({*s.indexes, twice}))) for s in rest)]

    monkeypatch.setattr(processes, "plan_shards", plan_with_a_job_twice)
    urls = [gen(server, h, f"twice{h}.bin", 2048) for h in range(3)]
    with pytest.raises(ShardError, match="which is not in its shard"):
        run(tmp_path, ("processes", {"workers": 2}), urls)


# --- the plan and the merge ---------------------------------------------------------------
def job(url: str, **kwargs: Any) -> Job:
    return Job.from_url(url, **kwargs)


def test_plan_keeps_hosts_and_shared_names_together() -> None:
    jobs = [job(f"http://h{h}.test/{h}-{i}") for h in range(6) for i in range(1 + h % 3)]
    jobs.append(job("http://h9.test/0-0"))  # the same target path as h0's file
    jobs.append(job("http://h8.test/1-0.1"))  # where h1's 1-0 and a duplicate may meet
    options = make_options("/tmp/x", concurrency=10, per_host=2)
    shards = plan_shards(jobs, options, 4)
    assert len(shards) == 4
    where = {i: s.number for s in shards for i in s.indexes}
    assert sorted(where) == list(range(len(jobs)))
    for a, one in enumerate(jobs):
        same_host = [b for b, other in enumerate(jobs) if other.url.host == one.url.host]
        assert {where[b] for b in same_host} == {where[a]}
    assert where[len(jobs) - 2] == where[0]
    assert where[len(jobs) - 1] == where[1]  # h1's first job: 1-0
    assert sum(s.options.concurrency for s in shards) == 10
    assert all(s.options.directory == "/tmp/x" for s in shards)
    counts = sorted(len(s.indexes) for s in shards)
    assert counts[-1] - counts[0] <= 3


@pytest.mark.parametrize("hosts", [1, 6])  # one host spread, or hosts kept whole
def test_plan_gives_each_shard_its_jobs_first_paths(
    hosts: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [job(f"http://h{i % hosts}.test/d/f{i % 7}") for i in range(20)]
    jobs += [job("http://h0.test/x", out="o.bin", subdir="s"), job("http://h0.test/%2E%2E")]
    monkeypatch.chdir(tmp_path)  # the plan's paths: under the shards' absolute directory
    for shard in plan_shards(jobs, make_options("rel", concurrency=10, per_host=4), 3):
        expected = [claimable_path(jobs[i], shard.options) for i in shard.indexes]
        assert shard.own_paths() == expected
        assert shard.options.directory == str(tmp_path / "rel")


def test_plan_never_has_more_shards_than_connections_or_groups() -> None:
    jobs = [job(f"http://h{h}.test/f{h}") for h in range(2)] + [job("http://h0.test/g")]
    assert len(plan_shards(jobs, make_options(concurrency=8), 16)) == 2
    assert len(plan_shards(jobs, make_options(concurrency=1), 16)) == 1
    assert plan_shards([], make_options(), 4) == []


def test_plan_splits_a_host_holding_most_jobs_and_shares_its_limit() -> None:
    jobs = [job(f"http://big.test/f{i}") for i in range(9)] + [job("http://small.test/s")]
    jobs.append(job("http://small.test/x/f3"))  # the same target path as big's f3
    shards = plan_shards(jobs, make_options("/tmp/x", concurrency=10, per_host=5), 4)
    assert len(shards) == 4
    assert sum(s.options.per_host for s in shards) == 5
    assert sum(s.options.concurrency for s in shards) == 10
    where = {i: s.number for s in shards for i in s.indexes}
    assert sorted(where) == list(range(len(jobs)))
    assert len({where[i] for i in range(9)}) == 4  # the big host is spread
    assert where[len(jobs) - 1] == where[3]  # contenders for one name stay together


def test_plan_deals_one_job_groups_in_turn() -> None:
    jobs = [job(f"http://big.test/f{i}") for i in range(7)]
    shards = plan_shards(jobs, make_options(concurrency=9, per_host=3), 3)
    assert [s.indexes for s in shards] == [(0, 3, 6), (1, 4), (2, 5)]
    assert [s.options.per_host for s in shards] == [1, 1, 1]
    assert [s.options.concurrency for s in shards] == [4, 3, 2]


def test_plan_does_not_split_a_host_limited_to_one_connection() -> None:
    jobs = [job(f"http://big.test/f{i}") for i in range(9)] + [job("http://small.test/s")]
    shards = plan_shards(jobs, make_options(concurrency=10, per_host=1), 4)
    assert len(shards) == 2
    assert {s.options.per_host for s in shards} == {1}
    assert sorted(len(s.indexes) for s in shards) == [1, 9]


def test_processes_split_one_host_and_keep_its_limit(server: ServerThread, tmp_path: Path) -> None:
    urls = [gen(server, 0, f"one-{i}.bin", 40_000, "&rate=100000") for i in range(8)]
    server.reset_stats()
    session = run(tmp_path, ("processes", {"workers": 2}), urls, per_host=3, concurrency=100)
    assert session.results.ok and len(session.results.successes) == len(urls)
    assert server.stats().addresses[server.hosts[0]].max_concurrent == 3


@pytest.mark.parametrize(
    ("total", "caps", "shares"),
    [
        (10, [2, 2, 20], [2, 2, 6]),
        (3, [0, 0, 0], [1, 1, 1]),
        (7, [1, 1], [4, 3]),
    ],
)
def test_split_fills_shards_that_can_use_connections(
    total: int, caps: list[int], shares: list[int]
) -> None:
    assert split(total, caps) == shares


def test_merger_drops_reports_after_a_jobs_ending() -> None:
    jobs = [job(f"http://h.test/f{i}") for i in range(3)]
    session = Run(jobs, make_options())
    [shard] = plan_shards(jobs, session.options, 1)
    merger = Merger(session, [shard])
    started = Started(1, jobs[1].url.text, "/p", 0, 10)
    merger.apply(0, Summary((started,), 4, {1: 4}))
    assert session.tracker.active[1].done == 4 and session.tracker.bytes_done == 4
    merger.reports(0, [Finished(1, jobs[1].url.text, "/p", 10, False), started])
    assert not session.tracker.active  # the repeated Started came after the ending
    merger.lost(0, "worker 0 died")
    assert merger.complete
    check_one_entry_per_job(session)
    failures = session.results.failures
    assert [f.url for f in failures] == [jobs[0].url.text, jobs[2].url.text]
    assert all(isinstance(f.error, NetworkError) and f.error.retryable for f in failures)
    assert str(failures[0].error) == f"{jobs[0].url.text}: worker 0 died"


def test_a_summary_crosses_a_pipe_unchanged() -> None:
    error = NetworkError("http://h.test/c", "refused")
    reports = (
        Started(0, "http://h.test/a", "/d/a", 0, None),
        Retrying(1, "http://h.test/b", "503", 1.5, 2),
        Finished(0, "http://h.test/a", "/d/a", 10, False),
        Failed(2, "http://h.test/c", error),
    )
    back = pickle.loads(pickle.dumps(Summary(reports, 10, {1: 4}), pickle.HIGHEST_PROTOCOL))
    assert back.reports[:3] == reports[:3] and (back.written, back.positions) == (10, {1: 4})
    failed = back.reports[3]
    assert isinstance(failed, Failed) and (failed.download, failed.url) == (2, "http://h.test/c")
    assert type(failed.error) is NetworkError and str(failed.error) == str(error)


def test_the_merger_takes_shard_reports_in_the_batchs_ids() -> None:
    jobs = [job(f"http://h.test/f{i}") for i in range(4)]
    run = Run(jobs, make_options())
    merger = Merger(run, [Shard(0, (1, 3), run.options), Shard(1, (0, 2), run.options)])
    url = jobs[3].url.text
    merger.apply(0, Summary((Started(3, url, "/d/f3", 0, 5),), 2, {3: 2}))
    assert run.tracker.active[3].done == 2
    merger.reports(0, [Finished(3, url, "/d/f3", 5, False)])
    assert merger.ended == {3} and not run.tracker.active
    assert [(s.url, s.path, s.size) for s in run.results.successes] == [(url, "/d/f3", 5)]
    assert run.error is None


@pytest.mark.parametrize("ident", [1, 3, 4, -1])  # the other shard's (ended or not), no job's
def test_a_shard_reporting_a_job_not_its_own_fails_the_run(ident: int) -> None:
    jobs = [job(f"http://h.test/f{i}") for i in range(4)]
    run = Run(jobs, make_options())
    merger = Merger(run, [Shard(0, (1, 3), run.options), Shard(1, (0, 2), run.options)])
    merger.reports(0, [Finished(3, jobs[3].url.text, "/d/f3", 5, False)])
    merger.reports(1, [Finished(ident, "http://h.test/x", "/d/x", 5, False)])
    assert isinstance(run.error, ShardError) and "not in its shard" in str(run.error)
    assert merger.ended == {3} and len(run.results.successes) == 1


def test_a_summary_crosses_a_multiprocessing_pipe_unchanged() -> None:
    from multiprocessing.reduction import ForkingPickler

    reports = (
        Started(5, "http://h.test/a", "/d/a", 0, None),
        Retrying(9, "http://h.test/b", "503", 1.5, 2),
        Finished(5, "http://h.test/a", "/d/a", 10, False),
    )
    back = pickle.loads(ForkingPickler.dumps(Summary(reports, 10, {9: 4})))
    assert back == Summary(reports, 10, {9: 4})


def test_a_shard_reports_with_the_ids_it_is_given(server: ServerThread, tmp_path: Path) -> None:
    urls = [gen(server, h, f"ids{h}.bin", 1000) for h in range(2)]
    summaries: list[Summary] = []
    endings = run_shard(
        [job(url) for url in urls],
        make_options(str(tmp_path)),
        "reactor",
        summaries.append,
        interval=0.05,
        ids=(4, 9),
    )
    assert sorted((e.download, e.url) for e in endings) == [(4, urls[0]), (9, urls[1])]
    reported = {r.download for s in summaries for r in s.reports}
    assert reported == {4, 9}


# --- dask ----------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_DASK, reason="dask.distributed not installed")
def test_dask_starts_and_closes_its_own_cluster(server: ServerThread, tmp_path: Path) -> None:
    urls = [gen(server, h, f"own{h}.bin", 3000) for h in range(3)]
    before = set(multiprocessing.active_children())
    session = run(tmp_path, ("dask", {"workers": 2}), urls)
    assert session.results.ok and len(session.results.successes) == 3
    assert set(multiprocessing.active_children()) <= before


@pytest.mark.skipif(not HAVE_DASK, reason="dask.distributed not installed")
def test_dask_reruns_the_shard_of_a_killed_worker(
    server: ServerThread, tmp_path: Path, dask_scheduler: str
) -> None:
    from distributed import Client

    urls = [
        gen(server, h, f"d{h}-{i}.bin", 150_000, "&rate=150000") for h in range(2) for i in range(2)
    ]
    plan = plan_shards([job(u) for u in urls], make_options(str(tmp_path), per_host=1), 2)
    shard_of = {i: shard.number for shard in plan for i in shard.indexes}
    with Client(dask_scheduler) as client:
        pids = client.run(os.getpid)
        killed: list[int] = []
        events: list[Action] = []

        def kill_the_worker_that_started_it(event: Action) -> None:
            events.append(event)
            if killed or type(event) is not Started:
                return
            key = f"-shard-{shard_of[event.download]}"  # the engine's task keys end so
            for worker, keys in client.processing().items():
                if any(str(k).endswith(key) for k in keys):
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append(pids[worker])
                    return

        session = run(
            tmp_path,
            ("dask", {"scheduler": dask_scheduler}),
            urls,
            kill_the_worker_that_started_it,
            per_host=1,
        )
    assert killed
    check_one_entry_per_job(session)
    assert session.results.ok, session.results.failures
    starts = Counter(e.download for e in events if type(e) is Started)
    assert max(starts.values()) == 2, "the killed shard ran again and restarted a download"
    for success in session.results.successes:
        assert Path(success.path).read_bytes() == expected_bytes(Path(success.path).name, 150_000)
