"""Events aggregation, step 1: split a CSV into job messages plus the store's init(total), pipelined in chunks.

The source is opened by `kafka_workflows_airflow.sources` (allow-listed roots, ObjectStoragePath,
guarded http) and parsed by the core as a bounded stream; every job message is checked against
the topic's message size limit before it is produced.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from kafka_workflows.kafka.config import check_reachable
from kafka_workflows.kafka.msgsize import MessageTooLargeError, message_limit
from kafka_workflows.messages import encode_value, request_id_for
from kafka_workflows.observe import tracing
from kafka_workflows.sources.csv_source import (
    BAD_ROW_MODES,
    CsvJobSource,
    CsvSourceError,
    Limits,
    Schema,
    SourceUnreadableError,
    describe_source,
)
from kafka_workflows.split.jobs import (
    DEFAULT_CHUNK_JOBS,
    DEFAULT_CHUNK_SECONDS,
    JobsError,
    jobs_transactional_id,
    produce_jobs,
)
from kafka_workflows.store import StoreClient, StoreError
from kafka_workflows_airflow.hooks import KafkaWorkflowsHook, SchemaRegistryHook
from kafka_workflows_airflow.links import LINKS
from kafka_workflows_airflow.sources import SourcePolicy, open_source, step_roots

SchemaSpec = Schema | Mapping[str, Any] | Sequence[Mapping[str, Any]] | str


class SplitToJobsOperator(BaseOperator):
    """Read `source` (a CSV: an absolute path, a file://, s3://, gs://, ... or http(s):// URL under an
    allowed root, see `kafka_workflows_airflow.sources`), validate it against `schema`, and
    produce one job message per `rows_per_job` valid rows to `topic`, and `init(total)` of store
    `store` once the whole file is read.

    Pipelined (split/jobs.py): the jobs are committed in transactions of `chunk_jobs` jobs or
    `chunk_seconds` seconds, whichever comes first (defaults 500 and 1.0), so workers handle them
    while the file is still being read; each transaction carries the split's progress (the run tab
    shows the rows read), and `init(total)` comes in the last one, so the request cannot complete
    before the split has read the whole file. `chunk_jobs=0` (or None) commits everything in one
    transaction, as does `on_bad_rows="fail"` (nothing is imported when a bad row turns up).

    The transactional.id and the request id derive from (dag_id, task_id, run_id, map_index), so
    a retried attempt fences its predecessor and skips the jobs earlier attempts committed (it reads
    the file again up to there), and a retry after the init was committed produces nothing (it
    reports the committed request, `already_registered=True`). The source is streamed, never loaded
    whole, and must not change between attempts (checked: the rows read at the resume point).

    Bad rows are skipped and reported (`on_bad_rows="skip"`) or fail the task with nothing produced
    (`"fail"`). A missing `source`, a header without a required column, an empty file or a failed
    bad-row check fail the task without retries (retrying cannot fix the input); an unreadable
    source (HTTP 503, a file not there yet) fails it with retries. When such a failure is final
    (not retried: a malformed line mid-file, a job too large, the source unreadable on the last
    try) after some chunks were committed, the request is ended `aborted` in the store, so the
    await fails with the reason instead of waiting; the committed chunks' jobs are still handled.

    XCom: `return_value` is a dict, and each entry is also pushed under its own key (so
    `split.output["request_id"]` works): request_id, store, topic, total_jobs, rows, valid_rows,
    bad_rows, bad_examples, already_registered, source.

    `schema` is a `Schema`, a mapping/list the schema parser accepts, or the dotted path of one
    (e.g. "kw_examples.contacts.SCHEMA").

    Untrusted input: `allowed_sources` adds roots to `[kafka_workflows] allowed_sources`; a source
    elsewhere fails before a byte is read. `source_conn_id` is the Airflow connection of an object
    store. `limits` (max_line_bytes, max_record_bytes, max_columns, max_field_chars) bound the memory
    a file can take. A job message larger than the topic accepts (or `max_message_bytes`) fails the
    task naming the job and its rows, before it is produced. Errors never quote the file.
    """

    template_fields: Sequence[str] = ("source", "topic", "store", "rows_per_job", "on_bad_rows")
    ui_color = "#fdf1e0"
    operator_extra_links = LINKS  # Kafka progress, Kafka group, Dead letters (links.py)

    def __init__(self, *, source: str, topic: str, store: str, schema: SchemaSpec, rows_per_job: int | str = 500,
                 on_bad_rows: str = "skip", max_bad_examples: int = 10, workflow: str | None = None,
                 partitions: int = 3, delimiter: str = ",", source_timeout: float = 60.0,
                 transaction_timeout_ms: int = 300_000, allowed_sources: Sequence[str] | str | None = None,
                 source_conn_id: str | None = None, limits: Mapping[str, int] | None = None,
                 max_message_bytes: int | None = None, chunk_jobs: int | str | None = DEFAULT_CHUNK_JOBS,
                 chunk_seconds: float | str = DEFAULT_CHUNK_SECONDS,
                 kafka_config_id: str = KafkaWorkflowsHook.default_conn_name,
                 value_schema: dict[str, Any] | None = None,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.topic = topic
        self.store = store
        self.schema = schema
        self.rows_per_job = rows_per_job
        self.on_bad_rows = on_bad_rows
        self.max_bad_examples = max_bad_examples
        self.workflow = workflow
        self.partitions = partitions
        self.delimiter = delimiter
        self.source_timeout = source_timeout
        self.transaction_timeout_ms = transaction_timeout_ms
        self.kafka_config_id = kafka_config_id
        self.allowed_sources = allowed_sources
        self.source_conn_id = source_conn_id
        self.limits = dict(limits or {})
        self.max_message_bytes = max_message_bytes
        self.chunk_jobs = chunk_jobs
        self.chunk_seconds = chunk_seconds
        self.value_schema = value_schema  # the jobs topic's schema (schemas/resolve.py `declared`), or None
        self.schema_registry_conn_id = schema_registry_conn_id

    # -- inputs, validated before any I/O ---------------------------------------------------
    def _source(self) -> str:
        source = self.source
        # A param that is not set renders as None natively, as "None" in a string-rendering DAG.
        if source is None or (isinstance(source, str) and source.strip() in ("", "None")):
            raise AirflowFailException(
                f"{self.task_id}: no CSV `source` to split: trigger the DAG with a conf such as "
                '{"source": "https://example.com/contacts.csv"} (a path, file:// or http(s):// URL)')
        if not isinstance(source, str):
            raise AirflowFailException(f"{self.task_id}: `source` must be a path or URL string, "
                                       f"got {type(source).__name__}: {source!r:.100}")
        return source.strip()

    def _rows_per_job(self) -> int:
        value = self.rows_per_job
        try:
            number = int(value) if not isinstance(value, bool) else -1
        except (TypeError, ValueError):
            number = -1
        if number < 1 or (isinstance(value, float) and value != number):
            raise AirflowFailException(f"{self.task_id}: `rows_per_job` must be an integer >= 1, got {value!r}")
        return number

    def _on_bad_rows(self) -> str:
        mode = str(self.on_bad_rows).strip().lower()
        if mode not in BAD_ROW_MODES:
            raise AirflowFailException(f"{self.task_id}: `on_bad_rows` must be one of {', '.join(BAD_ROW_MODES)}, "
                                       f"got {self.on_bad_rows!r}")
        return mode

    def _chunks(self, on_bad_rows: str) -> tuple[int | None, float]:
        """(jobs per transaction or None for one transaction, seconds per transaction)."""
        jobs, seconds = self.chunk_jobs, self.chunk_seconds
        try:
            number = None if jobs is None or jobs == "" else int(jobs)
            limit = float(seconds)
        except (TypeError, ValueError):
            number, limit = -1, 0.0
        if isinstance(jobs, bool) or (number is not None and number < 0) or not limit > 0:
            raise AirflowFailException(f"{self.task_id}: `chunk_jobs` must be an integer >= 0 (0: one transaction) "
                                       f"and `chunk_seconds` a number > 0, got {jobs!r} and {seconds!r}")
        if on_bad_rows == "fail":  # a bad row anywhere imports nothing: the whole file is one transaction
            return None, limit
        return number or None, limit

    def _schema(self) -> Schema:
        spec: Any = self.schema
        if isinstance(spec, str):
            module_name, _, attr = spec.replace(":", ".").rpartition(".")
            try:
                spec = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError, ValueError) as exc:
                raise AirflowFailException(
                    f"{self.task_id}: schema {self.schema!r} cannot be imported ({exc})") from exc
        try:
            return Schema.parse(spec)
        except (TypeError, ValueError) as exc:
            raise AirflowFailException(f"{self.task_id}: invalid schema: {exc}") from exc

    # -- the work ---------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any]:
        source, rows_per_job, on_bad_rows, schema = (self._source(), self._rows_per_job(), self._on_bad_rows(),
                                                     self._schema())
        chunk_jobs, chunk_seconds = self._chunks(on_bad_rows)
        ti = context["ti"]
        request_id = request_id_for(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        transactional_id = jobs_transactional_id(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        check_reachable(config)

        # A retry after a committed attempt needs neither the source (it may be gone by now) nor a producer.
        existing = self._registered(config, request_id)
        if existing is not None:
            return self._push(ti, self._already_registered(request_id, existing))

        try:
            limits = Limits(**self.limits)
        except (TypeError, ValueError) as exc:
            raise AirflowFailException(f"{self.task_id}: invalid limits: {exc}") from exc
        limit = message_limit(config, self.topic, self.max_message_bytes)
        try:
            # The allow-list is checked here, before a byte is read; the header right after.
            stream = open_source(source, SourcePolicy.load(step_roots(self.allowed_sources)),
                                 conn_id=self.source_conn_id, timeout=self.source_timeout)
            csv_jobs = CsvJobSource(stream, schema, rows_per_job=rows_per_job, on_bad_rows=on_bad_rows,  # type: ignore[arg-type]
                                    max_examples=self.max_bad_examples, delimiter=self.delimiter, limits=limits,
                                    name=describe_source(source))
            csv_jobs.open()  # a bad file fails before any topic or transaction exists
        except SourceUnreadableError:
            raise
        except CsvSourceError as exc:  # refused, empty, bad header, over a limit: retrying cannot help
            raise AirflowFailException(str(exc)) from None
        self.log.info("splitting %s (%d column(s), the schema's found: %s) into jobs of %d row(s) for %s in "
                      "store %r; job messages up to %d bytes (%s)", csv_jobs.name, len(csv_jobs.header),
                      ", ".join(c.name for c, i in csv_jobs.positions if i >= 0), rows_per_job, request_id,
                      self.store, limit.max_bytes, limit.source)

        # produce_jobs builds the init command after the last job, so the counts land in the
        # request's store value (`meta`), where a retry and the notification find them.
        meta: dict[str, Any] = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
                                "source": describe_source(source), "rows_per_job": rows_per_job}

        codec = (SchemaRegistryHook(self.schema_registry_conn_id).codec({**self.value_schema, "topic": self.topic})
                 if self.value_schema else None)

        def encode(index: int, message: Any) -> bytes:
            if codec is None:
                return encode_value(message)
            codec.check(message, f"{self.task_id}: job {index}")  # a job that does not fit aborts the transaction
            return codec.encode(message)

        def jobs() -> Iterator[tuple[str, bytes]]:
            for job in csv_jobs.jobs():
                key, value = f"{request_id}/{job.index}", encode(job.index, job.to_message())
                rows = f"rows {job.row_numbers[0]}-{job.row_numbers[-1]}" if job.row_numbers else "no rows"
                # Checked before it is produced: an oversized record would abort every attempt's transaction.
                limit.check(f"job {job.index} ({rows}, {len(job.rows)} row(s))", value, key,
                            header_bytes=len(request_id) + 256)
                yield key, value
            meta.update(csv_jobs.summary())

        def give_up(exc: BaseException) -> bool:  # final: no retry of this task will run (see the docstring)
            if isinstance(exc, (CsvSourceError, MessageTooLargeError, JobsError)) \
                    and not isinstance(exc, SourceUnreadableError):
                return True  # failed below without retries: retrying cannot fix the input
            return getattr(ti, "try_number", 1) > (getattr(ti, "max_tries", None) or self.retries or 0)

        try:
            # Traced (Airflow's [traces] otel_on), one `send` span, a child of this task's: every job and
            # the store's commands carry its context, and the init's meta keeps it for the completion event.
            with tracing.producing(self.topic, {"kw.request_id": request_id, "kw.store": self.store}) as trace:
                if trace is not None:
                    meta.update(trace.headers())
                result = produce_jobs(config, transactional_id, self.topic, request_id, jobs(), self.store,
                                      headers=trace.headers() if trace is not None else None,
                                      workflow=self.workflow or ti.dag_id, meta=meta,
                                      topic_partitions=self.partitions,
                                      transaction_timeout_ms=self.transaction_timeout_ms,
                                      producer_overrides={"message.max.bytes": max(limit.max_bytes, 1000)},
                                      chunk_jobs=chunk_jobs, chunk_seconds=chunk_seconds,
                                      rows_read=lambda: csv_jobs.rows_read, give_up=give_up)
        except SourceUnreadableError:
            raise
        except MessageTooLargeError as exc:
            raise AirflowFailException(f"{exc}; lower rows_per_job") from None
        except (CsvSourceError, JobsError) as exc:
            raise AirflowFailException(str(exc)) from None
        finally:
            csv_jobs.close()
        if result.already_registered:  # a zombie attempt committed between our check and the fence
            return self._push(ti, self._already_registered(request_id, result.existing or {}))
        summary = csv_jobs.summary()
        if summary["bad_rows"]:
            self.log.warning("%s: skipped %s", csv_jobs.name, csv_jobs.bad.describe())
        self.log.info("committed %d job(s) (%d valid of %d rows) to %s and init(total=%d) to store %r in %d "
                      "transaction(s) (%d job(s) committed by an earlier attempt); partitions %s", result.produced,
                      summary["valid_rows"], summary["rows"], self.topic, result.total, self.store,
                      result.transactions, result.skipped, result.partitions)
        return self._push(ti, {
            "request_id": request_id, "store": self.store, "topic": self.topic, "total_jobs": result.total,
            "rows": summary["rows"], "valid_rows": summary["valid_rows"], "bad_rows": summary["bad_rows"],
            "bad_examples": summary["bad_examples"], "already_registered": False, "source": summary["source"]})

    def _registered(self, config: Mapping[str, Any], request_id: str) -> dict[str, Any] | None:
        try:
            return StoreClient(config, self.store).registered(request_id)
        except StoreError:  # the store's topics do not exist yet: nothing was ever registered
            return None

    def _already_registered(self, request_id: str, existing: Mapping[str, Any]) -> dict[str, Any]:
        meta = existing.get("meta") or {}
        self.log.info("request %s is already registered in store %r (total=%s, status=%s): an earlier attempt "
                      "committed; producing nothing", request_id, self.store, existing.get("total"),
                      existing.get("status"))
        return {"request_id": request_id, "store": self.store, "topic": self.topic,
                "total_jobs": existing.get("total"), "rows": meta.get("rows"), "valid_rows": meta.get("valid_rows"),
                "bad_rows": meta.get("bad_rows"), "bad_examples": meta.get("bad_examples", []),
                "already_registered": True, "source": meta.get("source")}

    def _push(self, ti: Any, result: dict[str, Any]) -> dict[str, Any]:
        for key, value in result.items():
            ti.xcom_push(key=key, value=value)
        return result
