"""dask: a shard whose flush outlasts the stop's grace is killed, and nothing is lost.

On a stop the dask engine waits ``_STOP_WAIT`` for the shards that began to flush
their files and return, then closes its local cluster's workers with a
``_CLOSE_GRACE`` and kills those still busy.  A shard can need longer than that: its
store's close waits for the publisher, whose sync a loaded disk stretches (here
``MIDAIR_TEST_SLOW_SYNC``, tests/faults/sitecustomize.py, in every worker).  Killed
there, its part files hold complete bodies that were never renamed and its control
files may lag its last writes.  What must hold all the same: the run stops within
the contract's second, nothing partial ever stands under a final name, no worker
goes on writing after the run has exited, and a re-run ends every file byte-exact.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Midair

from midair.serve import ServerThread, expected_bytes

FAULTS = Path(__file__).parent / "faults"
sys.path.insert(0, str(FAULTS))
import sitecustomize as faults  # noqa: E402  (tests/faults, not an installed module)

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("dask", "distributed")),
    reason="dask.distributed not installed",
)

SMALL, BIG, RATE = 20_000, 600_000, 150_000  # a big file takes 4 s: in flight at the stop
SLOW_SYNC = 5.0  # seconds each publication's sync takes: far past the stop's grace
STOP_WITHIN = 1.0  # the contract: seconds from SIGTERM to exit (tests/test_contract.py)


def _files() -> dict[str, int]:
    return {f"s{i}.bin": SMALL for i in range(4)} | {f"b{i}.bin": BIG for i in range(4)}


def _urls(server: ServerThread) -> list[str]:
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    return [
        server.url(i % 2, f"/gen/{name}?size={size}&t={tag}")
        for i, (name, size) in enumerate(_files().items())
    ]


def _wait_until(check: object, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {check}")


def _parts(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.glob("*.midair-part")}


def _stuck_publishing(directory: Path) -> bool:
    """Every small file complete in its part (its publication stuck in the slow sync) and
    every big one begun: the shards are mid-flight with a flush ahead of them."""
    parts = _parts(directory)
    small = [parts.get(f"s{i}.bin.midair-part") for i in range(4)]
    big = [parts.get(f"b{i}.bin.midair-part") for i in range(4)]
    return all(size == SMALL for size in small) and all(size for size in big)


def _final_names_are_whole(directory: Path) -> None:
    for name, size in _files().items():
        if (directory / name).exists():
            assert (directory / name).read_bytes() == expected_bytes(name, size), name


def _survivors(tag: str) -> list[int]:
    """Processes (the run's dask workers, its nanny) whose environment holds ``tag``."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if tag.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _on_disk(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_a_shard_killed_while_flushing_loses_nothing(tmp_path: Path) -> None:
    midair = Midair("dask")  # its own local cluster: the engine closes (and kills) the workers
    tag = f"MIDAIR_TEST_RUN=dask-stop-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, **{faults.SLOW_SYNC_ENV: str(SLOW_SYNC)})
    env.update([tag.split("=", 1)])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))
    with ServerThread(addresses=2, rate=RATE) as slow:
        urls = _urls(slow)
        proc = subprocess.Popen(
            midair.command("-d", str(tmp_path), *urls),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            _wait_until(lambda: _stuck_publishing(tmp_path))
        finally:
            proc.send_signal(signal.SIGTERM)  # the run's process alone: the engine stops its shards
            sent = time.monotonic()
            _, stderr = proc.communicate(timeout=30)
        seconds = time.monotonic() - sent
        assert proc.returncode == 143, stderr
        assert seconds < STOP_WITHIN, f"{seconds:.2f} s to stop"
        assert "Traceback" not in stderr, stderr
        names = {f"{n}{suffix}" for n in _files() for suffix in ("", ".midair-part", ".midair-ctl")}
        assert set(_on_disk(tmp_path)) <= names
        _final_names_are_whole(tmp_path)
        before = _on_disk(tmp_path)
        time.sleep(0.5)  # a worker left alive would still be receiving into its parts
        assert _on_disk(tmp_path) == before, "files changed after the run had exited"
        assert _survivors(tag) == [], "a worker outlived the run"
        slow.set_rate(0)
        again = midair.get("-d", str(tmp_path), *urls, timeout=60)
    assert again.returncode == 0, again.stderr
    for name, size in _files().items():
        assert (tmp_path / name).read_bytes() == expected_bytes(name, size), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(_files())
