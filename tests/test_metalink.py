"""Metalink end to end (issue 10, "Metalink"): ``-M FILE``, ``enqueue_metalink`` and
``.meta4`` URLs followed, against ``midair serve`` and nginx, once per engine.

A Metalink's file is fetched from its best mirror, moves on when one fails or serves
another size than the document says, is named by the document, and is published
only when its whole-file hash matches: byte-exact, or failed with nothing under its
final name.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from conftest import Midair, midair_for

from midair import Downloader
from midair.serve import ServerThread, expected_bytes


@pytest.fixture
def midair(engine: str, request: pytest.FixtureRequest) -> Midair:
    return midair_for(engine, request, "--retries", "1")


def gen(server: ServerThread, host: int, name: str, size: int, tag: str, faults: str = "") -> str:
    return server.url(host, f"/gen/{name}?size={size}&t={tag}{faults}")


def dead_url(name: str) -> str:
    """A loopback port nobody listens on: the connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gen/{name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta4_file(name: str, urls: list[str], size: int | None = None, digest: str = "") -> str:
    """One v4 ``<file>``: ``urls`` in priority order (the first best)."""
    parts = [f"<size>{size}</size>"] if size is not None else []
    parts += [f'<hash type="sha-256">{digest}</hash>'] if digest else []
    parts += [f'<url priority="{i}">{escape(u)}</url>' for i, u in enumerate(urls, 1)]
    return f'<file name="{escape(name)}">{"".join(parts)}</file>'


def meta4(*files: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<metalink xmlns="urn:ietf:params:xml:ns:metalink">{"".join(files)}</metalink>\n'
    )


def written(tmp_path: Path, text: str, name: str = "list.meta4") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def failures(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("failed:")]


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --- -M FILE, every engine --------------------------------------------------------------
def test_dead_first_mirror_then_good_second_byte_exact(midair, server, engine, tmp_path):
    size = 90_000
    body = expected_bytes("ml1.bin", size)
    urls = [dead_url("ml1.bin"), gen(server, 1, "ml1.bin", size, engine)]
    doc = written(tmp_path, meta4(meta4_file("sub/named.bin", urls, size, sha256(body))))
    out = tmp_path / "out"
    result = midair.get("-d", str(out), "-M", doc)
    assert result.returncode == 0, result.stderr
    assert (out / "sub" / "named.bin").read_bytes() == body  # named by the document
    assert listing(out) == ["sub/named.bin"]


def test_a_wrong_whole_file_hash_fails_with_nothing_under_the_final_name(
    midair, server, engine, tmp_path
):
    size = 50_000
    wrong = sha256(b"another file")
    urls = [gen(server, 0, "ml2.bin", size, engine)]
    doc = written(tmp_path, meta4(meta4_file("ml2.bin", urls, size, wrong)))
    out = tmp_path / "out"
    result = midair.get("-d", str(out), "-M", doc)
    assert result.returncode == 1
    [line] = failures(result.stderr)
    assert "checksum mismatch" in line and wrong in line
    assert not (out / "ml2.bin").exists()


def test_a_mirror_serving_another_size_than_the_document_is_dropped(
    midair, server, engine, tmp_path
):
    size = 40_000
    other = gen(server, 0, "ml3.bin", size + 1, engine)  # another file under its name
    good = gen(server, 1, "ml3.bin", size, engine)
    doc = written(tmp_path, meta4(meta4_file("ml3.bin", [other, good], size)))
    out = tmp_path / "out"
    result = midair.get("-d", str(out), "-M", doc)
    assert result.returncode == 0, result.stderr
    assert (out / "ml3.bin").read_bytes() == expected_bytes("ml3.bin", size)
    asked = {r.host for r in server.stats().log if f"t={engine}" in r.target and "ml3" in r.target}
    assert asked == {server.hosts[0], server.hosts[1]}  # the first was asked, then dropped


def test_every_source_of_another_size_fails_the_file_naming_each(midair, server, engine, tmp_path):
    urls = [gen(server, 0, "ml4.bin", 500, engine), gen(server, 1, "ml4.bin", 700, engine)]
    doc = written(tmp_path, meta4(meta4_file("ml4.bin", urls, 600)))
    out = tmp_path / "out"
    result = midair.get("-d", str(out), "-M", doc)
    assert result.returncode == 1
    [line] = failures(result.stderr)
    assert "every mirror failed" in line
    assert "serves 500 bytes where 600 were expected" in line
    assert "serves 700 bytes where 600 were expected" in line
    assert not (out / "ml4.bin").exists()


# --- a served .meta4 followed, every engine (nginx serves the document) ------------------
def test_a_served_meta4_url_is_followed(midair, server, engine, nginx, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    one, two = expected_bytes("mf1.bin", 30_000), expected_bytes("mf2.bin", 20_000)
    (root / "list.meta4").write_text(
        meta4(
            meta4_file("first.bin", [gen(server, 0, "mf1.bin", 30_000, engine)], 30_000),
            meta4_file(
                "second.bin",
                [
                    gen(server, 1, "mf2.bin", 20_000, engine, "&status=404"),
                    gen(server, 2, "mf2.bin", 20_000, engine),
                ],
                digest=sha256(two),
            ),
        )
    )
    web = nginx(root)
    plain = gen(server, 0, "plain.bin", 100, engine)
    out = tmp_path / "out"
    result = midair.get("-d", str(out), web.url(0, "/list.meta4"), plain)
    assert result.returncode == 0, result.stderr
    assert (out / "first.bin").read_bytes() == one
    assert (out / "second.bin").read_bytes() == two
    assert (out / "plain.bin").read_bytes() == expected_bytes("plain.bin", 100)
    assert listing(out) == ["first.bin", "plain.bin", "second.bin"]  # not the .meta4


def test_a_served_document_that_is_no_metalink_fails_that_url_only(
    midair, server, engine, nginx, tmp_path
):
    root = tmp_path / "root"
    root.mkdir()
    (root / "broken.meta4").write_text("<html>not found</html>")
    web = nginx(root)
    plain = gen(server, 0, "plain2.bin", 100, engine)
    out = tmp_path / "out"
    result = midair.get("-d", str(out), web.url(0, "/broken.meta4"), plain)
    assert result.returncode == 1
    [line] = failures(result.stderr)
    assert "broken.meta4" in line
    assert "not a usable Metalink: not a Metalink document (root element <html>)" in line
    assert listing(out) == ["plain2.bin"]


# --- one engine: options, the library, the command line's errors --------------------------
def test_no_follow_metalink_saves_the_document(nginx, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    text = meta4(meta4_file("x.bin", ["http://127.0.0.1:1/x.bin"]))
    (root / "keep.meta4").write_text(text)
    out = tmp_path / "out"
    result = Midair("epoll").get(
        "-d", str(out), "--no-follow-metalink", nginx(root).url(0, "/keep.meta4")
    )
    assert result.returncode == 0, result.stderr
    assert (out / "keep.meta4").read_text() == text


def test_a_missing_document_url_fails_like_any_url(nginx, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    url = nginx(root).url(0, "/gone.meta4")
    result = Midair("epoll", ("--retries", "0")).get("-d", str(tmp_path / "out"), url)
    assert result.returncode == 1
    [line] = failures(result.stderr)
    assert "gone.meta4" in line and "HTTP 404" in line


def test_m_combines_with_urls_and_an_input_list(server, tmp_path):
    doc = written(tmp_path, meta4(meta4_file("c1.bin", [gen(server, 0, "c1.bin", 100, "cmb")])))
    listed = written(tmp_path, gen(server, 1, "c2.bin", 100, "cmb") + "\n", "list.txt")
    other = written(
        tmp_path, meta4(meta4_file("c4.bin", [gen(server, 2, "c4.bin", 100, "cmb")])), "b.meta4"
    )
    out = tmp_path / "out"
    result = Midair("threads").get(
        "-d",
        str(out),
        gen(server, 0, "c3.bin", 100, "cmb"),
        "-M",
        doc,
        "-i",
        listed,
        "--metalink",
        other,
    )
    assert result.returncode == 0, result.stderr
    assert listing(out) == ["c1.bin", "c2.bin", "c3.bin", "c4.bin"]
    assert (out / "c4.bin").read_bytes() == expected_bytes("c4.bin", 100)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<metalink", "not well-formed XML"),
        (
            meta4(meta4_file("../evil.bin", ["http://127.0.0.1:1/x"])),
            "file '../evil.bin': unsafe name",
        ),
        (meta4(), "no <file> in the Metalink"),
    ],
)
def test_a_malformed_metalink_file_is_a_usage_error_naming_it(tmp_path, text, expected):
    doc = written(tmp_path, text, "bad.meta4")
    result = Midair("epoll").get("-d", str(tmp_path / "out"), "-M", doc)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert doc in line and expected in line, line
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


def test_a_missing_metalink_file_is_a_usage_error(tmp_path):
    result = Midair("epoll").get("-M", str(tmp_path / "none.meta4"))
    assert result.returncode == 2
    assert "none.meta4: No such file or directory" in result.stderr


def test_the_library_takes_a_metalink_as_bytes_or_a_path(http1_server, tmp_path):
    body = expected_bytes("lib1.bin", 3000)
    urls = [
        gen(http1_server, 0, "lib1.bin", 3000, "lib", "&status=500"),
        gen(http1_server, 1, "lib1.bin", 3000, "lib"),
    ]
    text = meta4(meta4_file("lib1.bin", urls, 3000, sha256(body)))
    by_bytes = Downloader(str(tmp_path / "a"), retries=0).enqueue_metalink(text.encode()).run()
    by_path = (
        Downloader(str(tmp_path / "b"), retries=0)
        .enqueue_metalink(Path(written(tmp_path, text)))
        .run()
    )
    assert by_bytes.ok and by_path.ok, (by_bytes, by_path)
    assert (
        (tmp_path / "a" / "lib1.bin").read_bytes()
        == body
        == (tmp_path / "b" / "lib1.bin").read_bytes()
    )


def test_the_library_refuses_a_malformed_metalink_adding_nothing():
    from midair.core.errors import InputError

    downloader = Downloader()
    with pytest.raises(InputError, match=r"^<metalink>: no <file> in the Metalink$"):
        downloader.enqueue_metalink(meta4().encode())
    assert downloader.jobs == []


def test_run_async_follows_a_served_meta4(http1_server, nginx, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.meta4").write_text(
        meta4(meta4_file("async.bin", [gen(http1_server, 0, "as.bin", 500, "lib")]))
    )
    downloader = Downloader(str(tmp_path / "out"), engine="asyncio")
    results = asyncio.run(downloader.enqueue(nginx(root).url(0, "/a.meta4")).run_async())
    assert results.ok, results
    assert listing(tmp_path / "out") == ["async.bin"]
    assert [s.path for s in results.successes] == [str(tmp_path / "out" / "async.bin")]


def test_a_rerun_with_a_journal_skips_the_documents_done_files(server, tmp_path):
    doc = written(
        tmp_path, meta4(meta4_file("j1.bin", [gen(server, 0, "j1.bin", 2000, "jr")], 2000))
    )
    out = tmp_path / "out"
    midair = Midair("epoll")
    first = midair.get("-d", str(out), "--journal", "-M", doc)
    assert first.returncode == 0, first.stderr
    asked = [r for r in server.stats().log if "t=jr" in r.target]
    again = midair.get("-d", str(out), "--journal", "-M", doc)
    assert again.returncode == 0, again.stderr
    assert [r for r in server.stats().log if "t=jr" in r.target] == asked  # nothing fetched
    assert (out / "j1.bin").read_bytes() == expected_bytes("j1.bin", 2000)
