"""The Airflow side's control secret: `[kafka_workflows] control_secret`.

Set (or env AIRFLOW__KAFKA_WORKFLOWS__CONTROL_SECRET), the API server signs every command and replay
record it writes to the control topic with it (kafka_workflows.ops.control.sign). Unset, the
core's env variable KAFKA_WORKFLOWS_CONTROL_SECRET is used if that is set.
"""

from __future__ import annotations

from kafka_workflows.ops.control import control_secret as core_control_secret

SECTION = "kafka_workflows"


def control_secret() -> str | None:
    from airflow.configuration import conf

    return core_control_secret(conf.get(SECTION, "control_secret", fallback="") or None)
