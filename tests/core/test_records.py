"""Records: the core's value objects compare, hash, show and pickle by their fields."""

from __future__ import annotations

import pickle

import pytest

from midair.core.actions import Checkpoint, Close, Failed, Finished, Publish, Resume, Write
from midair.core.errors import NetworkError
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
