"""What every bench shares: `--smoke` (tiny sizes, seconds: the suite runs each bench so, so none can
rot) and `--bootstrap` (use a running broker instead of starting one: the suite passes its own).

A smoke run proves the bench still runs end to end and prints its JSON line; its figures mean
nothing. Real figures come from a run without `--smoke` on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, a few seconds: checks the bench runs, its figures mean nothing")
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="use this running broker instead of starting one (its topics are the bench's own)")


@contextlib.contextmanager
def bench_broker(args: argparse.Namespace, **broker_settings: Any) -> Iterator[dict[str, str]]:
    """The librdkafka config of the bench's broker: `--bootstrap`'s, or one started (and stopped) here."""
    if args.bootstrap:
        yield {"bootstrap.servers": args.bootstrap}
        return
    from stack.broker import Broker, free_port

    with tempfile.TemporaryDirectory(prefix="kw-bench-") as tmp:
        broker = Broker(Path(tmp) / "kafka", port=free_port(), **broker_settings).start()
        try:
            yield {"bootstrap.servers": broker.bootstrap_servers}
        finally:
            broker.stop()
