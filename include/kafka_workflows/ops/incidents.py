"""Incidents: when a worker group needs a human. Detected by the worker (no Airflow here), published
to the status topic, answered in Airflow (the plugin's incident DAG asks a human; see the README).

held   a key (with concurrency) or a partition stays held behind one failing message for
       `held_after` seconds or more: its message is named (topic, partition, offset, key) and its
       last error.
spike  one error fingerprint (the exception's class name, as the dead-letter explorer groups
       letters) fails `spike` times within `window` seconds.

An incident is published once: a hold once per held message, a fingerprint at most once per
`window` (and not again while its spike goes on). It goes to `kafka-workflows.status` under the key
`incident/<group>` (compacted: the latest incident per group stays readable) as
`{"kind": "incident", ...}`, signed like a command when a control secret is configured. Who reads
it trusts nothing of it but what `parse_incident` lets through: strict types, bounded strings.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, StrictInt, StrictStr, ValidationError

from kafka_workflows.ops.control import control_secret, signature_problem
from kafka_workflows.strict_model import StrictModel

INCIDENT_PREFIX = "incident/"
MAX_ERROR = 500  # characters of an error message an incident carries


def incident_key(group: str) -> str:
    """The status-topic key of a group's latest incident."""
    return f"{INCIDENT_PREFIX}{group}"


class IncidentPolicy(StrictModel):
    """`incidents:` of a worker spec: when the group asks a human."""

    held_after: PositiveFloat = Field(default=300.0, description="seconds a key or partition stays held behind "
                                                                 "one failing message before a human is asked")
    spike: PositiveInt = Field(default=50, description="failures of one error fingerprint within `window` that "
                                                       "ask a human")
    window: PositiveFloat = Field(default=60.0, description="seconds the fingerprint's failures are counted over")
    email: list[str] = Field(default_factory=list, max_length=50,
                             description="Airflow side: addresses the question is mailed to (Airflow's SMTP "
                                         "connection), besides the task log")
    pause_minutes: PositiveInt = Field(default=15, le=7 * 24 * 60,
                                       description="Airflow side: the question's default length of a pause")


class Incident(BaseModel):
    """An incident as a reader accepts it (untrusted: strict and bounded)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["incident"]
    id: StrictStr = Field(max_length=64)
    reason: Literal["held", "spike"]
    group: StrictStr = Field(min_length=1, max_length=500)
    worker: StrictStr = Field(default="", max_length=500)
    topic: StrictStr | None = Field(default=None, max_length=249)
    partition: StrictInt | None = Field(default=None, ge=0)
    offset: StrictInt | None = Field(default=None, ge=0)
    key: StrictStr | None = Field(default=None, max_length=1000)
    error_type: StrictStr = Field(default="", max_length=200)
    error: StrictStr = Field(default="", max_length=MAX_ERROR + 20)
    failures: StrictInt = Field(default=0, ge=0)
    held_for: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # held: seconds so far
    count: StrictInt = Field(default=0, ge=0)  # spike: failures in the window
    window: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    at: float = Field(allow_inf_nan=False)

    def summary(self) -> str:
        if self.reason == "held":
            return (f"{self.topic}[{self.partition}]@{self.offset} (key {self.key!r}) held for "
                    f"{self.held_for / 60:.1f} min by {self.error_type or 'an error'}")
        return f"{self.error_type} failed {self.count} times in {self.window:g}s"


def parse_incident(record: Any, secret: str | None = None) -> tuple[Incident | None, str | None]:
    """(the incident, None) or (None, why not), naming fields, never quoting values. With a control
    secret (`secret`, else the env variable) an incident must be signed with it."""
    try:
        incident = Incident.model_validate(record)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "(record)" for err in exc.errors())
        return None, f"incident of the wrong shape ignored (fields: {fields})"
    if control_secret(secret) is not None:
        problem = signature_problem(record, secret)
        if problem is not None:
            return None, f"incident refused: {problem}"
    return incident, None


class IncidentWatch:
    """One worker's detector (pure: times passed in). `failed` on every handler failure (its new
    incidents also kept in `pending`); `check` with the worker's holds (their `describe()` dicts) now
    and then; both return new incidents."""

    def __init__(self, policy: IncidentPolicy, group: str, member: str) -> None:
        self.policy = policy
        self.group = group
        self.member = member
        self._failures: dict[str, deque[float]] = {}
        self._spiking: dict[str, float] = {}  # fingerprint -> when its last incident was raised
        self._asked: set[tuple[Any, ...]] = set()  # held messages asked about already
        self.pending: list[dict[str, Any]] = []  # spikes found by `failed`, for the worker to publish

    def _incident(self, reason: str, now: float, **fields: Any) -> dict[str, Any]:
        return {"kind": "incident", "id": uuid.uuid4().hex, "reason": reason, "group": self.group,
                "worker": self.member, "at": now, **fields}

    def failed(self, error_type: str, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        seen = self._failures.setdefault(error_type[:200], deque())
        seen.append(now)
        horizon = now - self.policy.window
        while seen and seen[0] < horizon:
            seen.popleft()
        if len(self._failures) > 1000:  # bounded: the quiet fingerprints go
            for name in [n for n, q in self._failures.items() if not q or q[-1] < horizon]:
                del self._failures[name]
                self._spiking.pop(name, None)
        if len(seen) < self.policy.spike:
            return []
        last = self._spiking.get(error_type)
        self._spiking[error_type] = now
        if last is not None and last >= horizon:  # the spike goes on: asked already
            return []
        incident = self._incident("spike", now, error_type=error_type[:200], count=len(seen),
                                  window=self.policy.window)
        self.pending.append(incident)
        return [incident]

    def check(self, holds: Iterable[Mapping[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        out = []
        current = set()
        for hold in holds:
            if hold.get("kind") != "blocked" or not isinstance(hold.get("since"), int | float):
                continue
            ident = (hold.get("topic"), hold.get("partition"), hold.get("offset"), hold.get("key"))
            current.add(ident)
            if ident in self._asked or now - hold["since"] < self.policy.held_after:
                continue
            self._asked.add(ident)
            error = str(hold.get("error") or "")
            error_type = error.partition(":")[0].strip()
            out.append(self._incident(
                "held", now, topic=hold.get("topic"), partition=hold.get("partition"), offset=hold.get("offset"),
                key=None if hold.get("key") is None else str(hold["key"])[:1000], error_type=error_type[:200],
                error=error[:MAX_ERROR], failures=int(hold.get("failures") or 0),
                held_for=round(now - hold["since"], 1)))
        self._asked &= current  # a released hold may be asked about again if it comes back
        return out
