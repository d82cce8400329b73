"""Events aggregation, step 3: a task that runs notifiers with the summary of a finished request."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier, BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from kafka_workflows.handlers import resolve_callable
from kafka_workflows.observe import tracing
from kafka_workflows_airflow.notifiers import MAX_FAILED_INDICES, notification_payload
from kafka_workflows_airflow.sensors.completion import await_result

NotifierSpec = BaseNotifier | Callable[[Context], Any] | str | Mapping[str, Any]


class NotifyOperator(BaseOperator):
    """Run `notifiers` with the summary of `result` (the await task's final store value).

    The summary (see `notification_payload`: request id, status, total, completed, failed, failed
    job indices and reasons, row counts) is put into the context as `notification`, so notifier
    templates can use "{{ notification.status }}"; it is also this task's XCom return value.

    `notifiers` are BaseNotifier objects, callables taking the context, dotted paths of either (a
    notifier class is instantiated without arguments), or, for YAML specs, mappings naming a class
    and its arguments: {"class": "kafka_workflows_airflow.notifiers.WebhookNotifier", "url": ...}.
    Each runs on its own copy, so template rendering never leaks between runs. All are tried; if
    any failed, the task fails afterwards naming them (`fail_on_error`), so a webhook outage is
    visible and retried like any task.

    :param result: the await task's final store value (usually a template pulling its XCom).
    :param notifiers: what to notify (see above).
    :param fail_on_error: fail the task after running all notifiers when any of them failed.
    :param max_failed_jobs: how many failed job indices the summary lists at most.
    """

    template_fields: Sequence[str] = ("result",)
    template_fields_renderers = {"result": "json"}
    ui_color = "#eef7e8"

    def __init__(self, *, result: Any, notifiers: Sequence[NotifierSpec], fail_on_error: bool = True,
                 max_failed_jobs: int = MAX_FAILED_INDICES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not notifiers:
            raise ValueError(f"{self.task_id}: give at least one notifier")
        self.result = result
        self.notifiers = list(notifiers)
        self.fail_on_error = fail_on_error
        self.max_failed_jobs = max_failed_jobs

    @staticmethod
    def _import(path: str) -> Any:
        module_name, _, attr = path.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError):
            return resolve_callable(path, "notifier")  # raises with the precise reason

    def _resolve(self, spec: NotifierSpec) -> Callable[[Context], Any]:
        target: Any = spec
        if isinstance(spec, Mapping):
            arguments = dict(spec)
            path = arguments.pop("class", None)
            if not isinstance(path, str):
                raise TypeError(f"{self.task_id}: a notifier mapping needs a 'class' (dotted path), got {spec!r}")
            cls = self._import(path)
            if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
                raise TypeError(f"{self.task_id}: {path} is not a BaseNotifier class")
            return cls(**arguments)  # type: ignore[no-any-return]
        if isinstance(spec, str):
            target = self._import(spec)
        if isinstance(target, type) and issubclass(target, BaseNotifier):
            target = target()
        if isinstance(target, BaseNotifier):
            return copy.deepcopy(target)
        if callable(target):
            return target  # type: ignore[no-any-return]
        raise TypeError(f"{self.task_id}: notifier {spec!r} is neither a BaseNotifier nor a callable")

    def _result(self) -> Any:
        return await_result(self.result)

    @staticmethod
    def _name(spec: NotifierSpec) -> str:
        if isinstance(spec, str):
            return spec
        if isinstance(spec, Mapping):
            return str(spec.get("class"))
        if isinstance(spec, BaseNotifier):
            return type(spec).__name__
        return str(getattr(spec, "__qualname__", repr(spec)))

    def execute(self, context: Context) -> dict[str, Any]:
        result = self._result()
        if not isinstance(result, dict):
            raise AirflowException(f"{self.task_id}: `result` must be the await task's store value (a dict), "
                                   f"got {type(result).__name__}")  # its content is not echoed
        payload = notification_payload(result, context, max_failed=self.max_failed_jobs)
        failures: list[str] = []
        for spec in self.notifiers:
            name = self._name(spec)
            try:
                # Traced (Airflow's [traces] otel_on): one span per notifier, a child of this task's, in the
                # run's trace; a webhook's POST carries it (notifiers.py).
                with tracing.optional_span(f"notify {name}", attributes={
                        "kw.request_id": str(payload.get("request_id") or ""), "kw.notifier": name,
                        "kw.status": str(payload.get("status") or "")}):
                    notifier = self._resolve(spec)
                    notifier({**context, "notification": payload})  # type: ignore[call-arg, arg-type]
                self.log.info("notifier %s done", name)
            except Exception as exc:  # every notifier gets its chance; the task fails below
                self.log.exception("notifier %s failed", name)
                failures.append(f"{name}: {exc}")
        if failures and self.fail_on_error:
            raise AirflowException(f"{self.task_id}: {len(failures)} of {len(self.notifiers)} notifier(s) failed: "
                                   + "; ".join(failures))
        return payload
