"""A download's states: the table of moves, every pair of states, and a batch's walks."""

from __future__ import annotations

import itertools

import pytest

from midair.core.actions import Disk, Failed, OnDisk, Retrying, Write
from midair.core.batch import Batch
from midair.core.errors import DestinationError
from midair.core.jobs import Job, Options
from midair.core.state import ENDS, MOVES, DownloadState, StateError
from midair.core.transfer import Download

S = DownloadState
H = "http://h.example"
PAIRS = list(itertools.product(S, S))


def download_in(state: DownloadState) -> Download:
    d = Download(0, Job.from_url(f"{H}/f"), Options(directory="/d"))
    d.state = state
    return d


def test_the_table_names_every_state() -> None:
    assert set(MOVES) == set(S)
    assert all(targets <= set(S) for targets in MOVES.values())


@pytest.mark.parametrize(("start", "to"), PAIRS, ids=[f"{a.name}-{b.name}" for a, b in PAIRS])
def test_each_move_is_taken_exactly_when_the_table_allows_it(
    start: DownloadState, to: DownloadState
) -> None:
    d = download_in(start)
    if to in MOVES[start]:
        d.move(to)
        assert d.state is to
    else:
        with pytest.raises(StateError, match=f"download 0: {start.name} -> {to.name}"):
            d.move(to)
        assert d.state is start  # a refused move changes nothing


def test_the_ends_are_final_and_every_other_state_can_fail() -> None:
    assert {S.FINISHED, S.FAILED} == ENDS
    assert MOVES[S.FINISHED] == MOVES[S.FAILED] == frozenset()
    assert all(S.FAILED in MOVES[s] for s in S if s not in ENDS)


def test_every_state_is_reached_from_new_and_reaches_an_end() -> None:
    assert _reachable(S.NEW) == set(S)
    assert all(S.FINISHED in _reachable(s) for s in S if s not in ENDS)


def _reachable(start: DownloadState) -> set[DownloadState]:
    seen, frontier = {start}, [start]
    while frontier:
        for s in MOVES[frontier.pop()] - seen:
            seen.add(s)
            frontier.append(s)
    return seen


def test_a_new_download_is_new() -> None:
    assert Download(0, Job.from_url(f"{H}/f"), Options(directory="/d")).state is S.NEW


# --- a batch moves its downloads along the table -------------------------------------------
HEAD = b'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nETag: "e"\r\n\r\n'


class _Followed(Batch):
    """A batch that keeps the download it ended last (a batch forgets an ended job)."""

    ended: Download | None = None

    def _end(self, d: Download) -> None:
        self.ended = d
        super()._end(d)


def one_job_batch() -> Batch:
    return _Followed([Job.from_url(f"{H}/f")], Options(directory="/d", retries=3), seed=1)


def state(batch: Batch) -> DownloadState:
    d = batch._downloads.get(0) or getattr(batch, "ended", None)
    assert d is not None
    return d.state


def test_a_file_s_usual_life() -> None:
    batch = one_job_batch()
    batch.start(0.0)
    assert state(batch) is S.PREPARING
    batch.prepared(0, OnDisk("fresh"), 0.0)
    assert state(batch) is S.FETCHING  # queued, and straight onto the new connection
    batch.connected(1, 0.1)
    batch.received(1, HEAD + b"abcd", 0.2)
    assert state(batch) is S.PUBLISHING
    batch.published(0, 0.3)
    assert state(batch) is S.FINISHED and batch.done


def test_a_file_already_complete_goes_from_preparing_to_finished() -> None:
    batch = one_job_batch()
    batch.start(0.0)
    batch.prepared(0, OnDisk("complete", 4), 0.0)
    assert state(batch) is S.FINISHED and batch.done


def test_a_broken_attempt_waits_then_queues_again() -> None:
    batch = one_job_batch()
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    actions = batch.closed(1, 0.1)  # closed before any answer: a failed attempt
    assert any(isinstance(a, Retrying) for a in actions) and state(batch) is S.WAITING
    deadline = batch.next_deadline()
    assert deadline is not None
    batch.timer(deadline)
    assert state(batch) is S.FETCHING  # queued, then on a new connection


def test_a_late_write_failure_of_a_waiting_download_fails_it_once_and_the_timer_skips_it() -> None:
    batch = one_job_batch()
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    actions = batch.received(1, HEAD + b"ab", 0.2) + batch.closed(1, 0.3)  # cut: retry later
    assert any(isinstance(a, Write) for a in actions) and state(batch) is S.WAITING
    error = DestinationError(f"{H}/f", "cannot write /d/f: disk full")  # that Write's answer
    assert [type(a) for a in batch.published(0, 0.4, error)] == [Failed]
    assert state(batch) is S.FAILED and batch.done
    assert batch.timer(10.0) == []  # the retry's timer finds it ended


def test_a_late_write_failure_of_a_queued_download_takes_it_off_its_host() -> None:
    batch = Batch([Job.from_url(f"{H}/f")], Options(directory="/d", concurrency=1), seed=1)
    batch.start(0.0)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    batch.received(1, HEAD + b"ab", 0.2)
    d = batch._downloads[0]
    batch._close(batch._conns[1], 0.3)  # as a kept-alive race does: back in the queue at once
    batch._enqueue(d, 0.3)
    assert d.state is S.QUEUED
    error = DestinationError(f"{H}/f", "cannot write /d/f: disk full")
    batch.published(0, 0.4, error)
    assert d.state is S.FAILED
    assert all(d not in host.pending for host in batch._hosts.values())


# --- what the store found: OnDisk.kind -------------------------------------------------
@pytest.mark.parametrize("kind", list(Disk))
def test_on_disk_kinds_are_disk_members_given_as_members_or_words(kind: Disk) -> None:
    assert OnDisk(kind).kind is kind
    assert OnDisk(kind.value).kind is kind  # the word a control file or a test may hold


def test_a_word_that_is_no_disk_kind_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="'gone'"):
        OnDisk("gone")
