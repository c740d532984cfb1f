"""Injected faults for tests/test_contract.py, in this process and in every child.

The sharding engines run the core in other processes (spawned workers, dask
workers), where a test's monkeypatch cannot reach.  So the contract tests put
this directory on ``PYTHONPATH`` and name the fault in ``MIDAIR_TEST_FAULT``
(``kind:marker-file``): every Python process started meanwhile imports this
module at start-up and patches the same method.  The fault fires once per run,
across processes: the first process to create the marker file raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "MIDAIR_TEST_FAULT"
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


def install_from_environment() -> None:
    spec = os.environ.get(ENV)
    if spec:
        kind, marker = spec.split(":", 1)
        cls, name = target(kind)
        setattr(cls, name, faulty(kind, marker))


install_from_environment()
