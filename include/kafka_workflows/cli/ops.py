"""`kafka-workflows blocked|skip|unblock|pause|resume|open-breaker|close-breaker|dlq`: operations on
running workers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import kafka_config_from_env


def blocked(args: argparse.Namespace) -> int:
    from kafka_workflows.ops.status import blocked_partitions

    rows = blocked_partitions(kafka_config_from_env(), args.group)
    for row in rows:
        print(f"{row['group']}  {row['topic']}[{row['partition']}]@{row['offset']}  key={row['key']}  "
              f"failures={row['failures']}  {row['error']}  (worker {row['worker']})")
    if not rows:
        print("no blocked partitions")
    return 0


def operate(args: argparse.Namespace) -> int:
    from kafka_workflows.ops.control import is_refusal, send_command

    op = {"open-breaker": "open", "close-breaker": "close"}.get(args.command, args.command)
    command, applied = send_command(kafka_config_from_env(), op, args.group,
                                    topic=getattr(args, "topic", None), partition=getattr(args, "partition", None),
                                    offset=getattr(args, "offset", None), reason=args.reason, wait=args.wait,
                                    key=getattr(args, "key", None), minutes=getattr(args, "minutes", None))
    for record in applied:
        print(f"{record['worker']}: {record['result']}")
    if not applied:
        print(f"kafka-workflows: no worker of group {args.group!r} answered {command.op} within {args.wait:.0f}s",
              file=sys.stderr)
        return 1
    if all(is_refusal(str(record.get("result"))) for record in applied):
        print("kafka-workflows: the workers refused the command; is KAFKA_WORKFLOWS_CONTROL_SECRET set to theirs?",
              file=sys.stderr)
        return 1
    return 0


def _canary(config: dict[str, Any], args: argparse.Namespace, where: Any) -> int:
    """`dlq replay --rate N/s`: a canary replay (ops/canary.py); progress on stdout, 0 when done, 3 when
    it stopped on its own."""
    from kafka_workflows.ops.canary import canary_replay, parse_rate

    if args.dry_run or args.again:
        raise ConfigError("--rate replays what was not replayed before, for real: no --dry-run or --again")
    last: list[str] = []

    def show(p: Any) -> None:
        line = (f"{p.state}: sent {p.sent}/{p.total}, processed {p.processed}, succeeded {p.succeeded}, "
                f"failed {p.failed}")
        if not last or last[-1] != line:
            last.append(line)
            print(line, flush=True)

    result = canary_replay(config, args.topic, args.group, where, rate=parse_rate(args.rate), canary=args.canary,
                           window=args.window, reason=args.reason, on_progress=show)
    print(f"canary replay {result.state}: {result.reason}")
    return 0 if result.state == "done" else 3


def dead_letters(args: argparse.Namespace) -> int:
    from kafka_workflows.ops import deadletters as dlq

    config = kafka_config_from_env()
    where = dlq.Filter(key=args.key, error_type=args.error_type,
                       since=dlq.parse_time(args.since, "--since") if args.since else None,
                       until=dlq.parse_time(args.until, "--until") if args.until else None,
                       ids=frozenset(args.id))
    if args.action == "replay" and args.rate:
        return _canary(config, args, where)
    if args.action == "replay":
        moved = dlq.replay(config, args.topic, args.group, where, dry_run=args.dry_run, again=args.again,
                           reason=args.reason)
        verb = "would replay" if args.dry_run else "replayed"
        for letter in moved:
            print(f"{verb} {letter.id} key={letter.key} -> {args.topic}")
        print(f"{verb} {len(moved)} dead letter(s)")
        return 0
    letters = dlq.list_dead_letters(config, args.topic, args.group, where)
    for letter in letters:
        if args.action == "show":
            print(json.dumps({**letter.summary(), "headers": letter.headers}, indent=2))
        else:
            s = letter.summary()
            print(f"{s['id']}  key={s['key']}  {s['error_type']}: {s['error'][:80]}  at {s['dead_lettered_at']}")
    print(f"{len(letters)} dead letter(s)")
    return 0
