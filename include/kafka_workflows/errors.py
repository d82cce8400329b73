"""Errors a user can act on. Each message names what is wrong (address, path, field, offset)."""

from typing import Any


class KafkaWorkflowsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(KafkaWorkflowsError, ValueError):
    """Configuration (environment, connection, policy) is invalid."""


class BrokerUnreachableError(KafkaWorkflowsError, ConnectionError):
    """No broker answered at the configured bootstrap servers."""


class DeliveryError(KafkaWorkflowsError):
    """One or more produced messages were not acknowledged by the broker."""


class HandlerImportError(KafkaWorkflowsError, ImportError):
    """A dotted path does not name an importable callable."""


class MessageDecodeError(KafkaWorkflowsError, ValueError):
    """A message value is not the JSON the contract requires. `record`: the Kafka record, when known."""

    record: Any = None


class RegistryUnavailableError(KafkaWorkflowsError, ConnectionError):
    """The schema registry did not answer (or answered an error that is not the record's): never a dead
    letter; the unit gives up and is rebuilt, and the record is read again (schemas/codec.py)."""


class NonRetryableError(KafkaWorkflowsError):
    """Raise (or subclass) in a handler when retrying cannot help: the message goes to the dead-letter topic."""


class BatchItemFailed(KafkaWorkflowsError):
    """Raised by a batch handler to say which message of its batch failed, and why.

    The messages before `index` are done; the one at `index` goes through the retry policy with
    `cause` as its error; the ones after it are handed to the handler again.
    """

    def __init__(self, index: int, cause: BaseException | None = None) -> None:
        super().__init__(f"message {index} of the batch failed" + (f": {cause!r}" if cause is not None else ""))
        self.index = index
        self._cause = cause

    @property
    def cause(self) -> BaseException:
        """The error given, else the one chained with `raise BatchItemFailed(i) from exc`, else this."""
        if self._cause is not None:
            return self._cause
        return self.__cause__ if self.__cause__ is not None else self
