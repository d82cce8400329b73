"""Events in transactions: the checkout processor SIGKILLed repeatedly; read_committed
consumers downstream see each order-checkout-completed exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kw_examples.checkout import simulate_purchases
from stack import reaper
from tests.helpers.kafka import REPO, read_all, wait_for

pytestmark = pytest.mark.integration


def _spec_folder(tmp_path: Path, suffix: str) -> tuple[Path, str, str]:
    """The checkout example spec, on topics of this test's own."""
    spec = yaml.safe_load((REPO / "dags" / "workflows" / "checkout.yaml").read_text())
    purchases, checkouts = f"purchases-{suffix}", f"checkouts-{suffix}"
    [processor] = spec["processors"]
    processor.update(topics=[purchases], outputs=[checkouts], group=f"checkout-{suffix}", commit_interval=0.2,
                     transform="tests.helpers.handlers.slow_checkout")  # the example's, 2 ms a message
    spec["workers"] = []
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "checkout.yaml").write_text(yaml.safe_dump(spec))
    return folder, purchases, checkouts


def test_checkout_processor_sigkilled_repeatedly_outputs_each_checkout_exactly_once(
        kafka_config: dict[str, Any], tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    folder, purchases, checkouts = _spec_folder(tmp_path, suffix)
    ensure_topics(kafka_config, [TopicSpec(purchases, 3), TopicSpec(checkouts, 3)])
    orders = simulate_purchases(6000, seed=3)
    producer = RequestProducer(kafka_config)  # the payments service: an idempotent producer
    for order in orders:
        producer.send(purchases, order, key=order["order_id"])
    producer.flush()

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
           "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    # A killed member holds its partitions until its session expires: the default group protocol
    # (KIP-848) leaves that to the broker, which the test broker sets to 4 s.
    cmd = [sys.executable, "-m", "kafka_workflows.cli", "worker", str(folder), "--only", "checkout"]
    log = tmp_path / "processor.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return reaper.popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    rng = random.Random(11)
    proc = start()
    kills = 0
    try:
        while kills < 4:
            before = len(read_all(kafka_config, checkouts, timeout=2))
            # Kill only an incarnation that is committing output, at a random point of its work.
            wait_for(lambda before=before: len(read_all(kafka_config, checkouts, timeout=2)) > before, 60,
                     "the restarted processor to commit output", 0.2)
            time.sleep(rng.uniform(0.05, 0.4))
            assert len(read_all(kafka_config, checkouts, timeout=2)) < len(orders), "finished before the kills"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = start()
        wait_for(lambda: len(read_all(kafka_config, checkouts, timeout=2)) >= len(orders), 120,
                 "every purchase checked out", 1)
        time.sleep(2)  # a duplicate committed late would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 4
    seen = Counter(json.loads(m.value())["order_id"] for m in read_all(kafka_config, checkouts))
    assert set(seen) == {o["order_id"] for o in orders}, "output set == input set"
    duplicates = {k: n for k, n in seen.items() if n > 1}
    assert duplicates == {}, f"read_committed saw duplicates after {kills} SIGKILLs: {list(duplicates)[:5]}"
    # Outputs are produced per consumed batch just before the commit, so a kill rarely leaves
    # aborted records; when it does, read_committed readers skip them (counted for the log).
    aborted = len(read_all(kafka_config, checkouts, isolation="read_uncommitted")) - len(orders)
    print(f"SIGKILLed {kills} times; {len(seen)} checkouts, each exactly once; {aborted} aborted records skipped")


def test_a_1mb_poison_is_dead_lettered_once_truncated_and_the_processor_goes_on(
        kafka_config: dict[str, Any], tmp_path: Path) -> None:
    """Defect 4 (exactly-once part): a 999,800-byte non-JSON value fits every limit, but its dead
    letter (value + provenance headers) did not: MSG_SIZE_TOO_LARGE aborted the transaction in a loop."""
    suffix = uuid.uuid4().hex[:8]
    folder, purchases, checkouts = _spec_folder(tmp_path, suffix)
    spec_file = folder / "checkout.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["processors"][0]["transform"] = "kw_examples.checkout.checkout_completed"  # the example's own
    spec_file.write_text(yaml.safe_dump(spec))
    ensure_topics(kafka_config, [TopicSpec(purchases, 1), TopicSpec(checkouts, 1)])
    before, after = simulate_purchases(5, seed=1, prefix="before"), simulate_purchases(5, seed=2, prefix="after")
    producer = RequestProducer(kafka_config)
    for order in before:
        producer.send(purchases, order, key=order["order_id"])
    producer.flush()
    raw = Producer({**kafka_config, "message.max.bytes": 1_048_576})
    raw.produce(purchases, b"\xff" + b"p" * 999_799, key=b"poison")
    assert raw.flush(30) == 0

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
           "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    log = tmp_path / "processor.log"
    with open(log, "ab") as out:
        proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker", str(folder), "--only",
                             "checkout"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(read_all(kafka_config, checkouts, timeout=2)) >= len(before), 90,
                 "the purchases before the poison checked out", 1)
        for order in after:
            producer.send(purchases, order, key=order["order_id"])
        producer.flush()
        wait_for(lambda: len(read_all(kafka_config, checkouts, timeout=2)) >= len(before) + len(after), 90,
                 "the purchases after the poison checked out", 1)
        time.sleep(2)  # a repeated dead letter or a duplicate committed late would show up now
        assert proc.poll() is None, "the processor is up"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    seen = Counter(json.loads(m.value())["order_id"] for m in read_all(kafka_config, checkouts))
    assert seen == Counter(o["order_id"] for o in before + after), "every later input exactly once"
    dead = read_all(kafka_config, f"{purchases}.checkout-{suffix}.dlq", expected=1, timeout=30)
    assert len(dead) == 1, "dead-lettered once"
    headers = dict(dead[0].headers())
    assert headers["kw-error-type"] == b"MessageDecodeError" and headers["kw-original-size"] == b"999800"
    assert 0 < len(dead[0].value()) < 999_800 and int(headers["kw-value-truncated"]) == len(dead[0].value())
    text = log.read_text(errors="replace")
    assert "aborting the transaction" not in text and "MSG_SIZE_TOO_LARGE" not in text
