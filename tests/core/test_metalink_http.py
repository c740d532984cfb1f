"""Metalink/HTTP (RFC 6249): Link rel=duplicate and Digest, parsed and then used by a batch."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from midair.core.jobs import Checksum
from midair.core.metalink_http import digest, duplicates
from midair.core.urls import parse_url

from .sim import FileServer, Step, run

BASE = parse_url("http://h.example/dir/f.iso")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["<http://m1.example/f.iso>; rel=duplicate"], ["http://m1.example/f.iso"]),
        (
            [
                '<http://m1.example/f.iso>; rel="duplicate"; pri=1, '
                "<https://m2.example/f.iso>; rel=duplicate"
            ],
            ["http://m1.example/f.iso", "https://m2.example/f.iso"],
        ),
        (["</other/f.iso>; rel=duplicate"], ["http://h.example/other/f.iso"]),  # relative
        (['<http://m1.example/f.meta4>; rel=describedby; type="application/metalink4+xml"'], []),
        (["<ftp://m1.example/f.iso>; rel=duplicate"], []),  # not http(s)
        (["<http://h.example/dir/f.iso>; rel=duplicate"], []),  # itself
        (
            [
                "<http://m1.example/f.iso>; rel=duplicate",
                "<http://m1.example/f.iso>; rel=duplicate",
            ],
            ["http://m1.example/f.iso"],
        ),
        (["garbage; rel=duplicate", "<http://[bad/f>; rel=duplicate"], []),
        (['<http://m1.example/a,b.iso>; rel="prev duplicate"'], ["http://m1.example/a,b.iso"]),
    ],
)
def test_duplicates(values: list[str], expected: list[str]) -> None:
    assert [u.text for u in duplicates(values, BASE)] == expected


def b64(algorithm: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def test_the_strongest_digest_wins_in_either_field_spelling() -> None:
    data = b"hello"
    values = [
        f"MD5={b64('md5', data)}, SHA-256={b64('sha256', data)}",
        f"sha-512=:{b64('sha512', data)}:",
    ]
    assert digest(values) == Checksum("sha512", hashlib.sha512(data).hexdigest())


@pytest.mark.parametrize(
    "value",
    ["SHA-256=not base64!", "SHA-256=" + base64.b64encode(b"short").decode(), "UNIXsum=1", ""],
)
def test_a_digest_nobody_can_use_is_ignored(value: str) -> None:
    assert digest([value]) is None


# --- a batch using them ---------------------------------------------------------------
H, M1 = "http://h.example", "http://m1.example"


def test_a_duplicate_named_on_the_answer_takes_over_when_the_first_source_fails() -> None:
    data = random.Random(1).randbytes(5000)
    first, mirror = FileServer(), FileServer()
    named = Step(headers=(("Link", f"<{M1}/f>; rel=duplicate"),), cut=1000, then="reset")
    first.add("/f", data, named)
    mirror.add("/f", data)
    sim = run([f"{H}/f"], {H: first, M1: mirror}, retries=0)
    assert sim.content(0) == data
    [resumed] = mirror.requests
    assert resumed.header("range") == "bytes=1000-"  # the same validator: no byte twice


def test_a_digest_on_the_answer_checks_the_file() -> None:
    data = random.Random(2).randbytes(5000)
    server = FileServer()
    server.add("/f", data, Step(headers=(("Digest", f"SHA-256={b64('sha256', b'other')}"),)))
    sim = run([f"{H}/f"], {H: server})
    [failed] = sim.failed.values()
    assert "checksum mismatch" in str(failed.error)


def test_a_right_digest_on_the_answer_passes() -> None:
    data = random.Random(3).randbytes(5000)
    server = FileServer()
    server.add("/f", data, Step(headers=(("Repr-Digest", f"sha-256=:{b64('sha256', data)}:"),)))
    sim = run([f"{H}/f"], {H: server})
    assert sim.content(0) == data
