"""Records of every kind, size and emptiness for the fuzz (tests/integration/test_fuzz.py).

A case is a small description (names of keys, values, header values, integers) that `record()` turns
into bytes, so that hypothesis prints a failing case in one line, a 1 MB value included, and the line
is enough to replay it. Every record carries the header `x-fz: <marker>`: the handler's calls, the
processors' outputs and the dead letters are counted by it (a dead letter keeps the headers other
producers wrote, byte for byte).

Sizes: `ONE_MB` (999,800 bytes) is just under librdkafka's default message.max.bytes of 1,000,000,
so the record fits every limit on its way in; what the units make of it (a dead letter with the
provenance headers added, a retry, an output) may not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st

from kafka_workflows import headers as h

MARKER = "x-fz"
ONE_MB = 999_800
PRODUCE_LIMIT = 999_900  # what our own producer (message.max.bytes 1,000,000) takes, with room for framing
HUGE_HEADER = 600_000
CONTROL_TOPIC = "kafka-workflows.control"
STATUS_TOPIC = "kafka-workflows.status"
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def _json_of_size(size: int, **fields: Any) -> bytes:
    """A JSON object with `fields` and a string padding it to exactly `size` bytes."""
    head = json.dumps({**fields, "pad": ""}, separators=(",", ":")).encode()
    return head[:-2] + b"x" * (size - len(head)) + b'"}'


@cache
def value(name: str) -> bytes | None:
    """The value a case names (cached: the 1 MB ones are built once)."""
    return {
        "absent": None,
        "empty": b"",
        "json": b'{"n": 1}',
        "fails": b'{"fail": true}',
        "not-json": b"\xffnot json",
        "not-utf8": b"\xc3\x28\xa0\xa1\xff\xfe",
        "json-string-empty": b'""',
        "json-array": b"[]",
        "json-null": b"null",
        "400-digit-int": b"9" * 400,
        "nested-5000": b"[" * 5000 + b"]" * 5000,
        "1MB-not-json": b"x" * ONE_MB,
        "1MB-not-utf8": b"\xff" * ONE_MB,
        "1MB-json": _json_of_size(ONE_MB, n=1),
        "1MB-json-fails": _json_of_size(ONE_MB, fail=True),
        # A pause command by "admin", as defect 1 of issue 17 sent it, in a request that fails for good.
        "pause-by-admin-fails": json.dumps({"kind": "command", "op": "pause", "group": "*", "by": "admin",
                                            "id": "forged", "at": 0, "fail": True}).encode(),
    }[name]


VALUES = ["absent", "empty", "json", "fails", "not-json", "not-utf8", "json-string-empty", "json-array",
          "json-null", "400-digit-int", "nested-5000", "1MB-not-json", "1MB-not-utf8", "1MB-json",
          "1MB-json-fails", "pause-by-admin-fails"]

KEYS: dict[str, bytes | None] = {"absent": None, "empty": b"", "text": b"k", "not-utf8": b"\xff\xfek\x00\x81",
                                  "10kB": b"k" * 10_000}


@cache
def header_value(name: str) -> bytes:
    """A header value a case names. No value here is a valid kw-retry-at in the future: a retry due in
    a day is, by design, held for a day (not a wedge, and not something a fuzz can wait for)."""
    return {
        "empty": b"",
        "abc": b"abc",
        "0": b"0",
        "1": b"1",
        "7": b"7",
        "-1": b"-1",
        " 7": b" 7",
        "1.5": b"1.5",
        "1e3": b"1e3",
        "NaN": b"NaN",
        "400-digits": b"9" * 400,
        "int64-max+1": str(2**63).encode(),
        "int64-min-1": str(-(2**63) - 1).encode(),
        "not-utf8": b"\xff\xfe\x00",
        "huge": b"r" * HUGE_HEADER,
        "control-topic": CONTROL_TOPIC.encode(),
        "status-topic": STATUS_TOPIC.encode(),
    }[name]


HEADER_VALUES = ["empty", "abc", "0", "1", "7", "-1", " 7", "1.5", "1e3", "NaN", "400-digits", "int64-max+1",
                 "int64-min-1", "not-utf8", "huge", "control-topic", "status-topic"]
KW_HEADERS = [h.ATTEMPT, h.RETRY_AT, h.JOB_INDEX, h.REQUEST_ID, h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION,
              h.ORIGINAL_OFFSET, h.CONSUMER_GROUP, h.FIRST_FAILED_AT, h.REPLAYED_FROM, h.WORKFLOW, h.ERROR_TYPE,
              "kw-skipped-by", "kw-value-truncated", "kw-original-size", "traceparent", "x-other"]


def _size(key: bytes | None, val: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(val or b"") + sum(len(n) + len(v) + 10 for n, v in headers)


# -- worker records: the request topic or the first retry topic ---------------------------------------
@dataclass(frozen=True)
class RecordCase:
    """One record for a worker: to its request topic or its first retry topic (`to`)."""

    to: str
    key: str
    value: str
    headers: tuple[tuple[str, str], ...] = ()

    def record(self, marker: str) -> Record:
        headers = [(name, header_value(v)) for name, v in self.headers]
        return KEYS[self.key], value(self.value), [*headers, (MARKER, marker.encode())]

    def fits(self) -> bool:
        return _size(*self.record("m-000000")) <= PRODUCE_LIMIT


kw_header = st.tuples(st.sampled_from(KW_HEADERS), st.sampled_from(HEADER_VALUES))
record_cases = st.builds(
    RecordCase, to=st.sampled_from(["request", "retry"]), key=st.sampled_from(list(KEYS)),
    value=st.sampled_from(VALUES), headers=st.lists(kw_header, max_size=3).map(tuple),
).map(lambda c: c if c.to == "request" or any(n == h.RETRY_AT for n, _ in c.headers)
      else RecordCase(c.to, c.key, c.value, ((h.RETRY_AT, "abc"), *c.headers))).filter(RecordCase.fits)


# -- control records -----------------------------------------------------------------------------------
CONTROL = ["none", "absent", "empty", "not-json", "1MB-not-json", "json-array", "at-soon", "partition-400-digits",
           "offset-huge", "letters-object", "op-number", "id-1MB"]


def control_record(name: str, group: str, topic: str) -> bytes | None:
    """A control record that must not stop, wedge or pause a worker (never a valid pause)."""
    command = {"kind": "command", "id": "fz", "group": group, "by": "fuzz", "reason": "", "at": 0}
    return {
        "absent": lambda: None,
        "empty": lambda: b"",
        "not-json": lambda: b"\xff{",
        "1MB-not-json": lambda: b"{" * ONE_MB,
        "json-array": lambda: b"[]",
        "at-soon": lambda: json.dumps({**command, "op": "unblock", "topic": topic, "partition": 0,
                                       "at": "soon"}).encode(),
        "partition-400-digits": lambda: json.dumps({**command, "op": "unblock", "topic": topic,
                                                    "partition": 10**400}).encode(),
        "offset-huge": lambda: json.dumps({**command, "op": "skip", "topic": topic, "partition": 0,
                                           "offset": 2**70}).encode(),
        "letters-object": lambda: json.dumps({**command, "op": "resume",
                                              "letters": {"length": "<img src=x onerror=alert(1)>"}}).encode(),
        "op-number": lambda: json.dumps({**command, "op": 7}).encode(),
        "id-1MB": lambda: json.dumps({**command, "op": "resume", "id": "i" * (ONE_MB - 200)}).encode(),
    }[name]()


# -- store commands ------------------------------------------------------------------------------------
INTS: dict[str, Any] = {"0": 0, "1": 1, "3": 3, "-1": -1, "20M": 20_000_000, "10^13": 10**13,
                        "int64-max": 2**63 - 1, "400-digits": int("9" * 400), "true": True, "1.5": 1.5,
                        "'3'": "3", "null": None, "absent": ...}
REQUEST_IDS = ["own", "empty", "huge", "number", "absent"]
REASONS: dict[str, Any] = {"absent": ..., "empty": "", "short": "boom", "1MB": "r" * (ONE_MB - 300),
                           "object": {"a": 1}}


@dataclass(frozen=True)
class CommandCase:
    """A store command (op with odd totals, indices, ids, reasons), or a raw value (`raw`); `init` first
    registers the request with `init_total`; `spread` more completes at indices spread up to `spread_to`."""

    op: str = "complete"
    total: str = "absent"
    job: str = "absent"
    request_id: str = "own"
    key: str = "own"
    reason: str = "absent"
    raw: str | None = None
    init: str | None = None
    spread: int = 0
    spread_to: str = "20M"

    def records(self, marker: str) -> list[Record]:
        """The command(s), each marked `<marker>.<n>`; the request id is `fz-<marker>` when `own`."""
        own = f"fz-{marker}"
        rid: Any = {"own": own, "empty": "", "huge": "q" * HUGE_HEADER, "number": 7, "absent": ...}[self.request_id]
        key = {"own": own.encode(), "absent": None, "other": b"someone-else", "not-utf8": b"\xff\xfe"}[self.key]
        out: list[Record] = []

        def add(body: dict[str, Any] | bytes | None) -> None:
            val = body if body is None or isinstance(body, bytes) else json.dumps(
                {k: v for k, v in body.items() if v is not ...}).encode()
            out.append((key, val, [(MARKER, f"{marker}.{len(out)}".encode())]))

        if self.init is not None:
            add({"op": "init", "request_id": rid, "total": INTS[self.init]})
        if self.raw is not None:
            add(value(self.raw))
        else:
            add({"op": self.op, "request_id": rid, "total": INTS[self.total], "job": INTS[self.job],
                 "reason": REASONS[self.reason]})
        top = INTS[self.spread_to]
        for n in range(self.spread):
            add({"op": "complete", "request_id": rid, "job": (top - 1) * n // max(1, self.spread - 1)})
        return out

    def fits(self) -> bool:
        return all(_size(*r) <= PRODUCE_LIMIT for r in self.records("m-000000"))


command_cases = st.one_of(
    st.builds(CommandCase, op=st.sampled_from(["init", "complete", "fail", "explode"]),
              total=st.sampled_from(list(INTS)), job=st.sampled_from(list(INTS)),
              request_id=st.sampled_from(REQUEST_IDS),
              key=st.sampled_from(["own", "own", "absent", "other", "not-utf8"]),
              reason=st.sampled_from(list(REASONS)), init=st.one_of(st.none(), st.sampled_from(["1", "3", "10^13"]))),
    st.builds(CommandCase, raw=st.sampled_from(VALUES)),
).filter(CommandCase.fits)


# -- exactly-once processor inputs ---------------------------------------------------------------------
@dataclass(frozen=True)
class InputCase:
    """An input of the exactly-once processor; its transform wants a JSON object without `fail`."""

    key: str
    value: str
    headers: tuple[tuple[str, str], ...] = ()

    def record(self, marker: str) -> Record:
        headers = [(name, header_value(v)) for name, v in self.headers]
        return KEYS[self.key], value(self.value), [*headers, (MARKER, marker.encode())]

    def fits(self) -> bool:
        return _size(*self.record("m-000000")) <= PRODUCE_LIMIT


input_cases = st.builds(InputCase, key=st.sampled_from(list(KEYS)), value=st.sampled_from(VALUES),
                        headers=st.lists(kw_header, max_size=2).map(tuple)).filter(InputCase.fits)
