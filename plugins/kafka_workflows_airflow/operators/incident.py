"""Airflow asks a human about an incident of a worker group, and carries out the answer.

`IncidentOperator` is a Human-in-the-loop operator (Airflow 3.1+ Required Actions): it reads the
incident that started its run (kafka_workflows.ops.incidents, fired by triggers/incidents.py
through an AssetWatcher; or `{"incident": {...}}` in a manually triggered run's conf), asks the
question in Airflow's Required Actions with the incident's facts, notifies through its
`notifiers`, and waits (Airflow 3.3+: the task awaits input, no worker slot, no triggerer). The
answer is carried out through the control topic, as every operator command is (signed with
`[kafka_workflows] control_secret` when set), with the Airflow user who answered as its `by`:

Unblock now                    `unblock` the held message (retried at once)
Skip the held message          `skip` it to the dead-letter topic, marked with who and why
Pause the group                `pause` for the form's `minutes`; it resumes on its own then
Non-blocking retries           `nonblocking`: failures move on instead of holding partitions,
                               until someone runs `kafka-workflows blocking`
Canary-replay the fingerprint  a canary replay (ops/canary.py) of the group's dead letters of the
                               incident's error type, at `canary_rate` a second, first `canary`
                               letters, stopping on its own when failures return

The task's return value (XCom) is what was done: the command, its answers, or the canary's end.
The incident is untrusted: its values reach the question only as escaped code, bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import BaseNotifier, Context, Param

from kafka_workflows.ops.incidents import Incident, parse_incident

UNBLOCK, SKIP, PAUSE, NONBLOCKING, CANARY = ("Unblock now", "Skip the held message", "Pause the group",
                                             "Non-blocking retries", "Canary-replay the fingerprint")
OPTIONS = [UNBLOCK, SKIP, PAUSE, NONBLOCKING, CANARY]


class IncidentError(RuntimeError):
    """The run has no incident this operator may act on, or the answer could not be carried out."""


def _code(value: object, limit: int = 300) -> str:
    """An untrusted value as inline Markdown code: no backticks or line breaks can end it early."""
    text = re.sub(r"[`\r\n\t]", " ", str(value))[:limit]
    return f"`` {text} ``"


class IncidentOperator(HITLOperator):
    """Ask a human what to do about an incident of one of `groups`, then do it.

    :param workflow: the workflow's name (shown in the question).
    :param groups: each worker group this DAG answers for, with its request topics (a canary replay
        goes back to these, never elsewhere).
    :param kafka_config_id: the Kafka provider's connection.
    :param pause_minutes: the form's default length of a pause.
    :param canary: letters of a canary replay judged before it goes on.
    :param canary_rate: letters a second of a canary replay after its canary.
    :param notifiers: Airflow notifiers told when the question is asked.
    :param answer_wait: seconds to wait for the workers to answer the chosen command. Longer than the
        CLI's 30 s: a group that is rebalancing (a worker fenced under load, a replica starting) answers
        late, and failing here would retry the task, which asks the human again.
    """

    template_fields: Sequence[str] = ()  # the question is made from the incident at run time

    def __init__(self, *, workflow: str, groups: Mapping[str, Sequence[str]], kafka_config_id: str = "kafka_default",
                 pause_minutes: int = 15, canary: int = 5, canary_rate: float = 1.0,
                 notifiers: Sequence[BaseNotifier] | None = None, response_timeout: timedelta | None = None,
                 answer_wait: float = 120.0, **kwargs: Any) -> None:
        super().__init__(
            subject=f"kafka-workflows: {workflow} needs a decision", options=list(OPTIONS), multiple=False,
            body="(the incident is shown when the run starts)", notifiers=notifiers, response_timeout=response_timeout,
            params={"minutes": Param(pause_minutes, type="integer", minimum=1, maximum=7 * 24 * 60,
                                     title="Pause for (minutes)", description="for “Pause the group”"),
                    "reason": Param("", type="string", maxLength=2000, title="Reason",
                                    description="recorded in the audit log with your name")},
            **kwargs)
        self.workflow = workflow
        self.groups = {group: list(topics) for group, topics in groups.items()}
        self.kafka_config_id = kafka_config_id
        self.canary = canary
        self.canary_rate = canary_rate
        self.answer_wait = answer_wait

    # -- the incident --------------------------------------------------------------------
    def incident(self, context: Context) -> Incident:
        """The run's incident: from the asset event that started it, else the run's conf."""
        from kafka_workflows_airflow.control import control_secret

        candidates: list[Any] = []
        events = context.get("triggering_asset_events") or {}
        for asset_events in events.values():
            for event in asset_events:
                payload = (getattr(event, "extra", None) or {}).get("payload")
                if isinstance(payload, Mapping):
                    candidates.append(payload.get("incident"))
        dag_run = context.get("dag_run")
        conf = getattr(dag_run, "conf", None) or {}
        if isinstance(conf, Mapping) and "incident" in conf:
            candidates.append(conf["incident"])
        if not candidates:
            raise IncidentError("this run has no incident: it is started by the status topic's incidents, or "
                                "triggered with {\"incident\": {...}} as its conf")
        incident, why = parse_incident(candidates[0], control_secret())
        if incident is None:
            raise IncidentError(f"the run's incident: {why}")
        if incident.group not in self.groups:
            raise IncidentError(f"the incident names a group this workflow does not declare ({len(incident.group)} "
                                "characters); ignored")
        return incident

    def question(self, incident: Incident) -> str:
        rows = [("group", incident.group), ("worker", incident.worker)]
        if incident.reason == "held":
            rows += [("held", f"{incident.topic}[{incident.partition}]@{incident.offset}"), ("key", incident.key),
                     ("for", f"{incident.held_for / 60:.1f} min, {incident.failures} failure(s)"),
                     ("error", incident.error or incident.error_type)]
        else:
            rows += [("error type", incident.error_type),
                     ("failures", f"{incident.count} in {incident.window:g} s")]
        lines = [f"**{'A key is stuck' if incident.reason == 'held' else 'An error spikes'}** in workflow "
                 f"{_code(self.workflow)}.", ""]
        lines += [f"- {name}: {_code(value)}" for name, value in rows]
        lines += ["", "Choose what to do; it is carried out through `kafka-workflows.control` and recorded with "
                  "your name. *Skip* and *Unblock* act on the held message; *Pause* lasts the minutes below; "
                  "*Non-blocking retries* holds until `kafka-workflows blocking`; *Canary-replay* sends the "
                  "group's dead letters of this error type back a few at a time."]
        return "\n".join(lines)

    def execute(self, context: Context) -> Any:
        incident = self.incident(context)
        what = "stuck key" if incident.reason == "held" else f"{incident.error_type} spike"[:80]
        self.subject = f"{self.workflow}: {what} in group {incident.group}"[:200]
        self.body = self.question(incident)
        self.log.info("incident %s: %s; asking a human", incident.id, incident.summary())
        return super().execute(context)

    # -- the answer ----------------------------------------------------------------------
    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        answer = super().execute_complete(context, event)
        incident = self.incident(context)
        [choice] = answer["chosen_options"]
        params = answer.get("params_input") or {}
        user = answer.get("responded_by_user") or {}
        by = str(user.get("name") or user.get("id") or "airflow")
        reason = str(params.get("reason") or "").strip() or f"incident {incident.id}: {incident.summary()}"
        self.log.info("%s chose %r for incident %s", by, choice, incident.id)
        done = self.carry_out(choice, incident, by, reason[:2000], params)
        return {"incident": incident.id, "choice": choice, "by": by, **done}

    def carry_out(self, choice: str, incident: Incident, by: str, reason: str, params: Mapping[str, Any]
                  ) -> dict[str, Any]:
        from kafka_workflows.ops.control import is_refusal, send_command
        from kafka_workflows_airflow.control import control_secret
        from kafka_workflows_airflow.hooks import KafkaWorkflowsHook

        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        secret = control_secret()
        if choice == CANARY:
            return self._canary(config, incident, by, reason, secret)
        if choice in (UNBLOCK, SKIP) and incident.reason != "held":
            raise IncidentError(f"{choice!r} acts on a held message; this incident is an error spike")
        op = {UNBLOCK: "unblock", SKIP: "skip", PAUSE: "pause", NONBLOCKING: "nonblocking"}[choice]
        minutes = float(params.get("minutes") or 15) if op == "pause" else None
        command, applied = send_command(
            config, op, incident.group, topic=incident.topic if op in ("skip", "unblock") else None,
            partition=incident.partition if op in ("skip", "unblock") else None,
            offset=incident.offset if op in ("skip", "unblock") else None,
            key=incident.key if op in ("skip", "unblock") else None, reason=reason, by=by, secret=secret,
            minutes=minutes, wait=self.answer_wait)
        results = [str(a.get("result")) for a in applied]
        for result in results:
            self.log.info("%s: %s", op, result)
        if not applied:
            raise IncidentError(f"no worker of group {incident.group} answered {op} (command {command.id})")
        if all(is_refusal(r) for r in results):
            raise IncidentError(f"the workers refused {op}: is [kafka_workflows] control_secret theirs?")
        return {"op": op, "command": command.id, "results": results}

    def _canary(self, config: Mapping[str, Any], incident: Incident, by: str, reason: str, secret: str | None
                ) -> dict[str, Any]:
        from kafka_workflows.ops.canary import canary_replay
        from kafka_workflows.ops.deadletters import Filter

        topics = self.groups[incident.group]
        if incident.topic in topics:
            topics = [incident.topic]
        ends = []
        for topic in topics:
            progress = canary_replay(config, topic, incident.group, Filter(error_type=incident.error_type or None),
                                     rate=self.canary_rate, canary=self.canary, by=by, reason=reason,
                                     secret=secret, on_progress=lambda p: self.log.info("canary: %s", p.to_json()))
            ends.append(progress.to_json())
        return {"op": "canary", "canaries": ends}
