"""Wait for a request of an atomic store to finish, by reading the store topic (no database polling).

Every trigger of a triggerer process that waits on the same store shares one warm reader of
`S.store` (kafka_workflows.store.follower.SharedStoreReader). A terminal value is final (the store
never changes it), so a request that finished before its trigger started is answered from the
reader's summary plus one point read of its partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from dataclasses import asdict
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent
from asgiref.sync import sync_to_async

from kafka_workflows.observe import tracing
from kafka_workflows.store import ABORTED, CORRUPT, StoreClient
from kafka_workflows.store.follower import (
    Progress,
    SharedStoreReader,
    Waiter,
    acquire_reader,
    active_readers,
    release_reader,
    stop_readers,
)

__all__ = ["CLASSPATH", "Progress", "SharedStoreReader", "StoreCompletionTrigger", "acquire_reader",
           "active_readers", "release_reader", "stop_readers"]

CLASSPATH = "kafka_workflows_airflow.triggers.completion.StoreCompletionTrigger"


class StoreCompletionTrigger(BaseTrigger):
    """Fires once the store value of `request_id` is terminal (succeeded / completed_with_failures).

    Events (payload dicts): {"status": "done", "value": <final store value>}, {"status": "timeout",
    "progress": <last progress or None>, "reader": <diagnosis>} once `deadline` (epoch seconds)
    passed, {"status": "corrupt", "value": ..., "message": <why>} when the request's stored value
    could not be restored, {"status": "aborted", ...} likewise when its split failed for good before
    sealing the total (neither ever ends the task as a success), or {"status": "error", "message": ...}
    when the shared reader failed.

    With `end_from_trigger`, a finished request ends the task right here (TaskSuccessEvent with the
    final value as its return_value XCom) instead of resuming it on a worker: one task start less
    between the last job and the notification. A request that ended `completed_with_failures` still
    resumes when `fail_on_job_failures` (the worker fails it); so do timeouts and errors, whose
    messages belong in the task's failure. A task ended here gets its `await <store>` span from here
    too (when the triggerer traces), a child of `traceparent` (the deferring task's span) from
    `started` (epoch seconds): the same span a resumed task records.

    :param request_id: the request to wait for.
    :param store: the atomic store's name S.
    :param kafka_config_id: the Airflow connection of the Kafka provider (`kafka_default`).
    :param deadline: epoch seconds after which a timeout event fires (None: wait forever).
    :param progress_log_interval: seconds between progress lines in the triggerer's log.
    :param linger: seconds the shared reader stays warm after its last waiter left.
    :param end_from_trigger: end the task from the triggerer when the request succeeded.
    :param fail_on_job_failures: resume the task (to fail it) when the request had failed jobs.
    :param traceparent: the deferring task's span context (W3C traceparent), or None.
    :param tracestate: its W3C tracestate, or None.
    :param started: when the task started (epoch seconds), where its `await` span begins.
    """

    def __init__(self, *, request_id: str, store: str, kafka_config_id: str = "kafka_default",
                 deadline: float | None = None, progress_log_interval: float = 30.0, linger: float = 60.0,
                 end_from_trigger: bool = False, fail_on_job_failures: bool = False,
                 traceparent: str | None = None, tracestate: str | None = None,
                 started: float | None = None) -> None:
        super().__init__()
        self.request_id = request_id
        self.store = store
        self.kafka_config_id = kafka_config_id
        self.deadline = deadline
        self.progress_log_interval = progress_log_interval
        self.linger = linger
        self.end_from_trigger = end_from_trigger
        self.fail_on_job_failures = fail_on_job_failures
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.started = started

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"request_id": self.request_id, "store": self.store,
                           "kafka_config_id": self.kafka_config_id, "deadline": self.deadline,
                           "progress_log_interval": self.progress_log_interval, "linger": self.linger,
                           "end_from_trigger": self.end_from_trigger,
                           "fail_on_job_failures": self.fail_on_job_failures,
                           "traceparent": self.traceparent, "tracestate": self.tracestate, "started": self.started}

    def _kafka_config(self) -> dict[str, Any]:
        from kafka_workflows_airflow.hooks import KafkaWorkflowsHook

        return KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        config = await sync_to_async(self._kafka_config)()
        reader = acquire_reader(config, self.store, linger=self.linger)
        waiter = reader.watch(self.request_id)
        released = False
        try:
            event = await self._wait(config, reader, waiter)
            # Release before yielding: the triggerer may never resume this generator after the event.
            reader.unwatch(waiter)
            release_reader(reader)
            released = True
            yield event
        finally:
            if not released:
                reader.unwatch(waiter)
                release_reader(reader)

    async def _wait(self, config: Mapping[str, Any], reader: SharedStoreReader, waiter: Waiter) -> TriggerEvent:
        next_log = 0.0
        while True:
            waiter.event.clear()  # before reading the state: a change after this sets it again
            progress = reader.progress(self.request_id)
            if progress is not None and progress.terminal:
                value = reader.final(self.request_id)
                if value is None:  # finished before we started watching: one point read
                    value = await asyncio.to_thread(StoreClient(config, self.store).get, self.request_id)
                self.log.info("request %s is %s: %s", self.request_id, progress.status, progress.describe())
                value = value or asdict(progress)
                if progress.status in (CORRUPT, ABORTED):  # it will never complete: the wait fails
                    return TriggerEvent({"status": progress.status, "request_id": self.request_id, "store": self.store,
                                         "value": value, "message": str(value.get("error") or "")[:1000]})
                if self.end_from_trigger and not (self.fail_on_job_failures and progress.status != "succeeded"):
                    # The task ends here, so its span does too (a trigger's serialized kwargs are
                    # ours, but checked like any other carrier).
                    await_span(self.store, self.request_id, value,
                               tracing.carrier_of(self.traceparent, self.tracestate), self.started)
                    return TaskSuccessEvent(xcoms={"return_value": value})
                return TriggerEvent({"status": "done", "request_id": self.request_id, "store": self.store,
                                     "value": value})
            if reader.error is not None:
                return TriggerEvent({"status": "error", "request_id": self.request_id, "store": self.store,
                                     "message": f"reading store {self.store!r} failed: {reader.error}"})
            now = time.time()
            if self.deadline is not None and now >= self.deadline:
                return TriggerEvent({"status": "timeout", "request_id": self.request_id, "store": self.store,
                                     "progress": asdict(progress) if progress is not None else None,
                                     "reader": reader.describe()})
            if time.monotonic() >= next_log:
                self._log_progress(reader, progress)
                next_log = time.monotonic() + self.progress_log_interval
            wait = self.progress_log_interval if self.deadline is None else min(self.deadline - now,
                                                                                self.progress_log_interval)
            with suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), timeout=max(wait, 0.01))

    def _log_progress(self, reader: SharedStoreReader, progress: Progress | None) -> None:
        if progress is not None:
            self.log.info("request %s: %s", self.request_id, progress.describe())
        elif reader.caught_up.is_set():
            self.log.info("request %s has no value in store %r yet: the store processor has not applied its "
                          "init (is `kafka-workflows store-processor --store %s` running?)", self.request_id,
                          self.store, self.store)
        else:
            self.log.info("request %s: %s", self.request_id, reader.describe())


def await_span(store: str, request_id: str, value: Mapping[str, Any], parent: tracing.Carrier | None,
               started: float | None) -> None:
    """Record the `await <store>` span when this process traces: from `started` (epoch seconds) to now, a
    child of `parent` (None: of the current span, the task's), linked to the split's context that the
    store kept in the request's meta (bounded and checked: the value came through Kafka)."""
    if not tracing.active():
        return
    meta = value.get("meta") if isinstance(value.get("meta"), dict) else {}
    split = tracing.carrier_of(meta.get(tracing.TRACEPARENT), meta.get(tracing.TRACESTATE))
    with tracing.span(f"await {store}", parent=parent, links=(split,) if split else (),
                      start_time=int(started * 1e9) if started is not None else None,
                      attributes={"kw.request_id": request_id, "kw.store": store,
                                  "kw.status": str(value.get("status")), "kw.total": _count(value.get("total")),
                                  "kw.completed": _count(value.get("completed")),
                                  "kw.failed": _count(value.get("failed"))}):
        pass


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
