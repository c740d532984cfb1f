"""``Record``: the core's immutable value objects, cheap to make.

Actions, decisions, URLs and results are made several times per file.  They are
plain classes with ``__slots__`` and an ``__init__`` written out, so making one
costs a few attribute stores: a frozen dataclass pays an ``object.__setattr__``
call per field (about 0.1 us each), and its decorator ~0.4 ms of import per class.
They are immutable by contract: every field is declared ``Final`` in ``__init__``,
so mypy refuses an assignment; that is what makes them safe to share between
threads and processes.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any


class Record:
    """Compared, hashed, shown and pickled by its fields: ``__match_args__``, in the
    order ``__init__`` takes them (as a dataclass declares them).  A subclass's
    ``__slots__`` holds them, and any slot derived from them after.
    """

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def values(self) -> tuple[Any, ...]:
        """The fields' values, in constructor order."""
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.values() == other.values()

    def __hash__(self) -> int:
        return hash((type(self), self.values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.values())


class MutableRecord(Record):
    """A ``Record`` whose fields change (counters, result lists): compared and shown by
    its fields, but unhashable, as an equal-by-value mutable object must be."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]


class FrozenRecord(Record):
    """A ``Record`` that refuses assignment at run time too: for values made once per
    job and kept and shared for the whole run (``URL``).  Its ``__init__`` sets each
    field with ``object.__setattr__``, which costs what a frozen dataclass does."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name}")
