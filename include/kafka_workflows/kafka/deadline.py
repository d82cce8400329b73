"""A deadline of our own around librdkafka calls that can block past the timeout they are given.

librdkafka's `send_offsets_to_transaction` ignores its timeout when the group coordinator is
down, and can hang for good once that broker left the metadata (confluentinc/librdkafka#5456
and #5511, open in 2.16). A single broker SIGKILLed and restarted mid-transaction reproduces it
(tests/cluster/test_broker_restart.py): the store processor waited forever.

`call_with_deadline` runs the call in a daemon thread and waits at most `deadline` seconds.
A call still running then raises `CallHungError`; the caller must abandon the client (it can
neither be used nor closed safely while the call is in flight) and let its supervisor build a
new unit (kafka_workflows.supervise). The hung thread and its client are leaked; that happens
only on this librdkafka bug, not on ordinary errors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from kafka_workflows.errors import KafkaWorkflowsError

T = TypeVar("T")


class CallHungError(KafkaWorkflowsError):
    """A librdkafka call did not return within our deadline; its client must be abandoned."""


def call_with_deadline(fn: Callable[..., T], *args: Any, deadline: float, what: str) -> T:
    """`fn(*args)`, or CallHungError once `deadline` seconds passed without it returning."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"kw-deadline-{what}", daemon=True).start()
    if not done.wait(deadline):
        raise CallHungError(f"{what} did not return within {deadline:.0f}s although given a shorter timeout "
                            "(librdkafka#5456: a coordinator that went away); abandoning this client")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
