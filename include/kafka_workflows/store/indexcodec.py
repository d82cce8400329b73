"""Compact JSON for a set of job indices: a store value's `completed_jobs` and `failed_jobs`.

Sorted inclusive ranges (`[[0, 41], [43, 99]]`) are small while jobs complete roughly in order,
but 1,000,000 jobs completed in alternating order are 500,000 ranges (megabytes of JSON, more
than a Kafka record may hold). Past `MAX_RANGES` ranges the set is written as a bitmap instead:

    {"format": "zlib-bitmap-v1", "size": 1000000, "count": 500000, "data": "<base64 of zlib of the bits>"}

bit i (most significant first) set = index i in the set. 1,000,000 indices in any order take at
most 125,000 bytes before compression (about 170 kB of base64), usually far less. Both forms are
read, so values written before this codec (ranges only) still load. Decoding is bounded: the
bitmap must inflate to exactly the size it declares (a zlib bomb is refused), and `size` is capped.
Linear time both ways (int <-> binary string conversions are linear for base 2).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Sequence
from typing import Any

FORMAT = "zlib-bitmap-v1"
MAX_RANGES = 64
MAX_SIZE = 10_000_000  # indices; a request with more jobs is not something a store value describes
_RUNS = re.compile(r"1+")


def encode_ranges(ranges: Sequence[Sequence[int]], max_ranges: int = MAX_RANGES) -> list[list[int]] | dict[str, Any]:
    """Sorted, disjoint inclusive `ranges` as JSON: the ranges themselves while few, else a bitmap."""
    if len(ranges) <= max_ranges:
        return [[int(start), int(end)] for start, end in ranges]
    size = int(ranges[-1][1]) + 1
    bits = bytearray(b"0") * size
    count = 0
    for start, end in ranges:
        bits[start:end + 1] = b"1" * (end - start + 1)
        count += end - start + 1
    raw = int(bits, 2).to_bytes((size + 7) // 8, "big")
    return {"format": FORMAT, "size": size, "count": count,
            "data": base64.b64encode(zlib.compress(raw, 6)).decode("ascii")}


def decode_ranges(value: Any) -> list[list[int]]:
    """The sorted inclusive ranges of an encoded set (ranges, a bitmap object, or None for empty)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [[int(start), int(end)] for start, end in value]
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        shown = value.get("format") if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"job indices: unknown encoding {shown!r} (expected ranges or {FORMAT!r})")
    size = value.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_SIZE:
        raise ValueError(f"job indices: bitmap size must be an integer in 1..{MAX_SIZE}")
    expected = (size + 7) // 8
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.b64decode(value.get("data", ""), validate=True), expected + 1)
    except (binascii.Error, zlib.error, TypeError, ValueError) as exc:
        raise ValueError(f"job indices: the bitmap is not base64 of zlib data ({type(exc).__name__})") from None
    if len(raw) != expected:
        raise ValueError(f"job indices: the bitmap inflates to {len(raw)}+ bytes, not the {expected} its size says")
    number = int.from_bytes(raw, "big")
    if number.bit_length() > size:
        raise ValueError(f"job indices: the bitmap has bits beyond its size {size}")
    text = format(number, "b").zfill(size)
    return [[m.start(), m.end() - 1] for m in _RUNS.finditer(text)]
