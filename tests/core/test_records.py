"""Records: the core's value objects compare, hash, show and pickle by their fields."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable

import pytest

from midair.core.actions import Checkpoint, Close, Failed, Finished, Publish, Resume, Write
from midair.core.errors import NetworkError
from midair.core.records import Settings
from midair.core.results import Success
from midair.core.transfer import Accept, AlreadyComplete, Retry
from midair.core.urls import parse_url


def test_equal_by_type_and_fields() -> None:
    assert Close(1) == Close(1)
    assert Close(1) != Close(2)
    assert Close(1) != Checkpoint(1)  # same fields, another kind of action
    assert hash(Close(1)) == hash(Close(1))
    assert AlreadyComplete() == AlreadyComplete()


def test_defaults_and_keywords() -> None:
    publish = Publish(1, "/d/a", 3, None, "http://h/a", replace=True)
    assert (publish.target, publish.replace) == ("", True)
    assert Retry(NetworkError("u", "r")).pause_host is False


def test_repr_names_every_field_as_a_dataclass_would() -> None:
    assert repr(Finished(1, "u", "p", 3, False)) == (
        "Finished(download=1, url='u', path='p', size=3, skipped=False)"
    )
    assert repr(Write(1, 0, memoryview(b"ab"))) == "Write(download=1, offset=0, data=b'ab')"


@pytest.mark.parametrize(
    "record",
    [
        Finished(1, "u", "p", 3, True),
        Failed(2, "u", NetworkError("u", "reset")),
        Success("u", "p", 3),
        Accept(7),
        Resume("u", None, '"e"', None),
        parse_url("http://h:8080/a?b"),
    ],
)
def test_pickles_whole(record: object) -> None:
    back = pickle.loads(pickle.dumps(record))
    assert type(back) is type(record)
    assert repr(back) == repr(record)


def test_url_derives_its_origin_and_host_but_is_made_of_five_fields() -> None:
    url = parse_url("http://h:8080/a")
    assert (url.origin, url.host_header) == (("http", "h", 8080), "h:8080")
    assert url.values() == ("http://h:8080/a", "http", "h", 8080, "/a")
    assert repr(url) == (
        "URL(text='http://h:8080/a', scheme='http', host='h', port=8080, target='/a')"
    )
    with pytest.raises(AttributeError):
        del url.host  # type: ignore[misc]


def test_resume_as_dict_is_the_control_file_object() -> None:
    assert Resume("u", 5, None, "d").as_dict() == {
        "url": "u",
        "size": 5,
        "etag": None,
        "last_modified": "d",
    }


class Limits(Settings):
    """A small Settings class: the same machinery Options runs on."""

    rate: int = 0
    name: str = "x"
    token: str | None = None

    __secret__ = frozenset({"token"})

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate {self.rate}")


def test_settings_read_defaults_and_take_values_by_keyword_or_position() -> None:
    assert Limits.__match_args__ == ("rate", "name", "token")
    assert Limits().values() == (0, "x", None)
    assert Limits(rate=3).values() == (3, "x", None)
    assert Limits(3, "y").values() == (3, "y", None)
    assert Limits(3) == Limits(rate=3, name="x")  # a default given equals one left out
    assert hash(Limits(3)) == hash(Limits(rate=3, name="x"))
    assert Limits(3) != Limits(4)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {"rat": 1}, "unexpected fields ['rat']"),
        ((1,), {"rate": 2}, "'rate' twice"),
        ((1, "a", "t", 4), {}, "takes 3 values"),
    ],
)
def test_settings_refuse_unknown_repeated_and_extra_values(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Limits(*args, **kwargs)


def test_settings_check_their_values_on_construction_and_on_replace() -> None:
    with pytest.raises(ValueError, match="rate -1"):
        Limits(rate=-1)
    with pytest.raises(ValueError, match="rate -2"):
        Limits().replace(rate=-2)
    assert Limits(1, "y").replace(rate=2) == Limits(2, "y")


def test_settings_are_frozen_hide_secrets_and_pickle_whole() -> None:
    limits = Limits(rate=1, token="s3cret")
    with pytest.raises(AttributeError):
        limits.rate = 2  # type: ignore[misc]
    assert repr(limits) == "Limits(rate=1, name='x')"
    back = pickle.loads(pickle.dumps(limits))
    assert back == limits and back.token == "s3cret"


class Required(Settings):
    size: int
    hook: Callable[[int], int] = abs  # a function as a default: read as given, unbound


def test_a_settings_field_without_a_default_must_be_given() -> None:
    with pytest.raises(TypeError, match=re.escape("Required() got no ['size']")):
        Required()  # type: ignore[call-arg]
    required = Required(3)
    assert (required.size, required.hook(-2)) == (3, 2)
    assert required.replace(hook=str).hook(4) == "4"
