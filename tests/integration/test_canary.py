"""Canary replay (ops/canary.py) from the CLI, against a real worker process: it goes on while the
replayed letters succeed and stops on its own when the fault returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops.control import control_history
from kafka_workflows.retry.topics import dead_letter_topic
from stack import reaper
from tests.helpers.kafka import REPO, read_all, records, start_worker, wait_for

pytestmark = pytest.mark.integration
LETTERS = 30


def test_a_canary_replay_goes_on_while_letters_succeed_and_stops_on_its_own_when_the_fault_returns(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    record, outage = tmp_path / "calls.jsonl", tmp_path / "provider-down"
    outage.touch()  # the provider is down: every renewal is dead-lettered at its first failure
    worker = start_worker(kafka_config, topic, group, "tests.helpers.handlers.outage", record,
                          "--policy", json.dumps({"blocking": {"attempts": 1}}), env={"KW_TEST_OUTAGE": str(outage)})
    replay = None
    try:
        producer = RequestProducer(kafka_config)
        for i in range(LETTERS):
            producer.send(topic, {"renew": i}, key=f"renewal-{i}")
        producer.flush()
        dlq = dead_letter_topic(topic, group)
        wait_for(lambda: len(read_all(kafka_config, dlq, timeout=5)) >= LETTERS, 90, "every renewal dead-lettered")
        outage.unlink()  # the provider is back
        out = tmp_path / "replay.out"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
               "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]), "USER": "ops-carol"}
        with out.open("w") as stdout:
            replay = reaper.popen(
                [sys.executable, "-m", "kafka_workflows.cli", "--log-level", "WARNING", "dlq", "replay", "--topic",
                 topic, "--group", group, "--rate", "3/s", "--canary", "3", "--reason", "after the outage"],
                env=env, stdout=stdout, stderr=subprocess.STDOUT)
        ok = lambda: [r for r in records(record) if r["outcome"] == "ok"]  # noqa: E731 - replays only
        wait_for(lambda: len(ok()) >= 6, 90, "the canary and the first letters after it to succeed")
        outage.touch()  # the fault returns
        started = time.monotonic()
        assert replay.wait(120) == 3, out.read_text()
        text = out.read_text()
        print(f"\n{text}stopped {time.monotonic() - started:.1f}s after the fault returned")
        assert "canary replay stopped: failures returned" in text, text
        [canary] = [r for r in control_history(kafka_config, ("canary",)) if r.get("group") == group]
        assert canary["state"] == "stopped" and canary["result"].startswith("failures returned"), canary
        assert canary["total"] == LETTERS and 6 <= canary["sent"] < LETTERS and canary["failed"] >= 1, canary
        assert canary["by"].startswith("ops-carol")
        sends = [r for r in control_history(kafka_config, ("replayed",)) if r.get("group") == group]
        ids = Counter(i for r in sends for i in r["ids"])
        assert sum(ids.values()) == canary["sent"] and set(ids.values()) == {1}, "a letter replayed twice"
        assert "canary of 3" in sends[0]["reason"] and sends[0]["count"] == 3
    finally:
        if replay is not None and replay.poll() is None:
            replay.kill()
            replay.wait(30)
        worker.terminate()
        worker.wait(30)
