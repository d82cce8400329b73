"""What an exactly-once processor calls: the transactional handler protocol and its outputs.

A handler turns consumed messages into `Output`s; the processor produces them and the consumed
offsets in one transaction (see eos/processor.py). State kept by a handler must be per input
partition: `on_assign` restores it, `on_revoke` drops it, `on_reset` (after an aborted
transaction) throws away what the aborted transaction changed and restores it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Message as KafkaMessage

TP = tuple[str, int]


@dataclass(frozen=True)
class Output:
    """One message a handler wants produced in the current transaction.

    `value=None` is a tombstone. `partition=None` lets the producer's partitioner
    (murmur2_random, the Java client's) place it by key.
    """

    topic: str
    key: str | bytes | None
    value: bytes | None
    headers: Mapping[str, object] | Sequence[tuple[str, bytes]] | None = None
    partition: int | None = None


@dataclass(frozen=True)
class CommittedBatch:
    """What one successful commit made visible: handed to `after_commit`."""

    transaction: int  # sequence number of this processor's commits, from 1
    offsets: dict[TP, int]  # next offset to consume, per input partition in this transaction
    consumed: int  # input messages in this transaction
    outputs: tuple[Output, ...]


class TransactionalHandler:
    """What a `TransactionalProcessor` calls. Override what you need; every hook has a default.

    State kept by a handler must be per input partition: `on_assign` restores it, `on_revoke`
    drops it, `on_reset` (after an aborted transaction) throws away what the aborted transaction
    changed and restores it. All hooks run on the processor's thread.
    """

    def process(self, message: KafkaMessage) -> Iterable[Output]:
        """Outputs for one input message (called in offset order per partition)."""
        return ()

    def process_batch(self, messages: list[KafkaMessage]) -> Iterable[Output]:
        """Outputs for a batch of input messages; the default calls `process` for each."""
        outputs: list[Output] = []
        for message in messages:
            outputs.extend(self.process(message))
        return outputs

    def before_commit(self) -> Iterable[Output]:
        """Last outputs of the open transaction (e.g. coalesced per-key updates)."""
        return ()

    def after_commit(self, batch: CommittedBatch) -> None:
        """Called only after a successful commit, with what was committed."""

    def commit_soon(self) -> bool:
        """True when the open transaction holds an output someone is waiting for (a completion event):
        the processor then commits as soon as it has drained its input instead of at the commit
        interval. It never commits early while input keeps coming in full batches, so throughput
        under load is unchanged."""
        return False

    def punctuate(self, now: float) -> Iterable[Output]:
        """Called every `punctuate_interval` seconds; outputs join the open transaction."""
        return ()

    def on_assign(self, partitions: list[TP]) -> None:
        """Partitions became ours; their committed offsets are stable. Restore their state here."""

    def on_revoke(self, partitions: list[TP]) -> None:
        """Partitions go away (the open transaction was already committed or aborted). Drop their state."""

    def on_reset(self, partitions: list[TP]) -> None:
        """A transaction was aborted and these partitions rewound: restore their committed state."""
        self.on_revoke(partitions)
        self.on_assign(partitions)


class FunctionHandler(TransactionalHandler):
    def __init__(self, fn: Callable[[KafkaMessage], Iterable[Output]]) -> None:
        self.fn = fn

    def process(self, message: KafkaMessage) -> Iterable[Output]:
        return self.fn(message)
