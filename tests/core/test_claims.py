"""Which job gets which name: duplicates, re-runs in any order, server names on re-runs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.claims import Settled, Wish, differs_in_signature_only, made_for, settle
from midair.core.jobs import Job, Options
from midair.store import CONTROL_SUFFIX, PART_SUFFIX

from .sim import DiskStore, FileServer, MemoryStore, Sim, Step

H = "http://h.example"


def body(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def options(directory: Path, **kwargs: object) -> Options:
    return Options(directory=str(directory), **kwargs)  # type: ignore[arg-type]


# --- the rule, pure -----------------------------------------------------------------------
def settle_batch(
    urls: list[str], owners: dict[str, str | None], *, no_clobber: bool = False
) -> tuple[dict[str, str], Settled]:
    """``Batch``'s use of ``settle`` for jobs that all want ``/d/f`` but the ones ending in
    ``/g``: each URL's path, and what ``settle`` answered."""
    firsts = {i: "/d/g" if url.endswith("/g") else "/d/f" for i, url in enumerate(urls)}
    claims: dict[str, int] = {}
    clashes: dict[str, list[Wish]] = {}
    for i, url in enumerate(urls):
        wish = Wish(i, url, firsts[i], fixed=False)
        group = clashes.setdefault(firsts[i], [])
        group.append(wish)
    for path, group in list(clashes.items()):
        if len(group) == 1:
            claims[path] = group[0].ident
            del clashes[path]
    owners = {p: url for p, url in owners.items() if p not in claims}  # as a survey reads
    owned = {url: path for path, url in sorted(owners.items(), reverse=True) if url}
    movers = [Wish(i, u, firsts[i], False) for i, u in enumerate(urls) if u in owned]
    taken = set(owners)
    settled = settle(claims, movers, clashes, owned, taken, no_clobber=no_clobber)
    return {urls[i]: path for path, i in claims.items()}, settled


URLS = [f"{H}/f?id={n}" for n in range(5)] + [f"{H}/g"]
PATHS = ["/d/f", "/d/f.1", "/d/f.2", "/d/f.3", "/d/g", "/d/f.01"]


@settings(derandomize=True, database=None, deadline=None)
@given(
    urls=st.lists(st.sampled_from(URLS), min_size=1, max_size=6, unique=True),
    owners=st.dictionaries(st.sampled_from(PATHS), st.sampled_from([*URLS, None]), max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_numbering_is_a_function_of_the_set_of_urls_and_the_disk(
    urls: list[str], owners: dict[str, str | None], order: object
) -> None:
    named, _ = settle_batch(urls, owners)
    shuffled = list(urls)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    assert settle_batch(shuffled, owners)[0] == named
    assert sorted(named) == sorted(urls)  # every job placed, each on a path of its own
    wanting_f = [url for url in urls if not url.endswith("/g")]
    alone = {"/d/g"} | ({"/d/f"} if len(wanting_f) == 1 else set())  # Prepare looks at these
    for url, path in named.items():
        if path in owners and path not in alone:
            assert owners[path] == url, "a job took a file of another URL, or a foreign one"
        assert path in ("/d/f", "/d/g") or path.rpartition(".")[0] == "/d/f"


def test_duplicates_are_numbered_in_the_order_of_their_urls() -> None:
    named, _ = settle_batch([URLS[2], URLS[0], URLS[1]], {})
    assert named == {URLS[0]: "/d/f", URLS[1]: "/d/f.1", URLS[2]: "/d/f.2"}


def test_a_url_keeps_the_number_it_got_before_and_others_go_around() -> None:
    named, _ = settle_batch([URLS[0], URLS[1]], {"/d/f": None, "/d/f.1": URLS[1]})
    assert named == {URLS[1]: "/d/f.1", URLS[0]: "/d/f.2"}  # /d/f: a foreign file


def test_no_clobber_gives_a_shared_name_to_the_first_of_the_list() -> None:
    named, settled = settle_batch([URLS[3], URLS[1], URLS[2]], {}, no_clobber=True)
    assert named == {URLS[3]: "/d/f"}
    assert settled.beaten == {1: 0, 2: 0}


# --- end to end in virtual time, on disk ---------------------------------------------------
def serve(paths: dict[str, bytes], disposition: dict[str, str] | None = None) -> FileServer:
    server = FileServer()
    for target, data in paths.items():
        name = (disposition or {}).get(target)
        cd = () if name is None else (("Content-Disposition", f'attachment; filename="{name}"'),)
        server.add(target, data, *[Step(headers=cd)] * 4)
    return server


def fetch(urls: list[str], tmp_path: Path, server: FileServer, **kwargs: object) -> Sim:
    return Sim(urls, options(tmp_path, **kwargs), {H: server}, store=DiskStore()).run()


def test_a_reversed_re_run_skips_every_duplicate_without_a_request(tmp_path: Path) -> None:
    server = serve({f"/f?id={n}": body(10 + n, n) for n in range(3)})
    urls = [f"{H}/f?id={n}" for n in (2, 0, 1)]
    first = fetch(urls, tmp_path, server)
    assert {f.url: os.path.basename(f.path) for f in first.finished.values()} == {
        f"{H}/f?id=0": "f",
        f"{H}/f?id=1": "f.1",
        f"{H}/f?id=2": "f.2",
    }
    requests = len(server.requests)
    again = fetch(urls[::-1], tmp_path, server)
    assert all(f.skipped for f in again.finished.values()) and len(again.finished) == 3
    assert len(server.requests) == requests and not again.connects
    for n, name in enumerate(["f", "f.1", "f.2"]):
        assert (tmp_path / name).read_bytes() == body(10 + n, n)


def test_a_re_run_with_another_set_keeps_each_url_on_its_file(tmp_path: Path) -> None:
    server = serve({f"/f?id={n}": body(10 + n, n) for n in range(3)})
    fetch([f"{H}/f?id=0", f"{H}/f?id=1"], tmp_path, server)  # f, f.1
    requests = len(server.requests)
    again = fetch([f"{H}/f?id=2", f"{H}/f?id=1"], tmp_path, server)
    paths = {f.url: os.path.basename(f.path) for f in again.finished.values()}
    assert paths == {f"{H}/f?id=1": "f.1", f"{H}/f?id=2": "f.2"}  # f is id=0's
    assert again.finished[1].skipped and len(server.requests) == requests + 1
    assert (tmp_path / "f").read_bytes() == body(10, 0)


def test_an_interrupted_duplicate_resumes_on_its_own_number(tmp_path: Path) -> None:
    data = body(5000, 1)
    server = serve({"/f?id=0": body(10)})
    server.add("/f?id=1", data, Step(cut=2000))
    urls = [f"{H}/f?id=0", f"{H}/f?id=1"]
    fetch(urls, tmp_path, server, retries=0)
    assert (tmp_path / ("f.1" + PART_SUFFIX)).stat().st_size == 2000
    assert (tmp_path / ("f.1" + CONTROL_SUFFIX)).exists()  # written on the orderly exit
    fetch(urls[::-1], tmp_path, server)
    assert server.requests[-1].target == "/f?id=1"
    assert server.requests[-1].header("range") == "bytes=2000-"
    assert (tmp_path / "f.1").read_bytes() == data


def test_a_part_file_keeps_its_number_by_its_control_file(tmp_path: Path) -> None:
    data = body(5000, 1)
    server = serve({"/f?id=0": body(10), "/f?id=2": body(20, 2)})
    server.add("/f?id=1", data, Step(cut=2000))
    fetch([f"{H}/f?id=0", f"{H}/f?id=1"], tmp_path, server, retries=0)  # f, f.1 in part
    again = fetch([f"{H}/f?id=2", f"{H}/f?id=1"], tmp_path, server)
    # By URL alone id=1 would come first, on f (id=0's): only the control file tells.
    paths = {f.url: os.path.basename(f.path) for f in again.finished.values()}
    assert paths == {f"{H}/f?id=1": "f.1", f"{H}/f?id=2": "f.2"}
    [resumed] = [r for r in server.requests if r.target == "/f?id=1"][-1:]
    assert resumed.header("range") == "bytes=2000-"
    assert (tmp_path / "f.1").read_bytes() == data


def test_a_re_run_skips_a_file_the_server_named(tmp_path: Path) -> None:
    server = serve({"/download?id=7": body(30)}, {"/download?id=7": "report.pdf"})
    first = fetch([f"{H}/download?id=7"], tmp_path, server)
    assert first.finished[0].path == str(tmp_path / "report.pdf")
    again = fetch([f"{H}/download?id=7"], tmp_path, server)
    assert again.finished[0].skipped and again.finished[0].path == str(tmp_path / "report.pdf")
    assert len(server.requests) == 1 and sorted(os.listdir(tmp_path)) == ["report.pdf"]


def test_a_re_run_skips_a_file_named_after_a_redirect(tmp_path: Path) -> None:
    server = serve({"/cdn/object-91ab": body(30)})
    server.redirect("/latest", "/cdn/object-91ab")
    first = fetch([f"{H}/latest"], tmp_path, server, trust_server_names=True)
    assert first.finished[0].path == str(tmp_path / "object-91ab")
    again = fetch([f"{H}/latest"], tmp_path, server, trust_server_names=True)
    assert again.finished[0].skipped and len(server.requests) == 2  # the first run's two


def test_the_same_url_twice_is_fetched_once(tmp_path: Path) -> None:
    server = serve({"/f": body(10)})
    sim = fetch([f"{H}/f", f"{H}/f", f"{H}/f"], tmp_path, server)
    assert list(sim.finished) == [0] and not sim.failed
    assert len(sim.run_state.results.successes) == 1 and len(server.requests) == 1


@pytest.mark.parametrize("url", [f"{H}/", f"{H}/docs/", H])
def test_a_url_ending_in_a_slash_is_saved_as_index_html(url: str, tmp_path: Path) -> None:
    server = serve({"/": body(5), "/docs/": body(6)})
    sim = fetch([url], tmp_path, server)
    assert sim.finished[0].path == str(tmp_path / "index.html")


def test_an_owner_elsewhere_is_ignored_for_a_job_with_out(tmp_path: Path) -> None:
    server = serve({"/download": body(30)}, {"/download": "report.pdf"})
    fetch([f"{H}/download"], tmp_path, server)
    mine = Job.from_url(f"{H}/download", out="mine.pdf")
    again = fetch([mine], tmp_path, server)  # type: ignore[list-item]
    assert again.finished[0].path == str(tmp_path / "mine.pdf") and not again.finished[0].skipped


# --- signed URLs: the job's file by name when only signing parameters differ ---------------
@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (f"{H}/f?token=a", f"{H}/f?token=b", True),
        (f"{H}/f?id=1&sig=a&se=1", f"{H}/f?id=1&sig=b&se=2", True),
        (f"{H}/f", f"{H}/f?X-Amz-Date=1&X-Amz-Signature=s", True),  # signed now, plain before
        (f"{H}/f?X-Goog-Signature=a", f"{H}/f?x-goog-signature=b", True),  # names: any case
        (f"{H}/f?id=1", f"{H}/f?id=2", False),  # two files of one name
        (f"{H}/f?id=1&token=a", f"{H}/f?id=2&token=b", False),
        (f"{H}/f?id=1&token=a", f"{H}/f?token=b", False),  # an id dropped: another file
        (f"{H}/f?a=1&b=2&token=x", f"{H}/f?b=2&a=1&token=y", False),  # reordered: not told
        (f"{H}/f?token=a", f"{H}/g?token=b", False),
        (f"{H}/f?token=a", "http://other.example/f?token=b", False),
        (f"{H}/f?token=a", f"{H}/f?token=a", False),  # the same URL: made_for's first test
    ],
)
def test_only_signing_parameters_may_differ(a: str, b: str, same: bool) -> None:
    assert differs_in_signature_only(a, b) is same
    assert differs_in_signature_only(b, a) is same
    assert made_for(a, b, by_name=True) is (same or a == b)
    assert made_for(a, b, by_name=False) is (a == b)  # a clash's path: exact URLs only


SIGNED = [f"{H}/f?token=a", f"{H}/f?token=b"]


def test_a_signed_part_resumes_under_a_new_signature(tmp_path: Path) -> None:
    data = body(5000, 1)
    server = serve({SIGNED[1].removeprefix(H): data})
    server.add(SIGNED[0].removeprefix(H), data, Step(cut=2000))  # same bytes, same ETag
    fetch([SIGNED[0]], tmp_path, server, retries=0)
    assert (tmp_path / ("f" + PART_SUFFIX)).stat().st_size == 2000
    again = fetch([SIGNED[1]], tmp_path, server)
    assert server.requests[-1].target == "/f?token=b"
    assert server.requests[-1].header("range") == "bytes=2000-"
    assert again.finished[0].path == str(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == data and sorted(os.listdir(tmp_path)) == ["f"]


def test_a_part_by_name_whose_file_changed_restarts(tmp_path: Path) -> None:
    old, new = body(5000, 1), body(6000, 2)  # another length: another ETag
    server = serve({SIGNED[1].removeprefix(H): new})
    server.add(SIGNED[0].removeprefix(H), old, Step(cut=2000))
    fetch([SIGNED[0]], tmp_path, server, retries=0)
    fetch([SIGNED[1]], tmp_path, server)
    assert server.requests[-1].header("if-range") == f'"v1-{len(old)}"'  # the server said no
    assert (tmp_path / "f").read_bytes() == new


def test_a_signed_file_is_skipped_under_a_new_signature(tmp_path: Path) -> None:
    server = serve({url.removeprefix(H): body(30) for url in SIGNED})
    fetch([SIGNED[0]], tmp_path, server)
    again = fetch([SIGNED[1]], tmp_path, server)
    assert again.finished[0].skipped and len(server.requests) == 1
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_another_id_never_takes_the_file_of_one_name(tmp_path: Path) -> None:
    server = serve({f"/f?id={n}&token={t}": body(10 + n, n) for n in (1, 2) for t in "ab"})
    fetch([f"{H}/f?id=1&token=a"], tmp_path, server)  # f
    alone = fetch([f"{H}/f?id=2&token=b"], tmp_path, server)  # alone on f: still not its
    assert alone.finished[0].path == str(tmp_path / "f.1") and not alone.finished[0].skipped
    both = fetch([f"{H}/f?id=2&token=a", f"{H}/f?id=1&token=b"], tmp_path, server)
    for f in both.finished.values():  # a clash: by exact URL only, so no swap either
        n = 1 if "id=1" in f.url else 2
        assert Path(f.path).read_bytes() == body(10 + n, n), (f.url, f.path)
    assert (tmp_path / "f").read_bytes() == body(11, 1)
    assert (tmp_path / "f.1").read_bytes() == body(12, 2)


def test_a_clash_of_signed_urls_keeps_its_numbers_under_new_signatures(tmp_path: Path) -> None:
    def signed(n: int, token: str) -> str:
        return f"{H}/f?id={n}&token={token}"

    server = serve({signed(n, t).removeprefix(H): body(10 + n, n) for n in range(3) for t in "ab"})
    first = fetch([signed(n, "a") for n in (2, 0, 1)], tmp_path, server)
    named = {f.url.partition("&")[0]: f.path for f in first.finished.values()}
    requests = len(server.requests)
    again = fetch([signed(n, "b") for n in (0, 1, 2)], tmp_path, server)  # new order too
    assert all(f.skipped for f in again.finished.values()) and len(again.finished) == 3
    assert {f.url.partition("&")[0]: f.path for f in again.finished.values()} == named
    assert len(server.requests) == requests and sorted(os.listdir(tmp_path)) == ["f", "f.1", "f.2"]


SHARED = [f"{H}/f?id={n}" for n in range(4)] + [f"{H}/f.1", f"{H}/g"]


@settings(derandomize=True, database=None, deadline=None, max_examples=40)
@given(
    first=st.lists(st.sampled_from(SHARED), min_size=1, max_size=6, unique=True),
    second=st.lists(st.sampled_from(SHARED), min_size=1, max_size=6, unique=True),
)
def test_runs_in_any_order_keep_every_url_on_one_file(first: list[str], second: list[str]) -> None:
    """Whatever ran before, a run leaves each URL's own bytes under one name per URL, and
    the same set again in reverse order is skipped whole, with no request."""
    server = FileServer()
    for n, url in enumerate(SHARED):
        server.add(url.removeprefix(H), body(20 + n, n))
    store = MemoryStore()
    owner: dict[str, str] = {}  # path -> the URL whose bytes it holds
    for urls in (first, second):
        sim = Sim(urls, Options(directory="/d"), {H: server}, store=store).run()
        assert not sim.failed and len({f.path for f in sim.finished.values()}) == len(urls)
        for f in sim.finished.values():
            assert store.files[f.path] == body(20 + SHARED.index(f.url), SHARED.index(f.url))
            assert owner.setdefault(f.path, f.url) == f.url, "a name changed hands"
    requests = len(server.requests)
    again = Sim(second[::-1], Options(directory="/d"), {H: server}, store=store).run()
    assert all(f.skipped for f in again.finished.values()) and len(again.finished) == len(second)
    assert len(server.requests) == requests
