"""The processes engine streaming a long list into its workers (engines/_streamed.py).

Lists here are short, with ``whole_list=0`` so they take the streamed path (the one a
list past ``WHOLE_LIST`` takes); tests/test_engines_sharded.py runs its every-engine
cases through it too (``processes-streamed``).  What is checked: names shared across
hosts still meet in one batch and are numbered, never clobbered; a shard is never sent
more than its room, and the list is read only as far as the shards have room; a lost
worker fails its unended jobs and those routed to it later, one ending per job; a
Ctrl-C stops every worker; a report for a job not the shard's fails the run.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ShardKiller

from midair.api import Downloader, make_options
from midair.core.actions import Finished, Started
from midair.core.jobs import Job
from midair.engines._shards import ShardError, Summary
from midair.engines._streamed import (
    Feeder,
    Inbox,
    Ledger,
    Router,
    pack_rows,
    stream_options,
    unzipped,
)
from midair.run import Run
from midair.serve import ServerThread, expected_bytes

STREAMED = {"workers": 2, "whole_list": 0}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(addresses=4) as srv:
        yield srv


def gen(srv: ServerThread, host: int, name: str, size: int, extra: str = "") -> str:
    return srv.url(host, f"/gen/{name}?size={size}{extra}")


def download(dest: Path, urls: list[str], on_event: Any = None, **options: Any) -> Run:
    downloader = Downloader(
        str(dest), engine="processes", engine_options=STREAMED, on_event=on_event, **options
    )
    for url in urls:
        downloader.enqueue(url)
    downloader.run()
    assert downloader.last_run is not None
    return downloader.last_run


def ended(run: Run) -> Counter[str]:
    results = run.results
    return Counter([s.url for s in results.successes] + [f.url for f in results.failures])


def test_a_name_shared_across_hosts_is_numbered_never_clobbered(
    server: ServerThread, tmp_path: Path
) -> None:
    sizes = {gen(server, h, "same.bin", 1000 + h): 1000 + h for h in range(4)}
    others = [gen(server, h, f"o{h}-{i}.bin", 500) for h in range(4) for i in range(6)]
    run = download(tmp_path, [*sizes, *others], per_host=2)
    assert run.results.ok and ended(run) == Counter([*sizes, *others])
    same = {s.url: Path(s.path) for s in run.results.successes if s.url in sizes}
    assert sorted(p.name for p in same.values()) == [
        "same.bin",
        "same.bin.1",
        "same.bin.2",
        "same.bin.3",
    ]
    for url, path in same.items():
        assert path.read_bytes() == expected_bytes("same.bin", sizes[url])


def test_a_family_routes_to_one_shard_and_hosts_spread() -> None:
    router = Router(make_options("/tmp/d"), 2)
    family = [
        Job.from_url(f"http://h{i}.test/x/f.bin", out=o) for i, o in enumerate(("f.bin", "f.bin.2"))
    ]
    assert len({router.route(job)[0] for job in family}) == 1
    shards = {router.route(Job.from_url(f"http://h.test/p-{i}.bin"))[0] for i in range(20)}
    assert shards == {0, 1}  # one host's jobs on both: each shard has a share of --per-host


def feeder_over(count: int, rooms: list[int]) -> tuple[Feeder, Ledger, list[Any], list[int]]:
    taken: list[int] = []

    def jobs() -> Iterator[Job]:
        for i in range(count):
            taken.append(i)
            yield Job.from_url(f"http://h{i % 3}.test/f{i}.bin")

    run = Run(jobs(), make_options("/tmp/d"))
    ledger = Ledger(run, len(rooms))
    sent: list[Any] = []
    feeder = Feeder(
        run, Router(run.options, len(rooms)), ledger, rooms, lambda n, b: sent.append((n, b))
    )
    return feeder, ledger, sent, taken


def test_a_shard_is_never_sent_more_than_its_room_and_the_list_is_read_as_far() -> None:
    feeder, ledger, sent, taken = feeder_over(100, [5, 5])
    while feeder.feed():
        pass
    assert max(ledger.holds(0), ledger.holds(1)) == 5 and len(taken) <= 11
    seen: list[int] = []
    while not feeder.over:  # each shard ends what it holds; the feeder tops it up
        for number in (0, 1):
            assert ledger.holds(number) <= 5
            ids = list(ledger.open[number])
            ledger.reports(
                number, tuple(Finished(i, ledger.open[number][i], "p", 1, False) for i in ids)
            )
            seen += ids
        while feeder.feed():
            pass
    assert sorted(seen + [i for held in ledger.open for i in held]) == list(range(100))
    assert [n for n, packed in sent if packed == b""] == [0, 1]  # each told the list ended


def test_the_columns_come_apart_in_step_and_end_together() -> None:
    rows = [(i, Job.from_url(f"http://h.test/{i}"), f"/d/{i}") for i in range(5)]
    ids, jobs, paths = unzipped(iter(rows))
    assert list(zip(ids, jobs, paths, strict=True)) == rows


def test_an_inbox_ends_its_wait_when_the_run_stops() -> None:
    parent, child = multiprocessing.Pipe()
    inbox = Inbox(child)
    rows = [(0, Job.from_url("http://h.test/a"), "/d/a")]
    parent.send_bytes(pack_rows(rows))
    got = inbox.rows()
    assert next(got) == rows[0]
    threading.Timer(0.05, inbox.stop).start()  # while it waits for a chunk that never comes
    assert list(got) == []
    parent.close()
    inbox.thread.join(5)
    assert not inbox.thread.is_alive()


@pytest.mark.parametrize("wrong", [7, 99])  # another shard's job; a job never sent
def test_a_report_for_a_job_not_the_shards_fails_the_run(wrong: int) -> None:
    run = Run([], make_options("/tmp/d"))
    ledger = Ledger(run, 2)
    assert ledger.add(0, 3, "http://h.test/3") and ledger.add(1, 7, "http://h.test/7")
    ledger.apply(0, Summary((Finished(3, "http://h.test/3", "p", 1, False),), 1, {}))
    assert run.error is None and ledger.open == [{}, {7: "http://h.test/7"}]
    ledger.reports(0, (Finished(3, "http://h.test/3", "p", 1, False),))  # ended already: dropped
    assert run.error is None
    ledger.reports(0, (Started(wrong, "http://h.test/x", "p", 0, None),))
    assert isinstance(run.error, ShardError)


def test_a_killed_worker_fails_its_unended_jobs_one_ending_each(
    server: ServerThread, tmp_path: Path
) -> None:
    urls = [
        gen(server, h, f"k{h}-{i}.bin", 20_000, "&rate=100000") for h in range(4) for i in range(4)
    ]
    run = download(tmp_path, urls, kill := ShardKiller(), per_host=2)
    assert kill.killed and ended(run) == Counter(urls)
    router = Router(run.options, 2)  # the whole list fits in a shard's room: sent at once
    zero = {url for url in urls if router.route(Job.from_url(url))[0] == 0}
    assert {f.url for f in run.results.failures} == zero
    assert {s.url for s in run.results.successes} == set(urls) - zero
    for failure in run.results.failures:
        assert "worker 0 died (killed by SIGKILL)" in str(failure.error)


def test_jobs_routed_to_a_lost_shard_fail_at_once_naming_it() -> None:
    run = Run([], make_options("/tmp/d"))
    ledger = Ledger(run, 2)
    assert ledger.add(0, 0, "http://h.test/0")
    ledger.lost(0, "worker 0 died (killed by SIGKILL)")
    assert not ledger.add(0, 1, "http://h.test/1") and ledger.add(1, 2, "http://h.test/2")
    failures = run.results.failures
    assert [f.url for f in failures] == ["http://h.test/0", "http://h.test/1"]
    assert all("worker 0 died" in str(f.error) for f in failures)
    assert ledger.open == [{}, {2: "http://h.test/2"}] and not ledger.complete


@pytest.mark.parametrize(
    ("given", "workers", "per_host", "concurrency"),
    [
        ({"per_host": 5, "concurrency": 9}, 2, [3, 2], [5, 4]),
        ({"per_host": 1, "concurrency": 100}, 4, [1], [100]),  # one connection: one shard
        ({"per_host": 8, "concurrency": 100, "host_delay": 0.5}, 4, [8], [100]),
    ],
)
def test_streamed_shards_share_per_host_and_concurrency(
    given: dict[str, Any], workers: int, per_host: list[int], concurrency: list[int]
) -> None:
    shards = stream_options(make_options("rel", **given, max_overall_rate=1000), workers)
    assert [o.per_host for o in shards] == per_host  # they add up to --per-host
    assert [o.concurrency for o in shards] == concurrency
    assert {o.max_overall_rate for o in shards} == {1000 // len(shards)}
    assert all(os.path.isabs(o.directory) for o in shards)
