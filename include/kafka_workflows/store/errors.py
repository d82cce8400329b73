"""Errors of the atomic store, under the package's one root (KafkaWorkflowsError)."""

from __future__ import annotations

from kafka_workflows.errors import KafkaWorkflowsError, MessageDecodeError
from kafka_workflows.kafka.reader import ReadTimeoutError


class StoreError(KafkaWorkflowsError):
    """The store's topics or data are not what the contract requires."""


class StoreTimeoutError(StoreError, ReadTimeoutError):
    """Reading the store did not reach the end of its partition in time."""


class CommandError(MessageDecodeError):
    """A command on S.commands is not a valid init/complete/fail document."""


class RequestIdError(StoreError, ValueError):
    """A request id the store does not accept: empty, not a string, or longer than its limit."""
