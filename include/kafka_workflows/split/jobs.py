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
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.eos.processor import TransactionAbortedError, TransactionFatalError
from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.errors import is_fatal
from kafka_workflows.kafka.transactional import TransactionalProducer
from kafka_workflows.messages import encode_value
from kafka_workflows.store.client import StoreClient
from kafka_workflows.store.commands import init_command
from kafka_workflows.store.errors import CommandError
from kafka_workflows.store.limits import MAX_TOTAL
from kafka_workflows.store.topics import ensure_store_topics

log = logging.getLogger(__name__)

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


def produce_jobs(config: Mapping[str, Any], transactional_id: str, jobs_topic: str, request_id: str,
                 jobs: Iterable[tuple[JobKey, Any]], store_name: str, total: int | None = None, *,
                 headers: Mapping[str, object] | None = None, workflow: str | None = None,
                 meta: Mapping[str, Any] | None = None, topic_partitions: int = 3,
                 transaction_timeout_ms: int = 300_000, registered_timeout: float = 60.0,
                 producer_overrides: Mapping[str, Any] | None = None) -> ProduceJobsResult:
    """Produce `jobs` (key, value) to `jobs_topic` plus `init(total)` of `request_id` in one transaction.

    A value that is `bytes` is sent as is, anything else as JSON. Every job carries the headers
    kw-request-id, kw-workflow (when given), kw-attempt=1 and kw-job-index (0-based), plus `headers`.
    The init command carries the W3C trace headers of `headers` (traceparent, tracestate) too.
    """
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise JobsError(f"request {request_id!r}: total must be an integer >= 0, got {total!r}")
    try:  # the store's limits (store/limits.py), checked before anything is produced
        init_command(store_name, request_id, total or 0, meta)
    except CommandError as exc:
        raise JobsError(f"request of store {store_name!r} refused before producing: "
                        f"{str(exc).split(': ', 1)[-1]}") from None
    ensure_topics(config, [TopicSpec(jobs_topic, topic_partitions)])
    ensure_store_topics(config, store_name, topic_partitions)
    per_partition: dict[int, int] = {}

    def count_delivered(err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is None and msg.topic() == jobs_topic:
            per_partition[msg.partition()] = per_partition.get(msg.partition(), 0) + 1

    def refuse_recreate(reason: str) -> None:  # a task attempt does not outlive a fatal error: it fails
        raise TransactionFatalError(f"request {request_id!r}: transactional.id {transactional_id!r} hit a "
                                    f"fatal error: {reason}")

    producer = TransactionalProducer(config, transactional_id, transaction_timeout_ms=transaction_timeout_ms,
                                     linger_ms=20, overrides=producer_overrides, on_delivery=count_delivered,
                                     on_recreate=refuse_recreate)
    try:
        try:
            # Fences an earlier attempt with this transactional.id and aborts its open transaction.
            producer.start(init_timeout=60)
        except KafkaException as exc:
            raise TransactionFatalError(f"init_transactions for transactional.id {transactional_id!r} "
                                        f"failed: {exc}") from exc
        existing = StoreClient(config, store_name).registered(request_id, timeout=registered_timeout)
        if existing is not None:
            log.info("request %r is already registered in store %r (total=%s); producing nothing",
                     request_id, store_name, existing.get("total"))
            return ProduceJobsResult(request_id, transactional_id, 0, existing.get("total"), True, existing)

        producer.begin()
        base_headers = {**(headers or {}), h.REQUEST_ID: request_id, h.WORKFLOW: workflow, h.ATTEMPT: 1}
        count = 0
        try:
            for key, value in jobs:
                if count >= MAX_TOTAL:
                    raise JobsError(f"request {request_id!r}: more than {MAX_TOTAL:,} jobs, the most a store "
                                    "request may count (store max_total); nothing was produced")
                payload = value if isinstance(value, bytes) else encode_value(value)
                producer.produce(jobs_topic, payload, key, {**base_headers, h.JOB_INDEX: count})
                count += 1
                if count % 1000 == 0:
                    producer.poll(0)
            if total is not None and count != total:
                raise JobsError(f"request {request_id!r}: the jobs iterator yielded {count} job(s) but "
                                f"total={total} was declared; nothing was produced")
            final_total = count if total is None else total
            command = init_command(store_name, request_id, final_total, meta)
            trace = {k: v for k, v in (headers or {}).items() if k in (h.TRACEPARENT, h.TRACESTATE)}
            producer.produce(command.topic, command.value, command.key,
                             {h.REQUEST_ID: request_id, h.WORKFLOW: workflow, **trace})
            producer.commit(timeout=transaction_timeout_ms / 1000)
        except KafkaException as exc:
            detail = producer.failure_detail(exc)
            if is_fatal(exc):
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


def _abort(producer: TransactionalProducer, request_id: str) -> None:
    try:
        producer.abort(timeout=60)
        log.warning("request %r: transaction aborted; nothing was produced", request_id)
    except (KafkaException, TransactionFatalError) as exc:
        # A fatal producer cannot abort; the next attempt's init_transactions will.
        log.error("request %r: abort_transaction failed (%s); the next attempt with the same "
                  "transactional.id aborts it", request_id, exc)
