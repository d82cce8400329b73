"""The plugin's pages in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
inside the Airflow UI of a real `airflow standalone`, against the real broker.

Screenshots go to $KW_SCREENSHOTS (default .state/tests/screenshots); docs/screenshots/ holds
copies for the README.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import airflow_client.client as af
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from confluent_kafka import Producer
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FrameLocator,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from kafka_workflows.ops.control import CONTROL_TOPIC, control_history, ensure_control_topics
from kafka_workflows.ops.deadletters import list_dead_letters
from kafka_workflows.ops.incidents import IncidentPolicy
from kw_examples import contacts
from stack.airflow import ADMIN, AirflowStandalone
from stack.broker import Broker
from tests.e2e.test_contacts_import import Processes
from tests.helpers.kafka import records, wait_for
from tests.helpers.ui import GROUP, TOPIC, WORKFLOW, call, held, produce, renewals_worker

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("KW_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".state/tests/screenshots"))
WAIT_MS = 60_000  # generous: the machine is shared
expect.set_options(timeout=WAIT_MS)  # assertions too, not only actions: their default is 5 s


@pytest.fixture(scope="module")
def config(broker: Broker) -> dict[str, str]:
    return {"bootstrap.servers": broker.bootstrap_servers}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `./dev setup` installs Debian's chromium"
    playwright: Playwright = sync_playwright().start()
    try:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def session(browser: Browser, standalone: AirflowStandalone) -> Iterator[BrowserContext]:
    """A browser context logged in as admin through Airflow's own login page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{standalone.url}/auth/login/")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill(standalone.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.close()
    yield context
    context.close()


@pytest.fixture
def page(session: BrowserContext) -> Iterator[Page]:
    page = session.new_page()
    yield page
    page.close()


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("ui-browser") / "record.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KW_TEST_RECORD", str(path))
        yield path


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def plugin_frame(page: Page) -> FrameLocator:
    return page.frame_locator("iframe")


def test_the_navigation_page_lists_every_workflow_in_the_airflow_ui(page: Page, standalone: AirflowStandalone) -> None:
    page.goto(f"{standalone.url}/")
    page.get_by_role("link", name="Kafka workflows").first.click()  # the top-level nav entry
    frame = plugin_frame(page)
    for name in ("checkout", "contacts_import", "subscription_renewals"):
        expect(frame.locator(f"#kw-workflows tr[data-workflow='{name}']")).to_be_visible()
    shot(page, "overview")
    page.evaluate("localStorage.setItem('theme', 'dark')")  # Airflow's own theme switch; the page follows it
    page.reload()
    expect(plugin_frame(page).locator("#kw-workflows")).to_be_visible()
    assert "dark" in (plugin_frame(page).locator("html").get_attribute("class") or "")
    shot(page, "overview-dark")
    page.evaluate("localStorage.setItem('theme', 'light')")


def blocked_row(page: Page, standalone: AirflowStandalone, tp: str, key: str,
                offset: int) -> tuple[FrameLocator, Locator]:
    """Open the group's page from the workflow's tab on its DAG page; wait until `tp` shows `key` held."""
    page.goto(f"{standalone.url}/dags/{WORKFLOW}/plugin/kafka")
    frame = plugin_frame(page)
    frame.get_by_role("link", name=GROUP, exact=True).first.click()
    row = frame.locator(f"#kw-partitions tr[data-tp='{tp}']")
    expect(row).to_have_attribute("data-state", "blocked", timeout=90_000)
    expect(row).to_contain_text(key)
    expect(row).to_contain_text(f"offset {offset}")
    return frame, row


def act_with_reason(frame: FrameLocator, row: Locator, button: str, reason: str) -> None:
    """Click the row's `button`; its dialog refuses to confirm until a reason is given."""
    row.get_by_role("button", name=button).click()
    confirm = frame.locator("#kw-confirm")
    expect(confirm).to_be_disabled()
    frame.locator("#kw-reason").fill(reason)
    confirm.click()


def test_a_blocked_partition_is_shown_and_skip_with_a_reason_dead_letters_it_and_it_flows_again(
        page: Page, standalone: AirflowStandalone, config: dict[str, str], record: Path, tmp_path: Path) -> None:
    key = f"ui-browser-{uuid.uuid4().hex[:8]}"
    with renewals_worker(config):
        partition, offset = produce(config, key, {"fail_unless_exists": str(tmp_path / "never")})
        tp = f"{TOPIC}[{partition}]"
        frame, row = blocked_row(page, standalone, tp, key, offset)
        expect(frame.locator("#kw-trend")).to_contain_text("Lag trend")
        shot(page, "group-blocked")
        act_with_reason(frame, row, "Skip…", "ticket UI-2: bad card, refunded by hand")
        expect(frame.locator("#kw-result")).to_contain_text(f"skipped {tp}@{offset} to the dead-letter topic")
        expect(frame.locator("#kw-result")).to_contain_text("skip by admin")
        expect(frame.locator(f"#kw-partitions tr[data-tp='{tp}']")).to_have_attribute("data-state", "flowing")
        shot(page, "group-skipped")

    [letter] = [d for d in list_dead_letters(config, TOPIC, GROUP) if d.key == key]
    assert (letter.headers["kw-skipped-by"], letter.headers["kw-skip-reason"]) == (
        "admin", "ticket UI-2: bad card, refunded by hand")


def test_unblock_with_a_reason_retries_the_held_message_now_and_it_is_handled(
        page: Page, standalone: AirflowStandalone, config: dict[str, str], record: Path, tmp_path: Path) -> None:
    """The next blocking retry is an hour away: only the Unblock click can make the message run again."""
    key = f"ui-unblock-{uuid.uuid4().hex[:8]}"
    flag = tmp_path / "dependency-up"
    with renewals_worker(config, retry_every=3600.0):
        partition, offset = produce(config, key, {"fail_unless_exists": str(flag)})
        tp = f"{TOPIC}[{partition}]"
        frame, row = blocked_row(page, standalone, tp, key, offset)
        flag.touch()  # the dependency is back; the worker would wait an hour to notice
        act_with_reason(frame, row, "Unblock…", "ticket UI-3: provider back up")
        expect(frame.locator("#kw-result")).to_contain_text(f"retrying {tp}@{offset} now")
        expect(frame.locator("#kw-result")).to_contain_text("unblock by admin")
        expect(frame.locator(f"#kw-partitions tr[data-tp='{tp}']")).to_have_attribute("data-state", "flowing")
        shot(page, "group-unblocked")
        wait_for(lambda: any(r["key"] == key and r["outcome"] == "ok" for r in records(record)), 60,
                 "the unblocked message to be handled")
    calls = [r["outcome"] for r in records(record) if r["key"] == key]
    assert calls[-1] == "ok" and calls.count("ok") == 1 and all(c == "ConnectionError" for c in calls[:-1]), calls
    assert not [d for d in list_dead_letters(config, TOPIC, GROUP) if d.key == key], "unblock dead-letters nothing"


def test_the_dead_letter_explorer_filters_dry_runs_and_replays_and_the_replay_is_handled(
        page: Page, standalone: AirflowStandalone, config: dict[str, str], record: Path, tmp_path: Path) -> None:
    token = standalone.token()
    key = f"ui-replay-{uuid.uuid4().hex[:8]}"
    fixed = tmp_path / "fixed"
    with renewals_worker(config):
        partition, offset = produce(config, key, {"fail_unless_exists": str(fixed)})
        wait_for(lambda: held(standalone, token, partition), 90, "the partition to block", 1)
        status, body = call(standalone, "POST", f"/api/workflows/{WORKFLOW}/groups/{GROUP}/skip", token,
                            {"reason": "to the DLQ for the explorer", "topic": TOPIC, "partition": partition,
                             "offset": offset})
        assert status == 200, body

        page.goto(f"{standalone.url}/dags/{WORKFLOW}/plugin/kafka")
        frame = plugin_frame(page)
        frame.locator(".card a").first.click()  # the workflow's dead-letter count opens the explorer
        frame.locator("#kw-filter input[name=key]").fill(key)
        frame.locator("#kw-apply").click()
        expect(frame.locator("#kw-total")).to_have_text("1 matching")
        expect(frame.locator("#kw-fingerprints")).to_contain_text("ConnectionError")
        letter_row = frame.locator("#kw-letters tbody tr").first
        expect(letter_row).to_contain_text(key)
        expect(letter_row).to_contain_text("skipped")
        letter_row.locator("input[type=checkbox]").check()
        frame.locator("#kw-dry").click()
        expect(frame.locator("#kw-dry-result")).to_contain_text("1 letter(s) would move")
        expect(frame.locator("#kw-dry-result")).to_contain_text(TOPIC)
        assert not [r for r in records(record) if r["key"] == key and r["outcome"] == "ok"], "a dry run moved it"

        fixed.touch()  # the operator fixed the cause; now the replay succeeds
        frame.locator("#kw-replay").click()
        frame.locator("#kw-reason").fill("card fixed, replaying")
        frame.locator("#kw-confirm").click()
        expect(frame.locator("#kw-result")).to_contain_text(f"Replayed 1 letter(s) to {TOPIC}")
        expect(frame.locator("#kw-letters tbody tr").first).to_contain_text("replayed by admin")
        shot(page, "dead-letters")

        def handled() -> list[dict[str, Any]]:
            return [r for r in records(record) if r["key"] == key and r["outcome"] == "ok"]

        [done] = wait_for(handled, 60, "the replayed message to be handled", 0.5)
        assert done["headers"]["kw-replayed-from"].startswith(f"{TOPIC}.{GROUP}.dlq:")


def test_the_run_tab_of_a_contacts_import_shows_progress_reach_100_percent_and_succeeded(
        page: Page, standalone: AirflowStandalone, tmp_path: Path) -> None:
    # Sources are read only under the allowed roots: the stack allows its home's imports/ folder.
    generated = contacts.write_csv(standalone.home / "imports" / f"ui-{tmp_path.name}.csv", 3_030, bad_every=101,
                                   missing_every=0)
    running = Processes(standalone.env(), tmp_path)
    try:
        running.start("store-processor", "store-processor", "--store", contacts.STORE)
        with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as client:
            wait_for(lambda: _dag_known(DAGApi(client), "contacts_import"), 180, "contacts_import to be parsed", 2)
            run = DagRunApi(client).trigger_dag_run("contacts_import", TriggerDAGRunPostBody(
                logical_date=None, conf={"source": str(generated.path), "rows_per_job": 100}))
        page.goto(f"{standalone.url}/dags/contacts_import/runs/{run.dag_run_id}/plugin/kafka-run")
        status = plugin_frame(page).locator("#kw-status")
        seen: list[str | None] = []  # what the tab showed, without a reload, until the request finished
        # No worker imports yet: the tab must first show the request registered and not done.
        wait_for(lambda: status.count() and status.first.get_attribute("data-status", timeout=5_000) in (
            "pending", "running"), 240, "the tab to show the request before any job is imported", 0.5)
        running.start("worker", "worker", "--topic", contacts.JOBS_TOPIC, "--group", contacts.WORKER_GROUP,
                      "--handler", "kw_examples.contacts.import_jobs", "--store", contacts.STORE)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (not seen or seen[-1] != "succeeded"):
            if status.count():
                seen.append(status.first.get_attribute("data-status", timeout=5_000))
            page.wait_for_timeout(200)
        assert seen and seen[-1] == "succeeded", seen[-20:]
        assert set(seen) - {"succeeded"}, f"the tab never showed the request before it finished: {set(seen)}"
        expect(status).to_have_attribute("data-percent", "100")
        frame = plugin_frame(page)
        expect(frame.locator(".bar span.label")).to_contain_text("30 / 30 (100 %)")
        expect(frame.locator("#kw-bad-rows")).to_contain_text("is not a valid email address")
        expect(frame.locator("#kw")).to_contain_text(f"3,030 rows read, 3,000 valid, {len(generated.bad_rows)} bad")
        shot(page, "run-progress")
        running.check_alive()
    finally:
        running.stop()


# -- Airflow asks a human (issue 22) --------------------------------------------------------------------------

INCIDENT_DAG = f"{WORKFLOW}_incident"


def pending_action(standalone: AirflowStandalone, token: str, key: str) -> dict[str, Any] | None:
    """The required action asked about `key` that its task is waiting on now (Airflow's REST API).

    A detail outlives a failed try, unanswered: an answer given while the task waits to retry resumes
    nothing, and the next try's request wipes it. So only a task that awaits input is answered."""
    request = urllib.request.Request(
        f"{standalone.url}/api/v2/dags/{INCIDENT_DAG}/dagRuns/~/hitlDetails?response_received=false",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        details = json.load(response)["hitl_details"]
    return next((d for d in details if key in (d.get("body") or "")
                 and (d.get("task_instance") or {}).get("state") == "awaiting_input"), None)


def parked_try_settled(standalone: AirflowStandalone, run_id: str, try_number: int) -> bool:
    """Whether the scheduler has taken the executor's report on the decide task's parked try.

    An Airflow 3.3 race: the executor reports a try that parked (awaiting input) as finished only when
    its process has exited, which here takes up to several seconds. An answer that resumes the task
    before the scheduler has taken that report makes the scheduler see a queued task whose workload
    just succeeded; it fails the try, and the next try's request wipes the answer. A human answers
    seconds later; the test waits for the scheduler's own line about that report."""
    report = (f"Received executor event with state success for task instance TaskInstanceKey(dag_id='{INCIDENT_DAG}', "
              f"task_id='decide', run_id='{run_id}', try_number={try_number},")
    return report in (standalone.home / "standalone.log").read_text(errors="replace")


def incident_trail(standalone: AirflowStandalone, token: str, run_id: str, config: dict[str, str], key: str
                   ) -> str:
    """What became of an answered incident: the decide task's state and tries, the commands about `key`
    in the control topic and the workers' answers to them."""
    request = urllib.request.Request(
        f"{standalone.url}/api/v2/dags/{INCIDENT_DAG}/dagRuns/{run_id}/taskInstances/decide",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        task = json.load(response)
    commands = [c for c in control_history(config, ("command",)) if c.get("key") == key]
    ids = {c.get("id") for c in commands}
    applied = [a.get("result") for a in control_history(config, ("applied",)) if a.get("command") in ids]
    earlier = {n: try_errors(standalone, token, run_id, n) for n in range(1, int(task.get("try_number") or 1))}
    return (f"decide is {task.get('state')} (try {task.get('try_number')}); commands about the key: "
            f"{[(c.get('op'), c.get('by')) for c in commands]}; answers: {applied}; earlier tries' errors: {earlier}")


def try_errors(standalone: AirflowStandalone, token: str, run_id: str, try_number: int) -> list[str]:
    """The warnings and errors in one try's log of the decide task (Airflow's REST API), the last few."""
    request = urllib.request.Request(
        f"{standalone.url}/api/v2/dags/{INCIDENT_DAG}/dagRuns/{run_id}/taskInstances/decide/logs/{try_number}"
        "?full_content=true", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            content = json.load(response).get("content") or []
    except urllib.error.HTTPError as exc:
        return [f"(its log: HTTP {exc.code})"]
    lines = [f"{e.get('level')}: {e.get('event')}"[:400] if isinstance(e, dict) else str(e)[:400] for e in content]
    return [line for line in lines if re.search(r"warn|error|critical|exception|traceback", line, re.I)][-8:]


def test_a_stuck_key_asks_a_human_in_airflow_and_the_answer_is_carried_out_and_audited_with_the_user(
        page: Page, standalone: AirflowStandalone, config: dict[str, str], record: Path, tmp_path: Path) -> None:
    """The worker publishes the key held too long; the incident DAG's AssetWatcher starts a run whose
    HITL task asks in Required Actions; admin answers "Unblock now" in the UI; the worker retries the
    key at once (its next retry was an hour away) and the command is audited with admin's name."""
    key = f"ui-incident-{uuid.uuid4().hex[:8]}"
    flag = tmp_path / "provider-back"
    token = standalone.token()
    with renewals_worker(config, retry_every=3600.0, incidents=IncidentPolicy(held_after=3)):
        partition, offset = produce(config, key, {"fail_unless_exists": str(flag)})
        # Parsing the incident DAG and starting its watcher may take the standalone a while the first time.
        detail = wait_for(lambda: pending_action(standalone, token, key), 300, "a required action about the key", 2)
        run_id = detail["task_instance"]["dag_run_id"]
        wait_for(lambda: parked_try_settled(standalone, run_id, int(detail["task_instance"]["try_number"])), 120,
                 "the scheduler to take the report on the parked try", 0.5)
        page.goto(f"{standalone.url}/dags/{INCIDENT_DAG}/runs/{run_id}/tasks/decide/required_actions")
        expect(page.get_by_text(f"{TOPIC}[{partition}]@{offset}")).to_be_visible()
        expect(page.get_by_text(key, exact=True)).to_be_visible()
        shot(page, "incident-required-action")
        page.get_by_text("Select Value").click(force=True)  # Airflow's option picker (react-select)
        page.get_by_role("option", name="Unblock now").click()
        page.locator("[name=element_reason]").fill("ticket INC-7: provider back")
        flag.touch()  # the dependency is back; the worker would wait an hour to notice
        page.get_by_role("button", name="Respond").click()
        answered = page.get_by_text("from admin")  # "Response received at … from admin"
        expect(answered).to_be_visible()
        answered.scroll_into_view_if_needed()
        shot(page, "incident-answered")
        try:
            wait_for(lambda: "ok" in [r["outcome"] for r in records(record) if r["key"] == key], 120,
                     "the unblocked key to be handled")
        except TimeoutError as exc:  # say which side stalled: the decide task, the command, or the worker
            raise AssertionError(f"{exc}; {incident_trail(standalone, token, run_id, config, key)}") from None
        page.goto(f"{standalone.url}/kafka-workflows/ui/workflows/{WORKFLOW}")  # the operations UI's audit log
        row = page.locator("table.audit tr", has_text="ticket INC-7: provider back")
        expect(row).to_contain_text("admin")
        expect(row).to_contain_text(f"retrying {TOPIC}[{partition}]@{offset} now")
        row.scroll_into_view_if_needed()
        shot(page, "incident-audit")

    [command] = [c for c in control_history(config, ("command",)) if c.get("key") == key]
    assert (command["op"], command["by"], command["reason"], command["topic"], command["partition"],
            command["offset"]) == ("unblock", "admin", "ticket INC-7: provider back", TOPIC, partition, offset)
    [applied] = [a for a in control_history(config, ("applied",)) if a.get("command") == command["id"]]
    assert applied["result"] == f"retrying {TOPIC}[{partition}]@{offset} now"
    calls = [r["outcome"] for r in records(record) if r["key"] == key]
    assert calls[-1] == "ok" and calls.count("ok") == 1, calls
    assert not [d for d in list_dead_letters(config, TOPIC, GROUP) if d.key == key], "unblock dead-letters nothing"


def _dag_known(dags: DAGApi, dag_id: str) -> bool:
    try:
        return dags.get_dag(dag_id).dag_id == dag_id
    except af.ApiException:
        return False


# -- forged control records (issue 17, defects 3 and 8) -----------------------------------------------------

PROBE = "/kw-xss-probe"
XSS = f"<img src=x onerror=\"window.top.kwPwned=1;fetch('{PROBE}')\">"


def forge_control_record(config: dict[str, str], **fields: Any) -> str:
    """Write a control record as any producer with access to the topic could; returns its reason (a marker).
    Its op is one no worker accepts, so no worker acts on it."""
    marker = f"forged-{uuid.uuid4().hex[:8]}"
    record = {"kind": "command", "id": uuid.uuid4().hex, "op": "replay", "group": GROUP, "by": "mallory",
              "reason": marker, "at": time.time(), **fields}
    ensure_control_topics(config)
    errors: list[object] = []
    producer = Producer(config)
    producer.produce(CONTROL_TOPIC, key=GROUP, value=json.dumps(record).encode(),
                     on_delivery=lambda err, _msg: errors.append(err) if err is not None else None)
    assert producer.flush(30) == 0 and not errors, errors
    return marker


def test_a_forged_control_record_runs_no_script_and_the_audit_table_still_renders(
        page: Page, standalone: AirflowStandalone, config: dict[str, str]) -> None:
    marker = forge_control_record(config, letters={"length": XSS}, by=XSS, topic=XSS)
    probes: list[str] = []
    page.on("request", lambda request: probes.append(request.url) if PROBE in request.url or request.url.endswith(
        "/x") else None)
    page.goto(f"{standalone.url}/kafka-workflows/ui/workflows/{WORKFLOW}")  # the workflow's page: its audit table
    expect(page.locator("table.audit")).to_be_visible()
    row = page.locator("table.audit tr", has_text=marker)
    page.wait_for_timeout(5000)  # the record is shown by now, and an onerror handler would have run
    assert page.evaluate("window.kwPwned") is None, "the forged record's script ran in the admin's session"
    assert probes == [], f"the forged record's markup ran or loaded: {probes}"
    expect(row).to_contain_text("(unknown letters)")
    expect(row).to_contain_text("<img src=x onerror=")  # shown as text, not markup
    page.goto(f"{standalone.url}/kafka-workflows/ui/")  # the overview's recent operations, outside the iframe
    expect(page.locator("table.audit tr", has_text=marker)).to_be_visible()
    page.wait_for_timeout(2000)
    assert page.evaluate("window.kwPwned") is None
    assert probes == [], f"the forged record's markup ran or loaded: {probes}"


def test_a_control_record_with_a_bad_time_shows_unknown_and_blanks_no_page(
        page: Page, standalone: AirflowStandalone, config: dict[str, str]) -> None:
    marker = forge_control_record(config, at="soon")
    base = f"{standalone.url}/kafka-workflows/ui"
    for path, table in (("/", "#kw-workflows"), (f"/workflows/{WORKFLOW}", "#kw-units"),
                        (f"/workflows/{WORKFLOW}/groups/{GROUP}", "#kw-partitions")):
        page.goto(base + path)
        expect(page.locator(table)).to_be_visible()
        row = page.locator("table.audit tr", has_text=marker)
        expect(row).to_be_visible()
        expect(row.locator("td").first).to_have_text("unknown")
        expect(page.locator("#kw")).not_to_contain_text("Invalid time value")


def test_every_page_and_asset_of_the_plugin_sends_a_csp_without_inline_script(standalone: AirflowStandalone) -> None:
    token = standalone.token()
    for path in ("/ui/", f"/ui/workflows/{WORKFLOW}", "/ui/static/kw.js", "/ui/static/kw.css", "/api/workflows",
                 "/docs"):
        request = urllib.request.Request(f"{standalone.url}/kafka-workflows{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            csp, body = response.headers["Content-Security-Policy"], response.read().decode()
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
        if path.endswith((".js", ".css")) or path.startswith("/api"):
            continue
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), f"{path} has an inline script"
        assert not re.search(r"\son\w+\s*=", body), f"{path} has an inline event handler"
