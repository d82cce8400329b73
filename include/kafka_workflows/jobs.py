"""Split a request into jobs, all-or-nothing: every job message and the store's init(total) in ONE transaction.

The transactional.id is derived by the caller from the task instance (dag_id, task_id, run_id,
map_index; see `jobs_transactional_id`), so it is the same for every attempt of that task:

- `init_transactions` of a retried attempt fences the previous attempt (a zombie still running
  somewhere) and aborts its open transaction; read_committed consumers never see aborted jobs.
- After that, the store is asked whether the request is already registered (its init applied, or
  committed but not applied yet). If it is, an earlier attempt committed: nothing is produced.

Jobs are streamed from an iterator (never held in memory as a list); `total` defaults to the
number produced. Errors follow librdkafka's rules: retriable ones are retried (commit included),
an abortable one aborts and raises `TransactionAbortedError` so the task retries, a fatal one
raises `TransactionFatalError`. An exception from the jobs iterator (a bad CSV row) aborts the
transaction and propagates: nothing is half-produced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.config import client_config
from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.messages import encode_value
from kafka_workflows.store import StoreClient, ensure_store_topics, init_command
from kafka_workflows.topics import TopicSpec, ensure_topics
from kafka_workflows.transactions import TransactionAbortedError, TransactionFatalError, retry_retriable

log = logging.getLogger(__name__)

T = TypeVar("T")
JobKey = str | bytes | None


class JobsError(KafkaWorkflowsError, ValueError):
    """The jobs do not match what was declared (e.g. the iterator yielded a different count than total)."""


@dataclass(frozen=True)
class ProduceJobsResult:
    request_id: str
    transactional_id: str
    produced: int  # job messages committed by this call (0 when already registered)
    total: int | None  # the request's total (the existing one when already registered)
    already_registered: bool
    existing: dict[str, Any] | None = None  # the store value (or pending init) found when already registered
    partitions: dict[int, int] | None = None  # job messages per partition of the jobs topic


def jobs_transactional_id(dag_id: str, task_id: str, run_id: str, map_index: int = -1,
                          prefix: str = "kw-jobs") -> str:
    """Stable across the retries of one task instance, distinct across task instances."""
    base = f"{prefix}.{dag_id}.{task_id}.{run_id}"
    return base if map_index < 0 else f"{base}.{map_index}"


def _error(exc: KafkaException) -> KafkaError | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None


def produce_jobs(config: Mapping[str, Any], transactional_id: str, jobs_topic: str, request_id: str,
                 jobs: Iterable[tuple[JobKey, Any]], store_name: str, total: int | None = None, *,
                 headers: Mapping[str, object] | None = None, workflow: str | None = None,
                 meta: Mapping[str, Any] | None = None, topic_partitions: int = 3,
                 transaction_timeout_ms: int = 300_000, registered_timeout: float = 60.0,
                 producer_overrides: Mapping[str, Any] | None = None) -> ProduceJobsResult:
    """Produce `jobs` (key, value) to `jobs_topic` plus `init(total)` of `request_id` in one transaction.

    A value that is `bytes` is sent as is, anything else as JSON. Every job carries the headers
    kw-request-id, kw-workflow (when given), kw-attempt=1 and kw-job-index (0-based), plus `headers`.
    """
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise JobsError(f"request {request_id!r}: total must be an integer >= 0, got {total!r}")
    ensure_topics(config, [TopicSpec(jobs_topic, topic_partitions)])
    ensure_store_topics(config, store_name, topic_partitions)
    timeout = transaction_timeout_ms / 1000
    producer = Producer(client_config(config, **{
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "partitioner": "murmur2_random",
        "transaction.timeout.ms": transaction_timeout_ms,
        **(producer_overrides or {}),
    }))
    failures: list[str] = []
    per_partition: dict[int, int] = {}

    def on_delivery(err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}: {err.str()}")
        elif msg.topic() == jobs_topic:
            per_partition[msg.partition()] = per_partition.get(msg.partition(), 0) + 1

    def produce(topic: str, value: bytes, key: JobKey, message_headers: Mapping[str, object]) -> int:
        while True:
            try:
                producer.produce(topic, value, key=key.encode() if isinstance(key, str) else key,
                                 headers=h.encode(message_headers), on_delivery=on_delivery)
                return 1
            except BufferError:
                producer.poll(0.05)

    try:
        try:
            # Fences an earlier attempt with this transactional.id and aborts its open transaction.
            retry_retriable(lambda: producer.init_transactions(60), "init_transactions", 120)
        except KafkaException as exc:
            raise TransactionFatalError(f"init_transactions for transactional.id {transactional_id!r} "
                                        f"failed: {exc}") from exc
        existing = StoreClient(config, store_name).registered(request_id, timeout=registered_timeout)
        if existing is not None:
            log.info("request %r is already registered in store %r (total=%s); producing nothing",
                     request_id, store_name, existing.get("total"))
            return ProduceJobsResult(request_id, transactional_id, 0, existing.get("total"), True, existing)

        producer.begin_transaction()
        base_headers = {**(headers or {}), h.REQUEST_ID: request_id, h.WORKFLOW: workflow, h.ATTEMPT: 1}
        count = 0
        try:
            for key, value in jobs:
                payload = value if isinstance(value, bytes) else encode_value(value)
                produce(jobs_topic, payload, key, {**base_headers, h.JOB_INDEX: count})
                count += 1
                if count % 1000 == 0:
                    producer.poll(0)
            if total is not None and count != total:
                raise JobsError(f"request {request_id!r}: the jobs iterator yielded {count} job(s) but "
                                f"total={total} was declared; nothing was produced")
            final_total = count if total is None else total
            command = init_command(store_name, request_id, final_total, meta)
            produce(command.topic, command.value, command.key, {h.REQUEST_ID: request_id, h.WORKFLOW: workflow})
            retry_retriable(lambda: producer.commit_transaction(timeout), "commit_transaction", timeout)
        except KafkaException as exc:
            err = _error(exc)
            detail = (err.str() if err is not None else str(exc)) + (
                f" (delivery failures: {'; '.join(failures[:3])})" if failures else "")
            if err is not None and err.fatal():
                raise TransactionFatalError(f"request {request_id!r}: transactional.id {transactional_id!r} hit a "
                                            f"fatal error: {detail}") from exc
            _abort(producer, request_id)
            raise TransactionAbortedError(f"request {request_id!r}: the transaction of {transactional_id!r} was "
                                          f"aborted ({detail}); no job was produced, retry the task") from exc
        except BaseException:
            _abort(producer, request_id)
            raise
        log.info("request %r: committed %d job(s) to %s and init(total=%d) to store %r", request_id, count,
                 jobs_topic, final_total, store_name)
        return ProduceJobsResult(request_id, transactional_id, count, final_total, False,
                                 partitions=dict(sorted(per_partition.items())))
    finally:
        producer.close()


def _abort(producer: Producer, request_id: str) -> None:
    try:
        retry_retriable(lambda: producer.abort_transaction(60), "abort_transaction", 120)
        log.warning("request %r: transaction aborted; nothing was produced", request_id)
    except KafkaException as exc:
        # A fatal producer cannot abort; the next attempt's init_transactions will.
        log.error("request %r: abort_transaction failed (%s); the next attempt with the same "
                  "transactional.id aborts it", request_id, exc)
