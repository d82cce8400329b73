"""Operator actions from the UI: skip, unblock, pause, resume a group; replay dead letters.

Every action names who did it (`by`: the Airflow user, not the OS user) and why (`reason`), and
is recorded in the control topic, which is the audit log. Skip and unblock carry the offset the
operator saw: a worker that no longer holds that offset answers "nothing held at ...", which
becomes `Conflict` and nothing is skipped. A replay is recorded as a `replayed` record (the one
the CLI's too: both replay through ops.deadletters.replay_once) listing the letters it moved. A
replay sends each letter back to the topic its dead-letter topic belongs to, one the spec
declares, and leaves out letters a replay already sent back: a second click sends nothing.

A canary replay (ops/canary.py) runs in a thread of the API server: `start_canary` starts it (one
at a time per dead-letter topic in this process), `canaries` lists the ones started here with
their progress and stop reason; their end is audited as `kind: canary`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from kafka_workflows.errors import ConfigError
from kafka_workflows.monitor.deadletters import LetterQuery, Source, replay_selection
from kafka_workflows.monitor.service import Conflict, Invalid, Monitor, NoAnswer, NotFound, units_of
from kafka_workflows.ops.canary import canary_replay
from kafka_workflows.ops.control import OPS, is_refusal, send_command
from kafka_workflows.ops.deadletters import Filter
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


MAX_CANARIES = 50  # progress of the latest canary replays kept for the page
_canaries: OrderedDict[str, dict[str, Any]] = OrderedDict()
_canaries_lock = threading.Lock()


def start_canary(monitor: Monitor, name: str, *, group: str, topic: str | None, by: str, reason: str, rate: float,
                 canary: int, key: str | None = None, error_type: str | None = None,
                 secret: str | None = None) -> dict[str, Any]:
    """Start a canary replay of group `group`'s dead letters (of `topic`, one its spec reads) in a
    thread; returns its first progress. Conflict while one of the same dead-letter topic runs."""
    unit = monitor.unit(name, group)
    topics = list(unit["topics"])
    if topic is None:
        if len(topics) != 1:
            raise Invalid("topic", f"group {group!r} reads {len(topics)} topics: name one")
        topic = topics[0]
    if topic not in topics:
        raise NotFound("topic", topic, f"in group {group!r}")
    if not reason.strip():
        raise Invalid("reason", "say why (it goes to the audit log)")
    dlq = dead_letter_topic(topic, group)
    row: dict[str, Any] = {"id": None, "group": group, "dead_letter_topic": dlq, "to": topic, "state": "starting",
                           "rate": rate, "canary": canary, "by": by, "reason": "", "sent": 0, "total": None,
                           "processed": 0, "succeeded": 0, "failed": 0, "started_at": time.time()}
    with _canaries_lock:
        if any(c["dead_letter_topic"] == dlq and c["state"] in ("starting", "canary", "running")
               for c in _canaries.values()):
            raise Conflict(f"a canary replay of {dlq} is running: wait for it to end")
        handle = f"pending-{time.monotonic_ns()}"
        _canaries[handle] = row

    def update(progress: dict[str, Any]) -> None:
        with _canaries_lock:
            row.update({k: v for k, v in progress.items() if k != "started_at"})

    def run() -> None:
        try:
            canary_replay(monitor.config, topic, group, Filter(key=key, error_type=error_type), rate=rate,
                          canary=canary, by=by, reason=reason.strip(), declared=topics, secret=secret,
                          on_progress=lambda p: update(p.to_json()))
        except Exception as exc:  # noqa: BLE001 - shown on the page, never raised into the server
            update({"state": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]})
        with _canaries_lock:
            while len(_canaries) > MAX_CANARIES:
                _canaries.popitem(last=False)

    threading.Thread(target=run, name=f"kw-canary-{dlq}", daemon=True).start()
    with _canaries_lock:
        return dict(row)


def canaries(monitor: Monitor, name: str) -> list[dict[str, Any]]:
    """The canary replays started in this process for workflow `name`'s groups, newest first."""
    groups = _query_groups(monitor, name)
    with _canaries_lock:
        return [dict(c) for c in reversed(_canaries.values()) if c["group"] in groups]
