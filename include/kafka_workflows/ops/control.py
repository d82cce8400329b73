"""Operations on running workers through Kafka, so they reach every worker process of a group.

Commands go to the control topic (`kafka-workflows.control`); each worker follows it from the
moment it starts and acts on the commands for partitions it holds (worker/operations.py), then appends an
`applied` record. The topic is therefore also the audit log: who asked, when, why, and what
happened. Worker state goes to the status topic (ops/status.py).

A topic holds whatever any producer wrote: a worker acts only on records that validate as
`CommandRecord` (strict types; skip and unblock name the partition, skip also the offset the
operator saw held); anything else is logged and counted, never raised. Pause and resume are also
kept as the group's state in the compacted status topic (key `paused/<group>`), so a worker that
starts or joins later starts paused; a pause with `until` (epoch seconds: "pause for N minutes")
ends on its own then, on every worker. `nonblocking` switches the group to non-blocking retries
until a `blocking` command (key `retries/<group>`): a failure then moves on to the retry topics (or,
with none declared, to the dead-letter topic) instead of holding its partition. Likewise open and
close of the group's circuit breaker (key
`breaker/<group>`): an operator's open holds until an operator closes it; a worker's breaker writes
`auto` ones when it trips and when a probe succeeds (`send_breaker_state`). Dead-letter replays are
recorded here too (`kind: replayed`).

Commands can be authenticated. With a control secret (`KAFKA_WORKFLOWS_CONTROL_SECRET` for the
core, the CLI and workers; `[kafka_workflows] control_secret` on the Airflow side, passed in), the
CLI and the API server sign every record they write here and the group's pause state: `sig` is
HMAC-SHA256 over the canonical JSON of the record without `sig` (keys sorted, no spaces, ASCII),
`at` included. A worker with the secret refuses a command that is unsigned ("refused: unsigned
command"), wrongly signed ("refused: bad signature"), older or newer than MAX_COMMAND_AGE by its
`at` ("refused: stale command") or, through a CommandGate, seen before ("refused: repeated
command"), and answers with an `applied` record whose result says so (`refusal_record`). Without
a secret everything is accepted, as before.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import REPLICATED, TopicSpec, ensure_topics
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.leader_moves import retry_leader_moves
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.kafka.reader import TopicMissingError, read_topic

CONTROL_TOPIC = "kafka-workflows.control"
STATUS_TOPIC = "kafka-workflows.status"
Op = Literal["skip", "unblock", "pause", "resume", "open", "close", "nonblocking", "blocking"]
OPS: tuple[str, ...] = ("skip", "unblock", "pause", "resume", "open", "close", "nonblocking", "blocking")
SECRET_ENV = "KAFKA_WORKFLOWS_CONTROL_SECRET"
SIGNATURE = "sig"
UNSIGNED_FIELDS = frozenset({SIGNATURE, "_where"})  # `_where` is the follower's note, not the producer's
MAX_COMMAND_AGE = 600.0  # seconds either side of a signed command's `at` (clock skew, a worker's backlog)
REFUSED = "refused: "


def control_secret(secret: str | None = None) -> str | None:
    """`secret` if given, else the env variable KAFKA_WORKFLOWS_CONTROL_SECRET if set; None: no signing."""
    return secret or os.environ.get(SECRET_ENV) or None


def canonical(record: Mapping[str, Any]) -> bytes:
    """What a signature covers: the record without `sig` (and `_where`), as canonical JSON."""
    return json.dumps({k: v for k, v in record.items() if k not in UNSIGNED_FIELDS}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode()


def _mac(record: Mapping[str, Any], secret: str) -> str:
    return hmac.new(secret.encode(), canonical(record), hashlib.sha256).hexdigest()


def sign(record: Mapping[str, Any], secret: str | None = None) -> dict[str, Any]:
    """`record` with its `sig` when a secret is configured (`secret`, else the env variable); else as is."""
    out = {k: v for k, v in record.items() if k not in UNSIGNED_FIELDS}
    key = control_secret(secret)
    if key is not None:
        out[SIGNATURE] = _mac(out, key)
    return out


def signature_problem(record: Mapping[str, Any], secret: str | None = None) -> str | None:
    """None when the record is signed with the secret (or no secret is configured); else why not
    ("unsigned command" or "bad signature")."""
    key = control_secret(secret)
    if key is None:
        return None
    sig = record.get(SIGNATURE)
    if not isinstance(sig, str) or not sig:
        return "unsigned command"
    try:
        expected = _mac(record, key)
    except (TypeError, ValueError):  # not JSON we could have signed
        return "bad signature"
    if len(sig) != len(expected) or not hmac.compare_digest(sig.encode("utf-8", "replace"), expected.encode()):
        return "bad signature"
    return None


def ensure_control_topics(config: Mapping[str, Any]) -> None:
    ensure_topics(config, [
        TopicSpec(CONTROL_TOPIC, partitions=1, replication_factor=REPLICATED,
                  config={"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(STATUS_TOPIC, partitions=1, replication_factor=REPLICATED,
                  config={"cleanup.policy": "compact", "segment.ms": "600000"}),
    ])


def operator_name() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def paused_key(group: str) -> str:
    """The status-topic key of a group's pause state."""
    return f"paused/{group}"


def retries_key(group: str) -> str:
    """The status-topic key of a group's retry mode (`nonblocking`/`blocking` commands)."""
    return f"retries/{group}"


def breaker_key(group: str) -> str:
    """The status-topic key of a group's circuit breaker state."""
    return f"breaker/{group}"


def breaker_state_record(group: str, op: str, by: str, reason: str, at: float, command: str, forced: bool
                         ) -> dict[str, Any]:
    return {"breaker": "open" if op == "open" else "closed", "forced": forced and op == "open", "group": group,
            "by": by, "reason": reason, "at": at, "command": command}


def send_breaker_state(config: Mapping[str, Any], group: str, op: str, reason: str, by: str,
                       send: Callable[[str, Mapping[str, Any], str], None], secret: str | None = None) -> None:
    """A worker's breaker opened (op "open") or closed after a probe ("close"): told to the group as
    an `auto` command and kept as the group's state, both signed when a secret is configured.
    Written through `send`, the worker's advisory writer: a failure there never stops a worker."""
    command = Command(uuid.uuid4().hex, op, group, None, None, None, by, reason[:2000], time.time(), auto=True)
    send(CONTROL_TOPIC, sign(command.to_json(), secret), group)
    send(STATUS_TOPIC, sign(breaker_state_record(group, op, by, reason[:2000], command.at, command.id, False),
                            secret), breaker_key(group))


class CommandRecord(BaseModel):
    """A command as a worker accepts it from the control topic; anything else is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["command"]
    id: StrictStr = Field(max_length=200)
    op: Op
    group: StrictStr = Field(min_length=1, max_length=500)
    topic: StrictStr | None = Field(default=None, max_length=249)
    partition: StrictInt | None = Field(default=None, ge=0)
    offset: StrictInt | None = Field(default=None, ge=0)
    key: StrictStr | None = Field(default=None, max_length=100_000)  # a key's hold (a worker with concurrency)
    by: StrictStr | None = Field(default=None, max_length=500)
    reason: StrictStr = Field(default="", max_length=2000)
    at: float
    auto: StrictBool = False  # open/close: told by a worker's breaker (open probes after its cool-down)
    until: float | None = Field(default=None, allow_inf_nan=False)  # pause: epoch seconds it ends on its own

    @model_validator(mode="after")
    def _names_what_it_acts_on(self) -> CommandRecord:
        if self.op in ("skip", "unblock") and (self.topic is None or self.partition is None):
            raise ValueError(f"{self.op} needs topic and partition")
        if self.op == "skip" and self.offset is None:
            raise ValueError("skip needs the offset the operator saw held")
        if self.until is not None and self.op != "pause":
            raise ValueError("until is for pause")
        return self


def parse_command_record(record: Any, where: str, secret: str | None = None, *, now: float | None = None
                         ) -> tuple[CommandRecord | None, str | None]:
    """(the command, None), or (None, why not): the fields named, never their values.

    With a control secret (`secret`, else the env variable) a well-formed command must also be
    signed with it and fresh; why is then "refused: unsigned command", "refused: bad signature" or
    "refused: stale command" (`is_refusal`), to be answered with `refusal_record`.
    """
    try:
        command = CommandRecord.model_validate(record)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "(record)" for err in exc.errors())
        return None, f"{where}: control record of the wrong shape ignored (fields: {fields})"
    key = control_secret(secret)
    if key is None:
        return command, None
    problem = signature_problem(record, key)
    if problem is not None:
        return None, REFUSED + problem
    if not abs((time.time() if now is None else now) - command.at) <= MAX_COMMAND_AGE:  # NaN is stale too
        return None, REFUSED + "stale command"
    return command, None


def is_refusal(why: str | None) -> bool:
    """Whether parse_command_record's why is a refusal (answered in the audit), not a wrong shape."""
    return why is not None and why.startswith(REFUSED)


def refusal_record(record: Mapping[str, Any], group: str, member: str, why: str) -> dict[str, Any]:
    """The `applied` audit record a worker answers a refused command with (`result`: "refused: ...");
    the command's id and op only when they are well-formed."""
    command_id = record.get("id")
    op = record.get("op")
    return {"kind": "applied", "command": command_id if isinstance(command_id, str) and len(command_id) <= 200
            else None, "op": op if op in OPS else None, "group": group, "worker": member, "result": why,
            "at": time.time()}


class CommandGate:
    """parse_command_record with the worker's secret, remembering the signed commands it let through
    for twice MAX_COMMAND_AGE: a signed command written again verbatim is "refused: repeated command".
    """

    def __init__(self, secret: str | None = None) -> None:
        self.secret = control_secret(secret)
        self._seen: OrderedDict[str, float] = OrderedDict()

    def admit(self, record: Any, where: str, now: float | None = None) -> tuple[CommandRecord | None, str | None]:
        now = time.time() if now is None else now
        command, why = parse_command_record(record, where, self.secret, now=now)
        if command is None or self.secret is None:
            return command, why
        while self._seen and next(iter(self._seen.values())) < now - 2 * MAX_COMMAND_AGE:
            self._seen.popitem(last=False)
        if command.id in self._seen:
            return None, REFUSED + "repeated command"
        self._seen[command.id] = now
        return command, None


@dataclass(frozen=True)
class Command:
    id: str
    op: str
    group: str
    topic: str | None
    partition: int | None
    offset: int | None
    by: str
    reason: str
    at: float
    key: str | None = None  # skip/unblock on a worker with concurrency: the held key
    auto: bool = False  # open/close told by a worker's breaker, not an operator
    until: float | None = None  # pause for a while: epoch seconds it ends

    def to_json(self) -> dict[str, Any]:
        record = {"kind": "command", **self.__dict__}
        if record["until"] is None:  # a pause without an end reads as before
            del record["until"]
        return record


def send_command(config: Mapping[str, Any], op: str, group: str, *, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None, reason: str = "",
                 by: str | None = None, wait: float = 30.0, key: str | None = None, secret: str | None = None,
                 minutes: float | None = None) -> tuple[Command, list[dict[str, Any]]]:
    """Send an operation and wait up to `wait` seconds for the workers' `applied` records.

    `minutes` (pause only): the pause ends on its own that long after it was sent (`until`), on
    every worker, and for a worker that starts meanwhile. Signed (and the group's state with it)
    when a control secret is configured: `secret`, else the env variable.
    """
    if op not in OPS:
        raise ConfigError(f"unknown operation {op!r}; expected one of {', '.join(OPS)}")
    if op in ("skip", "unblock") and (topic is None or partition is None):
        raise ConfigError(f"{op} needs --topic and --partition (see `kafka-workflows blocked`)")
    if op == "skip" and offset is None:
        raise ConfigError("skip needs the offset you saw held (--offset; see `kafka-workflows blocked`): "
                          "it then skips that message and no other")
    if minutes is not None and (op != "pause" or not 0 < minutes <= 7 * 24 * 60):
        raise ConfigError("--minutes: a pause's length, more than 0 and at most a week (10080)")
    ensure_control_topics(config)
    now = time.time()
    command = Command(uuid.uuid4().hex, op, group, topic, partition, offset, by or operator_name(), reason,
                      now, key, until=None if minutes is None else now + minutes * 60)
    follower = ControlFollower(config)  # start following before sending, so no reply is missed
    try:
        producer = RequestProducer(config)
        try:
            producer.send(CONTROL_TOPIC, sign(command.to_json(), secret), key=group)
            if op in ("pause", "resume"):  # the group's state, for workers that start later
                producer.send(STATUS_TOPIC, sign({"paused": op == "pause", "group": group, "by": command.by,
                                                  "reason": reason, "at": command.at, "command": command.id,
                                                  **({"until": command.until} if command.until else {})},
                                                 secret), key=paused_key(group))
            if op in ("nonblocking", "blocking"):  # the group's retry mode, for workers that start later
                producer.send(STATUS_TOPIC, sign({"retries": op, "group": group, "by": command.by, "reason": reason,
                                                  "at": command.at, "command": command.id}, secret),
                              key=retries_key(group))
            if op in ("open", "close"):  # an operator's open holds until an operator closes
                producer.send(STATUS_TOPIC, sign(breaker_state_record(group, op, command.by, reason, command.at,
                                                                      command.id, True), secret),
                              key=breaker_key(group))
            producer.flush()
        finally:
            producer.close()  # one producer per command: never left to the garbage collector
        applied: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for record in follower.poll(0.2):
                if record.get("kind") == "applied" and record.get("command") == command.id:
                    applied.append(record)
            # skip/unblock act on one partition: one owner answers. The others: every member may.
            if applied and (op in ("skip", "unblock") or time.monotonic() > deadline - wait + 3):
                break
        return command, applied
    finally:
        follower.close()


class ControlFollower:
    """Reads control records produced after it was created (the past is history, not orders).

    A record that is not a JSON object is passed to `on_ignored` with where it is, and dropped.
    """

    def __init__(self, config: Mapping[str, Any], on_ignored: Callable[[str], None] | None = None) -> None:
        ensure_control_topics(config)
        self._on_ignored = on_ignored
        self._consumer = Consumer(client_config(config, **{
            "group.id": f"kw-control-{uuid.uuid4().hex}", "enable.auto.commit": False,
            "isolation.level": "read_committed"}))
        # The end as an offset, taken now: OFFSET_END would be resolved lazily, at the first fetch, and
        # a worker's quick `applied` answer produced before then would be missed (seen under load).
        # Retried: a replica starting next to another may read the topic the moment the other created it.
        _, end = retry_leader_moves(
            lambda: self._consumer.get_watermark_offsets(TopicPartition(CONTROL_TOPIC, 0), timeout=30),
            f"the end of {CONTROL_TOPIC}", 60, refresh=lambda: self._consumer.list_topics(CONTROL_TOPIC, timeout=10))
        self._consumer.assign([TopicPartition(CONTROL_TOPIC, 0, end if end >= 0 else OFFSET_END)])

    def poll(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        records = []
        for msg in self._consumer.consume(50, timeout=timeout):
            if msg.error():
                continue
            record = _decode(msg)
            if record is None:
                if self._on_ignored is not None:
                    self._on_ignored(f"{CONTROL_TOPIC}[{msg.partition()}]@{msg.offset()}: not a JSON object; ignored")
                continue
            record["_where"] = f"{CONTROL_TOPIC}[{msg.partition()}]@{msg.offset()}"
            records.append(record)
        return records

    def close(self) -> None:
        self._consumer.close()


def _decode(msg: KafkaMessage) -> dict[str, Any] | None:
    try:
        record = json.loads(msg.value()) if msg.value() is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def control_history(config: Mapping[str, Any], kinds: tuple[str, ...] = (), timeout: float = 60.0
                    ) -> list[dict[str, Any]]:
    """The control topic's records (of these kinds), oldest first, up to its end when this started."""
    found: list[dict[str, Any]] = []

    def keep(msg: KafkaMessage) -> None:
        record = _decode(msg)
        if record is not None and (not kinds or record.get("kind") in kinds):
            found.append(record)

    try:
        read_topic(config, CONTROL_TOPIC, keep, timeout=timeout)
    except TopicMissingError:
        return []
    return found


def record_replay(config: Mapping[str, Any], group: str, dead_letter_topic: str, ids: list[str],
                  by: str | None = None, reason: str = "", to: str | None = None, secret: str | None = None
                  ) -> None:
    """Audit a dead-letter replay in the control topic (signed when a secret is configured); a later
    replay leaves these ids out."""
    ensure_control_topics(config)
    producer = RequestProducer(config)
    producer.send(CONTROL_TOPIC, sign({
        "kind": "replayed", "id": uuid.uuid4().hex, "op": "replay", "group": group,
        "dead_letter_topic": dead_letter_topic, "to": to, "ids": ids, "count": len(ids), "by": by or operator_name(),
        "reason": reason, "at": time.time()}, secret), key=group)
    producer.flush()
