"""Split a request into jobs: job messages plus the store's init(total), in one or in many transactions.

Two modes, chosen by the caller:

- **all-or-nothing** (`chunk_jobs=None`, the default here): every job and the init in ONE
  transaction; an exception from the jobs iterator (a bad CSV row) aborts it and nothing is produced.
- **pipelined** (`chunk_jobs=N`, what SplitToJobsOperator does by default): a transaction per chunk
  of N jobs or per `chunk_seconds` (whichever comes first, checked as each job is produced; an
  attempt's first chunk within `FIRST_CHUNK_SECONDS`, since nothing is handled before it), so
  workers see and handle the first jobs while the iterator is still reading. Each chunk's
  transaction also carries the store command `progress(jobs, rows)` (jobs 0..jobs-1 committed,
  `rows_read()` rows read); `init(total)` travels only in the LAST transaction, after every chunk
  committed, so the store keeps the request `pending` (completions that arrive before are kept, and
  counted by job index) and nothing waiting on it can finish before the total is sealed.

The transactional.id is derived by the caller from the task instance (dag_id, task_id, run_id,
map_index; see `jobs_transactional_id`), so it is the same for every attempt of that task:

- `init_transactions` of a retried attempt fences the previous attempt (a zombie still running
  somewhere) and aborts its open transaction; read_committed consumers never see aborted jobs.
- After that, the store is asked what it knows (`StoreClient.split_state`: the store value plus the
  commands the processor has not applied yet). Registered (an init committed): nothing is
  produced. Progress committed by an earlier attempt (`jobs=k`): the iterator, which must be
  deterministic, is read again and its first k jobs are skipped, not produced again; when
  `rows_read` is given, the rows read at job k must equal the recorded rows, else the source changed
  and the split fails (`JobsError`). Aborted: `RequestAbortedError`, nothing is produced.

A failure after some chunks committed leaves them committed: a retry goes on from there. When the
failure is final (`give_up(exc)` says so: a malformed file, a job too large, not a network error that
a retry may outlive) the split ends the request with the store command `abort(reason)` in one last
transaction: the store marks it `aborted` (terminal), so a waiting DAG fails with the reason instead
of waiting for a total that will never come. Jobs already committed stay and are handled by the
workers: a pipelined split is all-or-nothing per chunk, not per file.

Jobs are streamed from an iterator (never held in memory as a list); `total` defaults to the
number produced. Errors follow librdkafka's rules: retriable ones are retried (commit included),
an abortable one aborts and raises `TransactionAbortedError` so the task retries, a fatal one
raises `TransactionFatalError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
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
from kafka_workflows.store.commands import CommandMessage, abort_command, init_command, progress_command
from kafka_workflows.store.errors import CommandError
from kafka_workflows.store.limits import MAX_TOTAL
from kafka_workflows.store.topics import ensure_store_topics

log = logging.getLogger(__name__)

JobKey = str | bytes | None


class JobsError(KafkaWorkflowsError, ValueError):
    """The jobs do not match what was declared (e.g. the iterator yielded a different count than total)."""


class RequestAbortedError(JobsError):
    """An earlier attempt ended the request `aborted` (or its store value is corrupt): it will never complete."""


DEFAULT_CHUNK_JOBS = 500  # jobs per transaction of a pipelined split (SplitToJobsOperator's default)
DEFAULT_CHUNK_SECONDS = 1.0  # ... or this long, whichever first
FIRST_CHUNK_SECONDS = 0.2  # an attempt's first chunk commits within this (the workers wait for it)


@dataclass(frozen=True)
class ProduceJobsResult:
    request_id: str
    transactional_id: str
    produced: int  # job messages committed by this call (0 when already registered)
    total: int | None  # the request's total (the existing one when already registered)
    already_registered: bool
    existing: dict[str, Any] | None = None  # the store value (or pending init) found when already registered
    partitions: dict[int, int] | None = None  # job messages per partition of the jobs topic
    skipped: int = 0  # jobs an earlier attempt had committed: read again, not produced again
    transactions: int = 0  # transactions this call committed


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
                 producer_overrides: Mapping[str, Any] | None = None, chunk_jobs: int | None = None,
                 chunk_seconds: float = DEFAULT_CHUNK_SECONDS, rows_read: Callable[[], int] | None = None,
                 give_up: Callable[[BaseException], bool] | None = None) -> ProduceJobsResult:
    """Produce `jobs` (key, value) to `jobs_topic` plus `init(total)` of `request_id` (see the module docstring).

    A value that is `bytes` is sent as is, anything else as JSON. Every job carries the headers
    kw-request-id, kw-workflow (when given), kw-attempt=1 and kw-job-index (0-based), plus `headers`.
    `chunk_jobs=None`: one transaction; else a transaction per `chunk_jobs` jobs or `chunk_seconds`.
    `rows_read()`: the rows the iterator has read so far (recorded with each chunk's progress).
    `give_up(exc)`: whether an exception of the iterator is final (the request is then aborted).
    The store commands (progress, init, abort) carry the W3C trace headers of `headers` (traceparent,
    tracestate) too.
    """
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise JobsError(f"request {request_id!r}: total must be an integer >= 0, got {total!r}")
    if chunk_jobs is not None and (isinstance(chunk_jobs, bool) or not isinstance(chunk_jobs, int) or chunk_jobs < 1):
        raise JobsError(f"request {request_id!r}: chunk_jobs must be an integer >= 1 (or None), got {chunk_jobs!r}")
    if not chunk_seconds > 0:
        raise JobsError(f"request {request_id!r}: chunk_seconds must be > 0, got {chunk_seconds!r}")
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
        known = StoreClient(config, store_name).split_state(request_id, timeout=registered_timeout)
        if known.registered is not None:
            existing = known.registered
            log.info("request %r is already registered in store %r (total=%s); producing nothing",
                     request_id, store_name, existing.get("total"))
            return ProduceJobsResult(request_id, transactional_id, 0, existing.get("total"), True, existing)
        if known.aborted is not None:
            raise RequestAbortedError(f"request {request_id!r} of store {store_name!r} was aborted by an earlier "
                                      f"attempt ({known.aborted[:300]}); it will not complete: run it again as a "
                                      "new request")
        trace = {k: v for k, v in (headers or {}).items() if k in (h.TRACEPARENT, h.TRACESTATE)}
        split = _Split(producer, store_name, request_id, workflow, chunk_jobs, chunk_seconds, rows_read, trace)
        skip = split.committed = known.jobs
        if skip:
            log.info("request %r: an earlier attempt committed jobs 0..%d (%d rows read); reading past them",
                     request_id, skip - 1, known.rows)
        base_headers = {**(headers or {}), h.REQUEST_ID: request_id, h.WORKFLOW: workflow, h.ATTEMPT: 1}
        count = 0
        try:
            for key, value in jobs:
                if count >= MAX_TOTAL:
                    raise JobsError(f"request {request_id!r}: more than {MAX_TOTAL:,} jobs, the most a store "
                                    "request may count (store max_total)")
                if total is not None and count >= total:
                    raise JobsError(f"request {request_id!r}: the jobs iterator yielded more than the "
                                    f"total={total} declared")
                count += 1
                if count <= skip:  # committed by an earlier attempt
                    if count == skip and rows_read is not None and rows_read() != known.rows:
                        raise JobsError(f"request {request_id!r}: job {skip - 1} ends at row {rows_read()} but an "
                                        f"earlier attempt committed it at row {known.rows}: the source changed "
                                        "between attempts")
                    continue
                payload = value if isinstance(value, bytes) else encode_value(value)
                split.produce(jobs_topic, payload, key, {**base_headers, h.JOB_INDEX: count - 1}, count)
            if count < skip:
                raise JobsError(f"request {request_id!r}: the jobs iterator yielded {count} job(s) but an earlier "
                                f"attempt committed {skip}: the source changed between attempts")
            if total is not None and count != total:
                raise JobsError(f"request {request_id!r}: the jobs iterator yielded {count} job(s) but "
                                f"total={total} was declared")
            final_total = count if total is None else total
            split.seal(init_command(store_name, request_id, final_total, meta), count)
        except KafkaException as exc:
            detail = producer.failure_detail(exc)
            if is_fatal(exc):
                raise TransactionFatalError(f"request {request_id!r}: transactional.id {transactional_id!r} hit a "
                                            f"fatal error: {detail}") from exc
            split.abort_transaction()
            raise TransactionAbortedError(f"request {request_id!r}: the transaction of {transactional_id!r} was "
                                          f"aborted ({detail}); {_kept(split.committed)}, retry the task") from exc
        except BaseException as exc:
            split.abort_transaction()
            if split.committed and isinstance(exc, Exception) and give_up is not None and give_up(exc):
                split.abort_request(exc)
            raise
        log.info("request %r: committed %d job(s) to %s (%d skipped, committed earlier) and init(total=%d) to "
                 "store %r in %d transaction(s)", request_id, count - skip, jobs_topic, skip, final_total,
                 store_name, split.transactions)
        return ProduceJobsResult(request_id, transactional_id, count - skip, final_total, False,
                                 partitions=dict(sorted(per_partition.items())), skipped=skip,
                                 transactions=split.transactions)
    finally:
        producer.close()


class _Split:
    """The open transaction of a split: jobs go in, a chunk commits with its progress, the last with init."""

    def __init__(self, producer: TransactionalProducer, store: str, request_id: str, workflow: str | None,
                 chunk_jobs: int | None, chunk_seconds: float, rows_read: Callable[[], int] | None,
                 trace: Mapping[str, object]) -> None:
        self.producer, self.store, self.request_id, self.workflow = producer, store, request_id, workflow
        self.headers = {h.REQUEST_ID: request_id, h.WORKFLOW: workflow, **trace}  # every store command's
        self.chunk_jobs, self.chunk_seconds, self.rows_read = chunk_jobs, chunk_seconds, rows_read
        self.open = False
        self.started = 0.0
        self.in_chunk = 0
        self.committed = 0  # jobs 0..committed-1 are committed (by this attempt or, up to the skip, earlier ones)
        self.transactions = 0

    def _begin(self) -> None:
        if not self.open:
            self.producer.begin()
            self.open, self.started, self.in_chunk = True, time.monotonic(), 0

    def _command(self, command: CommandMessage) -> None:
        self.producer.produce(command.topic, command.value, command.key, self.headers)

    def _commit(self, count: int, command: CommandMessage | None) -> None:
        self._begin()
        if self.chunk_jobs is not None:  # the progress a retry resumes from, exact: it commits with the jobs
            rows = self.rows_read() if self.rows_read is not None else count
            self._command(progress_command(self.store, self.request_id, count, rows))
        if command is not None:
            self._command(command)
        self.producer.commit(timeout=self.producer.transaction_timeout_ms / 1000)
        self.open, self.committed = False, count
        self.transactions += 1

    def produce(self, topic: str, payload: bytes, key: JobKey, headers: Mapping[str, object], count: int) -> None:
        """Job `count - 1`; commits the chunk when it is full or old enough (pipelined only)."""
        self._begin()
        self.producer.produce(topic, payload, key, headers)
        self.in_chunk += 1
        if self.in_chunk % 1000 == 0:
            self.producer.poll(0)
        # The first chunk is committed sooner: the workers have nothing to do until it is.
        seconds = min(self.chunk_seconds, FIRST_CHUNK_SECONDS) if self.transactions == 0 else self.chunk_seconds
        if self.chunk_jobs is not None and (self.in_chunk >= self.chunk_jobs
                                            or time.monotonic() - self.started >= seconds):
            self._commit(count, None)
            log.debug("request %r: jobs 0..%d committed", self.request_id, count - 1)

    def seal(self, init: CommandMessage, count: int) -> None:
        """The last transaction: the rest of the jobs, the progress and init(total)."""
        self._commit(count, init)

    def abort_transaction(self) -> None:
        """Abort the open transaction, if one is open (what earlier chunks committed stays)."""
        if self.open:
            self.open = False
            _abort(self.producer, self.request_id, self.committed)

    def abort_request(self, exc: BaseException) -> None:
        """End the request `aborted` in one transaction of its own; a failure here is logged, not raised
        (the task fails with `exc` either way, and the await waits until its timeout)."""
        reason = f"the split failed for good after committing jobs 0..{self.committed - 1}: {type(exc).__name__}: " \
            f"{str(exc)[:300]}" if self.committed else f"the split failed for good: {type(exc).__name__}: " \
            f"{str(exc)[:300]}"
        try:
            self.producer.begin()
            self._command(abort_command(self.store, self.request_id, reason))
            self.producer.commit(timeout=60)
            log.error("request %r: aborted in store %r (%s)", self.request_id, self.store, reason)
        except (KafkaException, TransactionFatalError) as failure:
            log.error("request %r: could not write its abort to store %r (%s); it stays pending", self.request_id,
                      self.store, failure)


def _kept(committed: int) -> str:
    return f"jobs 0..{committed - 1} stay committed" if committed else "no job was produced"


def _abort(producer: TransactionalProducer, request_id: str, committed: int) -> None:
    try:
        producer.abort(timeout=60)
        log.warning("request %r: transaction aborted; %s", request_id, _kept(committed))
    except (KafkaException, TransactionFatalError) as exc:
        # A fatal producer cannot abort; the next attempt's init_transactions will.
        log.error("request %r: abort_transaction failed (%s); the next attempt with the same "
                  "transactional.id aborts it", request_id, exc)
