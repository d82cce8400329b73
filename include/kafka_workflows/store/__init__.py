"""The atomic key-value store (pattern 6): exact completion accounting on an exactly-once processor.

topics.py        S.commands, S.store (compacted), S.events; their creation and checks
partitioning.py  murmur2, the partition of a request id
limits.py        the store's bounds (totals, indices, request ids, command size) and their defaults
commands.py      init / complete / fail / progress / abort: parsing (the processor's one inbound boundary) and building
indexset.py      job indices as compact ranges
state.py         one request's accounting (pure) and the store value
processor.py     the exactly-once processor that applies commands (StoreProcessor)
client.py        send commands, read values, wait, ask whether a request is registered (and its split's progress)
follower.py      one warm reader of S.store shared by many waiters (the triggerer's, the UI's)
"""

from kafka_workflows.store.client import SplitState, StoreClient, checked_request_id
from kafka_workflows.store.commands import (
    ABORT,
    COMPLETE,
    FAIL,
    INIT,
    OPS,
    PROGRESS,
    Command,
    CommandMessage,
    abort_command,
    command_message,
    complete_command,
    fail_command,
    init_command,
    parse_command,
    progress_command,
)
from kafka_workflows.store.errors import CommandError, RequestIdError, StoreError, StoreTimeoutError
from kafka_workflows.store.indexset import IndexSet
from kafka_workflows.store.limits import (
    DEFAULT_LIMITS,
    MAX_COMMAND_BYTES,
    MAX_REASON_CHARS,
    MAX_REQUEST_ID_BYTES,
    MAX_TOTAL,
    StoreLimits,
    check_request_id,
)
from kafka_workflows.store.partitioning import murmur2, partition_for
from kafka_workflows.store.processor import (
    DEFAULT_RETENTION_S,
    StoreHandler,
    StoreProcessor,
    StoreStats,
    run_store_processor,
)
from kafka_workflows.store.state import (
    ABORTED,
    COMPLETED_WITH_FAILURES,
    CORRUPT,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    RequestState,
)
from kafka_workflows.store.topics import commands_topic, default_group, ensure_store_topics, events_topic, store_topic

__all__ = [
    "ABORT",
    "ABORTED",
    "COMPLETE",
    "COMPLETED_WITH_FAILURES",
    "CORRUPT",
    "DEFAULT_LIMITS",
    "DEFAULT_RETENTION_S",
    "FAIL",
    "INIT",
    "MAX_COMMAND_BYTES",
    "MAX_REASON_CHARS",
    "MAX_REQUEST_ID_BYTES",
    "MAX_TOTAL",
    "OPS",
    "PENDING",
    "PROGRESS",
    "RUNNING",
    "SUCCEEDED",
    "TERMINAL_STATUSES",
    "Command",
    "CommandError",
    "CommandMessage",
    "IndexSet",
    "RequestIdError",
    "RequestState",
    "SplitState",
    "StoreClient",
    "StoreError",
    "StoreHandler",
    "StoreLimits",
    "StoreProcessor",
    "StoreStats",
    "StoreTimeoutError",
    "abort_command",
    "check_request_id",
    "checked_request_id",
    "command_message",
    "commands_topic",
    "complete_command",
    "default_group",
    "ensure_store_topics",
    "events_topic",
    "fail_command",
    "init_command",
    "murmur2",
    "parse_command",
    "partition_for",
    "progress_command",
    "run_store_processor",
    "store_topic",
]
