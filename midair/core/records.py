"""``Record``: the core's immutable value objects, cheap to make.

Actions, decisions, URLs and results are made several times per file.  They are
plain classes with ``__slots__`` and an ``__init__`` written out, so making one
costs a few attribute stores: a frozen dataclass pays an ``object.__setattr__``
call per field (about 0.1 us each), and its decorator ~0.4 ms of import per class.
They are immutable by contract: every field is declared ``Final`` in ``__init__``,
so mypy refuses an assignment; that is what makes them safe to share between
threads and processes.  ``Settings`` is the same idea for a class of many fields
declared as a dataclass's are (``Options``): made once a run, but at every start.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any, ClassVar


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


if TYPE_CHECKING:
    from typing import Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> Any:  # typing's is for the type checker only
        return lambda cls: cls


@dataclass_transform(frozen_default=True)
class Settings(FrozenRecord):
    """A ``FrozenRecord`` declared as a frozen dataclass is: one ``name: type`` line per
    field, in order, most with a ``= default`` (``Options``' 40 fields).

    A dataclass's decorator writes and compiles its methods at import (~4 ms of every
    start for ``Options``, and the ``dataclasses`` module's own import, which brings
    ``inspect``); here the class body is the declaration and one generic ``__init__``
    serves every class.  Fields named in ``__secret__`` are left out of the repr (a
    traceback would show it).  ``__post_init__``, if the class has one, checks the
    values, as a dataclass's would.
    """

    __slots__ = ("__dict__",)
    __secret__: ClassVar[frozenset[str]] = frozenset()
    _defaults: ClassVar[dict[str, Any]] = {}
    _required: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = vars(cls).get("__annotations__", {}).items()
        names = tuple(name for name, kind in declared if not str(kind).startswith("ClassVar"))
        # mypy holds a class's __match_args__ fixed; this one is made from the declaration.
        cls.__match_args__ = (*cls.__match_args__, *names)  # type: ignore[misc]
        defaults = {name: vars(cls)[name] for name in names if name in vars(cls)}
        cls._defaults = {**cls._defaults, **defaults}
        cls._required = frozenset(cls.__match_args__) - cls._defaults.keys()

    def __init__(self, *args: Any, **values: Any) -> None:
        if len(args) > len(self.__match_args__):
            raise TypeError(f"{type(self).__name__}() takes {len(self.__match_args__)} values")
        for name, value in zip(self.__match_args__, args, strict=False):
            if name in values:
                raise TypeError(f"{type(self).__name__}() got {name!r} twice")
            values[name] = value
        unknown = values.keys() - self._defaults.keys() - self._required
        missing = self._required - values.keys()
        if unknown or missing:
            wrong = f"unexpected fields {sorted(unknown)}" if unknown else f"no {sorted(missing)}"
            raise TypeError(f"{type(self).__name__}() got {wrong}")
        # Defaults too are the instance's own: a function read from the class would bind.
        self.__dict__.update(self._defaults, **values)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked again (``dataclasses.replace``)."""
        return type(self)(**{**self.__dict__, **changes})

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__match_args__
            if name not in self.__secret__
        )
        return f"{type(self).__name__}({shown})"
