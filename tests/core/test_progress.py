"""Progress counters: what each kind of action adds up to."""

from __future__ import annotations

from midair.core.actions import Finished, Open, Prepare, Publish, Resume, Started, Write
from midair.core.progress import Tracker


def test_counters_follow_one_download() -> None:
    tracker = Tracker(jobs=1)
    for action in (
        Prepare(0, "/d/f", "http://h/f", None),
        Open(0, "/d/f", 0, Resume("http://h/f", 5, None, None)),
        Started(0, "http://h/f", "/d/f", 0, 5),
        Write(0, 0, b"abc"),
    ):
        tracker.observe(action)
    assert tracker.bytes_done == 3 and tracker.active[0].done == 3
    assert tracker.bytes_expected == 5
    tracker.observe(Write(0, 3, b"de"))
    tracker.observe(Publish(0, "/d/f", 5, None, "http://h/f"))
    tracker.observe(Finished(0, "http://h/f", "/d/f", 5, skipped=False))
    assert (tracker.files_done, tracker.active, tracker.bytes_done) == (1, {}, 5)
    assert [s.path for s in tracker.results.successes] == ["/d/f"]


def test_kinds_that_count_nothing_are_named() -> None:
    tracker = Tracker()
    assert tracker.counts(Write) and tracker.counts(Started) and tracker.counts(Finished)
    assert not any(tracker.counts(kind) for kind in (Prepare, Open, Publish))
    tracker = Tracker()
    tracker.observe(Prepare(0, "/d/f", "http://h/f", None))  # a kind it skips: no change
    assert tracker == Tracker()


def test_a_tracker_that_follows_nothing_still_counts_every_file() -> None:
    tracker = Tracker(jobs=1, follows=False)
    assert not tracker.counts(Started) and tracker.counts(Finished)
    tracker.observe(Started(0, "http://h/f", "/d/f", 0, 5))
    tracker.observe(Write(0, 0, b"abcde"))
    tracker.observe(Finished(0, "http://h/f", "/d/f", 5, skipped=False))
    assert tracker.active == {} and (tracker.files_done, tracker.bytes_done) == (1, 5)
