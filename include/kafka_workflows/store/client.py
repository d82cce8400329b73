"""The store's client: send commands to store `S` and read its values (point reads, waits, registration)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from kafka_workflows import headers as h
from kafka_workflows.errors import MessageDecodeError
from kafka_workflows.kafka.admin import end_offsets
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.errors import COORDINATOR_NOT_READY, kafka_error
from kafka_workflows.kafka.producer import Delivered, RequestProducer
from kafka_workflows.kafka.reader import partition_reader, read_partition
from kafka_workflows.store.commands import (
    ABORT,
    INIT,
    PROGRESS,
    CommandMessage,
    complete_command,
    fail_command,
    init_command,
    parse_command,
)
from kafka_workflows.store.errors import RequestIdError, StoreError, StoreTimeoutError
from kafka_workflows.store.limits import check_request_id
from kafka_workflows.store.partitioning import partition_for
from kafka_workflows.store.state import TERMINAL_STATUSES, RequestState, corrupt_value, decode_store_value
from kafka_workflows.store.topics import check_name, commands_topic, default_group, events_topic, store_topic


def _store_value(request_id: str, msg: KafkaMessage) -> dict[str, Any] | None:
    """The value of `msg`; one that is not a store value reads as `corrupt` (anyone can write to S.store)."""
    try:
        value = decode_store_value(msg)
    except (MessageDecodeError, StoreError) as exc:
        return corrupt_value(request_id, str(exc))
    if value is not None:
        try:
            RequestState.from_value(value)  # what the processor would restore, or why not
        except StoreError as exc:
            return corrupt_value(request_id, f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}")
    return value


@dataclass
class SplitState:
    """What a (retried) split needs to know of its request: see `StoreClient.split_state`.

    `registered`: the store value with a total, or the pending init (`status: "init-pending"`), or
    None. `jobs`, `rows`: the split's progress committed so far (jobs 0..jobs-1 are on the jobs
    topic). `aborted`: why the request will never complete (an abort, or a corrupt value), or None.
    """

    registered: dict[str, Any] | None
    jobs: int = 0
    rows: int = 0
    aborted: str | None = None


def checked_request_id(request_id: object) -> str:
    """`request_id` when it is one the store accepts; else RequestIdError saying why (never quoting it)."""
    problem = check_request_id(request_id)
    if problem is not None:
        raise RequestIdError(f"not a valid store request id: {problem}")
    assert isinstance(request_id, str)
    return request_id


class StoreClient:
    """Send commands to store `name` and read its values.

    Commands go through an idempotent `RequestProducer` with the murmur2 partitioner; each call
    flushes and raises `DeliveryError` unless `flush=False` (then call `flush()` yourself).
    Every call refuses an empty or oversized request id (`RequestIdError`, a StoreError and a
    ValueError) before anything is sent or read: the store's limits are store/limits.py's.
    """

    def __init__(self, config: Mapping[str, Any], name: str, *, group: str | None = None) -> None:
        check_name(name)
        self.config = dict(config)
        self.name = name
        self.group = group or default_group(name)
        self._producer: RequestProducer | None = None
        self._admin: AdminClient | None = None
        self._partitions: dict[str, int] = {}

    # commands
    def _send(self, command: CommandMessage, flush: bool, trace: Mapping[str, str] | None = None) -> None:
        if self._producer is None:
            self._producer = RequestProducer(self.config, partitioner="murmur2_random")
        headers = {h.REQUEST_ID: command.key} if trace is None else {h.REQUEST_ID: command.key, **trace}
        self._producer.send(command.topic, command.value, key=command.key, headers=headers, raw=True)
        if flush:
            self._producer.flush()

    def flush(self, timeout: float = 60.0) -> list[Delivered]:
        return self._producer.flush(timeout) if self._producer is not None else []

    def init(self, request_id: str, total: int, meta: Mapping[str, Any] | None = None, *, flush: bool = True) -> None:
        checked_request_id(request_id)
        self._send(init_command(self.name, request_id, total, meta), flush)

    def complete(self, request_id: str, job: int, *, flush: bool = True,
                 trace: Mapping[str, str] | None = None) -> None:
        """`trace`: the W3C trace headers (traceparent, tracestate) the command carries."""
        checked_request_id(request_id)
        self._send(complete_command(self.name, request_id, job), flush, trace)

    def fail(self, request_id: str, job: int, reason: str, *, flush: bool = True,
             trace: Mapping[str, str] | None = None) -> None:
        checked_request_id(request_id)
        self._send(fail_command(self.name, request_id, job, reason), flush, trace)

    def init_command(self, request_id: str, total: int, meta: Mapping[str, Any] | None = None) -> CommandMessage:
        checked_request_id(request_id)
        return init_command(self.name, request_id, total, meta)

    def complete_command(self, request_id: str, job: int) -> CommandMessage:
        checked_request_id(request_id)
        return complete_command(self.name, request_id, job)

    def fail_command(self, request_id: str, job: int, reason: str) -> CommandMessage:
        checked_request_id(request_id)
        return fail_command(self.name, request_id, job, reason)

    # reads
    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(client_config(self.config))
        return self._admin

    def partition_of(self, request_id: str) -> int:
        """The partition of S.commands and S.store that holds `request_id`."""
        checked_request_id(request_id)
        topic = store_topic(self.name)
        if topic not in self._partitions:
            meta = self._admin_client().list_topics(topic, timeout=30).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise StoreError(f"store {self.name!r}: topic {topic} does not exist (is the store processor "
                                 "or ensure_store_topics run?)")
            self._partitions[topic] = len(meta.partitions)
        return partition_for(request_id, self._partitions[topic])

    def get(self, request_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The latest committed value of `request_id` (read_committed, to the high watermark), or None."""
        checked_request_id(request_id)
        return self._latest(request_id, self.partition_of(request_id), timeout)

    def _latest(self, request_id: str, p: int, timeout: float) -> dict[str, Any] | None:
        found: list[dict[str, Any] | None] = [None]
        wanted = request_id.encode()

        def keep(msg: KafkaMessage) -> None:
            if msg.key() == wanted:
                found[0] = _store_value(request_id, msg)

        reader = partition_reader(self.config)
        try:
            read_partition(reader, self._admin_client(), store_topic(self.name), p, keep, timeout=timeout,
                           timeout_error=StoreTimeoutError, interrupted_error=StoreError)
        finally:
            reader.close()
        return found[0]

    def wait(self, request_id: str, timeout: float, poll: float = 0.5) -> dict[str, Any] | None:
        """Block until `request_id` is terminal; its final value, or None after `timeout` seconds.

        No gap and no repeated scans: it notes the end of the request's S.events partition, reads
        the store once (a request that finished earlier is found there), then tails S.events from
        the noted offset for the request's one completion event.
        """
        checked_request_id(request_id)
        deadline = time.monotonic() + timeout
        topic = events_topic(self.name)
        meta = self._admin_client().list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise StoreError(f"store {self.name!r}: topic {topic} does not exist")
        p = partition_for(request_id, len(meta.partitions))
        start = end_offsets(self._admin_client(), topic, [p])[p]
        value = self.get(request_id, timeout=max(1.0, deadline - time.monotonic()))
        if value is not None and value["status"] in TERMINAL_STATUSES:
            return value
        wanted = request_id.encode()
        reader = partition_reader(self.config)
        reader.list_topics(topic, timeout=10)  # the leader known before assign(): see read_partition
        reader.assign([TopicPartition(topic, p, start)])
        try:
            while time.monotonic() < deadline:
                for msg in reader.consume(num_messages=500, timeout=min(poll, max(0.0, deadline - time.monotonic()))):
                    if msg.error() is None and msg.key() == wanted:
                        return _store_value(request_id, msg)
        finally:
            reader.close()
        return None

    def registered(self, request_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The init of `request_id` if the store knows it, whether or not the processor has applied it yet.

        Returns the store value when it has a total, else the pending init command (as a dict with
        `status: "init-pending"`), else None. Exact, even right after a producer committed an init
        and with the processor down: see `split_state`.
        """
        return self.split_state(request_id, timeout).registered

    def split_state(self, request_id: str, timeout: float = 30.0) -> SplitState:
        """What the store knows of the split of `request_id`, whether or not the processor applied it yet.

        Exact, even right after a producer committed and with the processor down: it reads the
        processor group's committed offset of the request's S.commands partition (stable under
        KIP-447), then S.store to its high watermark, then the commands the processor has not applied
        yet, looking for an init, the split's progress and an abort (read_committed throughout).
        """
        p = self.partition_of(request_id)
        commands = commands_topic(self.name)
        offsets = Consumer(client_config(self.config, **{
            "group.id": self.group, "enable.auto.commit": False, "isolation.level": "read_committed"}))
        deadline = time.monotonic() + timeout
        try:
            while True:  # a new group's coordinator may still be loading: NOT_COORDINATOR is retriable
                try:
                    committed = offsets.committed([TopicPartition(commands, p)], timeout=timeout)[0].offset
                    break
                except KafkaException as exc:
                    err = kafka_error(exc)
                    if err is None or not (err.retriable() or err.code() in COORDINATOR_NOT_READY) \
                            or time.monotonic() > deadline:
                        raise StoreError(f"store {self.name!r}: cannot read the committed offset of group "
                                         f"{self.group!r} on {commands}[{p}]: {exc}") from exc
                    time.sleep(0.2)
        finally:
            offsets.close()
        value = self._latest(request_id, p, timeout)
        if value is not None and value.get("total") is not None:
            return SplitState(value)
        state = SplitState(None)
        if value is not None:
            split = value.get("split")
            if isinstance(split, dict):
                state.jobs, state.rows = int(split.get("jobs") or 0), int(split.get("rows") or 0)
            if value.get("status") in TERMINAL_STATUSES:  # aborted (or corrupt): nothing will seal it
                state.aborted = str(value.get("error") or value.get("status"))
        wanted = request_id.encode()

        def look(msg: KafkaMessage) -> None:
            if msg.key() != wanted or state.registered is not None:
                return
            try:
                cmd = parse_command(request_id, msg.value(), f"{commands}[{p}]@{msg.offset()}")
            except MessageDecodeError:
                return
            if state.aborted is not None:
                return  # terminal: the processor ignores what follows
            if cmd.op == INIT:
                state.registered = {"request_id": request_id, "total": cmd.total, "meta": cmd.meta,
                                    "status": "init-pending", "offset": msg.offset()}
            elif cmd.op == PROGRESS and cmd.jobs is not None and cmd.rows is not None:
                state.jobs, state.rows = max((state.jobs, state.rows), (cmd.jobs, cmd.rows))
            elif cmd.op == ABORT:
                state.aborted = cmd.reason or "the split gave up"

        reader = partition_reader(self.config)
        try:
            read_partition(reader, self._admin_client(), commands, p, look,
                           start=committed if committed >= 0 else OFFSET_BEGINNING, timeout=timeout,
                           timeout_error=StoreTimeoutError, interrupted_error=StoreError)
        finally:
            reader.close()
        return state

    def close(self) -> None:
        """Flush what was sent (a failed command raises) and destroy the producer either way."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush()
            finally:
                producer.close()
