"""Builds one Airflow DAG per workflow spec in dags/workflows/ (kafka-workflows).

A spec that does not validate shows up as a paused stand-in DAG under its name, with the error
in its description, and never stops the other workflows from loading. That includes pathological
files: one over 1 MiB, nested deeper than 64 levels, or expanding to more than 100,000 values
through YAML aliases ("billion laughs") is refused with an error naming the file and the limit,
before it is composed (kafka_workflows.yamlguard), and any other failure of one file is that
file's error.
Check specs before deploying: `kafka-workflows validate dags/workflows/`.
"""

from pathlib import Path

from kafka_workflows_airflow.factory import dags_from_folder

globals().update(dags_from_folder(Path(__file__).parent / "workflows"))
