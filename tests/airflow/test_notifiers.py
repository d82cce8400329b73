"""Notifiers and NotifyOperator against real local servers (HTTP webhook receiver, SMTP sink); no broker."""

from __future__ import annotations

import json
import logging
import re
import socket
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from kafka_workflows_airflow.notifiers import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    EmailNotifier,
    LogNotifier,
    WebhookError,
    WebhookNotifier,
    notification_payload,
    sign,
    verify,
)
from kafka_workflows_airflow.operators import NotifyOperator
from tests.helpers.smtp import SmtpSink
from tests.helpers.webhook import WebhookReceiver

pytestmark = pytest.mark.airflow

RESULT = {  # what AwaitCompletionSensor returns: the final store value
    "request_id": "contacts_import.split.manual__1", "total": 5, "completed": 3, "failed": 2,
    "status": "completed_with_failures", "completed_at": "2026-11-27T10:00:00.000Z",
    "failed_jobs": [[1, 1], [3, 3]], "failure_reasons": {"1": "NonRetryableError: blocked", "3": "timeout"},
    "meta": {"rows": 1000, "valid_rows": 990, "bad_rows": 10, "bad_examples": [{"row": 4}], "source": "s.csv",
             "dag_id": "contacts_import", "run_id": "manual__1"},
}


@pytest.fixture
def secret_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_HOOK_SECRET", json.dumps({"conn_type": "http", "password": "s3cr3t"}))
    return "hook_secret"


def _context(**extra: Any) -> dict[str, Any]:
    return {"notification": notification_payload(RESULT), **extra}


def test_the_payload_expands_failed_jobs_and_carries_the_import_counts() -> None:
    payload = notification_payload(RESULT)
    assert payload["failed_jobs"] == [1, 3] and payload["failed_jobs_truncated"] is False
    assert (payload["rows"], payload["valid_rows"], payload["bad_rows"]) == (1000, 990, 10)
    assert (payload["dag_id"], payload["run_id"]) == ("contacts_import", "manual__1")
    many = notification_payload({**RESULT, "failed_jobs": [[0, 4999]]}, max_failed=100)
    assert len(many["failed_jobs"]) == 100 and many["failed_jobs_truncated"] is True


def test_signature_is_hmac_sha256_of_the_timestamp_and_the_exact_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    assert sign("k", body, 1_700_000_000) == "t=1700000000,v1=" + hmac.new(
        b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert verify("k", body, sign("k", body)) and not verify("k", body + b" ", sign("k", body))
    assert not verify("other", body, sign("k", body)) and not verify("k", body, None)


def test_verify_rejects_old_and_future_signatures_outside_the_tolerance() -> None:
    body, now = b"{}", 1_800_000_000
    assert verify("k", body, sign("k", body, now - 299), now=now)
    assert not verify("k", body, sign("k", body, now - 301), now=now), "a replayed old delivery"
    assert not verify("k", body, sign("k", body, now + 301), now=now), "a signature from the future"
    assert verify("k", body, sign("k", body, now - 3000), tolerance=3600, now=now)
    forged = sign("k", body, now - 1000).replace("t=1799999000", f"t={now}")  # a new t on an old HMAC
    assert not verify("k", body, forged, now=now)


@pytest.mark.parametrize("header", [
    "", "sha256=abc", "t=,v1=", "t=abc,v1=" + "0" * 64, "t=1,v1=" + "z" * 64, "t=1" + "0" * 400 + ",v1=00",
    "v1=" + "0" * 64 + ",t=1", "t=1,v1=" + "0" * 63, "\x00\xff", 12, b"t=1,v1=00", ["t=1"], "t=1,v1=" + "é" * 64,
])
def test_verify_never_raises_on_a_malformed_header(header: Any) -> None:
    assert verify("k", b"{}", header) is False


def test_webhook_posts_signed_json_once(receiver: WebhookReceiver, secret_conn: str) -> None:
    WebhookNotifier(url=f"{receiver.url}/done", secret_conn_id=secret_conn)(_context())
    [delivery] = receiver.deliveries
    assert delivery.path == "/done" and delivery.status == 200
    assert delivery.header("Content-Type") == "application/json"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", delivery.header(SIGNATURE_HEADER) or "")
    assert delivery.signed_with("s3cr3t") and not delivery.signed_with("s3cr3t", tolerance=-1)
    assert delivery.header(DELIVERY_HEADER) == RESULT["request_id"]
    assert delivery.json == notification_payload(RESULT)


def test_webhook_retries_5xx_with_backoff_and_sends_the_same_signed_body(
        receiver: WebhookReceiver, secret_conn: str) -> None:
    receiver.fail_next = 2
    WebhookNotifier(url=receiver.url, secret_conn_id=secret_conn, backoff=0.05)(_context())
    assert [d.status for d in receiver.deliveries] == [503, 503, 200]
    assert len({d.body for d in receiver.deliveries}) == 1 and all(d.signed_with("s3cr3t") for d in receiver.deliveries)


def test_webhook_gives_up_after_its_retries(receiver: WebhookReceiver) -> None:
    receiver.fail_next = 10
    with pytest.raises(WebhookError, match=r"failed after 3 attempt\(s\); last: HTTP 503"):
        WebhookNotifier(url=receiver.url, retries=2, backoff=0.01).notify(_context())  # type: ignore[arg-type]
    assert len(receiver.deliveries) == 3


def test_webhook_does_not_retry_a_4xx(receiver: WebhookReceiver) -> None:
    receiver.fail_next, receiver.fail_with = 5, 400
    with pytest.raises(WebhookError, match="refused the notification: HTTP 400"):
        WebhookNotifier(url=receiver.url, backoff=0.01).notify(_context())  # type: ignore[arg-type]
    assert len(receiver.deliveries) == 1


def test_webhook_retries_connection_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_CALLBACKS", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_NETWORKS", "127.0.0.0/8")
    notifier = WebhookNotifier(url=f"http://127.0.0.1:{port}/x?token=abc", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(WebhookError, match=rf"127\.0\.0\.1:{port}/x\?… failed after 2 attempt\(s\)") as info:
        notifier.notify(_context())  # type: ignore[arg-type]
    assert "abc" not in str(info.value), "the query string (tokens) stays out of errors"


def test_webhook_secret_from_a_variable_and_unsigned_without_one(
        receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_KW_HOOK_SECRET", "from-variable")
    WebhookNotifier(url=receiver.url, secret_variable="kw_hook_secret").notify(_context())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        WebhookNotifier(url=receiver.url).notify(_context())  # type: ignore[arg-type]
    signed, unsigned = receiver.deliveries
    assert signed.signed_with("from-variable")
    assert unsigned.header(SIGNATURE_HEADER) is None


@pytest.mark.parametrize("url", [None, "", "None"])
def test_webhook_without_url_is_skipped_unless_required(url: str | None, receiver: WebhookReceiver) -> None:
    WebhookNotifier(url=url).notify(_context())  # type: ignore[arg-type]
    assert receiver.deliveries == []
    with pytest.raises(WebhookError, match="no URL"):
        WebhookNotifier(url=url, required=True).notify(_context())  # type: ignore[arg-type]


def test_email_through_the_smtp_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = SmtpSink().start_in_thread()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": sink.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "kw@example.com", "retry_limit": 0}}))
    try:
        EmailNotifier(to="ops@example.com")(_context())
        EmailNotifier(to=None)(_context())  # skipped: nobody to tell
    finally:
        sink.stop()
    [(sender, recipients, message)] = sink.messages
    assert (sender, recipients) == ("kw@example.com", ["ops@example.com"])
    assert message["Subject"] == "[kafka-workflows] contacts_import: request completed_with_failures"
    html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    assert "jobs completed: 3 of 5" in html and "(1, 3)" in html and "NonRetryableError: blocked" in html


def test_notify_operator_runs_every_notifier_and_fails_naming_the_broken_one(
        receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[dict[str, Any]] = []

    def record(context: dict[str, Any]) -> None:
        calls.append(context["notification"])

    receiver.fail_next, receiver.fail_with = 1, 404
    op = NotifyOperator(task_id="notify", result=RESULT, notifiers=[
        WebhookNotifier(url=f"{receiver.url}/{{{{ notification.status }}}}", backoff=0.01),
        "kafka_workflows_airflow.notifiers.LogNotifier", record])
    failure = r"notify: 1 of 3 notifier\(s\) failed: WebhookNotifier: webhook .* HTTP 404"
    with caplog.at_level(logging.INFO, logger="kafka_workflows_airflow"), pytest.raises(AirflowException,
                                                                                       match=failure):
        op.execute({})  # type: ignore[arg-type]
    assert calls == [notification_payload(RESULT)], "the notifiers after the failed one still ran"
    assert receiver.deliveries[0].path == "/completed_with_failures", "notifier templates see `notification`"
    assert "request contacts_import.split.manual__1 completed_with_failures: 3/5 job(s) completed, 2 failed" \
        in caplog.text + capsys.readouterr().out

    receiver.fail_next = 0
    as_yaml_declares_it = {"class": "kafka_workflows_airflow.notifiers.WebhookNotifier", "url": f"{receiver.url}/y"}
    ok = NotifyOperator(task_id="notify", result=json.dumps(RESULT),  # as an XCom pushed by the triggerer reads
                        notifiers=[LogNotifier(), as_yaml_declares_it]).execute({})  # type: ignore[arg-type]
    assert ok == notification_payload(RESULT) and receiver.accepted("/y")[0].json == ok
    with pytest.raises(AirflowException, match="`result` must be the await task's store value") as refused:
        NotifyOperator(task_id="notify", result="oops", notifiers=[LogNotifier()]).execute({})  # type: ignore[arg-type]
    assert "oops" not in str(refused.value), "the result is not echoed"
    with pytest.raises(ValueError, match="at least one notifier"):
        NotifyOperator(task_id="notify", result=RESULT, notifiers=[])


# -- callbacks are allow-listed -------------------------------------------------------------
@pytest.fixture
def stranger() -> Any:
    """A loopback server nobody allowed, which records whether it was contacted."""
    server = WebhookReceiver("127.0.0.2").start_in_thread()
    yield server
    server.stop()


def test_a_callback_url_outside_allowed_callbacks_is_refused_before_anything_is_sent(
        stranger: WebhookReceiver, receiver: WebhookReceiver) -> None:
    with pytest.raises(WebhookError, match=r"webhook refused: http://127\.0\.0\.2:\d+/hook\?… is not under an allowed "
                                           r"URL \(\[kafka_workflows\] allowed_callbacks; allowed: http://127"):
        WebhookNotifier(url=f"{stranger.url}/hook?token=t0k").notify(_context())  # type: ignore[arg-type]
    assert not stranger.contacted()


def test_an_allowed_callback_host_on_a_loopback_address_is_refused_unless_its_network_is_allowed(
        stranger: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_CALLBACKS", f"{stranger.url}/")
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_NETWORKS", "127.0.0.1/32")
    with pytest.raises(WebhookError, match=r"127\.0\.0\.2 resolves to a loopback address \(127\.0\.0\.2\), refused "
                                           r"unless \[kafka_workflows\] allowed_networks includes it"):
        WebhookNotifier(url=f"{stranger.url}/hook").notify(_context())  # type: ignore[arg-type]
    assert not stranger.contacted()


def test_a_host_name_is_checked_after_dns_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_CALLBACKS", "http://localhost:9/")
    with pytest.raises(WebhookError, match=r"localhost resolves to a loopback address"):
        WebhookNotifier(url="http://localhost:9/hook").notify(_context())  # type: ignore[arg-type]


def test_a_redirecting_webhook_is_not_followed_and_its_location_is_not_quoted(
        receiver: WebhookReceiver, stranger: WebhookReceiver) -> None:
    notifier = WebhookNotifier(url=f"{receiver.url}/hook?to={stranger.url}/secret-target", backoff=0.01)
    receiver.fail_next, receiver.fail_with = 1, 307
    with pytest.raises(WebhookError, match=r"redirected \(HTTP 307\); redirects are not followed") as info:
        notifier.notify(_context())  # type: ignore[arg-type]
    assert "secret-target" not in str(info.value) and not stranger.contacted()


def test_an_http_error_gives_the_status_code_only(receiver: WebhookReceiver) -> None:
    receiver.fail_next, receiver.fail_with = 1, 418
    with pytest.raises(WebhookError) as info:
        WebhookNotifier(url=f"{receiver.url}/x", backoff=0.01).notify(_context())  # type: ignore[arg-type]
    assert str(info.value).endswith("refused the notification: HTTP 418") and "Teapot" not in str(info.value)
