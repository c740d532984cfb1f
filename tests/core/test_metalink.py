"""Metalink v4 (RFC 5854) and v3 documents read into jobs; hostile and malformed ones
refused with one line naming the document."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.errors import InputError
from midair.core.jobs import Checksum, Job, Pieces
from midair.core.metalink import (
    MetalinkError,
    looks_like_metalink,
    metalink_jobs,
    parse_locations,
    parse_metalink,
    read_metalink,
)
from midair.core.urls import parse_url

SEEDED = settings(derandomize=True, database=None, deadline=None)
V4 = 'xmlns="urn:ietf:params:xml:ns:metalink"'
V3 = 'version="3.0" xmlns="http://www.metalinker.org/"'
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA512 = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce" * 2
MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def meta4(*files: str) -> bytes:
    head = '<?xml version="1.0" encoding="UTF-8"?>\n'
    return f"{head}<metalink {V4}>{''.join(files)}</metalink>".encode()


def v4_file(name: str = "f.bin", body: str = "<url>http://a.example/f.bin</url>") -> str:
    return f'<file name="{name}">{body}</file>'


def metalink3(*files: str) -> bytes:
    return (
        f'<?xml version="1.0"?><metalink {V3}><files>{"".join(files)}</files></metalink>'.encode()
    )


def urls(job: Job) -> list[str]:
    return [job.url.text, *(m.text for m in job.mirrors)]


def refused(data: bytes) -> str:
    """The one-line message for ``data`` given as ``list.meta4``."""
    with pytest.raises(InputError) as caught:
        parse_metalink(data, "list.meta4")
    message = str(caught.value)
    assert message.startswith("list.meta4: ") and "\n" not in message, message
    return message


# --- v4 -------------------------------------------------------------------------------
def test_v4_file_with_everything() -> None:
    doc = meta4(
        v4_file(
            "dir/example.iso",
            f"""<size>14471447</size>
            <hash type="md5">{MD5}</hash>
            <hash type="sha-256">{SHA256.upper()}</hash>
            <pieces length="262144" type="sha-1">
              <hash>{"a" * 40}</hash><hash>{"b" * 40}</hash>
            </pieces>
            <url location="de" priority="2">http://de.example/example.iso</url>
            <url location="us" priority="1">https://us.example/example.iso</url>
            <metaurl mediatype="torrent" priority="1">http://t.example/x.torrent</metaurl>
            <url priority="3">ftp://ftp.example/example.iso</url>""",
        )
    )
    [job] = parse_metalink(doc, "list.meta4")
    assert urls(job) == ["https://us.example/example.iso", "http://de.example/example.iso"]
    assert job.out == "dir/example.iso"
    assert job.checksum == Checksum("sha256", SHA256)  # the strongest, lower-cased
    assert job.size == 14471447
    assert job.pieces == Pieces(262144, "sha1", ("a" * 40, "b" * 40))


def test_v4_priority_lower_first_ties_in_document_order_none_given_last() -> None:
    body = (
        "<url>http://none.example/f</url>"
        '<url priority="5">http://five-a.example/f</url>'
        '<url priority="1">http://one.example/f</url>'
        '<url priority="5">http://five-b.example/f</url>'
    )
    [job] = read_metalink(meta4(v4_file("f", body)))
    assert [u.split("/")[2] for u in urls(job)] == [
        "one.example",
        "five-a.example",
        "five-b.example",
        "none.example",
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", ["us", "de", "jp"]),  # by priority alone
        ("jp", ["jp", "us", "de"]),
        ("DE, jp", ["de", "jp", "us"]),  # the preferred by priority, then the rest
    ],
)
def test_metalink_location_puts_servers_there_first(given: str, expected: list[str]) -> None:
    body = (
        '<url location="de" priority="2">http://de.example/f</url>'
        '<url location="jp" priority="3">http://jp.example/f</url>'
        '<url location="us" priority="1">http://us.example/f</url>'
    )
    [job] = read_metalink(meta4(v4_file("f", body)), parse_locations(given))
    assert [u.split("/")[2].split(".")[0] for u in urls(job)] == expected


def test_v3_location_counts_too() -> None:
    body = (
        '<resources><url type="http" location="us" preference="100">http://us.example/f</url>'
        '<url type="http" location="fr" preference="10">http://fr.example/f</url></resources>'
    )
    [job] = read_metalink(metalink3(f'<file name="f">{body}</file>'), ("fr",))
    assert job.url.text == "http://fr.example/f"


def test_v4_one_job_per_file_in_order() -> None:
    jobs = read_metalink(meta4(v4_file("a"), v4_file("b"), v4_file("c")))
    assert [job.out for job in jobs] == ["a", "b", "c"]
    assert all(job.checksum is None and job.size is None and job.pieces is None for job in jobs)


@pytest.mark.parametrize(
    ("hashes", "expected"),
    [
        ([("md5", MD5), ("sha-512", SHA512), ("sha-256", SHA256)], Checksum("sha512", SHA512)),
        ([("md5", MD5), ("sha-1", "c" * 40)], Checksum("sha1", "c" * 40)),
        ([("sha-384", "d" * 96), ("sha-256", SHA256)], Checksum("sha384", "d" * 96)),
        ([("md5", MD5)], Checksum("md5", MD5)),
        ([("crc32", "abcd"), ("sha3-256", "e" * 64)], None),  # nothing midair checks
    ],
)
def test_the_strongest_known_whole_file_hash_is_the_checksum(hashes, expected) -> None:
    body = "".join(f'<hash type="{t}">{h}</hash>' for t, h in hashes)
    [job] = read_metalink(meta4(v4_file("f", body + "<url>http://a.example/f</url>")))
    assert job.checksum == expected


def test_pieces_of_the_strongest_known_type() -> None:
    body = (
        f'<pieces length="10" type="sha-1"><hash>{"1" * 40}</hash></pieces>'
        f'<pieces length="20" type="sha-256"><hash>{"2" * 64}</hash>'
        f"<hash>{'3' * 64}</hash></pieces>"
        '<pieces length="30" type="tiger"><hash>x</hash></pieces>'
        "<url>http://a.example/f</url>"
    )
    [job] = read_metalink(meta4(v4_file("f", body)))
    assert job.pieces == Pieces(20, "sha256", ("2" * 64, "3" * 64))


def test_a_job_with_size_and_pieces_pickles() -> None:
    """The processes and dask engines send jobs to their workers."""
    body = f'<size>5</size><pieces length="4" type="md5"><hash>{MD5}</hash></pieces>'
    [job] = read_metalink(meta4(v4_file("f", body + "<url>http://a.example/f</url>")))
    assert pickle.loads(pickle.dumps(job)) == job


# --- v3 -------------------------------------------------------------------------------
def test_v3_file_with_everything() -> None:
    doc = metalink3(
        f"""<file name="example.iso"><size>1000</size>
        <verification>
          <hash type="md5">{MD5}</hash><hash type="sha1">{"f" * 40}</hash>
          <pieces length="512" type="sha1">
            <hash piece="1">{"2" * 40}</hash><hash piece="0">{"1" * 40}</hash>
          </pieces>
        </verification>
        <resources>
          <url type="http" location="us" preference="10">http://low.example/example.iso</url>
          <url type="ftp" preference="100">ftp://ftp.example/example.iso</url>
          <url type="http" preference="90">http://high.example/example.iso</url>
          <url type="http">http://unranked.example/example.iso</url>
        </resources></file>"""
    )
    [job] = parse_metalink(doc, "list.metalink")
    assert [u.split("/")[2] for u in urls(job)] == [
        "high.example",
        "low.example",
        "unranked.example",
    ]
    assert job.out == "example.iso" and job.size == 1000
    assert job.checksum == Checksum("sha1", "f" * 40)
    assert job.pieces == Pieces(512, "sha1", ("1" * 40, "2" * 40))  # in piece= order


# --- hostile and malformed documents --------------------------------------------------
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
 <file name="&lol9;"><url>http://a.example/f</url></file>
</metalink>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE metalink [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
 <file name="f"><url>http://a.example/&secret;</url></file>
</metalink>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE metalink SYSTEM "http://127.0.0.1:1/evil.dtd">
<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="f"><url>http://a.example/f</url></file></metalink>"""


@pytest.mark.parametrize(
    "data", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["laughs", "entity", "dtd"]
)
def test_a_document_with_a_dtd_is_refused_before_any_expansion(data: bytes) -> None:
    message = refused(data)
    assert "refused: the document has a DTD" in message
    assert "lol" not in message and "passwd" not in message


@pytest.mark.parametrize(
    "name", ["../evil", "a/../../evil", "/etc/passwd", "..", "a/./../..", "\\\\host\\x", ".hidden"]
)
def test_a_name_outside_the_directory_is_refused(name: str) -> None:
    message = refused(meta4(v4_file(name)))
    assert f"file {name!r}: unsafe name" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not well-formed XML"),
        (b"not xml at all", "not well-formed XML"),
        (b"<metalink xmlns='urn:ietf:params:xml:ns:metalink'><file>", "not well-formed XML"),
        (b"<html><body>404</body></html>", "not a Metalink document (root element <html>)"),
        (b"<metalink/>", "not a Metalink document (root element <metalink>)"),
        (meta4(), "no <file> in the Metalink"),
        (metalink3(), "no <file> in the Metalink"),
        (meta4("<file><url>http://a.example/f</url></file>"), "a <file> without a name"),
        (meta4(v4_file("f", "")), "file 'f': no http or https URL"),
        (meta4(v4_file("f", "<url>ftp://a.example/f</url><url>not a url</url>")), "no http or"),
        (meta4(v4_file("f", "<size>-1</size><url>http://a/f</url>")), "<size> '-1' is not a size"),
        (meta4(v4_file("f", "<size>1e9</size><url>http://a/f</url>")), "'1e9' is not a size"),
        (meta4(v4_file("f", '<url priority="x">http://a/f</url>')), "priority='x' is not"),
        (
            meta4(v4_file("f", '<hash type="sha-256">abc</hash><url>http://a/f</url>')),
            "file 'f': sha256 hash 'abc' is not 64 hex digits",
        ),
        (
            meta4(v4_file("f", f'<hash type="md5">{"g" * 32}</hash><url>http://a/f</url>')),
            "md5 hash",
        ),
        (
            meta4(
                v4_file("f", f'<pieces type="md5"><hash>{MD5}</hash></pieces><url>http://a/f</url>')
            ),
            "<pieces> without a whole-number length",
        ),
        (
            meta4(v4_file("f", '<pieces length="0" type="md5"></pieces><url>http://a/f</url>')),
            "<pieces> of length 0",
        ),
        (
            meta4(v4_file("f", '<pieces length="9" type="md5"></pieces><url>http://a/f</url>')),
            "<pieces> without a hash",
        ),
    ],
)
def test_a_malformed_document_is_one_input_error_naming_it(data: bytes, expected: str) -> None:
    assert expected in refused(data)


@SEEDED
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_parse_or_raise_metalink_error_only(data: bytes) -> None:
    try:
        jobs = read_metalink(data)
    except MetalinkError:
        return
    assert jobs and all(isinstance(job, Job) for job in jobs)


@SEEDED
@given(st.text(min_size=1, max_size=40))
def test_no_accepted_name_leaves_the_directory(name: str) -> None:
    """Whatever the name, an accepted one is a relative path without '..'."""
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    try:
        [job] = read_metalink(meta4(v4_file(escaped)))
    except MetalinkError:
        return
    assert job.out and not job.out.startswith("/") and ".." not in job.out.split("/")


# --- which URLs are Metalink documents -------------------------------------------------
@pytest.mark.parametrize(
    ("path", "media_type", "expected"),
    [
        ("/a/list.meta4", None, True),
        ("/a/LIST.METALINK", None, True),
        ("/a/list.meta4?x=1", None, True),
        ("/a/list.meta4.bin", None, False),
        ("/a/file.bin?name=x.meta4", None, False),
        ("/a/get", "application/metalink4+xml", True),
        ("/a/get", "Application/Metalink+XML; charset=utf-8", True),
        ("/a/get", "application/xml", False),
    ],
)
def test_looks_like_metalink(path: str, media_type: str | None, expected: bool) -> None:
    assert looks_like_metalink(path, media_type) is expected


def test_metalink_jobs_picks_the_documents() -> None:
    jobs = [
        Job(parse_url(u))
        for u in ("http://a/x.bin", "http://a/l.meta4", "http://a/L.METALINK", "http://a/meta")
    ]
    assert metalink_jobs(jobs) == jobs[1:3]
