"""The JSON API: thin routes over `kafka_workflows.monitor` (see deps.py for who may call what).

Routes are `async`: whatever may block runs through `offload.read()` / `offload.act()` on the
plugin's own bounded threads, never on the thread pool Airflow's own routes need.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, Field

from kafka_workflows.errors import ConfigError
from kafka_workflows.monitor import actions
from kafka_workflows.monitor.deadletters import LetterQuery, letter_detail, read_letters
from kafka_workflows.monitor.service import Invalid, NotFound, units_of
from kafka_workflows.ops.deadletters import source_topic
from kafka_workflows_airflow.api import offload
from kafka_workflows_airflow.api.deps import EDIT, READ, MonitorDep, ReadableDep, UserNameDep, trace_link
from kafka_workflows_airflow.api.schemas import decoded_value
from kafka_workflows_airflow.control import control_secret

router = APIRouter(prefix="/api", tags=["kafka-workflows"])
Offset = Annotated[int, Query(ge=0, description="rows to skip")]
Limit = Annotated[int, Query(ge=1, le=500, description="rows to return")]


class ActionBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why: goes to the audit log")
    topic: str | None = Field(default=None, description="skip/unblock: the held partition's topic")
    partition: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0, description="skip/unblock: the held offset the operator saw")


class LetterFilter(BaseModel):
    group: str | None = None
    topic: str | None = None
    key: str | None = None
    error_type: str | None = None
    fingerprint: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class ReplayBody(BaseModel):
    ids: list[str] = Field(default_factory=list, max_length=1000, description="letters, as topic:partition:offset")
    filter: LetterFilter | None = Field(default=None, description="or every letter matching this filter")
    dry_run: bool = True
    reason: str = Field(default="", max_length=500)


def _query(monitor: MonitorDep, dag_id: str, f: LetterFilter) -> LetterQuery:
    groups = frozenset(u["group"] for u in units_of(monitor.spec(dag_id)))
    if f.group is not None and f.group not in groups:
        raise NotFound("group", f.group, f"in workflow {dag_id!r}")
    if f.since is not None and f.until is not None and (f.since.tzinfo is None) != (f.until.tzinfo is None):
        raise Invalid("until", "since and until must both carry a time zone offset, or neither")
    try:
        return LetterQuery(groups=groups, **f.model_dump())
    except ConfigError as exc:
        raise Invalid("until", str(exc)) from exc


def _filter(group: str | None = None, topic: str | None = None, key: str | None = None,
            error_type: str | None = None, fingerprint: str | None = None,
            since: Annotated[datetime | None, Query(description="ISO date-time")] = None,
            until: Annotated[datetime | None, Query(description="ISO date-time")] = None) -> LetterFilter:
    return LetterFilter(group=group, topic=topic, key=key, error_type=error_type, fingerprint=fingerprint,
                        since=since, until=until)


FilterDep = Annotated[LetterFilter, Depends(_filter)]


@router.get("/workflows", dependencies=READ, summary="Every workflow at a glance")
async def overview(monitor: MonitorDep, readable: ReadableDep) -> list[dict[str, Any]]:
    return await offload.read(monitor.overview, readable)


@router.get("/health", dependencies=READ, summary="The warm readers of this API server (of the workflows you read)")
async def health(monitor: MonitorDep, readable: ReadableDep) -> dict[str, Any]:
    return await offload.read(monitor.describe, readable)


def _audit_of(monitor: MonitorDep, names: set[str], offset: int, limit: int) -> dict[str, Any]:
    groups = {u["group"] for name in names for u in units_of(monitor.spec(name))}
    return monitor.audit.page(groups=groups, offset=offset, limit=limit)


@router.get("/audit", dependencies=READ, summary="The audit log of every workflow the caller may read, newest first")
async def audit(monitor: MonitorDep, readable: ReadableDep, offset: Offset = 0, limit: Limit = 50) -> dict[str, Any]:
    return await offload.read(_audit_of, monitor, readable, offset, limit)


@router.get("/workflows/{dag_id}", dependencies=READ, summary="One workflow: units, health, stores, audit")
async def workflow(dag_id: str, monitor: MonitorDep) -> dict[str, Any]:
    return await offload.read(monitor.workflow, dag_id)


@router.get("/workflows/{dag_id}/audit", dependencies=READ, summary="The workflow's audit log, newest first")
async def workflow_audit(dag_id: str, monitor: MonitorDep, offset: Offset = 0, limit: Limit = 50) -> dict[str, Any]:
    return await offload.read(_audit_of, monitor, {dag_id}, offset, limit)


@router.get("/workflows/{dag_id}/groups/{group}", dependencies=READ,
            summary="A group's members and partitions: committed/end offset, lag, state, held message")
async def group(dag_id: str, group: str, monitor: MonitorDep) -> dict[str, Any]:
    return await offload.read(monitor.group, dag_id, group)


@router.post("/workflows/{dag_id}/groups/{group}/{op}", dependencies=EDIT,
             summary="skip / unblock a held partition, pause / resume the group, open / close its circuit breaker "
                     "(recorded with your name)",
             responses={404: {"description": "unknown workflow/group/topic"},
                        409: {"description": "the offset is no longer held: nothing done"},
                        429: {"description": "too many actions in flight on this API server: try again"},
                        504: {"description": "no worker answered"}})
async def act(dag_id: str, group: str, op: Literal["skip", "unblock", "pause", "resume", "open", "close"],
              body: ActionBody,
              monitor: MonitorDep, by: UserNameDep) -> dict[str, Any]:
    return await offload.act(actions.act, monitor, dag_id, group, op, by=by, reason=body.reason, topic=body.topic,
                             partition=body.partition, offset=body.offset, secret=control_secret())


@router.get("/workflows/{dag_id}/dead-letters", dependencies=READ,
            summary="Dead letters of the workflow's groups, newest first, filtered and paged")
async def dead_letters(dag_id: str, monitor: MonitorDep, f: FilterDep,
                       offset: Offset = 0, limit: Limit = 50) -> dict[str, Any]:
    return await offload.read(_letters_page, monitor, dag_id, f, offset, limit)


def _letters_page(monitor: MonitorDep, dag_id: str, f: LetterFilter, offset: int, limit: int) -> dict[str, Any]:
    page = monitor.letters.page(_query(monitor, dag_id, f), offset, limit)
    for row in page["items"]:
        row["replayed"] = monitor.audit.replayed(row["id"])
        row["trace_url"] = trace_link(row.get("trace_id"))
    return page


@router.get("/workflows/{dag_id}/dead-letters/fingerprints", dependencies=READ,
            summary="Matching dead letters grouped by error fingerprint, with counts")
async def fingerprints(dag_id: str, monitor: MonitorDep, f: FilterDep) -> list[dict[str, Any]]:
    return await offload.read(lambda: monitor.letters.fingerprints(_query(monitor, dag_id, f)))


@router.get("/workflows/{dag_id}/dead-letters/{letter_id}", dependencies=READ,
            summary="One dead letter: its headers and a size-capped preview of its value")
async def dead_letter(dag_id: str, letter_id: str, monitor: MonitorDep) -> dict[str, Any]:
    return await offload.read(_letter, dag_id, letter_id, monitor)


def _letter(dag_id: str, letter_id: str, monitor: MonitorDep) -> dict[str, Any]:
    groups = {u["group"] for u in units_of(monitor.spec(dag_id))}
    row = monitor.letters.get(letter_id)
    if row is None or row["group"] not in groups:
        raise NotFound("dead letter", letter_id, f"in workflow {dag_id!r}")
    letter = read_letters(monitor.config, [letter_id]).get(letter_id)
    if letter is None:
        raise NotFound("dead letter", letter_id, "(no longer in its topic)")
    detail = {**row, **letter_detail(letter), "trace_url": trace_link(row.get("trace_id"))}
    # A value with a schema is shown decoded, with its subject and version; bytes when it does not decode.
    shown = decoded_value(monitor.spec(dag_id), source_topic(letter.topic, row["group"]), letter.value)
    return {**detail, **(shown or {})}


@router.post("/workflows/{dag_id}/dead-letters/replay", dependencies=EDIT,
             summary="Replay selected (or filtered) dead letters to their topic; dry_run shows what would move")
async def replay(dag_id: str, monitor: MonitorDep, by: UserNameDep,
                 body: Annotated[ReplayBody, Body()]) -> dict[str, Any]:
    query = _query(monitor, dag_id, body.filter) if body.filter is not None else None
    return await offload.act(actions.replay, monitor, dag_id, by=by, reason=body.reason, ids=body.ids, query=query,
                             dry_run=body.dry_run, secret=control_secret())


class CanaryBody(BaseModel):
    group: str = Field(max_length=500, description="the group whose dead letters are replayed")
    topic: str | None = Field(default=None, max_length=300, description="its topic (when it reads several)")
    key: str | None = Field(default=None, max_length=1000)
    error_type: str | None = Field(default=None, max_length=500)
    rate: float = Field(default=5.0, gt=0, le=1000, description="letters a second after the canary")
    canary: int = Field(default=5, ge=1, le=1000, description="letters sent first, judged before the rest")
    reason: str = Field(min_length=1, max_length=500, description="why: goes to the audit log")


@router.post("/workflows/{dag_id}/canary-replays", dependencies=EDIT,
             summary="Start a canary replay: K letters first, the rest at a rate while none comes back",
             responses={409: {"description": "a canary replay of that dead-letter topic is running"}})
async def canary(dag_id: str, monitor: MonitorDep, by: UserNameDep, body: Annotated[CanaryBody, Body()]
                 ) -> dict[str, Any]:
    return await offload.act(actions.start_canary, monitor, dag_id, group=body.group, topic=body.topic, by=by,
                             reason=body.reason, rate=body.rate, canary=body.canary, key=body.key,
                             error_type=body.error_type, secret=control_secret())


@router.get("/workflows/{dag_id}/canary-replays", dependencies=READ,
            summary="The canary replays started in this API server: progress and stop reason")
async def canary_list(dag_id: str, monitor: MonitorDep) -> list[dict[str, Any]]:
    return await offload.read(actions.canaries, monitor, dag_id)


@router.get("/workflows/{dag_id}/stores/{store}/requests", dependencies=READ,
            summary="A store's recent requests with status and counts")
async def requests(dag_id: str, store: str, monitor: MonitorDep, offset: Offset = 0, limit: Limit = 50,
                   status: Literal["pending", "running", "succeeded", "completed_with_failures", "corrupt",
                                   "aborted"] | None = None,
                   ) -> dict[str, Any]:
    return await offload.read(monitor.requests, dag_id, store, status=status, offset=offset, limit=limit)


@router.get("/workflows/{dag_id}/stores/{store}/requests/{request_id}", dependencies=READ,
            summary="One request: progress, rate, ETA, failed jobs with reasons, the split's row counts")
async def request(dag_id: str, store: str, request_id: str, monitor: MonitorDep) -> dict[str, Any]:
    return await offload.read(monitor.request, dag_id, store, request_id)


@router.get("/workflows/{dag_id}/runs/{run_id}", dependencies=READ,
            summary="The store requests of one DAG run, with their progress")
async def run(dag_id: str, run_id: str, monitor: MonitorDep) -> dict[str, Any]:
    found = await offload.read(monitor.run, dag_id, run_id)
    for request in found["requests"]:
        request["trace_url"] = trace_link(request.get("trace_id"))
    return found
