"""Engines: the same core and store driven by different concurrency models.

An engine has a ``name`` and ``run(run)``, which drives a ``midair.run.Run``
(through a ``midair.session.Session``, or shards of it) and returns when it is
finished or stopped (``run_async`` too, where the model allows).  The registry below names
each engine's module lazily, so importing midair never imports gevent, uvloop
or dask.
"""

from __future__ import annotations

import importlib

from ..core.errors import InputError
from ..core.records import Record
from ..run import Run

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any, Final, Protocol

    class Engine(Protocol):
        name: str

        def run(self, run: Run) -> None: ...


class EngineInfo(Record):
    """One registry entry: the engine's module and class, its model in a line, and
    the optional packages (with the extra that installs them) it needs.  A Record,
    not a dataclass: the registry is built on every `midair get`, before the first
    connect."""

    __match_args__ = ("name", "module", "cls", "model", "requires", "extra")
    __slots__ = __match_args__

    def __init__(
        self,
        name: str,
        module: str,
        cls: str,
        model: str,
        requires: tuple[str, ...] = (),
        extra: str | None = None,
    ) -> None:
        self.name: Final = name
        self.module: Final = module
        self.cls: Final = cls
        self.model: Final = model
        self.requires: Final = requires
        self.extra: Final = extra

    @property
    def available(self) -> bool:
        import importlib.util  # only `midair engines` and an optional engine ask

        return all(importlib.util.find_spec(mod) is not None for mod in self.requires)


ENGINES: dict[str, EngineInfo] = {
    info.name: info
    for info in [
        EngineInfo(
            "auto",
            "midair.engines.auto",
            "AutoEngine",
            "picks by the batch's shape: processes for many jobs on one origin or "
            "thousands in flight, else epoll",
        ),
        EngineInfo(
            "sequential",
            "midair.engines.blocking",
            "SequentialEngine",
            "one blocking socket at a time: the baseline",
        ),
        EngineInfo(
            "threads",
            "midair.engines.blocking",
            "ThreadsEngine",
            "blocking sockets on a pool of OS threads",
        ),
        EngineInfo(
            "green",
            "midair.engines.blocking",
            "GreenEngine",
            "blocking-style code on gevent greenlets",
            ("gevent",),
            "green",
        ),
        EngineInfo(
            "epoll",
            "midair.engines.epoll",
            "EpollEngine",
            "one thread, selectors/epoll, explicit state per connection",
        ),
        EngineInfo(
            "reactor",
            "midair.engines.reactor",
            "ReactorEngine",
            "callbacks on asyncio Protocol objects, no coroutines in the data path",
        ),
        EngineInfo(
            "asyncio",
            "midair.engines.asyncio_engine",
            "AsyncioEngine",
            "coroutines on one asyncio event loop (uvloop with --loop uvloop)",
        ),
        EngineInfo(
            "processes",
            "midair.engines.processes",
            "ProcessesEngine",
            "one event loop per core, hosts sharded across processes",
        ),
        EngineInfo(
            "dask",
            "midair.engines.dask_engine",
            "DaskEngine",
            "host shards as tasks on a dask.distributed cluster",
            ("dask", "distributed"),
            "dask",
        ),
    ]
}


DEFAULT_ENGINE = "auto"  # what `midair get` and the library use without --engine / engine=


def engine_info(name: object) -> EngineInfo:
    """The registry entry for ``name``, or an InputError listing the engines."""
    info = ENGINES.get(name) if isinstance(name, str) else None
    if info is None:
        raise InputError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    return info


def get_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name``; an InputError says what to install, or which
    option it does not take."""
    info = engine_info(name)
    if not info.available:
        raise InputError(
            f"engine {name!r} needs {', '.join(info.requires)}: pip install 'midair[{info.extra}]'"
        )
    module = importlib.import_module(info.module)
    try:
        engine: Engine = getattr(module, info.cls)(**options)
    except TypeError:
        given = ", ".join(sorted(options))
        raise InputError(f"engine {name!r} does not take {given or 'these options'}") from None
    except ValueError as exc:
        raise InputError(f"engine {name!r}: {exc}") from None
    return engine


__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "EngineInfo", "engine_info", "get_engine"]
