"""Per-partition committed offset, end offset and lag of consumer groups.

`groups_lag()` asks the broker a handful of round trips per call (the groups' members, the
partitions' end offsets, each group's committed offsets), never a topic read. `LagMonitor` keeps
the latest answer for every group it is told about, refreshed by one background thread every
`interval` seconds, so an overview of many groups is answered from memory, and each group's
recent lag (its trend).

Committed offsets are read with a Consumer of the group that never joins it (`committed()`), not
with the admin client's ListConsumerGroupOffsets: librdkafka dereferences NULL in that admin
call's NOT_COORDINATOR path (confluent-kafka-python issue 1982, librdkafka issue 5040), which
happens on a fresh cluster or a coordinator move and would take the whole API server down.
The group's topics are the declared ones plus its retry topics (`<topic>.<group>.retry-<n>`).

Lag counts records a consumer can still read: on a transactionally written topic the end offset
also counts commit/abort markers (and aborted records), which no read_committed consumer ever
sees, so a partition whose end is at most `PROBE_MAX` past its committed offset is probed (read
read_committed from the committed offset to the end, once per (committed, end) pair) and its lag is
the number of records actually there: 0 when only a marker is left.

Every broker call has a short timeout, and a page never waits behind the background refresh: when
another broker round is in progress, `fresh()` serves the last known answer (or "unknown") after
`LOCK_WAIT` seconds instead of holding the caller's thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from kafka_workflows.kafka.admin import listed_offset
from kafka_workflows.kafka.config import client_config

log = logging.getLogger(__name__)
TIMEOUT = 3.0  # per broker call; a slow or paused broker costs a refresh seconds, not minutes
LOCK_WAIT = 0.5  # how long a page waits for another broker round before serving the last known answer
PROBE_MAX = 100  # partitions lagging by at most this are read to count what is really left


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state)).lower()


class CommittedReader:
    """One non-joining Consumer per group (at most `limit`, least recently used closed first)."""

    def __init__(self, config: Mapping[str, Any], limit: int = 256) -> None:
        self.config = dict(config)
        self.limit = limit
        self._consumers: OrderedDict[str, Consumer] = OrderedDict()

    def committed(self, group: str, partitions: list[TopicPartition], timeout: float) -> dict[tuple[str, int], int]:
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = self._consumers[group] = Consumer(client_config(self.config, **{
                "group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False}))
            while len(self._consumers) > self.limit:
                self._consumers.popitem(last=False)[1].close()
        self._consumers.move_to_end(group)
        if not partitions:
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=timeout)
                if tp.error is None and tp.offset >= 0}

    def close(self) -> None:
        while self._consumers:
            self._consumers.popitem()[1].close()


class ReadableCounter:
    """Counts the records a read_committed consumer would still read between two offsets of a partition."""

    def __init__(self, config: Mapping[str, Any], limit: int = 10_000) -> None:
        self.config = dict(config)
        self.limit = limit
        self._consumer: Consumer | None = None
        self._known: dict[tuple[str, int, int, int], int] = {}

    def counts(self, ranges: Mapping[tuple[str, int], tuple[int, int]], timeout: float) -> dict[tuple[str, int], int]:
        """For each (topic, partition) -> (start, end): how many readable records lie in [start, end).
        A partition whose count could not be established in `timeout` seconds is left out."""
        out: dict[tuple[str, int], int] = {}
        todo: dict[tuple[str, int], tuple[int, int]] = {}
        for tp, (start, end) in ranges.items():
            known = self._known.get((*tp, start, end))
            if known is not None:
                out[tp] = known
            elif end > start:
                todo[tp] = (start, end)
        if not todo:
            return out
        if self._consumer is None:
            self._consumer = Consumer(client_config(self.config, **{
                "group.id": f"kw-lag-probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                "enable.auto.offset.store": False, "isolation.level": "read_committed",
                "enable.partition.eof": True, "fetch.wait.max.ms": 50}))
        consumer = self._consumer
        seen = dict.fromkeys(todo, 0)
        pending = set(todo)
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()])
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=min(0.2, max(deadline - time.monotonic(), 0))):
                    tp = (msg.topic(), msg.partition())
                    if tp not in pending:
                        continue
                    err = msg.error()
                    if err is None:
                        if msg.offset() < todo[tp][1]:
                            seen[tp] += 1
                        if msg.offset() >= todo[tp][1] - 1:
                            pending.discard(tp)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(tp)
        finally:
            consumer.unassign()
        if len(self._known) > self.limit:
            self._known.clear()
        for tp in todo:
            if tp not in pending:
                out[tp] = self._known[(*tp, *todo[tp])] = seen[tp]
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def groups_lag(admin: AdminClient, reader: CommittedReader, groups: Mapping[str, Iterable[str]],
               timeout: float = TIMEOUT, counter: ReadableCounter | None = None) -> dict[str, dict[str, Any]]:
    """For each group (with the topics it is declared to read): state, members and partitions.

    A partition row: topic, partition, committed (None when nothing is committed), end, lag,
    member (the client id holding it, or None).
    """
    if not groups:
        return {}
    names = sorted(groups)
    described = admin.describe_consumer_groups(names, request_timeout=timeout)
    metadata = admin.list_topics(timeout=timeout)
    existing = {n: t for n, t in metadata.topics.items() if t.error is None}
    result: dict[str, dict[str, Any]] = {}
    wanted: dict[TopicPartition, None] = {}
    for g in names:
        declared = set(groups[g])
        topics = declared | {n for n in existing for t in declared if n.startswith(f"{t}.{g}.retry-")}
        partitions = [TopicPartition(t, p) for t in sorted(topics) if t in existing
                      for p in sorted(existing[t].partitions)]
        try:
            committed = reader.committed(g, partitions, timeout)
        except Exception as exc:  # noqa: BLE001 - one group's failure is reported on that group
            result[g] = {"group": g, "state": "unknown", "members": [], "partitions": [], "error": str(exc)}
            continue
        try:
            description = described[g].result()
            state = _state_name(description.state)
            members = [{"client_id": m.client_id, "host": m.host, "member_id": m.member_id,
                        "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in m.assignment.topic_partitions)}
                       for m in description.members]
        except Exception as exc:  # noqa: BLE001
            state, members = "unknown", []
            state = "no group" if "GROUP_ID_NOT_FOUND" in str(exc) else state
            log.debug("describing group %s: %s", g, exc)
        owner = {p: m["client_id"] for m in members for p in m["partitions"]}
        rows = []
        for tp in partitions:
            rows.append({"topic": tp.topic, "partition": tp.partition,
                         "committed": committed.get((tp.topic, tp.partition)), "end": None, "lag": None,
                         "member": owner.get(f"{tp.topic}[{tp.partition}]")})
            wanted[TopicPartition(tp.topic, tp.partition)] = None
        result[g] = {"group": g, "state": state, "members": members, "partitions": rows, "error": None}
    ends: dict[tuple[str, int], int] = {}
    if wanted:
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted}, request_timeout=timeout)
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = listed_offset(tp, future)
            except Exception as exc:  # noqa: BLE001 - that partition's end stays unknown
                log.debug("end offset of %s[%d]: %s", tp.topic, tp.partition, exc)
    probe: dict[tuple[str, int], tuple[int, int]] = {}
    for info in result.values():
        for row in info["partitions"]:
            end = ends.get((row["topic"], row["partition"]))
            row["end"] = end
            if end is not None:
                row["lag"] = max(end - (row["committed"] or 0), 0)
                if counter is not None and row["committed"] is not None and 0 < row["lag"] <= PROBE_MAX:
                    probe[(row["topic"], row["partition"])] = (row["committed"], end)
    if probe and counter is not None:
        try:
            readable = counter.counts(probe, timeout)
        except Exception as exc:  # noqa: BLE001 - the plain difference stays
            log.debug("counting readable records: %s", exc)
            readable = {}
        for info in result.values():
            for row in info["partitions"]:
                if (row["topic"], row["partition"]) in readable and probe.get((row["topic"], row["partition"])) == (
                        row["committed"], row["end"]):
                    row["lag"] = readable[(row["topic"], row["partition"])]
    for info in result.values():
        info["lag"] = sum(r["lag"] or 0 for r in info["partitions"])
        info["at"] = time.time()
    return result


class LagMonitor:
    """The latest `groups_lag` of the groups `groups()` names, refreshed every `interval` seconds."""

    def __init__(self, config: Mapping[str, Any], groups: Callable[[], Mapping[str, Iterable[str]]], *,
                 interval: float = 5.0) -> None:
        self.config = dict(config)
        self.admin = AdminClient(client_config(config))
        self.reader = CommittedReader(config)
        self.counter = ReadableCounter(config)
        self.groups = groups
        self.interval = interval
        self.error: str | None = None
        self._latest: dict[str, dict[str, Any]] = {}
        self._history: dict[str, deque[tuple[float, int]]] = {}  # group -> (at, total lag), last 120 samples
        self._lock = threading.Lock()
        self._admin_lock = threading.Lock()  # one admin round at a time: the refresher or a page
        self._stopping = threading.Event()
        self._refreshed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kw-lag", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)
        with self._admin_lock:
            self.reader.close()
            self.counter.close()

    def wait_refreshed(self, timeout: float) -> bool:
        return self._refreshed.wait(timeout)

    def latest(self, group: str) -> dict[str, Any] | None:
        with self._lock:
            return self._latest.get(group)

    def history(self, group: str) -> list[tuple[float, int]]:
        """The group's total lag over the last refreshes (about 10 minutes at the default interval)."""
        with self._lock:
            return list(self._history.get(group, ()))

    def _keep(self, group: str, info: dict[str, Any]) -> None:
        """Store one answer (the caller holds no lock)."""
        with self._lock:
            self._latest[group] = info
            if info.get("error") is None:
                self._history.setdefault(group, deque(maxlen=120)).append((round(info["at"], 1), info["lag"]))

    def fresh(self, group: str, topics: Iterable[str]) -> dict[str, Any]:
        """Ask the broker now for one group (a group's page), and keep the answer. When another broker
        round is under way (the refresher, another page; slow when the broker is), the last known
        answer instead, or "unknown": the caller never queues behind a slow broker."""
        if not self._admin_lock.acquire(timeout=LOCK_WAIT):
            return self._known(group, "the broker is slow to answer")
        try:
            info = groups_lag(self.admin, self.reader, {group: list(topics)}, counter=self.counter)[group]
        except Exception as exc:  # noqa: BLE001 - the broker is away: the last answer, saying so
            self._renew_clients()
            return self._known(group, f"the broker did not answer ({type(exc).__name__})")
        finally:
            self._admin_lock.release()
        self._keep(group, info)
        return info

    def _renew_clients(self) -> None:
        """New clients after a failed round (the caller holds `_admin_lock`): an admin client whose
        broker was paused was seen failing every later call with a transport failure, for good."""
        self.admin = AdminClient(client_config(self.config))
        self.reader.close()
        self.counter.close()

    def _known(self, group: str, why: str) -> dict[str, Any]:
        latest = self.latest(group)
        if latest is not None:
            return {**latest, "error": why}
        return {"group": group, "state": "unknown", "members": [], "partitions": [], "lag": None, "at": None,
                "error": why}

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._admin_lock:
                    try:
                        latest = groups_lag(self.admin, self.reader, self.groups(), counter=self.counter)
                    except Exception:
                        self._renew_clients()
                        raise
                for group, info in latest.items():
                    self._keep(group, info)
                self.error = None
            except Exception as exc:  # noqa: BLE001 - the broker is away: keep the last answer, try again
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("refreshing consumer lag: %s", self.error)
            self._refreshed.set()
            self._stopping.wait(self.interval)
