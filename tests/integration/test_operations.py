"""Operations from the CLI act on a worker running in another process; dead-letter replay (CLI and UI)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.monitor import actions
from kafka_workflows.monitor.service import Monitor
from kafka_workflows.ops import deadletters as dlq_ops
from kafka_workflows.ops.control import CONTROL_TOPIC, SECRET_ENV, STATUS_TOPIC, control_history, paused_key
from kafka_workflows.ops.status import group_paused, read_status_topic
from kafka_workflows.retry.topics import dead_letter_topic
from tests.helpers.kafka import REPO, read_all, records, start_worker, wait_for

pytestmark = pytest.mark.integration
HANDLER = "tests.helpers.handlers.record"


def cli(config: dict[str, Any], *args: str, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": config["bootstrap.servers"],
           "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]), "USER": "ops-alice", **(env or {})}
    return subprocess.run([sys.executable, "-m", "kafka_workflows.cli", "--log-level", "WARNING", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def ok_calls(record: Path, key: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r["key"] == key and r["outcome"] == "ok"]


def test_blocked_skip_and_unblock_from_the_cli_act_on_a_worker_process(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    record, marker = tmp_path / "calls.jsonl", tmp_path / "provider-is-back"
    policy = json.dumps({"blocking": {"intervals": [60]}})  # a retry would take a minute on its own
    worker = start_worker(kafka_config, topic, group, HANDLER, record, "--policy", policy)
    try:
        producer = RequestProducer(kafka_config)
        producer.send(topic, {"fail": True}, key="poison", partition=0)
        producer.send(topic, {}, key="after-poison", partition=0)
        producer.send(topic, {"fail_unless_exists": str(marker)}, key="waits", partition=1)
        producer.send(topic, {}, key="after-waits", partition=1)
        producer.flush()
        wait_for(lambda: len(records(record)) >= 2, 30, "both partitions blocked")

        def listed() -> str | None:
            out = cli(kafka_config, "blocked", "--group", group).stdout
            return out if f"{topic}[0]@0" in out and f"{topic}[1]@0" in out else None

        out = wait_for(listed, 20, "`blocked` to list both partitions", 0.5)
        assert "key=poison" in out and "RuntimeError: poison always fails" in out

        skipped = cli(kafka_config, "skip", "--group", group, "--topic", topic, "--partition", "0", "--offset", "0",
                      "--reason", "bad account, ticket 42")
        assert skipped.returncode == 0, skipped.stderr
        assert f"skipped {topic}[0]@0 to the dead-letter topic" in skipped.stdout
        wait_for(lambda: ok_calls(record, "after-poison"), 20, "the next message after the skip")

        marker.touch()  # the dependency is back: retry now instead of in a minute
        started = time.monotonic()
        unblocked = cli(kafka_config, "unblock", "--group", group, "--topic", topic, "--partition", "1")
        assert unblocked.returncode == 0 and f"retrying {topic}[1]@0 now" in unblocked.stdout
        wait_for(lambda: ok_calls(record, "after-waits"), 20, "the unblocked partition to flow")
        assert time.monotonic() - started < 20, "unblock did not wait for the 60 s backoff"
        wait_for(lambda: "no blocked partitions" in cli(kafka_config, "blocked", "--group", group).stdout,
                 10, "the blocked list to empty", 0.5)

        nothing = cli(kafka_config, "skip", "--group", group, "--topic", topic, "--partition", "1", "--offset", "0")
        assert nothing.returncode == 0 and f"nothing held at {topic}[1]" in nothing.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0

    handled = [r["key"] for r in records(record) if r["outcome"] == "ok"]
    assert sorted(handled) == ["after-poison", "after-waits", "waits"]
    assert handled.index("waits") < handled.index("after-waits"), "order within partition 1 kept"
    [dead] = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.key() == b"poison"
    assert headers["kw-skipped-by"].startswith("ops-alice@") and headers["kw-skip-reason"] == "bad account, ticket 42"
    assert headers[h.ERROR_TYPE] == "RuntimeError" and headers[h.ORIGINAL_OFFSET] == "0"
    audit = control_history(kafka_config)  # other tests write records of every shape to this topic
    mine = [a for a in audit if a.get("group") == group]
    commands = [a for a in mine if a["kind"] == "command"]
    assert [(c["op"], c["by"].split("@")[0], c["reason"]) for c in commands][:2] == [
        ("skip", "ops-alice", "bad account, ticket 42"), ("unblock", "ops-alice", "")]
    assert {a["command"] for a in mine if a["kind"] == "applied"} == {c["id"] for c in commands}


def test_pause_and_resume_a_handler_across_worker_processes(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    record = tmp_path / "calls.jsonl"
    workers = [start_worker(kafka_config, topic, group, HANDLER, record) for _ in range(2)]
    try:
        producer = RequestProducer(kafka_config)
        producer.send(topic, {}, key="before")
        producer.flush()
        wait_for(lambda: records(record), 30, "the first message")
        paused = cli(kafka_config, "pause", "--group", group, "--reason", "provider maintenance", "--wait", "10")
        assert paused.returncode == 0 and paused.stdout.count("paused") == 2, paused.stdout + paused.stderr
        for n in range(10):
            producer.send(topic, {}, key=f"while-paused-{n}")
        producer.flush()
        time.sleep(3)
        assert len(records(record)) == 1, "nothing is handled while paused"
        resumed = cli(kafka_config, "resume", "--group", group, "--wait", "10")
        assert resumed.returncode == 0 and resumed.stdout.count("resumed") == 2
        wait_for(lambda: len(records(record)) == 11, 30, "the backlog after resume")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)


def test_replay_a_filtered_selection_after_a_fix_and_a_replay_that_fails_again_dead_letters_once(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    record, fixed = tmp_path / "calls.jsonl", tmp_path / "handler-fixed"
    policy = json.dumps({"non_blocking": {"intervals": [0.2]}})
    worker = start_worker(kafka_config, topic, group, HANDLER, record, "--policy", policy)
    dlq = dead_letter_topic(topic, group)
    try:
        producer = RequestProducer(kafka_config)
        for n in range(6):
            producer.send(topic, {"fail_unless_exists": str(fixed), "n": n}, key=f"k{n}",
                          headers={h.REQUEST_ID: f"r{n}"})
        producer.send(topic, {"non_retryable": True}, key="other-error")
        producer.flush()
        wait_for(lambda: len(read_all(kafka_config, dlq, timeout=2)) == 7, 30, "7 dead letters")

        listed = cli(kafka_config, "dlq", "list", "--topic", topic, "--group", group, "--error-type", "ConnectionError")
        assert listed.returncode == 0 and "6 dead letter(s)" in listed.stdout
        by_key = cli(kafka_config, "dlq", "show", "--topic", topic, "--group", group, "--key", "k1")
        shown = json.loads(by_key.stdout.rsplit("\n1 dead letter(s)", 1)[0])
        assert shown["key"] == "k1" and shown["headers"][h.REQUEST_ID] == "r1"
        future = cli(kafka_config, "dlq", "list", "--topic", topic, "--group", group, "--since", "2999-01-01")
        assert "0 dead letter(s)" in future.stdout
        bad_time = cli(kafka_config, "dlq", "list", "--topic", topic, "--group", group, "--since", "yesterday")
        assert bad_time.returncode == 2 and "--since: 'yesterday' is not an ISO date-time" in bad_time.stderr

        dry = cli(kafka_config, "dlq", "replay", "--topic", topic, "--group", group, "--error-type",
                  "ConnectionError", "--dry-run")
        assert "would replay 6 dead letter(s)" in dry.stdout
        time.sleep(1)
        assert len(records(record)) == 6 * 2 + 1, "a dry run moves nothing"

        fixed.touch()
        replayed = cli(kafka_config, "dlq", "replay", "--topic", topic, "--group", group, "--key", "k1")
        assert "replayed 1 dead letter(s)" in replayed.stdout
        wait_for(lambda: ok_calls(record, "k1"), 20, "the replayed k1")
        [k1] = ok_calls(record, "k1")
        assert k1["headers"][h.REPLAYED_FROM].startswith(f"{dlq}:") and k1["attempt"] == 1
        assert k1["headers"][h.REQUEST_ID] == "r1" and h.ERROR_TYPE not in k1["headers"]

        fixed.unlink()  # broken again: a replayed message that fails goes back once, not in a loop
        again = cli(kafka_config, "dlq", "replay", "--topic", topic, "--group", group, "--key", "k2")
        assert "replayed 1 dead letter(s)" in again.stdout
        wait_for(lambda: len(read_all(kafka_config, dlq, timeout=2)) == 8, 20, "k2 dead-lettered again")
        time.sleep(2)
        letters = read_all(kafka_config, dlq, timeout=2)
        assert len(letters) == 8
        k2 = [m for m in letters if m.key() == b"k2"]
        assert len(k2) == 2 and h.REPLAYED_FROM in dict(k2[1].headers())
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


@pytest.mark.parametrize("handler", [HANDLER, "tests.helpers.handlers.record_batch"], ids=["message", "batch"])
def test_sigkill_mid_retry_loses_no_message(kafka_config: dict[str, Any], topic: str, group: str,
                                            tmp_path: Path, handler: str) -> None:
    """Kill -9 the worker at random points while messages sit in retry topics; restart each time."""
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    record = tmp_path / "calls.jsonl"
    policy = json.dumps({"non_blocking": {"intervals": [0.3, 0.6]}})
    kinds = {f"m{n}": ("permanent" if n % 3 == 0 else "flaky" if n % 3 == 1 else "healthy") for n in range(240)}
    producer = RequestProducer(kafka_config)
    for key, kind in kinds.items():
        value = {"fail": True} if kind == "permanent" else {"fail_attempts": 1} if kind == "flaky" else {}
        producer.send(topic, {**value, "sleep": 0.02}, key=key)
    producer.flush()
    rng = random.Random(7)
    kills = 0
    # The default group protocol (KIP-848): a killed member holds its partitions until the broker's
    # session timeout (4 s on the test broker). The concurrency kill test covers the classic protocol.
    dlq = dead_letter_topic(topic, group)

    def settled() -> bool:
        handled = {r["key"] for r in records(record) if r["outcome"] == "ok"}
        dead = {m.key().decode() for m in read_all(kafka_config, dlq, timeout=1)}
        return handled | dead == set(kinds)

    worker = start_worker(kafka_config, topic, group, handler, record, "--policy", policy)
    try:
        while kills < 4:
            seen = len(records(record))
            wait_for(lambda seen=seen: len(records(record)) > seen, 60, "the worker to be handling messages")
            time.sleep(rng.uniform(0.1, 0.6))
            assert not settled(), "the work finished before the kills: give it more messages"
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            kills += 1
            retrying = {r["key"] for r in records(record) if r["outcome"] != "ok"} - {
                r["key"] for r in records(record) if r["outcome"] == "ok"}
            print(f"kill {kills}: {len(retrying)} messages failed at least once and not yet handled")
            worker = start_worker(kafka_config, topic, group, handler, record, "--policy", policy)
        wait_for(settled, 120, "every message handled or dead-lettered", 1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert kills == 4
    ok = Counter(r["key"] for r in records(record) if r["outcome"] == "ok")
    dead = Counter(m.key().decode() for m in read_all(kafka_config, dlq))
    for key, kind in kinds.items():
        if kind == "permanent":
            assert ok[key] == 0 and dead[key] >= 1, key
        else:
            assert ok[key] >= 1 and dead[key] == 0, key
    repeats = sum(ok.values()) - len(ok) + sum(dead.values()) - len(dead)
    print(f"SIGKILLed {kills} times; repeated handler successes + dead letters under at-least-once: {repeats}")


def test_a_held_partition_that_comes_back_after_a_rebalance_is_not_left_paused(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    """librdkafka keeps pause flags across revoke and re-assignment; the worker must not."""
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    record = tmp_path / "calls.jsonl"
    policy = json.dumps({"blocking": {"intervals": [60]}})
    env = {"KAFKA_CONFIG": json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})}
    producer = RequestProducer(kafka_config)
    for partition in (0, 1):
        producer.send(topic, {"fail": True}, key=f"poison-{partition}", partition=partition)
    producer.flush()
    first = start_worker(kafka_config, topic, group, HANDLER, record, "--policy", policy, env=env)
    second = None
    try:
        wait_for(lambda: {r["partition"] for r in records(record)} == {0, 1}, 30, "both partitions blocked")
        second = start_worker(kafka_config, topic, group, HANDLER, record, "--policy", policy, env=env)
        wait_for(lambda: any(r["pid"] == second.pid for r in records(record)), 30, "a partition moving over")
        [moved] = {r["partition"] for r in records(record) if r["pid"] == second.pid}
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        left = time.time()
        wait_for(lambda: any(r["pid"] == first.pid and r["partition"] == moved and r["t"] > left
                             for r in records(record)), 20, f"partition {moved} retried at once by the first worker")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


# -- replay goes only where the operator chose (issue 17, defects 1 and 7) -------------------------
def _forged_letters(config: dict[str, Any], topic: str, group: str) -> list[str]:
    """Two dead letters as a producer of the failed records wanted them: one naming the control
    topic as its origin, with a pause command as its value; one naming the status topic, with the
    group's pause state. Written straight to the group's dead-letter topic."""
    dlq = dead_letter_topic(topic, group)
    ensure_topics(config, [TopicSpec(topic, partitions=1), TopicSpec(dlq, partitions=1)])
    pause = {"kind": "command", "id": uuid.uuid4().hex, "op": "pause", "group": group, "by": "admin",
             "reason": "forged", "at": time.time()}
    state = {"paused": True, "by": "admin", "reason": "forged", "at": time.time(), "command": pause["id"]}
    producer = Producer({**config, "enable.idempotence": True})
    for key, value, origin in ((group, pause, CONTROL_TOPIC), (paused_key(group), state, STATUS_TOPIC)):
        producer.produce(dlq, json.dumps(value).encode(), key=key.encode(), partition=0, headers=[
            (h.ORIGINAL_TOPIC, origin.encode()), (h.ORIGINAL_PARTITION, b"0"), (h.ORIGINAL_OFFSET, b"7"),
            (h.CONSUMER_GROUP, group.encode()), (h.ERROR_TYPE, b"ValueError"), (h.ERROR_MESSAGE, b"bad"),
            ("x-mine", b"\xff")])  # the application's own header, not UTF-8: carried back as it was
    assert producer.flush(30) == 0
    return [f"{dlq}:0:0", f"{dlq}:0:1"]


def _nothing_reached_the_control_or_status_topic(config: dict[str, Any], group: str) -> None:
    assert [r for r in control_history(config, kinds=("command",)) if r.get("group") == group] == []
    assert paused_key(group) not in read_status_topic(config)


def test_a_replay_goes_back_to_the_source_topic_never_to_the_topic_a_header_names(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ids = _forged_letters(kafka_config, topic, group)
    replayed = cli(kafka_config, "dlq", "replay", "--topic", topic, "--group", group)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 2 dead letter(s)" in replayed.stdout and f"-> {topic}" in replayed.stdout
    back = read_all(kafka_config, topic, expected=2, timeout=30)
    assert sorted(dict(m.headers())[h.REPLAYED_FROM].decode() for m in back) == ids
    assert all(h.ORIGINAL_TOPIC not in dict(m.headers()) and dict(m.headers())["x-mine"] == b"\xff" for m in back)
    _nothing_reached_the_control_or_status_topic(kafka_config, group)
    [audit] = [r for r in control_history(kafka_config, kinds=("replayed",)) if r.get("group") == group]
    assert audit["to"] == topic and sorted(audit["ids"]) == ids
    refused = cli(kafka_config, "dlq", "replay", "--topic", CONTROL_TOPIC, "--group", group)
    assert refused.returncode == 2 and "never replayed to it" in refused.stderr


def test_a_letter_of_another_dead_letter_topic_is_refused_and_nothing_is_sent(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    """A caller's selection (the UI's ids) holding a letter of another group's dead-letter topic:
    the whole replay is refused before anything is sent or recorded."""
    _forged_letters(kafka_config, topic, group)
    own = dlq_ops.list_dead_letters(kafka_config, topic, group)
    stray = dlq_ops.DeadLetter(dead_letter_topic(topic, "another-group"), 0, 0, None, b"{}")
    with pytest.raises(ConfigError, match="is not in"):
        dlq_ops.replay_once(kafka_config, topic, group, lambda done: [*own, stray])
    assert read_all(kafka_config, topic, timeout=10) == []
    assert [r for r in control_history(kafka_config, kinds=("replayed",)) if r.get("group") == group] == []


def _monitor(config: dict[str, Any], folder: Path, topic: str, group: str) -> Monitor:
    (folder / "wf.yaml").write_text(f"name: wf_{group.replace('-', '_')}\nworkers:\n  - name: w\n"
                                    f"    topics: [{topic}]\n    group: {group}\n    handler: {HANDLER}\n")
    return Monitor(config, folder).start()


def test_the_ui_replay_sends_each_letter_once_to_its_source_topic_and_shares_the_cli_record(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ids = _forged_letters(kafka_config, topic, group)
    monitor = _monitor(kafka_config, tmp_path, topic, group)
    name = f"wf_{group.replace('-', '_')}"
    try:
        wait_for(lambda: all(monitor.letters.get(i) for i in ids), 60, "the dead-letter index to list both", 0.5)
        dry = actions.replay(monitor, name, by="admin", reason="", ids=ids, dry_run=True)
        assert dry["count"] == 2 and {m["to"] for m in dry["moves"]} == {topic}
        results: list[dict[str, Any]] = []
        clicks = [threading.Thread(target=lambda: results.append(
            actions.replay(monitor, name, by="admin", reason="two clicks", ids=ids, dry_run=False)))
            for _ in range(2)]
        for click in clicks:
            click.start()
        for click in clicks:
            click.join(120)
        assert sorted(r["count"] for r in results) == [0, 2], results
        third = actions.replay(monitor, name, by="admin", reason="a third click", ids=ids, dry_run=False)
        assert third["count"] == 0 and sorted(third["already_replayed"]) == ids
    finally:
        monitor.stop()
    cli_replay = cli(kafka_config, "dlq", "replay", "--topic", topic, "--group", group)
    assert "replayed 0 dead letter(s)" in cli_replay.stdout, cli_replay.stdout + cli_replay.stderr
    time.sleep(2)
    back = read_all(kafka_config, topic, timeout=10)
    assert sorted(dict(m.headers())[h.REPLAYED_FROM].decode() for m in back) == ids, "each letter once"
    _nothing_reached_the_control_or_status_topic(kafka_config, group)
    audit = [r for r in control_history(kafka_config, kinds=("replayed",)) if r.get("group") == group]
    assert [(r["by"], r["to"], sorted(r["ids"])) for r in audit] == [("admin", topic, ids)]


def test_with_a_control_secret_a_worker_refuses_unsigned_commands_and_obeys_signed_ones(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    record = tmp_path / "calls.jsonl"
    worker = start_worker(kafka_config, topic, group, HANDLER, record, env={SECRET_ENV: "the-secret"})
    try:
        producer = RequestProducer(kafka_config)
        producer.send(topic, {}, key="before")
        producer.flush()
        wait_for(lambda: records(record), 30, "the first message")
        forged = cli(kafka_config, "pause", "--group", group, "--reason", "no secret", "--wait", "8")
        assert forged.returncode == 1 and "paused" not in forged.stdout, forged.stdout
        assert "refused: unsigned command" in forged.stdout and SECRET_ENV in forged.stderr, forged.stderr
        wrong = cli(kafka_config, "pause", "--group", group, "--wait", "8", env={SECRET_ENV: "a-guess"})
        assert wrong.returncode == 1 and "paused" not in wrong.stdout, wrong.stdout
        assert not group_paused(kafka_config, group, "the-secret"), "an unsigned pause state is no pause"
        producer.send(topic, {}, key="not-paused")
        producer.flush()
        wait_for(lambda: len(records(record)) == 2, 30, "a message handled after the refused pauses")
        signed = cli(kafka_config, "pause", "--group", group, "--wait", "10", env={SECRET_ENV: "the-secret"})
        assert signed.returncode == 0 and "paused 1 partition(s)" in signed.stdout, signed.stdout + signed.stderr
        assert group_paused(kafka_config, group, "the-secret")
        mine = [r for r in control_history(kafka_config, kinds=("command",)) if r.get("group") == group]
        assert [bool(r.get("sig")) for r in mine] == [False, True, True]
        answers = [r["result"] for r in control_history(kafka_config, kinds=("applied",)) if r.get("group") == group]
        assert answers[:2] == ["refused: unsigned command", "refused: bad signature"], answers
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
