"""What a run remembers per job moves to disk past a bound, and means the same there."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midair import fair as fair_module
from midair import run as run_module
from midair import spool as spool_module
from midair.core import intake as intake_module
from midair.core.actions import OnDisk, Prepare
from midair.core.batch import Batch
from midair.core.jobs import Job, Options
from midair.fair import Fair
from midair.run import distinct, iter_distinct
from midair.spool import SpilledMap, Spool, claims_kept

KEYS = st.sampled_from(["/d/a", "/d/b", "/d/c", "/d/a.1", "/d/é", "/d/\udcff"])
OPS = st.lists(
    st.tuples(st.sampled_from(["set", "get", "del", "pop", "setdefault", "update"]), KEYS),
    max_size=60,
)


@given(OPS, st.integers(1, 4))
def test_a_spilled_map_answers_as_a_dict(ops: list[tuple[str, str]], limit: int) -> None:
    spool = Spool()
    spilled, plain = SpilledMap(spool, limit), dict[str, int]()
    for number, (op, key) in enumerate(ops):
        if op == "set":
            spilled[key] = plain[key] = number
        elif op == "del" and key in plain:
            del spilled[key], plain[key]
        elif op == "pop":
            assert spilled.pop(key, None) == plain.pop(key, None)
        elif op == "setdefault":
            assert spilled.setdefault(key, number) == plain.setdefault(key, number)
        elif op == "update":
            spilled.update({key: number})
            plain.update({key: number})
        for each in ("/d/a", "/d/b", "/d/c", "/d/a.1", "/d/é", "/d/\udcff"):
            assert (each in spilled, spilled.get(each)) == (each in plain, plain.get(each))
    spool.close()


def test_a_spilled_map_keeps_its_entries_on_disk_past_its_limit() -> None:
    spool = Spool()
    spilled = SpilledMap(spool, limit=3)
    for number in range(10):
        spilled[f"/d/{number}"] = number
    assert spool.used and len(spilled._recent) < 3  # the rest went to disk
    assert [spilled[f"/d/{n}"] for n in range(10)] == list(range(10))
    with pytest.raises(KeyError):
        del spilled["/d/none"]
    spool.close()


@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=30), st.booleans())
def test_repeats_are_dropped_alike_when_what_was_seen_is_on_disk(
    names: list[str], with_out: bool
) -> None:
    jobs = [Job.from_url(f"http://h/{n}", out=n if with_out and n < "c" else None) for n in names]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "LIMIT", 2)
        spool = Spool()
        assert list(iter_distinct(jobs, spool)) == distinct(jobs)
        assert spool.used == (len({(j.url.text, j.out) for j in jobs}) >= 2)
        spool.close()


def test_a_clash_with_a_name_claimed_windows_before_is_found_on_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list longer than the claims' bound: names claimed early, now on disk, still number
    the late clashes past them, as with every claim in memory."""
    monkeypatch.setattr(intake_module, "WINDOW", 4)
    monkeypatch.setattr(spool_module, "LIMIT", 4)
    names = [f"f{i}" for i in range(12)] + ["f0", "f5", "f5", "new"]
    spool = Spool()
    got = _names_of(Batch(_jobs(names), _options(), claims_kept=claims_kept(spool)))
    assert spool.used
    assert got == _names_of(Batch(_jobs(names), _options()))  # all in memory
    assert got[12:] == ["/d/f0.1", "/d/f5.1", "/d/f5.2", "/d/new"]
    spool.close()


def _jobs(names: list[str]) -> list[Job]:
    return [Job.from_url(f"http://h/{name}") for name in names]


def _options() -> Options:
    return Options(directory="/d", concurrency=1)


def _names_of(batch: Batch) -> list[str]:
    """Each job's path, in id order, window after window, every file found complete."""
    paths: dict[int, str] = {}
    actions = batch.start(0.0)
    while True:
        for action in actions:
            if isinstance(action, Prepare):
                paths[action.download] = action.path
                batch.prepared(action.download, OnDisk("complete", 1), 0.0)
        if not batch.wants_jobs:
            break
        batch.take_jobs()
        actions = batch.name_jobs({}, 0.0) + batch.prepare_more(4, 0.0)
    assert batch.done
    return [paths[ident] for ident in sorted(paths)]


# --- fair across hosts --------------------------------------------------------------------
def _fair(jobs: list[Job], window: int, origins: int, spool: Spool | None = None) -> list[Job]:
    return list(Fair(jobs, spool or Spool(), window=window, origins=origins))


def test_a_list_within_a_window_keeps_its_order() -> None:
    jobs = [Job.from_url(f"http://{'ab'[i % 3 == 0]}/{i}") for i in range(8)]
    assert _fair(jobs, window=8, origins=4) == jobs


def test_a_few_jobs_behind_a_million_of_one_host_come_out_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the first window, the other hosts' jobs are found and handed out in turn, long
    before the crowd's: here within 2 x 100 jobs of the first window, not after 20,000."""
    monkeypatch.setattr(fair_module, "BLOCK", 64)
    crowd = [Job.from_url(f"http://a/{i}") for i in range(20_000)]
    few = [Job.from_url(f"http://b{i}/x") for i in range(100)]
    spool = Spool()
    fair = Fair(crowd + few, spool, window=100, origins=17)
    out = []
    for job in fair:
        out.append(job)
        while fair.searching:  # what a session does between events
            fair.search(2048)
    assert sorted(j.url.text for j in out) == sorted(j.url.text for j in crowd + few)
    positions = [i for i, job in enumerate(out) if job.url.host != "a"]
    assert max(positions) < 100 + 2 * 100
    assert spool.used  # the crowd's look-ahead went to disk
    assert [j for j in out if j.url.host == "a"] == crowd  # one host's jobs keep their order


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=80),
    st.integers(1, 6),
    st.integers(1, 4),
)
def test_fair_hands_out_every_job_once_each_host_in_order(
    jobs: list[tuple[str, bool]], window: int, origins: int
) -> None:
    listed = [
        Job.from_url(f"http://{host}/{i}", out=f"o{i}" if named else None)
        for i, (host, named) in enumerate(jobs)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fair_module, "BLOCK", 2)  # most of a host's look-ahead on disk
        out = _fair(listed, window, origins)
    assert sorted(out, key=listed.index) == listed
    for host in "abc":
        assert [j for j in out if j.url.host == host] == [j for j in listed if j.url.host == host]
    assert out[:window] == listed[:window]
