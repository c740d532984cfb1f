"""The bench's reference loop, ``python-floor``: its command lines, when it runs, what it
writes (byte-exact files, midair's part suffix and tag), and how the report shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NginxFactory

from midair import store
from midair.bench import clients, runner
from midair.bench.clients import FLOOR_SCRIPT, PEERS, Job, select_clients
from midair.bench.measure import Measurement
from midair.bench.peers import python_floor
from midair.bench.report import markdown, rows_for
from midair.bench.runner import Run, ScenarioResult
from midair.bench.scenarios import QUICK, Point
from midair.core.naming import PART_SUFFIX

VARIANTS = ["python-floor-direct", "python-floor-atomic", "python-floor-tagged"]


def _job(tmp_path: Path) -> Job:
    url = "http://127.0.1.1:8080/f00000.bin"
    return Job([url], tmp_path / "urls.txt", tmp_path / "out", 100, 100)


def test_python_floor_in_peers_stands_for_its_three_rows() -> None:
    chosen = select_clients([], ["curl", "python-floor", "wget2"])
    assert list(chosen) == ["curl", *VARIANTS, "wget2"]
    assert list(select_clients([], ["python-floor-tagged"])) == ["python-floor-tagged"]
    with pytest.raises(ValueError, match="python-floor"):  # the known names list it
        select_clients([], ["python-flor"])


@pytest.mark.parametrize(
    ("variant", "flags"),
    [
        ("python-floor-direct", ["--direct"]),
        ("python-floor-atomic", []),
        ("python-floor-tagged", ["--tag"]),
    ],
)
def test_floor_command_runs_the_loop_by_path(
    tmp_path: Path, variant: str, flags: list[str]
) -> None:
    argv = PEERS[variant].command(_job(tmp_path))
    assert argv[:2] == [sys.executable, str(FLOOR_SCRIPT)] and "-m" not in argv
    assert argv[2:4] == [str(tmp_path / "urls.txt"), str(tmp_path / "out")]
    assert argv[4:] == ["--in-flight", "100", *flags]
    assert Path(argv[1]).is_file()


def test_floor_runs_in_small_only_and_is_marked_a_reference() -> None:
    for variant in VARIANTS:
        floor = PEERS[variant]
        assert floor.only == ("small",) and floor.reference
        assert floor.note.startswith("reference loop, not a client")
    assert not any(c.reference for name, c in PEERS.items() if name not in VARIANTS)


def test_floor_is_found_with_epoll_and_skipped_without(monkeypatch: pytest.MonkeyPatch) -> None:
    version = PEERS["python-floor-atomic"].version()
    assert version is not None and version.startswith("CPython ")
    monkeypatch.delattr(clients.select, "epoll")
    assert PEERS["python-floor-atomic"].version() is None
    scn, point = QUICK["small"], Point(1000, 1, 100, 100)
    floor = PEERS["python-floor-atomic"]
    assert runner._skip_reason(scn, point, floor, None, None, 30.0) == "not installed"


def test_the_loops_part_suffix_and_tag_are_midairs() -> None:
    """The loop imports nothing of midair: these copies must not drift."""
    assert python_floor.PART_SUFFIX == PART_SUFFIX and python_floor.XATTR == store.XATTR
    for url in ["http://h:1/a.bin", 'http://h:1/d\\"q\u00e9.bin']:
        assert python_floor.tag_value(url, 8192) == store._tag_value(url, 8192)


# --- the loop against nginx ---------------------------------------------------------------


def _floor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLOOR_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def served(nginx: NginxFactory, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A list of 30 URLs on one nginx (more than in flight: connections are reused)."""
    root = tmp_path / "root"
    root.mkdir()
    files = {f"f{i:03}.bin": os.urandom(100 + 997 * i) for i in range(30)}
    for name, body in files.items():
        (root / name).write_bytes(body)
    server = nginx(root)
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(server.url(0, name) + "\n" for name in files))
    return listing, files


@pytest.mark.parametrize("flag", ["--direct", None, "--tag"])
def test_floor_fetches_every_file_byte_exact(
    served: tuple[Path, dict[str, bytes]], tmp_path: Path, flag: str | None
) -> None:
    listing, files = served
    out = tmp_path / "out"
    done = _floor(str(listing), str(out), "--in-flight", "4", *([flag] if flag else []))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(files)  # no part file left
    for name, body in files.items():
        assert (out / name).read_bytes() == body
    url = listing.read_text().split()[7]
    tagged = set(os.listxattr(out / "f007.bin"))
    assert tagged == ({store.XATTR} if flag == "--tag" else set())
    if flag == "--tag":
        value = os.getxattr(out / "f007.bin", store.XATTR)
        assert value == store._tag_value(url, len(files["f007.bin"]))


def test_floor_fails_on_anything_but_a_200_naming_the_url(
    served: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    listing, _ = served
    missing = listing.read_text().split()[0].rsplit("/", 1)[0] + "/missing.bin"
    listing.write_text(listing.read_text() + missing + "\n")
    done = _floor(str(listing), str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"python_floor: {missing}: HTTP/1.1 404 Not Found"


def test_floor_refuses_more_than_one_origin(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("http://127.0.0.1:1/a\nhttp://127.0.0.2:1/b\n")
    done = _floor(str(listing), str(tmp_path / "out"))
    assert done.returncode == 1 and "one http:// origin only, got 2" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_quick_bench_runs_the_floor_in_small_only(tmp_path: Path) -> None:
    """``midair bench`` end to end: three checked rows in small, none in seed."""
    argv = [sys.executable, "-m", "midair", "bench", "--quick", "--server", "midair"]
    argv += ["small", "seed:rate=128K", "--engines", "none", "--peers", "python-floor"]
    argv += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--no-plots"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    runs = {s["name"]: s["runs"] for s in report["scenarios"]}
    assert runs["seed"] == []
    assert sorted(r["client"] for r in runs["small"]) == sorted(VARIANTS)
    for run in runs["small"]:
        assert run["status"] == "ok" and run["reference"], run
        assert run["verified_ok"] == run["files"] and run["missing"] == run["wrong"] == 0
    text = (tmp_path / "out" / "bench.md").read_text()
    assert text.count("| ref | python-floor-") == 3


# --- the report ---------------------------------------------------------------------------


def _run(client: str, wall: float, reference: bool = False) -> Run:
    m = Measurement([client], wall, wall, 0.0, 30.0, 0, False)
    return Run("small", 100, client, "1", 0, 100, 100 * 8192, m, reference=reference)


def test_reference_rows_are_shown_labelled_and_never_ranked() -> None:
    result = ScenarioResult(QUICK["small"], "nginx")
    result.runs = [
        _run("midair-default", 1.5),
        _run("python-floor-atomic", 0.2, reference=True),
        _run("curl", 0.5),
    ]
    rows = {r.client: r for r in rows_for(result)}
    assert (rows["curl"].rank, rows["midair-default"].rank) == (1, 2)
    assert rows["python-floor-atomic"].rank is None and rows["python-floor-atomic"].reference
    text = markdown("header", [result])
    assert "| ref | python-floor-atomic (reference loop) |" in text
    assert "Rows marked ref are a reference loop, not a client" in text
    assert "CPU per file against curl's: python-floor-atomic 0.40x, midair-default 3.00x." in text
    result.runs = result.runs[:1]
    assert "reference loop" not in markdown("header", [result])
