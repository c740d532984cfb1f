"""The command line's own contract: input files, usage errors, output modes, local faults.

Engine-independent, so these run once, on the default engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from midair.serve import ServerThread, expected_bytes, expected_sha256


def run(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midair", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )


def url(server: ServerThread, name: str, size: int, host: int = 0, **query: object) -> str:
    params = "".join(f"&{k}={v}" for k, v in query.items())
    return server.url(host, f"/gen/{name}?size={size}{params}")


def test_version_and_engines_listing():
    assert run("--version").stdout.startswith("midair ")
    listing = run("engines").stdout
    assert "asyncio" in listing and "epoll" in listing


def test_input_file_options_are_honoured(server, tmp_path):
    good_sum = expected_sha256("in2.bin", 2000)
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# a comment, then a blank line\n\n"
        f"{url(server, 'in1.bin', 1000)}\n"
        "  out=renamed.bin\n"
        f"{url(server, 'in2.bin', 2000, 1)}\n"
        "  dir=sub/deeper\n"
        f"  checksum=sha-256={good_sum}\n"
        "  header=X-Test: yes\n"
    )
    out = tmp_path / "out"
    result = run("get", "-d", str(out), "-i", str(listing))
    assert result.returncode == 0, result.stderr
    assert (out / "renamed.bin").read_bytes() == expected_bytes("in1.bin", 1000)
    assert (out / "sub" / "deeper" / "in2.bin").read_bytes() == expected_bytes("in2.bin", 2000)
    sent = [r for r in server.stats().log if "in2.bin" in r.target]
    assert sent[-1].header("x-test") == "yes"


def test_input_from_stdin(server, tmp_path):
    result = run("get", "-d", str(tmp_path), "-i", "-", stdin=url(server, "stdin.bin", 10) + "\n")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "stdin.bin").read_bytes() == expected_bytes("stdin.bin", 10)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("http://127.0.0.1/a\n  bogus=1\n", "list.txt:2: unknown option 'bogus'"),
        ("  out=x\n", "list.txt:1: option line before any URL"),
        ("http://127.0.0.1/a\n  out=../escape\n", "list.txt:2:"),
        ("http://127.0.0.1/a\n  checksum=sha-256=zz\n", "list.txt:2:"),
        ("ftp://127.0.0.1/a\n", "list.txt:1:"),
    ],
)
def test_bad_input_file_lines_are_usage_errors_naming_the_line(tmp_path, content, expected):
    listing = tmp_path / "list.txt"
    listing.write_text(content)
    result = run("get", "-d", str(tmp_path), "--check-input", "-i", str(listing))
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_input_stops_before_any_download(server, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{url(server, 'early.bin', 10)}\nftp://127.0.0.1/late\n")
    result = run("get", "-d", str(tmp_path / "out"), "--check-input", "-i", str(listing))
    assert result.returncode == 2
    assert "list.txt:2:" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not [r for r in server.stats().log if "early.bin" in r.target]


def test_a_bad_entry_is_skipped_naming_its_line_and_fails_the_run(server, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"{url(server, 'first.bin', 10)}\n"
        "  out=../escape\n"  # the whole entry (URL and options) is left out
        "ftp://127.0.0.1/a\n"
        f"{url(server, 'last.bin', 20)}\n"
        "  bogus=1\n"
        f"{url(server, 'kept.bin', 30)}\n"
    )
    out = tmp_path / "out"
    result = run("get", "-d", str(out), "-i", str(listing))
    assert result.returncode == 1, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "(entry skipped)" in line]
    assert [line.split()[1] for line in skipped] == [f"{listing}:{n}:" for n in (2, 3, 5)]
    assert sorted(p.name for p in out.iterdir()) == ["kept.bin"]
    assert (out / "kept.bin").read_bytes() == expected_bytes("kept.bin", 30)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["not a url"],
        ["-H", "no colon", "http://127.0.0.1/x"],
        ["--ca-certificate", "/nonexistent/ca.pem", "https://127.0.0.1/x"],
        ["--checksum", "sha-256=abc", "http://127.0.0.1/x"],
        ["-i", "/nonexistent/list.txt"],
        ["-j", "0", "http://127.0.0.1/x"],
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args):
    result = run("get", "-d", str(tmp_path), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() and "Traceback" not in result.stderr


def test_json_lines_describe_the_run(server, tmp_path):
    ok = url(server, "j1.bin", 5000)
    bad = url(server, "j2.bin", 10, status=410)
    result = run("get", "--json", "-d", str(tmp_path), ok, bad)
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "summary" and "start" in kinds
    done = next(e for e in events if e["event"] == "done")
    assert done["url"] == ok and done["size"] == 5000
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["url"] == bad and failed["status"] == 410


def test_same_name_twice_in_one_batch(server, tmp_path):
    a, b = url(server, "twin.bin", 100, 0), url(server, "twin.bin", 200, 1)
    result = run("get", "-d", str(tmp_path), "--no-clobber", a, b)
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "also the target of" in line]
    assert b in line and a in line and "--no-clobber" in line  # one line, naming both URLs
    assert (tmp_path / "twin.bin").stat().st_size == 100  # the first of the list has it
    numbered = run("get", "-d", str(tmp_path / "r"), b, a)  # the default
    assert numbered.returncode == 0, numbered.stderr
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "r").iterdir()}
    assert sizes == {"twin.bin": 100, "twin.bin.1": 200}  # by URL, whatever the order
    old = run("get", "-d", str(tmp_path / "r"), "--auto-rename", a, b)  # still accepted
    assert old.returncode == 0, old.stderr


def test_unwritable_directory_fails_the_job_naming_the_file(server, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"{url(server, 'ok.bin', 100)}\n{url(server, 'blocked.bin', 100)}\n  dir=blocker\n"
    )
    result = run("get", "-d", str(tmp_path), "-i", str(listing))
    assert result.returncode == 1
    assert "blocked.bin" in result.stderr and "cannot" in result.stderr
    assert (tmp_path / "ok.bin").read_bytes() == expected_bytes("ok.bin", 100)


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_fails_that_file_and_keeps_the_rest(server, tiny_disk):
    small, big = url(server, "small.bin", 100_000), url(server, "big.bin", 2_000_000)
    result = run("get", "-d", str(tiny_disk), "-j", "1", small, big)
    assert result.returncode == 1
    line = next(x for x in result.stderr.splitlines() if x.startswith("failed:"))
    assert "big.bin" in line and "disk full" in line
    assert (tiny_disk / "small.bin").read_bytes() == expected_bytes("small.bin", 100_000)
    assert not (tiny_disk / "big.bin").exists()


def test_demo_runs_small(tmp_path):
    result = run("demo", "--files", "3", "--size", "64K", "--rate", "256K", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "speed-up" in result.stdout and "verified" in result.stdout


def test_library_api_matches_the_cli(server, tmp_path):
    import midair

    results = midair.download(
        [url(server, "lib.bin", 1234), url(server, "nope", 1, status=404)], str(tmp_path), retries=0
    )
    assert [s.path for s in results.successes] == [str(tmp_path / "lib.bin")]
    assert results.failures[0].error.status == 404
    assert not results.ok
    assert os.path.getsize(tmp_path / "lib.bin") == 1234


# --- every bad value is a one-line usage error naming the option --------------------------
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-j", "abc"], "-j/--concurrency"),
        (["-j", "0"], "--concurrency"),
        (["--per-host", "-1"], "--per-host"),
        (["--retries", "1.5"], "--retries"),
        (["--retries", "-1"], "--retries"),
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "inf"], "--timeout"),
        (["--max-retry-wait", "-2"], "--max-retry-wait"),
        (["--max-filesize", "-1"], "--max-filesize"),
        (["--max-filesize", "10Q"], "--max-filesize"),
        (["--lowest-speed", "-5"], "--lowest-speed"),
        (["--lowest-speed-time", "0"], "--lowest-speed-time"),
        (["-s", "0"], "--split"),
        (["--split", "x"], "--split"),
        (["--min-split-size", "0"], "--min-split-size"),
        (["--min-split-size", "1Q"], "--min-split-size"),
        (["--checksum", "sha-256=00"], "checksum"),
        (["--user-agent", ""], "--user-agent"),
        (["--engine", "nope"], "--engine"),
        (["-H", "Content-Length: 5"], "Content-Length"),
        (["-H", "Transfer-Encoding: x"], "Transfer-Encoding"),
        (["-H", "Range: bytes=0-"], "Range"),
        (["-H", "no colon"], "no colon"),
        (["--loop", "uvloop", "--engine", "threads"], "loop"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(args, named, tmp_path):
    result = run("get", "-d", str(tmp_path), *args, "http://127.0.0.1:9/never-fetched")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midair: error: ") and named in lines[0]
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"retries": "3"}, "--retries"),
        ({"timeout": float("nan")}, "--timeout"),
        ({"max_filesize": -1}, "--max-filesize"),
        ({"concurrency": None}, "--concurrency"),
        ({"headers": {"Content-Length": "5"}}, "Content-Length"),
        ({"headers": 5}, "--header"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"engine": "nope"}, "nope"),
        ({"engine_options": {"bogus": 1}}, "bogus"),
        ({"engine_options": [1]}, "engine_options"),
    ],
)
def test_the_library_refuses_the_same_values_with_input_error(options, named, tmp_path):
    import midair

    with pytest.raises(midair.InputError, match=named):
        midair.download(["http://127.0.0.1:9/never-fetched"], str(tmp_path), **options)
    assert list(tmp_path.iterdir()) == []


def test_enqueue_chains_into_run(server, tmp_path):
    import midair

    results = midair.Downloader(str(tmp_path)).enqueue(url(server, "chain.bin", 100)).run()
    assert results.ok and (tmp_path / "chain.bin").read_bytes() == expected_bytes("chain.bin", 100)


def test_cli_and_library_send_the_same_user_agent(server, tmp_path):
    import midair

    assert run("get", "-d", str(tmp_path / "cli"), url(server, "ua1.bin", 10)).returncode == 0
    assert midair.download([url(server, "ua2.bin", 10)], str(tmp_path / "lib")).ok
    sent = {
        r.target.split("?")[0]: r.header("user-agent")
        for r in server.stats().log
        if "/ua" in r.target
    }
    assert sent == {
        "/gen/ua1.bin": f"midair/{midair.__version__}",
        "/gen/ua2.bin": f"midair/{midair.__version__}",
    }


def _modules_after(call: str) -> set[str]:
    """The modules a fresh interpreter holds after ``call`` (Python, with ``main`` imported)."""
    code = (
        "import sys\nfrom midair.cli import main\n"
        f"try:\n    {call}\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_load_no_core_engine_or_ssl(argv):
    loaded = _modules_after(f"main({argv!r})")
    assert not {m for m in loaded if m.startswith(("midair.core", "midair.engines"))}, loaded
    assert not loaded & {"midair.run", "midair.store", "midair.session", "ssl", "shutil"}
    assert not loaded & {"typing", "locale", "dataclasses", "inspect"}, loaded


# Imported by nothing a plain http get runs before its first connect: each costs start-up
# time (TLS, idna and libcrypto; a traceback's linecache; the locale argparse's gettext
# look-ups would load; json, for control files and --json only; random, for retries;
# dataclasses, whose decorator compiles code at import, with copy and inspect; the
# engines `auto` did not pick; the servers and the bench).
_NOT_FOR_A_PLAIN_GET = {
    *("ssl", "_ssl", "encodings.idna", "hashlib", "traceback", "shutil", "locale"),
    *("json", "random", "dataclasses", "copy", "inspect", "ast", "dis", "tokenize"),
    *("asyncio", "concurrent.futures", "multiprocessing", "subprocess"),
    *("midair.engines.processes", "midair.engines._shards", "midair.engines.reactor"),
    *("midair.engines.asyncio_engine", "midair.engines.blocking", "midair.engines.dask_engine"),
    *("midair.serve", "midair.bench", "midair.cli.serve", "midair.cli.bench"),
}


def test_plain_http_get_loads_no_ssl_idna_nor_hashlib(server, tmp_path):
    """TLS, the idna codec and hashlib (libcrypto) cost start-up time: an http batch
    without checksums must not pay for them."""
    argv = ["get", "-q", "-d", str(tmp_path), url(server, "lazy.bin", 100)]
    call = f"assert main({argv!r}) == 0"
    loaded = _modules_after(call)
    assert "midair.engines.epoll" in loaded  # the default engine for a small batch ran
    assert not loaded & _NOT_FOR_A_PLAIN_GET, loaded & _NOT_FOR_A_PLAIN_GET
    assert (tmp_path / "lazy.bin").read_bytes() == expected_bytes("lazy.bin", 100)


_AT_FIRST_CONNECT = (
    "import socket, sys\nfrom midair.cli import main\nseen = []\n"
    "def probe(name):\n"
    "    real = getattr(socket.socket, name)\n"
    "    def first(self, *args):\n"
    "        seen.append(seen or set(sys.modules))\n"
    "        return real(self, *args)\n"
    "    setattr(socket.socket, name, first)\n"
    "probe('connect'); probe('connect_ex')\n"
    "assert main(sys.argv[1:]) == 0\n"
    "print(' '.join(seen[0]))\n"
)
# Needed only once a response comes (its parser, httptools, with typing), or never by a
# plain http get; imported before the first connect, each would delay the first request.
_NOT_BEFORE_THE_FIRST_CONNECT = {"httptools", "typing", "inspect", "json", "random", "ssl"}
_NOT_BEFORE_THE_FIRST_CONNECT |= {"netrc", "shlex", "base64"}  # credentials only


@pytest.mark.parametrize("engine", ["auto", "threads", "sequential"])
def test_a_plain_get_connects_before_loading_what_the_response_needs(server, tmp_path, engine):
    argv = ["get", "-q", "--engine", engine, "-d", str(tmp_path), url(server, "c1.bin", 100)]
    done = subprocess.run(
        [sys.executable, "-c", _AT_FIRST_CONNECT, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "midair.store" in loaded  # the probe saw the start path
    assert not loaded & _NOT_BEFORE_THE_FIRST_CONNECT, loaded & _NOT_BEFORE_THE_FIRST_CONNECT
    assert (tmp_path / "c1.bin").read_bytes() == expected_bytes("c1.bin", 100)


@pytest.mark.parametrize("engine", ["threads", "sequential"])
def test_a_blocking_engine_loads_no_ssl_idna_nor_thread_pool_for_http(server, tmp_path, engine):
    """The blocking engines make their TLS context (and import ssl) at the first https
    connection; they pass ASCII hosts to getaddrinfo as bytes (no idna codec), and run
    their threads without concurrent.futures (and the logging it imports)."""
    argv = ["get", "-q", "--engine", engine, "-d", str(tmp_path), url(server, "blk.bin", 100)]
    loaded = _modules_after(f"assert main({argv!r}) == 0")
    assert "midair.engines.blocking" in loaded
    assert not loaded & {"ssl", "_ssl", "encodings.idna", "concurrent.futures", "logging"}
    assert (tmp_path / "blk.bin").read_bytes() == expected_bytes("blk.bin", 100)


_TEARDOWN_PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('teardown ran', file=sys.stderr))\n"
    "sys.argv = ['midair', *sys.argv[1:]]\n"
    "runpy.run_module('midair', run_name='__main__')\n"
)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 0),
        (["get", "--help"], 0),
        (["get", "--no-such-flag"], 2),
        (["get"], 2),  # InputError: no URLs
        (["get", "-q", "--retries", "0", "URL?status=404"], 1),
        (["get", "-q", "URL"], 0),
    ],
)
def test_every_exit_path_skips_interpreter_teardown(server, tmp_path, args, code):
    """Once main has returned, files are closed and workers joined: the interpreter's
    teardown (tens of ms after a large run) is skipped on success, failure and usage errors."""
    target = url(server, f"td{len(args)}{code}.bin", 100)
    argv = [a.replace("URL", target) for a in args] + ["-d", str(tmp_path)] * (args[0] == "get")
    done = subprocess.run(
        [sys.executable, "-c", _TEARDOWN_PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, done.stderr
    assert "teardown ran" not in done.stderr


def test_version_imports_no_subcommand():
    code = (
        "import sys, midair.cli; midair.cli.build_parser(['--version']); "
        "print(sorted(m for m in sys.modules if m.startswith('midair')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "midair.api" not in loaded and "midair.cli.get" not in loaded, loaded


@pytest.mark.parametrize("enabled", [True, False])
def test_start_up_pauses_the_collector_and_restores_it(enabled):
    """No collection while the parser and the modules load; afterwards the collector is
    as the caller left it (on for the command, off if an embedding program turned it off),
    and what start-up made is frozen, not walked by the next pass."""
    code = (
        "import gc, sys\nfrom midair import cli\n"
        f"{'gc.enable()' if enabled else 'gc.disable()'}\n"
        "seen = []\n"
        "real = cli.build_parser\n"
        "cli.build_parser = lambda argv: seen.append(gc.isenabled()) or real(argv)\n"
        "try:\n    cli.main(['engines'])\nexcept SystemExit:\n    pass\n"
        "print(seen, gc.isenabled(), gc.get_freeze_count() > 1000)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"[False] {enabled} True"


def test_argparse_messages_read_the_same_without_gettext(tmp_path):
    """argparse's words bypass gettext: its messages, singular and plural, still read right."""
    from midair.cli import _untranslated_plural

    assert _untranslated_plural("%s argument", "%s arguments", 1) == "%s argument"
    assert _untranslated_plural("%s argument", "%s arguments", 2) == "%s arguments"
    result = run("get", "-d", str(tmp_path), "-j")
    assert result.returncode == 2
    assert "argument -j/--concurrency: expected one argument" in result.stderr
    assert "usage: midair get" in run("get", "--help").stdout
