"""Errors a user can act on. Each message names what is wrong (address, path, field, offset)."""


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
    """A message value is not the JSON the contract requires."""


class NonRetryableError(KafkaWorkflowsError):
    """Raise (or subclass) in a handler when retrying cannot help: the message goes to the dead-letter topic."""
