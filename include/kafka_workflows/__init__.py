"""kafka-workflows core: the Kafka side of the workflows, with no Airflow import.

This package is all the companion worker image contains. The Airflow side lives in
`plugins/kafka_workflows_airflow` and imports from here, never the other way round.

Rooms (one concern each; README "Layout" says where to look for what):

  kafka/    client plumbing: config, KafkaError, admin, producers, the transactional producer
  retry/    policies, backoff, the retry decision, retry/dead-letter topics, dead letters
  worker/   the companion worker: loop, dispatch, holds, offset checkpoint, writes, metrics
  eos/      exactly-once processing: handler protocol, open-transaction checkpoint, processor
  store/    the atomic key-value store: commands, request state, processor, client, follower
  split/    splitting a request into jobs in one transaction
  ops/      control commands (audit log), worker status, applying commands in a worker
  spec/     workflow specs (YAML): model and loader
  cli/      the `kafka-workflows` command, a table of commands

The names below are the public API handlers and tools import.
"""

from kafka_workflows.errors import (
    BatchItemFailed,
    ConfigError,
    DeliveryError,
    KafkaWorkflowsError,
    MessageDecodeError,
    NonRetryableError,
)
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import Message, MessageBatch

__version__ = "0.1.0"

__all__ = [
    "BatchItemFailed",
    "ConfigError",
    "DeliveryError",
    "KafkaWorkflowsError",
    "Message",
    "MessageBatch",
    "MessageDecodeError",
    "NonRetryableError",
    "batch_handler",
]
