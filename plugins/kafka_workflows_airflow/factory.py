"""Workflow specs -> Airflow DAGs. A thin layer: every step kind is one of our operators, built
with the spec's arguments, so YAML and Python share one implementation.

`dags_from_folder` builds each spec on its own. A spec that does not validate or build becomes
a paused stand-in DAG under the workflow's name whose description carries the error and whose
only task fails with it, and a parse warning attributed to the YAML file and line; the other
workflows of the folder load as usual. (Airflow 3 records import errors against the .py file it
parsed, and a single loader module must not fail as a whole, so a per-YAML import error is not
available to it.)
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, BaseOperator, Param

from kafka_workflows.handlers import resolve_callable
from kafka_workflows.spec import (
    ASSETS_TASK_SUFFIX,
    NAME,
    Problem,
    SpecError,
    StepSpec,
    WorkflowSpec,
    line_of,
    load_specs,
)

log = logging.getLogger(__name__)

KIND_OPERATORS = {
    "produce": "kafka_workflows_airflow.operators.produce.ProduceRequestsOperator",
    "split": "kafka_workflows_airflow.operators.split.SplitToJobsOperator",
    "await": "kafka_workflows_airflow.sensors.completion.AwaitCompletionSensor",
    "notify": "kafka_workflows_airflow.operators.notify.NotifyOperator",
}


class InvalidWorkflowSpec(UserWarning):
    """Emitted while parsing dags/: a workflow spec that does not validate or build."""


def param_of(spec: Any) -> Param:
    """The Airflow Param of a spec's param (the trigger form's field; Kafka in validates conf with it)."""
    kind: Any = [spec.type, "null"] if spec.nullable else spec.type
    extra = {k: v for k, v in (("enum", spec.enum), ("format", spec.format), ("title", spec.title),
                               ("minimum", spec.minimum), ("maximum", spec.maximum),
                               ("minLength", spec.min_length)) if v is not None}
    if spec.required:  # no default: the trigger form and the REST API must give it
        return Param(type=kind, description=spec.description, **extra)
    return Param(spec.default, type=kind, description=spec.description, **extra)


def kafka_group(spec: WorkflowSpec, step: StepSpec) -> str | None:
    """The consumer group handling a step's messages, for its "Kafka group" link (links.py): the worker
    (or exactly-once processor) consuming a split/produce step's topic; for await, the worker reporting
    to its store (the only one that reports to a store when the store is templated). None when the spec
    does not say."""
    body = step.body.model_dump(by_alias=False)
    if step.kind in ("split", "produce"):
        topic = body.get("topic")
        groups = [u.group for u in (*spec.workers, *spec.processors) if isinstance(topic, str) and topic in u.topics]
    elif step.kind == "await":
        store = body.get("store")
        groups = [w.group for w in spec.workers if w.store is not None and w.store == store]
        if not groups and not (isinstance(store, str) and "{{" not in store):
            groups = list(dict.fromkeys(w.group for w in spec.workers if w.store is not None))
    else:
        return None
    return groups[0] if len(set(groups)) == 1 else None


def _operator(step: StepSpec, dag: DAG, spec: WorkflowSpec | None = None) -> BaseOperator:
    common: dict[str, Any] = {"task_id": step.id, "retries": step.retries,
                              "retry_delay": pendulum.duration(seconds=step.retry_delay), "dag": dag}
    if step.doc:
        common["doc_md"] = step.doc
    if step.kind == "python":
        from airflow.providers.standard.operators.python import PythonOperator

        assert step.python is not None
        return PythonOperator(python_callable=resolve_callable(step.python.callable, "python.callable"),
                              op_kwargs=dict(step.python.kwargs), **common)
    if step.kind == "operator":
        assert step.operator is not None
        cls = resolve_callable(step.operator.class_, "operator class")
        if not (isinstance(cls, type) and issubclass(cls, BaseOperator)):
            raise TypeError(f"{step.operator.class_} is not an Airflow operator class")
        return cls(**dict(step.operator.kwargs), **common)
    cls = resolve_callable(KIND_OPERATORS[step.kind], f"{step.kind} operator")
    # produce: every field; split/await/notify: what the spec says (declared fields such as allowed_sources too).
    args = step.body.model_dump(by_alias=False, exclude_unset=step.kind != "produce")
    if step.kind in ("produce", "split") and spec is not None and isinstance(args.get("topic"), str):
        from kafka_workflows.schemas.resolve import declared

        value_schema = declared(spec, args["topic"])  # read at parse time: the operator gets data only
        if value_schema is not None:
            args["value_schema"] = value_schema
    if step.kind == "await" and args.get("outlets"):  # URIs in the spec, Assets in Airflow
        args["outlets"] = [Asset(name=uri, uri=uri) for uri in args["outlets"]]
        if step.await_ is not None and step.await_.assets_task:  # `_assets_task` records them: it ends in the triggerer
            del args["outlets"]
    operator: BaseOperator = cls(**args, **common)
    return operator


def _assets_task(step: StepSpec, dag: DAG) -> BaseOperator:
    """The task that records an await step's outlets when the await ends in the triggerer (operators/assets.py),
    with the await's retries."""
    from kafka_workflows_airflow.operators.assets import RecordRequestAssetsOperator

    assert step.await_ is not None and step.await_.outlets
    body = step.await_.model_dump(by_alias=False)
    return RecordRequestAssetsOperator(
        task_id=step.id + ASSETS_TASK_SUFFIX, dag=dag, retries=step.retries,
        retry_delay=pendulum.duration(seconds=step.retry_delay),
        result=f"{{{{ ti.xcom_pull(task_ids='{step.id}') }}}}", request_id=body.get("request_id"),
        store=body.get("store"), outlets=[Asset(name=uri, uri=uri) for uri in step.await_.outlets],
        doc_md=f"Records the asset events of the request `{step.id}` finished ({', '.join(step.await_.outlets)}).")


def _dag(spec: WorkflowSpec, file: str) -> DAG:
    return DAG(
        dag_id=spec.name,
        description=spec.description,
        schedule=spec.schedule,
        start_date=pendulum.parse(spec.start_date, tz="UTC"),
        catchup=spec.catchup,
        tags=["kafka-workflows", *spec.tags],
        params={name: param_of(p) for name, p in spec.params.items()},
        render_template_as_native_obj=True,  # templated requests/kwargs render to lists and dicts
        doc_md=f"Declared in `{Path(file).name}`.\n\n{spec.description or ''}",
    )


def build_dag(spec: WorkflowSpec, text: str = "", file: str = "<spec>") -> DAG:
    """One DAG for one spec; an operator that refuses its arguments raises SpecError naming the step."""
    try:
        dag = _dag(spec, file)
    except Exception as exc:  # Airflow refused the DAG itself (schedule, params): name it
        raise SpecError(file, [Problem("(workflow)", f"Airflow refused the DAG: {type(exc).__name__}: {exc}",
                                       1)]) from exc
    tasks: dict[str, BaseOperator] = {}
    for index, step in enumerate(spec.steps):
        try:
            tasks[step.id] = _operator(step, dag, spec)
            group = kafka_group(spec, step)
            if group is not None:
                tasks[step.id].kafka_group = group  # type: ignore[attr-defined]  # read by links.KafkaGroupLink
        except Exception as exc:  # any refusal becomes a spec error naming the step
            loc = ("steps", index, "await" if step.kind == "await" else step.kind)
            raise SpecError(file, [Problem(f"steps[{index}].{step.kind}", f"{type(exc).__name__}: {exc}",
                                           line_of(text, loc) if text else None)]) from exc
    for step_id, upstream in spec.dependencies().items():
        for parent in upstream:
            tasks[parent] >> tasks[step_id]
    for step in spec.steps:
        if step.await_ is not None and step.await_.assets_task:
            tasks[step.id] >> _assets_task(step, dag)
    return dag


class KafkaInUnavailable(RuntimeError):
    """The installed Airflow or Kafka provider is too old for `trigger:` (the rest of a spec works)."""


MAX_RUNS_PER_DISPATCH = 1000  # below Airflow's [core] max_map_length (1024)


def kafka_in_dag(spec: WorkflowSpec) -> DAG:
    """Kafka in (`trigger:`): the DAG `<workflow>.kafka_in`, scheduled on the asset the workflow's
    KafkaInTrigger watches, that starts one run of the workflow per asset event (per record). Its
    delivery guarantee is in triggers/kafka_in.py's docstring."""
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import AssetWatcher

    try:
        from kafka_workflows_airflow.triggers.kafka_in import KafkaInTrigger, asset_uri, default_group
    except ImportError as exc:  # includes the provider's "needs Airflow 3.3+" (below)
        raise KafkaInUnavailable(f"trigger: (Kafka in) needs Airflow 3.3+ and the Kafka provider's shared-stream "
                                 f"triggers (apache-airflow-providers-apache-kafka 2.1+): {exc}") from None
    except Exception as exc:
        if type(exc).__name__ != "AirflowOptionalProviderFeatureException":
            raise
        raise KafkaInUnavailable(f"trigger: (Kafka in) needs Airflow 3.3+ and the Kafka provider's shared-stream "
                                 f"triggers (apache-airflow-providers-apache-kafka 2.1+): {exc}") from None

    trigger = spec.trigger
    assert trigger is not None
    uri = asset_uri(spec.name)
    watched = Asset(name=uri, uri=uri, watchers=[AssetWatcher(name=f"{spec.name}.kafka_in", trigger=KafkaInTrigger(
        workflow=spec.name, topic=trigger.topic, group=trigger.group or default_group(spec.name),
        start=trigger.start, filter=trigger.filter, max_bytes=trigger.max_bytes,
        params={name: p.model_dump(mode="json", exclude_unset=True) for name, p in spec.params.items()},
        kafka_config_id=trigger.kafka_config_id))])
    with DAG(dag_id=f"{spec.name}.kafka_in", schedule=[watched], start_date=pendulum.parse(spec.start_date, tz="UTC"),
             catchup=False, tags=["kafka-workflows", "kafka-in"], max_active_runs=1,
             description=f"Kafka in: one run of {spec.name} per record of {trigger.topic}",
             doc_md=f"Starts one run of `{spec.name}` per record of topic `{trigger.topic}` (its `trigger:`), "
                    "the record's JSON object as the run's conf and `kafka__<topic>-<partition>-<offset>` as its "
                    "run id.") as dag:
        runs = PythonOperator(task_id="runs_to_start", python_callable=runs_to_start, inlets=[watched],
                              op_kwargs={"asset": uri})
        TriggerDagRunOperator.partial(task_id="start_run", trigger_dag_id=spec.name, logical_date=None,
                                      skip_when_already_exists=True, wait_for_completion=False,
                                      ).expand_kwargs(runs.output)
    return dag


def runs_to_start(asset: str, triggering_asset_events: Any = None, inlet_events: Any = None) -> list[dict[str, Any]]:
    """The runs a `<workflow>.kafka_in` run starts: one per asset event from its earliest triggering event
    on (the triggering events and any that came after them), in order, each run id once."""
    from airflow.sdk import Asset as SdkAsset

    events = [e for group in (triggering_asset_events or {}).values() for e in group]
    if not events:
        return []
    earliest = min(e.timestamp for e in events)
    recorded = inlet_events[SdkAsset(name=asset, uri=asset)].after(earliest.isoformat()).limit(
        MAX_RUNS_PER_DISPATCH + 1)
    runs: dict[str, dict[str, Any]] = {}
    for event in [*events, *recorded]:
        payload = (event.extra or {}).get("payload") or {}
        if isinstance(payload, dict) and isinstance(payload.get("run_id"), str) and isinstance(payload.get("conf"),
                                                                                              dict):
            runs.setdefault(payload["run_id"], {"trigger_run_id": payload["run_id"], "conf": payload["conf"]})
    if len(runs) > MAX_RUNS_PER_DISPATCH:  # one burst folded into one run: fail visibly rather than drop some
        raise RuntimeError(f"{len(runs)} records to start runs for in one dispatch, over {MAX_RUNS_PER_DISPATCH} "
                           "(Airflow's [core] max_map_length): raise both, or spread the burst")
    return list(runs.values())


def incident_dag_id(spec: WorkflowSpec) -> str:
    return f"{spec.name}_incident"


def build_incident_dag(spec: WorkflowSpec, file: str = "<spec>") -> DAG | None:
    """`<workflow>_incident`, when a worker of the spec declares `incidents:`: started by each incident
    its groups publish (an AssetWatcher with triggers/incidents.py's IncidentTrigger), its one task
    asks a human and carries out the answer (operators/incident.py). None without `incidents:`."""
    workers = [w for w in spec.workers if w.incidents is not None]
    if not workers:
        return None
    from airflow.sdk import AssetWatcher

    from kafka_workflows_airflow.notifiers import INCIDENT_HTML, INCIDENT_SUBJECT, EmailNotifier, RequiredActionNotifier
    from kafka_workflows_airflow.operators.incident import IncidentOperator
    from kafka_workflows_airflow.triggers.incidents import IncidentTrigger

    groups: dict[str, list[str]] = {}
    for w in workers:
        groups.setdefault(w.group, []).extend(t for t in w.topics if t not in groups[w.group])
    asset = Asset(name=f"kafka-workflows-incidents-{spec.name}", uri=f"kafka-workflows://incidents/{spec.name}",
                  watchers=[AssetWatcher(name=f"{spec.name}_incidents", trigger=IncidentTrigger(groups=list(groups)))])
    policy = workers[0].incidents
    assert policy is not None
    emails = sorted({e for w in workers for e in (w.incidents.email if w.incidents else [])})
    notifiers: list[Any] = [RequiredActionNotifier()]
    if emails:
        notifiers.append(EmailNotifier(emails, subject=INCIDENT_SUBJECT, html_content=INCIDENT_HTML))
    with DAG(dag_id=incident_dag_id(spec), schedule=[asset], start_date=pendulum.parse(spec.start_date, tz="UTC"),
             catchup=False, is_paused_upon_creation=False, tags=["kafka-workflows", "incident"],
             description=f"{spec.name}: a human decides what happens to a stuck key or an error spike",
             doc_md=f"Started by the incidents of {', '.join(sorted(groups))} (`incidents:` in "
                    f"`{Path(file).name}`): asks in Required Actions, carries out the answer through "
                    "kafka-workflows.control.") as dag:
        # Retries: a task that could not start (a busy API server) must not lose the incident; a retry
        # asks again (a question is answered once: the first answer ends the task).
        IncidentOperator(task_id="decide", workflow=spec.name, groups=groups, pause_minutes=policy.pause_minutes,
                         notifiers=notifiers, retries=3, retry_delay=pendulum.duration(seconds=10))
    return dag


def _stand_in(path: Path, error: SpecError) -> DAG:
    """A visible, paused DAG that says what is wrong, for a spec that does not build."""
    text = ""
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(64 * 1024)  # the name is near the top; a huge file is not read whole
    match = re.search(r"^name:\s*['\"]?([^'\"\n#]+?)['\"]?\s*(#.*)?$", text, re.MULTILINE)
    name = match.group(1).strip() if match and re.match(NAME, match.group(1).strip()) else f"invalid_{path.stem}"
    message = str(error)
    from airflow.providers.standard.operators.python import PythonOperator

    with DAG(dag_id=name, description=f"INVALID SPEC {path.name}: {message.splitlines()[0]}"[:1000],
             schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), is_paused_upon_creation=True,
             tags=["kafka-workflows", "invalid-spec"], doc_md=f"```\n{message}\n```") as dag:
        PythonOperator(task_id="invalid_spec", python_callable=_fail, op_args=[message])
    return dag


def _fail(message: str) -> None:
    raise SpecError("workflow spec", [Problem("", message)])


def dags_from_folder(folder: Path) -> dict[str, DAG]:
    """Every spec of `folder` as a DAG, keyed by a module-global name; bad specs become stand-ins."""
    dags: dict[str, DAG] = {}
    for path, result in load_specs(folder):
        dispatcher: DAG | None = None
        try:
            if isinstance(result, SpecError):
                raise result
            dag = build_dag(result, path.read_text(encoding="utf-8"), str(path))
            if result.trigger is not None:
                try:
                    dispatcher = kafka_in_dag(result)
                except Exception as exc:
                    raise SpecError(str(path), [Problem("trigger", f"{type(exc).__name__}: {exc}")]) from exc
        except SpecError as error:
            first = error.problems[0] if error.problems else None
            warnings.warn_explicit(str(error), InvalidWorkflowSpec, str(path), (first.line if first else None) or 1)
            log.error("invalid workflow spec %s:\n%s", path, error)
            dag = _stand_in(path, error)
        incident: DAG | None = None
        if not isinstance(result, SpecError):
            try:
                incident = build_incident_dag(result, str(path))
            except Exception as exc:  # noqa: BLE001 - one workflow's incident DAG never stops the others
                log.error("%s: the incident DAG of %s was not built: %s: %s", path, result.name,
                          type(exc).__name__, exc)
        for built in (dag, dispatcher, incident):
            if built is not None:
                dags["dag_" + re.sub(r"\W", "_", built.dag_id)] = built
    return dags
