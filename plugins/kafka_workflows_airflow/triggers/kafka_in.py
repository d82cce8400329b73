"""Kafka in: records of a topic start runs of a workflow, each with its record as the run's conf.

A spec's `trigger:` (topic, optional filter) becomes, in the DAG factory:

1. an Asset `kafka-workflows://<workflow>/in` watched by an AssetWatcher running `KafkaInTrigger`
   in the triggerer: one TriggerEvent, hence one asset event, per accepted record, its extra holding
   the record's topic, partition, offset, the run id it may start and its conf;
2. a small DAG `<workflow>.kafka_in` scheduled on that asset, whose `start_run` tasks create one run
   of the workflow per asset event with `TriggerDagRunOperator` (run id `kafka__<topic>-<p>-<offset>`,
   the record's JSON object as conf, `skip_when_already_exists`).

Delivery: every accepted record starts exactly one run, also when the triggerer is killed.

- No loss. The trigger runs in the triggerer's shared-stream ack mode (Airflow 3.3,
  `airflow.triggers.shared_stream`): the consumer (group `kafka-workflows.in.<workflow>`, auto commit
  off whatever the connection says) commits a record's offset only once the TriggerEvent derived from
  it was persisted as an asset event in the metadata database and the trigger moved on to the next
  record. A record whose event was not persisted when the triggerer died was never committed, so the
  restarted triggerer reads it again. (The provider's `AwaitMessageTrigger` and
  `KafkaMessageQueueTrigger` commit when they read a record, before its event is handled: a triggerer
  killed in between loses that run. Its `KafkaSharedStreamTrigger` has the ack mode but fires the
  record's value alone, and needs `group.id` and `enable.auto.commit=false` in the connection.)
- No duplicate. A record read again after a restart may already have its asset event (persisted,
  not yet committed), so it can yield a second asset event. Both name the same run id, a function of
  topic/partition/offset (`kafka_workflows.kafka_in.run_id`), and Airflow creates a run id once: the
  second `start_run` is skipped.
- No stranded event. Airflow folds the asset events queued before it creates an asset-triggered run
  into that run, and an event queued while an earlier one is still waiting (its queue row exists
  already) is not part of the run being created (its time is after the run's window). So the
  dispatching task does not only read its triggering events: it reads every event of the asset from
  its earliest triggering event on, and starts (or skips) a run for each. (What remains: an event
  stored after that read whose queue entry the scheduler already consumed waits for the next record.)

Untrusted input: a record's value is bounded (`max_bytes`), parsed once, must be a JSON object, and
must fit the workflow's params (Airflow's own Param validation, as for a conf given in the trigger
form or the REST API). A record that does not is skipped: a warning names it (topic[partition]@offset)
and the rule, never its content, and its offset is committed past (it is never retried). A record
the `filter` passes over starts nothing. Neither stops or slows the trigger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaBrokerPayload, KafkaSharedStreamProducer
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import reject_shared_stream_event
from asgiref.sync import sync_to_async
from confluent_kafka import Consumer, KafkaError

from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.group_protocol import group_protocol_settings
from kafka_workflows.kafka_in import RecordRefused, record_conf, run_id, where

__all__ = ["CLASSPATH", "KafkaInProducer", "KafkaInTrigger", "Record", "asset_uri", "default_group"]

CLASSPATH = "kafka_workflows_airflow.triggers.kafka_in.KafkaInTrigger"
log = logging.getLogger(__name__)


def asset_uri(workflow: str) -> str:
    return f"kafka-workflows://{workflow}/in"


def default_group(workflow: str) -> str:
    return f"kafka-workflows.in.{workflow}"


class Record(NamedTuple):
    """What the shared stream broadcasts: a record's coordinates and raw value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class KafkaInProducer(KafkaSharedStreamProducer):
    """The provider's ack-mode producer (commit per partition once the derived events are persisted,
    seek back on failure), reading with our connection config: its own group, auto commit off, and
    records broadcast with their coordinates."""

    def __init__(self, *, topic: str, group: str, start: str = "latest",
                 kafka_config_id: str = "kafka_default", poll_timeout: float = 1.0) -> None:
        super().__init__(topics=[topic], kafka_config_id=kafka_config_id, poll_timeout=poll_timeout)
        self.group = group
        self.start = start
        # Polls and the close run on one thread of their own: a close never races a poll in flight, and a
        # poll never holds the triggerer's shared sync_to_async thread (other triggers' connection reads).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kw-kafka-in")

    def _consumer_config(self) -> dict[str, Any]:
        from kafka_workflows_airflow.hooks import KafkaWorkflowsHook

        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        return client_config(config, **{
            **group_protocol_settings(config),
            "group.id": self.group,
            "enable.auto.commit": False,  # offsets are committed by advance(), once events are persisted
            "auto.offset.reset": self.start,
            "isolation.level": "read_committed",
        })

    async def open_stream(self) -> AsyncIterator[tuple[Record, KafkaBrokerPayload]]:  # type: ignore[override]
        consumer = Consumer(await sync_to_async(self._consumer_config)())
        consumer.subscribe(self.topics)
        self._consumer = consumer
        loop = asyncio.get_running_loop()
        last_error = None
        while True:
            message = await loop.run_in_executor(self._thread, consumer.poll, self.poll_timeout)
            if message is None:
                continue
            error: KafkaError | None = message.error()
            if error is not None:
                if error.fatal():  # the group ends; the triggerer fails its triggers, nothing was committed
                    raise RuntimeError(f"Kafka consumer of group {self.group!r}: {error.str()}")
                if error.code() != last_error:  # e.g. the topic does not exist yet: said once, not per poll
                    log.warning("Kafka consumer of group %r: %s", self.group, error.str())
                    last_error = error.code()
                continue
            last_error = None
            topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
            yield Record(topic, partition, offset, message.value()), KafkaBrokerPayload(topic, partition, offset)

    async def aclose(self) -> None:
        """Close the consumer after the poll in flight (best effort: what was not committed is read again)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._thread, consumer.close)
            except Exception:
                log.warning("closing the Kafka consumer of group %r failed", self.group, exc_info=True)
        self._thread.shutdown(wait=False)


class KafkaInTrigger(BaseEventTrigger):
    """Fires one event per record of `topic` that passes `filter` and is a valid conf for the workflow.

    Event payload: {"topic", "partition", "offset", "run_id", "conf"}. Runs only through the triggerer's
    shared-stream manager (ack mode): see the module docstring for the delivery guarantee.

    :param workflow: the workflow (DAG id) the records start.
    :param topic: the topic to read.
    :param group: the consumer group whose committed offsets mark records already turned into events.
    :param start: where a new group starts: `latest` or `earliest`.
    :param filter: top-level field -> required value (a list: allowed values).
    :param max_bytes: the largest record value accepted.
    :param params: the workflow's params, as spec dicts (kafka_workflows.spec.model.ParamSpec).
    :param kafka_config_id: the Kafka provider's connection.
    """

    def __init__(self, *, workflow: str, topic: str, group: str, start: str = "latest",
                 filter: Mapping[str, Any] | None = None, max_bytes: int = 65_536,
                 params: Mapping[str, Mapping[str, Any]] | None = None, kafka_config_id: str = "kafka_default",
                 poll_timeout: float = 1.0) -> None:
        super().__init__()
        self.workflow = workflow
        self.topic = topic
        self.group = group
        self.start = start
        self.filter = dict(filter or {})
        self.max_bytes = max_bytes
        self.params = {name: dict(p) for name, p in (params or {}).items()}
        self.kafka_config_id = kafka_config_id
        self.poll_timeout = poll_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"workflow": self.workflow, "topic": self.topic, "group": self.group, "start": self.start,
                           "filter": self.filter, "max_bytes": self.max_bytes, "params": self.params,
                           "kafka_config_id": self.kafka_config_id, "poll_timeout": self.poll_timeout}

    def shared_stream_key(self) -> Hashable:
        """One consumer per group: two watchers of one workflow never split its partitions."""
        return "kafka-workflows-in", self.topic, self.group, self.kafka_config_id

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> KafkaInProducer:
        return KafkaInProducer(topic=kwargs["topic"], group=kwargs["group"], start=kwargs.get("start", "latest"),
                               kafka_config_id=kwargs.get("kafka_config_id", "kafka_default"),
                               poll_timeout=kwargs.get("poll_timeout", 1.0))

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        check = self._param_check()
        async for record in shared_stream:
            at = where(record.topic, record.partition, record.offset)
            try:
                conf = record_conf(record.value, at, max_bytes=self.max_bytes, filter=self.filter)
                if conf is None:
                    continue  # passed over by the filter: resolves (and commits) without an event
                check(conf, at)
            except RecordRefused as refused:
                self.log.warning("%s (skipped: it starts no run of %s)", refused, self.workflow)
                reject_shared_stream_event()
                continue
            yield TriggerEvent({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                                "run_id": run_id(record.topic, record.partition, record.offset), "conf": conf})

    def _param_check(self) -> Any:
        """conf, where -> None, raising RecordRefused naming the param a conf does not fit (Airflow's
        Param validation, the one the trigger form and the REST API apply; its message is not kept,
        it may quote the value)."""
        from airflow.sdk.definitions.param import Param
        from airflow.sdk.exceptions import ParamValidationError

        from kafka_workflows.spec.model import ParamSpec
        from kafka_workflows_airflow.factory import param_of

        params: dict[str, Param] = {name: param_of(ParamSpec.model_validate(spec, strict=False))
                                    for name, spec in self.params.items()}

        def check(conf: Mapping[str, Any], at: str) -> None:
            for name, param in params.items():
                try:
                    param.resolve(conf[name]) if name in conf else param.resolve()
                except (ParamValidationError, ValueError, TypeError):
                    missing = name not in conf
                    raise RecordRefused(f"{at}: field {name!r} " + (
                        "is missing (the workflow's param has no default)" if missing else
                        "does not fit the workflow's param (type, format, enum or bounds)")) from None
        return check

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Not used: the triggerer runs this trigger through its shared-stream manager, the only path that
        commits offsets once events are persisted."""
        raise NotImplementedError("KafkaInTrigger runs only through the triggerer's shared-stream manager")
        yield  # pragma: no cover - an async generator
