"""Incidents from the status topic start the incident DAG: an event trigger for an AssetWatcher.

A worker whose group declares `incidents:` publishes to `kafka-workflows.status`, key
`incident/<group>` (kafka_workflows.ops.incidents). This trigger follows that topic in the
triggerer as a consumer group of its own (`kafka-workflows-incidents-<group>`: from its committed
offset after a restart; the first time from the topic's start, skipping incidents older than
`max_age`, so one published while the DAG was being deployed is still asked about) and fires one
event per incident of its groups, its payload the incident; the AssetWatcher turns it into an
asset event, and the incident DAG (factory.py) runs with it (`triggering_asset_events`). The
offset is committed before the event is yielded: an incident is asked about at most once, never
twice after a triggerer restart.

Records are untrusted: only what `parse_incident` accepts (strict, bounded; signed when a control
secret is configured) fires; the rest is logged without its content and skipped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from asgiref.sync import sync_to_async
from confluent_kafka import Consumer

from kafka_workflows.kafka.config import client_config
from kafka_workflows.ops.control import STATUS_TOPIC, ensure_control_topics
from kafka_workflows.ops.incidents import incident_key, parse_incident

CLASSPATH = "kafka_workflows_airflow.triggers.incidents.IncidentTrigger"


class IncidentTrigger(BaseEventTrigger):
    """Fires {"incident": <the incident>} for each new incident of `groups` (see the module docstring).

    :param groups: the worker groups whose incidents start the DAG.
    :param kafka_config_id: the Kafka provider's connection (`kafka_default`).
    :param max_age: seconds after which an incident is no longer asked about (its `at`).
    :param poll_timeout: seconds one poll of the status topic waits.
    """

    def __init__(self, *, groups: list[str], kafka_config_id: str = "kafka_default", max_age: float = 3600.0,
                 poll_timeout: float = 1.0) -> None:
        super().__init__()
        self.groups = sorted(groups)
        self.kafka_config_id = kafka_config_id
        self.max_age = max_age
        self.poll_timeout = poll_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"groups": self.groups, "kafka_config_id": self.kafka_config_id,
                           "max_age": self.max_age, "poll_timeout": self.poll_timeout}

    def _consumer(self) -> Consumer:
        from kafka_workflows_airflow.hooks import KafkaWorkflowsHook

        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        ensure_control_topics(config)
        consumer = Consumer(client_config(config, **{
            "group.id": f"kafka-workflows-incidents-{'+'.join(self.groups)}"[:240],
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
        consumer.subscribe([STATUS_TOPIC])
        return consumer

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from kafka_workflows_airflow.control import control_secret

        consumer = await sync_to_async(self._consumer)()
        keys = {incident_key(group).encode() for group in self.groups}
        secret = control_secret()
        try:
            while True:
                msg = await asyncio.to_thread(consumer.poll, self.poll_timeout)
                if msg is None or msg.error() or msg.key() not in keys or msg.value() is None:
                    continue
                where = f"{STATUS_TOPIC}[{msg.partition()}]@{msg.offset()}"
                try:
                    record = json.loads(msg.value())
                except ValueError:
                    self.log.warning("%s: not JSON; ignored", where)
                    continue
                incident, why = parse_incident(record, secret)
                if incident is None or incident.group not in self.groups:
                    self.log.warning("%s: %s", where, why or "another group's incident; ignored")
                    continue
                if incident.at < time.time() - self.max_age:
                    continue  # history: the hold it was about is long resolved or asked about
                await asyncio.to_thread(consumer.commit, message=msg, asynchronous=False)
                self.log.info("%s: incident %s of group %s: %s", where, incident.id, incident.group,
                              incident.summary())
                yield TriggerEvent({"incident": record})
        finally:
            await asyncio.to_thread(consumer.close)
