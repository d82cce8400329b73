"""Processes the aggregation tests kill: `python -m tests.helpers.aggregation store-processor|produce-jobs ...`.

The broker comes from KAFKA_BOOTSTRAP_SERVERS, as for the real CLI.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Message as KafkaMessage

REPO = Path(__file__).resolve().parents[2]


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _store_processor(args: argparse.Namespace) -> int:
    from kafka_workflows.kafka.config import kafka_config_from_env
    from kafka_workflows.store import StoreProcessor

    processor = StoreProcessor(
        kafka_config_from_env(), args.store, args.group, instance_id=args.instance,
        commit_interval=args.commit_interval, transaction_timeout_ms=int(max(10_000, 3000 * args.commit_interval)),
        consumer_overrides={"session.timeout.ms": args.session_timeout_ms, "heartbeat.interval.ms": 500,
                            # static membership: a restarted slot takes its partitions back at once
                            "partition.assignment.strategy": args.strategy,
                            **({"group.instance.id": f"{args.group}.{args.instance}"} if args.static else {})},
    )
    if args.consumed_log:  # lets a test see that a command was consumed before it is committed
        original = processor.handler.process

        def process(message: KafkaMessage) -> Any:
            _append(args.consumed_log, f"{message.partition()}:{message.offset()}")
            return original(message)

        processor.handler.process = process  # type: ignore[method-assign]
    processor.install_signal_handlers()
    processor.run()
    return 0


def _slow_jobs(count: int, sleep: float, progress: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    for n in range(count):
        if progress:
            _append(progress, str(n))
        yield f"job-{n}", {"n": n}
        time.sleep(sleep)


def _produce_jobs(args: argparse.Namespace) -> int:
    from kafka_workflows.kafka.config import kafka_config_from_env
    from kafka_workflows.split.jobs import produce_jobs

    result = produce_jobs(kafka_config_from_env(), args.transactional_id, args.topic, args.request,
                          _slow_jobs(args.count, args.sleep, args.progress), args.store, workflow="test")
    print(result, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    proc = sub.add_parser("store-processor")
    proc.add_argument("--store", required=True)
    proc.add_argument("--group", required=True)
    proc.add_argument("--instance", required=True)
    proc.add_argument("--commit-interval", type=float, default=1.0)
    proc.add_argument("--session-timeout-ms", type=int, default=6000)
    proc.add_argument("--consumed-log")
    proc.add_argument("--static", action="store_true", help="group.instance.id from --group and --instance")
    proc.add_argument("--strategy", default="cooperative-sticky", help="partition.assignment.strategy")
    jobs = sub.add_parser("produce-jobs")
    jobs.add_argument("--transactional-id", required=True)
    jobs.add_argument("--topic", required=True)
    jobs.add_argument("--request", required=True)
    jobs.add_argument("--store", required=True)
    jobs.add_argument("--count", type=int, required=True)
    jobs.add_argument("--sleep", type=float, default=0.0)
    jobs.add_argument("--progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {os.getpid()} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka_workflows.transactions").setLevel(logging.DEBUG)  # one line per commit
    return _store_processor(args) if args.cmd == "store-processor" else _produce_jobs(args)


def spawn(config: Mapping[str, Any], *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start `python -m tests.helpers.aggregation <args>` against the test broker; output appended to `log`."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": config["bootstrap.servers"],
           "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen([sys.executable, "-m", "tests.helpers.aggregation", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    finally:
        out.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


if __name__ == "__main__":
    sys.exit(main())
