"""Exactly-once consume-transform-produce (pattern 5).

handler.py     what a processor calls: TransactionalHandler, Output, CommittedBatch
checkpoint.py  the open transaction: consumed positions, outputs, when to commit
processor.py   TransactionalProcessor: the loop, rebalances, abort-and-rewind
poison.py      poison inputs: dead-lettered inside the transaction
"""

from kafka_workflows.eos.handler import CommittedBatch, Output, TransactionalHandler
from kafka_workflows.eos.processor import (
    ProcessorStats,
    TransactionAbortedError,
    TransactionalProcessor,
    TransactionFatalError,
)

__all__ = ["CommittedBatch", "Output", "ProcessorStats", "TransactionAbortedError", "TransactionFatalError",
           "TransactionalHandler", "TransactionalProcessor"]
