"""The range planner (core/segments.py): planning, stealing, completion, resume, judging."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core import segments
from midair.core.segments import MIN_STEAL, OneSource, Piece, Plan, judge, piece_count

MiB = 1 << 20


@pytest.mark.parametrize(
    ("size", "split", "min_split", "expected"),
    [
        (256 * MiB, 16, 20 * MiB, 12),  # aria2: no piece under --min-split-size
        (256 * MiB, 16, 1 * MiB, 16),
        (39 * MiB, 16, 20 * MiB, 1),  # under twice min-split-size: one piece
        (40 * MiB, 16, 20 * MiB, 2),
        (0, 16, 1 * MiB, 1),
        (10, 4, 0, 4),  # a zero minimum is not a division by zero
    ],
)
def test_piece_count(size: int, split: int, min_split: int, expected: int) -> None:
    assert piece_count(size, split, min_split) == expected


def test_cut_covers_the_file_in_near_equal_pieces() -> None:
    pieces = segments.cut(10, 3)
    assert pieces == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.parametrize(
    ("finished", "expected"),
    [
        ([], [(0, 100)]),
        ([(0, 100)], []),
        ([(10, 20)], [(0, 10), (20, 100)]),
        ([(50, 60), (0, 10), (5, 15)], [(15, 50), (60, 100)]),  # unsorted, overlapping
        ([(90, 120)], [(0, 90)]),  # a record past the end does not grow the file
    ],
)
def test_gaps(finished: list[tuple[int, int]], expected: list[tuple[int, int]]) -> None:
    assert segments.gaps(100, finished) == expected


def test_plan_cuts_into_even_pieces_and_hands_them_out_in_order() -> None:
    plan = Plan(16 * MiB, split=4, min_split_size=1 * MiB)
    assert [(p.start, p.end) for p in plan.pieces] == segments.cut(16 * MiB, 4)
    taken = [plan.take(owner) for owner in range(4)]
    assert [p.start for p in taken if p] == [0, 4 * MiB, 8 * MiB, 12 * MiB]
    assert all(p and p.owner == i for i, p in enumerate(taken))


def test_range_header_is_closed_and_starts_at_the_next_byte() -> None:
    piece = Piece(100, 200, done=10)
    assert piece.range_header() == "bytes=110-199"


def test_a_free_connection_steals_the_back_half_of_the_largest_range_in_flight() -> None:
    plan = Plan(8 * MiB, split=2, min_split_size=1 * MiB)
    slow, fast = plan.take(0), plan.take(1)
    assert slow and fast
    plan.wrote(slow, 1 * MiB)  # slow has 3 MiB left
    plan.wrote(fast, 4 * MiB)  # fast is done
    stolen = plan.take(1)
    assert stolen == Piece(5 * MiB // 2, 4 * MiB, 0, 1)  # the middle of what slow has left
    assert slow.end == stolen.start and slow.remaining == stolen.remaining


def test_a_stolen_from_answer_is_cut_at_its_new_end() -> None:
    plan = Plan(4 * MiB, split=1, min_split_size=1 * MiB)
    first = plan.take(0)
    assert first
    stolen = plan.take(1)
    assert stolen and stolen.start == 2 * MiB
    assert plan.wrote(first, 3 * MiB) == 2 * MiB  # the rest is the thief's
    assert not first.remaining


def test_nothing_is_stolen_below_two_minimum_steals() -> None:
    plan = Plan(2 * MIN_STEAL, split=1, min_split_size=1)
    piece = plan.take(0)
    assert piece
    plan.wrote(piece, 1)
    assert plan.take(1) is None


def test_the_first_answer_reads_on_into_pieces_nobody_has_taken() -> None:
    plan = Plan(4 * MiB, split=4, min_split_size=1 * MiB)
    first = plan.take(0)
    third = plan.take(1)  # takes piece 1 ([1, 2) MiB)
    assert first and third
    assert plan.wrote(first, 1 * MiB + 10) == 1 * MiB  # piece 1 is owned: not absorbed
    plan.wrote(third, 1 * MiB)
    again = plan.take(0)
    assert again and again.start == 2 * MiB
    assert plan.wrote(again, 2 * MiB) == 2 * MiB  # piece 3 was waiting: absorbed
    assert plan.complete and len(plan.pieces) == 3


def test_a_released_piece_waits_again_with_its_bytes_kept() -> None:
    plan = Plan(4 * MiB, split=2, min_split_size=1 * MiB)
    piece = plan.take(0)
    assert piece
    plan.wrote(piece, 100)
    plan.release(piece)
    again = plan.take(5)
    assert again is piece and again.next == 100 and again.owner == 5


def test_completion_and_what_is_written() -> None:
    plan = Plan(4 * MiB, split=2, min_split_size=1 * MiB)
    a, b = plan.take(0), plan.take(1)
    assert a and b and not plan.complete
    plan.wrote(a, 2 * MiB)
    plan.wrote(b, 10)
    assert plan.written() == [(0, 2 * MiB + 10)]
    plan.wrote(b, 2 * MiB)
    assert plan.complete and plan.written() == [(0, 4 * MiB)]
    assert plan.take(2) is None and plan.connections == 0


def test_resume_fetches_only_the_gaps() -> None:
    finished = [(0, 1 * MiB), (3 * MiB, 4 * MiB)]
    plan = Plan(4 * MiB, split=1, min_split_size=1 * MiB, finished=finished)
    assert [(p.start, p.end) for p in plan.pieces] == [(1 * MiB, 3 * MiB)]
    piece = plan.take(0)
    assert piece and piece.range_header() == f"bytes={MiB}-{3 * MiB - 1}"
    plan.wrote(piece, 2 * MiB)
    assert plan.complete and plan.written() == [(0, 4 * MiB)]


def test_resume_cuts_the_gaps_up_to_split() -> None:
    plan = Plan(8 * MiB, split=4, min_split_size=1 * MiB, finished=[(0, 4 * MiB)])
    assert len(plan.pieces) == 4
    assert sum(p.remaining for p in plan.pieces) == 4 * MiB


def test_a_resume_of_a_finished_file_has_nothing_to_fetch() -> None:
    plan = Plan(MiB, split=4, min_split_size=1, finished=[(0, MiB)])
    assert plan.complete and plan.take(0) is None


def test_degrade_asks_for_no_more_connections() -> None:
    plan = Plan(8 * MiB, split=4, min_split_size=1 * MiB)
    plan.take(0)
    assert plan.connections == 4
    plan.degrade()
    assert plan.connections == 1


def test_sources_pick_the_url_of_each_piece() -> None:
    class ByOwner:
        def pick(self, piece: Piece, owner: int) -> str:
            return f"http://mirror{owner}/f"

    plan = Plan(4 * MiB, split=2, min_split_size=1 * MiB, sources=ByOwner())
    assert [p.source for p in (plan.take(0), plan.take(1)) if p] == [
        "http://mirror0/f",
        "http://mirror1/f",
    ]
    one = Plan(4 * MiB, split=2, min_split_size=1 * MiB, sources=OneSource("http://a/f"))
    assert (piece := one.take(0)) and piece.source == "http://a/f"


PIECE = Piece(100, 200, done=0, owner=1)


@pytest.mark.parametrize(
    ("status", "content_range", "validator", "action"),
    [
        (206, (100, 199, 1000), '"v1"', "keep"),
        (206, (100, 199, None), None, "keep"),  # no validator sent: the size decides
        (206, (100, 199, 1000), '"v2"', "restart"),  # another version: never spliced
        (200, None, '"v2"', "restart"),
        (206, (100, 199, 999), '"v1"', "restart"),  # another size
        (206, (0, 199, 1000), '"v1"', "restart"),  # not where we asked
        (206, None, '"v1"', "restart"),
        (200, None, '"v1"', "degrade"),  # Range ignored, same version
        (416, None, None, "restart"),
    ],
)
def test_judge(
    status: int,
    content_range: tuple[int, int, int | None] | None,
    validator: str | None,
    action: str,
) -> None:
    verdict = judge(PIECE, status, content_range, validator, '"v1"', 1000)
    assert verdict.action == action
    assert verdict.reason or action == "keep"


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 2 << 20),
    split=st.integers(1, 8),
    finished=st.lists(st.tuples(st.integers(0, 2 << 20), st.integers(0, 1 << 18)), max_size=3),
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 1 << 19), st.booleans()), max_size=60
    ),
)
def test_any_schedule_writes_every_byte_once(
    size: int,
    split: int,
    finished: list[tuple[int, int]],
    steps: list[tuple[int, int, bool]],
) -> None:
    """Connections write random amounts, fail and steal in any order: every byte of
    the file is written exactly once, and the plan is complete when it says so."""
    done = [(s, s + n) for s, n in finished]
    plan = Plan(size, split, min_split_size=1 << 16, finished=done)
    on_disk = bytearray(size)
    for s, e in done:
        on_disk[s : min(e, size)] = b"\1" * (min(e, size) - s) if s < size else b""
    held: dict[int, Piece] = {}

    def write(owner: int, count: int) -> None:
        piece = held.get(owner) or plan.take(owner)
        if piece is None:
            return
        held[owner] = piece
        at = piece.next
        kept = plan.wrote(piece, count)
        assert all(b == 0 for b in on_disk[at : at + kept]), "a byte written twice"
        on_disk[at : at + kept] = b"\1" * kept
        if not piece.remaining:
            del held[owner]

    for owner, count, fails in steps:
        if fails and owner in held:
            plan.release(held.pop(owner))
        else:
            write(owner, count)
    for piece in held.values():  # every connection but one fails; it finishes the rest
        plan.release(piece)
    held.clear()
    while not plan.complete:
        write(0, 1 << 20)
    assert all(on_disk), "a byte never written"
    assert plan.written() == ([(0, size)] if size else [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([[0, 10], [50, 100]], [(0, 10), (50, 100)]),
        ([], []),
        ([[0, 101]], None),  # past the end
        ([[10, 10]], None),  # empty
        ([[-1, 5]], None),
        ([[0, True]], None),  # a bool is not a byte offset
        ([[0, 1.5]], None),
        ([[0, 1, 2]], None),
        ({"0": 10}, None),
        ("0-10", None),
    ],
)
def test_recorded_ranges_from_a_control_file(
    value: object, expected: list[tuple[int, int]] | None
) -> None:
    assert segments.recorded(value, 100) == expected


def test_written_ranges_read_back_resume_the_same_gaps() -> None:
    plan = Plan(8 * MiB, split=4, min_split_size=1 * MiB)
    for owner in range(3):
        piece = plan.take(owner)
        assert piece
        plan.wrote(piece, MiB + owner)
    as_json = [list(r) for r in plan.written()]
    again = Plan(8 * MiB, split=4, min_split_size=MiB, finished=segments.recorded(as_json, 8 * MiB))
    assert sum(p.remaining for p in again.pieces) == 8 * MiB - (3 * MiB + 3)


def ticks_to_finish(plan: Plan, rates: list[int]) -> int:
    """Virtual time: each tick, connection ``i`` writes ``rates[i]`` bytes, taking
    a new piece (or stealing) whenever its own is done.  Requests cost nothing."""
    held: dict[int, Piece] = {}
    ticks = 0
    while not plan.complete:
        ticks += 1
        for owner, rate in enumerate(rates):
            piece = held.get(owner)
            if piece is None or not piece.remaining:
                piece = plan.take(owner)
            if piece is not None:
                held[owner] = piece
                plan.wrote(piece, rate)
    return ticks


def test_a_connection_ten_times_slower_does_not_hold_up_the_tail() -> None:
    """16 connections, one at a tenth of the others' speed: stealing ends the file
    within 1.2x of size / total rate; without it the slow piece alone takes ~10x."""
    size, fast = 256 * MiB, MiB  # the bench's file at 1 MiB/s a connection, a tick a second
    rates = [fast // 10] + [fast] * 15
    plan = Plan(size, split=16, min_split_size=MiB)
    ideal = size / sum(rates)
    assert ticks_to_finish(plan, rates) <= 1.2 * ideal + 2
    assert (size / 16) / rates[0] > 8 * ideal  # what the slow connection's own piece would take
