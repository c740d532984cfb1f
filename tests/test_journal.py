"""The batch journal: re-runs continue from it, a lock keeps a second run out, `midair
status` reads it, and a SIGKILL at any moment never leaves a row pointing at a wrong file."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Midair

import midair
import midair.journal
from midair import store
from midair.core.actions import Started
from midair.core.jobs import Checksum
from midair.journal import DEFAULT_NAME, Journal, entries
from midair.serve import ServerThread, expected_bytes, expected_sha256


def _urls(server: ServerThread, count: int) -> list[str]:
    return [server.url(i % 2, f"/gen/j{i}.bin?size={100 + i}") for i in range(count)]


def _status(directory: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "midair", "status", "--json", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_rerun_skips_done_and_repeats_earlier_failures(engine, tmp_path):
    midair_get = Midair(engine)
    with ServerThread(addresses=2) as server:
        bad = server.url(0, "/gen/gone.bin?status=404")
        urls = [*_urls(server, 6), bad]
        first = midair_get.get("-q", "--journal", "-d", str(tmp_path), *urls)
        assert first.returncode == 1, first.stderr
        asked = server.stats().requests
        again = midair_get.get("-q", "--journal", "-d", str(tmp_path), *urls)
        assert server.stats().requests == asked  # nothing fetched, not even the failure
        retried = midair_get.get("-q", "--journal", "--retry-failed", "-d", str(tmp_path), *urls)
        assert server.stats().requests == asked + 1  # only the failed job, once
    assert again.returncode == 1
    assert "failed in an earlier run: HTTP 404" in again.stderr
    assert retried.returncode == 1 and "gone.bin?status=404: HTTP 404" in retried.stderr
    for i in range(6):
        assert (tmp_path / f"j{i}.bin").read_bytes() == expected_bytes(f"j{i}.bin", 100 + i)
    status = _status(tmp_path)
    assert (status["done"], status["failed"], status["queued"], status["active"]) == (6, 1, 0, 0)
    assert status["reasons"] == {"HTTP 404": 1}


def test_second_run_on_a_locked_journal_refuses_naming_dir_and_pid(tmp_path):
    journal = Journal(str(tmp_path / DEFAULT_NAME))
    try:
        started = time.monotonic()
        out = Midair("epoll").get("--journal", "-d", str(tmp_path), "http://127.0.0.1:9/x")
        assert time.monotonic() - started < 10  # at once, not after trying the URL
    finally:
        journal.close()
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(tmp_path) in lines[0] and f"PID {os.getpid()}" in lines[0]
    assert not (tmp_path / "x").exists()


def test_a_copy_without_extended_attributes_is_recognised(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_tag", lambda fd, url, size: None)  # a file system without
    monkeypatch.setattr(store, "_read_tag", lambda path, follow_symlinks=True: None)
    first, copy = tmp_path / "first", tmp_path / "copy"
    with ServerThread(addresses=2) as server:
        urls = _urls(server, 4)
        ran = midair.download(urls, str(first), journal="", fsync=False)
        assert ran.ok and not any(s.skipped for s in ran.successes)
        shutil.copytree(first, copy)
        asked = server.stats().requests
        without = midair.download(urls, str(copy), fsync=False)  # the store alone: foreign
        again = midair.download(urls, str(copy), journal="", fsync=False)
        assert server.stats().requests == asked
    assert not without.ok and "not made by midair" in str(without.failures[0].error)
    assert again.ok and all(s.skipped for s in again.successes)
    assert sorted(Path(s.path).name for s in again.successes) == [f"j{i}.bin" for i in range(4)]
    read = midair.read_journal(str(copy))
    assert len(read.successes) == 4 and not read.failures


def test_verify_fetches_again_a_file_gone_since(tmp_path):
    with ServerThread(addresses=2) as server:
        urls = _urls(server, 3)
        assert midair.download(urls, str(tmp_path), journal="", fsync=False).ok
        (tmp_path / "j1.bin").unlink()
        trusting = midair.download(urls, str(tmp_path), journal="", fsync=False)
        assert not (tmp_path / "j1.bin").exists()  # done in the journal: no stat, no fetch
        checked = midair.download(urls, str(tmp_path), journal="", verify=True, fsync=False)
    assert trusting.ok and checked.ok
    assert [s.skipped for s in checked.successes].count(False) == 1
    assert (tmp_path / "j1.bin").read_bytes() == expected_bytes("j1.bin", 101)


def test_verify_fetches_again_a_file_whose_checksum_fails(tmp_path):
    size = 5000
    sha = Checksum("sha256", expected_sha256("c.bin", size))
    with ServerThread(addresses=1) as server:
        url = server.url(0, f"/gen/c.bin?size={size}")
        assert midair.download([url], str(tmp_path), journal="", checksum=sha, fsync=False).ok
        target = tmp_path / "c.bin"
        corrupt = bytearray(target.read_bytes())
        corrupt[1234] ^= 0xFF  # same size: only the checksum can tell
        target.write_bytes(bytes(corrupt))
        asked = server.stats().requests
        trusting = midair.download([url], str(tmp_path), journal="", checksum=sha, fsync=False)
        assert server.stats().requests == asked and target.read_bytes() == bytes(corrupt)
        checked = midair.download(
            [url], str(tmp_path), journal="", checksum=sha, verify=True, fsync=False
        )
        assert server.stats().requests == asked + 1
        again = midair.download(
            [url], str(tmp_path), journal="", checksum=sha, verify=True, fsync=False
        )
        assert server.stats().requests == asked + 1  # verified good now: skipped
    assert trusting.ok and trusting.successes[0].skipped
    assert checked.ok and not checked.successes[0].skipped
    assert target.read_bytes() == expected_bytes("c.bin", size)
    assert again.ok and again.successes[0].skipped


def test_a_signed_url_done_before_is_found_by_name_without_xattrs(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_tag", lambda fd, url, size: None)  # a file system without
    monkeypatch.setattr(store, "_read_tag", lambda path, follow_symlinks=True: None)
    first, copy = tmp_path / "first", tmp_path / "copy"
    with ServerThread(addresses=2) as server:

        def signed(i: int, token: str) -> str:
            return server.url(i % 2, f"/gen/j{i}.bin?size={100 + i}&id={i}&token={token}")

        assert midair.download([signed(i, "a") for i in range(3)], str(first), journal="").ok
        shutil.copytree(first, copy)
        asked = server.stats().requests
        renewed = [signed(i, "b") for i in range(3)]
        again = midair.download(renewed, str(copy), journal="", fsync=False)
        third = midair.download([signed(i, "c") for i in range(3)], str(copy), journal="")
        assert server.stats().requests == asked  # each found by name: nothing fetched
        other_id = server.url(0, "/gen/j0.bin?size=100&id=9&token=b")  # not j0's file
        other = midair.download([other_id], str(copy), journal="", fsync=False)
        assert server.stats().requests == asked  # another id: never j0's file, never fetched
    assert again.ok and third.ok and all(s.skipped for s in [*again.successes, *third.successes])
    assert sorted(Path(s.path) for s in again.successes) == [copy / f"j{i}.bin" for i in range(3)]
    assert not other.ok and "not made by midair" in str(other.failures[0].error)
    assert (copy / "j0.bin").read_bytes() == expected_bytes("j0.bin", 100)
    rows = {e.url: e for e in entries(str(copy / DEFAULT_NAME))}
    assert {url for url, e in rows.items() if e.state == "done"} == {
        signed(i, "c") for i in range(3)
    }  # re-keyed to the latest signature: the next run finds them at once
    for i in range(3):  # names moved along with the copied directory's journal
        assert rows[signed(i, "c")].name == str(copy / f"j{i}.bin")


def test_journal_elsewhere_and_a_bad_value(tmp_path):
    with pytest.raises(midair.InputError, match="journal"):
        midair.Downloader(str(tmp_path), journal=3)
    with ServerThread(addresses=2) as server:
        where = tmp_path / "elsewhere.sqlite"
        assert midair.download(_urls(server, 2), str(tmp_path / "d"), journal=str(where)).ok
    assert not (tmp_path / "d" / DEFAULT_NAME).exists()
    assert {e.state for e in entries(str(where))} == {"done"}


# --- SIGKILL at random moments over 10,000 files ------------------------------------------
FILES = 10_000
KILLS = 5


def _done_rows_are_right(journal: Path, root: Path) -> int:
    """Every row saying done names a published file with the server's bytes."""
    done = 0
    for entry in entries(str(journal)):
        if entry.state == "done":
            name = Path(entry.name or "")
            assert name.read_bytes() == (root / name.name).read_bytes(), entry.name
            assert entry.size == name.stat().st_size
            done += 1
    return done


def test_sigkill_at_random_moments_then_complete(nginx, tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    for i in range(FILES):
        (root / f"t{i}.txt").write_bytes(b"%d\n" % (i * 7919))
    server = nginx(root, hosts=["127.0.0.1"])
    listing = tmp_path / "list.txt"
    listing.write_text("".join(server.url(0, f"/t{i}.txt") + "\n" for i in range(FILES)))
    command = Midair("epoll").command("-q", "--journal", "-d", str(out), "-i", str(listing))
    journal = out / DEFAULT_NAME
    seeded = random.Random(9)
    progress = []
    for _ in range(KILLS):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(seeded.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if journal.exists():
            progress.append(_done_rows_are_right(journal, root))
            status = _status(out)  # nobody runs: nothing active, the rest still queued
            assert (status["active"], status["running"]) == (0, None)
            assert status["queued"] == FILES - progress[-1] - int(status["failed"])
    final = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _done_rows_are_right(journal, root) == FILES
    assert progress == sorted(progress) and progress[-1] > 0  # kills lost no finished work
    for i in range(0, FILES, 1):
        assert (out / f"t{i}.txt").read_bytes() == b"%d\n" % (i * 7919)


# --- a library run's results, read from its journal ----------------------------------------
def _runs(server: ServerThread, directory: Path) -> list[tuple[object, ...]]:
    """Two journaled runs' results over one batch, each as read right after it (a later run
    on the journal re-reads the rows): the first finds j0 on disk (a skip by the store),
    fetches the rest and fails one (404); the second finds all settled by the journal."""
    urls = [*_urls(server, 4), server.url(0, "/gen/lost.bin?status=404")]
    midair.download(urls[:1], str(directory), fsync=False)
    seen = []
    for _ in range(2):
        results = midair.download(urls, str(directory), journal="", fsync=False)
        kinds = (type(results.successes), type(results.failures))
        counts = (len(results), len(results.successes), len(results.failures), results.ok)
        seen.append((_plain(results, directory), kinds, counts, results.successes[-1]))
    return seen


def _plain(results: midair.Results, directory: Path) -> list[tuple[object, ...]]:
    """``results`` as comparable tuples: paths relative, errors by their words and status."""
    rows: list[tuple[object, ...]] = []
    for record in results:
        if isinstance(record, midair.Success):
            path = os.path.relpath(record.path, directory)
            rows.append((record.url, path, record.size, record.skipped))
        else:
            rows.append((record.url, str(record.error), record.error.status))
    return sorted(rows, key=repr)


@pytest.mark.parametrize("limit", [0, 2])  # from the first job on; from the third
def test_results_read_from_the_journal_equal_those_held_in_memory(limit, tmp_path, monkeypatch):
    with ServerThread(addresses=2) as server:
        held = _runs(server, tmp_path / "held")  # 5 jobs: fewer than HELD, held in memory
        with monkeypatch.context() as past_held:
            past_held.setattr(midair.journal, "HELD", limit)
            read = _runs(server, tmp_path / "read")
    assert all(kinds != (list, list) for _, kinds, _, _ in read)  # nothing per file held
    assert all(kinds == (list, list) for _, kinds, _, _ in held)
    assert [(rows, counts) for rows, _, counts, _ in read] == [
        (rows, counts) for rows, _, counts, _ in held
    ]
    (first, *_), (second, *_) = read
    assert [row[3] for row in first if len(row) == 4] == [True, False, False, False]
    assert [row[3] for row in second if len(row) == 4] == [True] * 4
    lost = server.url(0, "/gen/lost.bin?status=404")
    earlier = f"{lost}: failed in an earlier run: HTTP 404 (--retry-failed retries it)"
    assert [row[1] for row in second if len(row) == 3] == [earlier]
    assert read[1][2] == (5, 4, 1, False)
    assert isinstance(read[1][3], midair.Success)  # an index reads one row


def test_active_comes_from_the_runs_tracker_not_a_report_per_start(tmp_path):
    from midair.core.progress import Tracker, Transfer
    from midair.journal import latest_run

    path = str(tmp_path / DEFAULT_NAME)
    journal = Journal(path)
    quiet, shown = Tracker(jobs=10, files_done=3, follows=False), Tracker(jobs=10)
    try:
        assert Started not in journal.recorders()  # none made for the journal's sake
        journal.watch(quiet, concurrency=4)
        journal.flush()
        bounded = latest_run(path)[1]  # 7 jobs not ended, at most 4 in the air
        quiet.files_failed = 5
        journal.flush()
        tail = latest_run(path)[1]  # 2 left: both may be in the air
        shown.active = {1: Transfer("u", "p", 0, None), 2: Transfer("v", "q", 0, None)}
        journal.watch(shown, concurrency=4)
        journal.flush()
        followed = latest_run(path)[1]
    finally:
        journal.close()
    assert (bounded, tail, followed) == (4, 2, 2)
    assert latest_run(path)[1] == 0  # ended: nothing in the air
