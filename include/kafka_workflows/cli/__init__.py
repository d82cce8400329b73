"""`kafka-workflows`: the companion worker, operations and dead-letter tools.

Broker: KAFKA_BOOTSTRAP_SERVERS (default localhost:9092) and KAFKA_CONFIG (JSON of librdkafka
settings). Errors a user can fix exit with status 2 and one line that names the problem.

The commands are a table (cli/commands.py): each names its arguments and the function that runs
it, imported only when that command runs, so `kafka-workflows validate` never loads Kafka clients.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kafka_workflows.cli.commands import COMMANDS
from kafka_workflows.errors import KafkaWorkflowsError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kafka-workflows", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--log-level", default="INFO")
    sub = root.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except KafkaWorkflowsError as exc:
        print(f"kafka-workflows: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["main", "parser"]
