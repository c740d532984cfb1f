"""Segments through the batch (-s): one file over several connections, in virtual time.

The planner alone is tests/core/test_segments.py; here the batch carries a plan out
against the simulator's servers: which ranges it asks, over how many connections,
what it does when a range is answered with another version, a 200, a failure, and
how a control file's ranges resume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path

import pytest

from midair.core.actions import Checkpoint, Open, Publish, Resume, Write
from midair.core.jobs import Job, Options, Pieces
from midair.core.segments import MIN_STEAL
from midair.core.urls import parse_url
from midair.store import CONTROL_SUFFIX, PART_SUFFIX

from .sim import DiskStore, FileServer, Sim, Step, origin, run

H = "http://h.example"
KiB, MiB = 1 << 10, 1 << 20
SPLIT = {"split": 4, "min_split_size": 128 * KiB, "per_host": 8}


def body(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def slow_server(**kwargs: object) -> FileServer:
    """16 KiB every 10 ms per connection: a connection is the bottleneck."""
    return FileServer(piece=16 * KiB, gap=0.01, **kwargs)  # type: ignore[arg-type]


def ranges_asked(server: FileServer) -> list[str | None]:
    return [r.header("range") for r in server.requests]


def test_a_large_file_is_fetched_over_split_connections_each_asking_a_range() -> None:
    data = body(1 * MiB)
    server = slow_server()
    server.add("/f", data)
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    assert sim.content(0) == data
    assert sim.max_per_origin[origin(H)] == 4
    first, *later = server.requests
    assert first.header("range") is None  # a plain GET: its answer decides (Accept-Ranges)
    assert all(r.header("if-range") == '"v1-1048576"' for r in later)
    assert all(r.header("range") and not r.header("range").endswith("-") for r in later)
    assert len(sim.actions(Publish)) == 1
    # Four connections at once: about a quarter of one connection's time (0.64 s).
    assert sim.now < 0.3


def test_no_byte_is_written_twice_and_every_byte_once() -> None:
    data = body(1 * MiB, seed=3)
    server = slow_server()
    server.add("/f", data)
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    spans = sorted((a.offset, a.offset + len(a.data)) for a in sim.actions(Write))
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))


def test_per_host_caps_the_connections_of_a_split() -> None:
    data = body(1 * MiB)
    server = slow_server()
    server.add("/f", data)
    sim = run([f"{H}/f"], {H: server}, **{**SPLIT, "per_host": 2})
    assert sim.content(0) == data
    assert sim.max_per_origin[origin(H)] == 2


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (255 * KiB, {}),  # under twice --min-split-size
        (1 * MiB, {"ranges": False}),  # no Accept-Ranges
        (1 * MiB, {"etag": False}),  # no validator: nothing proves two ranges one version
    ],
)
def test_a_file_that_cannot_or_need_not_be_split_takes_one_connection(
    size: int, kwargs: dict[str, object]
) -> None:
    data = body(size)
    server = slow_server()
    server.add("/f", data, **kwargs)
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    assert sim.content(0) == data
    assert ranges_asked(server) == [None]


def test_a_finished_connection_steals_half_of_the_largest_range_left() -> None:
    data = body(2 * MiB)
    server = slow_server()
    crawl = Step(pieces=tuple(range(1 * KiB, 2 * MiB, 1 * KiB)))  # 1 KiB per gap: 16x slower
    server.add("/f", data, Step(), crawl)
    sim = run([f"{H}/f"], {H: server}, split=2, min_split_size=512 * KiB, per_host=2)
    assert sim.content(0) == data
    _, crawling, *stealing = server.requests
    assert crawling.header("range") == f"bytes={MiB}-{2 * MiB - 1}"
    assert stealing, "nobody took over the slow connection's range"
    for r in stealing:
        start, end = (int(n) for n in r.header("range").removeprefix("bytes=").split("-"))
        assert MiB < start <= end < 2 * MiB  # all from the slow connection's half
        assert end + 1 - start >= MIN_STEAL
    # The slow connection's range was cut short: it alone would take 10 s; what is left is
    # its last range under 2 x MIN_STEAL (1.3 s at its pace) after the others' 1 s or so.
    assert sim.now < 3.0


def test_another_version_answering_a_range_restarts_the_file_never_splices() -> None:
    new = body(1 * MiB, seed=9)
    server = slow_server()
    server.add("/f", body(1 * MiB), Step(), Step(change=new))  # the second request: v2
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    assert sim.content(0) == new
    assert any("validator changed" in r.reason for _, r in sim.retrying)
    opens = sim.actions(Open)
    assert opens[-1].offset == 0 and not opens[-1].record.ranges  # from zero, cut


def test_a_server_ignoring_range_on_another_connection_degrades_to_one() -> None:
    data = body(1 * MiB)
    server = slow_server()
    server.add("/f", data, Step(), *[Step(ignore_range=True)] * 3)
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    assert sim.content(0) == data
    assert not sim.failed


def test_a_failed_range_is_taken_again_while_the_others_go_on() -> None:
    data = body(1 * MiB)
    server = slow_server()
    server.add("/f", data, Step(), Step(cut=20 * KiB, then="reset"))
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    assert sim.content(0) == data
    [(_, retrying)] = sim.retrying
    assert retrying.attempt == 1
    assert len(sim.actions(Publish)) == 1


def test_ranges_that_keep_failing_fail_the_file_after_retries() -> None:
    server = slow_server()
    server.add("/f", body(1 * MiB), Step(), *[Step(status=500)] * 40)
    sim = run([f"{H}/f"], {H: server}, retries=2, **SPLIT)
    [failed] = sim.failed.values()
    assert "HTTP 500 for bytes" in str(failed.error) and "gave up after 2 retries" in str(
        failed.error
    )


def test_a_404_for_a_range_fails_the_file_at_once() -> None:
    server = slow_server()
    server.add("/f", body(1 * MiB), Step(), Step(status=404))
    sim = run([f"{H}/f"], {H: server}, **SPLIT)
    [failed] = sim.failed.values()
    assert "HTTP 404" in str(failed.error)
    assert not sim.retrying


# --- on disk: the control file's ranges -----------------------------------------------
def test_a_checkpoint_records_only_ranges_on_disk(tmp_path: Path) -> None:
    data = body(1 * MiB)
    server = FileServer(piece=16 * KiB, gap=0.1)  # slow enough to checkpoint (after 1 s)
    server.add("/f", data)
    store = DiskStore()
    options = Options(directory=str(tmp_path), timeout=60.0, **SPLIT)  # type: ignore[arg-type]
    sim = Sim([f"{H}/f"], options, {H: server}, store=store)
    sim.run()
    assert sim.content(0) == data
    assert sim.actions(Checkpoint)


def test_ranges_in_a_control_file_resume_only_the_gaps(tmp_path: Path) -> None:
    data = body(1 * MiB, seed=5)
    path = tmp_path / "f"
    part = bytearray(len(data))
    kept = [(0, 100 * KiB), (512 * KiB, 600 * KiB)]
    for start, end in kept:
        part[start:end] = data[start:end]
    (tmp_path / f"f{PART_SUFFIX}").write_bytes(bytes(part))
    control = {"url": f"{H}/f", "size": len(data), "etag": '"v1-1048576"', "ranges": kept}
    (tmp_path / f"f{CONTROL_SUFFIX}").write_text(json.dumps(control))
    server = slow_server()
    server.add("/f", data)
    options = Options(directory=str(tmp_path))  # no -s: the gaps, one after another
    sim = Sim([f"{H}/f"], options, {H: server}, store=DiskStore()).run()
    assert path.read_bytes() == data
    assert ranges_asked(server) == [
        f"bytes={100 * KiB}-{512 * KiB - 1}",
        f"bytes={600 * KiB}-{MiB - 1}",
    ]
    assert sim.max_per_origin[origin(H)] == 1
    assert not (tmp_path / f"f{CONTROL_SUFFIX}").exists()


def test_a_control_file_whose_ranges_cover_the_file_publishes_it(tmp_path: Path) -> None:
    data = body(300 * KiB)
    (tmp_path / f"f{PART_SUFFIX}").write_bytes(data)
    control = {
        "url": f"{H}/f",
        "size": len(data),
        "etag": '"v1-307200"',
        "ranges": [[0, len(data)]],
    }
    (tmp_path / f"f{CONTROL_SUFFIX}").write_text(json.dumps(control))
    server = slow_server()
    server.add("/f", data)
    Sim([f"{H}/f"], Options(directory=str(tmp_path)), {H: server}, store=DiskStore()).run()
    assert (tmp_path / "f").read_bytes() == data
    assert ranges_asked(server) == [f"bytes={len(data)}-"]  # 416: nothing left, same version


@pytest.mark.parametrize("ranges", [[[0, 10], [5]], "all", [[0, 10 * MiB]], [[-1, 5]]])
def test_a_control_file_with_bad_ranges_restarts_the_file(tmp_path: Path, ranges: object) -> None:
    data = body(300 * KiB)
    (tmp_path / f"f{PART_SUFFIX}").write_bytes(b"x" * 1000)
    control = {"url": f"{H}/f", "size": len(data), "etag": '"v1-307200"', "ranges": ranges}
    (tmp_path / f"f{CONTROL_SUFFIX}").write_text(json.dumps(control))
    server = slow_server()
    server.add("/f", data)
    Sim([f"{H}/f"], Options(directory=str(tmp_path)), {H: server}, store=DiskStore()).run()
    assert (tmp_path / "f").read_bytes() == data
    assert ranges_asked(server) == [None]


def test_the_store_writes_the_ranges_it_wrote_into_the_control_file(tmp_path: Path) -> None:
    store = DiskStore()
    path = str(tmp_path / "f")
    store.open(Open(1, path, 0, Resume(f"{H}/f", 1000, '"e"', None, ())))
    store.write(Write(1, 500, b"b" * 100))
    store.write(Write(1, 0, b"a" * 200))
    store.write(Write(1, 200, b"c" * 50))
    store.write(Write(1, 600, b"d" * 10))
    store.close()
    control = json.loads((tmp_path / f"f{CONTROL_SUFFIX}").read_text())
    assert control["ranges"] == [[0, 250], [500, 610]]
    with open(path + PART_SUFFIX, "rb") as f:
        assert f.read(250) == b"a" * 200 + b"c" * 50


def test_reopening_a_part_written_in_segments_keeps_its_bytes(tmp_path: Path) -> None:
    store = DiskStore()
    path = str(tmp_path / "f")
    (tmp_path / f"f{PART_SUFFIX}").write_bytes(b"k" * 700)
    store.open(Open(1, path, 300, Resume(f"{H}/f", 1000, '"e"', None, ((0, 100), (600, 700)))))
    store.close()
    assert (tmp_path / f"f{PART_SUFFIX}").read_bytes() == b"k" * 700


def test_a_job_with_its_own_name_is_split_too() -> None:
    data = body(1 * MiB)
    server = slow_server()
    server.add("/f", data)
    sim = run([Job.from_url(f"{H}/f", out="renamed")], {H: server}, **SPLIT)
    assert sim.content(0) == data
    assert sim.paths[0].endswith("renamed")


# --- over mirrors: the job's other URIs serve ranges too --------------------------------
M1, M2 = "http://m1.example", "http://m2.example"


def mirrored(*servers: FileServer) -> Job:
    return Job.from_urls([f"{H}/f", *(f"{m}/f" for m in (M1, M2)[: len(servers) - 1])])


def bytes_from(server: FileServer) -> int:
    total = 0
    for r in server.requests:
        value = r.header("range")
        if value:
            first, _, last = value.removeprefix("bytes=").partition("-")
            total += int(last) + 1 - int(first) if last else 0
    return total


def test_ranges_spread_over_the_mirrors_each_with_its_own_validator() -> None:
    data = body(1 * MiB)
    servers = [slow_server() for _ in range(3)]
    for version, server in enumerate(servers, start=1):
        server.add("/f", data, version=version)  # each server its own ETag
    sim = run([mirrored(*servers)], dict(zip((H, M1, M2), servers, strict=True)), **SPLIT)
    assert sim.content(0) == data
    assert all(s.requests for s in servers), "every mirror served a range"
    for version, server in enumerate(servers[1:], start=2):
        first, *later = server.requests
        assert first.header("if-range") is None  # its validator is not known yet
        assert all(r.header("if-range") == f'"v{version}-1048576"' for r in later)


def test_per_host_counts_every_mirrors_host() -> None:
    data = body(1 * MiB)
    servers = [slow_server() for _ in range(3)]
    for server in servers:
        server.add("/f", data)
    sim = run(
        [mirrored(*servers)],
        dict(zip((H, M1, M2), servers, strict=True)),
        **{**SPLIT, "per_host": 1},
    )
    assert sim.content(0) == data
    assert all(sim.max_per_origin[origin(u)] == 1 for u in (H, M1, M2))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"body": body(1 * MiB + 1)}, "the size changed"),
        ({"steps": [Step(status=404)] * 10}, "HTTP 404"),
        ({"ranges": False}, "ignored Range"),
    ],
)
def test_a_mirror_that_cannot_serve_the_file_is_dropped_and_the_others_finish(
    bad: dict[str, object], reason: str
) -> None:
    data = body(1 * MiB)
    good, mirror = slow_server(), slow_server()
    good.add("/f", data)
    mirror.add("/f", bad.get("body", data), *bad.get("steps", []), ranges=bad.get("ranges", True))  # type: ignore[arg-type]
    sim = run([Job.from_urls([f"{H}/f", f"{M1}/f"])], {H: good, M1: mirror}, **SPLIT)
    assert sim.content(0) == data
    assert not sim.failed
    assert mirror.requests, "the mirror was asked"


def test_the_faster_mirror_serves_most_of_the_file() -> None:
    data = body(2 * MiB)
    slow, fast = FileServer(piece=16 * KiB, gap=0.05), FileServer(piece=16 * KiB, gap=0.005)
    slow.add("/f", data)
    fast.add("/f", data)
    sim = run([Job.from_urls([f"{H}/f", f"{M1}/f"])], {H: slow, M1: fast}, **SPLIT)
    assert sim.content(0) == data
    # 10x faster per connection: the fast mirror delivers most of the file (its share
    # grows as connections on the slow one move over when they finish a range).
    assert sim.delivered[origin(M1)] > 3 * sim.delivered[origin(H)]


def test_a_file_fails_only_when_every_source_failed_naming_each() -> None:
    servers = [slow_server() for _ in range(2)]
    servers[0].add("/f", body(1 * MiB), Step(), *[Step(status=404)] * 10)
    servers[1].add("/f", body(1 * MiB), *[Step(status=410)] * 10)
    sim = run([Job.from_urls([f"{H}/f", f"{M1}/f"])], {H: servers[0], M1: servers[1]}, **SPLIT)
    [failed] = sim.failed.values()
    text = str(failed.error)
    assert "every mirror failed" in text and "HTTP 404" in text and "HTTP 410" in text


# --- piece digests (a Metalink's <pieces>): each checked as it lands ---------------------
PIECE = 256 * KiB


def digests(data: bytes) -> Pieces:
    chunks = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
    return Pieces(PIECE, "sha256", tuple(hashlib.sha256(c).hexdigest() for c in chunks))


def corrupted(data: bytes, start: int, end: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start:end]) + data[end:]


def test_a_mirror_serving_bad_pieces_is_blamed_and_the_pieces_come_from_another(
    tmp_path: Path,
) -> None:
    data = body(1 * MiB)
    good, bad = slow_server(), slow_server()
    good.add("/f", data)
    bad.add("/f", corrupted(data, 0, len(data)))  # every byte wrong, the size right
    job = Job(parse_url(f"{H}/f"), mirrors=(parse_url(f"{M1}/f"),), pieces=digests(data))
    options = Options(directory=str(tmp_path), **SPLIT)  # type: ignore[arg-type]
    Sim([job], options, {H: good, M1: bad}, store=DiskStore()).run()
    assert (tmp_path / "f").read_bytes() == data
    assert bad.requests, "the bad mirror was asked"
    assert len(bad.requests) <= 2, "it was dropped after its first bad piece"


def test_a_single_source_serving_a_bad_piece_fails_the_file_after_retries(
    tmp_path: Path,
) -> None:
    data = body(1 * MiB)
    server = slow_server()
    server.add("/f", corrupted(data, 600 * KiB, 601 * KiB))
    job = Job(parse_url(f"{H}/f"), pieces=digests(data))
    options = Options(directory=str(tmp_path), retries=2, **SPLIT)  # type: ignore[arg-type]
    sim = Sim([job], options, {H: server}, store=DiskStore()).run()
    [failed] = sim.failed.values()
    assert "piece 2 (bytes 524288-786431) does not match its sha256" in str(failed.error)
    assert "gave up after 2 retries" in str(failed.error)
    assert not (tmp_path / "f").exists()
    asked = [r.header("range") for r in server.requests]
    assert asked.count(f"bytes={2 * PIECE}-{3 * PIECE - 1}") == 3  # once, then per retry


def test_the_store_refuses_to_publish_a_file_whose_last_piece_was_just_rejected(
    tmp_path: Path,
) -> None:
    data = body(2 * PIECE)
    store = DiskStore()
    path = str(tmp_path / "f")
    record = Resume(f"{H}/f", len(data), '"e"', None, ())
    store.open(Open(1, path, 0, record, digests(data)))
    assert store.write(Write(1, 0, data[:PIECE])) is None
    [rejected] = store.write(Write(1, PIECE, corrupted(data, PIECE, PIECE + 1)[PIECE:]))
    assert (rejected.start, rejected.end) == (PIECE, 2 * PIECE)
    publish = Publish(1, path, len(data), None, f"{H}/f", path, False)
    assert store.submit(publish) is None  # the core fetches the piece again first
    assert store.write(Write(1, PIECE, data[PIECE:])) is None
    assert store.submit(publish) is False  # published (in the caller's thread)
    assert (tmp_path / "f").read_bytes() == data
