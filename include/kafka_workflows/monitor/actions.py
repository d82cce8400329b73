"""Operator actions from the UI: skip, unblock, pause, resume a group; replay dead letters.

Every action names who did it (`by`: the Airflow user, not the OS user) and why (`reason`), and
is recorded in the control topic, which is the audit log. Skip and unblock carry the offset the
operator saw: a worker that no longer holds that offset answers "nothing held at ...", which
becomes `Conflict` and nothing is skipped. A replay is recorded as a `replayed` record (the one
ops.control.record_replay writes for the CLI too) listing the letters it moved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kafka_workflows.errors import ConfigError
from kafka_workflows.monitor.deadletters import LetterQuery, replay_selection
from kafka_workflows.monitor.service import Conflict, Invalid, Monitor, NoAnswer, NotFound, units_of
from kafka_workflows.ops.control import OPS, record_replay, send_command


def act(monitor: Monitor, name: str, group: str, op: str, *, by: str, reason: str, topic: str | None = None,
        partition: int | None = None, offset: int | None = None, wait: float = 20.0) -> dict[str, Any]:
    """Send `op` to the workers of `group` and return the command with the workers' answers."""
    unit = monitor.unit(name, group)
    if op not in OPS:
        raise NotFound("operation", op, f"(expected one of {', '.join(OPS)})")
    if not reason.strip():
        raise Invalid("reason", "say why (it goes to the audit log)")
    if op in ("skip", "unblock"):
        for field, value in (("topic", topic), ("partition", partition), ("offset", offset)):
            if value is None:
                raise Invalid(field, f"{op} needs the topic, partition and offset of the held message")
        assert topic is not None and partition is not None
        if topic not in unit["topics"] and not topic.startswith(tuple(f"{t}.{group}.retry-" for t in unit["topics"])):
            raise NotFound("topic", topic, f"in group {group!r}")
    command, applied = send_command(monitor.config, op, group, topic=topic, partition=partition, offset=offset,
                                    reason=reason.strip(), by=by, wait=wait)
    answers = [{"worker": a.get("worker"), "result": a.get("result")} for a in applied]
    if not answers:
        raise NoAnswer(f"no worker of group {group!r} answered the {op} command {command.id} within {wait:.0f}s "
                       "(is a worker of the group running?)")
    if op in ("skip", "unblock") and all(str(a["result"]).startswith("nothing held") for a in answers):
        raise Conflict(f"{topic}[{partition}] is no longer held at offset {offset}: nothing was done "
                       f"({answers[0]['result']}); reload to see its current state")
    return {"command": command.to_json(), "answers": answers}


def _query_groups(monitor: Monitor, name: str) -> frozenset[str]:
    return frozenset(u["group"] for u in units_of(monitor.spec(name)))


def replay(monitor: Monitor, name: str, *, by: str, reason: str, ids: list[str] | None = None,
           query: LetterQuery | None = None, dry_run: bool = True) -> dict[str, Any]:
    """Replay the letters `ids` (or every letter matching `query`) of workflow `name`."""
    groups = _query_groups(monitor, name)
    if ids:
        rows = []
        for letter_id in ids:
            row = monitor.letters.get(letter_id)
            if row is None or row["group"] not in groups:
                raise NotFound("dead letter", letter_id, f"in workflow {name!r}")
            rows.append(row)
    elif query is not None:
        rows = monitor.letters.matching(LetterQuery(**{**query.__dict__, "groups": groups}))
    else:
        raise Invalid("ids", "name the letters to replay, or a filter")
    if not dry_run and not reason.strip():
        raise Invalid("reason", "say why (it goes to the audit log)")
    try:
        result = replay_selection(monitor.config, rows, dry_run)
    except ConfigError as exc:
        raise Invalid("ids", str(exc)) from exc
    except LookupError as exc:
        raise Conflict(str(exc)) from exc
    if not dry_run and rows:
        _record_replay(monitor.config, rows, by, reason.strip())
        deadline = time.monotonic() + 3.0  # so the next page shows the letters as replayed
        while monitor.audit.replayed(rows[-1]["id"]) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    return result


def _record_replay(config: Mapping[str, Any], rows: list[dict[str, Any]], by: str, reason: str) -> None:
    """One `replayed` record per group and dead-letter topic (ops.control.record_replay): the audit
    log shows it, and a later replay of the same letters leaves them out unless asked again."""
    chosen: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        chosen.setdefault((row["group"], row["id"].rsplit(":", 2)[0]), []).append(row["id"])
    for (group, topic), ids in chosen.items():
        record_replay(config, group, topic, ids, by, reason)
