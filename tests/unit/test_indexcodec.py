"""indexcodec: a store value's job-index sets stay small in any completion order and round-trip exactly."""

from __future__ import annotations

import base64
import json
import random
import zlib

import pytest

from kafka_workflows.store import IndexSet, RequestState
from kafka_workflows.store.indexcodec import FORMAT, MAX_RANGES, decode_ranges, encode_ranges

MILLION = 1_000_000


def _set(indices: list[int]) -> IndexSet:
    s = IndexSet()
    for i in indices:
        s.add(i)
    return s


def test_few_ranges_stay_plain_ranges_as_before() -> None:
    ranges = [[0, 41], [43, 99]]
    assert encode_ranges(ranges) == ranges and decode_ranges(ranges) == ranges
    assert decode_ranges(None) == [] and encode_ranges([]) == []


def _ranges(indices: list[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for i in sorted(indices):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


def test_1m_jobs_in_random_order_fit_well_under_1mb_at_every_stage_and_round_trip_exactly() -> None:
    order = list(range(MILLION))
    random.Random(7).shuffle(order)
    for stage in (1_000, 250_000, 500_000, 750_000, MILLION):  # sizes while a request runs, and at the end
        ranges = _ranges(order[:stage])
        encoded = encode_ranges(ranges)
        size = len(json.dumps(encoded))
        assert size < 200_000, f"{stage} completed: {size} bytes"
        assert decode_ranges(json.loads(json.dumps(encoded))) == ranges
    assert encode_ranges(_ranges(order)) == [[0, MILLION - 1]]


def test_alternating_completions_of_1m_jobs_are_a_small_bitmap_not_500k_ranges() -> None:
    ranges = [[i, i] for i in range(0, MILLION, 2)]
    encoded = encode_ranges(ranges)
    assert isinstance(encoded, dict) and encoded["format"] == FORMAT and encoded["count"] == MILLION // 2
    assert len(json.dumps(encoded)) < 10_000 < len(json.dumps(ranges)) // 100
    assert decode_ranges(encoded) == ranges


def test_the_bitmap_starts_past_max_ranges() -> None:
    ranges = [[i * 3, i * 3] for i in range(MAX_RANGES)]
    assert encode_ranges(ranges) == ranges
    more = [*ranges, [MAX_RANGES * 3 + 5, MAX_RANGES * 3 + 9]]
    assert isinstance(encode_ranges(more), dict) and decode_ranges(encode_ranges(more)) == more


def test_a_store_value_reads_back_in_the_old_and_the_new_encoding() -> None:
    state = RequestState.new("r1", 0.0)
    state.total = MILLION
    state.completed = _set(list(range(1, 20_001, 2)))
    state.failed = _set([0, 2, 4])
    value = json.loads(json.dumps(state.to_value()))
    assert isinstance(value["completed_jobs"], dict) and value["failed_jobs"] == [[0, 0], [2, 2], [4, 4]]
    again = RequestState.from_value(value)
    assert again.completed.ranges() == state.completed.ranges() and len(again.completed) == 10_000
    old = {**value, "completed_jobs": state.completed.ranges()}  # as written before the codec
    assert RequestState.from_value(old).completed.ranges() == state.completed.ranges()


@pytest.mark.parametrize("bad", [
    {"format": "roaring"}, {"format": FORMAT, "size": 0, "data": ""}, {"format": FORMAT, "size": True, "data": ""},
    {"format": FORMAT, "size": 10**12, "data": ""}, {"format": FORMAT, "size": 8, "data": "!!"},
    {"format": FORMAT, "size": 8, "data": base64.b64encode(zlib.compress(b"\xff" * 2)).decode()},
    {"format": FORMAT, "size": 16, "data": base64.b64encode(zlib.compress(b"\0" * 10**7)).decode()},  # a bomb
    "ranges",
])
def test_a_malformed_encoding_is_a_clear_error_never_a_hang(bad: object) -> None:
    with pytest.raises(ValueError, match="job indices: "):
        decode_ranges(bad)
