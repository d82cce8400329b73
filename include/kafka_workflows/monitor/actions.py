"""Operator actions from the UI: skip, unblock, pause, resume a group; replay dead letters.

Every action names who did it (`by`: the Airflow user, not the OS user) and why (`reason`), and
is recorded in the control topic, which is the audit log. Skip and unblock carry the offset the
operator saw: a worker that no longer holds that offset answers "nothing held at ...", which
becomes `Conflict` and nothing is skipped. A replay is recorded as a `replayed` record (the one
the CLI's too: both replay through ops.deadletters.replay_once) listing the letters it moved. A
replay sends each letter back to the topic its dead-letter topic belongs to, one the spec
declares, and leaves out letters a replay already sent back: a second click sends nothing.
"""

from __future__ import annotations

import time
from typing import Any

from kafka_workflows.errors import ConfigError
from kafka_workflows.monitor.deadletters import LetterQuery, Source, replay_selection
from kafka_workflows.monitor.service import Conflict, Invalid, Monitor, NoAnswer, NotFound, units_of
from kafka_workflows.ops.control import OPS, is_refusal, send_command
from kafka_workflows.retry.topics import dead_letter_topic


def act(monitor: Monitor, name: str, group: str, op: str, *, by: str, reason: str, topic: str | None = None,
        partition: int | None = None, offset: int | None = None, wait: float = 20.0,
        secret: str | None = None) -> dict[str, Any]:
    """Send `op` to the workers of `group` and return the command with the workers' answers.

    `secret`: the control secret (Airflow's `[kafka_workflows] control_secret`), else the env
    variable's; the command is signed with it. Workers that refuse it make this a Conflict.
    """
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
                                    reason=reason.strip(), by=by, wait=wait, secret=secret)
    answers = [{"worker": a.get("worker"), "result": a.get("result")} for a in applied]
    if not answers:
        raise NoAnswer(f"no worker of group {group!r} answered the {op} command {command.id} within {wait:.0f}s "
                       "(is a worker of the group running?)")
    if all(is_refusal(str(a["result"])) for a in answers):
        raise Conflict(f"the workers of group {group!r} refused the {op} command ({answers[0]['result']}): "
                       "is the same control secret set here and on the workers?")
    if op in ("skip", "unblock") and all(str(a["result"]).startswith("nothing held") for a in answers):
        raise Conflict(f"{topic}[{partition}] is no longer held at offset {offset}: nothing was done "
                       f"({answers[0]['result']}); reload to see its current state")
    return {"command": command.to_json(), "answers": answers}


def _query_groups(monitor: Monitor, name: str) -> frozenset[str]:
    return frozenset(u["group"] for u in units_of(monitor.spec(name)))


def replay_sources(monitor: Monitor, name: str) -> dict[str, Source]:
    """Each dead-letter topic of workflow `name` (`<topic>.<group>.dlq` of a topic a group of its
    spec reads) and the topic its letters go back to: the only places a replay may write."""
    sources: dict[str, Source] = {}
    for unit in units_of(monitor.spec(name)):
        for topic in unit["topics"]:
            sources[dead_letter_topic(topic, unit["group"])] = Source(unit["group"], topic, tuple(unit["topics"]))
    return sources


def replay(monitor: Monitor, name: str, *, by: str, reason: str, ids: list[str] | None = None,
           query: LetterQuery | None = None, dry_run: bool = True, secret: str | None = None) -> dict[str, Any]:
    """Replay the letters `ids` (or every letter matching `query`) of workflow `name`, each to the
    source topic of its dead-letter topic; letters replayed before are left out (`already_replayed`)."""
    groups = _query_groups(monitor, name)
    sources = replay_sources(monitor, name)
    if ids:
        rows = []
        for letter_id in ids:
            row = monitor.letters.get(letter_id)
            if row is None or row["topic"] not in sources:
                raise NotFound("dead letter", letter_id, f"in workflow {name!r}")
            rows.append(row)
    elif query is not None:
        rows = [r for r in monitor.letters.matching(LetterQuery(**{**query.__dict__, "groups": groups}))
                if r["topic"] in sources]
    else:
        raise Invalid("ids", "name the letters to replay, or a filter")
    if not dry_run and not reason.strip():
        raise Invalid("reason", "say why (it goes to the audit log)")
    try:
        result = replay_selection(monitor.config, rows, dry_run, sources, by=by, reason=reason.strip(), secret=secret)
    except ConfigError as exc:
        raise Invalid("ids", str(exc)) from exc
    except LookupError as exc:
        raise Conflict(str(exc)) from exc
    if result["moves"] and not dry_run:
        last = result["moves"][-1]["id"]
        deadline = time.monotonic() + 3.0  # so the next page shows the letters as replayed
        while monitor.audit.replayed(last) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    return result
