"""Processes the aggregation tests kill: `python -m tests.helpers.aggregation store-processor|produce-jobs|split-csv`.

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

from stack import reaper

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


def split_csv(config: Mapping[str, Any], transactional_id: str, topic: str, request: str, store: str, path: str, *,
              rows_per_job: int = 2, chunk_jobs: int | None = 5, chunk_seconds: float = 60.0, sleep: float = 0.0,
              final_errors: bool = True) -> Any:
    """What SplitToJobsOperator does with a CSV file, without Airflow: the contacts schema, jobs of
    `rows_per_job` rows, produce_jobs pipelined in chunks with the rows read as progress. A CSV error
    (not an unreadable source) is final, as in the operator."""
    from kafka_workflows.messages import encode_value
    from kafka_workflows.sources.csv_source import CsvJobSource, CsvSourceError, SourceUnreadableError
    from kafka_workflows.split.jobs import produce_jobs
    from kw_examples.contacts import SCHEMA

    source = CsvJobSource(path, SCHEMA, rows_per_job=rows_per_job).open()

    def jobs() -> Iterator[tuple[str, bytes]]:
        for job in source.jobs():
            yield f"{request}/{job.index}", encode_value(job.to_message())
            if sleep:
                time.sleep(sleep)

    def give_up(exc: BaseException) -> bool:
        return final_errors and isinstance(exc, CsvSourceError) and not isinstance(exc, SourceUnreadableError)

    try:
        return produce_jobs(config, transactional_id, topic, request, jobs(), store, workflow="test",
                            chunk_jobs=chunk_jobs, chunk_seconds=chunk_seconds,
                            rows_read=lambda: source.rows_read, give_up=give_up)
    finally:
        source.close()


def _split_csv(args: argparse.Namespace) -> int:
    from kafka_workflows.kafka.config import kafka_config_from_env

    print(split_csv(kafka_config_from_env(), args.transactional_id, args.topic, args.request, args.store, args.file,
                    rows_per_job=args.rows_per_job, chunk_jobs=args.chunk_jobs, sleep=args.sleep), flush=True)
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
    csv = sub.add_parser("split-csv")
    csv.add_argument("--transactional-id", required=True)
    csv.add_argument("--topic", required=True)
    csv.add_argument("--request", required=True)
    csv.add_argument("--store", required=True)
    csv.add_argument("--file", required=True)
    csv.add_argument("--rows-per-job", type=int, default=2)
    csv.add_argument("--chunk-jobs", type=int, default=5)
    csv.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {os.getpid()} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka_workflows.transactions").setLevel(logging.DEBUG)  # one line per commit
    commands = {"store-processor": _store_processor, "produce-jobs": _produce_jobs, "split-csv": _split_csv}
    return commands[args.cmd](args)


def spawn(config: Mapping[str, Any], *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start `python -m tests.helpers.aggregation <args>` against the test broker; output appended to `log`."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": config["bootstrap.servers"],
           "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return reaper.popen([sys.executable, "-m", "tests.helpers.aggregation", *args], env=env,
                            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    finally:
        out.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


if __name__ == "__main__":
    sys.exit(main())
