"""Output names that can never escape the download directory.

A name comes from the user (``out=``), from the server (Content-Disposition)
or from the URL.  All three pass through ``sanitize`` and ``resolve``, so the
rule lives in one place: the result is a single safe path component joined
under the directory, and anything that still resolves outside is refused.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from urllib.parse import unquote

DEFAULT_NAME = "index.html"
MAX_NAME_BYTES = 240  # leaves room for ".midair-part" within the usual 255
# The store keeps its work beside each target in NAME + one of these; a name that
# ends with one could pass for another download's part or control file.
PART_SUFFIX = ".midair-part"
CONTROL_SUFFIX = ".midair-ctl"
WORK_SUFFIXES = (PART_SUFFIX, CONTROL_SUFFIX)


# A name every step of ``sanitize`` leaves as it is (but the check for work suffixes).
_PLAIN_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_NAME_BYTES - 1}}}")


def sanitize(name: str) -> str | None:
    """Reduce ``name`` to one harmless path component, or None if nothing is left."""
    if _PLAIN_NAME.fullmatch(name):  # most names: ASCII, no dot first, short enough
        return _unlike_work_files(name)
    return _sanitize_any(name)


def _sanitize_any(name: str) -> str | None:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if not (name.isascii() and name.isprintable()):  # else there is no control character
        name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip()
    while name.startswith("."):  # ". .." must not become ".."
        name = name.lstrip(".").strip()
    if not name:
        return None
    return _unlike_work_files(_truncate(name))


def _unlike_work_files(name: str) -> str:
    return name + "_" if name.casefold().endswith(WORK_SUFFIXES) else name


def _truncate(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    room = MAX_NAME_BYTES - len(ext.encode("utf-8")) - (1 if ext else 0)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{stem}.{ext}" if ext else stem


def name_from_path(url_path: str) -> str:
    """The last segment of a URL path, percent-decoded and sanitised; ``index.html`` for a
    path that ends in ``/`` (a directory's index, as wget names it) or has no segment."""
    segment = url_path.rpartition("/")[2]
    if "%" in segment:
        segment = unquote(segment, errors="replace")
    return sanitize(segment) or DEFAULT_NAME


def path_from_url(directory: str, url_path: str) -> str:
    """``resolve(directory, name_from_path(url_path))``: where a URL's file lands when
    nothing else names it.  A plain last segment (most URLs of a list) is read once,
    not by the three passes, each with its own checks, that give the same path."""
    segment = url_path[url_path.rfind("/") + 1 :]
    if _PLAIN_NAME.fullmatch(segment) and not segment.casefold().endswith(WORK_SUFFIXES):
        return _inside(directory) + segment
    return resolve(directory, name_from_path(url_path))


def numbered(path: str, number: int) -> str:
    """``path`` as the ``number``-th duplicate of its name: ``file``, ``file.1``, ``file.2``
    (aria2's numbering).  Appending to a resolved path keeps it one component, inside."""
    return f"{path}.{number}" if number else path


def family(path: str) -> str:
    """``path`` without the ``.N`` numbers that duplicates get: every path a batch may
    number from one first path shares its family (so a sharded batch keeps a family in
    one shard, where the numbering sees every claim)."""
    while path[-1:].isdigit():
        stem, dot, number = path.rpartition(".")
        if not dot or not number.isdigit():
            break
        path = stem
    return path


def content_disposition_name(value: str) -> str | None:
    """The file name a Content-Disposition header proposes, sanitised (RFC 6266)."""
    star = re.search(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", value, re.I)
    if star:
        charset = star.group(1) or "utf-8"
        try:
            return sanitize(unquote(star.group(2).strip(), encoding=charset, errors="replace"))
        except LookupError:
            return None
    plain = re.search(r'filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)', value, re.I)
    if not plain:
        return None
    raw = plain.group(2) if plain.group(2) is not None else plain.group(1)
    return sanitize(re.sub(r"\\(.)", r"\1", raw.strip()))


def relative_path(path: str) -> str:
    """Check a user-given relative path (``out=a/b``, ``dir=x``) and normalise it.

    Raises ValueError for absolute paths, ``..`` or components that sanitising
    would change: the user must see the problem, not a silently different file.
    """
    parts = [p for p in re.split(r"[/\\]", path) if p not in ("", ".")]
    if not parts or path.startswith(("/", "\\")):
        raise ValueError(f"{path!r} must be a relative path")
    for part in parts:
        if sanitize(part) != part:
            raise ValueError(f"{path!r}: component {part!r} is not a safe file name")
    return os.path.join(*parts)


def resolve(directory: str, name: str) -> str:
    """Join ``name`` under ``directory``, refusing anything that lands outside."""
    if _PLAIN_NAME.fullmatch(name):  # one component that cannot be "..": nothing to normalise
        return _inside(directory) + name
    return _resolve_any(directory, name)


def _resolve_any(directory: str, name: str) -> str:
    inside = _inside(directory)
    path = os.path.normpath(os.path.join(inside, name))
    if not (path.startswith(inside) and len(path) > len(inside)):  # strictly below it
        raise ValueError(f"{name!r} resolves outside {directory!r}")
    return path


def directory_of(directory: str) -> str:
    """``directory`` absolute, as the store splits it off the paths resolved under it."""
    return _inside(directory)[:-1] or os.sep


def _inside(directory: str) -> str:
    """``os.path.abspath(directory)`` with one separator at its end.

    Every job's name is resolved under the same directory, so the joining and
    normalising is done once per working directory, not once per job.
    """
    absolute = directory.startswith(os.sep)  # os.path.isabs on POSIX, without two calls
    return _joined("" if absolute else os.getcwd(), directory)


@functools.lru_cache(maxsize=16)
def _joined(cwd: str, directory: str) -> str:
    root = os.path.normpath(os.path.join(cwd, directory))  # what abspath does
    return root if root.endswith(os.sep) else root + os.sep
