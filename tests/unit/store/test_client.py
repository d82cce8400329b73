"""store.client: an empty or oversized request id is refused with a clear error before anything is sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kafka_workflows.store import RequestIdError, StoreClient, StoreError

CALLS: list[tuple[str, Callable[[StoreClient, Any], Any]]] = [
    ("init", lambda c, r: c.init(r, 3)), ("complete", lambda c, r: c.complete(r, 0)),
    ("fail", lambda c, r: c.fail(r, 0, "boom")), ("get", lambda c, r: c.get(r)),
    ("wait", lambda c, r: c.wait(r, 1)), ("registered", lambda c, r: c.registered(r)),
    ("complete_command", lambda c, r: c.complete_command(r, 0)),
]


@pytest.mark.parametrize(("bad", "fragment"), [
    ("", "request_id is empty"), ("r" * 513, "request_id is 513 bytes, more than the 512 allowed"),
    ("é" * 300, "request_id is 600 bytes"), (None, "request_id must be a string, got NoneType"),
])
@pytest.mark.parametrize(("call", "invoke"), CALLS, ids=[c for c, _ in CALLS])
def test_a_bad_request_id_is_refused_before_anything_is_sent(call: str, invoke: Callable[[StoreClient, Any], Any],
                                                             bad: Any, fragment: str) -> None:
    client = StoreClient({"bootstrap.servers": "127.0.0.1:1"}, "contacts")  # nothing listens there
    with pytest.raises(RequestIdError, match=rf"^not a valid store request id: {fragment}") as caught:
        invoke(client, bad)
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, ValueError)
    assert "rrrr" not in str(caught.value) and client._producer is None
