"""How workers and processors join their consumer groups, decided in one place.

What matters is failover: how soon a group hands a dead member's partitions to a survivor.
`bench/failover.py` measures it (SIGKILL one of two workers while messages flow) for both
protocols librdkafka speaks to a Kafka 4 broker:

- `consumer` (KIP-848, the default): the broker assigns partitions (its `range` assignor, so every
  topic of a subscription is split between the members), incrementally, and owns the
  session timeout (`group.consumer.session.timeout.ms`, Kafka's default 45 s; the local stack sets
  6 s). The client may not set `session.timeout.ms`, `heartbeat.interval.ms` or
  `partition.assignment.strategy` (librdkafka refuses to create the consumer).
- `classic`: cooperative-sticky assignment with a short client-side session timeout
  (`CLASSIC_SESSION_TIMEOUT_MS`, which the broker's `group.min.session.timeout.ms` must allow:
  Kafka's default minimum is 6 s). Known weakness: cooperative-sticky balances only how MANY
  partitions each member owns, so of two replicas of a worker with retry topics, the one that
  joined second may own only retry topics (`range` fixes that for `consumer` groups; the classic
  protocol's range is eager, which this module does not use).

Both hand the rebalance callbacks incremental assignments (`incremental_assign`), and both keep
pause/resume of assigned partitions across a rebalance.

Choosing: `KW_GROUP_PROTOCOL=consumer|classic` in the environment. A client config that sets
`group.protocol` itself wins; one that sets a classic-only key (e.g. `session.timeout.ms` in
KAFKA_CONFIG) gets `classic`, so it keeps working. `group.instance.id` (static membership,
KIP-345) in the client config is honoured by both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kafka_workflows.errors import ConfigError

CONSUMER = "consumer"
CLASSIC = "classic"
DEFAULT_PROTOCOL = CONSUMER
ENV = "KW_GROUP_PROTOCOL"
CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")
# The broker's `range` assignor, not its default `uniform`: a worker reads its request topic and its retry
# topics, and `uniform` balances only the COUNT of partitions a member owns, so a replica that joins a
# running one can get nothing but retry topics and sit idle. `range` splits every topic between the
# members (tests/integration/test_worker.py, two workers with retry topics).
REMOTE_ASSIGNOR = "range"
CLASSIC_SESSION_TIMEOUT_MS = 6000
CLASSIC_HEARTBEAT_INTERVAL_MS = 1500


def chosen_protocol(config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """`consumer` or `classic`, for a client built from `config` (see the module docstring)."""
    config = config or {}
    if "group.protocol" in config:
        protocol = str(config["group.protocol"]).strip().lower()
        where = "the client config's group.protocol"
    elif any(key in config for key in CLASSIC_ONLY):
        return CLASSIC
    else:
        env = os.environ if environ is None else environ
        protocol = env.get(ENV, DEFAULT_PROTOCOL).strip().lower() or DEFAULT_PROTOCOL
        where = ENV
    if protocol not in (CONSUMER, CLASSIC):
        raise ConfigError(f"{where} must be {CONSUMER!r} or {CLASSIC!r}, got {protocol[:40]!r}")
    return protocol


def group_protocol_settings(config: Mapping[str, Any] | None = None,
                            environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The consumer settings that select the group protocol; merge them over `config`.

    Keys `config` sets itself are left out, so a user's own value stays.
    """
    config = config or {}
    if chosen_protocol(config, environ) == CONSUMER:
        settings: dict[str, Any] = {"group.protocol": CONSUMER, "group.remote.assignor": REMOTE_ASSIGNOR}
    else:
        settings = {
            "group.protocol": CLASSIC,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": CLASSIC_SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": CLASSIC_HEARTBEAT_INTERVAL_MS,
        }
    return {key: value for key, value in settings.items() if key not in config}


def is_incremental(settings: Mapping[str, Any]) -> bool:
    """Whether a consumer with `settings` gets incremental assignments (`incremental_assign`)."""
    return (str(settings.get("group.protocol", CLASSIC)).lower() == CONSUMER
            or settings.get("partition.assignment.strategy") == "cooperative-sticky")
