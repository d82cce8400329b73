"""Builds one Airflow DAG per workflow spec in dags/workflows/ (kafka-workflows).

A spec that does not validate shows up as a paused stand-in DAG under its name, with the error
in its description, and never stops the other workflows from loading.
Check specs before deploying: `kafka-workflows validate dags/workflows/`.
"""

from pathlib import Path

from kafka_workflows_airflow.factory import dags_from_folder

globals().update(dags_from_folder(Path(__file__).parent / "workflows"))
