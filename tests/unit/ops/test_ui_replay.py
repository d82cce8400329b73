"""The UI's replay (monitor.actions.replay) picks targets from the spec, never from a letter's headers."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_workflows.monitor import actions
from kafka_workflows.monitor import deadletters as index
from kafka_workflows.monitor.service import NotFound
from kafka_workflows.ops.deadletters import Replayed
from kafka_workflows.spec.model import WorkflowSpec


class FakeLetters:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {r["id"]: r for r in rows}

    def get(self, letter_id: str) -> dict[str, Any] | None:
        return self.rows.get(letter_id)

    def matching(self, query: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows.values() if query.matches(r)]


class FakeMonitor:
    config: dict[str, Any] = {}

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.letters = FakeLetters(rows)
        self.audit = self

    def spec(self, name: str) -> WorkflowSpec:
        return WorkflowSpec.model_validate({"name": name, "workers": [
            {"name": "w", "topics": ["renewals"], "group": "billing", "handler": "tests.helpers.handlers.record"}]})

    def replayed(self, letter_id: str) -> dict[str, Any] | None:
        return {"by": "admin", "at": 1.0}


def row(topic: str, offset: int, origin: str) -> dict[str, Any]:
    return {"id": f"{topic}:0:{offset}", "topic": topic, "partition": 0, "offset": offset, "key": "k",
            "group": "billing", "original_topic": origin, "error_type": "ValueError", "fingerprint": "f",
            "at": 1.0}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, list[str]]]:
    calls: list[tuple[str, str, list[str]]] = []

    def replay_once(config: Any, topic: str, group: str, select: Any, **options: Any) -> Any:
        letters = select(set())
        calls.append((topic, group, [letter.id for letter in letters]))
        return Replayed(topic, f"{topic}.{group}.dlq", letters, [])

    monkeypatch.setattr(index, "replay_once", replay_once)
    return calls


def test_a_letter_goes_to_the_topic_its_dead_letter_topic_belongs_to(sent: list[Any]) -> None:
    monitor = FakeMonitor([row("renewals.billing.dlq", 0, "kafka-workflows.control")])
    result = actions.replay(monitor, "wf", by="admin", reason="", ids=["renewals.billing.dlq:0:0"],  # type: ignore[arg-type]
                            dry_run=True)
    assert [m["to"] for m in result["moves"]] == ["renewals"]
    assert sent == [("renewals", "billing", ["renewals.billing.dlq:0:0"])]


def test_a_letter_of_a_dead_letter_topic_the_spec_does_not_declare_is_not_replayed(sent: list[Any]) -> None:
    stray = row("kafka-workflows.control.billing.dlq", 0, "kafka-workflows.control")  # its headers say billing
    monitor = FakeMonitor([stray, row("renewals.billing.dlq", 1, "renewals")])
    with pytest.raises(NotFound):
        actions.replay(monitor, "wf", by="admin", reason="r", ids=[stray["id"]], dry_run=False)  # type: ignore[arg-type]
    result = actions.replay(monitor, "wf", by="admin", reason="r", query=index.LetterQuery(),  # type: ignore[arg-type]
                            dry_run=True)
    assert [m["id"] for m in result["moves"]] == ["renewals.billing.dlq:0:1"]
    assert [topic for topic, _, _ in sent] == ["renewals"]
