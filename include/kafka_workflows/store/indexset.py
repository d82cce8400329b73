"""A set of job indices kept as sorted, disjoint, inclusive ranges (compact in JSON)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class IndexSet:
    """A set of non-negative ints kept as sorted, disjoint, inclusive ranges (compact in JSON)."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        pairs = []
        for pair in ranges:
            start, end = (int(x) for x in pair)
            if start < 0 or end < start:
                raise ValueError(f"invalid index range {[start, end]}")
            pairs.append((start, end))
        if any(pairs[i][0] <= pairs[i - 1][1] + 1 for i in range(1, len(pairs))):
            pairs.sort()  # not canonical: merge overlapping and adjacent ranges (never index by index)
        for start, end in pairs:
            if self._ends and start <= self._ends[-1] + 1:
                if end > self._ends[-1]:
                    self._count += end - self._ends[-1]
                    self._ends[-1] = end
            else:
                self._starts.append(start)
                self._ends.append(end)
                self._count += end - start + 1

    def max(self) -> int | None:
        """The largest index, None when empty."""
        return self._ends[-1] if self._ends else None

    def range_count(self) -> int:
        return len(self._starts)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        pos = bisect.bisect_right(self._starts, i) - 1
        return pos >= 0 and self._ends[pos] >= i

    def add(self, i: int) -> bool:
        """Add `i`; False when it was already there."""
        pos = bisect.bisect_right(self._starts, i) - 1
        if pos >= 0 and self._ends[pos] >= i:
            return False
        joins_left = pos >= 0 and self._ends[pos] == i - 1
        joins_right = pos + 1 < len(self._starts) and self._starts[pos + 1] == i + 1
        if joins_left and joins_right:
            self._ends[pos] = self._ends[pos + 1]
            del self._starts[pos + 1], self._ends[pos + 1]
        elif joins_left:
            self._ends[pos] = i
        elif joins_right:
            self._starts[pos + 1] = i
        else:
            self._starts.insert(pos + 1, i)
            self._ends.insert(pos + 1, i)
        self._count += 1
        return True

    def remove_from(self, limit: int) -> int:
        """Drop every index >= limit; returns how many were dropped."""
        dropped = 0
        while self._starts and self._ends[-1] >= limit:
            start, end = self._starts[-1], self._ends[-1]
            if start >= limit:
                dropped += end - start + 1
                self._starts.pop()
                self._ends.pop()
            else:
                dropped += end - limit + 1
                self._ends[-1] = limit - 1
        self._count -= dropped
        return dropped

    def ranges(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]

    def __iter__(self) -> Iterator[int]:
        for s, e in zip(self._starts, self._ends, strict=True):
            yield from range(s, e + 1)
