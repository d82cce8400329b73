"""Every bench still runs: each script in bench/ in `--smoke` mode (tiny sizes) prints its JSON line.

Nothing here judges speed (figures from a smoke run on a busy test machine mean nothing); it only
keeps the benches from rotting when the code they drive moves. A bench that can use a running broker
gets the session's (`--bootstrap`); ui_api.py (fixed topic names), failover.py (its own session
timeouts) and broker_outage.py (it stops its broker) start their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.broker import Broker

REPO = Path(__file__).resolve().parents[2]
SHARES_BROKER = {"worker_throughput", "concurrency", "aggregation", "awaits", "completion_latency", "import_e2e",
                 "tracing_overhead"}
OWN_BROKER = {"ui_api", "failover", "broker_outage"}
USES_REGISTRY = {"worker_throughput"}


def test_every_bench_is_covered() -> None:
    assert {p.stem for p in (REPO / "bench").glob("*.py")} - {"common"} == SHARES_BROKER | OWN_BROKER


@pytest.mark.integration
@pytest.mark.parametrize("bench", [*sorted(SHARES_BROKER | OWN_BROKER), "import_e2e --db postgres"])
def test_bench_runs_in_smoke_mode_and_prints_its_json_line(bench: str, broker: Broker,
                                                           request: pytest.FixtureRequest) -> None:
    bench, *options = bench.split()
    args = [sys.executable, str(REPO / "bench" / f"{bench}.py"), "--smoke", *options]
    if bench in SHARES_BROKER:
        args += ["--bootstrap", broker.bootstrap_servers]
    if bench in USES_REGISTRY:  # the session's schema registry (the bench starts its own otherwise)
        args += ["--registry", request.getfixturevalue("schema_registry").url]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=420, check=False)
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
    assert done.returncode == 0, f"bench/{bench}.py --smoke exited {done.returncode}:\n{tail}"
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        pytest.fail(f"bench/{bench}.py --smoke did not end with a JSON line:\n{tail}")
    assert result.get("smoke") is True, result
    if bench == "worker_throughput":  # the Avro handler beside the JSON one, each decoding what it reads
        assert set(result["decode_us_per_msg"]) == {"json", "avro"}, result
        assert result["worker_msgs_per_s"]["avro_value_handler"] > 0, result
    if bench == "aggregation":  # the Kafka Streams peer builds (Maven) and counts the same tiny stream
        assert result.get("commands_per_s_streams", 0) > 0, result
