"""One warm reader of a store's `S.store` topic, shared by every waiter of a process.

Every waiter of a process that waits on the same store (and Kafka config) shares ONE
`SharedStoreReader`: a background thread with a read_committed consumer that reads `S.store`
from its beginning and then follows it. The reader keeps a small summary (status and counts) of
every request, and the full value only of the requests someone waits for; each waiter is woken
through its own event loop (`call_soon_threadsafe`) when its request's value changes. Readers are
reference counted and stop `linger` seconds after their last waiter left, so back-to-back DAG
runs reuse a warm reader. Used by the triggerer's StoreCompletionTrigger (plugins/) and by the
operations API; nothing here knows Airflow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Hashable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.reader import consume_ready
from kafka_workflows.store.state import TERMINAL_STATUSES, corrupt_value
from kafka_workflows.store.topics import store_topic

log = logging.getLogger(__name__)


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


class Waiter:
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
        self._waiters: dict[str, set[Waiter]] = {}
        self._idle_since: float | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kw-store-reader-{store}", daemon=True)

    # -- waiters (event-loop side) ----------------------------------------------------------
    def watch(self, request_id: str) -> Waiter:
        waiter = Waiter(request_id, asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(request_id, set()).add(waiter)
        return waiter

    def unwatch(self, waiter: Waiter) -> None:
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
                "fetch.wait.max.ms": 500,
            }))
            pending_eof = self._assign(consumer)
            while not self._stopping.is_set():
                for msg in consume_ready(consumer, 1000, 0.2):  # a lone completion value at once
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
                if not isinstance(value, dict):
                    raise ValueError(f"a JSON {type(value).__name__}, not an object")
                progress = Progress.of(value, offset)
            except (ValueError, TypeError) as exc:  # anyone can write to S.store: the request reads as corrupt
                why = f"{self.topic}@{offset}: {len(raw_value):,} bytes that are not a store value"
                log.error("%s (%s)", why, type(exc).__name__)
                value = corrupt_value(request_id, why)
                progress = Progress.of(value, offset)
        with self._lock:
            if value is None:  # tombstone: the request expired from the store
                self._progress.pop(request_id, None)
                self._finals.pop(request_id, None)
            else:
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
