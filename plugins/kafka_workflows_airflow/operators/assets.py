"""Events aggregation: record a finished request's asset events in a task of their own.

Airflow 3's triggerer cannot record asset events: a task it ends (`end_from_trigger`) is marked
success without the task runner. A workflow spec's await with `outlets` and `end_from_trigger: true`
therefore ends in the triggerer, and this task, `<await id>_assets`, runs right after it beside the
next step and records one event per outlet with the request's summary as extra (request_id, store,
status, total, completed, failed: sensors/completion.py `asset_extra`). The next step (the
notification) starts without waiting for a task start, and a DAG scheduled on the asset still runs
once per finished request: a failed try of this task records nothing and is retried; clearing the
await clears this task too, and the rerun records a second event, as for any task with outlets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from kafka_workflows_airflow.sensors.completion import asset_extra, await_result


class RecordRequestAssetsOperator(BaseOperator):
    """Record this task's `outlets` (Airflow Assets) with the summary of the request an await task finished.

    :param result: the await task's return value (its final store value), e.g.
        "{{ ti.xcom_pull(task_ids='await') }}".
    :param request_id: the request the await waited for.
    :param store: the atomic store's name.
    """

    template_fields: Sequence[str] = ("result", "request_id", "store")
    ui_color = "#e6f1f2"

    def __init__(self, *, result: Any, request_id: str, store: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result
        self.request_id = request_id
        self.store = store

    def execute(self, context: Context) -> dict[str, Any]:
        value = await_result(self.result)
        if not isinstance(value, dict) or "status" not in value:
            raise AirflowFailException(f"{self.task_id}: `result` must be the await task's store value (a dict with "
                                       f"a status), got {type(value).__name__}")
        summary = asset_extra(self.request_id, self.store, value)
        assets = [outlet for outlet in self.outlets if isinstance(outlet, Asset)]
        for asset in assets:  # recorded by Airflow with this task's success
            context["outlet_events"][asset].extra = dict(summary)
        self.log.info("request %s is %s: recording %d asset event(s) %s", self.request_id, summary["status"],
                      len(assets), [a.uri for a in assets])
        return summary
