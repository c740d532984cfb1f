"""dask: a shard whose flush outlasts the stop's grace is killed, and nothing is lost.

On a stop the dask engine waits ``_STOP_WAIT`` for the shards that began to flush
their files and return, then closes its local cluster's workers with a
``_CLOSE_GRACE`` and kills those still busy.  A shard can need longer than that: its
store's close waits for the publisher, whose sync a loaded disk stretches (here
``MIDAIR_TEST_SLOW_SYNC``, tests/faults/sitecustomize.py, in every worker).  Killed
there, its part files hold complete bodies that were never renamed and its control
files may lag its last writes.  What must hold all the same: the run stops within
the contract's second, nothing partial ever stands under a final name, no worker
goes on writing after the run has exited, and a re-run ends every file byte-exact —
resuming where a control file was written, fetching again from zero where none was.
The SIGTERM goes to the run's process alone, or to its whole group as a supervisor
sends it: the workers ignore it (else they die at once and their nannies start new
ones, and the stop took 1.05-1.5 s) and are stopped by the engine as before.
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

BIG, RATE = 600_000, 150_000  # a big file takes 4 s: in flight at the stop
# Small files end before the stop, their publication stuck: one that ends at once has no
# control file yet; one that took over a second (the core's checkpoint) has one, so a
# re-run finds its part complete and resumes from its very end.
SMALL = {"fresh": 20_000, "checkpointed": 250_000}
SLOW_SYNC = 5.0  # seconds each publication's sync takes: far past the stop's grace
STOP_WITHIN = 1.0  # the contract: seconds from SIGTERM to exit (tests/test_contract.py)


def _files(small: int) -> dict[str, int]:
    return {f"s{i}.bin": small for i in range(4)} | {f"b{i}.bin": BIG for i in range(4)}


def _urls(server: ServerThread, files: dict[str, int]) -> list[str]:
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    return [
        server.url(i % 2, f"/gen/{name}?size={size}&t={tag}")
        for i, (name, size) in enumerate(files.items())
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


def _stuck_publishing(directory: Path, small: int) -> bool:
    """Every small file complete in its part (its publication stuck in the slow sync), with
    its control file if it was checkpointed, and every big one begun: the shards are
    mid-flight with a flush ahead of them."""
    parts = _parts(directory)
    complete = all(parts.get(f"s{i}.bin.midair-part") == small for i in range(4))
    begun = all(parts.get(f"b{i}.bin.midair-part") for i in range(4))
    controls = len(list(directory.glob("s*.bin.midair-ctl")))
    return complete and begun and controls == (4 if small == SMALL["checkpointed"] else 0)


def _final_names_are_whole(directory: Path, files: dict[str, int]) -> None:
    for name, size in files.items():
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


@pytest.mark.parametrize("to", ["run", "group"])
@pytest.mark.parametrize("small", list(SMALL))
def test_a_shard_killed_while_flushing_loses_nothing(tmp_path: Path, small: str, to: str) -> None:
    files = _files(SMALL[small])
    midair = Midair("dask")  # its own local cluster: the engine closes (and kills) the workers
    tag = f"MIDAIR_TEST_RUN=dask-stop-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, **{faults.SLOW_SYNC_ENV: str(SLOW_SYNC)})
    env.update([tag.split("=", 1)])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))
    with ServerThread(addresses=2, rate=RATE) as slow:
        urls = _urls(slow, files)
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
            _wait_until(lambda: _stuck_publishing(tmp_path, SMALL[small]))
        finally:
            if to == "run":  # the run's process alone: the engine stops its shards
                proc.send_signal(signal.SIGTERM)
            else:  # its workers too, as a supervisor stopping the whole group does
                os.killpg(proc.pid, signal.SIGTERM)
            sent = time.monotonic()
            _, stderr = proc.communicate(timeout=30)
        seconds = time.monotonic() - sent
        assert proc.returncode == 143, stderr
        assert seconds < STOP_WITHIN, f"{seconds:.2f} s to stop"
        assert "Traceback" not in stderr, stderr
        names = {f"{n}{suffix}" for n in files for suffix in ("", ".midair-part", ".midair-ctl")}
        assert set(_on_disk(tmp_path)) <= names
        _final_names_are_whole(tmp_path, files)
        before = _on_disk(tmp_path)
        time.sleep(0.5)  # a worker left alive would still be receiving into its parts
        assert _on_disk(tmp_path) == before, "files changed after the run had exited"
        assert _survivors(tag) == [], "a worker outlived the run"
        slow.set_rate(0)
        slow.reset_stats()
        again = midair.get("-d", str(tmp_path), *urls, timeout=60)
        ranges = {r.target.split("?")[0][5:]: r.header("range") for r in slow.stats().log}
    assert again.returncode == 0, again.stderr
    for name, size in files.items():
        assert (tmp_path / name).read_bytes() == expected_bytes(name, size), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    assert sorted(ranges) == sorted(files)  # one request each
    if small == "fresh":  # no control file: each part fetched again from its start
        assert set(ranges.values()) == {None}
    else:  # each resumed, the small ones from their very end
        assert all(ranges[f"s{i}.bin"] == f"bytes={SMALL[small]}-" for i in range(4))
        assert all(ranges[f"b{i}.bin"] for i in range(4))
