"""Output names: one safe component, never outside the download directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.naming import (
    _PLAIN_NAME,
    DEFAULT_NAME,
    MAX_NAME_BYTES,
    _resolve_any,
    _sanitize_any,
    content_disposition_name,
    family,
    name_from_path,
    numbered,
    path_from_url,
    relative_path,
    resolve,
    sanitize,
)

ROOT = "/downloads"

# Deterministic: the same examples on every run (no example database either).
SEEDED = settings(derandomize=True, database=None, deadline=None)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("file.iso", "file.iso"),
        ("a/b/c.txt", "c.txt"),
        ("a\\b\\c.txt", "c.txt"),
        ("../../etc/passwd", "passwd"),
        ("..", None),
        (".", None),
        ("...", None),
        ("", None),
        ("   ", None),
        (".hidden", "hidden"),
        ("  spaced  ", "spaced"),
        ("tab\there", "tabhere"),
        ("nul\x00byte", "nulbyte"),
        ("new\nline\r", "newline"),
        ("bidi\u202eevil", "bidievil"),
        ("dir/", None),
        ("ünïcödé.txt", "ünïcödé.txt"),
        (". ..", None),
        (" . . ", None),
        (". .. x", "x"),
    ],
)
def test_sanitize(raw: str, safe: str | None) -> None:
    assert sanitize(raw) == safe


def test_sanitize_truncates_to_max_bytes_keeping_the_extension() -> None:
    name = sanitize("a" * 400 + ".tar")
    assert name is not None
    assert name.endswith(".tar")
    assert len(name.encode()) <= MAX_NAME_BYTES


def test_sanitize_truncates_multibyte_names_on_a_character_boundary() -> None:
    name = sanitize("é" * 300 + ".bin")
    assert name is not None
    assert name.endswith(".bin")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert set(name.removesuffix(".bin")) == {"é"}


def test_sanitize_truncates_names_with_a_long_extension_whole() -> None:
    name = sanitize("x." + "e" * 300)
    assert name is not None
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name.startswith("x.")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/", DEFAULT_NAME),
        ("", DEFAULT_NAME),
        ("/dir/", DEFAULT_NAME),  # a directory's index, as wget names it
        ("/dir/file/", DEFAULT_NAME),
        ("/a/b/file.iso", "file.iso"),
        ("/a/file%20name.txt", "file name.txt"),
        ("/a/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "passwd"),
        ("/a/..%5C..%5Cwin.ini", "win.ini"),
        ("/%2E%2E", DEFAULT_NAME),
        ("/%00", DEFAULT_NAME),
        ("/%2E%20%2E%2E", DEFAULT_NAME),
        ("/bad%ffutf8", "bad\ufffdutf8"),
    ],
)
def test_name_from_path(path: str, name: str) -> None:
    assert name_from_path(path) == name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="report.pdf"', "report.pdf"),
        ("attachment; filename=report.pdf", "report.pdf"),
        ("attachment; filename=report.pdf; size=3", "report.pdf"),
        ('attachment; filename="with \\"quotes\\".txt"', 'with "quotes".txt'),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
        ("attachment; filename*=iso-8859-1'en'%A3%20rates.txt", "£ rates.txt"),
        ("attachment; filename=\"plain.txt\"; filename*=UTF-8''fancy.txt", "fancy.txt"),
        ("attachment; filename*=nosuchcharset''%A3x.txt", None),
        ("attachment", None),
        ('attachment; filename=".."', None),
        ('ATTACHMENT; FILENAME="UPPER.TXT"', "UPPER.TXT"),
    ],
)
def test_content_disposition_name(header: str, name: str | None) -> None:
    assert content_disposition_name(header) == name


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("a", "a"),
        ("a/b", os.path.join("a", "b")),
        ("./a//b/", os.path.join("a", "b")),
        ("a\\b", os.path.join("a", "b")),
    ],
)
def test_relative_path_accepts(given: str, normal: str) -> None:
    assert relative_path(given) == normal


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("/etc/passwd", "must be a relative path"),
        ("\\abs", "must be a relative path"),
        ("", "must be a relative path"),
        (".", "must be a relative path"),
        ("a/../../b", "component '..'"),
        ("..", "component '..'"),
        ("a/.hidden", "component '.hidden'"),
        ("a/ b", "component ' b'"),
        ("a/b\x00", "is not a safe file name"),
    ],
)
def test_relative_path_refuses(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        relative_path(given)


@pytest.mark.parametrize("name", ["a", "a/b", "sub/dir/file.iso", "a/../b"])
def test_resolve_inside(name: str) -> None:
    path = resolve(ROOT, name)
    assert os.path.commonpath([ROOT, path]) == ROOT
    assert path != ROOT


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x",
        "a/../../x",
        "/etc/passwd",
        ".",
        "",
        "a/..",
        f"../{os.path.basename(ROOT)}2/x",
        ROOT + "2/x",
    ],
)
def test_resolve_refuses_outside(name: str) -> None:
    # (a sibling whose name starts with the directory's is outside too)
    with pytest.raises(ValueError, match="resolves outside"):
        resolve(ROOT, name)


@pytest.mark.parametrize("name", ["x", "a/b", "a/../x"])
def test_resolve_in_the_root_directory(name: str) -> None:
    assert resolve("/", name) == os.path.normpath("/" + name)
    with pytest.raises(ValueError, match="resolves outside"):
        resolve("/", "..")


def test_resolve_relative_directory_is_made_absolute(tmp_path: object) -> None:
    assert resolve("rel", "x") == os.path.join(os.getcwd(), "rel", "x")


# --- properties --------------------------------------------------------------------
NASTY = st.text(st.sampled_from(list("./\\ ..a\x00\n\u202eé%2F")) | st.characters(), max_size=60)


@SEEDED
@given(NASTY)
def test_sanitize_yields_one_harmless_component(raw: str) -> None:
    name = sanitize(raw)
    if name is None:
        return
    assert name == name.strip()
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert os.path.dirname(resolve(ROOT, name)) == ROOT
    assert sanitize(name) == name  # idempotent


@SEEDED
@given(NASTY, st.integers(min_value=0, max_value=10**6))
def test_url_names_land_directly_in_the_directory(path: str, number: int) -> None:
    name = name_from_path("/" + path)
    assert os.path.dirname(resolve(ROOT, name)) == ROOT
    duplicate = numbered(resolve(ROOT, name), number)  # a duplicate's NAME.N, too
    assert os.path.dirname(duplicate) == ROOT and os.path.normpath(duplicate) == duplicate


@SEEDED
@given(NASTY)
def test_content_disposition_names_land_directly_in_the_directory(raw: str) -> None:
    for header in (f'attachment; filename="{raw}"', f"attachment; filename*=UTF-8''{raw}"):
        name = content_disposition_name(header)
        if name is not None:
            assert os.path.dirname(resolve(ROOT, name)) == ROOT


@SEEDED
@given(st.lists(NASTY, min_size=1, max_size=4))
def test_relative_paths_never_leave_the_directory(parts: list[str]) -> None:
    try:
        rel = relative_path("/".join(parts))
    except ValueError:
        return
    path = resolve(ROOT, rel)
    assert path.startswith(ROOT + os.sep)
    assert ".." not in path.split(os.sep)


# --- plain names take a short way to the same result -----------------------------------
NAME_PIECES = st.sampled_from(["a", "Z", "0", "_", "-", ".", "..", "/", " ", "ü", "x" * 120])
NAME_PIECES |= st.sampled_from([".midair-part", ".MIDAIR-CTL", "\\", "\t", "/etc", "../"])


@SEEDED
@given(st.lists(NAME_PIECES, max_size=6).map("".join))
def test_plain_names_are_sanitised_and_resolved_as_any_other(name: str) -> None:
    assert sanitize(name) == _sanitize_any(name)
    for directory in (ROOT, "/", "relative/dir"):
        try:
            expected: str | None = _resolve_any(directory, name)
        except ValueError:
            expected = None
        if _PLAIN_NAME.fullmatch(name):
            assert resolve(directory, name) == expected
        assert expected == abspath_rule(directory, name)


def abspath_rule(directory: str, name: str) -> str | None:
    """The rule as first written, straight from os.path: where ``name`` lands, or None."""
    root = os.path.abspath(directory)
    path = os.path.normpath(os.path.join(root, name))
    return path if path.startswith(root.rstrip(os.sep) + os.sep) and path != root else None


def test_a_relative_directory_follows_the_working_directory(tmp_path: Path) -> None:
    os.chdir(tmp_path)  # restored by the autouse fixture below
    assert resolve("out", "f") == str(tmp_path / "out" / "f")
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")
    assert resolve("out", "f") == str(tmp_path / "elsewhere" / "out" / "f")
    assert resolve("out", "a/../b") == str(tmp_path / "elsewhere" / "out" / "b")


@pytest.fixture(autouse=True)
def _keep_the_working_directory() -> Iterator[None]:
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_plain_names_are_common() -> None:
    for name in ("f00000", "file.iso", "a-b_c.tar.gz", "x" * MAX_NAME_BYTES):
        assert _PLAIN_NAME.fullmatch(name)
    for name in (".hidden", "a b", "x" * (MAX_NAME_BYTES + 1), "ü", ""):
        assert not _PLAIN_NAME.fullmatch(name)


@SEEDED
@given(st.lists(NAME_PIECES | st.sampled_from(["%41", "%2F", "%", "?", "a/"]), max_size=6))
def test_a_url_path_lands_where_its_name_resolves(pieces: list[str]) -> None:
    url_path = "/" + "".join(pieces)
    for directory in (ROOT, "/", "relative/dir"):
        try:
            expected: str | None = resolve(directory, name_from_path(url_path))
        except ValueError:
            expected = None
        try:
            got: str | None = path_from_url(directory, url_path)
        except ValueError:
            got = None
        assert got == expected, url_path


@pytest.mark.parametrize(
    ("path", "family_path"),
    [
        ("/d/f", "/d/f"),
        ("/d/f.1", "/d/f"),
        ("/d/f.1.12", "/d/f"),
        ("/d/v2.0.tar.gz", "/d/v2.0.tar.gz"),
        ("/d/f10", "/d/f10"),
        ("/a.b/f10", "/a.b/f10"),
        ("/d/report.pdf.3", "/d/report.pdf"),
    ],
)
def test_family_strips_every_duplicate_number(path: str, family_path: str) -> None:
    assert family(path) == family_path
    assert family(numbered(path, 7)) == family(path)  # what a numbering may make from it
