"""The store on real files: part + control files, publication, resume, errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midair import store as store_module
from midair.core.actions import (
    Checkpoint,
    Discard,
    OnDisk,
    Open,
    Prepare,
    Publish,
    Resume,
    Save,
    Write,
)
from midair.core.errors import DestinationError, DownloadError, IntegrityError
from midair.core.jobs import Checksum
from midair.store import CONTROL_SUFFIX, PART_SUFFIX, XATTR, Store

URL = "http://h/file.bin"
DATA = bytes(range(256)) * 40
SHA = Checksum("sha256", hashlib.sha256(DATA).hexdigest())


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store()
    yield s
    s.close()


def record(url: str = URL, size: int | None = len(DATA), etag: str | None = '"e1"') -> Resume:
    return Resume(url, size, etag, None)


def prepare(store: Store, path: Path, url: str = URL, checksum: Checksum | None = None) -> OnDisk:
    return store.prepare(Prepare(1, str(path), url, checksum))


def download(
    store: Store,
    path: Path,
    data: bytes = DATA,
    ident: int = 1,
    url: str = URL,
    checksum: Checksum | None = None,
    size: int | None = None,
) -> None:
    store.open(Open(ident, str(path), 0, record(url, len(data))))
    for i in range(0, len(data), 1000):
        store.write(Write(ident, i, data[i : i + 1000]))
    store.publish(Publish(ident, str(path), len(data) if size is None else size, checksum, url))


def xattr(path: Path) -> dict[str, object]:
    return json.loads(os.getxattr(path, XATTR))


def part(path: Path) -> Path:
    return Path(str(path) + PART_SUFFIX)


def control(path: Path) -> Path:
    return Path(str(path) + CONTROL_SUFFIX)


# --- the life of one file -----------------------------------------------------------
def test_fresh(store: Store, tmp_path: Path) -> None:
    assert prepare(store, tmp_path / "f") == OnDisk("fresh")


def test_open_and_write_make_part_and_control(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record()))
    store.write(Write(1, 0, b"hello "))
    store.write(Write(1, 6, b"world"))
    assert not control(path).exists()  # a short transfer never needs one
    store.checkpoint(Checkpoint(1))
    assert json.loads(control(path).read_text())["url"] == URL
    store.close()
    assert part(path).read_bytes() == b"hello world"
    assert json.loads(control(path).read_text()) == {
        "url": URL,
        "size": len(DATA),
        "etag": '"e1"',
        "last_modified": None,
    }
    assert not path.exists()
    assert prepare(store, path) == OnDisk("partial", 11, record())


def test_close_writes_the_missing_control_files(tmp_path: Path) -> None:
    store = Store()
    store.open(Open(1, str(tmp_path / "a"), 0, record()))
    store.write(Write(1, 0, b"abc"))
    store.open(Open(2, str(tmp_path / "b"), 0, record(url="http://h/b")))
    store.write(Write(2, 0, b"b"))
    store.publish(Publish(2, str(tmp_path / "b"), 1, None, "http://h/b"))
    store.close()
    assert prepare(Store(), tmp_path / "a") == OnDisk("partial", 3, record())
    assert not control(tmp_path / "b").exists()


def test_an_existing_control_file_is_rewritten_at_once(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    part(path).write_bytes(b"old bytes")
    control(path).write_text(json.dumps({"url": URL, "size": 9, "etag": '"old"'}))
    assert prepare(store, path).kind == "partial"
    store.open(Open(1, str(path), 0, record(etag='"new"')))  # a 200: starting over
    assert json.loads(control(path).read_text())["etag"] == '"new"'  # never stale
    assert part(path).read_bytes() == b""


def test_discard_removes_part_and_control(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record()))
    store.write(Write(1, 0, b"wrong"))
    store.checkpoint(Checkpoint(1))
    store.discard(Discard(1, str(path)))
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_publish_renames_removes_control_and_tags(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record()))
    store.write(Write(1, 0, DATA))
    store.checkpoint(Checkpoint(1))
    store.publish(Publish(1, str(path), len(DATA), None, URL))
    assert path.read_bytes() == DATA
    assert not part(path).exists() and not control(path).exists()
    assert xattr(path) == {"url": URL, "size": len(DATA)}
    assert prepare(store, path) == OnDisk("complete", len(DATA))


def test_publish_with_a_matching_checksum(store: Store, tmp_path: Path) -> None:
    download(store, tmp_path / "f", checksum=SHA)
    assert (tmp_path / "f").read_bytes() == DATA


def test_subdirectories_are_made(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "f"
    download(store, path)
    assert path.read_bytes() == DATA


def test_an_empty_file(store: Store, tmp_path: Path) -> None:
    download(store, tmp_path / "empty", b"")
    assert (tmp_path / "empty").read_bytes() == b""
    assert prepare(store, tmp_path / "empty") == OnDisk("complete", 0)


def test_publish_after_a_restart_without_open(tmp_path: Path) -> None:
    """A part file that is already complete (416 on resume) is published by a new store."""
    path = tmp_path / "f"
    first = Store()
    first.open(Open(1, str(path), 0, record()))
    first.write(Write(1, 0, DATA))
    first.close()
    second = Store()
    assert prepare(second, path) == OnDisk("partial", len(DATA), record())
    second.publish(Publish(5, str(path), len(DATA), SHA, URL))
    assert path.read_bytes() == DATA and xattr(path)["url"] == URL
    assert not part(path).exists() and not control(path).exists()


# --- what is already there ----------------------------------------------------------
def test_a_foreign_file_is_foreign(store: Store, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA)
    assert prepare(store, tmp_path / "f") == OnDisk("foreign")


def test_a_foreign_file_with_the_right_checksum_is_complete(store: Store, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA)
    assert prepare(store, tmp_path / "f", checksum=SHA) == OnDisk("complete", len(DATA))


def test_a_foreign_file_with_the_wrong_checksum_is_foreign(store: Store, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA + b"x")
    assert prepare(store, tmp_path / "f", checksum=SHA) == OnDisk("foreign")


def test_our_file_with_the_wrong_checksum_is_redone(store: Store, tmp_path: Path) -> None:
    download(store, tmp_path / "f", DATA + b"x")
    assert prepare(store, tmp_path / "f", checksum=SHA) == OnDisk("fresh")


def test_our_file_changed_since_is_redone(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    download(store, path)
    with open(path, "ab") as f:
        f.write(b"more")
    assert prepare(store, path) == OnDisk("fresh")


def test_our_file_for_another_url_is_taken(store: Store, tmp_path: Path) -> None:
    download(store, tmp_path / "f")
    assert prepare(store, tmp_path / "f", url="http://other/f") == OnDisk("taken")


# --- signed URLs: a file is the job's by name when only signing parameters differ ----------
SIGNED_A = "http://h/file.bin?X-Amz-Date=1&X-Amz-Signature=aaaa"
SIGNED_B = "http://h/file.bin?X-Amz-Date=2&X-Amz-Signature=bbbb"
ID_1, ID_2 = "http://h/file.bin?id=1", "http://h/file.bin?id=2"


@pytest.mark.parametrize(
    ("made", "asked", "by_name", "kind"),
    [
        (SIGNED_A, SIGNED_B, True, "complete"),  # a new signature: the job's own file
        (SIGNED_A, SIGNED_B, False, "taken"),  # the path is a clash's: exact URLs only
        (ID_1, ID_2, True, "taken"),  # another file of one name: never the job's
        (f"{ID_1}&token=a", f"{ID_1}&token=b", True, "complete"),
        (f"{ID_1}&token=a", f"{ID_2}&token=b", True, "taken"),
    ],
)
def test_a_file_made_for_another_signature_is_the_jobs_by_name(
    store: Store, tmp_path: Path, made: str, asked: str, by_name: bool, kind: str
) -> None:
    path = tmp_path / "f"
    download(store, path, url=made)
    found = store.prepare(Prepare(1, str(path), asked, None, by_name))
    assert found == (OnDisk(kind, len(DATA)) if kind == "complete" else OnDisk(kind))


def test_a_file_by_name_changed_since_is_not_the_jobs(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    download(store, path, url=SIGNED_A)
    with open(path, "ab") as f:
        f.write(b"more")
    assert store.prepare(Prepare(1, str(path), SIGNED_B, None, True)) == OnDisk("taken")


@pytest.mark.parametrize(
    ("made", "asked", "by_name", "owner"),
    [
        (SIGNED_A, SIGNED_B, True, SIGNED_B),  # handed over as the job's record: it resumes
        (SIGNED_A, SIGNED_B, False, SIGNED_A),  # another URL's: the core restarts it
        (ID_1, ID_2, True, ID_1),
    ],
)
def test_a_part_made_for_another_signature_resumes_by_name(
    store: Store, tmp_path: Path, made: str, asked: str, by_name: bool, owner: str
) -> None:
    path = tmp_path / "f"
    part(path).write_bytes(DATA[:100])
    control(path).write_text(json.dumps(record(made).as_dict()))
    found = store.prepare(Prepare(1, str(path), asked, None, by_name))
    assert found == OnDisk("partial", 100, record(owner))


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "symlink to a directory"])
def test_things_that_are_not_files_are_foreign(store: Store, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "f"
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    else:
        path.symlink_to(tmp_path)
    assert prepare(store, path) == OnDisk("foreign")


@pytest.mark.parametrize("text", ["", "{", "[]", '{"size": 3}', "null"])
def test_an_unreadable_control_file_means_no_resume_record(
    store: Store, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "f"
    part(path).write_bytes(b"abc")
    control(path).write_text(text)
    assert prepare(store, path) == OnDisk("partial", 3, None)


def test_a_part_without_control_file(store: Store, tmp_path: Path) -> None:
    part(tmp_path / "f").write_bytes(b"abc")
    assert prepare(store, tmp_path / "f") == OnDisk("partial", 3, None)


# --- verification ---------------------------------------------------------------------
def test_size_mismatch_is_an_integrity_error(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    with pytest.raises(IntegrityError, match=rf"has {len(DATA)} bytes, expected {len(DATA) + 1}"):
        download(store, path, size=len(DATA) + 1)
    assert not path.exists()
    store.discard(Discard(1, str(path)))
    assert not part(path).exists() and not control(path).exists()


def test_checksum_mismatch_is_an_integrity_error(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    with pytest.raises(IntegrityError, match="checksum mismatch: expected sha256=") as info:
        download(store, path, DATA[:-1] + b"!", checksum=SHA)
    assert str(info.value).startswith(URL)
    assert not path.exists() and part(path).exists()


# --- offsets and descriptors ------------------------------------------------------------
def test_open_at_an_offset_cuts_off_the_rest(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    part(path).write_bytes(b"0123456789")
    store.open(Open(1, str(path), 4, record()))
    store.write(Write(1, 4, b"ab"))
    store.close()
    assert part(path).read_bytes() == b"0123ab"


def test_open_at_zero_after_a_longer_attempt(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record()))
    store.write(Write(1, 0, b"a long first version"))
    store.open(Open(1, str(path), 0, record(size=5)))
    store.write(Write(1, 0, b"short"))
    store.publish(Publish(1, str(path), 5, None, URL))
    assert path.read_bytes() == b"short"


def test_one_download_moving_to_another_path(store: Store, tmp_path: Path) -> None:
    """A redirect after a partial attempt gives the same download a new name."""
    old, new = tmp_path / "old", tmp_path / "new"
    store.open(Open(1, str(old), 0, record()))
    store.write(Write(1, 0, b"partial from the first name"))
    store.open(Open(1, str(new), 0, record(size=3)))
    store.write(Write(1, 0, b"new"))
    store.publish(Publish(1, str(new), 3, None, URL))
    assert new.read_bytes() == b"new"
    assert part(old).read_bytes() == b"partial from the first name"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_descriptor_cache_is_bounded_and_writes_stay_correct(tmp_path: Path) -> None:
    store = Store(max_open=3)
    before = open_fds()
    files = {i: bytes([65 + i]) * 100 + bytes(range(i)) for i in range(12)}
    for i, data in files.items():
        store.open(Open(i, str(tmp_path / f"f{i}"), 0, record(size=len(data))))
        assert open_fds() - before <= 3
    for offset in range(0, 112, 7):  # every download, in turn, a few bytes at a time
        for i, data in files.items():
            if offset < len(data):
                store.write(Write(i, offset, data[offset : offset + 7]))
                assert open_fds() - before <= 3
    for i, data in files.items():
        store.publish(Publish(i, str(tmp_path / f"f{i}"), len(data), None, URL))
        assert (tmp_path / f"f{i}").read_bytes() == data
    store.close()
    assert open_fds() == before


def test_downloads_written_in_turn_reopen_about_one_file_a_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four downloads, three descriptors, written round-robin as connections' bytes come:
    evicting the least recently used would reopen a file for every write (4 a round);
    the least that can be done is 4/3 a round (evict the one needed last)."""
    opens = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    store = Store(max_open=3)
    for i in range(4):
        store.open(Open(i, str(tmp_path / f"f{i}"), 0, record(size=None)))
    opens.clear()
    rounds = 10
    for offset in range(rounds):
        for i in range(4):
            store.write(Write(i, offset, b"x"))
    assert len(opens) <= rounds * 4 // 3 + 1
    for i in range(4):
        store.publish(Publish(i, str(tmp_path / f"f{i}"), rounds, None, URL))
        assert (tmp_path / f"f{i}").read_bytes() == b"x" * rounds
    store.close()


def test_the_descriptor_cache_takes_what_the_open_file_limit_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module.resource, "getrlimit", lambda _: (20_000, 20_000))
    assert store_module.default_max_open(10_000) == 10_000 - 64 - 10_000 // 16
    assert store_module.default_max_open(19_990) == 16


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_out_of_descriptors_the_cache_sheds_half_and_no_download_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit the cache was sized from can be wrong (other descriptors, another
    thread): EMFILE on a part file closes cached ones instead of failing the download."""
    before, store = open_fds(), Store(max_open=100)
    for i in range(8):
        store.open(Open(i, str(tmp_path / f"f{i}"), 0, record(size=None)))
        store.write(Write(i, 0, b"a"))
    real_open, refused = os.open, []

    def out_of_descriptors_once(path: str, *args: int) -> int:
        if not refused:
            refused.append(path)
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", out_of_descriptors_once)
    store.open(Open(8, str(tmp_path / "f8"), 0, record(size=None)))
    monkeypatch.setattr(os, "open", real_open)
    assert refused and open_fds() - before == 4  # the cache is half its size, the new one in it
    for i in range(9):
        store.write(Write(i, 1 if i < 8 else 0, b"b"))
        store.publish(Publish(i, str(tmp_path / f"f{i}"), None, None, URL))
    assert [(tmp_path / f"f{i}").read_bytes() for i in range(9)] == [b"ab"] * 8 + [b"b"]
    store.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_out_of_descriptors_a_checkpoint_sheds_the_cache_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control file needs a descriptor as a part does: EMFILE there sheds the cache,
    never fails the download."""
    before, store = open_fds(), Store(max_open=100)
    for i in range(4):
        store.open(Open(i, str(tmp_path / f"f{i}"), 0, record(size=None)))
    real_open = os.open

    def refused_for_control_files(path: str, *args: int) -> int:
        if path.endswith(CONTROL_SUFFIX) and open_fds() - before > 2:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", refused_for_control_files)
    store.checkpoint(Checkpoint(0))
    monkeypatch.setattr(os, "open", real_open)
    assert open_fds() - before == 2  # half the four parts' descriptors closed
    assert json.loads(control(tmp_path / "f0").read_text())["url"] == URL
    store.close()


def test_a_part_deleted_while_its_descriptor_was_closed_fails_rather_than_leave_a_hole(
    tmp_path: Path,
) -> None:
    store = Store(max_open=1)
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record()))
    store.write(Write(1, 0, b"abc"))
    store.open(Open(2, str(tmp_path / "g"), 0, record()))  # closes f's descriptor
    part(path).unlink()
    with pytest.raises(DestinationError, match=f"cannot write {path}: No such file"):
        store.write(Write(1, 3, b"def"))
    store.close()
    assert not part(path).exists()


# --- the local side failing -------------------------------------------------------------
def test_a_directory_under_a_regular_file(store: Store, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"")
    path = tmp_path / "plain" / "sub" / "f"
    with pytest.raises(DestinationError) as info:
        store.open(Open(1, str(path), 0, record()))
    message = str(info.value)
    assert message.startswith(f"{URL}: cannot write {path}: ")
    assert "Not a directory" in message
    assert "\n" not in message


def test_prepare_under_a_regular_file_raises_oserror(store: Store, tmp_path: Path) -> None:
    # The session turns this into a DestinationError naming the path.
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        prepare(store, tmp_path / "plain" / "f")


def test_disk_full(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record()))

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DestinationError, match=rf"^{URL}: cannot write {path}: disk full$"):
        store.write(Write(1, 0, b"x"))


def test_permission_denied(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root chmod does not stop writes, so the refusal is injected at the OS boundary.
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DestinationError, match=r"cannot write .*: Permission denied$"):
        store.open(Open(1, str(tmp_path / "f"), 0, record()))


def test_publish_onto_a_directory(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record(size=1)))
    store.write(Write(1, 0, b"x"))
    path.mkdir()
    with pytest.raises(DestinationError, match=f"cannot publish {path}"):
        store.publish(Publish(1, str(path), 1, None, URL))
    assert part(path).read_bytes() == b"x"  # nothing lost
    assert json.loads(control(path).read_text())["url"] == URL  # and a re-run can resume it


def test_a_server_name_taken_by_a_foreign_file_keeps_the_part_resumable(
    store: Store, tmp_path: Path
) -> None:
    path, taken = tmp_path / "f", tmp_path / "chosen.bin"
    taken.write_bytes(b"mine")
    store.open(Open(1, str(path), 0, record(size=1)))
    store.write(Write(1, 0, b"x"))
    with pytest.raises(DestinationError, match="exists and was not made by midair"):
        store.publish(Publish(1, str(path), 1, None, URL, target=str(taken)))
    assert taken.read_bytes() == b"mine"
    assert part(path).read_bytes() == b"x"
    assert prepare(store, path) == OnDisk("partial", 1, record(size=1))


@pytest.mark.parametrize("which", [PART_SUFFIX, CONTROL_SUFFIX])
def test_a_symlink_as_part_or_control_file_is_never_followed(
    store: Store, tmp_path: Path, which: str
) -> None:
    outside, path = tmp_path / "outside", tmp_path / "d" / "f"
    outside.write_bytes(b"precious")
    path.parent.mkdir()
    Path(str(path) + which).symlink_to(outside)
    with pytest.raises(DestinationError, match="cannot write"):
        store.open(Open(1, str(path), 0, record(size=1)))
        store.write(Write(1, 0, b"x"))
        store.checkpoint(Checkpoint(1))
    assert outside.read_bytes() == b"precious"


def test_short_writes_are_continued(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite

    def dribble(fd: int, data: bytes, offset: int) -> int:
        return real(fd, bytes(data[:3]), offset)

    path = tmp_path / "f"
    store.open(Open(1, str(path), 0, record(size=26)))
    monkeypatch.setattr(os, "pwrite", dribble)
    store.write(Write(1, 0, b"abcdefghijklmnopqrstuvwxyz"))
    monkeypatch.undo()
    store.publish(Publish(1, str(path), 26, None, URL))
    assert path.read_bytes() == b"abcdefghijklmnopqrstuvwxyz"


# --- fewer system calls: the directory listing and made directories -------------------
def test_one_listing_and_one_makedirs_per_directory(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("scandir", "makedirs"):
        real = getattr(os, name)
        monkeypatch.setattr(
            os, name, lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))[1]
        )
    for i in range(5):
        path = tmp_path / "sub" / f"f{i}"
        assert prepare(store, path) == OnDisk("fresh")
        download(store, path, ident=i)
    assert calls == ["scandir", "makedirs"]
    assert sorted(os.listdir(tmp_path / "sub")) == [f"f{i}" for i in range(5)]


def test_the_listing_holds_no_name_the_batch_creates(store: Store, tmp_path: Path) -> None:
    """A batch claims each name once (to its end), so it never prepares a name it made: the
    listing need not learn them, and a list of millions holds no set entry per file."""
    assert prepare(store, tmp_path / "a") == OnDisk("fresh")  # the listing is read here
    store.open(Open(1, str(tmp_path / "a"), 0, record()))
    store.write(Write(1, 0, b"abc"))
    store.checkpoint(Checkpoint(1))
    download(store, tmp_path / "b", ident=2)
    assert store._listings[str(tmp_path)] == set()
    again = Store()  # the next run's: it lists them
    assert prepare(again, tmp_path / "a") == OnDisk("partial", 3, record())
    assert prepare(again, tmp_path / "b") == OnDisk("complete", len(DATA))


def test_a_directory_of_more_names_than_a_listing_holds_is_asked_name_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run into a directory of millions neither holds its names nor reads every tag
    before the first request: the survey learns nothing there, and each ``Prepare`` looks
    at its own name (a stat or two), with the same answers."""
    monkeypatch.setattr(store_module, "LISTING_LIMIT", 3)
    first = Store()
    for i in range(3):
        download(first, tmp_path / f"done{i}", ident=i, url=f"{URL}{i}")
    first.open(Open(9, str(tmp_path / "half"), 0, record()))
    first.write(Write(9, 0, b"abc"))
    first.close()  # its control file written
    (tmp_path / "theirs").write_bytes(b"x")
    again = Store()
    assert again.survey([str(tmp_path)], set()) == {}
    assert again._listings[str(tmp_path)] is None
    assert prepare(again, tmp_path / "done1", url=f"{URL}1") == OnDisk("complete", len(DATA))
    assert prepare(again, tmp_path / "half") == OnDisk("partial", 3, record())
    assert prepare(again, tmp_path / "theirs") == OnDisk("foreign")
    assert prepare(again, tmp_path / "new") == OnDisk("fresh")
    again.close()


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "without renameat2"])
def test_a_foreign_file_made_after_the_listing_is_never_overwritten(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    if not renameat2:
        monkeypatch.setattr(store_module, "_rename_if_free", lambda source, target: False)
    path = tmp_path / "f"
    assert prepare(store, path) == OnDisk("fresh")
    path.write_bytes(b"someone else's")  # after the listing: the store cannot know
    with pytest.raises(DestinationError, match=f"{path} exists and was not made by midair"):
        download(store, path)
    assert path.read_bytes() == b"someone else's"
    assert part(path).read_bytes() == DATA
    assert prepare(Store(), path) == OnDisk("foreign")


def test_a_file_of_ours_made_after_the_listing_is_replaced(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert prepare(store, path) == OnDisk("fresh")
    download(Store(), path, b"an older run")  # tagged for the same URL
    download(store, path)
    assert path.read_bytes() == DATA and xattr(path)["size"] == len(DATA)


# --- group commit ---------------------------------------------------------------------------
def started(
    store: Store,
    path: Path,
    ident: int,
    data: bytes = DATA,
    size: int | None = None,
    target: Path | None = None,
) -> Publish:
    """A download whose bytes are written: the Publish that would finish it."""
    store.open(Open(ident, str(path), 0, record(size=len(data))))
    store.write(Write(ident, 0, data))
    return Publish(
        ident, str(path), len(data) if size is None else size, None, URL, target=str(target or path)
    )


def record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Log, in order, every step of publication that touches stable storage."""
    calls: list[tuple[str, object]] = []

    def logged(module: object, name: str, key: str) -> None:
        real = getattr(module, name)

        def wrapper(*args: object) -> object:
            calls.append((key, args[-1] if key == "rename" else args[0]))
            return real(*args)

        monkeypatch.setattr(module, name, wrapper)

    logged(store_module, "_syncfs", "syncfs")
    logged(os, "fsync", "fsync")
    logged(store_module, "_rename_if_free", "rename")
    logged(store_module, "_fsync_directory", "directory")
    return calls


def publish_together(store: Store, actions: list[Publish]) -> list[DownloadError | None]:
    return store_module._publish_group([store._detach(action) for action in actions])


def test_a_group_syncs_once_before_any_rename_and_syncs_the_directory_after(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_syncfs_is_durable", lambda fd: True)  # whatever /tmp is
    actions = [started(store, tmp_path / f"f{i}", i) for i in range(4)]
    calls = record_calls(monkeypatch)
    assert publish_together(store, actions) == [None] * 4
    kinds = [kind for kind, _ in calls]
    assert kinds == ["syncfs", "rename", "rename", "rename", "rename", "directory", "fsync"]
    assert calls[-2] == ("directory", str(tmp_path))  # then that directory's own fsync
    assert all((tmp_path / f"f{i}").read_bytes() == DATA for i in range(4))


@pytest.mark.parametrize("why", ["syncfs failed", "FUSE", "Linux 5.4"])
def test_without_a_trusted_syncfs_each_file_is_fsynced_before_any_rename(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    if why == "syncfs failed":
        monkeypatch.setattr(store_module, "_syncfs", lambda fd: False)
    elif why == "FUSE":  # where syncfs need not reach the server
        monkeypatch.setattr(store_module, "_file_system_type", lambda fd: 0x65735546)
    else:  # where syncfs hid writeback errors
        monkeypatch.setattr(store_module, "_kernel", lambda: (5, 4))
    actions = [started(store, tmp_path / f"f{i}", i) for i in range(3)]
    calls = record_calls(monkeypatch)
    assert publish_together(store, actions) == [None] * 3
    kinds = [kind for kind, _ in calls]
    assert kinds == [
        "syncfs",
        "fsync",
        "fsync",
        "fsync",
        "rename",
        "rename",
        "rename",
        "directory",
        "fsync",
    ]


def test_a_group_of_one_is_fsynced_not_the_whole_file_system(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    action = started(store, tmp_path / "f", 1)
    calls = record_calls(monkeypatch)
    assert publish_together(store, [action]) == [None]
    assert [kind for kind, _ in calls] == ["fsync", "rename", "directory", "fsync"]


def test_a_failing_directory_fsync_fails_no_published_file(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files stand complete under their names: reporting them failed would be false.
    actions = [started(store, tmp_path / f"f{i}", i) for i in range(2)]

    def failing(directory: str) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(store_module, "_fsync_directory", failing)
    assert publish_together(store, actions) == [None, None]
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["f0", "f1"]


def test_one_failing_file_fails_alone(store: Store, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    actions = [
        started(store, tmp_path / "good", 1),
        started(store, tmp_path / "short", 2, size=len(DATA) + 1),
        started(store, tmp_path / "clash", 3, target=taken),
        started(store, tmp_path / "also-good", 4),
    ]
    taken.write_bytes(b"mine")
    good, short, clash, also_good = publish_together(store, actions)
    assert good is None and also_good is None
    assert isinstance(short, IntegrityError) and isinstance(clash, DestinationError)
    assert (tmp_path / "good").read_bytes() == DATA == (tmp_path / "also-good").read_bytes()
    assert taken.read_bytes() == b"mine"
    for name in ("short", "clash"):  # kept for a re-run, as after any failure
        assert part(tmp_path / name).read_bytes() == DATA
        assert json.loads(control(tmp_path / name).read_text())["url"] == URL


def test_a_file_that_cannot_be_made_durable_never_gets_its_name(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    actions = [started(store, tmp_path / f"f{i}", i) for i in range(3)]
    publications = [store._detach(action) for action in actions]
    broken = publications[1].fd
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if fd == broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(store_module, "_syncfs", lambda fd: False)  # as after a failed syncfs
    monkeypatch.setattr(os, "fsync", failing_fsync)
    first, second, third = store_module._publish_group(publications)
    assert first is None and third is None
    assert str(second) == f"{URL}: cannot publish {tmp_path / 'f1'}: Input/output error"
    assert not (tmp_path / "f1").exists() and part(tmp_path / "f1").exists()


def test_fsync_off_skips_every_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(fsync=False)
    actions = [started(store, tmp_path / f"f{i}", i) for i in range(3)]
    calls = record_calls(monkeypatch)
    assert publish_together(store, actions) == [None] * 3
    assert [kind for kind, _ in calls] == ["rename"] * 3
    assert xattr(tmp_path / "f2") == {"url": URL, "size": len(DATA)}


def test_the_publisher_thread_reports_every_outcome(tmp_path: Path) -> None:
    store = Store()
    actions = [started(store, tmp_path / f"f{i}", i, size=None if i != 2 else 1) for i in range(5)]
    assert all(store.submit(action) for action in actions)
    store.close()  # waits for the publisher
    outcomes = dict(store.collect())
    assert store.pending == 0 and sorted(outcomes) == list(range(5))
    assert isinstance(outcomes.pop(2), IntegrityError)
    assert set(outcomes.values()) == {None}
    assert all((tmp_path / f"f{i}").read_bytes() == DATA for i in outcomes)


@given(st.text(), st.integers(min_value=0, max_value=1 << 62))
def test_the_tag_is_exactly_the_json_a_reader_expects(url: str, size: int) -> None:
    assert store_module._tag_value(url, size) == json.dumps({"url": url, "size": size}).encode()


# --- where durability costs nothing: published at once, in the caller's thread ---------------
TMPFS = 0x01021994


@pytest.fixture
def in_memory(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every directory is on tmpfs; returns the descriptors the store asked about."""
    asked: list[int] = []

    def tmpfs(fd: int) -> int:
        asked.append(fd)
        return TMPFS

    monkeypatch.setattr(store_module, "_file_system_type", tmpfs)
    return asked


def test_on_tmpfs_a_group_is_published_by_collect_itself_without_a_sync(
    store: Store, tmp_path: Path, in_memory: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    actions = [started(store, tmp_path / f"f{i}", i) for i in range(3)]
    calls = record_calls(monkeypatch)
    assert all(store.submit(action) for action in actions)
    assert calls == [] and store.pending == 3  # the group waits for the loop's collect
    assert sorted(store.collect()) == [(0, None), (1, None), (2, None)]
    assert [kind for kind, _ in calls] == ["rename"] * 3
    assert store.pending == 0 and store._publisher._thread is None  # no thread, no hand-off
    assert xattr(tmp_path / "f2") == {"url": URL, "size": len(DATA)}


def test_with_fsync_off_collect_publishes_without_a_thread(tmp_path: Path) -> None:
    store = Store(fsync=False)
    assert store.submit(started(store, tmp_path / "f", 1))
    assert store.collect() == [(1, None)] and store._publisher._thread is None
    assert (tmp_path / "f").read_bytes() == DATA and store.pending == 0


def test_close_publishes_what_is_still_queued(tmp_path: Path, in_memory: list[int]) -> None:
    store = Store()
    store.submit(started(store, tmp_path / "f", 1))
    store.close()
    assert (tmp_path / "f").read_bytes() == DATA and store.collect() == [(1, None)]


def test_the_file_system_is_asked_once_per_directory(
    store: Store, tmp_path: Path, in_memory: list[int]
) -> None:
    for i, directory in enumerate(["a", "a", "b", "a", "b"]):
        store.submit(started(store, tmp_path / directory / f"f{i}", i))
    assert len(store.collect()) == 5 and len(in_memory) == 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["f0", "f1", "f3"]


def test_on_tmpfs_a_foreign_file_made_after_the_listing_is_never_overwritten(
    store: Store, tmp_path: Path, in_memory: list[int]
) -> None:
    path = tmp_path / "f"
    assert prepare(store, path) == OnDisk("fresh")
    store.submit(started(store, path, 1))
    path.write_bytes(b"someone else's")  # after the listing: the store cannot know
    ((ident, error),) = store.collect()
    assert ident == 1 and isinstance(error, DestinationError)
    assert str(error).endswith(f"{path} exists and was not made by midair (use --overwrite)")
    assert path.read_bytes() == b"someone else's"
    assert part(path).read_bytes() == DATA
    assert json.loads(control(path).read_text())["url"] == URL  # a re-run can resume it


def test_files_on_tmpfs_do_not_wait_for_durable_ones_in_the_same_group(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = tmp_path / "memory"
    monkeypatch.setattr(
        store_module, "_file_system_type", lambda fd: TMPFS if memory.exists() else 0xEF53
    )
    durable = started(store, tmp_path / "disk", 1)
    memory.mkdir()
    assert store.submit(durable) and store.submit(started(store, memory / "f", 2))
    assert (2, None) in store.collect()  # published at once; the other went to the thread
    store.close()
    assert store.collect() == [(1, None)]
    assert (memory / "f").read_bytes() == DATA == (tmp_path / "disk").read_bytes()


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="no /dev/shm mounted here")
def test_dev_shm_is_recognised_as_kept_in_memory() -> None:
    fd = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert store_module._file_system_type(fd) in store_module._MEMORY_FILE_SYSTEMS
    finally:
        os.close(fd)


def test_queued_files_reach_the_publisher_as_one_group_per_collect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[list[int]] = []
    real = store_module._publish_group

    def logged(group: list[store_module._Publication]) -> list[DownloadError | None]:
        groups.append([publication.action.download for publication in group])
        return real(group)

    monkeypatch.setattr(store_module, "_publish_group", logged)
    store = Store()
    assert all(store.submit(started(store, tmp_path / f"f{i}", i)) for i in range(4))
    assert store.pending == 4 and store._publisher._thread is None  # not handed over yet
    outcomes = store.collect()  # hands all four over, as one group
    store.close()
    outcomes += store.collect()
    assert groups == [[0, 1, 2, 3]]
    assert sorted(outcomes) == [(i, None) for i in range(4)] and store.pending == 0


def test_publisher_close_does_not_wait_out_a_gathering_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group waits GATHER_SECONDS for company; the closing marker has none to wait for,
    and every run's exit would pay that wait after its last file."""
    slept: list[float] = []

    class Time:  # the store's ``time``, with a sleep that only records
        sleep = staticmethod(slept.append)

        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

    monkeypatch.setattr(store_module, "time", Time())
    publisher = store_module._Publisher()
    publisher.submit([])
    published = threading.Event()
    while not publisher._done:  # the empty group, gathered and published
        published.wait(0.001)
    publisher.close()
    assert slept == [store_module.GATHER_SECONDS]


# --- Save: open, write and publish in one action ------------------------------------
def save_action(
    path: Path, data: bytes = DATA, offset: int = 0, target: Path | None = None
) -> Save:
    size = offset + len(data)
    return Save(
        1, str(path), offset, record(size=size), data, size, None, URL, str(target or path), False
    )


def test_a_save_publishes_a_whole_file_without_asking_its_size(
    store: Store, tmp_path: Path, in_memory: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sub" / "f"
    assert store.save(save_action(path))
    monkeypatch.setattr(
        os, "fstat", lambda fd: pytest.fail("fstat on a file the store wrote whole")
    )
    assert store.collect() == [(1, None)]
    assert path.read_bytes() == DATA and not part(path).exists() and not control(path).exists()
    assert xattr(path) == {"url": URL, "size": len(DATA)}
    assert store._fds == {} and store._records == {}  # nothing kept for a published file


def test_a_durable_save_still_asks_its_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_file_system_type", lambda fd: 0xEF53)  # ext4
    store = Store(background=False)
    asked: list[int] = []
    real = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: asked.append(fd) or real(fd))
    assert not store.save(save_action(tmp_path / "f"))  # published here and now
    assert (tmp_path / "f").read_bytes() == DATA and len(asked) == 1


def test_a_save_over_a_part_with_a_control_file_resumes_like_open_and_write(
    store: Store, tmp_path: Path, in_memory: list[int]
) -> None:
    path = tmp_path / "f"
    part(path).write_bytes(DATA[:100])
    control(path).write_text(json.dumps(record().as_dict()))
    assert prepare(store, path).kind == "partial"
    assert store.save(save_action(path, DATA[100:], offset=100))
    assert store.collect() == [(1, None)]
    assert path.read_bytes() == DATA and not control(path).exists()


def test_a_save_that_cannot_write_keeps_the_part_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store()
    path = tmp_path / "f"

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DestinationError, match=rf"^{URL}: cannot write {path}: disk full$"):
        store.save(save_action(path))
    assert store._fds == {}  # its descriptor is closed
    store.close()
    assert part(path).exists() and json.loads(control(path).read_text())["url"] == URL


def test_a_save_that_cannot_open_names_the_url(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DestinationError, match=rf"^{URL}: cannot write .*: Permission denied$"):
        store.save(save_action(tmp_path / "f"))


def test_a_save_never_replaces_a_foreign_file(
    store: Store, tmp_path: Path, in_memory: list[int]
) -> None:
    path = tmp_path / "f"
    assert prepare(store, path) == OnDisk("fresh")
    path.write_bytes(b"someone else's")  # after the listing: the store cannot know
    assert store.save(save_action(path))
    [(_, error)] = store.collect()
    assert isinstance(error, DestinationError) and "was not made by midair" in str(error)
    assert path.read_bytes() == b"someone else's" and part(path).read_bytes() == DATA
