"""The audit log: the control topic's commands (who asked what, when, why) joined with their answers.

Keeps the newest `limit` commands in memory; each command carries the `applied` records the
workers answered with (at most MAX_ANSWERS). Paged newest first. `replayed` records (written by
every replay, the CLI's and the UI's) say which dead letters were replayed, by whom, to where;
`canary` records (ops/canary.py) how a canary replay ended and why (`result`).

A control record may be forged, so what this serves has a fixed shape, normalized where it is
read (`AuditEntry`, `Answer`): a field of the wrong type or out of bounds (`"at": "soon"`,
`letters` that is not a list, an object where a number or a text is expected) becomes None, an
unknown op "unknown"; fields nobody declared are dropped. The UI never gets a value of a type it
does not expect.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from confluent_kafka import Message as KafkaMessage
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    confloat,
)

from kafka_workflows.monitor.follower import TopicFollower
from kafka_workflows.ops.control import CONTROL_TOPIC, OPS

MAX_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z: any later `at` is no date a browser can show
MAX_ANSWERS = 100  # applied records kept per command (anyone may write more)
MAX_LETTERS = 1000  # ids listed per replay (ops.deadletters replays at most 1000 at a time from the UI)


def _or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _text(limit: int) -> Any:
    return Annotated[Annotated[StrictStr, Field(max_length=limit)] | None, WrapValidator(_or_none)]


def _count() -> Any:
    return Annotated[Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | None, WrapValidator(_or_none)]


def _op(value: Any) -> str:
    return value if isinstance(value, str) and (value in OPS or value in ("replay", "canary-replay")) else "unknown"


Name = _text(500)
Text = _text(2000)
TopicName = _text(300)
Count = _count()
When = Annotated[confloat(strict=True, ge=0, le=MAX_TIME, allow_inf_nan=False) | None, WrapValidator(_or_none)]
Letters = Annotated[Annotated[list[Annotated[StrictStr, Field(max_length=300)]], Field(max_length=MAX_LETTERS)]
                    | None, WrapValidator(_or_none)]


class Answer(BaseModel):
    """A worker's `applied` answer to a command, as the audit shows it."""

    model_config = ConfigDict(extra="ignore")

    worker: Name = None
    result: Text = None
    at: When = None


class AuditEntry(BaseModel):
    """A command or a replay, as the audit shows it: every field of a known type, or None."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["command", "replayed", "canary"]
    id: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    op: Annotated[str, WrapValidator(lambda v, _: _op(v))] = "unknown"
    group: Name = None
    topic: TopicName = None
    partition: Count = None
    offset: Count = None
    key: Text = None
    by: Name = None
    reason: Text = None
    at: When = None
    dead_letter_topic: TopicName = None
    to: TopicName = None
    letters: Letters = None
    count: Count = None
    result: Text = None  # a canary replay's end: why it stopped
    applied: list[Answer] = Field(default_factory=list)
    control_offset: int | None = None


def audit_entry(record: Mapping[str, Any], control_offset: int | None = None) -> AuditEntry | None:
    """The audit's view of a control record, or None when it is not a command or replay with an id."""
    fields = dict(record)
    if fields.get("kind") == "replayed":
        fields.update(letters=fields.get("ids"), op="replay", topic=None, partition=None, offset=None, key=None,
                      result=None)
    elif fields.get("kind") == "canary":
        fields.update(letters=None, op="canary-replay", topic=None, partition=None, offset=None, key=None,
                      count=fields.get("sent"))
    else:
        fields.update(letters=None, count=None, dead_letter_topic=None, to=None, result=None)
    fields["applied"] = []
    fields["control_offset"] = control_offset
    try:
        return AuditEntry.model_validate(fields)
    except ValidationError:
        return None


class AuditLog(TopicFollower):
    name = "audit"

    def __init__(self, config: Mapping[str, Any], *, limit: int = 10_000) -> None:
        super().__init__(config, refresh=5.0)
        self.limit = limit
        self._commands: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._replayed: OrderedDict[str, dict[str, Any]] = OrderedDict()  # dead letter id -> who, when

    def topics(self, names: set[str]) -> set[str]:
        return {CONTROL_TOPIC} & names

    def apply(self, msg: KafkaMessage) -> None:
        try:
            record = json.loads(msg.value() or b"null")
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        if record.get("kind") in ("command", "replayed", "canary"):
            entry = audit_entry(record, msg.offset())
            if entry is None:
                return
            row = entry.model_dump()
            with self.lock:
                self._commands[entry.id] = row
                self._commands.move_to_end(entry.id)
                while len(self._commands) > self.limit:
                    self._commands.popitem(last=False)
                for letter in entry.letters or []:
                    self._replayed[letter] = {"by": entry.by, "at": entry.at}
                    self._replayed.move_to_end(letter)
                while len(self._replayed) > 10 * self.limit:
                    self._replayed.popitem(last=False)
        elif record.get("kind") == "applied" and isinstance(record.get("command"), str):
            with self.lock:
                command = self._commands.get(record["command"])
                if command is not None and len(command["applied"]) < MAX_ANSWERS:
                    command["applied"].append(Answer.model_validate(record).model_dump())

    def page(self, *, group: str | None = None, groups: set[str] | None = None, offset: int = 0,
             limit: int = 50) -> dict[str, Any]:
        """Commands newest first, of `group` (or of any of `groups`), `limit` from `offset`."""
        with self.lock:
            rows = [dict(c, applied=list(c["applied"])) for c in reversed(self._commands.values())
                    if (group is None or c.get("group") == group) and (groups is None or c.get("group") in groups)]
        return {"total": len(rows), "offset": offset, "limit": limit, "items": rows[offset:offset + limit]}

    def replayed(self, letter_id: str) -> dict[str, Any] | None:
        """Who replayed this dead letter, and when (the latest replay), if anyone did."""
        with self.lock:
            return self._replayed.get(letter_id)

    def command(self, command_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._commands.get(command_id)
            return None if found is None else dict(found, applied=list(found["applied"]))
