"""End-to-end tests share the session's `airflow standalone` (tests/helpers/standalone.py, a plugin of
tests/conftest.py) with tests/security; `receiver` here is the session receiver the stack may reach."""

from __future__ import annotations

import pytest

from tests.helpers.standalone import VIEWER, WEBHOOK_SECRET, emptied
from tests.helpers.webhook import WebhookReceiver

__all__ = ["VIEWER", "WEBHOOK_SECRET"]


@pytest.fixture
def receiver(stack_receiver: WebhookReceiver) -> WebhookReceiver:
    return emptied(stack_receiver)
