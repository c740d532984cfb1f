"""Long lists stream: jobs are read as the run goes, a window ahead of what is in flight."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from midair import Downloader
from midair.core import batch as batch_module
from midair.core import intake as intake_module
from midair.core.actions import Action, Failed, Finished, Started
from midair.core.jobs import Job
from midair.engines.blocking import PREFETCH
from midair.serve import ServerThread, expected_bytes

WINDOW = 64  # jobs taken at a time here (max(intake.WINDOW, 4 x concurrency))
STREAMING = ["epoll", "asyncio", "threads", "sequential"]  # every single-loop family


class Pulled:
    """Jobs for files ``0..count-1`` (some twice: a repeat is one download), counting how
    many the run has read and how many ended."""

    def __init__(self, server: ServerThread, count: int) -> None:
        self.server, self.count = server, count
        self.pulled = self.ended = 0
        self.at_start: int | None = None  # jobs read when the first transfer began

    def __iter__(self) -> Iterator[Job]:
        for i in range(self.count):
            self.pulled += 1
            yield self.job(i)
            if i % 10 == 0:
                yield self.job(i)  # the same URL again, at once

    def job(self, i: int) -> Job:
        return Job.from_url(self.server.url(i % 2, f"/gen/s{i}.bin?size={1 + i % 7}"))

    def heard(self, action: Action) -> None:
        if isinstance(action, Started) and self.at_start is None:
            self.at_start = self.pulled
        if isinstance(action, Finished | Failed):
            self.ended += 1


def held_by_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most jobs any batch held (taken, not ended) right after taking a window."""
    most = [0]
    take = batch_module.Batch.take_jobs

    def take_jobs(batch: batch_module.Batch) -> Any:
        survey = take(batch)
        most[0] = max(most[0], len(batch._jobs))
        return survey

    monkeypatch.setattr(batch_module.Batch, "take_jobs", take_jobs)
    return most


@pytest.mark.parametrize("engine", STREAMING)
def test_a_generator_is_read_a_window_ahead_of_what_ended(
    engine: str, http1_server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "WINDOW", WINDOW)
    held = held_by_batches(monkeypatch)
    jobs = Pulled(http1_server, 600)
    downloader = Downloader(str(tmp_path), engine=engine, concurrency=8, fsync=False)
    downloader.on_event = jobs.heard
    results = downloader.add_jobs(iter(jobs)).run()
    # (``sequential`` reads PREFETCH jobs ahead, to look their host names up at once.)
    read_ahead = PREFETCH if engine == "sequential" else 0
    assert jobs.at_start is not None and jobs.at_start <= WINDOW + read_ahead
    assert WINDOW < held[0] < 2 * WINDOW  # windows overlapped, never two whole ones held
    assert results.ok and len(results.successes) == jobs.ended == jobs.pulled == 600
    assert downloader.last_run is not None and downloader.last_run.tracker.jobs == 600
    for i in (0, 299, 599):
        assert (tmp_path / f"s{i}.bin").read_bytes() == expected_bytes(f"s{i}.bin", 1 + i % 7)


def test_the_processes_engine_reads_a_generator_whole(
    http1_server: ServerThread, tmp_path: Path
) -> None:
    jobs = Pulled(http1_server, 300)
    downloader = Downloader(
        str(tmp_path), engine="processes", engine_options={"workers": 2}, fsync=False
    )
    results = downloader.add_jobs(iter(jobs)).run()
    assert results.ok and len(results.successes) == 300 and jobs.pulled == 300


def midair_get(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "midair", "get", "--engine", "epoll", "--no-fsync", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_bad_line_deep_in_a_list_fails_itself_alone(
    http1_server: ServerThread, tmp_path: Path
) -> None:
    lines = [http1_server.url(i % 2, f"/gen/l{i}.bin?size=3") for i in range(3000)]
    lines[2499] = "ftp://127.0.0.1/bad"  # in the list's second block of lines
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    checked = midair_get("-q", "--check-input", "-d", str(tmp_path / "out"), "-i", str(listing))
    assert checked.returncode == 2 and f"{listing}:2500: ftp://127.0.0.1/bad" in checked.stderr
    assert not (tmp_path / "out").exists()
    result = midair_get("-q", "-d", str(tmp_path / "out"), "-i", str(listing))
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("(entry skipped)") == 1
    assert f"{listing}:2500: ftp://127.0.0.1/bad" in result.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 2999 and "l2499.bin" not in files
    assert (tmp_path / "out" / "l2999.bin").read_bytes() == expected_bytes("l2999.bin", 3)
    del lines[2499]
    listing.write_text("\n".join(lines) + "\n")  # checked whole, then read again as it goes
    checked = midair_get("-q", "--check-input", "-d", str(tmp_path / "all"), "-i", str(listing))
    assert checked.returncode == 0, checked.stderr
    assert len(list((tmp_path / "all").iterdir())) == 2999


def test_a_metalink_url_in_a_streamed_list_fails_alone_saying_how_to_follow_it(
    http1_server: ServerThread, tmp_path: Path
) -> None:
    """Metalinks are followed before the run; a streamed list is read during it."""
    doc = http1_server.url(0, "/gen/files.meta4?size=10")
    plain = http1_server.url(1, "/gen/plain.bin?size=5")
    jobs = (Job.from_url(u) for u in (doc, plain))
    results = Downloader(str(tmp_path), engine="epoll").add_jobs(jobs).run()
    assert [s.url for s in results.successes] == [plain]
    [failure] = results.failures
    assert failure.url == doc and "streamed list is not followed" in failure.error.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.bin"]
    saved = Downloader(str(tmp_path / "saved"), engine="epoll", follow_metalink=False)
    assert saved.add_jobs(Job.from_url(u) for u in (doc,)).run().ok  # saved as a file


@pytest.mark.parametrize("engine", ["epoll", "asyncio", "threads"])
def test_a_few_files_behind_a_long_list_of_one_host_finish_early(
    engine: str, http1_server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """80 slow files on one host, then 5 on another: the 5 are found by reading ahead while
    connections idle (``midair.fair``) and end long before the 80; in list order they would
    join the batch only once all but a window of the 80 had ended."""
    monkeypatch.setattr(intake_module, "WINDOW", 16)  # = 4 x concurrency
    crowd = [http1_server.url(0, f"/gen/a{i}?size=10&latency=0.02") for i in range(80)]
    few = [http1_server.url(1, f"/gen/b{i}?size=10") for i in range(5)]
    ended: list[str] = []
    downloader = Downloader(str(tmp_path), engine=engine, concurrency=4, per_host=1, fsync=False)
    downloader.on_event = lambda a: ended.append(a.url) if isinstance(a, Finished) else None
    results = downloader.add_jobs(Job.from_url(url) for url in crowd + few).run()
    assert results.ok and len(ended) == 85
    last_of_few = max(ended.index(url) for url in few)
    assert last_of_few < 16 + 10  # in list order: after the 75th of the crowd
