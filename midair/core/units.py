"""Amounts of bytes (sizes, rates per second) written like ``512``, ``256K``, ``1.5M``, ``2G``.

Powers of 1024, as aria2 and curl read them; an optional ``B`` or ``iB`` after.
"""

from __future__ import annotations

import re

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", re.I)


def parse_amount(text: str) -> int:
    """``"256K"`` -> 262144; ValueError for text that is no such amount."""
    match = _AMOUNT.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an amount like 512, 256K, 1.5M or 2G")
    return int(float(match[1]) * _SUFFIXES[match[2].upper()])
