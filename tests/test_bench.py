"""``midair bench``: end to end (``--quick``, so the command cannot rot) and its parts.

The end-to-end runs are forced onto ``--server midair`` so they need no nginx;
one peer (curl, when installed) and the default ``midair get`` keep them well
under a minute. The parts: where downloads go (tmpfs or disk, and what
/proc/mounts says it is), the server-side start-up and exit times (nginx's
timing access log, checked against the bench's own clock), the peers' command
lines, ranks and the durable-publication figure in the report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import NginxFactory, require_nginx

from midair.bench import clients, data, downloads, runner
from midair.bench.clients import PEERS, Job, engine_clients
from midair.bench.data import Verification
from midair.bench.downloads import choose_downloads, mount_of
from midair.bench.measure import Measurement, run_measured
from midair.bench.report import durability, markdown, rows_for
from midair.bench.runner import Run, ScenarioResult
from midair.bench.scenarios import NAMES, OPT_IN, QUICK, Point, parse_scenario
from midair.bench.timeline import NginxLog, Seen, check_clock, collect, timing
from midair.cli import bench as bench_cli
from midair.serve.nginx import parse_access_line


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    peers = "curl" if shutil.which("curl") else "none"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "midair",
            "bench",
            "--quick",
            "--server",
            "midair",
            "--peers",
            peers,
            "--engines",
            "default",
            "--out",
            str(tmp_path / "out"),
            "--cache",
            str(tmp_path / "cache"),
            "--no-plots",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# Every scenario (and startup), the throttled ones paced 4x faster than ``--quick`` (each
# transfer ~0.4 s, not ~1.5 s): still throttled, through the override syntax a user types.
FASTER = [
    "startup",
    "seed:rate=128K",
    "crowd:rate=32K",
    "c10k:rate=16K",
    "bulk",
    "small",
    "sweep:rate=16K",
]


@pytest.mark.slow
def test_quick_bench_against_midair_serve(tmp_path: Path) -> None:
    done = _bench(tmp_path, *FASTER)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert report["server"]["kind"] == "midair"
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert list(scenarios) == NAMES
    for name, scenario in scenarios.items():
        ours = [r for r in scenario["runs"] if r["client"] == "midair-default"]
        assert ours, name
        for run in ours:
            assert run["status"] == "ok", run
            assert run["verified_ok"] == run["files"] and run["missing"] == run["wrong"] == 0
            assert run["measurement"]["wall_s"] > 0 and run["measurement"]["cpu_s"] > 0
            assert "--engine" not in run["measurement"]["argv"]
    assert scenarios["seed"]["floor_s"] and scenarios["bulk"]["ceiling_gbps"]
    assert scenarios["bulk"]["file_ceiling_gbps"]
    assert scenarios["seed"]["clock_check"]["probes"] == 5
    assert report["bytecode"].startswith("byte-compiled in ")
    seed = scenarios["seed"]["runs"][0]
    wall_ms = seed["measurement"]["wall_s"] * 1000
    assert 0 < seed["timing"]["first_request_ms"] < wall_ms
    assert seed["timing"]["exit_ms"] is None  # midair serve logs arrivals only
    startup = {row["label"]: row for row in report["startup"]}
    assert len(startup["midair --version"]["walls_s"]) == 10
    assert startup["python -c pass"]["median_ms"] > 0
    markdown_text = (tmp_path / "out" / "bench.md").read_text()
    for name in ["startup", *NAMES]:
        assert f"### {name}" in markdown_text
    assert "| midair-default |" in markdown_text and "server: midair serve" in markdown_text


@pytest.mark.slow
def test_quick_bench_reports_where_it_downloaded(tmp_path: Path) -> None:
    """Default tmpfs when there is one; ``--downloads disk`` lands on the cache's file system."""
    for choice, where in [("tmpfs", None), ("disk", tmp_path / "cache")]:
        done = _bench(tmp_path, FASTER[1], "--downloads", choice)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((tmp_path / "out" / "bench.json").read_text())
        place = report["downloads"]
        assert place["choice"] == choice
        assert (place["mount"], place["fstype"]) == mount_of(Path(place["path"]))
        if where is not None:
            assert Path(place["path"]) == where.resolve()
        elif not place["note"]:
            assert place["fstype"] == "tmpfs"
        note = place["durable_publication"]
        if place["fstype"] == "tmpfs":
            assert note.startswith("not measured: downloads on tmpfs")
        elif "--no-fsync" in clients.get_help():
            assert note.startswith("measured") and "midair-nofsync" in report["versions"]
        else:
            assert "does not list --no-fsync" in note
        text = (tmp_path / "out" / "bench.md").read_text()
        assert f"({place['fstype']}, mounted on {place['mount']}" in text
        # Memory is prepared for each writer on a memory fs only, and the report says so.
        assert place["prefault"] is (place["fstype"] in downloads.MEMORY_FS)
        assert ("as many bytes there as the run writes" in text) is place["prefault"]


def test_scenario_overrides() -> None:
    crowd = parse_scenario("crowd:files=50,rate=4K,hosts=5", quick=True)
    assert (crowd.files, crowd.rate, crowd.hosts, crowd.size) == (50, 4096, 5, QUICK["crowd"].size)
    point = crowd.points()[0]
    assert (point.jobs, point.per_host) == (50, 10)
    sweep = parse_scenario("sweep:counts=10/20,reps=1", quick=False)
    assert [p.files for p in sweep.points()] == [10, 20] and sweep.reps == 1
    small = parse_scenario("small", quick=False)
    assert (small.jobs, small.per_host, small.hosts) == (100, 100, 1)
    with pytest.raises(ValueError, match="unknown field"):
        parse_scenario("seed:colour=blue", quick=False)
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("nope", quick=False)


# --- where downloads go -----------------------------------------------------------------

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
tmpfs /mnt/with\\040space tmpfs rw 0 0
/dev/vdb /mnt/with\\040space/disk xfs rw 0 0
overlay /mnt/stack ext4 rw 0 0
tmpfs /mnt/stack tmpfs rw 0 0
"""


def test_mount_of_takes_the_longest_and_the_last_mounted() -> None:
    assert mount_of(Path("/dev/shm/x/y"), MOUNTS) == ("/dev/shm", "tmpfs")
    assert mount_of(Path("/dev/shmem"), MOUNTS) == ("/", "ext4")
    assert mount_of(Path("/mnt/with space/f"), MOUNTS) == ("/mnt/with space", "tmpfs")
    assert mount_of(Path("/mnt/with space/disk/f"), MOUNTS) == ("/mnt/with space/disk", "xfs")
    assert mount_of(Path("/mnt/stack/f"), MOUNTS) == ("/mnt/stack", "tmpfs")


def _fake_mounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    table = tmp_path / "mounts"
    table.write_text(text)
    monkeypatch.setattr(downloads, "_MOUNTS", table)


def test_prefault_writes_the_bytes_then_deletes_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Written, not just reserved (tmpfs's fallocate touches no page), and nothing left."""
    monkeypatch.setattr(downloads, "_PREFAULT_MARGIN", 1 << 20)
    written: list[int] = []
    real_write = os.write

    def counting(fd: int, chunk: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".midair-bench-prefault"):
            written.append(len(chunk))
        return real_write(fd, chunk)

    monkeypatch.setattr(downloads.os, "write", counting)
    downloads.prefault(tmp_path, 3 * (1 << 20) + 1)
    assert sum(written) == 5 << 20  # 3 MiB and a byte, rounded up to blocks, and the margin
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sendfile", [True, False])
def test_a_run_s_files_are_read_through_to_the_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sendfile: bool
) -> None:
    """Into the page cache before each run: by sendfile, or by read where it fails."""
    sizes = {"a.bin": 3 << 20, "b.bin": 5}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    moved: list[int] = []
    real_sendfile, real_read = os.sendfile, os.read

    def spy_sendfile(out: int, src: int, offset: int | None, count: int) -> int:
        if not sendfile:
            raise OSError(22, "Invalid argument")
        moved.append(real_sendfile(out, src, offset, count))
        return moved[-1]

    def spy_read(fd: int, count: int) -> bytes:
        chunk = real_read(fd, count)
        moved.append(len(chunk))
        return chunk

    monkeypatch.setattr(data.os, "sendfile", spy_sendfile)
    monkeypatch.setattr(data.os, "read", spy_read)
    data.into_page_cache(tmp_path, list(sizes))
    assert sum(moved) == sum(sizes.values())


def test_tmpfs_is_chosen_when_it_has_room(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    _fake_mounts(monkeypatch, tmp_path, f"/dev/vda / ext4 rw 0 0\ntmpfs {shm} tmpfs rw 0 0\n")
    monkeypatch.setattr(downloads, "PREFERRED_TMPFS", shm)
    chosen = choose_downloads("tmpfs", tmp_path / "cache", needed=1 << 20)
    assert (chosen.path, chosen.fstype, chosen.durable, chosen.note) == (shm, "tmpfs", False, "")
    too_big = choose_downloads("tmpfs", tmp_path / "cache", needed=1 << 60)
    assert too_big.path == (tmp_path / "cache").resolve() and too_big.fstype == "ext4"
    assert too_big.durable and "no writable tmpfs" in too_big.note


def test_disk_and_dir_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_mounts(
        monkeypatch, tmp_path, f"/dev/vda / ext4 rw 0 0\ntmpfs {tmp_path}/ram tmpfs rw 0 0\n"
    )
    disk = choose_downloads("disk", tmp_path / "cache", needed=1)
    assert (disk.path, disk.fstype, disk.choice) == ((tmp_path / "cache").resolve(), "ext4", "disk")
    ram = choose_downloads(str(tmp_path / "ram" / "d"), tmp_path / "cache", needed=1)
    assert (ram.mount, ram.fstype, ram.durable) == (f"{tmp_path}/ram", "tmpfs", False)
    assert ram.path.is_dir()


# --- start-up and exit costs, from the server's log ----------------------------------------


def test_access_line_gives_start_and_end() -> None:
    logged = parse_access_line("1700000010.250 2.125 7 200 4194553\n")
    assert logged is not None
    assert (logged.start, logged.end, logged.connection) == (1700000008.125, 1700000010.25, 7)
    assert parse_access_line("1700000010.2") is None and parse_access_line("") is None


def test_timing_of_one_run() -> None:
    seen = [Seen(100.030, 101.0, 1), Seen(100.020, 102.5, 2), Seen(101.0, 102.0, 1)]
    t = timing(seen, started=100.0, ended=102.512)
    assert t.first_request_ms == pytest.approx(20) and t.exit_ms == pytest.approx(12)
    assert (t.requests, t.connections) == (3, 2)
    arrivals = timing([Seen(100.05, None, None)], started=100.0, ended=101.0)
    assert arrivals.first_request_ms == pytest.approx(50) and arrivals.exit_ms is None
    assert timing([], 100.0, 101.0).requests == 0


def test_nginx_log_reads_only_whole_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("1000.000 0.000 1 404 10\n1010.500 0.500 2 200 99\n1011.0")
    log = NginxLog(path)
    assert [s.start for s in log.since(1005.0)] == [1010.0]
    with open(path, "a") as f:
        f.write("00 0.250 3 200 99\n")
    assert [s.start for s in log.since(1010.0)] == [1010.0, 1010.75]


def test_nginx_access_log_is_millisecond_accurate(nginx: NginxFactory, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.bin").write_bytes(b"x" * 1000)
    server = nginx(root, access_log=tmp_path / "access.log")
    log = NginxLog(tmp_path / "access.log")
    clock = check_clock(log, server.url(0, "missing"))
    assert clock.probes == 5 and clock.accurate, clock
    started = time.time()
    for _ in range(3):
        with urllib.request.urlopen(server.url(0, "a.bin"), timeout=5) as resp:
            assert resp.read() == b"x" * 1000
    ended = time.time()
    seen = collect(log, started, ended, expected=3)
    assert seen.requests == 3 and seen.connections == 3  # urllib: one connection each
    assert seen.first_request_ms is not None and seen.exit_ms is not None
    assert -1.0 <= seen.first_request_ms <= (ended - started) * 1000
    assert -1.0 <= seen.exit_ms <= (ended - started) * 1000


# --- clients: what each is asked to do -----------------------------------------------------


def _job(tmp_path: Path, jobs: int = 100) -> Job:
    return Job(
        ["http://127.0.1.1:8080/f00000.bin"], tmp_path / "urls.txt", tmp_path / "out", jobs, jobs
    )


@pytest.mark.parametrize(
    ("peer", "flags"),
    [
        ("curl", ["--parallel", "--parallel-max 100"]),
        ("wget2", ["--max-threads 100", "--progress=none"]),
        (
            "aria2c",
            [
                "-j 100",
                "--max-connection-per-server=1",
                "--split=1",
                "--file-allocation=none",
                "--show-console-readout=false",
            ],
        ),
        ("parfive", ["--concurrency 100", "--per-host 100"]),
        ("aiohttp", ["--concurrency 100", "--per-host 100"]),
        ("httpx", ["--concurrency 100"]),
    ],
)
def test_peers_get_batch_flags(tmp_path: Path, peer: str, flags: list[str]) -> None:
    line = " ".join(PEERS[peer].command(_job(tmp_path)))
    for flag in flags:
        assert f" {flag}" in line, (peer, flag, line)


def test_default_midair_names_no_engine(tmp_path: Path) -> None:
    made = engine_clients(["default", "epoll"])
    default = made["midair-default"].command(_job(tmp_path))
    assert default[2:4] == ["midair", "get"] and "--engine" not in default
    assert "--engine epoll" in " ".join(made["midair-epoll"].command(_job(tmp_path)))
    assert clients.default_engine() in made["midair-default"].note


def test_no_fsync_twin_only_on_a_disk_and_when_midair_has_the_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    disk = downloads.Downloads(tmp_path, "/", "ext4", "disk")
    ram = downloads.Downloads(tmp_path, "/dev/shm", "tmpfs", "tmpfs")
    monkeypatch.setattr(clients, "get_help", lambda: "usage: midair get [--no-fsync]")
    chosen = engine_clients(["default"])
    assert bench_cli._add_no_fsync(chosen, disk).startswith("measured")
    assert "--no-fsync" in chosen["midair-nofsync"].command(_job(tmp_path))
    chosen = engine_clients(["default"])
    assert "tmpfs" in bench_cli._add_no_fsync(chosen, ram) and len(chosen) == 1
    monkeypatch.setattr(clients, "get_help", lambda: "usage: midair get [-q]")
    assert "does not list --no-fsync" in bench_cli._add_no_fsync(chosen, disk)
    assert list(chosen) == ["midair-default"]


# --- the report ------------------------------------------------------------------------


def _run(client: str, wall: float, cpu: float, status: str = "ok") -> Run:
    m = Measurement([client], wall, cpu, 0.0, 30.0, 0, False)
    return Run("small", 100, client, "1", 0, 100, 100 * 8192, m, status=status)


def test_rank_and_durable_publication() -> None:
    result = ScenarioResult(QUICK["small"], "nginx")
    result.runs = [
        _run("midair-default", 1.5, 1.2),
        _run("midair-nofsync", 1.0, 1.0),
        _run("curl", 0.5, 0.4),
        _run("wget2", 0.1, 0.1, status="FAILED"),
    ]
    ranked = {r.client: r.rank for r in rows_for(result)}
    assert ranked == {"curl": 1, "midair-nofsync": 2, "midair-default": 3, "wget2": None}
    cost = durability(result)
    assert cost is not None
    assert cost["wall_ms_per_file"] == pytest.approx(5.0)
    assert cost["cpu_ms_per_file"] == pytest.approx(2.0)
    text = markdown("header", [result])
    assert "Durable publication (midair-default against midair-nofsync): +5.00 ms wall" in text
    assert "| # | client |" in text and "| connections |" in text
    result.runs = result.runs[:1]
    assert durability(result) is None


def test_one_at_a_time_and_timed_out_clients_are_not_repeated() -> None:
    result = ScenarioResult(QUICK["small"], "nginx")
    slow = _run("aria2c", 30.0, 1.0, status="FAILED")
    assert slow.measurement is not None
    slow.measurement.timed_out = True
    result.runs = [_run("curl", 0.5, 0.4), slow]
    point = Point(100, 1, 100, 100)
    sequential = engine_clients(["sequential"])["midair-sequential"]
    assert not runner._not_repeated("midair-sequential", sequential, point, 0, result)
    assert runner._not_repeated("midair-sequential", sequential, point, 1, result)
    assert runner._not_repeated("aria2c", PEERS["aria2c"], point, 1, result)
    assert not runner._not_repeated("curl", PEERS["curl"], point, 1, result)


def test_midair_is_byte_compiled_before_it_is_timed() -> None:
    """Every module the bench runs has current bytecode, even under
    PYTHONDONTWRITEBYTECODE: otherwise each run compiles midair again (~20 ms)."""
    import importlib.util

    import midair

    assert clients.compile_midair().startswith("byte-compiled in ")
    for source in Path(midair.__file__).parent.rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime, source


def test_a_run_is_timed_from_its_exec_not_from_the_fork(tmp_path: Path) -> None:
    """Forking the bench's own process is no client's cost: the clock starts once
    Popen has seen the exec happen."""
    before = time.time()
    m = run_measured(["sleep", "0.2"], 10, tmp_path / "log")
    assert m.exit_code == 0 and m.spawn_s > 0
    assert m.started_at - before >= m.spawn_s - 1e-4
    assert m.wall_s >= 0.2
    assert abs((m.ended_at - m.started_at) - m.wall_s) < 0.005  # one clock, two readings


@pytest.mark.parametrize("memory", [True, False])
def test_a_client_starts_right_after_its_bytes_are_prefaulted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, memory: bool
) -> None:
    """On a memory fs, as many bytes as the run writes, just before it (and only there)."""
    events: list[tuple[object, ...]] = []
    monkeypatch.setattr(runner, "prefault", lambda path, size: events.append((path, size)))

    def measured(argv: list[str], timeout: float, log: Path) -> Measurement:
        events.append(("run",))
        return Measurement(list(argv), 1.0, 0.5, 0.1, 10.0, 0, False)

    monkeypatch.setattr(runner, "run_measured", measured)
    monkeypatch.setattr(runner, "collect", lambda *args: None)
    monkeypatch.setattr(runner, "verify", lambda out, expected: Verification(1, [], []))
    scn = QUICK["bulk"]
    point = Point(1, 1, 1, 1)
    ctx = runner.Context("nginx", tmp_path, tmp_path, 1, {}, {"curl": "8"}, 1024, prefault=memory)
    result = ScenarioResult(scn, "nginx")
    served = runner.Served("nginx", ["http://127.0.0.1:1/"], None)  # type: ignore[arg-type]
    run = runner._run_client(
        scn, point, 0, "curl", PEERS["curl"], _job(tmp_path, 1), {}, served, ctx, result
    )
    assert run.status == "ok"
    assert events == ([(tmp_path, scn.size), ("run",)] if memory else [("run",)])


def test_each_rep_starts_with_the_next_client() -> None:
    """Whoever runs first after the ceiling pays for it: no client may do so every rep."""
    from midair.bench.runner import _rotated

    clients: list = [("a", None), ("b", None), ("c", None)]
    firsts = [_rotated(clients, rep)[0][0] for rep in range(3)]
    assert firsts == ["a", "b", "c"]
    assert sorted(_rotated(clients, 4)) == sorted(clients)  # every client, once
    assert _rotated([], 1) == []


def test_small_h2_is_small_over_tls_and_never_reuses_its_runs(tmp_path: Path) -> None:
    small, h2 = parse_scenario("small", quick=True), parse_scenario("small-h2", quick=True)
    assert (
        OPT_IN == ["small-h2", "split", "mirrors", "list"]
        and "small-h2" not in NAMES
        and h2.tls
        and not small.tls
    )
    [point] = h2.points()
    assert h2.key(point) != small.key(point)  # measured anew, not taken from small's runs
    job = Job(["https://127.0.1.1:1/f"], tmp_path / "urls.txt", tmp_path, 100, 100, tmp_path / "ca")
    curl = PEERS["curl"].command(job)
    assert curl[-3:] == ["--http2", "--cacert", str(tmp_path / "ca")]
    assert "--parallel-immediate" not in curl  # it waits, to multiplex on one connection
    assert PEERS["httpx"].command(job)[-2:] == ["--ca", str(tmp_path / "ca")]
    midair_cmd = engine_clients(["epoll"])["midair-epoll"].command(job)
    assert midair_cmd[-2:] == ["--ca-certificate", str(tmp_path / "ca")]
    assert {n for n, c in PEERS.items() if c.tls} == {"curl", "httpx"}


def test_the_list_scenario_streams_a_list_of_tiny_bodies_from_nginx(tmp_path: Path) -> None:
    """``list``: URLs with no files behind them (nginx answers each with one byte), every
    file checked, first request and peak RSS in the report, against list length with
    ``counts``; nginx only."""
    require_nginx()
    done = _bench(
        tmp_path, "list:counts=1000/2000", "--server", "nginx", "--engines", "default,epoll"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [scenario] = json.loads((tmp_path / "out" / "bench.json").read_text())["scenarios"]
    assert scenario["name"] == "list" and scenario["server"] == "nginx"
    runs = {(r["client"], r["files"]): r for r in scenario["runs"]}
    for name in ("midair-default", "midair-epoll"):
        for files in (1000, 2000):
            run = runs[name, files]
            assert run["status"] == "ok" and run["verified_ok"] == files, run
            assert 0 < run["timing"]["first_request_ms"] < run["measurement"]["wall_s"] * 1000
            assert run["measurement"]["maxrss_mib"] > 0
    assert not list((tmp_path / "cache").glob("*000x1*"))  # no data set made on disk
    report = (tmp_path / "out" / "bench.md").read_text()
    assert "**peak RSS MiB**" in report and "| client | N=1,000 | N=2,000 |" in report
    assert "| midair-epoll |" in report
    refused = _bench(tmp_path / "m", "list:files=10")  # midair serve: no such route
    assert refused.returncode != 0 and "needs nginx" in refused.stderr


def test_split_is_one_file_over_n_connections_for_the_clients_that_split(tmp_path: Path) -> None:
    scn = parse_scenario("split", quick=False)
    assert "split" not in NAMES and (scn.files, scn.split, scn.per_host) == (1, 16, 16)
    job = Job(["http://127.0.1.1:1/f"], tmp_path / "urls.txt", tmp_path, 1, 16, None, 16)
    aria2 = " ".join(PEERS["aria2c"].command(job))
    assert "--max-connection-per-server=16 --split=16 --min-split-size=1M" in aria2
    assert PEERS["axel"].command(job)[:4] == ["axel", "-q", "-n", "16"]
    midair_cmd = " ".join(engine_clients(["default"])["midair-default"].command(job))
    assert "-j 16 " in midair_cmd and midair_cmd.endswith("-s 16 --min-split-size 1M")
    splitting = {n for n, c in PEERS.items() if c.splits}
    assert splitting == {"aria2c", "axel"}  # curl, wget2 and the rest: one connection a file
    assert PEERS["axel"].only == ("split", "mirrors")


def test_mirrors_gives_each_file_a_url_per_address_at_halving_rates(tmp_path: Path) -> None:
    scn = parse_scenario("mirrors", quick=True)
    assert "mirrors" in OPT_IN and scn.mirrors == 3 and scn.split == 16
    bases = [f"http://127.0.1.{i}:1/" for i in (1, 2, 3)]
    served = runner.Served("midair serve", bases, None)  # type: ignore[arg-type]
    urls = runner._sources(scn, served, 0, "f.bin")
    rates = [int(u.rpartition("rate=")[2]) for u in urls]
    assert [u.split("/")[2] for u in urls] == ["127.0.1.1:1", "127.0.1.2:1", "127.0.1.3:1"]
    assert rates == [scn.rate, scn.rate // 2, scn.rate // 4]
    job = Job(urls[:1], tmp_path / "l", tmp_path, 1, 16, None, 16, [urls])
    assert PEERS["axel"].command(job)[-3:] == urls  # axel takes mirrors as more URLs
    assert PEERS["axel"].command(job)[5].endswith("/f.bin")  # named without the query
