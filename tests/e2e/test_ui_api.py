"""The plugin's API in a real `airflow standalone` against the real broker: auth on every route,
a viewer cannot act, an admin's skip is recorded with their Airflow name, and bad input is named.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from kafka_workflows.retry.breaker import BreakerPolicy
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.worker import Worker
from kafka_workflows_airflow.api.app import create_app
from stack.airflow import AirflowStandalone
from stack.broker import Broker
from tests.e2e.conftest import VIEWER
from tests.helpers.kafka import start_in_thread, stop_thread, wait_for
from tests.helpers.ui import GROUP, TOPIC, WORKFLOW, call, held, produce, renewals_worker

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

SAMPLE = {"dag_id": WORKFLOW, "group": GROUP, "op": "skip", "letter_id": f"{TOPIC}.{GROUP}.dlq:0:0",
          "store": "contacts", "request_id": "r-1", "run_id": "manual__1", "name": "kw.js"}


@pytest.fixture(scope="module")
def config(broker: Broker) -> dict[str, str]:
    return {"bootstrap.servers": broker.bootstrap_servers}


@pytest.fixture(scope="module")
def tokens(standalone: AirflowStandalone) -> dict[str, str]:
    return {"admin": standalone.token(), "viewer": standalone.token(VIEWER)}


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("ui-api") / "record.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KW_TEST_RECORD", str(path))
        yield path


def _routes() -> list[tuple[str, str]]:
    app = create_app()
    assert all(isinstance(r, APIRoute) for r in app.routes), \
        f"a route that is not an APIRoute escapes the auth dependencies: {app.routes}"
    out = []
    for route in app.routes:
        assert isinstance(route, APIRoute)
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], route.path)
        out += [(method, path) for method in sorted(route.methods)]
    return out


def test_every_route_answers_401_without_credentials_and_every_action_403_for_a_viewer(
        standalone: AirflowStandalone, tokens: dict[str, str]) -> None:
    routes = _routes()
    assert len(routes) >= 20, routes
    anonymous = {(m, p): call(standalone, m, p, body={"reason": "x"} if m == "POST" else None)[0] for m, p in routes}
    assert anonymous == {r: 401 for r in routes}
    actions = [(m, p) for m, p in routes if m != "GET"]
    assert len(actions) == 3, actions  # the group actions, the replay and the canary replay
    for op in ("skip", "unblock", "pause", "resume", "open", "close"):
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/{op}", tokens["viewer"],
                            {"reason": "viewer tries", "topic": TOPIC, "partition": 0, "offset": 0})
        assert status == 403, (op, body)
    status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/dead-letters/replay", tokens["viewer"],
                        {"ids": [], "dry_run": True})
    assert status == 403, body
    status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/canary-replays", tokens["viewer"],
                        {"group": GROUP, "reason": "viewer tries"})
    assert status == 403, body
    status, overview = call(standalone, "GET", "/api/workflows", tokens["viewer"])  # a viewer reads
    assert status == 200 and WORKFLOW in [w["workflow"] for w in overview]
    status, docs = call(standalone, "GET", "/openapi.json", tokens["viewer"])
    assert status == 200 and "/api/workflows/{dag_id}/groups/{group}/{op}" in docs["paths"]


def test_an_admins_skip_dead_letters_the_held_message_and_the_audit_names_the_admin(
        standalone: AirflowStandalone, tokens: dict[str, str], config: dict[str, str], record: Path,
        tmp_path: Path) -> None:
    admin = tokens["admin"]
    key = f"ui-skip-{uuid.uuid4().hex[:8]}"
    with renewals_worker(config):
        partition, offset = produce(config, key, {"fail_unless_exists": str(tmp_path / "never")})
        hold = wait_for(lambda: held(standalone, admin, partition), 90, f"{TOPIC}[{partition}] to show blocked", 1)
        assert (hold["offset"], hold["key"]) == (offset, key) and hold["failures"] >= 1, hold

        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/skip", admin,
                            {"reason": "ticket UI-1", "topic": TOPIC, "partition": partition, "offset": offset})
        assert status == 200, body
        assert body["command"]["by"] == "admin" and body["answers"][0]["result"].startswith("skipped"), body

        def audited() -> dict[str, Any] | None:
            _, page = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/audit", admin)
            return next((c for c in page["items"] if c["id"] == body["command"]["id"] and c["applied"]), None)

        entry = wait_for(audited, 30, "the skip in the audit log", 0.5)
        assert (entry["op"], entry["by"], entry["reason"], entry["offset"]) == ("skip", "admin", "ticket UI-1", offset)

        def letters() -> list[dict[str, Any]]:
            _, page = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters?key={key}", admin)
            return list(page["items"])

        [letter] = wait_for(letters, 30, "the skipped message in the dead-letter list", 0.5)
        assert (letter["skipped_by"], letter["skip_reason"], letter["original"]) == (
            "admin", "ticket UI-1", f"{TOPIC}[{partition}]@{offset}")
        wait_for(lambda: held(standalone, admin, partition) is None, 30, "the partition to flow again", 1)

        # The operator's view is stale now: 409, and nothing more is skipped.
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/skip", admin,
                            {"reason": "again", "topic": TOPIC, "partition": partition, "offset": offset})
        assert status == 409 and f"no longer held at offset {offset}" in body["detail"], body
        time.sleep(3)
        assert len(letters()) == 1

        # Pause and resume the group: every partition shows paused, then flows again.
        def states() -> set[str]:
            _, group = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/groups/{GROUP}", admin)
            return {p["state"] for p in group["partitions"] if p["topic"] == TOPIC}

        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/pause", admin,
                            {"reason": "provider maintenance"})
        assert status == 200 and body["answers"][0]["result"] == "paused 3 partition(s)", body
        wait_for(lambda: states() == {"paused"}, 30, "every partition to show paused", 0.5)
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/resume", admin,
                            {"reason": "maintenance over"})
        assert status == 200 and body["answers"][0]["result"].startswith("resumed"), body
        wait_for(lambda: states() == {"flowing"}, 30, "every partition to flow again", 0.5)

        # The audit log pages newest first: resume, pause, the refused skip, the skip.
        def ops(offset: int, limit: int) -> list[tuple[str, str]]:
            _, page = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/audit?offset={offset}&limit={limit}", admin)
            return [(c["op"], c["reason"]) for c in page["items"]]

        wait_for(lambda: ops(0, 1) == [("resume", "maintenance over")], 30, "the resume in the audit log", 0.5)
        assert ops(0, 4) == [("resume", "maintenance over"), ("pause", "provider maintenance"), ("skip", "again"),
                             ("skip", "ticket UI-1")]
        assert ops(2, 1) == [("skip", "again")]


def test_unknown_names_are_404_naming_them_and_bad_filters_422_naming_the_field(
        standalone: AirflowStandalone, tokens: dict[str, str]) -> None:
    admin = tokens["admin"]
    cases = {
        "/api/workflows/no_such_workflow": "workflow 'no_such_workflow'",
        f"/api/workflows/{WORKFLOW}/groups/no-such-group": "group 'no-such-group'",
        "/api/workflows/contacts_import/stores/contacts/requests/no-such-request": "request 'no-such-request'",
        f"/api/workflows/{WORKFLOW}/stores/no-such-store/requests": "store 'no-such-store'",
        f"/api/workflows/{WORKFLOW}/dead-letters/{TOPIC}.{GROUP}.dlq:0:999999": f"{TOPIC}.{GROUP}.dlq:0:999999",
        f"/api/workflows/{WORKFLOW}/dead-letters?group=other": "group 'other'",
        f"/api/workflows/{WORKFLOW}/runs/manual__1": "request 'manual__1' of workflow 'subscription_renewals'",
    }
    for path, named in cases.items():
        status, body = call(standalone, "GET", path, admin)
        assert status == 404 and named in body["detail"], (path, status, body)

    def field_of(status: int, body: Any) -> list[str]:
        assert status == 422, body
        return [str(e["loc"][-1]) for e in body["detail"]]

    assert field_of(*call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters?since=yesterday", admin)) \
        == ["since"]
    assert field_of(*call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters?since=2026-01-02T00:00:00Z"
                                            "&until=2026-01-01T00:00:00Z", admin)) == ["until"]
    assert field_of(*call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters?limit=0", admin)) == ["limit"]
    assert field_of(*call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/skip", admin,
                          {"reason": "no offset", "topic": TOPIC, "partition": 0})) == ["offset"]
    assert field_of(*call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/pause", admin,
                          {"reason": ""})) == ["reason"]
    assert field_of(*call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/explode", admin,
                          {"reason": "x"})) == ["op"]


def test_mixing_a_naive_and_an_aware_since_until_is_422_naming_until_not_500(
        standalone: AirflowStandalone, tokens: dict[str, str]) -> None:
    admin = tokens["admin"]
    for since, until in (("2026-01-01T00:00:00", "2026-01-02T00:00:00Z"),
                         ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00")):
        status, body = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters?since={since}&until={until}",
                            admin)
        assert status == 422 and [e["loc"][-1] for e in body["detail"]] == ["until"], (since, until, status, body)
        status, body = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters/fingerprints?since={since}"
                                               f"&until={until}", admin)
        assert status == 422, body
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/dead-letters/replay", admin,
                            {"filter": {"since": since, "until": until}, "dry_run": True})
        assert status == 422, body
    status, body = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/dead-letters?since=2026-01-01T00:00:00"
                                           "&until=2026-01-02T00:00:00", admin)
    assert status == 200, body  # both naive is fine


def test_an_admin_opens_and_closes_the_groups_breaker_and_starts_a_canary_replay_from_the_ui(
        standalone: AirflowStandalone, tokens: dict[str, str], config: dict[str, str], record: Path) -> None:
    admin = tokens["admin"]
    worker = Worker(config, [TOPIC], GROUP, "tests.helpers.handlers.record", status_interval=1.0,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[1])), breaker=BreakerPolicy(cooldown=1))
    thread = start_in_thread(worker)

    def breaker(state: str) -> dict[str, Any] | None:
        _, group = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/groups/{GROUP}", admin)
        found = group.get("breaker")
        return group if found and found["state"] == state else None

    try:
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/open", admin,
                            {"reason": "provider maintenance"})
        assert status == 200 and "-> open (until closed)" in body["answers"][0]["result"], body
        group = wait_for(lambda: breaker("open"), 30, "the group page to show the breaker open", 0.5)
        assert group["breaker"]["forced"] is True and "provider maintenance" in group["breaker"]["reason"]
        _, overview = call(standalone, "GET", "/api/workflows", admin)
        [unit] = [u for w in overview if w["workflow"] == WORKFLOW for u in w["units"] if u["group"] == GROUP]
        assert unit["breaker"]["state"] == "open", unit
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/close", admin,
                            {"reason": "maintenance over"})
        assert status == 200 and "open -> closed" in body["answers"][0]["result"], body
        wait_for(lambda: breaker("closed"), 30, "the group page to show the breaker closed", 0.5)
    finally:
        stop_thread(worker, thread)

    key = f"no-such-key-{uuid.uuid4().hex[:8]}"  # nothing matches: the canary ends at once, audited
    status, started = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/canary-replays", admin,
                           {"group": GROUP, "key": key, "rate": 5, "canary": 2, "reason": "after the outage"})
    assert status == 200 and started["by"] == "admin", started

    def ended() -> dict[str, Any] | None:
        _, items = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/canary-replays", admin)
        return next((c for c in items if c["state"] in ("done", "stopped", "failed")
                     and c["started_at"] == started["started_at"]), None)

    canary = wait_for(ended, 60, "the canary replay to end", 0.5)
    assert (canary["state"], canary["reason"], canary["total"]) == ("done", "nothing to replay", 0), canary
    status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/canary-replays", admin,
                        {"group": "no-such-group", "reason": "x"})
    assert status == 404 and "no-such-group" in str(body), body

    def audited() -> dict[str, Any] | None:
        _, page = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/audit", admin)
        return next((c for c in page["items"] if c["op"] == "canary-replay" and c["id"] == canary["id"]), None)

    entry = wait_for(audited, 30, "the canary replay in the audit log", 0.5)
    assert entry["by"] == "admin" and entry["result"] == "nothing to replay", entry
