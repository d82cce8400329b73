"""Workflow specs: one YAML file declares a workflow's DAG and its worker side.

model.py   the pydantic model (strict, frozen) and its JSON Schema
loader.py  reading YAML with line numbers; errors that name file:line: path
"""

from kafka_workflows.spec.loader import (
    JsonTypesLoader,
    Problem,
    SpecError,
    json_schema,
    line_of,
    load_spec,
    load_specs,
    parse_spec,
    spec_files,
)
from kafka_workflows.spec.model import (
    ASSETS_TASK_SUFFIX,
    NAME,
    ParamSpec,
    ProcessorSpec,
    StepSpec,
    StoreSpec,
    WorkerSpec,
    WorkflowSpec,
)

__all__ = ["ASSETS_TASK_SUFFIX", "NAME", "JsonTypesLoader", "ParamSpec", "Problem", "ProcessorSpec", "SpecError",
           "StepSpec", "StoreSpec", "WorkerSpec", "WorkflowSpec", "json_schema", "line_of", "load_spec", "load_specs",
           "parse_spec", "spec_files"]
