"""`kafka-workflows`: the companion worker and topic tools, configured from the environment."""

from __future__ import annotations

import argparse
import logging
import sys

from kafka_workflows.backoff import Backoff
from kafka_workflows.config import kafka_config_from_env
from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.topics import TopicSpec, ensure_topics
from kafka_workflows.worker import Worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-workflows",
        description="Companion worker for kafka-workflows. Broker: KAFKA_BOOTSTRAP_SERVERS "
                    "(default localhost:9092) and KAFKA_CONFIG (JSON of librdkafka settings).",
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="consume request topics and call a handler")
    worker.add_argument("--topic", action="append", required=True, help="request topic (repeatable)")
    worker.add_argument("--group", required=True, help="consumer group id")
    worker.add_argument("--handler", required=True, help="dotted path, e.g. mypkg.handlers.renew")
    worker.add_argument("--partitions", type=int, default=3, help="partitions for topics it creates")
    worker.add_argument("--backoff-initial", type=float, default=1.0)
    worker.add_argument("--backoff-max", type=float, default=60.0)

    topics = sub.add_parser("create-topic", help="create a topic if it does not exist")
    topics.add_argument("name")
    topics.add_argument("--partitions", type=int, default=3)
    topics.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = kafka_config_from_env()
        if args.command == "worker":
            worker = Worker(config, args.topic, args.group, args.handler,
                            backoff=Backoff(initial=args.backoff_initial, max=args.backoff_max),
                            topic_partitions=args.partitions)
            worker.install_signal_handlers()
            worker.run()
        elif args.command == "create-topic":
            settings = dict(item.split("=", 1) for item in args.config)
            created = ensure_topics(config, [TopicSpec(args.name, args.partitions, config=settings)])
            print("created" if created else "exists", args.name)
    except KafkaWorkflowsError as exc:
        print(f"kafka-workflows: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
