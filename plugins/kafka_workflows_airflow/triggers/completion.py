"""Wait for a request of an atomic store to finish, by reading the store topic (no database polling).

Every `StoreCompletionTrigger` of a triggerer process that waits on the same store (and Kafka
config) shares ONE `SharedStoreReader`: a background thread with a read_committed consumer that
reads `S.store` from its beginning and then follows it. The reader keeps a small summary (status
and counts) of every request, and the full value only of the requests someone waits for; each
waiting trigger is woken through its own event loop (`call_soon_threadsafe`) when its request's
value changes. Readers are reference counted and stop `linger` seconds after their last waiter
left, so back-to-back DAG runs reuse a warm reader.

A terminal value is final (the store never changes it), so a request that finished before its
trigger started is answered from the summary plus one point read of its partition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Hashable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent
from asgiref.sync import sync_to_async
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kafka_workflows.config import client_config
from kafka_workflows.store import TERMINAL_STATUSES, StoreClient, store_topic

log = logging.getLogger(__name__)

CLASSPATH = "kafka_workflows_airflow.triggers.completion.StoreCompletionTrigger"


@dataclass(frozen=True)
class Progress:
    """What a waiter needs to know of a store value: its status and counts."""

    status: str
    total: int | None
    completed: int
    failed: int
    offset: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def describe(self) -> str:
        total = "?" if self.total is None else self.total
        return f"completed {self.completed}/{total}, failed {self.failed} (status {self.status})"

    @classmethod
    def of(cls, value: Mapping[str, Any], offset: int) -> Progress:
        return cls(str(value.get("status")), value.get("total"), int(value.get("completed") or 0),
                   int(value.get("failed") or 0), offset)


class _Waiter:
    """One waiting coroutine: an asyncio.Event set from the reader thread through its own loop."""

    __slots__ = ("event", "loop", "request_id")

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.event.set)


def _config_key(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Readers are shared per Kafka config: callables (oauth_cb) by name, not identity."""
    def text(value: Any) -> str:
        if callable(value):
            target = getattr(value, "func", value)
            return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(target).__name__)}"
        return str(value)
    return tuple(sorted((k, text(v)) for k, v in config.items()))


class SharedStoreReader:
    """One read_committed consumer of `S.store` for every waiter of this process (see the module doc)."""

    def __init__(self, key: Hashable, config: Mapping[str, Any], store: str, *, linger: float = 60.0) -> None:
        self.key = key
        self.config = dict(config)
        self.store = store
        self.topic = store_topic(store)
        self.linger = linger
        self.refs = 0
        self.error: str | None = None
        self.caught_up = threading.Event()
        self.started_at = time.monotonic()
        self.messages = 0
        self._lock = threading.Lock()
        self._progress: dict[str, Progress] = {}
        self._finals: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, set[_Waiter]] = {}
        self._idle_since: float | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kw-store-reader-{store}", daemon=True)

    # -- waiters (event-loop side) ----------------------------------------------------------
    def watch(self, request_id: str) -> _Waiter:
        waiter = _Waiter(request_id, asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(request_id, set()).add(waiter)
        return waiter

    def unwatch(self, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.request_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[waiter.request_id]
                    self._finals.pop(waiter.request_id, None)

    def progress(self, request_id: str) -> Progress | None:
        with self._lock:
            return self._progress.get(request_id)

    def final(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._finals.get(request_id)

    def describe(self) -> str:
        state = "caught up" if self.caught_up.is_set() else "still reading its history"
        return (f"reader of {self.topic}: {state}, {self.messages} value(s) read, {len(self._progress)} "
                f"request(s) known" + (f", error: {self.error}" if self.error else ""))

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = Consumer(client_config(self.config, **{
                "group.id": f"kw-completion-reader-{uuid.uuid4().hex[:8]}",  # assign() only: never joins or commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }))
            pending_eof = self._assign(consumer)
            while not self._stopping.is_set():
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    err = msg.error()
                    if err is None:
                        self._apply(msg.key(), msg.value(), msg.offset())
                    elif err.code() == KafkaError._PARTITION_EOF:
                        pending_eof.discard(msg.partition())
                        if not pending_eof and not self.caught_up.is_set():
                            self.caught_up.set()
                            log.info("%s caught up in %.2fs", self.describe(), time.monotonic() - self.started_at)
                            self._wake_all()
                    elif err.fatal():
                        raise RuntimeError(f"reading {self.topic}: {err.str()}")
                    else:
                        log.warning("reading %s: %s", self.topic, err.str())
                self._maybe_retire()
        except Exception as exc:  # reported to every waiter, whose task fails with it
            log.exception("the shared reader of %s failed", self.topic)
            self.error = f"{type(exc).__name__}: {exc}"
            _forget(self)
            self._wake_all()
        finally:
            if consumer is not None:
                consumer.close()

    def _assign(self, consumer: Consumer) -> set[int]:
        """Assign every partition of S.store from its beginning; waits (logging) while the topic is missing."""
        warned = False
        while not self._stopping.is_set():
            meta = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if meta is not None and meta.error is None and meta.partitions:
                consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
                return set(meta.partitions)
            if not warned:
                log.warning("store topic %s does not exist yet; waiting for it (is the store %r set up?)",
                            self.topic, self.store)
                warned = True
            self._stopping.wait(1.0)
            self._maybe_retire()
        return set()

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None, offset: int) -> None:
        if raw_key is None:
            return
        request_id = raw_key.decode("utf-8", "replace")
        self.messages += 1
        value: dict[str, Any] | None = None
        if raw_value is not None:
            try:
                value = json.loads(raw_value)
            except ValueError:
                log.error("%s@%d: value of %r is not JSON; ignored", self.topic, offset, request_id)
                return
            if not isinstance(value, dict):
                return
        with self._lock:
            if value is None:  # tombstone: the request expired from the store
                self._progress.pop(request_id, None)
                self._finals.pop(request_id, None)
            else:
                progress = Progress.of(value, offset)
                self._progress[request_id] = progress
                if progress.terminal and request_id in self._waiters:
                    self._finals[request_id] = value
            waiters = list(self._waiters.get(request_id, ()))
        for waiter in waiters:
            waiter.wake()

    def _wake_all(self) -> None:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for waiter in waiters:
            waiter.wake()

    def _maybe_retire(self) -> None:
        with _REGISTRY_LOCK:
            if self.refs > 0 or self._idle_since is None or time.monotonic() - self._idle_since < self.linger:
                return
            _forget(self, locked=True)
            self._stopping.set()
        log.info("stopping the idle %s", self.describe())


# -- the per-process registry --------------------------------------------------------------
_REGISTRY: dict[Hashable, SharedStoreReader] = {}
_REGISTRY_LOCK = threading.Lock()


def acquire_reader(config: Mapping[str, Any], store: str, *, linger: float = 60.0) -> SharedStoreReader:
    """The shared reader of (config, store), started on first use; pair with `release_reader`."""
    key = (_config_key(config), store)
    with _REGISTRY_LOCK:
        reader = _REGISTRY.get(key)
        if reader is None:
            reader = _REGISTRY[key] = SharedStoreReader(key, config, store, linger=linger)
            reader.start()
        reader.refs += 1
        reader._idle_since = None
        return reader


def release_reader(reader: SharedStoreReader) -> None:
    with _REGISTRY_LOCK:
        reader.refs -= 1
        if reader.refs <= 0:
            reader.refs = 0
            reader._idle_since = time.monotonic()


def active_readers() -> list[SharedStoreReader]:
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())


def stop_readers(timeout: float = 10.0) -> None:
    """Stop every reader of this process now, waiters or not (tests, and processes about to exit)."""
    with _REGISTRY_LOCK:
        readers = list(_REGISTRY.values())
        _REGISTRY.clear()
    for reader in readers:
        reader._stopping.set()
        reader._wake_all()
    for reader in readers:
        reader._thread.join(timeout)


def _forget(reader: SharedStoreReader, *, locked: bool = False) -> None:
    """Drop `reader` from the registry; `locked` when the caller holds _REGISTRY_LOCK."""
    if not locked:
        with _REGISTRY_LOCK:
            _forget(reader, locked=True)
    elif _REGISTRY.get(reader.key) is reader:
        del _REGISTRY[reader.key]


# -- the trigger ---------------------------------------------------------------------------
class StoreCompletionTrigger(BaseTrigger):
    """Fires once the store value of `request_id` is terminal (succeeded / completed_with_failures).

    Events (payload dicts): {"status": "done", "value": <final store value>}, {"status": "timeout",
    "progress": <last progress or None>, "reader": <diagnosis>} once `deadline` (epoch seconds)
    passed, or {"status": "error", "message": ...} when the shared reader failed.

    With `end_from_trigger`, a finished request ends the task right here (TaskSuccessEvent with the
    final value as its return_value XCom) instead of resuming it on a worker: one task start less
    between the last job and the notification. A request that ended `completed_with_failures` still
    resumes when `fail_on_job_failures` (the worker fails it); so do timeouts and errors, whose
    messages belong in the task's failure.
    """

    def __init__(self, *, request_id: str, store: str, kafka_config_id: str = "kafka_default",
                 deadline: float | None = None, progress_log_interval: float = 30.0, linger: float = 60.0,
                 end_from_trigger: bool = False, fail_on_job_failures: bool = False) -> None:
        super().__init__()
        self.request_id = request_id
        self.store = store
        self.kafka_config_id = kafka_config_id
        self.deadline = deadline
        self.progress_log_interval = progress_log_interval
        self.linger = linger
        self.end_from_trigger = end_from_trigger
        self.fail_on_job_failures = fail_on_job_failures

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"request_id": self.request_id, "store": self.store,
                           "kafka_config_id": self.kafka_config_id, "deadline": self.deadline,
                           "progress_log_interval": self.progress_log_interval, "linger": self.linger,
                           "end_from_trigger": self.end_from_trigger,
                           "fail_on_job_failures": self.fail_on_job_failures}

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

    async def _wait(self, config: Mapping[str, Any], reader: SharedStoreReader, waiter: _Waiter) -> TriggerEvent:
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
                if self.end_from_trigger and not (self.fail_on_job_failures and progress.status != "succeeded"):
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
