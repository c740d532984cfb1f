"""The engine contract that signals and exceptions cannot break, once per engine.

In process: a core that raises once (in ``connected``, ``received`` or
``timer``), a store that raises and a listener that raises each end the run
with that error — raised to the caller, never a success.  The faults come from
``tests/faults/sitecustomize.py``, patched here and, through the environment,
in every worker process the sharding engines start.

As a subprocess (``python -m midair get``): SIGTERM and SIGINT mid-transfer
exit 143/130 within a second, keep the part files, and a re-run (unthrottled:
nothing needs to stay in flight then) completes the files byte-exact; a signal
while a 150,000-line list loads, while the run starts up, or while it prepares
the files (a sharding engine's workers in their own start) exits within a
second too, sent once a phase marker shows the run is there; a closed stdout
ends a ``--json`` run promptly with a non-zero status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Midair, stop_once, test_engines

from midair.api import Downloader
from midair.core.actions import Action, Started
from midair.serve import ServerThread, expected_bytes

FAULTS = Path(__file__).parent / "faults"
sys.path.insert(0, str(FAULTS))
import sitecustomize as faults  # noqa: E402  (tests/faults, not an installed module)

SHARDING = ("processes", "dask")
SIGNAL_EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}
STOP_WITHIN = 1.0  # seconds from a signal to the process's exit
SIZE, RATE = 600_000, 150_000  # 4 s a file: a run that ignored a stop would show it


def engine_options(engine: str) -> dict[str, Any]:
    return {"workers": 2} if engine in SHARDING else {}


def gen(
    server: ServerThread, host: int, name: str, size: int, engine: str, rate: int = RATE
) -> str:
    return server.url(host, f"/gen/{name}?size={size}&rate={rate}&t={engine}-{os.getpid()}")


def paced_url(server: ServerThread, host: int, name: str, engine: str) -> str:
    """A slow file whose pace is the server's (``set_rate``), not fixed in the URL."""
    return server.url(host, f"/gen/{name}?size={SIZE}&t={engine}-{os.getpid()}")


@pytest.fixture(scope="module")
def paced_server() -> Iterator[ServerThread]:
    with ServerThread(addresses=3) as srv:
        yield srv


@pytest.fixture
def paced(paced_server: ServerThread) -> ServerThread:
    """A server at ``RATE`` per connection until the test calls ``set_rate(0)``."""
    paced_server.set_rate(RATE)
    return paced_server


def slow_urls(server: ServerThread, engine: str, tag: str) -> list[str]:
    """One small quick file first (its publication wakes the timer), then slow ones."""
    quick = gen(server, 0, f"{tag}-quick.bin", 1000, engine, rate=0)
    return [quick] + [gen(server, h, f"{tag}-{h}.bin", SIZE, engine) for h in range(3)]


# --- in process: every internal error reaches the caller ---------------------------------
@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """``inject(kind)``: patch here and in every child process started from now on."""

    def install(kind: str) -> None:
        marker = str(tmp_path / f"fault-{kind}")
        cls, name = faults.target(kind)
        monkeypatch.setattr(cls, name, faults.faulty(kind, marker))
        monkeypatch.setenv(faults.ENV, f"{kind}:{marker}")
        path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p)
        monkeypatch.setenv("PYTHONPATH", path)

    yield install


def downloader(tmp_path: Path, engine: str, urls: list[str], **kwargs: Any) -> Downloader:
    dl = Downloader(
        str(tmp_path / "out"),
        engine=engine,
        engine_options=engine_options(engine),
        max_retry_wait=1,
        **kwargs,
    )
    for url in urls:
        dl.enqueue(url)
    return dl


@pytest.mark.parametrize("kind", ["connected", "received", "timer", "store"])
def test_an_internal_error_ends_the_run_with_that_error(server, engine, tmp_path, inject, kind):
    dl = downloader(tmp_path, engine, slow_urls(server, engine, kind))
    inject(kind)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=faults.MESSAGE.format(kind=kind)):
        dl.run()
    assert time.monotonic() - started < 3 * SIZE / RATE  # far sooner than the slow files


@pytest.mark.parametrize(
    "error",
    [ValueError("the listener broke"), BrokenPipeError()],
    ids=["ValueError", "BrokenPipeError"],
)
def test_a_listener_that_raises_ends_the_run_with_its_error(server, engine, tmp_path, error):
    def listener(action: Action) -> None:
        if type(action) is Started:
            raise error

    dl = downloader(tmp_path, engine, slow_urls(server, engine, "listener"), on_event=listener)
    started = time.monotonic()
    with pytest.raises(type(error)) as raised:
        dl.run()
    assert raised.value is error
    assert time.monotonic() - started < 3 * SIZE / RATE


def test_a_stop_requested_from_another_thread_ends_the_run_keeping_part_files(
    server, engine, tmp_path
):
    urls = [gen(server, h, f"req{h}.bin", SIZE, engine) for h in range(3)]
    in_flight = 1 if engine == "sequential" else 3  # the transfers that begin at once
    started: list[Action] = []
    begun = threading.Event()

    def listen(action: Action) -> None:
        if type(action) is Started:
            started.append(action)
            if len(started) == in_flight:
                begun.set()

    dl = downloader(tmp_path, engine, urls, on_event=listen)
    results = dl.run(around=lambda run: stop_once(begun, run, settle=0.3))  # bytes on disk
    assert begun.is_set()
    assert results.successes == [] and results.failures == []  # stopped: none ended
    out = tmp_path / "out"
    assert len(list(out.glob("req*.bin.midair-part"))) == in_flight
    assert len(list(out.glob("req*.bin.midair-ctl"))) == in_flight  # written on the way out


def handlers() -> tuple[object, object]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def test_a_run_in_the_main_thread_takes_the_signals_and_gives_them_back(server, tmp_path):
    before, during = handlers(), []
    url = gen(server, 0, "handlers.bin", 1000, "epoll", rate=0)
    downloader(tmp_path, "epoll", [url], on_event=lambda _: during.append(handlers())).run()
    assert during and all(h != before for h in during)
    assert handlers() == before


def test_a_run_in_another_thread_leaves_the_signals_alone(server, tmp_path):
    before, during = handlers(), []
    url = gen(server, 0, "thread.bin", 1000, "epoll", rate=0)
    dl = downloader(tmp_path, "epoll", [url], on_event=lambda _: during.append(handlers()))
    thread = threading.Thread(target=dl.run)
    thread.start()
    thread.join(timeout=30)
    assert during and all(h == before for h in during)


# --- as a subprocess: signals and a closed stdout ----------------------------------------
def start(midair: Any, *args: str, **popen: Any) -> subprocess.Popen[str]:
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(
        midair.command(*args), stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **popen
    )


def wait_for_event(proc: subprocess.Popen[str], event: str, limit: float = 60) -> None:
    """Read ``--json`` lines until one of ``event`` arrives (bounded in time)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"midair ended before a {event!r} event: {proc.stderr.read()}"
        if json.loads(line)["event"] == event:
            return
    pytest.fail(f"no {event!r} event in {limit} s")


def signal_and_time(proc: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    """Send ``signum``; seconds until the process exited, and its stderr."""
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running 30 s after {signal.Signals(signum).name}")
    return time.monotonic() - sent, stderr


def wait_for_bytes_on_disk(directory: Path, limit: float = 30) -> None:
    """Until a part file in ``directory`` holds data (bounded in time)."""
    deadline = time.monotonic() + limit
    while not any(p.stat().st_size for p in directory.glob("*.midair-part")):
        assert time.monotonic() < deadline, f"no part file with data in {limit} s"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_transfer_stops_at_once_and_the_rerun_resumes(
    midair, paced, engine, tmp_path, signum
):
    urls = [paced_url(paced, h, f"sig{h}.bin", engine) for h in range(3)]
    proc = start(midair, "--json", "-d", str(tmp_path), *urls)
    wait_for_event(proc, "start")
    wait_for_bytes_on_disk(tmp_path)
    seconds, stderr = signal_and_time(proc, signum)
    assert proc.returncode == SIGNAL_EXIT[signum], stderr
    assert seconds < STOP_WITHIN, f"{seconds:.2f} s to stop"
    assert "part files kept" in stderr
    assert list(tmp_path.glob("*.midair-part")), "no part file kept"
    assert not any((tmp_path / f"sig{h}.bin").exists() for h in range(3)), "stopped too late"
    paced.set_rate(0)
    rerun = midair.get("-d", str(tmp_path), *urls)
    assert rerun.returncode == 0, rerun.stderr
    for h in range(3):
        assert (tmp_path / f"sig{h}.bin").read_bytes() == expected_bytes(f"sig{h}.bin", SIZE)
    assert not list(tmp_path.glob("*.midair-*"))


def write_list(path: Path, server: ServerThread, lines: int) -> Path:
    with path.open("w") as f:
        for i in range(lines):
            f.write(gen(server, i % 3, f"l{i}.bin", 1000, "list") + "\n")
    return path


@pytest.fixture(scope="module")
def long_list(tmp_path_factory: pytest.TempPathFactory, http1_server: ServerThread) -> Path:
    """150,000 URLs: on an idle machine loading the list, the core's start and preparing
    the files each take most of a second, or more."""
    return write_list(tmp_path_factory.mktemp("list") / "urls.txt", http1_server, 150_000)


@pytest.fixture(scope="module")
def longer_list(tmp_path_factory: pytest.TempPathFactory, http1_server: ServerThread) -> Path:
    """300,000 URLs: 150,000 a shard, whose core's start (in a worker thread, which
    nothing interrupts) then lasts over a second: a stop must not wait for it."""
    return write_list(tmp_path_factory.mktemp("list") / "urls.txt", http1_server, 300_000)


def phase_markers(directory: Path) -> dict[str, str]:
    """The environment that makes ``midair get`` (and its workers) mark its phases."""
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **{faults.PHASES_ENV: str(directory)})


def marked(directory: Path, phase: str, pid: int, by_worker: bool = False) -> bool:
    """Has process ``pid`` (or, ``by_worker``, another process) reached ``phase``?"""
    pids = [m.suffix[1:] for m in directory.glob(f"{phase}.*")]
    return any((p != str(pid)) == by_worker for p in pids)


def wait_for_phase(proc: subprocess.Popen[str], directory: Path, phase: str, by_worker: bool):
    deadline = time.monotonic() + 60
    while not marked(directory, phase, proc.pid, by_worker):
        assert proc.poll() is None, f"ended before {phase}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {phase} marker in 60 s"
        time.sleep(0.01)


# loading: parsing the list (read whole only with --check-input: else it is read as the run
# goes); start-up: the core's start (nothing on disk yet: a signal raises); preparing:
# committed, files being prepared (a signal only stops).  A sharding engine prepares in
# its workers, each starting its own shard's core: signalled then.
@pytest.mark.parametrize(
    ("phase", "after", "signum"),
    [
        ("loading", "start-up", signal.SIGTERM),
        ("start-up", "preparing", signal.SIGINT),
        ("preparing", None, signal.SIGTERM),
    ],
    ids=["loading", "start-up", "preparing"],
)
def test_a_signal_before_transfers_begin_ends_within_a_second(
    midair, engine, tmp_path, request, phase, after, signum
):
    in_workers = phase == "preparing" and engine in SHARDING
    urls = request.getfixturevalue("longer_list" if in_workers else "long_list")
    marks = tmp_path / "phases"
    marks.mkdir()
    out = tmp_path / "out"
    env = phase_markers(marks)
    checks = ["--check-input"] if phase == "loading" else []
    proc = start(
        midair, "-q", *checks, "-d", str(out), "-i", str(urls), stdout=subprocess.DEVNULL, env=env
    )
    try:
        if in_workers:
            wait_for_phase(proc, marks, "preparing", by_worker=False)
            wait_for_phase(proc, marks, "start-up", by_worker=True)
        else:
            wait_for_phase(proc, marks, phase, by_worker=False)
    finally:
        seconds, stderr = signal_and_time(proc, signum)
    assert proc.returncode == SIGNAL_EXIT[signum], stderr
    assert seconds < STOP_WITHIN, f"{seconds:.2f} s to stop while {phase}"
    if after is not None:  # the signal ended the run inside the phase
        assert not marked(marks, after, proc.pid), f"{after} was reached"
        assert not out.exists() or not list(out.iterdir())


def test_a_closed_stdout_ends_a_json_run_promptly(midair, server, engine, tmp_path):
    urls = [gen(server, h, f"pipe{h}.bin", SIZE, engine) for h in range(3)]
    proc = start(midair, "--json", "-d", str(tmp_path), *urls)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["event"]
    closed = time.monotonic()
    proc.stdout.close()  # `| head -1`: the reader is gone
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - closed < SIZE / RATE, "ran on after its reader left"
    assert proc.returncode != 0
    assert "Traceback" not in stderr


def test_the_cli_reports_an_internal_error_in_one_line_and_a_traceback(
    midair, server, engine, tmp_path, inject
):
    inject("received")  # in the CLI's process too: it inherits the environment
    result = midair.get("-d", str(tmp_path), *slow_urls(server, engine, "cli"), timeout=60)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    [line] = [x for x in lines if x.startswith("midair: error: internal error:")]
    assert faults.MESSAGE.format(kind="received") in line
    assert "Traceback (most recent call last)" in result.stderr
    assert not (tmp_path / "cli-0.bin").exists()


# --- a parent that dies without a word ---------------------------------------------------
def _descendants(pid: int) -> set[int]:
    """Every live process under ``pid``, read from /proc (a worker's own children too)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        stat = _stat(int(entry)) if entry.isdigit() else None
        if stat is not None:
            parents[int(entry)] = int(stat[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _stat(pid: int) -> list[str] | None:
    """State and parent of a live process (a zombie has ended), else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, parent = text.rpartition(")")[2].split()[:2]  # the name may hold spaces
    return None if state in "ZX" else [state, parent]


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _stat(pid) is not None}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("engine", [e for e in SHARDING if e in test_engines()])
@pytest.mark.parametrize("display", ["-q", "--json"], ids=["fork", "spawn"])
def test_workers_end_with_a_parent_killed_mid_transfer(server, engine, tmp_path, display):
    """SIGKILL (as ``os._exit``) runs nothing in the parent: its workers must see it
    themselves and stop, not download on as orphans.  (-q forks the processes engine's
    workers; --json starts a display thread first, so they are spawned.)"""
    urls = [gen(server, h, f"orphan{h}.bin", SIZE, engine) for h in range(3)]
    out = tmp_path / "out"
    command = Midair(engine).command(display, "-d", str(out), *urls)
    with open(tmp_path / "stderr", "w") as stderr:  # a pipe's end would wait for the workers
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    try:
        wait_for_bytes_on_disk(out)
        workers = _descendants(proc.pid)
        assert workers, "no worker processes"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    deadline = time.monotonic() + STOP_WITHIN
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = _alive(workers)
    for pid in left:  # no orphan outlives the test, whatever it asserts
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(workers)} workers outlived their parent"
