"""The audit log serves control records of a fixed shape (issue 17, defect 8): a forged record's bad
field becomes None (an unknown op "unknown"), never a value of a type the UI does not expect."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from kafka_workflows.monitor.audit import AuditLog


@dataclass
class Msg:
    """Just what AuditLog.apply reads of a consumed control record."""

    payload: bytes | None
    at: int

    def value(self) -> bytes | None:
        return self.payload

    def offset(self) -> int:
        return self.at


def fed(*records: Any) -> AuditLog:
    audit = AuditLog({"bootstrap.servers": "unused:9092"})
    for n, record in enumerate(records):
        audit.apply(Msg(record if isinstance(record, bytes) else json.dumps(record).encode(), n))  # type: ignore[arg-type]
    return audit


GOOD = {"kind": "command", "id": "c1", "op": "pause", "group": "billing", "by": "admin", "reason": "maintenance",
        "at": 1_800_000_000.5}
TYPES = {"kind": str, "id": str, "op": str, "group": (str, type(None)), "topic": (str, type(None)),
         "partition": (int, type(None)), "offset": (int, type(None)), "key": (str, type(None)),
         "by": (str, type(None)), "reason": (str, type(None)), "at": (float, type(None)),
         "dead_letter_topic": (str, type(None)), "to": (str, type(None)), "letters": (list, type(None)),
         "count": (int, type(None)), "result": (str, type(None)), "applied": list, "control_offset": int}


def assert_typed(row: dict[str, Any]) -> None:
    assert set(row) == set(TYPES), set(row) ^ set(TYPES)
    for field, kinds in TYPES.items():
        assert isinstance(row[field], kinds) and not isinstance(row[field], bool), (field, row[field])
    for answer in row["applied"]:
        assert set(answer) == {"worker", "result", "at"}
        assert all(v is None or isinstance(v, str) for v in (answer["worker"], answer["result"]))
        assert answer["at"] is None or isinstance(answer["at"], float)


@pytest.mark.parametrize("field, bad", [
    ("at", "soon"), ("at", 1e300), ("at", -5), ("at", True), ("at", {"length": 3}), ("at", None),
    ("by", {"length": "<img src=x onerror=alert(1)>"}), ("by", ["admin"]), ("by", 7), ("by", "b" * 10_000),
    ("reason", {"x": 1}), ("group", 12), ("topic", {"length": "<img>"}), ("partition", "0"), ("partition", -1),
    ("partition", 2**80), ("partition", 1.5), ("offset", {"length": "<img>"}), ("key", ["k"]),
])
def test_a_bad_field_of_a_command_becomes_none_and_the_rest_is_kept(field: str, bad: Any) -> None:
    [row] = fed({**GOOD, field: bad}).page()["items"]
    assert_typed(row)
    assert row[field] is None
    assert (row["id"], row["op"], row["group"] if field != "group" else "billing") == ("c1", "pause", "billing")


def test_a_replayed_record_whose_letters_are_not_a_list_of_ids_shows_none() -> None:
    base = {"kind": "replayed", "id": "r1", "group": "billing", "dead_letter_topic": "t.billing.dlq", "to": "t",
            "by": "admin", "at": time.time()}
    audit = fed({**base, "ids": {"length": "<img src=x onerror=alert(1)>"}, "count": {"length": "<img>"}},
                {**base, "id": "r2", "ids": ["t.billing.dlq:0:1", {"length": 1}]},
                {**base, "id": "r3", "ids": ["t.billing.dlq:0:2"], "count": 1, "letters": {"length": "<img>"}},
                {**base, "id": "r4", "ids": [f"t.billing.dlq:0:{n}" for n in range(5000)]})
    rows = {r["id"]: r for r in audit.page()["items"]}
    for row in rows.values():
        assert_typed(row)
        assert row["op"] == "replay"
    assert (rows["r1"]["letters"], rows["r1"]["count"]) == (None, None)
    assert rows["r2"]["letters"] is None
    assert (rows["r3"]["letters"], rows["r3"]["count"]) == (["t.billing.dlq:0:2"], 1)
    assert rows["r4"]["letters"] is None  # more than a replay ever lists
    assert audit.replayed("t.billing.dlq:0:2") == {"by": "admin", "at": base["at"]}
    assert audit.replayed("t.billing.dlq:0:1") is None


def test_an_unknown_op_is_unknown_unknown_fields_are_dropped_and_records_without_an_id_are_skipped() -> None:
    audit = fed({**GOOD, "op": "<script>", "letters": {"length": "<img>"}, "html": "<b>x</b>"},
                {**GOOD, "id": {"x": 1}}, {**GOOD, "id": "x" * 201}, [1, 2], b"not json", b"\xff" * 100, None,
                {"kind": "applied", "command": "c1", "worker": {"w": 1}, "result": ["<img>"], "at": "soon"},
                {"kind": "applied", "command": "c1", "worker": "w1", "result": "paused 3 partition(s)", "at": 1.0})
    [row] = audit.page()["items"]
    assert_typed(row)
    assert row["op"] == "unknown" and row["letters"] is None and "html" not in row
    assert row["applied"] == [{"worker": None, "result": None, "at": None},
                              {"worker": "w1", "result": "paused 3 partition(s)", "at": 1.0}]


def test_answers_per_command_are_bounded() -> None:
    answers = [{"kind": "applied", "command": "c1", "worker": f"w{n}", "result": "ok", "at": 1.0} for n in range(500)]
    [row] = fed(GOOD, *answers).page()["items"]
    assert len(row["applied"]) == 100  # MAX_ANSWERS
