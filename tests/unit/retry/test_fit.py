"""A dead letter always fits: sizes from empty to over the limit, value, headers and key."""

from __future__ import annotations

from kafka_workflows import headers as h
from kafka_workflows.retry.fit import (
    HEADERS_OMITTED,
    KEY_OMITTED,
    ORIGINAL_SIZE,
    VALUE_OMITTED,
    VALUE_TRUNCATED,
    fit_dead_letter,
    record_size,
)

LIMIT = 1_000_000
PROVENANCE = {h.ORIGINAL_TOPIC: "orders", h.ORIGINAL_PARTITION: "2", h.ORIGINAL_OFFSET: "41",
              h.CONSUMER_GROUP: "g", h.ERROR_TYPE: "MessageDecodeError", h.ERROR_MESSAGE: "x" * 1000}


def test_a_dead_letter_that_fits_is_kept_exactly() -> None:
    for value in (None, b"", b"{}", b"v" * 10_000):
        assert fit_dead_letter(b"k", value, PROVENANCE, LIMIT) == (b"k", value, PROVENANCE)


def test_a_value_that_fit_its_topic_but_not_with_provenance_is_truncated_and_says_so() -> None:
    value = b"p" * 999_800  # fits a 1,000,000-byte topic alone, not with ~1.2 kB of provenance
    key, out_value, headers = fit_dead_letter(b"k", value, PROVENANCE, LIMIT)
    assert key == b"k"
    assert out_value is not None and value.startswith(out_value) and len(out_value) < len(value)
    assert headers[ORIGINAL_SIZE] == str(len(value))
    assert headers[VALUE_TRUNCATED] == str(len(out_value))
    assert record_size(key, out_value, headers) <= LIMIT
    assert {k: headers[k] for k in PROVENANCE} == PROVENANCE


def test_huge_foreign_headers_are_dropped_largest_first_and_named() -> None:
    headers = {**PROVENANCE, "trace": b"t" * 10, "blob": b"b" * 2_000_000, "kw-request-id": "r" * 999_000}
    key, value, out = fit_dead_letter(b"k", b"v" * 500, headers, LIMIT)
    assert value is None and out[VALUE_OMITTED] == "true" and out[ORIGINAL_SIZE] == "500"
    assert out[HEADERS_OMITTED] == "blob,kw-request-id"
    assert out["trace"] == b"t" * 10
    assert record_size(key, value, out) <= LIMIT
    assert {k: out[k] for k in PROVENANCE} == PROVENANCE


def test_a_key_too_large_for_the_provenance_alone_is_omitted() -> None:
    key, value, out = fit_dead_letter(b"k" * 2_000_000, b"", PROVENANCE, LIMIT)
    assert key is None and value is None and out[KEY_OMITTED] == "2000000"
    assert record_size(key, value, out) <= LIMIT


def test_every_size_fits_a_small_limit() -> None:
    for size in (0, 1, 100, 3_000, 5_000, 100_000):
        for key in (None, b"", b"k" * size):
            k, v, out = fit_dead_letter(key, b"x" * size, {**PROVENANCE, "other": b"o" * size}, 4_096)
            assert record_size(k, v, out) <= 4_096, (size, key)
