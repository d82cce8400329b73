"""`kafka-workflows worker`, `store-processor` and `create-topic`: long-running units and topics."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import kafka_config_from_env
from kafka_workflows.retry.breaker import BreakerPolicy
from kafka_workflows.retry.policy import RetryPolicy


def parse_policy(text: str | None) -> RetryPolicy | None:
    """--policy: JSON, or @file holding JSON; errors name the source and the field."""
    if not text:
        return None
    source = "--policy"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise ConfigError(f"--policy: cannot read {source}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not JSON ({exc.msg} at char {exc.pos})") from exc
    return RetryPolicy.parse(data, where=source)


def parse_breaker(text: str | None) -> BreakerPolicy | None:
    """--breaker: the circuit breaker's settings as JSON (retry/breaker.py); errors name the field."""
    if not text:
        return None
    try:
        return BreakerPolicy.model_validate_json(text)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "(settings)" for err in exc.errors())
        raise ConfigError(f"--breaker: invalid settings ({fields}): {exc.errors()[0]['msg']}") from exc


def worker(args: argparse.Namespace) -> int:
    from kafka_workflows.observe import Telemetry, tracing

    tracing.configure("kafka-workflows-worker")  # on only when the OTEL_* variables say so
    try:
        return _worker(args, Telemetry)
    finally:
        tracing.shutdown()


def _worker(args: argparse.Namespace, Telemetry: Any) -> int:
    config = kafka_config_from_env()
    telemetry = Telemetry(stale_after=args.health_stale_after)
    if args.specs is not None:
        from kafka_workflows import runner

        if args.topic or args.group or args.handler:
            raise ConfigError("give either a specs folder or --topic/--group/--handler, not both")
        specs = runner.select_specs(args.specs, args.workflow)
        runner.run_units(config, runner.build_units(config, specs, args.only, telemetry), specs,
                         telemetry=telemetry, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr)
        return 0
    from kafka_workflows.supervise import run_supervised
    from kafka_workflows.worker import Worker

    missing = [f"--{n}" for n in ("topic", "group", "handler") if not getattr(args, n)]
    if missing:
        raise ConfigError(f"worker needs a specs folder, or {', '.join(missing)}")
    run_supervised(f"worker {args.group}", partial(
        Worker, config, args.topic, args.group, args.handler, policy=parse_policy(args.policy),
        topic_partitions=args.partitions, store=args.store, batch_size=args.batch_size,
        concurrency=args.concurrency, breaker=parse_breaker(args.breaker), telemetry=telemetry), config,
        telemetry=telemetry, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr)
    return 0


def store_processor(args: argparse.Namespace) -> int:
    from kafka_workflows.observe import Telemetry, tracing
    from kafka_workflows.store.limits import StoreLimits
    from kafka_workflows.store.processor import StoreProcessor
    from kafka_workflows.supervise import run_supervised

    tracing.configure("kafka-workflows-store")
    telemetry = Telemetry(stale_after=args.health_stale_after)
    limits = StoreLimits(max_total=args.max_total, max_request_id_bytes=args.max_request_id_bytes,
                         max_reason_chars=args.max_reason_chars, max_command_bytes=args.max_command_bytes)
    try:
        run_supervised(f"store-processor {args.store}", partial(
            StoreProcessor, kafka_config_from_env(), args.store, args.group, partitions=args.partitions,
            commit_interval=args.commit_interval, limits=limits, telemetry=telemetry), kafka_config_from_env(),
            telemetry=telemetry, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr)
    finally:
        tracing.shutdown()  # export what is buffered
    return 0


def create_topic(args: argparse.Namespace) -> int:
    from kafka_workflows.kafka.admin import TopicSpec, ensure_topics

    settings = dict(item.split("=", 1) for item in args.config)
    created = ensure_topics(kafka_config_from_env(), [TopicSpec(args.name, args.partitions, config=settings)])
    print("created" if created else "exists", args.name)
    return 0
