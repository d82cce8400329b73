"""Notifiers for the end of a split request (events aggregation, step 3), as Airflow BaseNotifiers.

They work in `NotifyOperator` (which puts the request's summary in the context as
`notification`) and as ordinary task/DAG callbacks (then the summary is built from the context's
XCom-free facts: dag, run, task state).

- `WebhookNotifier`: JSON POST, signed Stripe-style with a timestamp:
  `X-KW-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, secret from an Airflow
  connection (its password) or variable; a receiver checks it with `verify()`, which rejects a
  signature older (or further in the future) than its tolerance, so a captured delivery cannot be
  replayed later. Only URLs under `[kafka_workflows] allowed_callbacks` are posted to, and only to
  public addresses unless `[kafka_workflows] allowed_networks` says otherwise (see `egress`).
  Retries with exponential backoff on 5xx/408/429 and connection errors (signed afresh each time),
  never follows redirects; errors carry the status code only.
- `LogNotifier`: one line in the task log (and the payload as JSON).
- `EmailNotifier`: the SMTP provider's `SmtpNotifier` (Airflow's SMTP connection/settings) with a
  subject and body made for this summary; skipped when no recipient is given.

For an incident's required action (operators/incident.py, a HITL operator's `notifiers`):
- `RequiredActionNotifier`: one task-log line with the question and the link to answer it.
- `EmailNotifier(to, subject=INCIDENT_SUBJECT, html_content=INCIDENT_HTML)`: the question mailed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier, Context

from kafka_workflows.observe import tracing
from kafka_workflows.store.indexcodec import decode_ranges
from kafka_workflows_airflow.egress import (
    SECTION,
    Egress,
    EgressRefused,
    HttpStatusError,
    allowed_networks,
    config_list,
    printable,
)

SIGNATURE_HEADER = "X-KW-Signature"
DELIVERY_HEADER = "X-KW-Delivery"  # stable per request: lets a receiver drop a retried delivery
MAX_FAILED_INDICES = 1000


class WebhookError(RuntimeError):
    """The webhook did not accept the notification (after the retries that could help)."""


def _expand(ranges: Iterable[Sequence[int]], limit: int) -> tuple[list[int], bool]:
    indices: list[int] = []
    for start, end in ranges:
        for i in range(int(start), int(end) + 1):
            if len(indices) >= limit:
                return indices, True
            indices.append(i)
    return indices, False


def notification_payload(result: Mapping[str, Any] | None, context: Mapping[str, Any] | None = None, *,
                         max_failed: int = MAX_FAILED_INDICES) -> dict[str, Any]:
    """The summary a notification carries, from the final store value the await task returned.

    request_id, status, total, completed, failed, failed_jobs (indices), failure_reasons (job ->
    reason), the import counts the split recorded (rows, valid_rows, bad_rows, bad_examples,
    source), and the DAG run it belongs to.
    """
    value = dict(result or {})
    meta = value.get("meta") or {}
    failed_jobs, truncated = _expand(decode_ranges(value.get("failed_jobs")), max_failed)
    payload: dict[str, Any] = {
        "request_id": value.get("request_id"),
        "status": value.get("status"),
        "total": value.get("total"),
        "completed": value.get("completed"),
        "failed": value.get("failed"),
        "failed_jobs": failed_jobs,
        "failed_jobs_truncated": truncated,
        "failure_reasons": value.get("failure_reasons") or {},
        "completed_at": value.get("completed_at"),
        "rows": meta.get("rows"),
        "valid_rows": meta.get("valid_rows"),
        "bad_rows": meta.get("bad_rows"),
        "bad_examples": meta.get("bad_examples") or [],
        "source": meta.get("source"),
        "dag_id": meta.get("dag_id"),
        "run_id": meta.get("run_id"),
    }
    if context:
        dag_run = context.get("dag_run")
        if dag_run is not None:
            payload["dag_id"] = payload["dag_id"] or getattr(dag_run, "dag_id", None)
            payload["run_id"] = payload["run_id"] or getattr(dag_run, "run_id", None)
    return payload


def _context_payload(context: Mapping[str, Any]) -> dict[str, Any]:
    """A notification used as a plain callback: what the context says about the run."""
    if context.get("notification"):
        return dict(context["notification"])
    ti, dag_run = context.get("ti") or context.get("task_instance"), context.get("dag_run")
    return {"dag_id": getattr(dag_run, "dag_id", None), "run_id": getattr(dag_run, "run_id", None),
            "task_id": getattr(ti, "task_id", None), "state": str(getattr(ti, "state", None) or "")}


_printable_url = printable
_SIGNATURE = re.compile(r"^t=(\d{1,12}),v1=([0-9a-f]{64})$")
CALLBACK_RULE = f"[{SECTION}] allowed_callbacks"


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The X-KW-Signature value of `body` at `timestamp` (now): "t=<unix>,v1=<hex HMAC-SHA256 of '<t>.<body>'>"."""
    key = secret.encode() if isinstance(secret, str) else secret
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1=" + hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None, tolerance: float = 300,
           now: float | None = None) -> bool:
    """What a receiver does: True only for a well-formed header whose HMAC matches (constant time)
    and whose timestamp is within `tolerance` seconds of `now`. Never raises."""
    try:
        match = _SIGNATURE.match(header.strip()) if isinstance(header, str) else None
        if match is None:
            return False
        t = int(match.group(1))
        if abs((time.time() if now is None else now) - t) > tolerance:
            return False
        return hmac.compare_digest(sign(secret, body, t), f"t={t},v1={match.group(2)}")
    except (TypeError, ValueError, AttributeError):
        return False


class WebhookNotifier(BaseNotifier):
    """POST the notification as JSON to `url`, signed.

    :param url: templated, e.g. "{{ params.callback_url }}". An empty URL skips the notifier (logged)
        unless `required`.
    :param secret_conn_id: Airflow connection whose password is the HMAC secret.
    :param secret_variable: Airflow variable holding the secret (when no connection is given).
        With neither, the request goes unsigned and a warning is logged.
    :param retries: further attempts after the first, on 5xx, 408, 429 and connection errors.
    :param backoff: first delay in seconds, doubled per attempt up to `max_backoff`; a Retry-After
        header (seconds) of the server wins when longer.
    :param timeout: seconds per attempt (connect + response).
    """

    template_fields = ("url", "headers")

    def __init__(self, url: str | None = None, *, secret_conn_id: str | None = None,
                 secret_variable: str | None = None, headers: Mapping[str, str] | None = None,
                 retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0, timeout: float = 10.0,
                 required: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.secret_conn_id = secret_conn_id
        self.secret_variable = secret_variable
        self.headers = dict(headers or {})
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.required = required

    def _secret(self) -> str | None:
        if self.secret_conn_id:
            from airflow.sdk import BaseHook

            password = BaseHook.get_connection(self.secret_conn_id).password
            if not password:
                raise WebhookError(f"connection {self.secret_conn_id!r} has no password to sign webhooks with")
            return str(password)
        if self.secret_variable:
            from airflow.sdk import Variable

            return str(Variable.get(self.secret_variable))
        return None

    def notify(self, context: Context) -> None:
        url = (self.url or "").strip() if isinstance(self.url, str) or self.url is None else str(self.url)
        if not url or url == "None":
            if self.required:
                raise WebhookError("WebhookNotifier has no URL to post to")
            self.log.info("no webhook URL given: webhook notification skipped")
            return
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise WebhookError(f"webhook URL {_printable_url(url)!r} must be http:// or https://")
        egress = Egress(tuple(config_list("allowed_callbacks")), CALLBACK_RULE, allowed_networks())
        try:
            egress.check(url)  # before the payload is even built: nothing leaves for a refused URL
        except EgressRefused as exc:
            raise WebhookError(f"webhook refused: {exc}") from None
        except OSError as exc:  # DNS: may pass on a later attempt of post()
            self.log.warning("webhook %s: %s", _printable_url(url), exc)
        payload = _context_payload(context)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "kafka-workflows",
                   DELIVERY_HEADER: str(payload.get("request_id") or uuid.uuid4()), **self.headers}
        secret = self._secret()
        if secret is None:
            self.log.warning("no secret_conn_id/secret_variable: the webhook to %s is sent unsigned",
                             _printable_url(url))
        self.post(url, body, headers, secret, egress)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], secret: str | None = None,
             egress: Egress | None = None) -> int:
        """POST `body` (signed with `secret` at each attempt), retrying what may pass on a later attempt;
        returns the HTTP status."""
        egress = egress or Egress(tuple(config_list("allowed_callbacks")), CALLBACK_RULE, allowed_networks())
        shown = _printable_url(url)
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            retry_after: float | None = None
            signed = {**headers, SIGNATURE_HEADER: sign(secret, body)} if secret is not None else dict(headers)
            try:
                # Traced, each attempt is a CLIENT span whose context the POST carries (W3C traceparent).
                with tracing.optional_span("POST", kind="CLIENT", attributes={
                        "http.request.method": "POST", "server.address": urllib.parse.urlsplit(url).hostname or "",
                        "http.request.resend_count": attempt - 1}) as span:
                    trace = tracing.current() if span is not None else None
                    if trace is not None:
                        signed.update(trace.headers())
                    response = egress.request("POST", url, body=body, headers=signed, timeout=self.timeout,
                                              follow_redirects=False)
                    if span is not None:
                        span.set_attribute("http.response.status_code", int(response.status))
                    with response:
                        response.read(65536)
                self.log.info("webhook POST %s: HTTP %d in %.0f ms (attempt %d/%d)", shown, response.status,
                              1000 * (time.monotonic() - started), attempt, attempts)
                return int(response.status)
            except EgressRefused as exc:
                raise WebhookError(f"webhook refused: {exc}") from None
            except HttpStatusError as exc:
                status = exc.status
                retry_after = _retry_after(exc.retry_after)
                if 300 <= status < 400:
                    raise WebhookError(f"webhook {shown} redirected (HTTP {status}); redirects are not followed: "
                                       "configure the final URL") from None
                if status < 500 and status not in (408, 429):
                    raise WebhookError(f"webhook {shown} refused the notification: HTTP {status}") from None
                problem = f"HTTP {status}"
            except OSError as exc:
                problem = str(exc)
            if attempt == attempts:
                raise WebhookError(f"webhook {shown} failed after {attempts} attempt(s); last: {problem}")
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            delay = max(delay, min(retry_after or 0.0, self.max_backoff))
            self.log.warning("webhook POST %s: %s (attempt %d/%d); retrying in %.1fs", shown, problem, attempt,
                             attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    async def async_notify(self, context: Context) -> None:
        from asgiref.sync import sync_to_async

        await sync_to_async(self.notify)(context)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


class LogNotifier(BaseNotifier):
    """Write the notification to the task log: a one-line summary, then the payload as JSON."""

    template_fields = ("prefix",)

    def __init__(self, prefix: str = "notification", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix

    def notify(self, context: Context) -> None:
        payload = _context_payload(context)
        if "status" in payload:
            self.log.info("%s: request %s %s: %s/%s job(s) completed, %s failed%s", self.prefix,
                          payload.get("request_id"), payload.get("status"), payload.get("completed"),
                          payload.get("total"), payload.get("failed"),
                          f" (failed jobs {payload['failed_jobs']})" if payload.get("failed_jobs") else "")
        self.log.info("%s payload: %s", self.prefix, json.dumps(payload, sort_keys=True, default=str))

    async def async_notify(self, context: Context) -> None:
        self.notify(context)


EMAIL_SUBJECT = "[kafka-workflows] {{ notification.dag_id }}: request {{ notification.status }}"
EMAIL_HTML = (
    "<p>Request <code>{{ notification.request_id }}</code> is <b>{{ notification.status }}</b>.</p>"
    "<ul><li>jobs completed: {{ notification.completed }} of {{ notification.total }}</li>"
    "<li>jobs failed: {{ notification.failed }}"
    "{% if notification.failed_jobs %} ({{ notification.failed_jobs | join(', ') }}){% endif %}</li>"
    "{% if notification.rows is not none %}<li>rows: {{ notification.rows }}, valid {{ notification.valid_rows }},"
    " skipped {{ notification.bad_rows }}</li>{% endif %}</ul>"
    "{% for job, reason in notification.failure_reasons.items() %}<p>job {{ job }}: {{ reason | e }}</p>"
    "{% endfor %}"
)


class EmailNotifier(SmtpNotifier):
    """The SMTP provider's notifier (Airflow's SMTP connection, [email] email_conn_id) with a subject
    and body for a request summary. An empty `to` (e.g. an unset "{{ params.notify_email }}") skips it."""

    def __init__(self, to: str | Iterable[str] | None = None, *, subject: str | None = EMAIL_SUBJECT,
                 html_content: str | None = EMAIL_HTML, **kwargs: Any) -> None:
        super().__init__(to=to or "", subject=subject, html_content=html_content, **kwargs)

    def notify(self, context: Context) -> None:
        recipients = [self.to] if isinstance(self.to, str) else list(self.to or [])
        if not [r for r in recipients if r and str(r).strip() and r != "None"]:
            self.log.info("no email recipient given: email notification skipped")
            return
        super().notify(context)


class RequiredActionNotifier(BaseNotifier):
    """For a Human-in-the-loop task: log its question and the Required Actions link to answer it
    (absolute when `[api] base_url` is set)."""

    def notify(self, context: Context) -> None:
        task = context["task"]
        ti = context["task_instance"]
        path = (f"/dags/{ti.dag_id}/runs/{urllib.parse.quote(ti.run_id, safe='')}/tasks/{ti.task_id}"
                "/required_actions")
        try:
            link = task.generate_link_to_ui_from_context(context=context)
        except (ValueError, AttributeError):  # no [api] base_url: the path in the Airflow UI
            link = path
        self.log.warning("required action: %s; answer at %s", getattr(task, "subject", ti.task_id), link)

    async def async_notify(self, context: Context) -> None:
        self.notify(context)


INCIDENT_SUBJECT = "[kafka-workflows] {{ task.subject }}"
INCIDENT_HTML = ("<p>A decision is needed: <b>{{ task.subject | e }}</b></p><pre>{{ task.body | e }}</pre>"
                 "<p>Answer it under Required Actions in Airflow (DAG {{ dag.dag_id | e }}, run "
                 "{{ run_id | e }}).</p>")
