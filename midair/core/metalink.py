"""Metalink documents read into jobs: v4 (RFC 5854, ``.meta4``) and v3 (``.metalink``).

Each ``<file>`` becomes one ``Job``: its best http(s) URL first and the others as its
mirrors (v4's ``priority``: lower is better; v3's ``preference``: higher is better;
ties keep the document's order), named by the file's ``name`` (a relative path that
must stay inside the download directory), with the strongest whole-file hash as its
checksum, its ``<size>`` as the size every source must serve, and its piece hashes
carried along as ``Pieces`` for the segmented download to check.

The XML is parsed by defusedxml with DTDs refused, so neither entity expansion (the
"billion laughs") nor an external entity can be smuggled in; a Metalink needs no DTD.
Anything wrong is one ``InputError`` naming the document and what is wrong with it.
Pure: bytes in, jobs out (defusedxml and ElementTree read no files here).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .errors import InputError
from .jobs import CHECKSUM_ALGORITHMS, HEX_LENGTH, STRENGTH, Checksum, Job, Pieces
from .naming import relative_path
from .urls import URL, parse_url

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

V4 = "urn:ietf:params:xml:ns:metalink"
V3 = "http://www.metalinker.org/"
# The media types a server labels a Metalink with (RFC 5854 section 7; v3's).
MEDIA_TYPES = frozenset({"application/metalink4+xml", "application/metalink+xml"})
SUFFIXES = (".meta4", ".metalink")
_LAST = 999_999  # RFC 5854 4.2.16.2: priorities run 1..999999; none given ranks last


class MetalinkError(ValueError):
    """What is wrong with a Metalink document (one line, without the document's name)."""


def parse_locations(text: str) -> tuple[str, ...]:
    """``--metalink-location jp,US``: the codes, lower case (a document's are compared so)."""
    return tuple(code.strip().lower() for code in text.split(",") if code.strip())


def parse_metalink(data: bytes, source: str, locations: Collection[str] = ()) -> list[Job]:
    """The jobs of the Metalink ``data`` given by the user as ``source`` (which an
    InputError names)."""
    try:
        return read_metalink(data, locations)
    except MetalinkError as exc:
        raise InputError(f"{source}: {exc}") from None


def read_metalink(data: bytes, locations: Collection[str] = ()) -> list[Job]:
    """The jobs of the Metalink ``data``; MetalinkError says what is wrong with it.
    ``locations`` (aria2's --metalink-location, lower case): the URLs of servers there
    come first, each group by priority."""
    return [_job(file, ns, locations) for ns, file in _files(_root(data))]


def metalink_jobs(jobs: Iterable[Job]) -> list[Job]:
    """The jobs whose URL names a Metalink document (its path ends in .meta4 or
    .metalink, in any case but a mixed one)."""
    return [job for job in jobs if names_metalink(job)]


def names_metalink(job: Job) -> bool:
    """Whether ``job``'s URL names a Metalink document: ``metalink_jobs`` for one job, as a
    streamed list asks of each (without a list made and searched per job)."""
    target = job.url.target
    return ("eta" in target or "ETA" in target) and looks_like_metalink(target)  # cheap first


def looks_like_metalink(path: str, media_type: str | None = None) -> bool:
    """Whether a URL path (or a response's Content-Type) says it is a Metalink document."""
    if media_type is not None and media_type.partition(";")[0].strip().lower() in MEDIA_TYPES:
        return True
    return path.partition("?")[0].lower().endswith(SUFFIXES)


# --- the document ---------------------------------------------------------------------
def _root(data: bytes) -> Element:
    from xml.etree.ElementTree import ParseError  # only a run with a Metalink pays for these

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise MetalinkError(f"refused: {_defused_reason(exc)}") from None
    except ParseError as exc:
        raise MetalinkError(f"not well-formed XML ({exc})") from None


def _defused_reason(exc: Exception) -> str:
    """defusedxml's message without its details (the entity's text, system ids)."""
    from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

    if isinstance(exc, DTDForbidden):
        return "the document has a DTD (entities could expand or read files)"
    if isinstance(exc, EntitiesForbidden | ExternalReferenceForbidden):
        return "the document declares entities"
    return str(exc)


# A root element's tag -> its version's namespace and the path to its <file>s.
_FILES = {
    f"{{{V4}}}metalink": (V4, f"{{{V4}}}file"),
    f"{{{V3}}}metalink": (V3, f"{{{V3}}}files/{{{V3}}}file"),
}


def _files(root: Element) -> list[tuple[str, Element]]:
    """(namespace, ``<file>``) of each file, checking the root says it is a Metalink."""
    known = _FILES.get(root.tag)
    if known is None:
        raise MetalinkError(f"not a Metalink document (root element {_shown(root.tag)})")
    ns, path = known
    files = root.findall(path)
    if not files:
        raise MetalinkError("no <file> in the Metalink")
    return [(ns, file) for file in files]


def _shown(tag: str) -> str:
    namespace, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return f"<{local}> in namespace {namespace!r}" if namespace else f"<{local}>"


# --- one file -------------------------------------------------------------------------
def _job(file: Element, ns: str, locations: Collection[str]) -> Job:
    name = file.get("name")
    if not name:
        raise MetalinkError("a <file> without a name")
    try:
        return _named_job(file, ns, name, locations)
    except MetalinkError as exc:
        raise MetalinkError(f"file {name!r}: {exc}") from None


def _named_job(file: Element, ns: str, name: str, locations: Collection[str]) -> Job:
    try:
        out = relative_path(name)
    except ValueError as exc:
        raise MetalinkError(f"unsafe name: {exc}") from None
    url, *mirrors = _urls(file, ns, locations)
    hashes = file.findall(f"{{{ns}}}hash" if ns == V4 else f"{{{ns}}}verification/{{{ns}}}hash")
    return Job(
        url,
        out=out,
        checksum=_strongest(hashes),
        mirrors=tuple(mirrors),
        size=_size(file.findtext(f"{{{ns}}}size")),
        pieces=_pieces(file, ns),
    )


def _urls(file: Element, ns: str, locations: Collection[str] = ()) -> list[URL]:
    """The file's http(s) URLs, best first (those in ``locations`` before the others);
    others (ftp, torrents) and unparsable ones are left out, as aria2 leaves what it
    cannot fetch."""
    if ns == V4:
        found = file.findall(f"{{{ns}}}url")
        ranked = [(_rank(u.get("priority"), "priority"), u) for u in found]
    else:
        found = file.findall(f"{{{ns}}}resources/{{{ns}}}url")
        ranked = [(-_rank(u.get("preference"), "preference", missing=0), u) for u in found]

    def elsewhere(element: Element) -> bool:
        return (element.get("location") or "").strip().lower() not in locations

    ranked.sort(key=lambda pair: (elsewhere(pair[1]), pair[0]))  # stable: ties keep order
    urls = [url for _, element in ranked if (url := _http_url(element.text)) is not None]
    if not urls:
        raise MetalinkError("no http or https URL")
    return urls


def _rank(text: str | None, attribute: str, missing: int = _LAST) -> int:
    if text is None:
        return missing
    return _whole(text, f"{attribute}={text!r} is not a whole number")


def _http_url(text: str | None) -> URL | None:
    try:
        return parse_url(text or "")
    except ValueError:  # another scheme, or not a URL at all
        return None


def _size(text: str | None) -> int | None:
    return None if text is None else _whole(text, f"<size> {text.strip()!r} is not a size")


def _whole(text: str, message: str) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise MetalinkError(message)
    return int(text)


# --- hashes ---------------------------------------------------------------------------
def _algorithm(given: str | None) -> str | None:
    """The hashlib name of a hash ``type`` (v4's ``sha-256``, v3's ``sha256``), or None
    for one midair cannot check (a file with only those has no checksum)."""
    import hashlib

    name = (given or "").strip().lower()
    name = CHECKSUM_ALGORITHMS.get(name, name.replace("-", ""))
    return name if name in HEX_LENGTH and name in hashlib.algorithms_available else None


def _digest(text: str | None, algorithm: str) -> str:
    digest = (text or "").strip().lower()
    if len(digest) != HEX_LENGTH[algorithm] or not all(c in "0123456789abcdef" for c in digest):
        raise MetalinkError(
            f"{algorithm} hash {digest[:140]!r} is not {HEX_LENGTH[algorithm]} hex digits"
        )
    return digest


def _strongest(hashes: list[Element]) -> Checksum | None:
    """The strongest whole-file hash; every one of a known type must be well formed."""
    known: dict[str, str] = {}
    for element in hashes:
        algorithm = _algorithm(element.get("type"))
        if algorithm is not None:
            known.setdefault(algorithm, _digest(element.text, algorithm))
    best = min(known, key=STRENGTH.index, default=None)
    return None if best is None else Checksum(best, known[best])


def _pieces(file: Element, ns: str) -> Pieces | None:
    """The piece hashes of the strongest known type, in piece order."""
    path = f"{{{ns}}}pieces" if ns == V4 else f"{{{ns}}}verification/{{{ns}}}pieces"
    known = {
        algorithm: element
        for element in file.findall(path)
        if (algorithm := _algorithm(element.get("type"))) is not None
    }
    best = min(known, key=STRENGTH.index, default=None)
    if best is None:
        return None
    element = known[best]
    length = _whole(element.get("length") or "", "<pieces> without a whole-number length")
    if length < 1:
        raise MetalinkError("<pieces> of length 0")
    hashes = element.findall(f"{{{ns}}}hash")
    if ns == V3:  # v3 numbers its pieces; v4 lists them in order
        hashes.sort(key=lambda h: _whole(h.get("piece") or "", "a piece hash without piece="))
    if not hashes:
        raise MetalinkError("<pieces> without a hash")
    return Pieces(length, best, tuple(_digest(h.text, best) for h in hashes))
