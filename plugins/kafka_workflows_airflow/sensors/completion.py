"""Events aggregation, step 2: wait, deferred, until a split request's jobs are all accounted for."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from kafka_workflows.observe import tracing
from kafka_workflows.store import (
    ABORTED,
    COMPLETED_WITH_FAILURES,
    CORRUPT,
    TERMINAL_STATUSES,
    StoreClient,
    StoreError,
)
from kafka_workflows.store.indexcodec import decode_ranges
from kafka_workflows_airflow.hooks import KafkaWorkflowsHook
from kafka_workflows_airflow.links import LINKS
from kafka_workflows_airflow.triggers.completion import StoreCompletionTrigger, await_span


def describe_progress(progress: dict[str, Any] | None) -> str:
    """'completed 150/200, failed 3' (the shape users see in a timeout or a log line)."""
    if not progress:
        return "no progress recorded"
    total = progress.get("total")
    return (f"completed {progress.get('completed', 0)}/{'?' if total is None else total}, "
            f"failed {progress.get('failed', 0)}")


class AwaitCompletionSensor(BaseSensorOperator):
    """Wait until request `request_id` of store `store` is terminal; return its final store value.

    Deferrable (the default): defers at once to `StoreCompletionTrigger`, which follows the store
    topic in the triggerer (one shared consumer per triggerer process), so no worker slot is held
    and no database is polled. `execute_complete` returns the final value (request_id, total,
    completed, failed, status, failed_jobs, failure_reasons, meta, ...) as the XCom return value.

    A retry (try 2 or later) first reads the store once: a request that already finished ends the
    task at once, without a deferral whose trigger would fire within seconds (Airflow 3.3 can fail a
    task resumed that quickly: the executor's late report of the deferring try finds the resumed try
    queued; contacts_import retries its await for that reason).

    A request that ends `completed_with_failures` succeeds this task (the notification reports the
    failed jobs) unless `fail_on_job_failures`. A request that is `corrupt` (its stored value could
    not be restored) or `aborted` (its split failed for good after committing some jobs, so its total
    will never be sealed) fails the task for good (AirflowFailException, no retry) with the store's
    reason. The request cannot finish before its split has sealed the total: until `init(total)` it
    is `pending`, whatever its jobs report.
    When `timeout` (seconds, BaseSensorOperator's) passes first, the task fails with the progress
    reached, e.g. "completed 150/200, failed 3"; with `soft_fail` it is skipped instead.

    `end_from_trigger=True` lets the triggerer finish the task with the value as XCom, without
    resuming it on a worker (lower latency to the notification); `execute_complete` then only runs
    for timeouts, errors and `fail_on_job_failures`.

    Assets out: with `outlets` (Airflow Assets), the task's success records one asset event per
    outlet whose extra is the request's summary (request_id, store, status, total, completed, failed),
    so a DAG scheduled on the asset runs for every finished request. A task ended by the triggerer
    records no outlet events in Airflow 3 (the triggerer marks it success without the task runner), so
    with outlets the task always resumes on a worker, whatever `end_from_trigger` says. The event is
    recorded with the task's success, once: a failed or cleared try that did not succeed records none,
    and a trigger that fires again after a triggerer restart resumes the task once (a deferred task
    instance leaves the deferred state with its first event). Clearing a task that already succeeded
    runs it again and records a second event, as for any Airflow task with outlets.

    With `deferrable=False` it pokes the store every `poke_interval` seconds (one partition read each).

    :param request_id: the request to wait for (the split task's request id).
    :param store: the atomic store's name S (topics S.commands, S.store, S.events).
    :param kafka_config_id: the Airflow connection of the Kafka provider (`kafka_default`).
    :param deferrable: wait in the triggerer (True) or poke from a worker slot (False).
    :param fail_on_job_failures: fail the task when the request ends completed_with_failures.
    :param end_from_trigger: let the triggerer end the task when the request succeeded (not with outlets).
    :param progress_log_interval: seconds between progress lines in the task log.
    :param poke_interval: seconds between pokes when not deferrable.
    """

    template_fields: Sequence[str] = ("request_id", "store")
    ui_color = "#e6f1f2"
    operator_extra_links = LINKS  # Kafka progress, Kafka group, Dead letters (links.py)

    def __init__(self, *, request_id: str, store: str, kafka_config_id: str = KafkaWorkflowsHook.default_conn_name,
                 deferrable: bool = True, fail_on_job_failures: bool = False, end_from_trigger: bool = False,
                 progress_log_interval: float = 30.0, poke_interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.request_id = request_id
        self.store = store
        self.kafka_config_id = kafka_config_id
        self.deferrable = deferrable
        self.fail_on_job_failures = fail_on_job_failures
        self.end_from_trigger = end_from_trigger
        self.progress_log_interval = progress_log_interval

    def _check_inputs(self) -> None:
        for name in ("request_id", "store"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or value == "None":
                raise AirflowFailException(f"{self.task_id}: `{name}` is empty ({value!r}); pass the split "
                                           f"task's XCom, e.g. {name}=split.output[{name!r}]")

    def execute(self, context: Context) -> Any:
        self._check_inputs()
        if not self.deferrable:
            return super().execute(context)
        if context["ti"].try_number > 1:  # a retry: the request may have finished already
            finished = self._terminal_value()
            if finished is not None:  # end now: no deferral whose trigger would fire at once
                return self._finish(finished, context)
        self.log.info("deferring until request %s of store %r is terminal (timeout %.0fs)", self.request_id,
                      self.store, self.timeout)
        end_from_trigger = self.end_from_trigger and not self._assets()
        if self.end_from_trigger and not end_from_trigger:
            self.log.info("outlets declared: the task resumes on a worker to record its asset events "
                          "(the triggerer cannot)")
        # Ended by the triggerer, the task's `await` span is recorded there: it needs this span's context.
        span = tracing.current() if end_from_trigger and tracing.active() else None
        started = getattr(context["ti"], "start_date", None)
        self.defer(
            trigger=StoreCompletionTrigger(request_id=self.request_id, store=self.store,
                                           kafka_config_id=self.kafka_config_id, deadline=time.time() + self.timeout,
                                           progress_log_interval=self.progress_log_interval,
                                           end_from_trigger=end_from_trigger,
                                           fail_on_job_failures=self.fail_on_job_failures,
                                           traceparent=span.traceparent if span else None,
                                           tracestate=span.tracestate if span else None,
                                           started=started.timestamp() if span and started is not None else None),
            method_name="execute_complete",
            # A backstop should the triggerer be down at the deadline; the trigger's own timeout
            # event comes first and carries the progress.
            timeout=timedelta(seconds=self.timeout + 300),
        )

    def _terminal_value(self) -> dict[str, Any] | None:
        """The request's store value when it is terminal (one point read), else None."""
        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        try:
            value = StoreClient(config, self.store).get(self.request_id)
        except StoreError as exc:
            self.log.info("store %r not readable yet: %s", self.store, exc)
            return None
        return value if value is not None and value.get("status") in TERMINAL_STATUSES else None

    def poke(self, context: Context) -> bool | PokeReturnValue:
        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        try:
            value = StoreClient(config, self.store).get(self.request_id)
        except StoreError as exc:
            self.log.info("store %r not readable yet: %s", self.store, exc)
            return False
        if value is None or value.get("status") not in TERMINAL_STATUSES:
            self.log.info("request %s: %s", self.request_id, describe_progress(value))
            return False
        return PokeReturnValue(True, self._finish(value, context))

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> dict[str, Any]:
        if not isinstance(event, dict):
            # A TaskSuccessEvent (end_from_trigger) that resumed the task anyway: dag.test() does so.
            # Its XCom did not travel with it: read the final value from the store.
            config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
            value = StoreClient(config, self.store).get(self.request_id)
            if value is None:
                raise AirflowException(f"request {self.request_id} ended in the triggerer ({event!r}) but store "
                                       f"{self.store!r} has no value for it")
            return self._finish(value, context)
        status = event.get("status")
        if status in ("done", CORRUPT, ABORTED):
            return self._finish(event["value"] if isinstance(event.get("value"), dict) else
                                {"status": status if status != "done" else CORRUPT, "error": event.get("message")},
                                context)
        if status == "timeout":
            progress = event.get("progress")
            where = describe_progress(progress) if progress else (
                f"the store has no value for it ({event.get('reader')}); is `kafka-workflows store-processor "
                f"--store {self.store}` running, and did the split commit?")
            raise AirflowSensorTimeout(f"request {self.request_id} did not finish within {self.timeout:.0f}s: "
                                       f"{where}")
        raise AirflowException(f"waiting for request {self.request_id} of store {self.store!r} failed: "
                               f"{event.get('message', event)}")

    def _assets(self) -> list[Asset]:
        return [outlet for outlet in self.outlets if isinstance(outlet, Asset)]

    def _finish(self, value: dict[str, Any], context: Context) -> dict[str, Any]:
        if value.get("status") == CORRUPT:  # retrying cannot bring the accounting back: fail for good
            raise AirflowFailException(
                f"request {self.request_id} is corrupt in store {self.store!r}: its stored value could not be "
                f"restored, so its completions are not counted any more ({str(value.get('error') or '')[:500]}). "
                "Run the import again under a new request, or repair the value on the store topic.")
        if value.get("status") == ABORTED:  # the split gave up: the total will never be sealed
            raise AirflowFailException(
                f"request {self.request_id} was aborted in store {self.store!r}: its split failed for good before "
                f"sealing the total ({str(value.get('error') or '')[:500]}); the jobs it had committed were "
                "still handled. Fix the source and run the import again.")
        self.log.info("request %s is %s: %s", self.request_id, value.get("status"), describe_progress(value))
        if value.get("status") == COMPLETED_WITH_FAILURES:
            reasons = value.get("failure_reasons") or {}
            failed = describe_ranges(decode_ranges(value.get("failed_jobs")))  # ranges or a bitmap on the wire
            self.log.warning("failed jobs %s; first reasons: %s", failed, dict(list(reasons.items())[:5]))
            if self.fail_on_job_failures:
                raise AirflowFailException(f"request {self.request_id}: {describe_progress(value)} "
                                           f"(failed jobs {failed})")
        summary = asset_extra(self.request_id, self.store, value)
        for asset in self._assets():  # recorded by Airflow with the task's success
            context["outlet_events"][asset].extra = dict(summary)
        self._trace(value, context)
        return value

    def _trace(self, value: dict[str, Any], context: Context) -> None:
        """Traced (Airflow's [traces] otel_on): an `await <store>` span, a child of this task's span (in
        the run's trace), from the task's start to the request's end (triggers/completion.py: await_span)."""
        started = getattr(context.get("ti"), "start_date", None)
        await_span(self.store, self.request_id, value, None, started.timestamp() if started is not None else None)


def await_result(result: Any) -> Any:
    """An await task's return value as a downstream task's template renders it.

    An XCom pushed by the triggerer (TaskSuccessEvent, end_from_trigger) is stored JSON-encoded twice
    by Airflow 3.3 (TaskInstance.xcom_push serializes, then the JSON column again), so it comes back as
    JSON text; a resumed task's XCom comes back as the dict."""
    if isinstance(result, str):
        with contextlib.suppress(ValueError):
            return json.loads(result)
    return result


def asset_extra(request_id: str, store: str, value: dict[str, Any]) -> dict[str, Any]:
    """The extra of a finished request's asset event: small, JSON, the request's summary only."""
    def count(name: str) -> int | None:
        number = value.get(name)
        return number if isinstance(number, int) and not isinstance(number, bool) else None

    return {"request_id": request_id, "store": store, "status": str(value.get("status")),
            "total": count("total"), "completed": count("completed"), "failed": count("failed")}


def describe_ranges(ranges: list[list[int]], limit: int = 20) -> str:
    """'3, 7-9, 12' for the first `limit` ranges of job indices."""
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    return text + (f" (and {len(ranges) - limit} more ranges)" if len(ranges) > limit else "")
