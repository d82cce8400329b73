"""Kafka in, the Kafka side: a record of a workflow's `trigger:` topic as a run's conf, parsed and
bounded once (the Airflow side, the AssetWatcher trigger that reads the topic and the DAG that starts
the runs, is plugins/kafka_workflows_airflow/triggers/kafka_in.py).

A record's value is untrusted input. `record_conf` returns the conf a record starts a run with, None
for a record the workflow's `filter` passes over, or raises `RecordRefused` naming the record
(topic[partition]@offset) and the rule it broke, never quoting the content: a value over `max_bytes`,
one that is not JSON, or a JSON value that is not an object (a run's conf is an object).

`run_id` is the one run a record may start: the same record read twice (a triggerer restarted before
its offset was committed) names the same run, which Airflow creates once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from pydantic_core import from_json

from kafka_workflows.errors import KafkaWorkflowsError

RUN_ID_PREFIX = "kafka__"


class RecordRefused(KafkaWorkflowsError, ValueError):
    """A record that cannot be a run's conf; the message names the record and the rule, not its content."""


def where(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


def record_conf(value: bytes | None, at: str, *, max_bytes: int,
                filter: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The conf of the run the record at `at` starts, or None when `filter` passes it over.

    `filter` maps top-level fields to the value they must equal; a list gives the values allowed.
    """
    if value is None:
        raise RecordRefused(f"{at}: the record has no value (a run's conf is a JSON object)")
    if len(value) > max_bytes:
        raise RecordRefused(f"{at}: value of {len(value)} bytes is over the trigger's max_bytes ({max_bytes})")
    try:
        conf = from_json(value)
    except ValueError as exc:  # the parser's position, never the content
        raise RecordRefused(f"{at}: value is not JSON ({exc}; {len(value)} bytes)") from None
    if not isinstance(conf, dict):
        raise RecordRefused(f"{at}: value is a JSON {type(conf).__name__}, not an object (a run's conf)")
    for field, wanted in (filter or {}).items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if field not in conf or conf[field] not in allowed:
            return None
    return conf


def run_id(topic: str, partition: int, offset: int) -> str:
    """The run id of the one run the record at topic[partition]@offset may start (at most 250 characters,
    Airflow's limit; a long topic name is shortened with a digest so two topics never share one)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", topic)
    if len(name) > 200:
        name = name[:180] + "-" + hashlib.sha256(topic.encode()).hexdigest()[:16]
    return f"{RUN_ID_PREFIX}{name}-{partition}-{offset}"
