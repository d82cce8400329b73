"""Workflow specs: precise errors, the JSON Schema, and DAGs built from the example specs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import jsonschema
import pytest
import yaml

from kafka_workflows.spec import SpecError, json_schema, load_spec, parse_spec
from kafka_workflows_airflow.factory import InvalidWorkflowSpec, build_dag, dags_from_folder

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "dags" / "workflows"
GOOD = """\
name: tiny
steps:
  - id: hello
    python: {callable: os.path.join, kwargs: {a: x}}
  - id: send
    produce: {topic: tiny-requests, value: {n: 1}, key: k}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "wf.yaml")
    return str(info.value).splitlines()


def test_errors_name_file_line_field_expected_and_found() -> None:
    text = "name: x\nsteps:\n  - id: a\n    produce:\n      topic: 'bad topic!'\n      value: 1\n      partitions: 0\n"
    assert problems(text) == [
        "wf.yaml:5: steps[0].produce.topic: expected a topic name (letters, digits, '.', '_', '-') "
        "or a {{ template }} (found 'bad topic!')",
        "wf.yaml:7: steps[0].produce.partitions: Input should be greater than 0 (found 0)",
    ]


def test_a_worker_batch_size_out_of_range_is_named() -> None:
    text = ("name: x\nworkers:\n  - {name: w, topics: [t], group: g, handler: os.getcwd,\n"
            "     batch_size: 0}\n")
    assert problems(text) == [
        "wf.yaml:4: workers[0].batch_size: Input should be greater than or equal to 1 (found 0)"]


def test_an_integral_float_is_an_integer_as_json_schema_says_and_a_fraction_is_not() -> None:
    # JSON Schema (the editor's schema) calls 3.0 an integer; strict parsing refused it (found by
    # test_spec_properties' fuzzing: `min_length: 0.0`).
    spec = parse_spec("name: x\nparams:\n  n: {type: string, min_length: 0.0}\nworkers:\n"
                      "  - {name: w, topics: [t], group: g, handler: os.getcwd, partitions: 6.0}\n")
    assert spec.params["n"].min_length == 0 and isinstance(spec.workers[0].partitions, int)
    assert problems("name: x\nworkers:\n  - {name: w, topics: [t], group: g, handler: os.getcwd,\n"
                    "     partitions: 2.5}\n") == [
        "wf.yaml:4: workers[0].partitions: Input should be a valid integer (found 2.5)"]


def test_a_split_chunk_setting_out_of_range_is_named_and_a_good_one_reaches_the_operator() -> None:
    text = ("name: x\nsteps:\n  - id: split\n    split:\n      source: /in/a.csv\n      chunk_jobs: -1\n"
            "      chunk_seconds: 0\n      topic: jobs\n      store: s\n      schema: kw_examples.contacts.SCHEMA\n")
    assert problems(text) == [
        "wf.yaml:6: steps[0].split.chunk_jobs: Input should be greater than or equal to 0 (found -1)",
        "wf.yaml:7: steps[0].split.chunk_seconds: Input should be greater than 0 (found 0)"]
    good = text.replace("chunk_jobs: -1", "chunk_jobs: 200").replace("chunk_seconds: 0", "chunk_seconds: 0.5")
    task = build_dag(parse_spec(good), good, "wf.yaml").get_task("split")
    assert (task.chunk_jobs, task.chunk_seconds) == (200, 0.5)


def test_unknown_keys_missing_fields_and_wrong_types_are_named() -> None:
    text = "name: x\nschedul: '@daily'\nsteps:\n  - id: a\n    python: {kwargs: {}}\n  - id: b\n    retries: two\n"
    found = problems(text)
    assert "wf.yaml:2: schedul: Extra inputs are not permitted (found '@daily')" in found
    assert "wf.yaml:5: steps[0].python.callable: Field required" in found
    assert "wf.yaml:7: steps[1].retries: Input should be a valid integer (found 'two')" in found


def test_cross_field_rules_are_explained() -> None:
    assert problems("name: x\nsteps:\n  - id: a\n") == [
        "wf.yaml:3: steps[0]: a step needs exactly one of produce, split, await, notify, python, operator "
        "(found: none)"]
    text = ("name: x\nsteps:\n  - {id: a, python: {callable: os.getcwd}}\n"
            "  - {id: b, after: [zz], python: {callable: os.getcwd}}\n")
    assert problems(text) == ["wf.yaml:4: steps[1].after: names unknown step(s) ['zz']; steps are ['a', 'b']"]
    text = "name: x\nschedule: '@daily'\nparams:\n  day: {type: string}\n"
    assert problems(text) == ["wf.yaml:4: params.day: has no default, but scheduled runs pass no params: give it a "
                              "default or make the workflow triggered only (schedule: null)"]
    text = "name: x\nworkers:\n  - {name: w, topics: [t], group: g, handler: a.b, retry: {blocking: {attempts: 0}}}\n"
    assert problems(text) == [
        "wf.yaml:3: workers[0].retry.blocking.attempts: Input should be greater than 0 (found 0)"]


def test_yaml_problems_are_located() -> None:
    assert problems("name: x\nsteps: [\n") [0].startswith("wf.yaml:3: (document): not valid YAML")
    assert problems("name: x\nname: y\n") == ["wf.yaml:2: name: duplicate key (YAML would keep only the last)"]
    assert problems("- just a list\n") == ["wf.yaml:1: (document): a workflow spec is a mapping (name:, steps:, ...) "
                                            "(found list)"]


def test_dates_stay_strings_as_json_would_carry_them() -> None:
    spec = parse_spec("name: x\nstart_date: 2026-03-01\n")
    assert spec.start_date == "2026-03-01"
    assert problems("name: x\nstart_date: 2026-3-1\n") == [
        "wf.yaml:2: start_date: expected a date as YYYY-MM-DD (found '2026-3-1')"]


def test_steps_default_to_running_after_the_step_before() -> None:
    spec = parse_spec("name: x\nsteps:\n" + "".join(
        f"  - {{id: s{i}, python: {{callable: os.getcwd}}{after}}}\n"
        for i, after in enumerate(["", "", ", after: []", ", after: [s0, s2]"])))
    assert spec.dependencies() == {"s0": [], "s1": ["s0"], "s2": [], "s3": ["s0", "s2"]}
    dag = build_dag(spec)
    assert dag.get_task("s3").upstream_task_ids == {"s0", "s2"} and not dag.get_task("s2").upstream_task_ids


def test_example_specs_build_dags_matching_their_steps() -> None:
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        spec = load_spec(path)
        dag = build_dag(spec, path.read_text(), str(path))
        assert dag.dag_id == spec.name and dag.task_ids == spec.task_ids()
        for step_id, upstream in spec.dependencies().items():
            assert dag.get_task(step_id).upstream_task_ids == set(upstream), (path.name, step_id)
        assert set(dag.params) == set(spec.params)


def test_subscription_renewals_spec_says_what_the_article_says() -> None:
    spec = load_spec(WORKFLOWS / "subscription_renewals.yaml")
    dag = build_dag(spec)
    produce = dag.get_task("produce_renewal_requests")
    assert type(produce).__name__ == "ProduceRequestsOperator" and produce.key_field == "user_id"
    assert dag.get_task("select_due_subscriptions").upstream_task_ids == set()
    [worker] = spec.workers
    assert worker.retry is not None and worker.retry.blocking is not None and worker.retry.blocking.attempts is None


def test_an_operator_that_refuses_its_arguments_is_a_spec_error_naming_the_step() -> None:
    text = ("name: x\nsteps:\n  - id: a\n    operator:\n"
            "      class: airflow.providers.standard.operators.empty.EmptyOperator\n      kwargs: {no_such_arg: 1}\n")
    with pytest.raises(SpecError) as info:
        build_dag(parse_spec(text), text, "wf.yaml")
    assert str(info.value).startswith("wf.yaml:5: steps[0].operator: TypeError: Invalid arguments")
    assert "no_such_arg" in str(info.value)


def test_an_invalid_spec_becomes_a_stand_in_and_never_hides_its_siblings(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text("name: broken_flow\nsteps:\n  - id: a\n    produce: {topic: t}\n")
    (tmp_path / "garbage.yaml").write_text("{{{{")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dags = dags_from_folder(tmp_path)
    assert set(dags) == {"dag_tiny", "dag_broken_flow", "dag_invalid_garbage"}
    assert dags["dag_tiny"].task_ids == ["hello", "send"]
    stand_in = dags["dag_broken_flow"]
    assert stand_in.task_ids == ["invalid_spec"] and "invalid-spec" in stand_in.tags
    assert stand_in.description.startswith("INVALID SPEC broken.yaml: ")
    assert "steps[0].produce: give exactly one of value" in stand_in.description
    spec_warnings = [w for w in caught if issubclass(w.category, InvalidWorkflowSpec)]
    assert sorted((Path(w.filename).name, w.lineno) for w in spec_warnings) == [("broken.yaml", 4), ("garbage.yaml", 1)]
    with pytest.raises(SpecError, match="give exactly one of value"):
        stand_in.get_task("invalid_spec").python_callable(*stand_in.get_task("invalid_spec").op_args)


def test_the_committed_json_schema_is_in_sync_and_accepts_the_examples() -> None:
    committed = json.loads((WORKFLOWS / "workflow.schema.json").read_text())
    assert committed == json_schema(), "regenerate: kafka-workflows schema > dags/workflows/workflow.schema.json"
    validator = jsonschema.Draft202012Validator(committed)
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        from kafka_workflows.spec import JsonTypesLoader

        errors = list(validator.iter_errors(yaml.load(path.read_text(), Loader=JsonTypesLoader)))
        assert errors == [], (path.name, [e.message for e in errors])


def test_validate_cli_reports_each_file_and_fails_on_any_bad_one(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    cli = [sys.executable, "-m", "kafka_workflows.cli", "validate"]
    ok = subprocess.run([*cli, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "good.yaml: ok (tiny: 2 steps" in ok.stdout
    (tmp_path / "bad.yaml").write_text("name: x\nworkers:\n  - {name: w, topics: [t], group: g, handler: nodots}\n")
    bad = subprocess.run([*cli, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert f"{tmp_path / 'bad.yaml'}:3: workers[0].handler: expected a dotted import path" in bad.stderr
    assert "good.yaml: ok" in bad.stdout


def test_await_outlets_become_airflow_assets_and_a_bad_uri_is_named() -> None:
    from airflow.sdk import Asset

    text = "name: x\nsteps:\n  - id: a\n    await: {request_id: r, store: s, outlets: ['ok://x']}\n"
    [outlet] = build_dag(parse_spec(text)).get_task("a").outlets
    assert outlet == Asset(name="ok://x", uri="ok://x")
    text = "name: x\nsteps:\n  - id: a\n    await: {request_id: r, store: s, outlets: ['no scheme', 'ok://x']}\n"
    assert problems(text) == ["wf.yaml:4: steps[0].await.outlets[0]: 'no scheme' is not an asset URI (scheme://path, "
                              "no spaces or templates; airflow:// is Airflow's own)"]


def test_an_await_ended_by_the_triggerer_gets_a_task_of_its_own_for_its_outlets() -> None:
    """contacts_import: `await` ends in the triggerer (it cannot record asset events), so `await_assets`
    records them, right after it and beside `notify`, with the await's result, request and store."""
    from airflow.sdk import Asset

    dag = build_dag(load_spec(WORKFLOWS / "contacts_import.yaml"))
    awaited, assets = dag.get_task("await"), dag.get_task("await_assets")
    assert awaited.end_from_trigger and awaited.outlets == []
    assert assets.outlets == [Asset(name="kafka-workflows://contacts/imported", uri="kafka-workflows://contacts/imported")]
    assert assets.upstream_task_ids == {"await"} and dag.get_task("notify").upstream_task_ids == {"await"}
    assert (assets.result, assets.request_id, assets.store, assets.retries) == (
        "{{ ti.xcom_pull(task_ids='await') }}", awaited.request_id, awaited.store, awaited.retries)
    text = ("name: x\nsteps:\n  - id: a\n    await: {request_id: r, store: s, outlets: ['ok://x'], "
            "end_from_trigger: true}\n  - id: a_assets\n    python: {callable: os.getcwd}\n")
    assert problems(text) == ["wf.yaml:3: steps[0].id: records its outlets in a task named 'a_assets', which is also a "
                              "step's id; rename that step"]


def test_the_kafka_group_link_names_the_group_that_handles_each_step() -> None:
    groups = {d.dag_id: {t.task_id: getattr(t, "kafka_group", None) for t in d.tasks}
              for d in dags_from_folder(WORKFLOWS).values()}
    assert groups["contacts_import"] == {"split": "contacts-importers", "await": "contacts-importers", "notify": None,
                                         "await_assets": None}
    assert groups["subscription_renewals"]["produce_renewal_requests"] == "renewals"
