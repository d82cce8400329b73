"""`kafka-workflows dlq replay` and the operations, without a broker: where a replay goes, how
often, and what the CLI says when workers refuse a command (issue 17)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kafka_workflows import headers as h
from kafka_workflows.cli import main
from kafka_workflows.errors import ConfigError
from kafka_workflows.ops import control
from kafka_workflows.ops import deadletters as dlq

TOPIC, GROUP = "renewals", "billing"
DLQ = f"{TOPIC}.{GROUP}.dlq"


def letter(offset: int, origin: str = control.CONTROL_TOPIC) -> dlq.DeadLetter:
    wire = {h.ORIGINAL_TOPIC: origin.encode(), h.ATTEMPT: b"3", "x-mine": b"\xff"}
    return dlq.DeadLetter(DLQ, 0, offset, "k", b'{"kind": "command", "op": "pause"}',
                          {k: v.decode("utf-8", "replace") for k, v in wire.items()}, None, b"k", wire)


class FakeKafka:
    """The producer and the control topic's `replayed` records, in memory; sends are slow enough
    that two unserialized replays would overlap."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.replayed: list[dict[str, Any]] = []
        fake = self

        class Producer:
            def __init__(self, config: Any) -> None: ...

            def send(self, topic: str, value: Any, **options: Any) -> None:
                time.sleep(0.05)
                fake.sent.append((topic, options["headers"]))

            def flush(self) -> None: ...

        monkeypatch.setattr(dlq, "RequestProducer", Producer)
        monkeypatch.setattr(dlq, "control_history", lambda config, kinds=(): list(self.replayed))
        monkeypatch.setattr(dlq, "record_replay", lambda config, group, topic, ids, by, reason, to, secret: (
            self.replayed.append({"kind": "replayed", "dead_letter_topic": topic, "ids": ids, "to": to})))


def test_a_replay_goes_to_the_dead_letter_topics_source_topic_whatever_the_header_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeKafka(monkeypatch)
    done = dlq.replay_once({}, TOPIC, GROUP, lambda seen: [letter(0), letter(1, control.STATUS_TOPIC)])
    assert [x.id for x in done.letters] == [f"{DLQ}:0:0", f"{DLQ}:0:1"] and done.to == TOPIC
    assert [topic for topic, _ in kafka.sent] == [TOPIC, TOPIC]
    assert all(h.ORIGINAL_TOPIC not in headers and headers["x-mine"] == b"\xff" for _, headers in kafka.sent)
    assert kafka.replayed == [{"kind": "replayed", "dead_letter_topic": DLQ, "ids": [f"{DLQ}:0:0", f"{DLQ}:0:1"],
                               "to": TOPIC}]


def test_concurrent_replays_of_one_topic_send_each_letter_once(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeKafka(monkeypatch)
    results: list[dlq.Replayed] = []
    clicks = [threading.Thread(target=lambda: results.append(
        dlq.replay_once({}, TOPIC, GROUP, lambda seen: [letter(n) for n in range(4)]))) for _ in range(3)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join(30)
    assert sorted(len(r.letters) for r in results) == [0, 0, 4]
    assert len(kafka.sent) == 4
    assert dlq.replay_once({}, TOPIC, GROUP, lambda seen: [letter(0)], again=True).letters == [letter(0)]


@pytest.mark.parametrize("target, declared", [(control.CONTROL_TOPIC, None), (control.STATUS_TOPIC, None),
                                              ("payments", ("renewals",))])
def test_the_control_and_status_topics_and_undeclared_topics_are_refused(
        monkeypatch: pytest.MonkeyPatch, target: str, declared: tuple[str, ...] | None) -> None:
    kafka = FakeKafka(monkeypatch)
    with pytest.raises(ConfigError):
        dlq.replay_once({}, target, GROUP, lambda seen: [], declared=declared)
    assert kafka.sent == []


def test_a_letter_of_another_dead_letter_topic_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeKafka(monkeypatch)
    stray = dlq.DeadLetter(f"payments.{GROUP}.dlq", 0, 0, None, b"")
    with pytest.raises(ConfigError, match="is not in"):
        dlq.replay_once({}, TOPIC, GROUP, lambda seen: [stray])


@pytest.mark.parametrize("name, group, topic", [(DLQ, GROUP, TOPIC), ("a.b.c.d.dlq", "c.d", "a.b")])
def test_source_topic_of_a_dead_letter_topic(name: str, group: str, topic: str) -> None:
    assert dlq.source_topic(name, group) == topic


@pytest.mark.parametrize("name", [f"{GROUP}.dlq", f"{TOPIC}.other.dlq", TOPIC, ""])
def test_source_topic_refuses_what_is_not_the_groups_dead_letter_topic(name: str) -> None:
    with pytest.raises(ConfigError):
        dlq.source_topic(name, GROUP)


def test_the_cli_exits_1_when_every_worker_refused_the_command(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    command = control.Command("c1", "pause", GROUP, None, None, None, "me", "", time.time())
    monkeypatch.setattr(control, "send_command", lambda *a, **k: (command, [
        {"worker": "w1", "result": "refused: unsigned command"}]))
    assert main(["pause", "--group", GROUP]) == 1
    out = capsys.readouterr()
    assert "w1: refused: unsigned command" in out.out and "KAFKA_WORKFLOWS_CONTROL_SECRET" in out.err
