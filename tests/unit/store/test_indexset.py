"""store.indexset.IndexSet: job indices as compact ranges."""

from __future__ import annotations

from kafka_workflows.store.indexset import IndexSet


def test_index_set_keeps_compact_ranges() -> None:
    s = IndexSet()
    for i in [5, 3, 4, 0, 9, 1, 8, 4]:
        s.add(i)
    assert s.ranges() == [[0, 1], [3, 5], [8, 9]] and len(s) == 7 and 4 in s and 2 not in s
    assert s.remove_from(4) == 4 and s.ranges() == [[0, 1], [3, 3]]
    assert IndexSet([[0, 1], [3, 3], [2, 2]]).ranges() == [[0, 3]]
