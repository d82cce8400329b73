"""`kafka-workflows`: the companion worker, operations and dead-letter tools.

Broker: KAFKA_BOOTSTRAP_SERVERS (default localhost:9092) and KAFKA_CONFIG (JSON of librdkafka
settings). Errors a user can fix exit with status 2 and one line that names the problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any

from kafka_workflows.config import kafka_config_from_env
from kafka_workflows.errors import ConfigError, KafkaWorkflowsError


def _policy(text: str | None) -> Any:
    from kafka_workflows.policy import RetryPolicy

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafka-workflows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the handlers of workflow specs, or one handler given by flags")
    worker.add_argument("specs", nargs="?", type=Path, help="a folder of workflow specs (or one spec file)")
    worker.add_argument("--workflow", action="append", default=[], help="only this workflow (repeatable)")
    worker.add_argument("--only", action="append", default=[], help="only this worker/processor (repeatable)")
    worker.add_argument("--topic", action="append", help="request topic (repeatable), without specs")
    worker.add_argument("--group", help="consumer group id, without specs")
    worker.add_argument("--handler", help="dotted path, e.g. mypkg.handlers.renew, without specs")
    worker.add_argument("--policy", help='retry policy as JSON or @file, e.g. \'{"blocking": {"intervals": [1, 5], '
                                         '"attempts": 3}, "non_blocking": {"intervals": [30, 300]}}\'')
    worker.add_argument("--partitions", type=int, default=3, help="partitions for topics it creates")
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    worker.add_argument("--store", help="report each job's completion or failure to this atomic store")
    worker.add_argument("--batch-size", type=int, default=500,
                        help="messages consumed at a time: the largest batch a @batch_handler gets")

    validate = sub.add_parser("validate", help="check workflow specs: file, line, field, expected, found")
    validate.add_argument("specs", type=Path, help="a folder of workflow specs (or one file)")
    sub.add_parser("schema", help="print the JSON Schema of workflow specs")

    store = sub.add_parser("store-processor", help="run the exactly-once processor of an atomic store")
    store.add_argument("--store", required=True, help="store name S (topics S.commands, S.store, S.events)")
    store.add_argument("--group", help="consumer group (default: the store's own)")
    store.add_argument("--partitions", type=int, default=3)
    store.add_argument("--commit-interval", type=float, default=1.0, help="seconds per transaction")

    topics = sub.add_parser("create-topic", help="create a topic if it does not exist")
    topics.add_argument("name")
    topics.add_argument("--partitions", type=int, default=3)
    topics.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")

    blocked = sub.add_parser("blocked", help="list partitions blocked by a failing message, across workers")
    blocked.add_argument("--group")
    for op, text in (("skip", "dead-letter the blocking message (marked skipped) and move on"),
                     ("unblock", "retry the blocking message now"),
                     ("pause", "pause a group's handler on every worker"),
                     ("resume", "resume a paused handler")):
        cmd = sub.add_parser(op, help=text)
        cmd.add_argument("--group", required=True)
        if op in ("skip", "unblock"):
            cmd.add_argument("--topic", required=True)
            cmd.add_argument("--partition", type=int, required=True)
            cmd.add_argument("--offset", type=int, help="act only if this offset is the one held")
        cmd.add_argument("--reason", default="", help="recorded with who and when")
        cmd.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a worker's answer")

    dlq = sub.add_parser("dlq", help="list, inspect and replay dead letters")
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("--topic", required=True)
    dlq.add_argument("--group", required=True)
    dlq.add_argument("--key")
    dlq.add_argument("--error-type")
    dlq.add_argument("--since", help="dead-lettered at or after (ISO date-time)")
    dlq.add_argument("--until", help="dead-lettered at or before (ISO date-time)")
    dlq.add_argument("--id", action="append", default=[], help="a dead letter id topic:partition:offset")
    dlq.add_argument("--dry-run", action="store_true", help="replay: show what would move, move nothing")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "validate":
        return _validate(args.specs)
    if args.command == "schema":
        from kafka_workflows.spec import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    config = kafka_config_from_env()
    if args.command == "worker" and args.specs is not None:
        from kafka_workflows import runner

        if args.topic or args.group or args.handler:
            raise ConfigError("give either a specs folder or --topic/--group/--handler, not both")
        specs = runner.select_specs(args.specs, args.workflow)
        runner.run_units(config, runner.build_units(config, specs, args.only), specs)
    elif args.command == "worker":
        from kafka_workflows.worker import Worker

        missing = [f"--{n}" for n in ("topic", "group", "handler") if not getattr(args, n)]
        if missing:
            raise ConfigError(f"worker needs a specs folder, or {', '.join(missing)}")
        from kafka_workflows.supervise import run_supervised, shared_metrics  # restarts a worker that gives up

        run_supervised(f"worker {args.group}", shared_metrics(partial(
            Worker, config, args.topic, args.group, args.handler, policy=_policy(args.policy),
            topic_partitions=args.partitions, store=args.store, batch_size=args.batch_size), args.metrics_port), config)
    elif args.command == "store-processor":
        from kafka_workflows.store import StoreProcessor
        from kafka_workflows.supervise import run_supervised

        run_supervised(f"store-processor {args.store}", partial(
            StoreProcessor, config, args.store, args.group, partitions=args.partitions,
            commit_interval=args.commit_interval), config)
    elif args.command == "create-topic":
        from kafka_workflows.topics import TopicSpec, ensure_topics

        settings = dict(item.split("=", 1) for item in args.config)
        created = ensure_topics(config, [TopicSpec(args.name, args.partitions, config=settings)])
        print("created" if created else "exists", args.name)
    elif args.command == "blocked":
        from kafka_workflows.control import blocked_partitions

        rows = blocked_partitions(config, args.group)
        for row in rows:
            print(f"{row['group']}  {row['topic']}[{row['partition']}]@{row['offset']}  key={row['key']}  "
                  f"failures={row['failures']}  {row['error']}  (worker {row['worker']})")
        if not rows:
            print("no blocked partitions")
    elif args.command in ("skip", "unblock", "pause", "resume"):
        from kafka_workflows.control import send_command

        command, applied = send_command(config, args.command, args.group, topic=getattr(args, "topic", None),
                                        partition=getattr(args, "partition", None),
                                        offset=getattr(args, "offset", None), reason=args.reason, wait=args.wait)
        for record in applied:
            print(f"{record['worker']}: {record['result']}")
        if not applied:
            print(f"kafka-workflows: no worker of group {args.group!r} answered {command.op} within {args.wait:.0f}s",
                  file=sys.stderr)
            return 1
    elif args.command == "dlq":
        from kafka_workflows import dlq

        where = dlq.Filter(key=args.key, error_type=args.error_type,
                           since=dlq.parse_time(args.since, "--since") if args.since else None,
                           until=dlq.parse_time(args.until, "--until") if args.until else None,
                           ids=frozenset(args.id))
        if args.action == "replay":
            moved = dlq.replay(config, args.topic, args.group, where, dry_run=args.dry_run)
            verb = "would replay" if args.dry_run else "replayed"
            for letter in moved:
                print(f"{verb} {letter.id} key={letter.key} -> {letter.headers.get('kw-original-topic')}")
            print(f"{verb} {len(moved)} dead letter(s)")
        else:
            letters = dlq.list_dead_letters(config, args.topic, args.group, where)
            for letter in letters:
                if args.action == "show":
                    print(json.dumps({**letter.summary(), "headers": letter.headers}, indent=2))
                else:
                    s = letter.summary()
                    print(f"{s['id']}  key={s['key']}  {s['error_type']}: {s['error'][:80]}  "
                          f"at {s['dead_lettered_at']}")
            print(f"{len(letters)} dead letter(s)")
    return 0


def _validate(folder: Path) -> int:
    from kafka_workflows.spec import SpecError, load_specs

    bad = 0
    for path, result in load_specs(folder):
        if isinstance(result, SpecError):
            bad += 1
            print(result, file=sys.stderr)
        else:
            print(f"{path}: ok ({result.name}: {len(result.steps)} steps, {len(result.workers)} workers, "
                  f"{len(result.processors)} processors, {len(result.stores)} stores)")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except KafkaWorkflowsError as exc:
        print(f"kafka-workflows: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
