"""What a worker does with the control commands addressed to its group.

skip     dead-letter the held message (marked with who, why and when), move past it, resume;
unblock  retry the held message now, whatever its backoff or kw-retry-at says;
pause    pause every assigned partition (kept across rebalances until resumed); with `until` (epoch
         seconds: "pause for N minutes") the worker resumes on its own then (`tick`);
resume   resume every assigned partition that no hold keeps paused (nor an open circuit breaker);
nonblocking  non-blocking retries until `blocking`: the policy without its blocking part, so a
         failure moves on to the retry topics (or, with none declared, the dead-letter topic, for a
         replay later) instead of holding its partition; what is held now is retried at once;
blocking the declared retry policy again;
open     open the group's circuit breaker (retry/breaker.py): an operator's stays open until closed;
         `auto` (told by a worker whose breaker tripped) probes after its cool-down;
close    close it: held messages are retried now and the partitions resume (worker/loop.py).

skip and unblock act only on a partition this worker owns, and only when the offset given is the
one held (skip always names it). Each command that was acted on gets an `applied` record on the
control topic, next to the command: the audit log. A record of the wrong shape is logged, counted
(`kw_worker_control_ignored_total`) and otherwise ignored: no record can stop a worker.

With a control secret (KAFKA_WORKFLOWS_CONTROL_SECRET), an unsigned, wrongly signed, stale or
repeated command is refused (ops/control.py `CommandGate`): counted like an ignored record and
answered in the audit with `result: "refused: …"`. Those answers are rate-limited
(REFUSALS_PER_MINUTE per worker), so a flood of forged commands cannot make every worker flood the
control topic in turn; past the limit refusals are only logged and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from kafka_workflows.ops.control import CONTROL_TOPIC, CommandGate, CommandRecord, is_refusal, refusal_record
from kafka_workflows.worker.context import WorkerContext
from kafka_workflows.worker.holds import FOREVER, Hold
from kafka_workflows.worker.outcomes import Outcomes

log = logging.getLogger(__name__)

TP = tuple[str, int]
KNOWN_KINDS = ("command", "applied", "replayed")
REFUSALS_PER_MINUTE = 10


class Operations:
    """The operator-facing state of one worker (paused or not) and the commands that change it."""

    def __init__(self, ctx: WorkerContext, outcomes: Outcomes, member: str, assignment: set[TP],
                 send: Callable[[str, Mapping[str, Any], str], None], on_ignored: Callable[[str], None],
                 paused: bool = False, breaker_paused: Callable[[], bool] = lambda: False) -> None:
        self.ctx = ctx
        self.outcomes = outcomes
        self.group = ctx.group
        self.member = member
        self.assignment = assignment  # the worker's live set
        self._send = send  # an advisory write: the applied record
        self._on_change = ctx.on_change
        self.on_ignored = on_ignored
        self.paused = paused  # the group's state when the worker started (ops.status.group_paused)
        self.breaker_paused = breaker_paused  # the partitions are paused for an open circuit breaker
        self.keyed: Any = None  # a worker with concurrency: skip/unblock act on a key's hold there
        self.gate = CommandGate()  # the secret from KAFKA_WORKFLOWS_CONTROL_SECRET, when set
        self._refusals: list[float] = []  # when the last refusal answers were written (rate limit)
        self.paused_until: float | None = None  # epoch seconds a pause for N minutes ends
        self.declared = ctx.policy  # the spec's retry policy (`nonblocking` swaps ctx.policy until `blocking`)

    @property
    def nonblocking(self) -> bool:
        return self.ctx.policy is not self.declared

    def set_nonblocking(self, on: bool) -> None:
        """Non-blocking retries (the declared policy without `blocking`), or the declared policy."""
        self.ctx.policy = self.declared.model_copy(update={"blocking": None}) if on else self.declared

    def tick(self, consumer: Consumer, now: float | None = None) -> None:
        """A pause for N minutes that is over ends here: the worker resumes as for `resume`."""
        if self.paused_until is None or (time.time() if now is None else now) < self.paused_until:
            return
        self.paused_until = None
        if self.paused:
            result = self._resume(consumer)
            log.warning("the pause of group %s is over: %s", self.group, result)
            self._send(CONTROL_TOPIC, {"kind": "applied", "command": None, "op": "resume", "group": self.group,
                                       "worker": self.member, "result": f"pause over: {result}",
                                       "at": time.time()}, self.group)
            self._on_change()

    def apply(self, consumer: Consumer, raw: Mapping[str, Any]) -> None:
        kind, group = raw.get("kind"), raw.get("group")
        if (kind in KNOWN_KINDS and kind != "command") or (kind == "command" and isinstance(group, str)
                                                          and group != self.group):
            return  # applied records, replays, other groups' commands: not ours
        where = str(raw.get("_where", CONTROL_TOPIC))
        record, why = self.gate.admit(raw, where)
        if record is None:
            self.on_ignored(f"{where}: {why}" if is_refusal(why) else why or "control record ignored")
            if is_refusal(why) and self._may_answer_refusal():
                self._send(CONTROL_TOPIC, refusal_record(raw, self.group, self.member, why or ""), self.group)
            return
        self._apply(consumer, record)

    def _may_answer_refusal(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._refusals = [t for t in self._refusals if t > now - 60.0]
        if len(self._refusals) >= REFUSALS_PER_MINUTE:
            return False
        self._refusals.append(now)
        return True

    def _apply(self, consumer: Consumer, record: CommandRecord) -> None:
        op, tp = record.op, (record.topic, record.partition)
        held = self.ctx.holds
        result: str | None = None
        if op in ("skip", "unblock") and self.keyed is not None:
            if tp not in self.assignment:
                return  # another member owns it and answers
            result = self.keyed.operate(consumer, op, tp, record.model_dump(), self.paused)
        elif op in ("skip", "unblock"):
            if tp not in self.assignment:
                return  # another member owns it and answers
            hold = held.get(tp)  # type: ignore[arg-type]
            wanted = record.offset
            if hold is None or (wanted is not None and wanted != hold.offset):
                result = f"nothing held at {tp[0]}[{tp[1]}]" + (f"@{wanted}" if wanted is not None else "")
            elif op == "unblock":
                hold.due, hold.forced = 0.0, True
                result = f"retrying {tp[0]}[{tp[1]}]@{hold.offset} now"
            else:
                self._skip(consumer, tp, hold, record)  # type: ignore[arg-type]
                result = f"skipped {tp[0]}[{tp[1]}]@{hold.offset} to the dead-letter topic"
        elif op == "pause":
            self.paused = True
            self.paused_until = record.until
            consumer.pause([TopicPartition(t, p) for t, p in self.assignment])
            result = f"paused {len(self.assignment)} partition(s)" + (
                "" if record.until is None else f" for {max(0.0, record.until - record.at) / 60:g} min")
        elif op == "resume":
            self.paused_until = None
            result = self._resume(consumer)
        elif op in ("nonblocking", "blocking"):
            before = self.nonblocking
            self.set_nonblocking(op == "nonblocking")
            retried = 0
            if op == "nonblocking":  # what is held now moves on at its next failure: retried now
                for hold in held.values():
                    if hold.kind == "blocked" and hold.due != FOREVER:
                        hold.due, retried = 0.0, retried + 1
                if self.keyed is not None:
                    retried += self.keyed.retry_now()
            mode = "non-blocking" if op == "nonblocking" else "declared"
            result = (f"retries {'already ' if before == (op == 'nonblocking') else ''}{mode}"
                      + (f"; {retried} held message(s) retried now" if retried else ""))
        elif op in ("open", "close"):
            breaker = self.ctx.breaker
            if breaker is None:
                result = "no circuit breaker declared for this group"
            elif op == "open":
                before = breaker.state
                if not (record.auto and before != "closed"):  # a peer's trip does not undo an operator's open
                    breaker.open(f"opened by {record.by}: {record.reason or 'no reason'}", forced=not record.auto)
                result = f"circuit breaker {before} -> open" + ("" if record.auto else " (until closed)")
            else:
                before = breaker.state
                if not (record.auto and breaker.forced):  # a peer's probe does not undo an operator's open
                    breaker.close(f"closed by {record.by}: {record.reason or 'no reason'}")
                result = f"circuit breaker {before} -> {breaker.state}"
        if result is None:
            return
        log.warning("operation %s by %s (%s): %s", op, record.by, record.reason or "no reason", result)
        self._send(CONTROL_TOPIC, {
            "kind": "applied", "command": record.id, "op": op, "group": self.group, "worker": self.member,
            "result": result, "at": time.time()}, self.group)
        self._on_change()

    def _resume(self, consumer: Consumer) -> str:
        self.paused = False
        if self.breaker_paused():
            return "resumed; the circuit breaker is open: the partitions resume when it closes"
        held = self.ctx.holds
        ready = [TopicPartition(t, p) for t, p in self.assignment if (t, p) not in held or held[(t, p)].due == FOREVER]
        consumer.resume(ready)
        return f"resumed {len(ready)} partition(s)"

    def _skip(self, consumer: Consumer, tp: TP, hold: Hold, record: CommandRecord) -> None:
        ctx = self.ctx
        self.outcomes.skip(ctx.boundary.read(hold.raw), hold.error, record.model_dump())
        del ctx.holds[tp]
        ctx.checkpoint.done(tp, hold.offset + 1)
        ctx.commit(consumer)
        consumer.seek(TopicPartition(tp[0], tp[1], hold.offset + 1))
        if not self.paused:
            consumer.resume([TopicPartition(*tp)])
