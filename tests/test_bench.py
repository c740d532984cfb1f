"""``midair bench --quick`` end to end against ``midair serve``, so the command cannot rot.

Forced onto ``--server midair`` so it needs no nginx; one peer (curl, when
installed) and one engine keep it well under a minute. The JSON must hold
verified runs for every scenario and the Markdown a table for each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from midair.bench.scenarios import NAMES, QUICK, parse_scenario

pytestmark = pytest.mark.slow


def test_quick_bench_against_midair_serve(tmp_path: Path) -> None:
    peers = "curl" if shutil.which("curl") else "none"
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "midair", "bench", "--quick", "--server", "midair",
         "--peers", peers, "--engines", "asyncio", "--out", str(out),
         "--cache", str(tmp_path / "cache"), "--work", str(tmp_path), "--no-plots"],
        capture_output=True, text=True, timeout=100, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["server"]["kind"] == "midair"
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert list(scenarios) == NAMES
    for name, scenario in scenarios.items():
        ours = [r for r in scenario["runs"] if r["client"] == "midair-asyncio"]
        assert ours, name
        for run in ours:
            assert run["status"] == "ok", run
            assert run["verified_ok"] == run["files"] and run["missing"] == run["wrong"] == 0
            assert run["measurement"]["wall_s"] > 0 and run["measurement"]["cpu_s"] > 0
    assert scenarios["seed"]["floor_s"] and scenarios["bulk"]["ceiling_gbps"]
    markdown = (out / "bench.md").read_text()
    for name in NAMES:
        assert f"### {name}" in markdown
    assert "| midair-asyncio |" in markdown
    assert "server: midair serve" in markdown


def test_scenario_overrides() -> None:
    crowd = parse_scenario("crowd:files=50,rate=4K,hosts=5", quick=True)
    assert (crowd.files, crowd.rate, crowd.hosts, crowd.size) == (50, 4096, 5, QUICK["crowd"].size)
    point = crowd.points()[0]
    assert (point.jobs, point.per_host) == (50, 10)
    sweep = parse_scenario("sweep:counts=10/20", quick=False)
    assert [p.files for p in sweep.points()] == [10, 20]
    with pytest.raises(ValueError, match="unknown field"):
        parse_scenario("seed:colour=blue", quick=False)
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("nope", quick=False)
