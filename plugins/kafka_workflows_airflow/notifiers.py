"""Notifiers for the end of a split request (events aggregation, step 3), as Airflow BaseNotifiers.

They work in `NotifyOperator` (which puts the request's summary in the context as
`notification`) and as ordinary task/DAG callbacks (then the summary is built from the context's
XCom-free facts: dag, run, task state).

- `WebhookNotifier`: JSON POST, signed with HMAC-SHA256 over the exact body bytes
  (`X-KW-Signature: sha256=<hex>`), secret from an Airflow connection (its password) or variable;
  retries with exponential backoff on 5xx/408/429 and connection errors, never follows redirects.
- `LogNotifier`: one line in the task log (and the payload as JSON).
- `EmailNotifier`: the SMTP provider's `SmtpNotifier` (Airflow's SMTP connection/settings) with a
  subject and body made for this summary; skipped when no recipient is given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier, Context

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
    failed_jobs, truncated = _expand(value.get("failed_jobs") or (), max_failed)
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


def _printable_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def sign(secret: str | bytes, body: bytes) -> str:
    """The X-KW-Signature value of `body`: "sha256=" + hex HMAC-SHA256 with `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, signature: str | None) -> bool:
    """What a receiver does: constant-time comparison of the header with the expected signature."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib turns a redirected POST into a GET without body: refuse, so the error names the new URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


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
        payload = _context_payload(context)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "kafka-workflows",
                   DELIVERY_HEADER: str(payload.get("request_id") or uuid.uuid4()), **self.headers}
        secret = self._secret()
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        else:
            self.log.warning("no secret_conn_id/secret_variable: the webhook to %s is sent unsigned",
                             _printable_url(url))
        self.post(url, body, headers)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body`, retrying what may pass on a later attempt; returns the HTTP status."""
        opener = urllib.request.build_opener(_NoRedirect)
        shown = _printable_url(url)
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            retry_after: float | None = None
            try:
                request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
                with opener.open(request, timeout=self.timeout) as response:
                    response.read(65536)
                    self.log.info("webhook POST %s: HTTP %d in %.0f ms (attempt %d/%d)", shown, response.status,
                                  1000 * (time.monotonic() - started), attempt, attempts)
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                status, reason = exc.code, exc.reason
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                exc.close()
                if 300 <= status < 400:
                    raise WebhookError(f"webhook {shown} redirected (HTTP {status}) to "
                                       f"{exc.headers.get('Location')!r}: configure that URL instead") from exc
                if status < 500 and status not in (408, 429):
                    raise WebhookError(f"webhook {shown} refused the notification: HTTP {status} {reason}") from exc
                problem = f"HTTP {status} {reason}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
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
