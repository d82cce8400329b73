"""KafkaInTrigger's filter, without a triggerer: which records become events, and how a refused one is told.

The delivery guarantee (commit once persisted, one run per record across a triggerer kill) needs the
real triggerer: tests/e2e/test_airflow_native.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kafka_workflows_airflow.triggers.kafka_in import CLASSPATH, KafkaInTrigger, Record

PARAMS = {"order_id": {"type": "string", "min_length": 1}, "amount": {"type": "number", "minimum": 0},
          "reason": {"type": "string", "nullable": True, "default": None}}


def trigger() -> KafkaInTrigger:
    return KafkaInTrigger(workflow="refunds", topic="refunds", group="g", filter={"type": "refund"},
                          max_bytes=200, params=PARAMS)


def events(records: list[tuple[int, bytes | None]]) -> list[dict[str, Any]]:
    async def stream() -> AsyncIterator[Record]:
        for offset, value in records:
            yield Record("refunds", 1, offset, value)

    async def collect() -> list[dict[str, Any]]:
        return [e.payload async for e in trigger().filter_shared_stream(stream())]

    return asyncio.run(collect())


def test_valid_records_become_events_with_their_conf_and_one_run_id_each() -> None:
    good = {"type": "refund", "order_id": "o-1", "amount": 2.5}
    got = events([(7, json.dumps(good).encode()), (8, json.dumps({**good, "type": "other"}).encode())])
    assert got == [{"topic": "refunds", "partition": 1, "offset": 7, "run_id": "kafka__refunds-1-7", "conf": good}]


def test_refused_records_are_skipped_with_their_coordinates_and_the_stream_goes_on(
        capfd: pytest.CaptureFixture[str]) -> None:
    good = {"type": "refund", "order_id": "o-2", "amount": 1}
    bad = [b"secret{", b'["secret"]', json.dumps({"type": "refund", "amount": 1, "s": "secret"}).encode(),
           json.dumps({"type": "refund", "order_id": "secret", "amount": -1}).encode(),
           json.dumps({"type": "refund", "order_id": "o", "amount": "secret"}).encode(),
           json.dumps({"type": "refund", "order_id": "o", "amount": 1, "secret": "x" * 300}).encode()]
    got = events([*enumerate(bad), (len(bad), json.dumps(good).encode())])
    assert [e["conf"] for e in got] == [good]
    logged = "".join(capfd.readouterr())  # the trigger's log (structlog, as in the triggerer)
    skipped = [line[line.index("refunds[1]@"):] for line in logged.splitlines() if "starts no run" in line]
    assert [m.split(":")[0] for m in skipped] == [f"refunds[1]@{n}" for n in range(len(bad))]
    assert "'order_id' is missing" in skipped[2] and "'amount' does not fit" in skipped[3]
    assert not [m for m in skipped if "secret" in m]


def test_the_trigger_serializes_its_classpath_and_arguments() -> None:
    path, kwargs = trigger().serialize()
    assert path == CLASSPATH
    assert KafkaInTrigger(**kwargs).serialize() == (path, kwargs)
    assert trigger().shared_stream_key() == ("kafka-workflows-in", "refunds", "g", "kafka_default")
