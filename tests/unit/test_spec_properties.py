"""Property test: hundreds of mutated specs either build or fail with an error naming a field;
none crashes the loader or affects a sibling spec; the JSON Schema agrees with pydantic."""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kafka_workflows.spec import JsonTypesLoader, SpecError, WorkflowSpec, json_schema, parse_spec
from kafka_workflows_airflow.factory import build_dag, dags_from_folder

WORKFLOWS = Path(__file__).resolve().parents[2] / "dags" / "workflows"
EXAMPLES = {p.name: yaml.load(p.read_text(), Loader=JsonTypesLoader) for p in sorted(WORKFLOWS.glob("*.yaml"))}
VALIDATOR = jsonschema.Draft202012Validator(json_schema())
SEMANTIC = {"value_error"}  # our cross-field rules (and importability): beyond what JSON Schema can say

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["", "a.b", "x y", "@daily", "2026-01-01", "{{ params.x }}", "-1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "replace", "add_key", "rename"]))
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(json_values)
        elif action == "add_key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
        elif action == "rename" and isinstance(parent, dict):
            parent[f"{last}x"] = parent.pop(last)
    return doc


def _pydantic_errors(doc: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        WorkflowSpec.model_validate(doc)
    except ValidationError as exc:
        return list(exc.errors())
    return []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated())
def test_mutated_specs_build_or_name_a_field_and_the_schema_agrees(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        spec = parse_spec(text, "mutant.yaml")
    except SpecError as error:
        event("spec error")
        assert error.problems, "a spec error lists its problems"
        for problem in error.problems:
            assert problem.message and problem.path, f"an error that names no field: {error}"
    else:
        try:
            dag = build_dag(spec, text, "mutant.yaml")
            event("built")
            assert dag.task_ids == spec.task_ids()
        except SpecError as error:
            event("build refused")
            assert all(p.path.startswith("steps[") for p in error.problems), str(error)

    # The schema never rejects what pydantic accepts, and everything it lets through that pydantic
    # refuses is one of the semantic rules a JSON Schema cannot express.
    data = yaml.load(text, Loader=JsonTypesLoader)
    errors = _pydantic_errors(data)
    schema_ok = VALIDATOR.is_valid(data)
    if not errors:
        assert schema_ok, [e.message for e in VALIDATOR.iter_errors(data)]
    elif schema_ok:
        event("semantic only")
        assert {e["type"] for e in errors} <= SEMANTIC, errors


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(doc=mutated())
def test_a_mutated_spec_never_affects_its_sibling(tmp_path: Path, doc: dict[str, Any]) -> None:
    (tmp_path / "mutant.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    if not (tmp_path / "schemas").exists():  # the examples' schema files, next to them as in dags/workflows
        shutil.copytree(WORKFLOWS / "schemas", tmp_path / "schemas")
    sibling = copy.deepcopy(EXAMPLES["checkout.yaml"])
    sibling["name"] = "sibling_checkout"
    (tmp_path / "sibling.yaml").write_text(yaml.safe_dump(sibling, sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dags = dags_from_folder(tmp_path)
    assert dags["dag_sibling_checkout"].task_ids == ["simulate_purchases", "publish_purchases"]
    # the mutant: one DAG, or with its Kafka-in dispatcher (`trigger:`) and its <name>_incident DAG (`incidents:`)
    mutant = [dag.dag_id for name, dag in dags.items() if name != "dag_sibling_checkout" and "incident" not in dag.tags]
    assert len(mutant) == 1 or (len(mutant) == 2 and mutant[1] == f"{mutant[0]}.kafka_in") \
        or doc.get("name") == "sibling_checkout"
