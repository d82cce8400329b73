"""The CLI's commands, as a table: name, help, arguments, and the function that runs it (lazily)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Arg = tuple[tuple[str, ...], dict[str, Any]]


def arg(*flags: str, **options: Any) -> Arg:
    return flags, options


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    runs: str  # "module:function", imported when the command runs; function(args) -> exit status
    args: tuple[Arg, ...] = field(default_factory=tuple)

    def add_to(self, sub: Any) -> None:
        parser = sub.add_parser(self.name, help=self.help)
        for flags, options in self.args:
            parser.add_argument(*flags, **options)
        parser.set_defaults(run=self._run)

    def _run(self, args: argparse.Namespace) -> int:
        module, _, function = self.runs.partition(":")
        target: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
        return target(args)


OPERATION_ARGS = (
    arg("--group", required=True),
    arg("--reason", default="", help="recorded with who and when"),
    arg("--wait", type=float, default=30.0, help="seconds to wait for a worker's answer"),
)
PARTITION_ARGS = (
    arg("--topic", required=True),
    arg("--partition", type=int, required=True),
    arg("--key", help="a worker with concurrency holds keys, not partitions: act on this key's hold"),
)
UNBLOCK_ARGS = (*PARTITION_ARGS, arg("--offset", type=int, help="act only if this offset is the one held"))
SKIP_ARGS = (*PARTITION_ARGS, arg("--offset", type=int, required=True,
                                  help="the offset you saw held (`blocked`): that message and no other is skipped"))

TELEMETRY_ARGS = (
    arg("--metrics-port", type=int, help="serve /metrics (Prometheus), /healthz and /readyz on this port"),
    arg("--metrics-addr", default="127.0.0.1",
        help="address the metrics port listens on (0.0.0.0 in a container, for Prometheus and the kubelet)"),
    arg("--health-stale-after", type=float, default=300.0,
        help="seconds a unit's loop may go without turning before /healthz fails (above the slowest handler call)"),
)

COMMANDS: tuple[Command, ...] = (
    Command("worker", "run the handlers of workflow specs, or one handler given by flags",
            "kafka_workflows.cli.run:worker", (
                arg("specs", nargs="?", type=Path, help="a folder of workflow specs (or one spec file)"),
                arg("--workflow", action="append", default=[], help="only this workflow (repeatable)"),
                arg("--only", action="append", default=[], help="only this worker/processor (repeatable)"),
                arg("--topic", action="append", help="request topic (repeatable), without specs"),
                arg("--group", help="consumer group id, without specs"),
                arg("--handler", help="dotted path, e.g. mypkg.handlers.renew, without specs"),
                arg("--policy", help='retry policy as JSON or @file, e.g. \'{"blocking": {"intervals": [1, 5], '
                                     '"attempts": 3}, "non_blocking": {"intervals": [30, 300]}}\''),
                arg("--breaker", help='circuit breaker settings as JSON, e.g. \'{"failure_rate": 0.5, "min_calls": 10, '
                                      '"window": 30, "cooldown": 30}\' or \'{"errors": ["ConnectionError"], '
                                      '"repeats": 3}\''),
                arg("--partitions", type=int, default=3, help="partitions for topics it creates"),
                *TELEMETRY_ARGS,
                arg("--store", help="report each job's completion or failure to this atomic store"),
                arg("--batch-size", type=int, default=500,
                    help="messages consumed at a time: the largest batch a @batch_handler gets"),
                arg("--concurrency", type=int, default=1,
                    help="message handler calls at once across keys, each key in order (async def handlers on "
                         "one event loop, others on a thread pool)"),
            )),
    Command("validate", "check workflow specs: file, line, field, expected, found",
            "kafka_workflows.cli.specs:validate",
            (arg("specs", type=Path, help="a folder of workflow specs (or one file)"),
             arg("--registry", metavar="URL", help="also check every declared schema against this schema "
                 "registry's compatibility rule (its Confluent-compatible API); an incompatible change fails"))),
    Command("schema", "print the JSON Schema of workflow specs", "kafka_workflows.cli.specs:schema"),
    Command("store-processor", "run the exactly-once processor of an atomic store",
            "kafka_workflows.cli.run:store_processor", (
                arg("--store", required=True, help="store name S (topics S.commands, S.store, S.events)"),
                arg("--group", help="consumer group (default: the store's own)"),
                arg("--partitions", type=int, default=3),
                arg("--commit-interval", type=float, default=1.0, help="seconds per transaction"),
                arg("--max-total", type=int, default=10_000_000,
                    help="largest total of a request, and bound of every job index (at most 10,000,000)"),
                arg("--max-request-id-bytes", type=int, default=512, help="longest request id, in UTF-8 bytes"),
                arg("--max-reason-chars", type=int, default=500, help="a fail command's reason is cut to this"),
                arg("--max-command-bytes", type=int, default=65_536, help="largest command record, key + value"),
                *TELEMETRY_ARGS,
            )),
    Command("create-topic", "create a topic if it does not exist", "kafka_workflows.cli.run:create_topic", (
        arg("name"),
        arg("--partitions", type=int, default=3),
        arg("--config", action="append", default=[], metavar="KEY=VALUE"),
    )),
    Command("blocked", "list partitions blocked by a failing message, across workers",
            "kafka_workflows.cli.ops:blocked", (arg("--group"),)),
    Command("skip", "dead-letter the blocking message (marked skipped) and move on", "kafka_workflows.cli.ops:operate",
            OPERATION_ARGS + SKIP_ARGS),
    Command("unblock", "retry the blocking message now", "kafka_workflows.cli.ops:operate",
            OPERATION_ARGS + UNBLOCK_ARGS),
    Command("pause", "pause a group's handler on every worker", "kafka_workflows.cli.ops:operate", (
        *OPERATION_ARGS,
        arg("--minutes", type=float, help="resume on its own after this many minutes (default: until resumed)"))),
    Command("resume", "resume a paused handler", "kafka_workflows.cli.ops:operate", OPERATION_ARGS),
    Command("nonblocking", "switch a group to non-blocking retries (retry topics, else the dead-letter topic) "
            "until `blocking`", "kafka_workflows.cli.ops:operate", OPERATION_ARGS),
    Command("blocking", "switch a group back to its declared retry policy", "kafka_workflows.cli.ops:operate",
            OPERATION_ARGS),
    Command("open-breaker", "open a group's circuit breaker on every worker, until closed",
            "kafka_workflows.cli.ops:operate", OPERATION_ARGS),
    Command("close-breaker", "close a group's circuit breaker: held messages are retried, partitions resume",
            "kafka_workflows.cli.ops:operate", OPERATION_ARGS),
    Command("dlq", "list, inspect and replay dead letters (a replay goes back to --topic, never elsewhere)",
            "kafka_workflows.cli.ops:dead_letters", (
        arg("action", choices=["list", "show", "replay"]),
        arg("--topic", required=True),
        arg("--group", required=True),
        arg("--key"),
        arg("--error-type"),
        arg("--since", help="dead-lettered at or after (ISO date-time)"),
        arg("--until", help="dead-lettered at or before (ISO date-time)"),
        arg("--id", action="append", default=[], help="a dead letter id topic:partition:offset"),
        arg("--dry-run", action="store_true", help="replay: show what would move, move nothing"),
        arg("--again", action="store_true", help="replay: also what an earlier replay sent back already"),
        arg("--reason", default="", help="replay: recorded with who and when"),
        arg("--rate", help="replay: a canary replay at this many letters a second (e.g. 5/s): first --canary "
                           "letters, then the rest while none comes back; stops on its own when failures return"),
        arg("--canary", type=int, default=5, help="replay with --rate: letters in the canary (default 5)"),
        arg("--window", type=float, default=60.0,
            help="replay with --rate: seconds to wait for the canary (and the last letters) to be processed"),
    )),
)
