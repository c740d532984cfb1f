"""Command-line units: sizes and rates like ``256K``, ``1M``, ``2G`` (powers of 1024)."""

from __future__ import annotations

import argparse
import re

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``"256K"`` -> 262144.  For argparse ``type=``: errors become usage errors."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512, 256K, 1M or 2G")
    return int(float(match[1]) * _SUFFIXES[match[2].upper()])
