"""The workflow spec: one YAML file declares a workflow's DAG (steps) and its worker side.

Modelled with pydantic (strict, unknown keys rejected) and exported as JSON Schema for editors
(`kafka-workflows schema`). The model only: reading YAML with line numbers is spec/loader.py.

    name: subscription_renewals          # the DAG id
    schedule: "@daily"                    # null: triggered only
    params: {day: {type: string, default: null, nullable: true, description: ...}}
    steps:                                # each step has exactly one kind
      - id: select_due
        python: {callable: pkg.mod.fn, kwargs: {...}}
      - id: produce
        produce: {topic: renewals, requests: "{{ ti.xcom_pull('select_due') }}", key_field: user_id}
    workers:                              # what `kafka-workflows worker <folder>` runs
      - {name: renewals, topics: [renewals], group: renewals, handler: pkg.mod.renew,
         retry: {blocking: {initial: 1, max: 60}}}
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    model_validator,
)

from kafka_workflows.ops.incidents import IncidentPolicy
from kafka_workflows.retry.breaker import BreakerPolicy
from kafka_workflows.retry.policy import RetryPolicy
from kafka_workflows.strict_model import StrictModel

NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,249}$"  # DAG ids, step ids, worker names, store names
TOPIC = r"^[A-Za-z0-9._\-]{1,249}$"
DOTTED = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"
TEMPLATED_TOPIC = r"^([A-Za-z0-9._\-]{1,249}|.*\{\{.*\}\}.*)$"
STEP_KINDS = ("produce", "split", "await", "notify", "python", "operator")


class RuleError(ValueError):
    """A cross-field rule broken at `path` (relative to the model that checks it)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


class _Spec(StrictModel):
    model_config = ConfigDict(populate_by_name=True)  # merged with StrictModel's (strict, frozen, no extras)


class ParamSpec(_Spec):
    """A run parameter, shown in Airflow's trigger form. Without `default` it must be given."""

    type: Literal["string", "integer", "number", "boolean", "array", "object"]
    default: Any = None
    nullable: bool = False
    title: str | None = None
    description: str | None = None
    enum: list[Any] | None = None
    format: Literal["date", "date-time", "email", "uri"] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _default_fits(self) -> Self:
        if "default" in self.model_fields_set and self.default is None and not self.nullable:
            raise ValueError("default is null: give a value, set nullable: true, or leave default out "
                             "to make the param required")
        return self

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set and not self.nullable


class ProduceSpec(_Spec):
    """Schedule and forget: ProduceRequestsOperator."""

    topic: str = Field(pattern=TEMPLATED_TOPIC)
    value: Any = None
    key: str | None = None
    requests: Any = None
    key_field: str | None = None
    partitions: PositiveInt = 3
    kafka_config_id: str = "kafka_default"

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.value is None) == (self.requests is None):
            raise ValueError("give exactly one of value (one request) or requests (many)")
        return self


class PythonSpec(_Spec):
    """Any Python callable by dotted path; kwargs are templated (Jinja, rendered to native types)."""

    callable: str = Field(pattern=DOTTED)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OperatorSpec(_Spec):
    """Any Airflow operator by dotted path, with its keyword arguments."""

    class_: str = Field(alias="class", pattern=DOTTED)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OperatorArgs(_Spec):
    """split / await / notify: the keyword arguments of our operator for that kind."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class SplitArgs(OperatorArgs):
    """split: SplitToJobsOperator's keyword arguments; `allowed_sources` is declared for editors and checks."""

    allowed_sources: list[str] | None = Field(
        default=None, description="roots this step may read besides [kafka_workflows] allowed_sources, e.g. "
        "file:///data/imports/, s3://imports/, https://exports.example.com/contacts/")
    chunk_jobs: int | None = Field(
        default=None, ge=0, le=1_000_000, description="pipelined split: commit every this many jobs (with the "
        "split's progress), so workers start while the file is still read; 0 = one transaction for the whole "
        "file (the operator's default is 500; on_bad_rows: fail always uses one)")
    chunk_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="pipelined split: commit a chunk at least this often, in seconds "
        "(the operator's default is 1.0)")

    @model_validator(mode="after")
    def _roots(self) -> Self:
        for root in self.allowed_sources or ():
            if not re.match(r"^([a-z][a-z0-9+.\-]*://|/)", root):
                raise RuleError(("allowed_sources",), f"{root!r} is neither a URL (file://, s3://, https://...) "
                                "nor an absolute path")
        return self


ASSET_URI = r"^[a-z][a-z0-9+.\-]*://[^\s{}]{1,1000}$"
ASSETS_TASK_SUFFIX = "_assets"


class AwaitArgs(OperatorArgs):
    """await: AwaitCompletionSensor's keyword arguments; `outlets` names the assets a finished request updates.

    The spec carries the URIs as strings (the core knows nothing of Airflow); the DAG factory makes
    them Airflow Assets, so a DAG scheduled on one runs when a request this step awaits finishes.
    With `end_from_trigger: true` the events are recorded by a task of their own right after the
    await, `<id>_assets` (ASSETS_TASK_SUFFIX), beside the next step: Airflow's triggerer cannot
    record asset events, so the await ends there and the next step does not wait for a task start.
    """

    outlets: list[str] | None = Field(
        default=None, description="asset URIs updated once the awaited request is terminal (one asset event "
        "per finished request, its extra: request_id, store, status, total, completed, failed), e.g. "
        "kafka-workflows://contacts/imported")
    end_from_trigger: bool | None = Field(
        default=None, description="end the task in the triggerer when the request succeeded (the next step starts "
        "sooner); with outlets, a task `<id>_assets` records the asset events right after it")

    @property
    def assets_task(self) -> bool:
        """Whether the outlets are recorded by a task of their own (ended by the triggerer, this one can't)."""
        return bool(self.outlets) and bool(self.end_from_trigger)

    @model_validator(mode="after")
    def _uris(self) -> Self:
        for index, uri in enumerate(self.outlets or ()):
            if not re.match(ASSET_URI, uri) or uri.startswith("airflow://"):
                raise RuleError(("outlets", index), f"{uri[:200]!r} is not an asset URI (scheme://path, no "
                                "spaces or templates; airflow:// is Airflow's own)")
        return self


class StepSpec(_Spec):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True,
                              json_schema_extra={"oneOf": [{"required": [k]} for k in STEP_KINDS]})

    id: str = Field(pattern=NAME)
    after: list[str] | None = Field(default=None, description="step ids; default: the step before")
    retries: NonNegativeInt = 0
    retry_delay: NonNegativeFloat = Field(default=60.0, description="seconds between task retries")
    doc: str | None = None
    produce: ProduceSpec | None = None
    split: SplitArgs | None = None
    await_: AwaitArgs | None = Field(default=None, alias="await")
    notify: OperatorArgs | None = None
    python: PythonSpec | None = None
    operator: OperatorSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in STEP_KINDS if getattr(self, "await_" if k == "await" else k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a step needs exactly one of {', '.join(STEP_KINDS)} (found: {found})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, "await_" if k == "await" else k) is not None)

    @property
    def body(self) -> BaseModel:
        return getattr(self, "await_" if self.kind == "await" else self.kind)  # type: ignore[no-any-return]


class WorkerSpec(_Spec):
    """A handler the companion worker runs: topics, group, handler, retry policy, store reporting."""

    name: str = Field(pattern=NAME)
    topics: list[str] = Field(min_length=1)
    group: str = Field(pattern=NAME)
    handler: str = Field(pattern=DOTTED)
    retry: RetryPolicy | None = None
    breaker: BreakerPolicy | None = Field(default=None, description="the group's circuit breaker: pause the "
                                          "group while its handler keeps failing, probe after a cool-down")
    incidents: IncidentPolicy | None = Field(default=None, description="ask a human in Airflow (the "
                                             "<workflow>_incident DAG) when a key or partition stays held, or one "
                                             "error spikes")
    store: str | None = Field(default=None, pattern=NAME, description="report job completions to this store")
    partitions: PositiveInt = 3
    batch_size: int = Field(default=500, ge=1, le=100_000,
                            description="messages consumed at a time: the largest batch a @batch_handler gets")
    concurrency: int = Field(default=1, ge=1, le=10_000,
                             description="message handler calls at once across keys of a partition, each key "
                                         "strictly in order (async def handlers on one event loop, plain "
                                         "functions on a thread pool); 1 = one at a time")

    @model_validator(mode="after")
    def _topics(self) -> Self:
        bad = [t for t in self.topics if not re.match(TOPIC, t)]
        if bad:
            raise ValueError(f"invalid topic name(s) {bad}: letters, digits, '.', '_', '-' only")
        return self


class ProcessorSpec(_Spec):
    """Exactly-once consume-transform-produce: outputs and input offsets in one transaction."""

    name: str = Field(pattern=NAME)
    topics: list[str] = Field(min_length=1)
    group: str = Field(pattern=NAME)
    transform: str = Field(pattern=DOTTED, description="message -> iterable of {topic, key, value}")
    outputs: list[str] = Field(min_length=1, description="topics the transform may write")
    commit_interval: PositiveFloat = 1.0
    partitions: PositiveInt = 3


class StoreSpec(_Spec):
    """An atomic key-value store whose exactly-once processor the worker runs."""

    name: str = Field(pattern=NAME)
    partitions: PositiveInt = 3
    commit_interval: PositiveFloat = 1.0


class TriggerSpec(_Spec):
    """Kafka in: every record of `topic` that passes `filter` starts one run of the workflow, its JSON
    object value as the run's conf (plugins/kafka_workflows_airflow/triggers/kafka_in.py).

    `filter` maps top-level fields of the record's value to the value they must equal (a list: one of
    them); a record that does not match is passed over. `start` is where a new consumer group begins
    (`latest`: only records produced after the workflow was deployed). `group` is the consumer group
    whose committed offsets say which records already started a run (default `kafka-workflows.in.<name>`).
    A record's value is at most `max_bytes`; a larger one, one that is not a JSON object, or one the
    workflow's params refuse is skipped with a log line naming it (topic[partition]@offset).
    """

    topic: str = Field(pattern=TOPIC)
    filter: dict[str, Any] = Field(default_factory=dict)
    start: Literal["earliest", "latest"] = "latest"
    group: str | None = Field(default=None, pattern=NAME)
    max_bytes: PositiveInt = Field(default=65_536, le=1_048_576)
    kafka_config_id: str = "kafka_default"


SCHEMA_FORMATS = ("avro", "protobuf", "json")
SCHEMA_FILE = r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,250}$"  # relative to the spec's folder, no '..' (checked below)


class SchemaSpec(_Spec):
    """A topic's values through the schema registry (schemas/): the format, the subject, the schema.

    The schema is a file next to the spec (`file`, relative to the spec's folder), or `latest`: the
    subject's latest version in the registry. A Protobuf schema is a generated message class
    (`message`, a dotted path): its descriptor is the schema, registered like a file's.
    """

    format: Literal["avro", "protobuf", "json"]
    file: str | None = Field(default=None, pattern=SCHEMA_FILE,
                             description="the schema file (.avsc, .json), relative to the spec's folder")
    latest: bool = Field(default=False, description="use the subject's latest version in the registry")
    message: str | None = Field(default=None, pattern=DOTTED,
                                description="protobuf: the generated message class, e.g. pkg.orders_pb2.Order")
    subject: str | None = Field(default=None, min_length=1, max_length=255,
                                description="the registry subject; default: from the naming strategy")
    naming: Literal["topic", "record", "topic_record"] = Field(
        default="topic", description="subject naming strategy: <topic>-value, <record name>, <topic>-<record name>")

    @model_validator(mode="after")
    def _source(self) -> Self:
        if self.format == "protobuf":
            if self.message is None:
                raise ValueError("a protobuf schema names its generated message class (message: pkg.mod_pb2.Msg)")
            if self.file is not None or self.latest:
                raise ValueError("a protobuf schema is its message class: leave out file and latest")
            return self
        if self.message is not None:
            raise RuleError(("message",), "only a protobuf schema names a message class")
        if (self.file is None) == (not self.latest):
            raise ValueError("give exactly one of file (a schema next to the spec) or latest: true")
        if self.file is not None and ".." in self.file.split("/"):
            raise RuleError(("file",), "must stay in the spec's folder (no '..')")
        if self.latest and self.subject is None and self.naming != "topic":
            raise RuleError(("naming",), "latest needs the subject: give subject, or use naming: topic")
        return self


class TopicSettings(_Spec):
    """What a workflow declares about one topic it writes or reads."""

    schema_: SchemaSpec | None = Field(default=None, alias="schema")


class WorkflowSpec(_Spec):
    name: str = Field(pattern=NAME, description="the DAG id")
    description: str | None = None
    schedule: str | None = Field(default=None, description="cron or preset; null = triggered only")
    start_date: str = Field(default="2026-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    catchup: bool = False
    tags: list[str] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(default_factory=list)
    workers: list[WorkerSpec] = Field(default_factory=list)
    processors: list[ProcessorSpec] = Field(default_factory=list)
    stores: list[StoreSpec] = Field(default_factory=list)
    trigger: TriggerSpec | None = Field(default=None, description="Kafka in: start a run per record of a topic")


    topics: dict[str, TopicSettings] = Field(
        default_factory=dict, description="per topic the workflow writes or reads: its schema (schema:)")
    _folder: str | None = PrivateAttr(default=None)  # the spec file's folder (schema files are next to it)

    @property
    def folder(self) -> str | None:
        return self._folder

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [s.id for s in self.steps]
        for index, step in enumerate(self.steps):
            if ids.index(step.id) != index:
                raise RuleError(("steps", index, "id"), f"step id {step.id!r} is used twice; ids must be unique")
            if step.await_ is not None and step.await_.assets_task and step.id + ASSETS_TASK_SUFFIX in ids:
                raise RuleError(("steps", index, "id"), f"records its outlets in a task named "
                                f"{step.id + ASSETS_TASK_SUFFIX!r}, which is also a step's id; rename that step")
            unknown = [a for a in step.after or () if a not in ids]
            if unknown:
                raise RuleError(("steps", index, "after"), f"names unknown step(s) {unknown}; steps are {ids}")
        for name, param in self.params.items():
            if self.schedule is not None and param.required:
                raise RuleError(("params", name), "has no default, but scheduled runs pass no params: give it a "
                                "default or make the workflow triggered only (schedule: null)")
        if self.trigger is not None and self.schedule is not None:
            raise RuleError(("trigger",), "a workflow started by Kafka records has no schedule: set schedule: null")
        for kind, units in (("workers", self.workers), ("processors", self.processors)):
            for index, unit in enumerate(units):
                others = [w.name for w in self.workers] + [p.name for p in self.processors]
                if others.count(unit.name) > 1:
                    raise RuleError((kind, index, "name"), f"{unit.name!r} is used twice; worker and processor "
                                    "names must be unique")
        for topic in self.topics:
            if not re.match(TOPIC, topic):
                raise RuleError(("topics", topic), "is not a topic name: letters, digits, '.', '_', '-' only")
        return self

    def schema_for(self, topic: str) -> SchemaSpec | None:
        settings = self.topics.get(topic)
        return settings.schema_ if settings is not None else None

    def task_ids(self) -> list[str]:
        """The DAG's task ids: one per step, then `<id>_assets` per await that records its outlets apart."""
        return [s.id for s in self.steps] + [s.id + ASSETS_TASK_SUFFIX for s in self.steps
                                             if s.await_ is not None and s.await_.assets_task]

    def dependencies(self) -> dict[str, list[str]]:
        """Upstream step ids of each step (`after`, or the step before when it is not given)."""
        deps: dict[str, list[str]] = {}
        for index, step in enumerate(self.steps):
            deps[step.id] = list(step.after) if step.after is not None else (
                [self.steps[index - 1].id] if index else [])
        return deps
