"""Jobs taken from an iterator a window at a time, named across the whole batch."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midair.core import intake as intake_module
from midair.core.actions import Failed, OnDisk, Prepare
from midair.core.batch import Batch
from midair.core.errors import InputError
from midair.core.jobs import Job, Options, iter_input_file, parse_input_file

H = "http://h.example"
WINDOW = 4  # max(intake.WINDOW, 4 x concurrency) with the two below


@pytest.fixture(autouse=True)
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "WINDOW", WINDOW)


class Counted:
    """Jobs for ``names``, counting how many the batch has taken."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.taken = names, 0

    def __iter__(self) -> Iterator[Job]:
        for name in self.names:
            self.taken += 1
            yield Job.from_url(f"{H}/{name}")


def streamed(names: list[str], **options: object) -> tuple[Batch, Counted]:
    jobs = Counted(names)
    opts = Options(directory="/d", concurrency=1, **options)  # type: ignore[arg-type]
    return Batch(iter(jobs), opts, seed=1), jobs


def prepares(actions: list[object]) -> dict[int, str]:
    return {a.download: a.path for a in actions if isinstance(a, Prepare)}


def next_window(batch: Batch, now: float = 0.0) -> list[object]:
    """What a session does once ``wants_jobs``: take, survey (nothing on disk), name, prepare."""
    assert batch.wants_jobs
    batch.take_jobs()
    return batch.name_jobs({}, now) + batch.prepare_more(WINDOW, now)


def test_start_takes_one_window_and_the_next_comes_as_jobs_end() -> None:
    batch, jobs = streamed([f"f{i}" for i in range(10)])
    first = batch.start(0.0)
    assert jobs.taken == WINDOW  # no job read past the window
    assert prepares(first) == {i: f"/d/f{i}" for i in range(WINDOW)}
    assert not batch.wants_jobs and not batch.done  # a window's jobs are unended
    batch.prepared(0, OnDisk("complete", 1), 0.0)  # one ends: room for the next window
    assert prepares(next_window(batch)) == {i: f"/d/f{i}" for i in range(WINDOW, 2 * WINDOW)}
    assert jobs.taken == 2 * WINDOW
    for ident in range(1, 2 * WINDOW):
        batch.prepared(ident, OnDisk("complete", 1), 0.0)
    assert prepares(next_window(batch)) == {8: "/d/f8", 9: "/d/f9"}
    assert not batch.wants_jobs and not batch.done
    batch.prepared(8, OnDisk("complete", 1), 0.0)
    batch.prepared(9, OnDisk("complete", 1), 0.0)
    assert batch.done and jobs.taken == 10


def test_a_name_taken_by_an_earlier_window_is_numbered_past() -> None:
    batch, _ = streamed(["a", "b", "c", "d", "a", "b", "b", "e"])
    assert prepares(batch.start(0.0)) == {0: "/d/a", 1: "/d/b", 2: "/d/c", 3: "/d/d"}
    batch.prepared(0, OnDisk("complete", 1), 0.0)  # "a" ended: its name stays claimed
    for ident in (1, 2, 3):
        batch.prepared(ident, OnDisk("complete", 1), 0.0)
    assert prepares(next_window(batch)) == {4: "/d/a.1", 5: "/d/b.1", 6: "/d/b.2", 7: "/d/e"}


def test_no_clobber_across_windows_names_the_earlier_url_while_it_is_held() -> None:
    batch, _ = streamed(["a", "b", "c", "d", "a", "d"], no_clobber=True)
    batch.start(0.0)
    batch.prepared(0, OnDisk("complete", 1), 0.0)  # "a" ended and is forgotten; "d" is not
    actions = next_window(batch)
    failed = {a.download: a.error.reason for a in actions if isinstance(a, Failed)}
    assert failed == {
        4: "/d/a is also the target of another URL of the list (--no-clobber)",
        5: f"/d/d is also the target of {H}/d (--no-clobber)",
    }


def test_an_ended_job_is_forgotten_but_for_its_name() -> None:
    batch, _ = streamed(["a", "b"])
    batch.start(0.0)
    batch.prepared(0, OnDisk("complete", 1), 0.0)
    assert 0 not in batch._jobs and 0 not in batch._downloads
    assert batch._intake.claims["/d/a"] == intake_module.ENDED
    assert batch.prepared(0, OnDisk("complete", 1), 0.0) == []  # a late answer: nothing


# --- the input list, as it is read ----------------------------------------------------------
LINES = st.sampled_from(
    [
        "http://h/a",
        "http://h/b?x=1",
        "http://h/c\thttp://m/c",
        "  out=o",
        "  bogus",
        "",
        "# note",
        "ftp://h/x",
        "http://h/d\x0chttp://h/e",
    ]
)


@given(st.lists(LINES, max_size=40), st.integers(1, 5))
def test_a_list_read_as_it_comes_is_the_list_read_whole(lines: list[str], block: int) -> None:
    text = "".join(line + "\n" for line in lines)
    whole: list[str] = []
    expected = parse_input_file(text, "l", lambda e: whole.append(str(e)))
    seen: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("midair.core.jobs.BLOCK_LINES", block)
        got = list(iter_input_file(io.StringIO(text), "l", lambda e: seen.append(str(e))))
    assert got == expected and seen == whole


def test_a_bad_entry_far_down_a_list_names_its_line_when_its_block_is_read() -> None:
    lines = [f"http://h/{i}\n" for i in range(5000)]
    lines[4321] = "ftp://h/x\n"
    read: list[Job] = []
    reported: list[tuple[int, str]] = []  # (jobs read by then, the error)
    jobs = iter_input_file(iter(lines), "big.txt", lambda e: reported.append((len(read), str(e))))
    read.extend(jobs)
    assert len(read) == 4999
    [(by_then, error)] = reported
    assert error.startswith("big.txt:4322: ftp://h/x: unsupported scheme")
    assert 4000 < by_then <= 4321  # with its block of lines, not after the whole list
    with pytest.raises(InputError, match=r"^big\.txt:4322: ftp://h/x"):  # --check-input's way
        list(iter_input_file(iter(lines), "big.txt"))
