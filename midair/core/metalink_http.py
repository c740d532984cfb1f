"""Metalink/HTTP (RFC 6249): the mirrors and the digest a server names in its answer.

A server (or a mirror redirector such as MirrorBrain, on its 302) may list other
places holding the file, ``Link: <URL>; rel=duplicate``, and the file's digest,
``Digest: SHA-256=<base64>`` (RFC 3230; RFC 9530's ``Repr-Digest: sha-256=:<base64>:``
too).  The duplicates become the download's mirrors (failover, and segments with
-s); the strongest digest becomes its checksum unless it has one already.  Anything
malformed is ignored: these are hints, and the file is still checked whole.
"""

from __future__ import annotations

import base64
import binascii
import re

from .jobs import CHECKSUM_ALGORITHMS, HEX_LENGTH, STRENGTH, Checksum
from .urls import URL, resolve_location

# One link-value: <URI-Reference> and its parameters, up to the next one.
_LINK_VALUE = re.compile(r"<([^>]*)>([^<]*)")
# RFC 3230 / 9530 names (lower case) -> hashlib's: aria2's spellings, and RFC 3230's SHA.
_DIGESTS = {**CHECKSUM_ALGORITHMS, "sha": "sha1"}


def duplicates(values: list[str], base: URL) -> list[URL]:
    """The http(s) URLs that ``Link`` field ``values`` name ``rel=duplicate``, resolved
    against ``base`` (the URL asked), in their order, each once."""
    found: list[URL] = []
    for value in values:
        for target, params in _LINK_VALUE.findall(value):
            if "duplicate" not in _relations(params):
                continue
            try:
                url = resolve_location(base, target.strip())
            except ValueError:
                continue
            if url.scheme in ("http", "https") and url != base and url not in found:
                found.append(url)
    return found


def _relations(params: str) -> set[str]:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "rel":
            return set(value.strip().strip('"').lower().split())
    return set()


def digest(values: list[str]) -> Checksum | None:
    """The strongest digest that ``Digest`` / ``Repr-Digest`` field ``values`` carry, or
    None (none, or none this side knows or can decode)."""
    best: Checksum | None = None
    for value in values:
        for item in value.split(","):
            name, _, encoded = item.strip().partition("=")
            algorithm = _DIGESTS.get(name.strip().lower())
            hexdigest = _hex(encoded.strip().strip(":"))
            if algorithm is None or hexdigest is None or len(hexdigest) != HEX_LENGTH[algorithm]:
                continue
            if best is None or STRENGTH.index(algorithm) < STRENGTH.index(best.algorithm):
                best = Checksum(algorithm, hexdigest)
    return best


def _hex(encoded: str) -> str | None:
    try:
        return base64.b64decode(encoded, validate=True).hex()
    except (binascii.Error, ValueError):
        return None
