"""Injected faults and phase markers for tests/test_contract.py, in every child process.

The sharding engines run the core in other processes (spawned workers, dask
workers), where a test's monkeypatch cannot reach.  So the contract tests put
this directory on ``PYTHONPATH`` and name the fault in ``MIDAIR_TEST_FAULT``
(``kind:marker-file``): every Python process started meanwhile imports this
module at start-up and patches the same method.  The fault fires once per run,
across processes: the first process to create the marker file raises.

``MIDAIR_TEST_PHASES=DIR`` instead marks the phases of a ``midair get`` run as
empty files in DIR, so a test signals a run once it is in a phase, not after a
sleep that a loaded machine stretches past it: ``loading`` when the input list
starts being parsed, ``start-up`` when the run exists (the core's start comes
next, before any file is touched), ``preparing`` once the engine has committed
to acting on the files (a signal only requests a stop from then on).

``MIDAIR_TEST_SLOW_SYNC=SECONDS`` makes every publication's sync (``store._make_durable``)
take that much longer, as a loaded disk does: a stopped run's flush then outlasts
any grace a sharding engine gives it (tests/test_dask_stop.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "MIDAIR_TEST_FAULT"
PHASES_ENV = "MIDAIR_TEST_PHASES"
SLOW_SYNC_ENV = "MIDAIR_TEST_SLOW_SYNC"
MESSAGE = "injected fault in {kind}"


def target(kind: str) -> tuple[type, str]:
    """The class and method a fault of ``kind`` replaces."""
    if kind == "store":
        from midair.store import Store

        return Store, "write"
    from midair.core.batch import Batch

    return Batch, kind  # connected, received, timer


def faulty(kind: str, marker: str) -> Callable[..., Any]:
    """``kind``'s method, raising RuntimeError the first time any process calls it."""
    cls, name = target(kind)
    original = getattr(cls, name)

    def method(*args: Any, **kwargs: Any) -> Any:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return original(*args, **kwargs)
        raise RuntimeError(MESSAGE.format(kind=kind))

    return method


def mark(directory: str, phase: str) -> None:
    """``DIR/PHASE.PID``: a sharding engine's workers mark their own runs' phases too."""
    path = os.path.join(directory, f"{phase}.{os.getpid()}")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY))


def marking(directory: str) -> None:
    """Wrap the functions that begin each phase so they leave its marker first (or, for
    ``commit``, once committed: a signal seen after the marker must only stop)."""
    from midair.core import jobs
    from midair.run import Run

    parse, init, commit = jobs.parse_input_file, Run.__init__, Run.commit

    def parse_input_file(*args: Any, **kwargs: Any) -> Any:
        mark(directory, "loading")
        return parse(*args, **kwargs)

    def run_init(self: Run, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        mark(directory, "start-up")

    def run_commit(self: Run) -> None:
        commit(self)
        mark(directory, "preparing")

    jobs.parse_input_file = parse_input_file  # type: ignore[assignment]
    Run.__init__ = run_init  # type: ignore[method-assign]
    Run.commit = run_commit  # type: ignore[method-assign]


def slow_sync(seconds: float) -> None:
    import time

    from midair import store

    durable = store._make_durable

    def make_durable(group: Any) -> Any:
        time.sleep(seconds)
        return durable(group)

    store._make_durable = make_durable  # type: ignore[assignment]


def install_from_environment() -> None:
    spec = os.environ.get(ENV)
    if spec:
        kind, marker = spec.split(":", 1)
        cls, name = target(kind)
        setattr(cls, name, faulty(kind, marker))
    phases = os.environ.get(PHASES_ENV)
    if phases:
        marking(phases)
    slow = os.environ.get(SLOW_SYNC_ENV)
    if slow:
        slow_sync(float(slow))


install_from_environment()
