"""The split refuses what would not fit before producing it: job messages over the broker's (or a configured)
message size, a source outside the allowed roots, a file over the reader's limits; nothing is produced. And what
a pipelined split does with a file that turns bad half way."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from kafka_workflows.store import commands_topic
from kw_examples import contacts
from tests.airflow.dags.split_limits_test_dags import split_small_messages_test
from tests.airflow.test_contacts_import import _committed_messages, _logical_date, _states
from tests.helpers.kafka import read_all

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"store": f"limits-{tag}", "topic": f"limits-jobs-{tag}"}


def _execute(names: dict[str, str], **conf: Any) -> dict[str, Any]:
    """The operator's execute() with the facts of a task instance (the error text is what we look at)."""
    op = split_small_messages_test.get_task("split")
    op = op.__class__(task_id="split", source=conf["source"], topic=names["topic"], store=names["store"],
                      schema="kw_examples.contacts.SCHEMA", rows_per_job=conf["rows_per_job"],
                      max_message_bytes=2000, **conf.get("extra", {}))
    ti = SimpleNamespace(dag_id="limits", task_id="split", run_id=f"manual__{uuid.uuid4().hex[:8]}", map_index=-1,
                         xcom_push=lambda **_: None)
    return op.execute({"ti": ti})  # type: ignore[arg-type]


def test_a_job_over_the_message_size_is_an_error_of_the_request_naming_the_job_and_its_rows(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        tmp_path: Path) -> None:
    generated = contacts.write_csv(tmp_path / "contacts.csv", 200, bad_every=0, missing_every=0)
    expected = (r"^job 0 \(rows 1-50, 50 row\(s\)\) would be a [\d,]+-byte record on "
                rf"{names['topic']}, more than the 2,000 bytes allowed \(the configured max_message_bytes\); "
                r"nothing was produced; lower rows_per_job$")
    with pytest.raises(AirflowFailException, match=expected):
        _execute(names, source=str(generated.path), rows_per_job=50)
    assert _committed_messages(kafka_config, names["topic"]) == 0
    assert _committed_messages(kafka_config, commands_topic(names["store"])) == 0

    # The same through a DAG run: the task fails (no retry can help) and nothing is committed.
    run = split_small_messages_test.test(logical_date=_logical_date(), run_conf={
        "source": str(generated.path), "rows_per_job": 50, **names})
    assert run.state == "failed" and _states(run)["split"] == "failed"
    assert _committed_messages(kafka_config, names["topic"]) == 0

    small = _execute({k: f"{v}-2" for k, v in names.items()}, source=str(generated.path), rows_per_job=2)
    assert small["total_jobs"] == 100, "jobs that fit are produced as usual"


def test_a_source_outside_the_allowed_roots_fails_before_any_topic_exists(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.csv"
    outside.write_text("top-secret-first-line\n")
    try:
        with pytest.raises(AirflowFailException, match=r"refused: it is not under an allowed root") as info:
            _execute(names, source=str(outside), rows_per_job=2)
    finally:
        outside.unlink()
    assert "top-secret" not in str(info.value)
    assert _committed_messages(kafka_config, names["topic"]) == 0


def test_limits_from_the_step_apply(airflow_db: None, kafka_connection: str, names: dict[str, str],
                                    tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("email,first_name" + ",x" * 100 + "\n")
    with pytest.raises(AirflowFailException, match=r"has 102 fields, more than 50 \(limit max_columns\)"):
        _execute(names, source=str(path), rows_per_job=2, extra={"limits": {"max_columns": 50}})
    with pytest.raises(AirflowFailException, match=r"split: invalid limits: .*max_lines"):
        _execute(names, source=str(path), rows_per_job=2, extra={"limits": {"max_lines": 50}})


def test_on_bad_rows_fail_keeps_one_transaction_and_a_file_broken_half_way_ends_its_request_aborted(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        tmp_path: Path) -> None:
    good = b"".join(f"user{n}@example.com,First{n}\n".encode() for n in range(1, 41))  # 20 jobs of 2 rows
    late_bad = tmp_path / "late-bad.csv"
    late_bad.write_bytes(b"email,first_name\n" + good + b",NoEmail\n")
    # Pipelined in chunks of one job, yet on_bad_rows=fail imports nothing: the whole file is one transaction.
    with pytest.raises(AirflowFailException, match=r"1 bad row\(s\).*nothing was imported"):
        _execute(names, source=str(late_bad), rows_per_job=2, extra={"on_bad_rows": "fail", "chunk_jobs": 1})
    assert _committed_messages(kafka_config, names["topic"]) == 0
    assert _committed_messages(kafka_config, commands_topic(names["store"])) == 0

    # A line that is not UTF-8 after four chunks: they stay (the workers import them), the request is aborted.
    broken, other = tmp_path / "late-broken.csv", {k: f"{v}-2" for k, v in names.items()}
    broken.write_bytes(b"email,first_name\n" + good + b"x@example.com,\xff\n")
    with pytest.raises(AirflowFailException, match=r"line 42 is not UTF-8 text"):
        _execute(other, source=str(broken), rows_per_job=2, extra={"chunk_jobs": 5})
    assert _committed_messages(kafka_config, other["topic"]) == 20
    commands = [json.loads(m.value()) for m in read_all(kafka_config, commands_topic(other["store"]))]
    assert [(c["op"], c.get("jobs")) for c in commands] == [("progress", 5), ("progress", 10), ("progress", 15),
                                                             ("progress", 20), ("abort", None)]
    assert "after committing jobs 0..19: MalformedCsvError" in commands[-1]["reason"]
    assert "\\xff" not in commands[-1]["reason"]


JOBS_SCHEMA = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "ContactsJob", "type": "object",
               "properties": {"rows": {"type": "array", "items": {"type": "object"}},
                              "row_numbers": {"type": "array", "items": {"type": "integer"}}},
               "required": ["rows", "row_numbers"]}


def test_split_with_a_jobs_schema_writes_the_wire_format_and_a_job_that_does_not_fit_produces_nothing(
        airflow_db: None, kafka_connection: str, registry_connection: str, kafka_config: dict[str, Any],
        names: dict[str, str], tmp_path: Path) -> None:
    """Issue 19: the jobs topic's schema (JSON Schema here) as the DAG factory hands it over."""
    import json

    from kafka_workflows.schemas.codec import SchemaFitError
    from tests.helpers.kafka import read_all

    generated = contacts.write_csv(tmp_path / "contacts.csv", 20, bad_every=0, missing_every=0)
    declared = {"format": "json", "schema_str": json.dumps(JOBS_SCHEMA), "naming": "topic", "latest": False}
    too_strict = {**declared, "schema_str": json.dumps(
        {**JOBS_SCHEMA, "properties": {**JOBS_SCHEMA["properties"], "rows": {"type": "array", "maxItems": 1}}})}
    with pytest.raises(SchemaFitError, match=r"split: job 0: does not fit subject .*: field rows fails its "
                                             r"schema's 'maxItems' rule"):
        _execute(names, source=str(generated.path), rows_per_job=5, extra={"value_schema": too_strict})
    assert _committed_messages(kafka_config, names["topic"]) == 0
    assert _committed_messages(kafka_config, commands_topic(names["store"])) == 0

    other = {k: f"{v}-2" for k, v in names.items()}
    result = _execute(other, source=str(generated.path), rows_per_job=5, extra={"value_schema": declared})
    assert result["total_jobs"] == 4
    jobs = read_all(kafka_config, other["topic"], expected=4)
    assert len(jobs) == 4 and all(m.value()[:1] == b"\x00" for m in jobs), "the registry's wire format"
