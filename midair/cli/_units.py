"""Command-line units: sizes and rates like ``256K``, ``1M``, ``2G`` (powers of 1024)."""

from __future__ import annotations

import argparse

from ..core.units import parse_amount


def parse_size(text: str) -> int:
    """``"256K"`` -> 262144.  For argparse ``type=``: errors become usage errors."""
    try:
        return parse_amount(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size like 512, 256K, 1M or 2G"
        ) from None
